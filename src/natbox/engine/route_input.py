"""PREROUTING and the routing decision: `ip_rcv` → NF_INET_PRE_ROUTING → `ip_rcv_finish`.

After PREROUTING (defrag, raw, conntrack, mangle, nat DST) `ip_route_input_noref` decides, after DNAT,
whether the packet is for this host (LOCAL_IN, engine/local.py) or is forwarded (engine/forward.py),
refusing martians and answering what cannot be routed with the ICMP errors `ip_error` sends.
"""

from __future__ import annotations

from typing import Final

from natbox.conntrack.tuple import format_addr
from natbox.engine.forward import Forwarder
from natbox.engine.hooks import Hooks
from natbox.engine.host import Host
from natbox.engine.icmp_send import IcmpSender
from natbox.engine.local import LocalStack
from natbox.engine.path import NF_STOLEN, Drop
from natbox.engine.routing import RTCF_LOCAL, RTN_BROADCAST, RTN_LOCAL, RTN_UNICAST, Fib
from natbox.netfilter import DropReason, Hook
from natbox.skb import Skb
from natbox.wire import ipv4
from natbox.wire.icmp import (
    ICMP_DEST_UNREACH,
    ICMP_HOST_UNREACH,
    ICMP_NET_UNREACH,
    ICMP_PARAMETERPROB,
    ICMP_PKT_FILTERED,
)
from natbox.wire.layout import IPH_ADDRS_END, IPH_DADDR, IPH_SADDR

__all__ = ["JOINED_GROUPS", "RouteInput"]

JOINED_GROUPS: Final = frozenset({0xE0000001})  # 224.0.0.1: all-hosts, joined on every interface
_HOOK_PRE_ROUTING: Final = Hook.PRE_ROUTING
_RTN_UNREACHABLE, _RTN_PROHIBIT = 7, 8  # route types answered with an ICMP error (ip_error)
_LOCAL_TYPES: Final = frozenset({RTN_LOCAL, RTN_BROADCAST})  # route types delivered locally


