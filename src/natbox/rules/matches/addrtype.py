"""`-m addrtype` rev 1 (libxt_addrtype.c, xt_addrtype.c `addrtype_mt_v1`), §5.3."""

from __future__ import annotations

from typing import Final

from natbox.netfilter import Hook
from natbox.rules.api import XtContext
from natbox.rules.model import (
    NFPROTO_IPV6,
    RESOURCE_PROBLEM,
    Match,
    MatchFn,
    Opt,
    Rule,
    RulesError,
    format_addr_mask,
    hook_mask_of,
)
from natbox.skb import Skb

__all__ = ["RTN_NAMES", "Addrtype"]

# `rtn_names`: bit i = 1 << RTN_i
RTN_NAMES: Final = ("UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE", "UNREACHABLE",
             "PROHIBIT", "THROW", "NAT", "XRESOLVE")


def _types(mask: int) -> str:
    return ",".join(n for i, n in enumerate(RTN_NAMES) if mask & (1 << i))


def _parse_types(arg: str) -> int:
    mask = 0
    for part in arg.split(","):
        for i, n in enumerate(RTN_NAMES):
            if n.lower() == part.lower():
                mask |= 1 << i
                break
        else:
            raise RulesError(f'addrtype: bad type "{part}"')
    return mask


class Addrtype(Match):
    name = "addrtype"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    revision = 1
    options = (Opt("src-type", 1, True), Opt("dst-type", 1, True), Opt("limit-iface-in", 0),
               Opt("limit-iface-out", 0))
    checkentry_hooks = True  # addrtype_mt_checkentry_v1 tests par->hook_mask

    def __init__(self) -> None:
        self.source = 0
        self.dest = 0
        self.inv_src = False
        self.inv_dst = False
        self.limit_in = False
        self.limit_out = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt == "src-type":
            self.source, self.inv_src = _parse_types(arg or ""), inverted
        elif opt == "dst-type":
            self.dest, self.inv_dst = _parse_types(arg or ""), inverted
        elif opt == "limit-iface-in":
            self.limit_in = True
        elif opt == "limit-iface-out":
            self.limit_out = True
        else:
            super().parse(opt, arg, inverted, rule)

    def final_check(self, rule: Rule) -> None:
        # iptables 1.8.9 asks for a type before it refuses both interface limits (recorded)
        if not self.source and not self.dest and not (self.inv_src or self.inv_dst):
            raise RulesError("addrtype: you must specify --src-type or --dst-type")
        if self.limit_in and self.limit_out:
            raise RulesError('addrtype: option "--limit-iface-in" cannot be used together with "--limit-iface-out".\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        # addrtype_mt_checkentry_v1
        if self.limit_in and hook_mask & hook_mask_of(Hook.POST_ROUTING, Hook.LOCAL_OUT):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)
        if self.limit_out and hook_mask & hook_mask_of(Hook.PRE_ROUTING, Hook.LOCAL_IN):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)
        # for ip6tables: no BLACKHOLE, no PROHIBIT and above (THROW, NAT, XRESOLVE), no BROADCAST
        both = self.source | self.dest
        if rule.family == NFPROTO_IPV6 and (both & (1 << 6 | 1 << 3) or both >= 1 << 8):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        out = ""
        if self.source:
            out += (" !" if self.inv_src else "") + " --src-type " + _types(self.source)
        if self.dest:
            out += (" !" if self.inv_dst else "") + " --dst-type " + _types(self.dest)
        if self.limit_in:
            out += " --limit-iface-in"
        if self.limit_out:
            out += " --limit-iface-out"
        return out

    def print_list(self, numeric: bool) -> str:
        out = " ADDRTYPE match"
        if self.source:
            out += " src-type " + ("!" if self.inv_src else "") + _types(self.source)
        if self.dest:
            out += " dst-type " + ("!" if self.inv_dst else "") + _types(self.dest)
        if self.limit_in:
            out += " limit-in"
        if self.limit_out:
            out += " limit-out"
        return out

    def _dev(self, skb: Skb) -> str | None:
        if self.limit_in:
            return skb.iif
        if self.limit_out:
            return skb.oif
        return None

    def compile(self) -> MatchFn:
        source, dest, inv_s, inv_d = self.source, self.dest, self.inv_src, self.inv_dst
        lim_in, lim_out = self.limit_in, self.limit_out

        def addrtype_mt(skb: Skb, ctx: XtContext) -> bool:
            dev = skb.iif if lim_in else (skb.oif if lim_out else None)
            if source and bool((1 << ctx.addr_type(skb.saddr, dev)) & source) == inv_s:
                return False
            return not (dest and bool((1 << ctx.addr_type(skb.daddr, dev)) & dest) == inv_d)

        return addrtype_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        dev = self._dev(skb)
        parts = []
        if self.source:
            t = ctx.addr_type(skb.saddr, dev)
            parts.append(f"{format_addr_mask(skb.saddr, 0xFFFFFFFF, always_prefix=False)} is {RTN_NAMES[t]}")
        if self.dest:
            t = ctx.addr_type(skb.daddr, dev)
            parts.append(f"{format_addr_mask(skb.daddr, 0xFFFFFFFF, always_prefix=False)} is {RTN_NAMES[t]}")
        return f"no match ({', '.join(parts)})"
