"""`-m statistic --mode random --probability p | --mode nth --every n [--packet p]` (xt_statistic.c).

Random mode draws `ctx.random_u32() & 0x7FFFFFFF` against the probability scaled to 2^31 (as
`lround(0x80000000 * p)` in libxt_statistic.c). nth mode keeps the shared counter in the compiled rule.
"""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["Statistic"]


class Statistic(Match):
    name = "statistic"
    options = (Opt("mode", 1), Opt("probability", 1, True), Opt("every", 1, True), Opt("packet", 1))

    def __init__(self) -> None:
        self.mode = ""
        self.invert = False
        self.probability: int | None = None
        self.every: int | None = None  # stored minus one, as the kernel keeps it
        self.packet: int | None = None
        self.count: list[int] = []  # nth mode's shared counter (on the instance: survives recompilation)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if inverted:
            self.invert = True
        if opt == "mode":
            if a not in ("random", "nth"):
                raise RulesError(f'Bad mode "{a}"')
            self.mode = a
        elif opt == "probability":
            try:
                p = float(a)
            except ValueError:
                p = -1.0
            if not 0.0 <= p <= 1.0:
                raise RulesError('statistic: bad value for option "--probability", or out of range (0-1).\n')
            self.probability = int(0x80000000 * p + 0.5)
        elif opt == "every":
            v = parse_uint(a, 1, 0xFFFFFFFF)
            if v is None:
                raise RulesError('statistic: bad value for option "--every", or out of range (1-4294967295).\n')
            self.every = v - 1
        elif opt == "packet":
            v = parse_uint(a, 0, 0xFFFFFFFF)
            if v is None:
                raise RulesError('statistic: bad value for option "--packet", or out of range (0-4294967295).\n')
            self.packet = v
        else:
            super().parse(opt, arg, inverted, rule)

    def final_check(self, rule: Rule) -> None:
        """libxt_statistic.c `statistic_check` (the mode defaults to random), then xtables_options_fcheck:
        --mode mandatory, --every and --packet each requiring the other (recorded with iptables 1.8.9)."""
        mode = self.mode or "random"
        if mode == "random" and (self.probability is None or self.every is not None or self.packet is not None):
            raise RulesError("--probability must be specified when using random mode")
        if mode == "nth":
            if (self.every is None and self.packet is None) or self.probability is not None:
                raise RulesError("--every and --packet must be specified when using nth mode")
            if (self.packet or 0) > (self.every or 0):
                raise RulesError("the --packet p must be 0 <= p <= n-1")
        if not self.mode:
            raise RulesError('statistic: option "--mode" must be specified\n')
        if (self.every is None) != (self.packet is None):
            have, need = ("every", "packet") if self.packet is None else ("packet", "every")
            raise RulesError(f'statistic: option "--{have}" also requires "--{need}".\n')

    def _dump(self, pfx: str) -> str:
        inv = " !" if self.invert else ""
        if self.mode == "random":
            return f" {pfx}mode random{inv} {pfx}probability {(self.probability or 0) / 0x80000000:.11f}"
        out = f" {pfx}mode nth{inv} {pfx}every {(self.every or 0) + 1}"
        if self.packet or pfx:
            out += f" {pfx}packet {self.packet or 0}"
        return out

    def save(self) -> str:
        return self._dump("--")

    def print_list(self, numeric: bool) -> str:
        return " statistic" + self._dump("")

    def compile(self) -> MatchFn:
        inv = self.invert
        if self.mode == "random":
            prob = self.probability or 0

            def random_mt(skb: Skb, ctx: XtContext) -> bool:
                return ((ctx.random_u32() & 0x7FFFFFFF) < prob) != inv

            return random_mt
        every, packet = self.every or 0, self.packet or 0
        if not self.count:
            self.count.append(every - packet)  # statistic_mt_check: count = every - packet
        count = self.count

        def nth_mt(skb: Skb, ctx: XtContext) -> bool:
            nval = 0 if count[0] == every else count[0] + 1
            count[0] = nval
            return (nval == packet) != inv

        return nth_mt
