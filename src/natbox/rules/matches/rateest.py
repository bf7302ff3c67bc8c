"""`-m rateest` (libxt_rateest.c, net/netfilter/xt_rateest.c `xt_rateest_mt`): compare rate estimates.

One estimator against given rates (`--rateest NAME --rateest-bps 8bit --rateest-lt`), two against each
other (`--rateest1 A --rateest-lt --rateest2 B`), or their differences to given rates (`--rateest-delta`).
Estimates are `-j RATEEST`'s (natbox.rules.xtstate.rateest), read on the injected clock. A rule naming an
estimator no rule holds is refused with ENOENT, as `xt_rateest_mt_checkentry` refuses it (the check reads
the other rules: natbox.rules.estimators). The parser is libxt_rateest's old-style one:
the rates after `--rateest-bps1` etc. are optional words.
"""

from __future__ import annotations

import re
from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError
from natbox.rules.xtstate import XtState, jiffies
from natbox.skb import Skb

__all__ = ["RateestMatch"]

(XT_RATEEST_MATCH_INVERT, XT_RATEEST_MATCH_ABS, XT_RATEEST_MATCH_REL, XT_RATEEST_MATCH_DELTA,
 XT_RATEEST_MATCH_BPS, XT_RATEEST_MATCH_PPS) = (1, 2, 4, 8, 16, 32)
XT_RATEEST_MATCH_NONE, XT_RATEEST_MATCH_EQ, XT_RATEEST_MATCH_LT, XT_RATEEST_MATCH_GT = 0, 1, 2, 3
IFNAMSIZ: Final = 16
U32: Final = 0xFFFFFFFF
# enum rateest_options, and the option names that share them
_OPT_IDS: Final = {"rateest1": 0, "rateest": 0, "rateest2": 1, "rateest-bps1": 2, "rateest-pps1": 3, "rateest-bps2": 4,
            "rateest-pps2": 5, "rateest-bps": 4, "rateest-pps": 5, "rateest-delta": 6, "rateest-lt": 7,
            "rateest-gt": 8, "rateest-eq": 9}
_SUFFIXES: Final = {"bit": 1.0, "kibit": 1024.0, "kbit": 1000.0, "mibit": 1024.0 ** 2, "mbit": 1e6,
    "gibit": 1024.0 ** 3,
             "gbit": 1e9, "tibit": 1024.0 ** 4, "tbit": 1e12, "bps": 8.0, "kibps": 8.0 * 1024, "kbps": 8000.0,
             "mibps": 8.0 * 1024 ** 2, "mbps": 8e6, "gibps": 8.0 * 1024 ** 3, "gbps": 8e9, "tibps": 8.0 * 1024 ** 4,
             "tbps": 8e12}
_FLOAT: Final = re.compile(r"\s*[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")


def get_rate(text: str) -> int | None:
    """`rateest_get_rate()`: a rate in bytes per second (bits with a suffix), None when malformed."""
    m = _FLOAT.match(text)
    if m is None:
        return None
    bps, rest = float(m.group(0)), text[m.end():]
    if not rest:
        return int(bps / 8.0) & U32
    scale = _SUFFIXES.get(rest.lower())
    return None if scale is None else int(bps * scale / 8.0) & U32


def print_rate(rate: int, numeric: bool) -> str:
    """`rateest_print_rate()`."""
    tmp = rate * 8.0
    if numeric:
        return f" {rate}"
    if tmp >= 1000.0 * 1000000.0:
        return f" {tmp / 1000000.0:.0f}Mbit"
    if tmp >= 1000.0 * 1000.0:
        return f" {tmp / 1000.0:.0f}Kbit"
    return f" {tmp:.0f}bit"


