"""`-j TOS --set-tos value[/mask] | --and-tos | --or-tos | --xor-tos` rev 1 (libxt_TOS.c, xt_DSCP.c `tos_tg`).

mangle table only. The kernel computes `nv = (orig & ~mask) ^ value` and, when it differs, rewrites the
TOS byte with `ipv4_change_dsfield` (incremental header checksum); it always continues.
"""

from __future__ import annotations

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches._xtopt import U8_MAX, parse_value
from natbox.rules.matches.dsfield6 import dsfield_tg6
from natbox.rules.matches.tos import parse_tos_mask, tos_symbolic
from natbox.rules.model import NFPROTO_IPV6, RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn
from natbox.rules.targets.dscp import set_tos
from natbox.skb import Skb
from natbox.wire.layout import IPH_TOS

__all__ = ["TosTarget"]


class TosTarget(Target):
    name = "TOS"
    revision = 1
    options = (Opt("set-tos", 1), Opt("and-tos", 1), Opt("or-tos", 1), Opt("xor-tos", 1))

    def __init__(self) -> None:
        self.value = 0
        self.mask = 0
        self.given = ""

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if self.given:
            raise RulesError(f'TOS: option "--{self.given}" cannot be used together with "--{opt}".\n')
        a = arg or ""
        if opt == "set-tos":
            self.value, self.mask = parse_tos_mask("TOS", opt, a)
        elif opt in ("and-tos", "or-tos", "xor-tos"):
            v = parse_value("TOS", opt, a, U8_MAX)
            self.value, self.mask = {"and-tos": (0, (~v) & 0xFF), "or-tos": (v, v), "xor-tos": (v, 0)}[opt]
        else:
            super().parse(opt, arg, inverted, rule)
        self.given = opt

    def final_check(self, rule: Rule) -> None:
        if not self.given:
            raise RulesError("TOS: An action is required")

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if table != "mangle":
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        return f" --set-tos 0x{self.value:02x}/0x{self.mask:02x}"

    def print_list(self, numeric: bool) -> str:
        value, mask = self.value, self.mask
        if numeric:
            return f" TOS set 0x{value:02x}/0x{mask:02x}"
        sym = tos_symbolic(value, mask)
        if sym is not None:
            return f"  TOS set{sym}"  # tos_try_print_symbolic(" TOS set", ...) prints " %s%s"
        if value == 0:
            return f" TOS and 0x{(~mask) & 0xFF:02x}"
        if value == mask:
            return f" TOS or 0x{value:02x}"
        if mask == 0:
            return f" TOS xor 0x{value:02x}"
        return f" TOS set 0x{value:02x}/0x{mask:02x}"

    def compile(self) -> TargetFn:
        value, keep = self.value, (~self.mask) & 0xFF
        if self.family == NFPROTO_IPV6:
            return dsfield_tg6(keep, value)

        def tos_tg(skb: Skb, ctx: XtContext) -> int:
            orig = skb.data[IPH_TOS]
            nv = (orig & keep) ^ value
            if nv != orig:
                set_tos(skb, nv)
            return XT_CONTINUE

        return tos_tg
