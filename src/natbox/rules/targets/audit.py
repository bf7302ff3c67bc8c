"""`-j AUDIT --type accept|drop|reject` (libxt_AUDIT.c, net/netfilter/xt_AUDIT.c `audit_tg`).

The kernel writes an NETFILTER_PKT audit record when auditing is enabled and continues with the next
rule. natbox has no audit subsystem: the target only continues (docs/differences.md).
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.model import Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb

__all__ = ["Audit"]

AUDIT_TYPES: Final = ("accept", "drop", "reject")


class Audit(Target):
    name = "AUDIT"
    options = (Opt("type", 1),)

    def __init__(self) -> None:
        self.type: str | None = None

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "type":
            super().parse(opt, arg, inverted, rule)
        a = arg or ""
        if a not in AUDIT_TYPES:
            raise RulesError(f"Bad action type value \"{a}\"")
        self.type = a

    def final_check(self, rule: Rule) -> None:
        if self.type is None:
            raise RulesError('AUDIT: option "--type" must be specified\n')

    def save(self) -> str:
        return f" --type {self.type}"

    def print_list(self, numeric: bool) -> str:
        return f" AUDIT {self.type}"

    def compile(self) -> TargetFn:
        def audit_tg(skb: Skb, ctx: XtContext) -> int:
            return XT_CONTINUE

        return audit_tg
