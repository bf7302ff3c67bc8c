"""`-j MARK` rev 2 (libxt_MARK.c, xt_mark.c `mark_tg`): skb->mark = (mark & ~mask) ^ value."""

from __future__ import annotations

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches.mark import parse_mark_mask
from natbox.rules.model import Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb

__all__ = ["MarkTarget"]


class MarkTarget(Target):
    name = "MARK"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    revision = 2
    options = (Opt("set-xmark", 1), Opt("set-mark", 1), Opt("and-mark", 1), Opt("or-mark", 1),
               Opt("xor-mark", 1))

    def __init__(self) -> None:
        self.mark = 0
        self.mask = 0
        self.given = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if self.given:
            raise RulesError("MARK: Can't specify --set-xmark twice")
        a = arg or ""
        if opt == "set-xmark":
            self.mark, self.mask = parse_mark_mask(a, "MARK", opt)
        elif opt == "set-mark":
            v, m = parse_mark_mask(a, "MARK", opt)
            self.mark, self.mask = v, v | m
        elif opt in ("and-mark", "or-mark", "xor-mark"):
            v, _m = parse_mark_mask(a, "MARK", opt)
            if opt == "and-mark":
                self.mark, self.mask = 0, (~v) & 0xFFFFFFFF
            elif opt == "or-mark":
                self.mark, self.mask = v, v
            else:
                self.mark, self.mask = v, 0
        else:
            super().parse(opt, arg, inverted, rule)
        self.given = True

    def final_check(self, rule: Rule) -> None:
        if not self.given:
            raise RulesError("MARK: One of the --set-xmark, --{and,or,xor,set}-mark options is required")

    def save(self) -> str:
        return f" --set-xmark 0x{self.mark:x}/0x{self.mask:x}"

    def print_list(self, numeric: bool) -> str:
        mark, mask = self.mark, self.mask
        if mark == 0:
            return f" MARK and 0x{(~mask) & 0xFFFFFFFF:x}"
        if mark == mask:
            return f" MARK or 0x{mark:x}"
        if mask == 0:
            return f" MARK xor 0x{mark:x}"
        if mask == 0xFFFFFFFF:
            return f" MARK set 0x{mark:x}"
        return f" MARK xset 0x{mark:x}/0x{mask:x}"

    def compile(self) -> TargetFn:
        mark, keep = self.mark, (~self.mask) & 0xFFFFFFFF

        def mark_tg(skb: Skb, ctx: XtContext) -> int:
            skb.mark = (skb.mark & keep) ^ mark
            return XT_CONTINUE

        return mark_tg
