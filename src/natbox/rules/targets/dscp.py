"""`-j DSCP --set-dscp N | --set-dscp-class C` (libxt_DSCP.c, xt_DSCP.c `dscp_tg`): mangle table only.

The TOS byte is rewritten with an incremental header checksum update (`ipv4_change_dsfield`).
"""

from __future__ import annotations

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches.dscp import parse_dscp, parse_dscp_class
from natbox.rules.matches.dsfield6 import dsfield_tg6
from natbox.rules.model import NFPROTO_IPV6, RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb
from natbox.wire.checksum import csum_replace2
from natbox.wire.layout import IPH_CHECK, IPH_TOS, IPH_VER_IHL

__all__ = ["DscpTarget", "set_tos"]


def set_tos(skb: Skb, tos: int) -> None:
    """Rewrite the TOS byte and fix the IPv4 header checksum incrementally (RFC 1624)."""
    data = skb.data
    old = data[IPH_TOS]
    if old == tos:
        return
    check = (data[IPH_CHECK] << 8) | data[IPH_CHECK + 1]
    check = csum_replace2(check, (data[IPH_VER_IHL] << 8) | old, (data[IPH_VER_IHL] << 8) | tos)
    data[IPH_TOS] = tos
    data[IPH_CHECK], data[IPH_CHECK + 1] = check >> 8, check & 0xFF


class DscpTarget(Target):
    name = "DSCP"
    options = (Opt("set-dscp", 1), Opt("set-dscp-class", 1))

    def __init__(self) -> None:
        self.dscp: int | None = None
        self.seen: list[str] = []

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt == "set-dscp":
            self.dscp = parse_dscp("DSCP", opt, arg or "")
        elif opt == "set-dscp-class":
            self.dscp = parse_dscp_class(arg or "")
        else:
            super().parse(opt, arg, inverted, rule)
        self.seen.append(opt)

    def final_check(self, rule: Rule) -> None:
        if "set-dscp" in self.seen and "set-dscp-class" in self.seen:
            raise RulesError('DSCP: option "--set-dscp" cannot be used together with "--set-dscp-class".\n')
        if self.dscp is None:
            raise RulesError("DSCP target: Parameter --set-dscp is required")

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if table != "mangle":
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        return f" --set-dscp 0x{self.dscp or 0:02x}"

    def print_list(self, numeric: bool) -> str:
        return f" DSCP set 0x{self.dscp or 0:02x}"

    def compile(self) -> TargetFn:
        dscp = self.dscp or 0
        if self.family == NFPROTO_IPV6:
            return dsfield_tg6(0x03, dscp << 2)  # dscp_tg6: ipv6_change_dsfield(~XT_DSCP_MASK, dscp << 2)

        def dscp_tg(skb: Skb, ctx: XtContext) -> int:
            tos = skb.data[IPH_TOS]
            if (tos >> 2) != dscp:
                set_tos(skb, (tos & 0x03) | (dscp << 2))
            return XT_CONTINUE

        return dscp_tg
