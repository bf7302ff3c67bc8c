"""`-m limit --limit N/unit --limit-burst B` (libxt_limit.c, xt_limit.c `limit_mt`): a token bucket.

Credit arithmetic is the kernel's, in jiffies of `HZ` (250, as on the reference test box, §A) computed
from `ctx.now`. The bucket starts full at the first packet the rule sees (the kernel: at rule load).
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["CREDITS_PER_JIFFY", "HZ", "Limit", "user2credits"]

HZ: Final = 250
XT_LIMIT_SCALE: Final = 10000
XT_LIMIT_AVG: Final = "3/hour"
XT_LIMIT_BURST: Final = 5
_MAX_CPJ: Final = 0xFFFFFFFF // (HZ * 60 * 60 * 24)
CREDITS_PER_JIFFY: Final = 1 << (_MAX_CPJ.bit_length() - 1)  # POW2_BELOW32(MAX_CPJ)
# `rates` of libxt_limit.c, largest first
_RATES: Final = (("day", XT_LIMIT_SCALE * 24 * 60 * 60), ("hour", XT_LIMIT_SCALE * 60 * 60), ("min",
    XT_LIMIT_SCALE * 60),
          ("sec", XT_LIMIT_SCALE))


def user2credits(user: int) -> int:
    """`user2credits()` in xt_limit.c (u32 arithmetic)."""
    if user > 0xFFFFFFFF // (HZ * CREDITS_PER_JIFFY):
        return ((user // XT_LIMIT_SCALE) * HZ * CREDITS_PER_JIFFY) & 0xFFFFFFFF
    return (user * HZ * CREDITS_PER_JIFFY) // XT_LIMIT_SCALE


def parse_rate(text: str) -> int:
    """`parse_rate`: N[/second|minute|hour|day] (unit prefixes allowed) → period in 1/10000 s."""
    num, slash, unit = text.partition("/")
    mult = 1
    if slash:
        u = unit.lower()
        if u and "second".startswith(u):
            mult = 1
        elif u and "minute".startswith(u):
            mult = 60
        elif u and "hour".startswith(u):
            mult = 3600
        elif u and "day".startswith(u):
            mult = 86400
        else:
            raise RulesError(f"bad rate \"{text}\"'")
    digits = len(num) - len(num.lstrip("0123456789"))
    r = int(num[:digits]) if digits else 0
    if not r:
        raise RulesError(f"bad rate \"{text}\"'")
    val = XT_LIMIT_SCALE * mult // r
    if val == 0:
        raise RulesError(f'Rate too fast "{text}"')
    return val


def print_rate(period: int) -> str:
    if period == 0:
        return " inf"
    i = 1
    while i < len(_RATES):
        mult = _RATES[i][1]
        if period > mult or mult // period < mult % period:
            break
        i += 1
    name, mult = _RATES[i - 1]
    return f" {mult // period}/{name}"


class Limit(Match):
    name = "limit"
    options = (Opt("limit", 1), Opt("limit-burst", 1))

    def __init__(self) -> None:
        self.avg = parse_rate(XT_LIMIT_AVG)
        self.burst = XT_LIMIT_BURST
        # the bucket (credit, prev jiffies; -1: not started) lives on the instance, so it survives
        # recompilation and is carried over when a command copies the table (the kernel keeps it per rule)
        self.state = [user2credits(self.avg * self.burst), -1]

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt == "limit":
            self.avg = parse_rate(arg or "")
        elif opt == "limit-burst":
            b = parse_uint(arg or "", 0, 10000)
            if b is None:
                raise RulesError('limit: bad value for option "--limit-burst", or out of range (0-10000).\n')
            self.burst = b
        else:
            super().parse(opt, arg, inverted, rule)
        if inverted:
            raise RulesError("limit does not support invert")
        self.state = [user2credits(self.avg * self.burst), -1]

    def save(self) -> str:
        out = " --limit" + print_rate(self.avg)
        if self.burst != XT_LIMIT_BURST:
            out += f" --limit-burst {self.burst}"
        return out

    def print_list(self, numeric: bool) -> str:
        return " limit: avg" + print_rate(self.avg) + f" burst {self.burst}"

    def compile(self) -> MatchFn:
        cap = user2credits(self.avg * self.burst)
        cost = user2credits(self.avg)
        state = self.state

        def limit_mt(skb: Skb, ctx: XtContext) -> bool:
            now = int(ctx.now * HZ)
            prev = state[1]
            if prev < 0:
                prev = now
            credit = state[0] + (now - prev) * CREDITS_PER_JIFFY
            state[1] = now
            credit = min(credit, cap)
            if credit >= cost:
                state[0] = credit - cost
                return True
            state[0] = credit
            return False

        return limit_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return "no match (rate limit exceeded)"
