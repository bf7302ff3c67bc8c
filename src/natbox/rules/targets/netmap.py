"""`-j NETMAP --to a.b.c.d/len` (xt_NETMAP.c `netmap_tg4`; `netmap_tg6` is the same for IPv6), §5.1."""

from __future__ import annotations

from natbox.nat.range import NatRange, RangeFlags
from natbox.netfilter import Hook, ManipType
from natbox.rules.api import XtContext
from natbox.rules.model import (
    HOOK_ALL,
    Opt,
    Rule,
    RulesError,
    Target,
    TargetFn,
    format_addr_mask,
    parse_ipv4_mask,
)
from natbox.rules.targets.nat import check_nat_hooks
from natbox.skb import Skb

__all__ = ["Netmap"]


class Netmap(Target):
    """`-j NETMAP --to ADDR[/LEN|/MASK]`: the masked bits replaced, the rest kept. The family's addresses are
    the class's: 32 bits here, 128 in targets6.Netmap6 (`netmap_tg6`)."""

    name = "NETMAP"
    options = (Opt("to", 1),)
    all_ones = 0xFFFFFFFF

    @staticmethod
    def parse_mask(text: str) -> tuple[int, int]:
        return parse_ipv4_mask(text)

    @staticmethod
    def format_mask(addr: int, mask: int) -> str:
        return format_addr_mask(addr, mask)

    def __init__(self) -> None:
        self.net: int | None = None
        self.mask = self.all_ones

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "to":
            super().parse(opt, arg, inverted, rule)
        self.net, self.mask = self.parse_mask(arg or "")

    def final_check(self, rule: Rule) -> None:
        if self.net is None:
            raise RulesError('NETMAP: option "--to" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        check_nat_hooks(table, hook_mask, HOOK_ALL)

    def save(self) -> str:
        return " --to " + self.format_mask(self.net or 0, self.mask)

    def print_list(self, numeric: bool) -> str:
        return " to:" + self.format_mask(self.net or 0, self.mask)

    def compile(self) -> TargetFn:
        net, mask = self.net or 0, self.mask
        keep = ~mask & self.all_ones

        def netmap_tg(skb: Skb, ctx: XtContext) -> int:
            if ctx.hook in (Hook.PRE_ROUTING, Hook.LOCAL_OUT):
                new = (skb.daddr & keep) | (net & mask)
                manip = ManipType.DST
            else:
                new = (skb.saddr & keep) | (net & mask)
                manip = ManipType.SRC
            return ctx.nat_setup_info(skb, NatRange(RangeFlags.MAP_IPS, new, new), manip)

        return netmap_tg
