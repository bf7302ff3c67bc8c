"""`-m rpfilter` (libxt_rpfilter.c, net/ipv4/netfilter/ipt_rpfilter.c `rpfilter_mt`): reverse path filtering.

The source address is routed back through the host's FIB (`XtContext.fib_lookup`, natbox's local, main
and default tables): the packet passes when the route is unicast (or local with `--accept-local`) and
leaves through the interface the packet came in on (any interface with `--loose`). natbox's FIB has no
policy routing, so `--validmark` (the mark as the lookup's fwmark) and the TOS change nothing, and it
skips routes of devices that are down where the kernel's lookup ignores the link state
(docs/differences.md). Valid in the raw and mangle tables, at PREROUTING only.

In ip6tables (net/ipv6/netfilter/ip6t_rpfilter.c `rpfilter_mt`, `rpfilter_lookup_reverse6`) the source is
routed through the IPv6 FIB: loopback and the unspecified source pass; a link-local source passes (it is
looked up on the in-device itself, where its link-local prefix is); a reject route fails; a local route
passes only with `--accept-local`; else the route's device must be the in-device (or `--loose`).
"""

from __future__ import annotations

from typing import Final

from natbox.netfilter import NFPROTO_IPV6, Hook
from natbox.rules.api import XtContext
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError, hook_mask_of
from natbox.skb import PacketType, Skb

__all__ = ["Rpfilter"]

XT_RPFILTER_LOOSE, XT_RPFILTER_VALID_MARK, XT_RPFILTER_ACCEPT_LOCAL, XT_RPFILTER_INVERT = 1, 2, 4, 8
RTN_UNICAST, RTN_LOCAL = 1, 2
_WORDS: Final = (("loose", XT_RPFILTER_LOOSE), ("validmark", XT_RPFILTER_VALID_MARK),
          ("accept-local", XT_RPFILTER_ACCEPT_LOCAL), ("invert", XT_RPFILTER_INVERT))
_SPECS: Final = tuple(XtOptSpec(w, i) for i, (w, _b) in enumerate(_WORDS))
_VALID_HOOKS: Final = hook_mask_of(Hook.PRE_ROUTING)


class Rpfilter(Match):
    name = "rpfilter"
    options = tuple(Opt(w, 0) for w, _b in _WORDS)

    def __init__(self) -> None:
        self.rflags = 0
        self.flags = XtFlags("rpfilter", _SPECS)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        self.flags.parse(opt)
        self.rflags |= dict(_WORDS)[opt]

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`.hooks` (PREROUTING) and `rpfilter_check()` (raw and mangle only)."""
        if hook_mask & ~_VALID_HOOKS or table not in ("raw", "mangle"):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        return "".join(f" --{w}" for w, b in _WORDS if self.rflags & b)

    def print_list(self, numeric: bool) -> str:
        return " rpfilter" + "".join(f" {w}" for w, b in _WORDS if self.rflags & b)

    def compile(self) -> MatchFn:
        flags = self.rflags
        invert = bool(flags & XT_RPFILTER_INVERT)
        loose = bool(flags & XT_RPFILTER_LOOSE)
        accept_local = bool(flags & XT_RPFILTER_ACCEPT_LOCAL)

        def rpfilter_mt6(skb: Skb, ctx: XtContext) -> bool:
            """ip6t_rpfilter's `rpfilter_mt()` and `rpfilter_lookup_reverse6()`."""
            if skb.pkt_type == PacketType.LOOPBACK or skb.iif == "lo":
                return not invert
            saddr = skb.saddr
            if saddr == 0:
                return not invert  # not routable: the forward path drops it
            if saddr >> 118 == 0x3FA:  # fe80::/10: RT6_LOOKUP_F_IFACE on the in-device, its link-local route
                return not invert
            res = ctx.fib_lookup(saddr)
            if res is None:
                return invert
            rtype, dev = res
            if rtype == RTN_LOCAL:
                return accept_local != invert
            if rtype != RTN_UNICAST:
                return invert
            return (dev == skb.iif or loose) != invert

        if self.family == NFPROTO_IPV6:
            return rpfilter_mt6

        def rpfilter_mt(skb: Skb, ctx: XtContext) -> bool:
            """`rpfilter_mt()` and `rpfilter_lookup_reverse()`."""
            if skb.pkt_type == PacketType.LOOPBACK or skb.iif == "lo":
                return not invert
            saddr, daddr = skb.saddr, skb.daddr
            if saddr == 0 and (daddr == 0xFFFFFFFF or daddr >> 8 == 0xE00000):
                return not invert  # ipv4_is_zeronet (0.0.0.0) to the limited broadcast or 224.0.0.0/24 (DHCP)
            res = ctx.fib_lookup(saddr)
            if res is None:
                return invert
            rtype, dev = res
            if rtype != RTN_UNICAST and (rtype != RTN_LOCAL or not accept_local):
                return invert
            return (dev == skb.iif or loose) != invert

        return rpfilter_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return "no match (reverse path check)"
