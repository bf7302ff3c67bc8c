"""`-j CHECKSUM --checksum-fill` (libxt_CHECKSUM.c, xt_CHECKSUM.c): mangle table only.

The kernel completes a CHECKSUM_PARTIAL skb's transport checksum; natbox's packets always carry a
complete checksum, so at run time the target just continues.
"""

from __future__ import annotations

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb

__all__ = ["Checksum"]


class Checksum(Target):
    name = "CHECKSUM"
    options = (Opt("checksum-fill", 0),)

    def __init__(self) -> None:
        self.fill = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "checksum-fill":
            super().parse(opt, arg, inverted, rule)
        self.fill = True

    def final_check(self, rule: Rule) -> None:
        if not self.fill:
            raise RulesError('CHECKSUM: option "--checksum-fill" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if table != "mangle":
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        return " --checksum-fill" if self.fill else ""

    def print_list(self, numeric: bool) -> str:
        return " CHECKSUM" + (" fill" if self.fill else "")

    def compile(self) -> TargetFn:
        def checksum_tg(skb: Skb, ctx: XtContext) -> int:
            return XT_CONTINUE

        return checksum_tg
