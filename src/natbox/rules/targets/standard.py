"""`-j standard`: the verdict target's own name. iptables loads it with no verdict set and the kernel refuses
the rule (`RULE_APPEND failed (Invalid argument)`, exit 4, recorded with iptables 1.8.9 (nf_tables)); a
rule holding it is never part of a valid table, so it is never evaluated."""

from __future__ import annotations

from natbox.rules.api import NF_DROP, XtContext
from natbox.rules.model import RESOURCE_PROBLEM, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb

__all__ = ["Standard"]


class Standard(Target):
    name = "standard"

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def compile(self) -> TargetFn:
        def standard_tg(skb: Skb, ctx: XtContext) -> int:
            return NF_DROP  # unreachable: check() refuses every rule holding it

        return standard_tg
