"""Local in and local out: what the host's own stack receives and sends.

- In: `ip_local_deliver` → LOCAL_IN → the local stack model (`ip_local_deliver_finish`): listening
  sockets, echo replies, port unreachables and resets for closed ports.
- Out: `ip_route_output_key` → `__ip_local_out` → LOCAL_OUT → (reroute after DNAT) → `ip_output`, for
  datagrams the host generates (echo replies, ICMP errors, resets, `Engine.send_local`), and
  `loopback_xmit`, which brings a packet sent to this host back in on `lo`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

from natbox.conntrack.tuple import format_addr
from natbox.engine.family import AddressFamily
from natbox.engine.hooks import Hooks, XtHost
from natbox.engine.host import Host
from natbox.engine.icmp_send import IcmpSender
from natbox.engine.output import Delivered
from natbox.engine.path import Drop, PathState
from natbox.engine.reject import build_reset_for
from natbox.engine.routing import RTCF_LOCAL, RTN_BROADCAST, RTN_MULTICAST, RTN_UNICAST, Fib, FibResult
from natbox.netfilter import (
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPPROTO_UDPLITE,
    CtInfo,
    Direction,
    DropReason,
    Hook,
)
from natbox.rules.api import NF_ACCEPT
from natbox.skb import PacketType, Skb
from natbox.wire.icmp import ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, ICMP_PROT_UNREACH
from natbox.wire.ipv4 import IP_DF, ip_send_check
from natbox.wire.layout import IPH_FRAG_OFF, IPH_TTL, L4_DPORT

__all__ = ["LOCAL_NESTING_MAX", "LOCAL_QUEUE_MAX", "LOOPBACK_DEPTH_MAX", "LocalSend", "LocalStack", "send_within"]

LOCAL_QUEUE_MAX: Final = 64  # datagrams one send_local() call may queue
LOCAL_NESTING_MAX: Final = 4  # a generated packet causing another (an error about an error is refused anyway)
LOOPBACK_DEPTH_MAX: Final = 4  # nested loopback deliveries, bounding a packet that loops through lo

IPPROTO_IGMP: Final = 2
# the protocols the IPv4 stack always has a handler for (inet_protos[]); others need a module
_STACK_PROTOS: Final = frozenset({IPPROTO_ICMP, IPPROTO_IGMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE})
_CTINFO_RELATED: Final = CtInfo.RELATED
_CTINFO_RELATED_REPLY: Final = CtInfo.RELATED_REPLY
_DIRN_ORIGINAL: Final = Direction.ORIGINAL
_HOOK_LOCAL_IN: Final = Hook.LOCAL_IN
_HOOK_LOCAL_OUT: Final = Hook.LOCAL_OUT
_PKT_BROADCAST: Final = PacketType.BROADCAST
_PKT_HOST: Final = PacketType.HOST
_PKT_MULTICAST: Final = PacketType.MULTICAST


S = TypeVar("S", bound=Skb)


def send_within(st: PathState, ctx: XtHost, nskb: S, send: Callable[[S], None]) -> None:
    """Send `nskb`, a packet the host makes while another packet is in its path, at once, as the kernel does
    (`icmp_send`, `nf_send_reset`, `icmp_reply`, SYNPROXY and `nf_dup_ipv4`/`nf_dup_ipv6` call
    `ip_local_out`/`ip6_local_out` in the middle of that path): a drop of it is recorded, its trace flushed,
    and the other packet's hook and skb given back after, so the rest of its hook runs as it would have."""
    saved_hook, saved_skb = ctx.hook, st.skb
    st.skb = nskb
    try:
        send(nskb)
    except Drop as d:
        st.record_drop(nskb.pkt_id, d)
    finally:
        st.flush_trace(nskb)
        ctx.hook, st.skb = saved_hook, saved_skb


