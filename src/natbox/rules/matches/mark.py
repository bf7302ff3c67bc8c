"""`-m mark --mark value[/mask]` (libxt_mark.c rev 1, xt_mark.c `mark_mt`)."""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["Mark", "parse_mark_mask", "print_mark_mask"]


def parse_mark_mask(arg: str, what: str, opt: str) -> tuple[int, int]:
    """`xtables_parse_mark_mask`: value[/mask] as u32 (mask defaults to 0xffffffff)."""
    v_s, sep, m_s = arg.partition("/")
    if "/" in m_s:
        raise RulesError(f'{what}: trailing garbage after value for option "--{opt}".\n')
    v = parse_uint(v_s, 0, 0xFFFFFFFF)
    m = parse_uint(m_s, 0, 0xFFFFFFFF) if sep else 0xFFFFFFFF
    if v is None or m is None:
        raise RulesError(f'{what}: bad integer value for option "--{opt}", or out of range.\n')
    return v, m


def print_mark_mask(mark: int, mask: int) -> str:
    """`xtables_print_mark_mask`."""
    return f" 0x{mark:x}/0x{mask:x}" if mask != 0xFFFFFFFF else f" 0x{mark:x}"


class Mark(Match):
    """Also the base of `-m connmark`, which has the same option and differs in what it reads."""

    name = "mark"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    revision = 1
    options = (Opt("mark", 1, True),)

    def __init__(self) -> None:
        self.mark: int | None = None
        self.mask = 0xFFFFFFFF
        self.invert = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "mark":
            super().parse(opt, arg, inverted, rule)
        self.mark, self.mask = parse_mark_mask(arg or "", self.name, "mark")
        self.invert = inverted

    def final_check(self, rule: Rule) -> None:
        if self.mark is None:
            raise RulesError(f'{self.name}: option "--mark" must be specified\n')

    def save(self) -> str:
        return (" !" if self.invert else "") + " --mark" + print_mark_mask(self.mark or 0, self.mask)

    def print_list(self, numeric: bool) -> str:
        return " mark match" + (" !" if self.invert else "") + print_mark_mask(self.mark or 0, self.mask)

    def compile(self) -> MatchFn:
        mark, mask, inv = self.mark or 0, self.mask, self.invert

        def mark_mt(skb: Skb, ctx: XtContext) -> bool:
            return ((skb.mark & mask) == mark) != inv

        return mark_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return f"no match (mark 0x{skb.mark:x})"
