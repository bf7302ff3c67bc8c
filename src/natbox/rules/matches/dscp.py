"""`-m dscp --dscp N | --dscp-class CLASS` (libxt_dscp.c, xt_dscp.c `dscp_mt`)."""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.matches.dsfield6 import tos_mt6
from natbox.rules.model import NFPROTO_IPV6, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb
from natbox.wire.layout import IPH_TOS

__all__ = ["DSCP_CLASSES", "Dscp", "parse_dscp_class"]

XT_DSCP_MAX: Final = 0x3F
# ds_classes of dscp_helper.c
DSCP_CLASSES: dict[str, int] = {
    "CS0": 0x00, "CS1": 0x08, "CS2": 0x10, "CS3": 0x18, "CS4": 0x20, "CS5": 0x28, "CS6": 0x30, "CS7": 0x38,
    "BE": 0x00, "AF11": 0x0A, "AF12": 0x0C, "AF13": 0x0E, "AF21": 0x12, "AF22": 0x14, "AF23": 0x16, "AF31": 0x1A,
    "AF32": 0x1C, "AF33": 0x1E, "AF41": 0x22, "AF42": 0x24, "AF43": 0x26, "EF": 0x2E,
}


def parse_dscp_class(name: str) -> int:
    """`class_to_dscp`."""
    for k, v in DSCP_CLASSES.items():
        if k.lower() == name.lower():
            return v
    raise RulesError(f"Invalid DSCP value `{name}'")


def parse_dscp(ext: str, opt: str, text: str) -> int:
    v = parse_uint(text, 0, XT_DSCP_MAX)
    if v is None:
        raise RulesError(f'{ext}: bad value for option "--{opt}", or out of range (0-{XT_DSCP_MAX}).\n')
    return v


class Dscp(Match):
    name = "dscp"
    options = (Opt("dscp", 1, True), Opt("dscp-class", 1, True))

    def __init__(self) -> None:
        self.dscp: int | None = None
        self.invert = False
        self.seen: list[str] = []

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt == "dscp":
            self.dscp = parse_dscp("dscp", opt, arg or "")
        elif opt == "dscp-class":
            self.dscp = parse_dscp_class(arg or "")
        else:
            super().parse(opt, arg, inverted, rule)
        self.seen.append(opt)
        self.invert = inverted

    def final_check(self, rule: Rule) -> None:
        if "dscp" in self.seen and "dscp-class" in self.seen:
            raise RulesError('dscp: option "--dscp" cannot be used together with "--dscp-class".\n')
        if self.dscp is None:
            raise RulesError("DSCP match: Parameter --dscp is required")

    def save(self) -> str:
        return (" !" if self.invert else "") + f" --dscp 0x{self.dscp or 0:02x}"

    def print_list(self, numeric: bool) -> str:
        return f" DSCP match {'!' if self.invert else ''}0x{self.dscp or 0:02x}"

    def compile(self) -> MatchFn:
        dscp, inv = self.dscp or 0, self.invert
        if self.family == NFPROTO_IPV6:
            return tos_mt6(dscp << 2, 0xFC, inv)  # dscp_mt6: the traffic class >> 2

        def dscp_mt(skb: Skb, ctx: XtContext) -> bool:
            return ((skb.data[IPH_TOS] >> 2) == dscp) != inv

        return dscp_mt