class LocalSend:
    """What IPv4's `LocalStack` and IPv6's `Ip6Output` share to send packets from inside another's path
    (`send_within`): the nesting bound of generated packets (LOCAL_NESTING_MAX; an error about an error is
    refused anyway) and the TEE copy's `nf_skb_duplicated` guard."""

    __slots__ = ("_ctx", "_st", "duplicating", "nested")

    def __init__(self, st: PathState, ctx: XtHost) -> None:
        self._st, self._ctx = st, ctx
        self.nested = 0  # locally generated packets being sent from inside another packet's path
        self.duplicating = False  # nf_skb_duplicated: a TEE copy is on its way out

    def local_out(self, nskb: S, local_out: Callable[[S], None]) -> None:
        """`ip_local_out`/`ip6_local_out` of a packet generated while handling another one (an ICMP error, a
        reset, an echo reply, SYNPROXY's segments), at once; refused and counted past LOCAL_NESTING_MAX."""
        st = self._st
        if self.nested >= LOCAL_NESTING_MAX:
            st.stats["local_nesting_exceeded"] += 1
            return
        self.nested += 1
        try:
            send_within(st, self._ctx, nskb, local_out)
        finally:
            self.nested -= 1

    def dup_copy(self, nskb: S, run: Callable[[Hook, Skb], int], output: Callable[[S], None]) -> None:
        """The last step of `nf_dup_ipv4()` and `nf_dup_ipv6()` (the copy made and routed): the copy goes
        through LOCAL_OUT and the family's output (`ip_output`, `ip6_output`) at once, inside the original's
        path, while `nf_skb_duplicated` keeps it from making another copy (`duplicating`)."""

        def send(skb: S) -> None:
            if run(_HOOK_LOCAL_OUT, skb) == NF_ACCEPT:
                output(skb)

        self.duplicating = True
        try:
            send_within(self._st, self._ctx, nskb, send)
        finally:
            self.duplicating = False


