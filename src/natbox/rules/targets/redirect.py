"""`-j REDIRECT [--to-ports p[-q]] [--random]` (nf_nat_redirect.c `nf_nat_redirect_ipv4`), §5.1.

The IPv6 target (targets6.Redirect6, `nf_nat_redirect_ipv6`) is this one with ::1 for 127.0.0.1.
"""

from __future__ import annotations

from typing import Final

from natbox.nat.range import NatRange, RangeFlags
from natbox.netfilter import Hook, ManipType
from natbox.rules.api import NF_DROP, XtContext
from natbox.rules.model import Opt, Rule, RulesError, TargetFn, hook_mask_of
from natbox.rules.targets.masquerade import PortsTarget
from natbox.skb import Skb

__all__ = ["Redirect"]

LOOPBACK: Final = 0x7F000001


class Redirect(PortsTarget):
    name = "REDIRECT"
    valid_hooks = hook_mask_of(Hook.PRE_ROUTING, Hook.LOCAL_OUT)
    print_opt = "redir ports "
    options = (Opt("to-ports", 1), Opt("random", 0))
    shifted_in_fcheck = True
    loopback = LOOPBACK  # the address from OUTPUT (Redirect6: ::1)

    def final_check(self, rule: Rule) -> None:
        """`DNAT_fcheck` (libipt_DNAT.c, which parses REDIRECT rev 0): no shifted port range."""
        if self.range.flags & RangeFlags.PROTO_OFFSET:
            raise RulesError("Shifted portmap ranges not supported with this kernel")

    def compile(self) -> TargetFn:
        r = self.range
        flags = r.flags | RangeFlags.MAP_IPS
        pmin, pmax = r.min_proto, r.max_proto
        loopback = self.loopback

        def redirect_tg(skb: Skb, ctx: XtContext) -> int:
            if ctx.hook == Hook.LOCAL_OUT:
                newdst = loopback
            else:
                addr = ctx.iface_primary_addr(skb.iif)
                if addr is None:
                    return NF_DROP
                newdst = addr
            return ctx.nat_setup_info(skb, NatRange(flags, newdst, newdst, pmin, pmax), ManipType.DST)

        return redirect_tg
