"""`-j REJECT [--reject-with TYPE]` (libipt_REJECT.c, ipt_REJECT.c): hooks INPUT/FORWARD/OUTPUT."""

from __future__ import annotations

from typing import ClassVar, Final

from natbox.netfilter import Hook
from natbox.rules.api import NF_DROP, XtContext
from natbox.rules.model import (
    RESOURCE_PROBLEM,
    Opt,
    Rule,
    RulesError,
    Target,
    TargetFn,
    hook_mask_of,
)
from natbox.skb import Skb

__all__ = ["REJECT_TYPES", "Reject"]

# reject_table of libipt_REJECT.c: (name, alias) in `enum ipt_reject_with` order
REJECT_TYPES: tuple[tuple[str, str], ...] = (
    ("icmp-net-unreachable", "net-unreach"), ("icmp-host-unreachable", "host-unreach"),
    ("icmp-proto-unreachable", "proto-unreach"), ("icmp-port-unreachable", "port-unreach"),
    ("icmp-echo-reply", "echoreply"), ("icmp-net-prohibited", "net-prohib"),
    ("icmp-host-prohibited", "host-prohib"), ("tcp-reset", "tcp-rst"),
    ("icmp-admin-prohibited", "admin-prohib"),
)
_VALID_HOOKS: Final = hook_mask_of(Hook.LOCAL_IN, Hook.FORWARD, Hook.LOCAL_OUT)


class Reject(Target):
    """`-j REJECT [--reject-with TYPE]`: the type is a name or alias of the family's reject_table (`types`,
    found by `find_type`), printed by its name; Reject6 (targets6.py) is this class with IPv6's table."""

    name = "REJECT"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    options = (Opt("reject-with", 1),)
    types: ClassVar[tuple[tuple[str, str], ...]] = REJECT_TYPES  # ClassVar: find_type reads it off the class (mypyc)
    default = "icmp-port-unreachable"

    def __init__(self) -> None:
        self.with_ = self.default

    @classmethod
    def find_type(cls, text: str) -> str | None:
        """libipt_REJECT.c: a name or alias exactly (icmp-echo-reply is not accepted)."""
        return next((name for name, alias in cls.types if text in (name, alias) and name != "icmp-echo-reply"),
                    None)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "reject-with":
            super().parse(opt, arg, inverted, rule)
        text = arg or ""
        with_ = self.find_type(text)
        if with_ is None:
            raise RulesError(f"unknown reject type \"{text}\"")
        self.with_ = with_

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        # reject_tg_check: tcp-reset needs -p tcp (not inverted); .hooks INPUT/FORWARD/OUTPUT
        if hook_mask & ~_VALID_HOOKS:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)
        if self.with_ == "tcp-reset" and (rule.proto != 6 or rule.inv_proto):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        return f" --reject-with {self.with_}"

    def print_list(self, numeric: bool) -> str:
        return f" reject-with {self.with_}"

    def compile(self) -> TargetFn:
        with_ = self.with_

        def reject_tg(skb: Skb, ctx: XtContext) -> int:
            ctx.send_reject(skb, with_)
            return NF_DROP

        return reject_tg
