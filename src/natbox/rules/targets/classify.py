"""`-j CLASSIFY --set-class MAJOR:MINOR` (libxt_CLASSIFY.c, net/netfilter/xt_CLASSIFY.c `classify_tg`).

Sets `skb->priority` (the tc class the packet is queued to) and continues; allowed in LOCAL_OUT,
FORWARD and POST_ROUTING. natbox keeps the value on the skb (`Skb.priority`); it has no qdiscs that read it.
"""

from __future__ import annotations

from typing import Final

from natbox.netfilter import Hook
from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn, hook_mask_of
from natbox.skb import Skb

__all__ = ["Classify"]

CLASSIFY_HOOKS: Final = hook_mask_of(Hook.LOCAL_OUT, Hook.FORWARD, Hook.POST_ROUTING)
_HEX: Final = "0123456789abcdefABCDEF"


def _sscanf_hex(text: str) -> tuple[int | None, str]:
    """`%x`: optional sign and 0x, hex digits, value cut to 32 bits; None when no digit was read."""
    sign = -1 if text[:1] == "-" else 1
    text = text[1:] if text[:1] in "+-" else text
    t = text[2:] if text[:2].lower() == "0x" and len(text) > 2 and text[2] in _HEX else text
    j = 0
    while j < len(t) and t[j] in _HEX:
        j += 1
    return ((sign * int(t[:j], 16)) & 0xFFFFFFFF if j else None), t[j:]


class Classify(Target):
    name = "CLASSIFY"
    options = (Opt("set-class", 1),)

    def __init__(self) -> None:
        self.priority: int | None = None

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "set-class":
            super().parse(opt, arg, inverted, rule)
        a = arg or ""
        major, rest = _sscanf_hex(a)
        minor = _sscanf_hex(rest[1:])[0] if major is not None and rest.startswith(":") else None
        if major is None or minor is None:
            raise RulesError(f'Bad class value "{a}"')
        self.priority = ((major << 16) | (minor & 0xFFFF)) & 0xFFFFFFFF  # TC_H_MAKE(major << 16, minor)

    def final_check(self, rule: Rule) -> None:
        if self.priority is None:
            raise RulesError('CLASSIFY: option "--set-class" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if hook_mask & ~CLASSIFY_HOOKS:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        p = self.priority or 0
        return f" --set-class {p >> 16:04x}:{p & 0xFFFF:04x}"

    def print_list(self, numeric: bool) -> str:
        p = self.priority or 0
        return f" CLASSIFY set {p >> 16:x}:{p & 0xFFFF:x}"

    def compile(self) -> TargetFn:
        priority = self.priority or 0

        def classify_tg(skb: Skb, ctx: XtContext) -> int:
            skb.priority = priority
            return XT_CONTINUE

        return classify_tg
