"""Input: the link layer (`eth_type_trans`, `arp_rcv`) and `ip_rcv` up to PREROUTING.

A frame is classified by its destination MAC (HOST, BROADCAST, MULTICAST, OTHERHOST); ARP is answered
and feeds the neighbour table; anything but IPv4 is counted and dropped; an IPv4 datagram passes
`ip_rcv_core`'s checks, becomes an `Skb` and goes on to PREROUTING (engine/route_input.py), unless the
flow cache (tier 2, engine/forward.py) forwards it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from natbox.engine.family import AddressFamily, FlowKey
from natbox.engine.forward import Forwarder
from natbox.engine.hooks import XtHost
from natbox.engine.host import Host, Interface
from natbox.engine.ip_output import IpOutput
from natbox.engine.neigh import NeighTable
from natbox.engine.output import Emitted
from natbox.engine.path import NO_META, Drop, Held, PathState
from natbox.engine.route_input import RouteInput
from natbox.netfilter import DropReason
from natbox.skb import PacketType, Skb
from natbox.wire import arp, ethernet
from natbox.wire.layout import ETH_DEST, ETH_HDR_LEN, ETH_PROTO, ETH_SOURCE, IPH_DADDR, IPH_SADDR

__all__ = ["IpInput", "pkt_type"]

_ETH_P_IP, _ETH_P_ARP, _ETH_P_IPV6 = ethernet.ETH_P_IP, ethernet.ETH_P_ARP, ethernet.ETH_P_IPV6
# `ipv6_rcv` (engine/ip6_input.py), bound by the engine: (payload, device, packet id, pkt_type, source MAC,
# destination MAC, trace)
Ipv6Rcv = Callable[[bytes, Interface, int, PacketType, bytes, bytes, bool], None]
# `br_handle_frame` (engine/bridge.py), bound by the engine: (frame, port, packet id, trace)
BrHandleFrame = Callable[[bytes, Interface, int, bool], None]
_NO_MAC: Final = b"\x00" * 6
_BROADCAST_MAC: Final = b"\xff" * 6
_PKT_BROADCAST: Final = PacketType.BROADCAST
_PKT_HOST: Final = PacketType.HOST
_PKT_MULTICAST: Final = PacketType.MULTICAST
_PKT_OTHERHOST: Final = PacketType.OTHERHOST
_LOOPBACK_NET: Final = 127


def pkt_type(dst_mac: bytes, dev: Interface) -> PacketType:
    """`eth_type_trans`: HOST, BROADCAST, MULTICAST or OTHERHOST. An interface modelled without a MAC
    (all zeros) accepts every unicast frame, so captures taken on real hosts replay unchanged."""
    if dst_mac == _BROADCAST_MAC:
        return _PKT_BROADCAST
    if dst_mac[0] & 1:
        return _PKT_MULTICAST
    if dev.mac in (dst_mac, _NO_MAC):
        return _PKT_HOST
    return _PKT_OTHERHOST


class IpInput:
    """The receive side of one engine (see the module docstring)."""

    def __init__(self, host: Host, family: AddressFamily, route: RouteInput, forward: Forwarder, output: IpOutput,
                 neighs: NeighTable[Held], state: PathState, ctx: XtHost,
                 *, resolve_neighbours: bool) -> None:
        self._host, self._family, self._route, self._forward, self._output = host, family, route, forward, output
        self._neighs, self._st, self._ctx = neighs, state, ctx
        self.resolve_neighbours = resolve_neighbours
        self.fast_path = True  # use the flow cache (tier 2) for established forwarded TCP/UDP
        self.ipv6_rcv: Ipv6Rcv | None = None  # the IPv6 path (one branch on the ethertype, off the IPv4 path)
        self.br_handle_frame: BrHandleFrame | None = None  # a bridge port's frames (rx_handler), when bridges exist
        self._rcv_core, self._on_link = family.rcv_core, family.on_link  # bound once: called per packet
        self._neigh_entry = neighs.entry

    def iface(self, name: str) -> Interface:
        """The device a frame arrived on: unknown or down devices drop it (`netif_receive_skb`)."""
        dev = self._host.interfaces.get(name)
        if dev is None:
            raise Drop(DropReason.UNKNOWN_IFACE, "netif_receive", name)
        if not dev.up:
            raise Drop(DropReason.LINK_DOWN, "netif_receive", name)
        return dev

    def receive_frame(self, frame: bytes, iface: str, pkt_id: int, trace: bool, key: FlowKey | None) -> None:
        """`__netif_receive_skb` for an Ethernet frame: ARP, IPv4 (to `ip_rcv`), anything else dropped.
        `key` is the frame's flow key (`AddressFamily.flow_key`), as the caller derived it once."""
        dev = self._host.interfaces.get(iface)
        if dev is None or not dev.up:
            dev = self.iface(iface)  # raises the drop
        if dev.master is not None and self.br_handle_frame is not None:
            self.br_handle_frame(frame, dev, pkt_id, trace)  # __netif_receive_skb_core: the port's rx_handler
            return
        # ethernet.parse_ethernet, inline (`frame` is bytes: its slices are the copies)
        if len(frame) < ETH_HDR_LEN:
            raise Drop(DropReason.SHORT_FRAME, "eth_type_trans", f"{len(frame)} bytes")
        dst_mac, src_mac = frame[ETH_DEST:ETH_SOURCE], frame[ETH_SOURCE:ETH_PROTO]
        ethertype = (frame[ETH_PROTO] << 8) | frame[ETH_PROTO + 1]
        if ethertype == _ETH_P_ARP:
            self._arp_rcv(frame[ETH_HDR_LEN:], dev, pkt_id, pkt_type(dst_mac, dev))
            return
        if ethertype != _ETH_P_IP:
            if ethertype == _ETH_P_IPV6 and self.ipv6_rcv is not None:
                self.ipv6_rcv(frame[ETH_HDR_LEN:], dev, pkt_id, pkt_type(dst_mac, dev), src_mac, dst_mac, trace)
                return
            raise Drop(DropReason.NOT_IPV4, "netif_receive", f"ethertype 0x{ethertype:04x}")
        # pkt_type(dst_mac, dev), its commonest answer first: the device's own unicast MAC is HOST
        ptype = _PKT_HOST if dst_mac == dev.mac and not dst_mac[0] & 1 else pkt_type(dst_mac, dev)
        if ptype == _PKT_OTHERHOST:
            raise Drop(DropReason.OTHERHOST, "ip_rcv", f"frame for {ethernet.format_mac(dst_mac)}")
        if ptype != _PKT_HOST:
            key = None
        elif key is not None:
            addrs = key[3]
            if addrs[0] == _LOOPBACK_NET or addrs[4] == _LOOPBACK_NET:
                key = None  # 127/8 is the routing decision's business (martians, route_localnet)
            elif key[2] != 1 and self.fast_path and not trace and self._forward.fast_forward(frame, dev, pkt_id, key,
                                                                                             src_mac, dst_mac):
                return
        self.ip_rcv(frame[ETH_HDR_LEN:], dev, pkt_id, ptype, src_mac, dst_mac, trace, key)

    def _arp_rcv(self, payload: bytes, dev: Interface, pkt_id: int, ptype: PacketType) -> None:
        """`arp_rcv`: learn the sender, answer requests for our addresses on this device."""
        msg = arp.parse_arp(payload)
        if msg is None:
            raise Drop(DropReason.SHORT_FRAME, "arp_rcv", "malformed ARP")
        for_us = msg.op == arp.ARPOP_REQUEST and any(a.addr == msg.target_ip for a in dev.addresses)
        if self.resolve_neighbours:
            if ptype == _PKT_OTHERHOST:
                return  # arp_rcv: not for this host
            released = self._neighs.arp_process(dev.name, msg, self._ctx.now, pkt_host=ptype == _PKT_HOST,
                                                target_local=for_us)
            for held in released:
                self._output.emit_held(dev, msg.sender_mac, held)
        elif msg.sender_ip:
            self._neighs.learn(dev.name, msg.sender_ip, msg.sender_mac, self._ctx.now)
        if for_us:
            reply = arp.build_arp_reply(dev.mac, msg.target_ip, msg.sender_mac, msg.sender_ip)
            frame = ethernet.build_ethernet(msg.sender_mac, dev.mac, ethernet.ETH_P_ARP, reply)
            self._st.out.emitted.append(Emitted(dev.name, bytes(frame), pkt_id, 0))

    def ip_rcv(self, payload: bytes, dev: Interface, pkt_id: int, ptype: PacketType, src_mac: bytes,
               dst_mac: bytes, trace: bool, key: FlowKey | None = None) -> None:
        """`ip_rcv` → `ip_rcv_core` → PREROUTING → `ip_rcv_finish` (routing) → local or forward."""
        data, reason = self._rcv_core(payload)
        if data is None:
            raise Drop(reason or DropReason.IP_HDR_TRUNCATED, "ip_rcv_core")
        st = self._st
        skb = Skb(data, iif=dev.name, pkt_id=pkt_id)
        st.skb = skb
        if st.rx_meta is not NO_META:
            skb.gso_type, skb.gso_size, skb.csum_partial = st.rx_meta
        skb.pkt_type = ptype
        skb.src_mac = src_mac
        skb.dst_mac = dst_mac
        skb.fast_key = key
        if trace:
            skb.trace = []
            if skb.trace is not None:
                skb.add_trace(f"ip_rcv on {dev.name}: {self._family.describe(skb)}")
        try:
            if src_mac and not self.resolve_neighbours:
                saddr = int.from_bytes(data[IPH_SADDR:IPH_DADDR], "big")
                # the sender's MAC when it is on-link (what ARP would tell; natbox's shortcut offline); an
                # entry that holds it already is what `learn` would leave unchanged, so it is tested first
                e = self._neigh_entry((dev.name, saddr))
                if (e is None or e.ha != src_mac) and self._on_link(dev, saddr):
                    self._neighs.learn(dev.name, saddr, src_mac, self._ctx.now)
            self._route.ip_rcv_skb(skb)
        finally:
            st.flush_trace(skb)

    def ip_rcv_bridged(self, skb: Skb, dev: Interface) -> None:
        """`br_pass_frame_up` → `ip_rcv` on the bridge device `dev` for a packet br_netfilter already took
        through PREROUTING (engine/bridge.py): `ip_sabotage_in` keeps the IPv4 hooks from running twice, so
        the routing decision (`ip_rcv_finish`) comes next, with `skb.nf_bridge` (physindev) kept."""
        if skb.src_mac and not self.resolve_neighbours and self._on_link(dev, skb.saddr):
            self._neighs.learn(dev.name, skb.saddr, skb.src_mac, self._ctx.now)
        self._route.ip_rcv_finish(skb)
