"""`-m length --length min[:max]` (libxt_length.c, xt_length.c: the IP total length)."""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.matches._xtopt import parse_range
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
        self.range, self.invert = parse_range("length", "length", a, 0xFFFF), inverted  # XTTYPE_UINT16RC

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