class LocalStack:
    """The host's own end of the packet path (see the module docstring)."""

    def __init__(self, host: Host, fib: Fib, hooks: Hooks, icmp: IcmpSender, family: AddressFamily,
                 state: PathState, ctx: XtHost) -> None:
        self._host, self._fib, self._hooks, self._icmp, self._family = host, fib, hooks, icmp, family
        self._st, self._ctx = state, ctx
        self.listeners: set[tuple[int, int]] = set()  # (protocol, port) open on the host
        self.queue: list[Skb] = []  # datagrams `Engine.send_local` handed in, sent by flush()
        self._depth = 0  # nested loopback deliveries
        self._send = LocalSend(state, ctx)
        # bound by the engine: the output stage (`IpOutput.ip_output`) and the input path after ip_rcv
        # (`RouteInput.ip_rcv_skb`), which loopback_xmit re-enters
        self.ip_output: Callable[[Skb], None] = lambda skb: None
        self.rcv_skb: Callable[[Skb], None] = lambda skb: None

    # --- local delivery --------------------------------------------------------------------------

    def local_deliver(self, skb: Skb) -> None:
        """`ip_local_deliver` → LOCAL_IN → the local stack (`ip_local_deliver_finish`)."""
        if self._hooks.run(_HOOK_LOCAL_IN, skb) != NF_ACCEPT:
            return
        self._local_stack(skb)

    def _local_stack(self, skb: Skb) -> None:
        """What the host's own stack does with a datagram for it: echo replies, resets, port unreachables."""
        proto = skb.protocol
        if skb.sk is not None:  # a socket TPROXY assigned (nf_tproxy_assign_sock)
            self._deliver(skb, f"socket {'tcp' if proto == 6 else 'udp'}:{skb.sk[1]} (transparent, TPROXY)")
            return
        broadcast = skb.pkt_type in (_PKT_BROADCAST, _PKT_MULTICAST) or \
            self._fib.addr_type(skb.daddr) in (RTN_BROADCAST, RTN_MULTICAST)
        if proto == 1 and skb.l4_len >= 8:
            reply = None if broadcast else self._family.echo_reply(skb)
            if reply is not None:
                self._deliver(skb, "icmp echo request answered")
                self.queue_local(reply, None)
                return
            self._deliver(skb, "icmp to the local stack")
            return
        if proto in (6, 17) and skb.l4_len >= 4:
            dport = skb.l4_u16(L4_DPORT) or 0
            if (proto, dport) in self.listeners:
                self._deliver(skb, f"socket {'tcp' if proto == 6 else 'udp'}:{dport}")
                return
            if broadcast:
                self._deliver(skb, "no socket (broadcast: no reply)")
                return
            if proto == 17:
                self._icmp.icmp_send(skb, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, local=True)
                self._deliver(skb, f"udp port {dport} closed: port unreachable sent")
                return
            rst = build_reset_for(bytes(skb.data))  # tcp_v4_send_reset (none in answer to a reset)
            if rst is not None:
                self.queue_local(rst, None)
            self._deliver(skb, f"tcp port {dport} closed")
            return
        if proto not in _STACK_PROTOS and not broadcast:
            # ip_protocol_deliver_rcu: no handler and no raw socket for the protocol (the modules of SCTP,
            # GRE, IPsec... are not loaded on a router that does not use them): protocol unreachable
            self._icmp.icmp_send(skb, ICMP_DEST_UNREACH, ICMP_PROT_UNREACH, local=True)
            self._deliver(skb, f"protocol {proto}: no handler, protocol unreachable sent")
            return
        self._deliver(skb, f"protocol {proto} delivered")

    def _deliver(self, skb: Skb, action: str) -> None:
        if skb.trace is not None:
            skb.add_trace(f"ip_local_deliver_finish: {action}")
        self._st.out.delivered.append(Delivered(skb.pkt_id, bytes(skb.data), action,
                                                skb.ct.ct_id if skb.ct is not None else 0))

    # --- locally generated packets ---------------------------------------------------------------

    def queue_local(self, datagram: bytes | bytearray, attach: Skb | None) -> None:
        """Send a datagram the host's stack generated (attached to `attach`'s ct, nf_ct_attach)."""
        data = bytearray(datagram)
        nskb = Skb(data, pkt_id=attach.pkt_id if attach is not None else self._st.current_pkt_id())
        if attach is not None and attach.ct is not None:
            # nf_ct_attach(): the new packet belongs to the old one's ct, in the other direction
            nskb.ct = attach.ct
            reply = attach.ctinfo.direction == _DIRN_ORIGINAL
            nskb.ctinfo = _CTINFO_RELATED_REPLY if reply else _CTINFO_RELATED
        if attach is not None and attach.trace is not None:
            nskb.trace = []
        self._send_now(nskb)

    def send_skb(self, nskb: Skb) -> None:
        """Send a segment SYNPROXY built, its ct already set (`synproxy_send_tcp` → `ip_local_out`), at once."""
        self._send_now(nskb)

    def _send_now(self, nskb: Skb) -> None:
        """Send a packet the host generates while handling another one, at once, as the kernel does
        (icmp_send, nf_send_reset and icmp_reply call ip_local_out in the middle of the packet's path: a
        redirect or an error leaves before the packet that caused it goes on, with its ct as it is then).
        Nesting is bounded by LOCAL_NESTING_MAX (`LocalSend`, which IPv6's output shares)."""
        self._send.local_out(nskb, self.ip_local_out)

    def flush(self, now: float) -> None:
        """Send what `Engine.send_local` queued (bounded by LOCAL_QUEUE_MAX)."""
        st = self._st
        sent = 0
        while self.queue and sent < LOCAL_QUEUE_MAX:
            skb = self.queue.pop(0)
            st.skb = skb
            sent += 1
            self._ctx.now = now
            try:
                self.ip_local_out(skb)
            except Drop as d:
                st.record_drop(skb.pkt_id, d)
            finally:
                st.flush_trace(skb)
        self.queue.clear()

    def nf_dup_ipv4(self, skb: Skb, gw: int, oif: str) -> None:
        """Mirrors `nf_dup_ipv4()` (-j TEE): a copy of `skb`, untracked, with DF set (and the TTL one lower
        at PREROUTING and INPUT), routed to the gateway `gw` as its next hop (`nf_dup_ipv4_route`:
        FLOWI_FLAG_KNOWN_NH; through `oif` when that device exists) and sent through LOCAL_OUT at once. No
        route: the copy is freed. A copy never makes another (`nf_skb_duplicated`)."""
        if self._send.duplicating:
            return
        data = bytearray(skb.data)
        data[IPH_FRAG_OFF] |= IP_DF >> 8
        if skb.hook in (Hook.PRE_ROUTING, _HOOK_LOCAL_IN):
            data[IPH_TTL] = (data[IPH_TTL] - 1) & 0xFF
        ip_send_check(data)
        nskb = Skb(data, iif=skb.iif, pkt_id=skb.pkt_id)
        nskb.mark, nskb.priority, nskb.secmark = skb.mark, skb.priority, skb.secmark  # __copy_skb_header
        nskb.untracked, nskb.ctinfo = True, CtInfo.UNTRACKED  # nf_ct_set(skb, NULL, IP_CT_UNTRACKED)
        res = self._fib.lookup(gw)
        out = self._host.interfaces.get(oif) if oif else None
        if out is not None and (res is None or res.dev != oif):
            # fib_lookup with flowi4_oif: only routes through that device
            e = next((e for e in self._fib.main if e.route.dev == oif and (gw & e.mask) == e.network), None)
            gateway = e.route.gateway if e is not None else None
            res = FibResult(e.type, oif, gateway if gateway is not None else gw, e.route) if e is not None else None
        if res is None or res.type != RTN_UNICAST or res.dev is None:
            self._st.stats["tee_no_route"] += 1
            return
        nskb.oif, nskb.nexthop = res.dev, res.nexthop
        nskb.rt_flags = self._rt_flags(res.dev)
        if skb.trace is not None:  # the copy's steps follow in the original's trace, where they happen
            skb.add_trace(f"nf_dup_ipv4: a copy goes to {format_addr(gw)} via {res.dev}")
            nskb.trace = skb.trace
        self._send.dup_copy(nskb, self._hooks.run, self.ip_output)

    def ip_local_out(self, skb: Skb) -> None:
        """`ip_route_output` → `__ip_local_out` → LOCAL_OUT → (reroute after DNAT) → `ip_output`."""
        self._route_output(skb)
        if skb.trace is not None:
            skb.add_trace(f"ip_local_out: {self._family.describe(skb)} via {skb.oif}")
        daddr = skb.daddr
        if self._hooks.run(_HOOK_LOCAL_OUT, skb) != NF_ACCEPT:
            return
        if skb.daddr != daddr:  # nf_nat_ipv4_local_fn → ip_route_me_harder
            self._route_output(skb)
        self.ip_output(skb)

    def _route_output(self, skb: Skb) -> None:
        """`ip_route_output_key`: the out device and next hop; a source address if the sender left it 0.

        A local destination goes out `lo` with itself as source (the local route's prefsrc); 127/8 from
        127.0.0.1. A 127/8 source may leave a non-loopback device only with route_localnet there (§8). A route
        out lo, local or not, is RTCF_LOCAL (`__mkroute_output`): the packet comes back in on lo and is
        delivered to the host (measured on 6.18 with `ip route add 10.99.0.0/24 dev lo`: a datagram sent to
        10.99.0.5 passes OUTPUT, POSTROUTING, PREROUTING and INPUT, never FORWARD).
        """
        daddr = skb.daddr
        fib = self._fib
        src: int | None = None
        if fib.is_local(daddr) or daddr >> 24 == 127:
            skb.oif = "lo"
            skb.nexthop = daddr
            src = 0x7F000001 if daddr >> 24 == 127 else daddr
        else:
            res = fib.lookup(daddr)
            if res is None or res.type != RTN_UNICAST or res.dev is None:
                raise Drop(DropReason.NO_ROUTE, "ip_route_output", f"no route to {format_addr(daddr)}")
            skb.oif = res.dev
            skb.nexthop = res.nexthop
            src = res.route.prefsrc
            out = self._host.interfaces[res.dev]
            if skb.saddr >> 24 == 127 and out.kind != "loopback" and not out.route_localnet:
                raise Drop(DropReason.MARTIAN_SOURCE, "ip_route_output",
                           f"{format_addr(skb.saddr)} may not leave {out.name} (route_localnet = 0)")
        skb.rt_flags = self._rt_flags(skb.oif)
        if skb.saddr == 0:
            if src is None:
                src = fib.select_addr(skb.oif, daddr)
            if src is None:
                raise Drop(DropReason.NO_ROUTE, "ip_route_output", "no source address")
            self._family.set_local_source(skb, src)

    def _rt_flags(self, oif: str) -> int:
        """The output route's flags: RTCF_LOCAL for a route out a loopback device (`__mkroute_output`)."""
        return RTCF_LOCAL if self._host.interfaces[oif].kind == "loopback" else 0

    def loopback_xmit(self, skb: Skb) -> None:
        """`loopback_xmit` → `netif_rx`: the skb comes back in on lo, its ct still attached (§4.1). It comes back
        as PACKET_HOST: `eth_type_trans` finds lo's all-zero address as the destination and leaves the type of
        a locally made skb (0, PACKET_HOST) as it was; PACKET_LOOPBACK is `dev_loopback_xmit`'s, for the copies
        of multicast and broadcast a host sends to itself (measured on 6.18: `-i lo -m pkttype --pkt-type
        unicast` counts a ping of 127.0.0.1 and of ::1, broadcast and multicast count nothing)."""
        if self._depth >= LOOPBACK_DEPTH_MAX:
            raise Drop(DropReason.NO_ROUTE, "loopback_xmit", "loop depth exceeded")
        self._depth += 1
        try:
            skb.iif = "lo"
            skb.oif = ""
            skb.pkt_type = _PKT_HOST
            skb.add_trace("loopback_xmit: back in on lo")
            self.rcv_skb(skb)
        finally:
            self._depth -= 1
