"""`-m connmark --mark value[/mask]` rev 1 (libxt_connmark.c, xt_connmark.c `connmark_mt`)."""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.matches.mark import parse_mark_mask, print_mark_mask
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError, register_match
from natbox.skb import Skb

__all__ = ["Connmark"]


@register_match
class Connmark(Match):
    name = "connmark"
    revision = 1
    options = (Opt("mark", 1, True),)

    def __init__(self) -> None:
        self.mark: int | None = None
        self.mask = 0xFFFFFFFF
        self.invert = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "mark":
            super().parse(opt, arg, inverted, rule)
        self.mark, self.mask = parse_mark_mask(arg or "", "connmark", "mark")
        self.invert = inverted

    def final_check(self, rule: Rule) -> None:
        if self.mark is None:
            raise RulesError('connmark: option "--mark" must be specified\n')

    def save(self) -> str:
        return (" !" if self.invert else "") + " --mark" + print_mark_mask(self.mark or 0, self.mask)

    def print_list(self, numeric: bool) -> str:
        return " connmark match " + ("!" if self.invert else "") + print_mark_mask(self.mark or 0, self.mask)

    def compile(self) -> MatchFn:
        mark, mask, inv = self.mark or 0, self.mask, self.invert

        def connmark_mt(skb: Skb, ctx: XtContext) -> bool:
            ct = skb.ct
            if ct is None or skb.untracked:
                return False
            return ((ct.mark & mask) == mark) != inv

        return connmark_mt
