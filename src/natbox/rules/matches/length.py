"""`-m length --length min[:max]` (libxt_length.c, xt_length.c: the IP total length)."""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["Length"]


class Length(Match):
    name = "length"
    options = (Opt("length", 1, True),)

    def __init__(self) -> None:
        self.range: tuple[int, int] | None = None
        self.invert = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "length":
            super().parse(opt, arg, inverted, rule)
        a = arg or ""
        lo_s, sep, hi_s = a.partition(":")
        lo = parse_uint(lo_s, 0, 0xFFFF) if lo_s else 0
        hi = (parse_uint(hi_s, 0, 0xFFFF) if hi_s else 0xFFFF) if sep else lo
        if lo is None or hi is None:
            near = lo_s if lo is None else hi_s
            raise RulesError(f'length: bad value for option "--length" near "{near}", or out of range (0-65535).\n')
        self.range, self.invert = (lo, hi), inverted

    def final_check(self, rule: Rule) -> None:
        if self.range is None:
            raise RulesError('length: option "--length" must be specified\n')

    def _text(self) -> str:
        lo, hi = self.range or (0, 0)
        return f"{lo}" if lo == hi else f"{lo}:{hi}"

    def save(self) -> str:
        return (" !" if self.invert else "") + " --length " + self._text()

    def print_list(self, numeric: bool) -> str:
        return " length " + ("!" if self.invert else "") + self._text()

    def compile(self) -> MatchFn:
        lo, hi = self.range or (0, 0)
        inv = self.invert

        def length_mt(skb: Skb, ctx: XtContext) -> bool:
            return (lo <= len(skb.data) <= hi) != inv

        return length_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return f"no match (length {len(skb.data)})"
