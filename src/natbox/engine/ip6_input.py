"""IPv6 input: `ipv6_rcv` → PREROUTING → `ip6_rcv_finish` (routing) → `ip6_input` (LOCAL_IN, the local
stack) or `ip6_forward` (net/ipv6/ip6_input.c, ip6_output.c; ipv6-semantics.md §1.2, §1.3, §4).

The receive checks are `wire.ipv6.ip6_rcv_core`; routing is `route6.Fib6` after PREROUTING (so after DNAT):
a multicast group the device joined or an own address is delivered locally; no route answers Destination
Unreachable (no route) before any hop-limit check (§1.2); `all.forwarding` 0 drops silently.
`ip6_forward` then checks, in the kernel's order (§1.3): not for this host at L2 → drop; hop limit ≤ 1 →
Time Exceeded; a source that is unspecified, multicast or loopback → drop, link-local and leaving its link →
Destination Unreachable "beyond scope"; leaving by the device it came in on → an ICMPv6 Redirect
(`ndisc_send_redirect`, §4.4: at most one a second per destination after a burst of 6, and the same per
source) and the packet is still forwarded; bigger than the out MTU (at least 1280; a reassembled datagram by
its largest fragment; GSO by segment) → Packet Too Big; then the hop limit is decremented (no checksum)
and FORWARD runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from natbox.engine.hooks import XtHost
from natbox.engine.hooks6 import Hooks6
from natbox.engine.host import Host, Interface
from natbox.engine.ip6_output import Ip6Output
from natbox.engine.ndisc import Ndisc
from natbox.engine.neigh import NeighTable
from natbox.engine.output import Delivered
from natbox.engine.path import NF_STOLEN, NO_META, Drop, Held, PathState
from natbox.engine.reject import build_reset6_for
from natbox.engine.route6 import RTN_BLACKHOLE, RTN_LOCAL, RTN_PROHIBIT, RTN_UNICAST, Fib6
from natbox.netfilter import NF_ACCEPT, DropReason, Hook
from natbox.skb import PacketType, Skb6
from natbox.wire import icmpv6
from natbox.wire.ipv6 import (
    HOPOPTS_DROP,
    IPV6_MIN_MTU,
    NEXTHDR_ICMP,
    format_addr6,
    ip6_rcv_core,
    is_link_local,
    is_multicast,
    parse_hopopts,
)
from natbox.wire.layout import (
    ICMP6H_IDENTIFIER,
    ICMP6H_LEN,
    ICMP6H_SEQUENCE,
    ICMP6H_TYPE,
    IP6H_HOP_LIMIT,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IP6H_PAYLOAD_LEN,
    L4_DPORT,
    TCPH_DOFF,
)

__all__ = ["Ip6Input"]

_LOOPBACK: Final = 1
REDIRECT6_RATE: Final = 1.0  # ip6_forward and ndisc_send_redirect: inet_peer_xrlim_allow(peer, 1*HZ)

class Ip6Input:
    """The IPv6 receive side of one engine (see the module docstring)."""

    def __init__(self, host: Host, fib6: Fib6, hooks6: Hooks6, output: Ip6Output, neighs: NeighTable[Held],
                 state: PathState, listeners: set[tuple[int, int]], ctx: XtHost, *,
                 resolve_neighbours: bool) -> None:
        self._host, self._fib6, self._hooks6, self._out, self._neighs, self._st = (
            host, fib6, hooks6, output, neighs, state)
        self.listeners = listeners
        self.resolve_neighbours = resolve_neighbours
        self.ndisc = Ndisc(host, neighs, output, resolve_neighbours=resolve_neighbours)
        self._ctx = ctx
        # bound by the engine: the compiled flows' recording of a forwarded packet (`FlowCache6.compile6`)
        self.remember_flow: Callable[[Skb6], None] = lambda skb: None

    def ipv6_rcv(self, payload: bytes, dev: Interface, pkt_id: int, ptype: PacketType, src_mac: bytes,
                 dst_mac: bytes, trace: bool) -> None:
        """`ipv6_rcv` → `ip6_rcv_core` → PREROUTING → `ip6_rcv_finish`."""
        if ptype == PacketType.OTHERHOST:
            raise Drop(DropReason.OTHERHOST, "ipv6_rcv", "frame for another host")
        data, reason = ip6_rcv_core(payload, loopback=dev.kind == "loopback")
        if data is None:
            if reason == DropReason.IP6_BAD_EXTHDR and len(payload) > IP6H_NEXTHDR and payload[IP6H_NEXTHDR] == 0:
                self._hopopts_param_prob(payload, dev, pkt_id, ptype)
            raise Drop(reason or DropReason.IP6_HDR_TRUNCATED, "ip6_rcv_core")
        st = self._st
        skb = Skb6(data, iif=dev.name, pkt_id=pkt_id)
        st.skb = skb
        if st.rx_meta is not NO_META:
            skb.gso_type, skb.gso_size, skb.csum_partial = st.rx_meta
        skb.pkt_type, skb.src_mac, skb.dst_mac = ptype, src_mac, dst_mac
        if trace:
            skb.trace = []
            skb.add_trace(f"ipv6_rcv on {dev.name}: {describe6(skb)}")
        try:
            saddr = skb.saddr
            if src_mac and not self.resolve_neighbours and saddr and (
                    is_link_local(saddr) or any(a.contains(saddr) for a in dev.addresses6)):
                self._neighs.learn(dev.name, saddr, src_mac, self._ctx.now)  # what ND would tell (offline)
            self.rcv_skb(skb)
        finally:
            st.flush_trace(skb)

    def _hopopts_param_prob(self, payload: bytes, dev: Interface, pkt_id: int, ptype: PacketType) -> None:
        """`ip6_tlvopt_unknown`: an unrecognised Hop-by-Hop option whose type asks for it earns the sender
        Parameter Problem code 2 pointing at the option (`icmpv6_param_prob`), before PREROUTING: no conntrack
        entry is attached to the error."""
        plen = (payload[IP6H_PAYLOAD_LEN] << 8) | payload[IP6H_PAYLOAD_LEN + 1]
        data = bytearray(payload[:IP6H_LEN + plen])
        off = parse_hopopts(data) if plen and len(data) == IP6H_LEN + plen else HOPOPTS_DROP
        if off < 0:
            return
        skb = self._st.skb = Skb6(data, iif=dev.name, pkt_id=pkt_id)
        skb.pkt_type = ptype
        try:
            self._out.icmp6_send(skb, icmpv6.ICMPV6_PARAMPROB, icmpv6.ICMPV6_UNK_OPTION, info=off)
        finally:
            self._st.skb = None

    def rcv_skb(self, skb: Skb6) -> None:
        """NF_INET_PRE_ROUTING, then `ip6_rcv_finish`."""
        if self._hooks6.run(Hook.PRE_ROUTING, skb) == NF_STOLEN:
            return
        self.rcv_finish(skb)

    def rcv_finish(self, skb: Skb6) -> None:
        """`ip6_rcv_finish` → `ip6_route_input` (after DNAT)."""
        dev = self._host.interfaces[skb.iif]
        daddr = skb.daddr
        if is_multicast(daddr):
            if self._fib6.joined(dev, daddr):
                self.local_deliver(skb)
                return
            raise Drop(DropReason.NO_ROUTE, "ip6_mc_input", f"not a member of {format_addr6(daddr)}")
        if daddr == _LOOPBACK and dev.kind != "loopback":
            # no route_localnet in IPv6 (§6): ::1 reached from the wire after DNAT has no route
            self._out.icmp6_send(skb, icmpv6.ICMPV6_DEST_UNREACH, icmpv6.ICMPV6_NOROUTE)
            raise Drop(DropReason.NO_ROUTE, "ip6_route_input", "::1 from a non-loopback device")
        res = self._fib6.lookup(daddr, dev.name)
        if res is not None and res.type == RTN_LOCAL:
            skb.add_trace(f"routing: {format_addr6(daddr)} is local")
            self.local_deliver(skb)
            return
        if res is None or res.type != RTN_UNICAST or res.reject:
            # ip6_pkt_discard / ip6_pkt_prohibit: the dst.input of unreachable, prohibit and reject routes
            # (a route out lo to an address not local, fib6_is_reject: measured on 6.18, a datagram from another
            # device earns ICMPv6 no-route and Ip6InNoRoutes, and FORWARD sees nothing)
            if res is not None and res.type == RTN_BLACKHOLE:
                raise Drop(DropReason.NO_ROUTE, "ip6_route_input", "blackhole route")
            code = icmpv6.ICMPV6_ADM_PROHIBITED if res is not None and res.type == RTN_PROHIBIT else \
                icmpv6.ICMPV6_NOROUTE
            self._out.icmp6_send(skb, icmpv6.ICMPV6_DEST_UNREACH, code)
            raise Drop(DropReason.NO_ROUTE, "ip6_route_input", f"no route to {format_addr6(daddr)}")
        if not self._host.ipv6_forward:
            raise Drop(DropReason.FORWARDING_DISABLED, "ip6_forward", "net.ipv6.conf.all.forwarding = 0")
        skb.oif = res.dev or ""
        skb.nexthop = res.nexthop
        skb.add_trace(f"routing: forward via {skb.oif}")
        self.ip6_forward(skb)

    def ip6_forward(self, skb: Skb6) -> None:
        """`ip6_forward()` (see the module docstring)."""
        if skb.pkt_type != PacketType.HOST:
            raise Drop(DropReason.OTHERHOST, "ip6_forward", "not addressed to this host at L2")
        data = skb.data
        if data[IP6H_HOP_LIMIT] <= 1:
            self._out.icmp6_send(skb, icmpv6.ICMPV6_TIME_EXCEED, icmpv6.ICMPV6_EXC_HOPLIMIT)
            raise Drop(DropReason.TTL_EXCEEDED, "ip6_forward", f"hop limit {data[IP6H_HOP_LIMIT]}")
        saddr = skb.saddr
        if skb.oif != skb.iif:
            if saddr == 0 or is_multicast(saddr) or saddr == _LOOPBACK:
                raise Drop(DropReason.MARTIAN_SOURCE, "ip6_forward", format_addr6(saddr))
            if is_link_local(saddr):
                self._out.icmp6_send(skb, icmpv6.ICMPV6_DEST_UNREACH, icmpv6.ICMPV6_NOT_NEIGHBOUR)
                raise Drop(DropReason.BEYOND_SCOPE, "ip6_forward", f"link-local source {format_addr6(saddr)}")
        # in == out: a redirect (to the route's gateway, or the destination itself), paced per destination
        elif self._out.rate.peer_allow(skb.daddr, REDIRECT6_RATE, self._ctx.now):
            self._out.ndisc_send_redirect(skb, skb.nexthop or skb.daddr)
        out = self._host.interfaces[skb.oif]
        mtu = max(out.mtu, IPV6_MIN_MTU)
        if self.pkt_too_big(skb, mtu):
            self._out.icmp6_send(skb, icmpv6.ICMPV6_PKT_TOOBIG, 0, info=mtu)
            raise Drop(DropReason.PKT_TOO_BIG, "ip6_forward", f"{len(data)} > mtu {mtu}")
        data[IP6H_HOP_LIMIT] -= 1
        if self._hooks6.run(Hook.FORWARD, skb) != NF_ACCEPT:
            return
        self._out.output(skb)
        self.remember_flow(skb)

    @staticmethod
    def pkt_too_big(skb: Skb6, mtu: int) -> bool:
        """`ip6_pkt_too_big()`: a reassembled datagram by its largest fragment; a GSO packet by segment."""
        n = len(skb.data)
        if n <= mtu:
            return False
        if skb.frag_max_size:
            return skb.frag_max_size > mtu
        if skb.gso_size:
            thoff = skb.ihl
            l4 = (skb.data[thoff + TCPH_DOFF] >> 4) * 4 if skb.protocol == 6 and n > thoff + TCPH_DOFF else 8
            return thoff + l4 + skb.gso_size > mtu
        return True

    # --- local delivery --------------------------------------------------------------------------

    def local_deliver(self, skb: Skb6) -> None:
        """`ip6_input` → LOCAL_IN → the local stack."""
        if self._hooks6.run(Hook.LOCAL_IN, skb) != NF_ACCEPT:
            return
        self._local_stack(skb)

    def _local_stack(self, skb: Skb6) -> None:
        """What the host's own stack does: ND, echo replies, listeners, port unreachables and resets."""
        proto, off, data = skb.protocol, skb.ihl, skb.data
        mcast = is_multicast(skb.daddr)
        if proto == NEXTHDR_ICMP and len(data) >= off + 8:
            done = self.ndisc.rcv(skb, self._ctx.now)
            if done is not None:
                self._deliver(skb, done)
                return
            if data[off + ICMP6H_TYPE] == icmpv6.ICMPV6_ECHO_REQUEST:
                # icmpv6_echo_reply: from the address pinged (a multicast ping is answered from a unicast one)
                src = skb.daddr if not mcast else self._fib6.ipv6_dev_get_saddr(skb.iif, skb.saddr)
                if src is not None:
                    ident = (data[off + ICMP6H_IDENTIFIER] << 8) | data[off + ICMP6H_IDENTIFIER + 1]
                    seq = (data[off + ICMP6H_SEQUENCE] << 8) | data[off + ICMP6H_SEQUENCE + 1]
                    body = bytes(data[off + ICMP6H_LEN:])
                    reply = icmpv6.build_icmpv6_echo(src, skb.saddr, ident, seq, body, reply=True)
                    self._deliver(skb, "icmpv6 echo request answered")
                    self._out.queue_local(reply, None, skb.iif if is_link_local(skb.saddr) else "")
                    return
            self._deliver(skb, "icmpv6 to the local stack")
            return
        if proto in (6, 17) and len(data) >= off + 4:
            dport = (data[off + L4_DPORT] << 8) | data[off + L4_DPORT + 1]
            if (proto, dport) in self.listeners:
                self._deliver(skb, f"socket {'tcp' if proto == 6 else 'udp'}:{dport}")
                return
            if mcast:
                self._deliver(skb, "no socket (multicast: no reply)")
                return
            if proto == 17:
                self._out.icmp6_send(skb, icmpv6.ICMPV6_DEST_UNREACH, icmpv6.ICMPV6_PORT_UNREACH)
                self._deliver(skb, f"udp port {dport} closed: port unreachable sent")
                return
            rst = build_reset6_for(bytes(data), off)
            if rst is not None:
                self._out.queue_local(rst, None)
            self._deliver(skb, f"tcp port {dport} closed")
            return
        if proto < 0 or proto in (59,):
            self._deliver(skb, "no upper-layer header")
            return
        # an unknown next header: Parameter Problem code 1 pointing at it (ip6_input_finish → icmpv6_param_prob)
        self._out.icmp6_send(skb, icmpv6.ICMPV6_PARAMPROB, icmpv6.ICMPV6_UNK_NEXTHDR, info=6)
        self._deliver(skb, f"protocol {proto}: parameter problem sent")

    def _deliver(self, skb: Skb6, action: str) -> None:
        skb.add_trace(f"ip6_input_finish: {action}")
        self._st.out.delivered.append(Delivered(skb.pkt_id, bytes(skb.data), action,
                                                skb.ct.ct_id if skb.ct is not None else 0))


def describe6(skb: Skb6) -> str:
    """One line about an IPv6 packet for traces."""
    src, dst = format_addr6(skb.saddr), format_addr6(skb.daddr)
    proto = skb.protocol
    if proto in (6, 17) and skb.l4_len >= 4:
        name = "TCP" if proto == 6 else "UDP"
        return f"{name} [{src}]:{skb.l4_u16(0)} > [{dst}]:{skb.l4_u16(2)} hlim {skb.ttl}"
    if proto == NEXTHDR_ICMP and skb.l4_len >= 2:
        return f"ICMPv6 {src} > {dst} type {skb.data[skb.ihl]} hlim {skb.ttl}"
    return f"nexthdr {proto} {src} > {dst} hlim {skb.ttl}"