class RateestMatch(Match):
    name = "rateest"
    options = (Opt("rateest1"), Opt("rateest"), Opt("rateest2"), Opt("rateest-bps1", -1), Opt("rateest-pps1", -1),
               Opt("rateest-bps2", -1), Opt("rateest-pps2", -1), Opt("rateest-bps", -1), Opt("rateest-pps", -1),
               Opt("rateest-delta", 0), Opt("rateest-lt", 0, True), Opt("rateest-gt", 0, True),
               Opt("rateest-eq", 0, True))

    def __init__(self) -> None:
        self.name1 = self.name2 = ""
        self.rflags = 0
        self.mode = XT_RATEEST_MATCH_NONE
        self.bps1 = self.pps1 = self.bps2 = self.pps2 = 0
        self.seen = 0

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        """`rateest_parse()`."""
        c = _OPT_IDS[opt]
        if c in (7, 8, 9):
            if self.seen & (1 << c):
                # iptables-save prints the mode once per rate (`--rateest-gt --rateest-bps X --rateest-gt
                # --rateest-pps Y`), which iptables-restore then refuses; natbox reads its own output back
                # when the repeat says the same (docs/differences.md)
                if inverted != bool(self.rflags & XT_RATEEST_MATCH_INVERT) or not self.rflags & (
                        XT_RATEEST_MATCH_BPS | XT_RATEEST_MATCH_PPS):
                    raise RulesError("rateest: can't specify lt/gt/eq twice")
                return
            self.seen |= 1 << c
            self.mode = {7: XT_RATEEST_MATCH_LT, 8: XT_RATEEST_MATCH_GT, 9: XT_RATEEST_MATCH_EQ}[c]
            if inverted:
                self.rflags |= XT_RATEEST_MATCH_INVERT
            return
        word = {0: "rateest", 1: "rateest", 2: "rateest-bps", 3: "rateest-pps", 4: "rateest-bps",
                5: "rateest-pps", 6: "rateest-delta"}[c]
        if inverted:
            raise RulesError(f"rateest: {word} can't be inverted")
        if self.seen & (1 << c):
            twice = {0: "--rateest1", 1: "--rateest2", 2: "--rateest-bps1", 3: "--rateest-pps1",
                     4: "--rateest-bps2", 5: "--rateest-pps2", 6: "--rateest-delta"}[c]
            raise RulesError(f"rateest: can't specify {twice} twice")
        self.seen |= 1 << c
        a = arg or ""
        if c == 0:
            self.name1 = a[:IFNAMSIZ - 1]
        elif c == 1:
            self.name2 = a[:IFNAMSIZ - 1]
            self.rflags |= XT_RATEEST_MATCH_REL
        elif c == 6:
            self.rflags |= XT_RATEEST_MATCH_DELTA
        elif c in (2, 4):
            self.rflags |= XT_RATEEST_MATCH_BPS
            if arg is not None:
                r = get_rate(a)
                if r is None:
                    raise RulesError(f"rateest: could not parse rate `{a}'")
                if c == 2:
                    self.bps1 = r
                else:
                    self.bps2 = r
        else:
            self.rflags |= XT_RATEEST_MATCH_PPS
            if arg is not None:
                v = parse_uint(a, 0, U32)
                if v is None:
                    raise RulesError(f"rateest: could not parse pps `{a}'")
                if c == 3:
                    self.pps1 = v
                else:
                    self.pps2 = v

    def final_check(self, rule: Rule) -> None:
        if not self.rflags & XT_RATEEST_MATCH_REL:
            self.rflags |= XT_RATEEST_MATCH_ABS

    def _mode(self, pfx: str) -> str:
        return (" !" if self.rflags & XT_RATEEST_MATCH_INVERT else "") + " " + pfx + {
            XT_RATEEST_MATCH_EQ: "eq", XT_RATEEST_MATCH_LT: "lt", XT_RATEEST_MATCH_GT: "gt"}.get(self.mode, "")

    def _save_rate(self, name: str, r1: int, r2: int, numeric: bool) -> str:
        f = self.rflags
        if f & XT_RATEEST_MATCH_DELTA:
            out = f" --rateest-{name}1" + print_rate(r1, numeric) + self._mode("--rateest-") + f" --rateest-{name}2"
        else:
            out = self._mode("--rateest-") + f" --rateest-{name}"
        if f & (XT_RATEEST_MATCH_ABS | XT_RATEEST_MATCH_DELTA):
            out += print_rate(r2, numeric)
        return out

    def save(self) -> str:
        f = self.rflags
        out = " --rateest-delta" if f & XT_RATEEST_MATCH_DELTA else ""
        rates = ((self._save_rate("bps", self.bps1, self.bps2, False) if f & XT_RATEEST_MATCH_BPS else "")
                 + (self._save_rate("pps", self.pps1, self.pps2, True) if f & XT_RATEEST_MATCH_PPS else ""))
        if f & XT_RATEEST_MATCH_REL:
            return out + f" --rateest1 {self.name1}" + rates + f" --rateest2 {self.name2}"
        return out + f" --rateest {self.name1}" + rates

    def print_list(self, numeric: bool) -> str:
        f = self.rflags
        out = f" rateest match {self.name1}" + (" delta" if f & XT_RATEEST_MATCH_DELTA else "")
        if f & XT_RATEEST_MATCH_BPS:
            out += " bps" + (print_rate(self.bps1, numeric) if f & XT_RATEEST_MATCH_DELTA else "")
            if f & XT_RATEEST_MATCH_ABS:
                out += print_rate(self.bps2, numeric) + self._mode("")
        if f & XT_RATEEST_MATCH_PPS:
            out += " pps" + (f" {self.pps1}" if f & XT_RATEEST_MATCH_DELTA else "")
            if f & XT_RATEEST_MATCH_ABS:
                out += self._mode("") + f" {self.pps2}"
        if f & XT_RATEEST_MATCH_REL:
            out += self._mode("") + f" {self.name2}"
            if f & XT_RATEEST_MATCH_BPS:
                out += " bps" + (print_rate(self.bps2, numeric) if f & XT_RATEEST_MATCH_DELTA else "")
            if f & XT_RATEEST_MATCH_PPS:
                out += " pps" + (f" {self.pps2}" if f & XT_RATEEST_MATCH_DELTA else "")
        return out

    def xt_attach(self, state: XtState) -> list[tuple[str, str]]:
        """`xt_rateest_mt_checkentry()` holds the estimators it names."""
        return [("rateest", self.name1)] + ([("rateest", self.name2)] if self.rflags & XT_RATEEST_MATCH_REL else [])

    def compile(self) -> MatchFn:
        f, mode, n1, n2 = self.rflags, self.mode, self.name1, self.name2
        b1, p1, b2, p2 = self.bps1, self.pps1, self.bps2, self.pps2
        delta = bool(f & XT_RATEEST_MATCH_DELTA)

        def rateest_mt(skb: Skb, ctx: XtContext) -> bool:
            """`xt_rateest_mt()`."""
            now, ests = jiffies(ctx.now), ctx.xt_state().rateest
            e1 = ests.get(n1)
            e2 = ests.get(n2) if f & XT_RATEEST_MATCH_REL else None
            if e1 is None or (f & XT_RATEEST_MATCH_REL and e2 is None):
                return False  # the kernel would have refused the rule
            bps, pps = e1.read(now)
            bps1, pps1 = (max(b1 - bps, 0), max(p1 - pps, 0)) if delta else (bps & U32, pps & U32)
            if e2 is None:
                bps2, pps2 = b2, p2
            else:
                bps, pps = e2.read(now)
                bps2, pps2 = (max(b2 - bps, 0), max(p2 - pps, 0)) if delta else (bps & U32, pps & U32)
            ret = True
            for on, x, y in ((f & XT_RATEEST_MATCH_BPS, bps1, bps2), (f & XT_RATEEST_MATCH_PPS, pps1, pps2)):
                if not on:
                    continue
                if mode == XT_RATEEST_MATCH_LT:
                    ret = ret and x < y
                elif mode == XT_RATEEST_MATCH_GT:
                    ret = ret and x > y
                elif mode == XT_RATEEST_MATCH_EQ:
                    ret = ret and x == y
            return ret != bool(f & XT_RATEEST_MATCH_INVERT)

        return rateest_mt