class RouteInput:
    """PREROUTING and `ip_route_input` for one engine (see the module docstring)."""

    def __init__(self, host: Host, fib: Fib, hooks: Hooks, icmp: IcmpSender, local: LocalStack,
                 forward: Forwarder) -> None:
        self._host, self._fib, self._hooks, self._icmp = host, fib, hooks, icmp
        self._local, self._forward = local, forward

    def ip_rcv_skb(self, skb: Skb) -> None:
        """NF_INET_PRE_ROUTING, then `ip_rcv_finish` (unless a hook kept the packet)."""
        rt_flags = skb.rt_flags
        daddr = skb.daddr if rt_flags else 0
        if self._hooks.run(_HOOK_PRE_ROUTING, skb) == NF_STOLEN:
            return
        if rt_flags and skb.daddr != daddr:  # nf_nat_ipv4_in: DNAT drops the route the skb carried
            skb.rt_flags = 0
        self.ip_rcv_finish(skb)

    def ip_rcv_finish(self, skb: Skb) -> None:
        """`ip_rcv_finish_core` → `ip_route_input_noref` (after PREROUTING, so after DNAT)."""
        dev = self._host.interfaces[skb.iif]
        data = skb.data  # (skb.saddr and skb.daddr, without the two property calls)
        saddr = int.from_bytes(data[IPH_SADDR:IPH_DADDR], "big")
        daddr = int.from_bytes(data[IPH_DADDR:IPH_ADDRS_END], "big")
        lo_in = dev.kind == "loopback"
        if lo_in and skb.rt_flags & RTCF_LOCAL:
            # skb_valid_dst: loopback_xmit kept the output route (skb_dst_force), an RTCF_LOCAL one, whose
            # dst.input is ip_local_deliver, whatever the destination (a route out lo to an address not local)
            if skb.trace is not None:
                skb.add_trace(f"routing: the route out lo is local (RTCF_LOCAL): {format_addr(daddr)} delivered")
            self._local.local_deliver(skb)
            return
        # ip_route_input_slow's martian checks. `ipv4_is_zeronet` is 0.0.0.0 alone (since Linux 5.3): the
        # rest of 0/8 routes like any unicast address. [V] 6.18: 0.0.0.0 -> a local address and a host ->
        # 0.0.0.0 are martians, 0.0.0.0 -> 0.0.0.0 is delivered (brd_input), 0.1.2.3 -> a closed local
        # port is answered and a host -> 0.1.2.3 forwarded (Time Exceeded at TTL 1)
        if saddr >> 28 == 0xE or saddr == 0xFFFFFFFF:
            raise Drop(DropReason.MARTIAN_SOURCE, "ip_route_input", format_addr(saddr))
        if daddr == 0xFFFFFFFF or (saddr == 0 and daddr == 0):
            self._local.local_deliver(skb)  # brd_input
            return
        if daddr >> 28 == 0xE:
            # ip_route_input_mc: only groups the host has joined are delivered (every interface joins
            # 224.0.0.1, all-hosts); there is no multicast routing, so others are dropped here, after
            # PREROUTING and before a ct could be confirmed
            if daddr in JOINED_GROUPS:
                self._local.local_deliver(skb)
                return
            raise Drop(DropReason.NO_ROUTE, "ip_route_input_mc", f"not a member of {format_addr(daddr)}")
        if saddr == 0:
            raise Drop(DropReason.MARTIAN_SOURCE, "ip_route_input", format_addr(saddr))
        if daddr == 0:
            raise Drop(DropReason.MARTIAN_DESTINATION, "ip_route_input", format_addr(daddr))
        if not lo_in and not dev.route_localnet:
            if daddr >> 24 == 127:
                raise Drop(DropReason.MARTIAN_DESTINATION, "ip_route_input", format_addr(daddr))
            if saddr >> 24 == 127:
                raise Drop(DropReason.MARTIAN_SOURCE, "ip_route_input", format_addr(saddr))
        if skb.sk is not None:
            # TPROXY assigned a local socket: delivered here, as the policy route every TPROXY setup adds
            # (`ip rule add fwmark M lookup T`, `local 0.0.0.0/0 dev lo table T`) would (docs/differences.md)
            skb.add_trace("routing: a TPROXY socket takes the packet: local")
            self._local.local_deliver(skb)
            return
        res = self._fib.lookup(daddr)
        if skb.ihl > 20:
            self._ip_rcv_options(skb)
        if res is not None and res.type in _LOCAL_TYPES:
            if skb.trace is not None:
                kind = "broadcast" if res.type == RTN_BROADCAST else "local"
                skb.add_trace(f"routing: {format_addr(daddr)} is {kind}")
            self._local.local_deliver(skb)
            return
        forwarding = dev.forwarding if dev.forwarding is not None else self._host.ip_forward
        if not forwarding:
            # ip_error without IN_DEV_FORWARD: dropped silently (§1.2, [V])
            raise Drop(DropReason.FORWARDING_DISABLED, "ip_route_input", "net.ipv4.ip_forward = 0")
        if res is None:
            self._icmp.icmp_send(skb, ICMP_DEST_UNREACH, ICMP_NET_UNREACH)
            raise Drop(DropReason.NO_ROUTE, "ip_route_input", f"no route to {format_addr(daddr)}")
        if res.type != RTN_UNICAST:
            code = {_RTN_UNREACHABLE: ICMP_HOST_UNREACH, _RTN_PROHIBIT: ICMP_PKT_FILTERED}.get(res.type)
            if code is not None:
                self._icmp.icmp_send(skb, ICMP_DEST_UNREACH, code)
            raise Drop(DropReason.NO_ROUTE, "ip_route_input", f"route type {res.route.type}")
        skb.oif = res.dev or ""
        skb.nexthop = res.nexthop
        if skb.trace is not None:
            skb.add_trace(f"routing: forward via {skb.oif}"
                          + (f" gateway {format_addr(res.nexthop)}" if res.route.gateway is not None else ""))
        self._forward.ip_forward(skb)

    def _ip_rcv_options(self, skb: Skb) -> None:
        """`ip_rcv_options` (after the input route): malformed options → parameter problem; source routes
        are dropped (accept_source_route = 0)."""
        _opts, reason, pointer = ipv4.ip_rcv_options(skb.data)
        if reason is None:
            return
        if pointer:
            self._icmp.icmp_send(skb, ICMP_PARAMETERPROB, 0, info=pointer << 24)
        raise Drop(reason, "ip_rcv_options", "source route" if not pointer else f"bad option at byte {pointer}")
