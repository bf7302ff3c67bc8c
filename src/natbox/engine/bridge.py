"""A Linux bridge with br_netfilter: `br_handle_frame`, the FDB, `br_forward`/`br_flood`, `br_dev_xmit`.

A device with `master = "br0"` is a bridge port (net/bridge/br_if.c). Every frame arriving on a port is
handled here instead of by the port's IP stack (`br_handle_frame`, net/bridge/br_input.c):

1. its source MAC is learned into the bridge's forwarding database (`br_fdb_update`, br_fdb.c): bounded
   by BR_FDB_MAX (the oldest entry goes first; the kernel's own limit, `fdb_max_learned`, is off by
   default) and aged on the injected clock (BR_DEFAULT_AGEING_TIME, `has_expired`);
2. with net.bridge.bridge-nf-call-iptables = 1 (the default), an IPv4 frame goes through the IPv4
   PREROUTING hooks (conntrack, NAT, mangle...) with the bridge as input device and the port as
   `nf_bridge->physindev` (`br_nf_pre_routing`, br_netfilter_hooks.c); an OTHERHOST frame counts as HOST
   meanwhile. When DNAT changed the destination, `br_nf_pre_routing_finish` routes it: out by the bridge
   again, it is bridged to the new address's MAC; otherwise it is handed to the bridge device's stack;
3. `br_handle_frame_finish` decides: a frame for the bridge's (or a port's) MAC is passed up to the
   bridge device (`br_pass_frame_up`; IPv4 then skips PREROUTING, `ip_sabotage_in`, and is routed or
   delivered with its physindev kept); a broadcast or multicast is flooded and passed up; a unicast goes
   to the port the FDB names, or is flooded when unknown; never back out of the port it came in on;
4. a bridged IPv4 copy leaving by a port traverses FORWARD (`br_nf_forward_ip`: in and out are the bridge
   device, `physoutdev` is the port) and POSTROUTING (`br_nf_post_routing`), then leaves with its own
   Ethernet header (`br_nf_dev_queue_xmit`). No TTL is decremented: it is bridged, not routed.

What the host sends through the bridge device (routed packets, ARP, ICMP errors) leaves by the port the
FDB names for its destination MAC, or every port when unknown or not unicast (`br_dev_xmit`); such a packet
has no physoutdev (`br_nf_post_routing` leaves it alone: "POST_ROUTING was already invoked from the ip
stack"), so `--physdev-out` never matches a routed packet, as on Linux since 2.6.20.

Not modelled (docs/differences.md): STP (every port forwards), VLAN filtering, ebtables (the bridge
family's own tables), the IPv6 and ARP br_netfilter hooks (bridged IPv6 and ARP frames are bridged
without ip6tables/arptables), refragmenting a bridged reassembled datagram, hairpin mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from natbox.conntrack.tuple import format_addr
from natbox.engine.family import AddressFamily
from natbox.engine.hooks import Hooks, XtHost
from natbox.engine.host import Host, Interface
from natbox.engine.ip_input import pkt_type
from natbox.engine.output import Emitted, Output
from natbox.engine.path import Drop, PathState
from natbox.engine.routing import RTN_LOCAL, RTN_UNICAST, Fib
from natbox.netfilter import NF_ACCEPT, DropReason, Hook
from natbox.skb import NfBridge, PacketType, Skb
from natbox.wire import ethernet
from natbox.wire.layout import ETH_DEST, ETH_HDR_LEN, ETH_PROTO, ETH_SOURCE

__all__ = ["BR_DEFAULT_AGEING_TIME", "BR_FDB_MAX", "Bridges", "Fdb"]

BR_DEFAULT_AGEING_TIME: Final = 300.0  # seconds (BR_DEFAULT_AGEING_TIME, 300 * HZ): an unrefreshed entry expires
BR_FDB_MAX: Final = 4096  # learned entries per bridge natbox keeps (the oldest is dropped first)
_ETH_P_IP: Final = ethernet.ETH_P_IP
_ETH_P_IP_BYTES: Final = b"\x08\x00"
_PKT_HOST, _PKT_OTHERHOST = PacketType.HOST, PacketType.OTHERHOST
_HOOK_PRE_ROUTING, _HOOK_FORWARD, _HOOK_POST_ROUTING = Hook.PRE_ROUTING, Hook.FORWARD, Hook.POST_ROUTING

# hands to the rest of the engine, bound by it: an IPv4 skb passed up to the bridge device after
# PREROUTING (`IpInput.ip_rcv_bridged`), a frame passed up as the bridge device received it
# (`IpInput.receive_frame`), and the offline next-hop MAC (`IpOutput.neigh_mac`)
PassUpIp = Callable[[Skb, Interface], None]
PassUpFrame = Callable[[bytes, str, int, bool], None]
NeighMac = Callable[[Interface, int], tuple[bytes, bool]]


class Fdb:
    """One bridge's forwarding database (`struct net_bridge_fdb_entry`s, net/bridge/br_fdb.c): learned MAC →
    (port, when last seen). Local entries (the bridge's and its ports' own MACs) are not stored here:
    `Bridges` checks them first, as `br_fdb_update` refuses to move a local entry."""

    __slots__ = ("ageing_time", "entries")

    def __init__(self, ageing_time: float = BR_DEFAULT_AGEING_TIME) -> None:
        self.ageing_time = ageing_time
        self.entries: dict[bytes, tuple[str, float]] = {}

    def update(self, mac: bytes, port: str, now: float) -> None:
        """`br_fdb_update()`: learn or refresh `mac` behind `port` (a station that moved is moved)."""
        entries = self.entries
        if mac in entries:
            del entries[mac]  # re-inserted last: the dict's order is the eviction order
        elif len(entries) >= BR_FDB_MAX:
            del entries[next(iter(entries))]
        entries[mac] = (port, now)

    def lookup(self, mac: bytes, now: float) -> str | None:
        """`br_fdb_find_rcu()` of an entry not yet aged out (`has_expired`: updated + ageing <= now)."""
        hit = self.entries.get(mac)
        if hit is None:
            return None
        if hit[1] + self.ageing_time <= now:
            del self.entries[mac]  # br_fdb_cleanup would have removed it by now
            return None
        return hit[0]

    def show(self) -> list[tuple[bytes, str, float]]:
        """The learned entries (`bridge fdb show`): MAC, port, when last seen."""
        return [(mac, port, seen) for mac, (port, seen) in self.entries.items()]


class Bridges:
    """The host's bridges: their FDBs, the frames their ports receive, what their devices send."""

    def __init__(self, host: Host, fib: Fib, hooks: Hooks, family: AddressFamily, state: PathState,
                 ctx: XtHost) -> None:
        self._host, self._fib, self._hooks, self._family, self._st, self._ctx = host, fib, hooks, family, state, ctx
        self.fdbs: dict[str, Fdb] = {}
        self.pass_up_ip: PassUpIp = lambda skb, dev: None
        self.pass_up_frame: PassUpFrame = lambda frame, dev, pkt_id, trace: None
        self.neigh_mac: NeighMac = lambda dev, nexthop: (b"\xff" * 6, False)

    def fdb(self, bridge: str) -> Fdb:
        fdb = self.fdbs.get(bridge)
        if fdb is None:
            fdb = self.fdbs[bridge] = Fdb()
        return fdb

    def _is_local(self, br: Interface, mac: bytes) -> bool:
        """A local FDB entry: the bridge's own MAC or one of its ports' (`BR_FDB_LOCAL`)."""
        return mac == br.mac or any(p.mac == mac for p in self._host.bridge_ports(br.name))

    # --- input -------------------------------------------------------------------------------------

    def br_handle_frame(self, frame: bytes, port: Interface, pkt_id: int, trace: bool) -> None:
        """`br_handle_frame()`: learn, br_netfilter's PREROUTING for IPv4, then `br_handle_frame_finish`."""
        if len(frame) < ETH_HDR_LEN:
            raise Drop(DropReason.SHORT_FRAME, "br_handle_frame", f"{len(frame)} bytes")
        br = self._host.interfaces[port.master or ""]
        if not br.up:
            raise Drop(DropReason.LINK_DOWN, "br_handle_frame", br.name)
        dst_mac, src_mac = frame[ETH_DEST:ETH_SOURCE], frame[ETH_SOURCE:ETH_PROTO]
        if src_mac[0] & 1 or src_mac == b"\x00" * 6:
            raise Drop(DropReason.OTHERHOST, "br_handle_frame", "invalid source MAC "
                       + ethernet.format_mac(src_mac))
        now = self._ctx.now
        if not self._is_local(br, src_mac):
            self.fdb(br.name).update(src_mac, port.name, now)
        ethertype = (frame[ETH_PROTO] << 8) | frame[ETH_PROTO + 1]
        if ethertype != _ETH_P_IP or not self._host.bridge_nf_call_iptables:
            self._handle_frame_finish(frame, dst_mac, port, br, None, pkt_id, trace)
            return
        self._br_nf_pre_routing(frame, dst_mac, src_mac, port, br, pkt_id, trace)

    def _br_nf_pre_routing(self, frame: bytes, dst_mac: bytes, src_mac: bytes, port: Interface, br: Interface,
                           pkt_id: int, trace: bool) -> None:
        """`br_nf_pre_routing()` → NF_INET_PRE_ROUTING → `br_nf_pre_routing_finish()`."""
        data, reason = self._family.rcv_core(frame[ETH_HDR_LEN:])
        if data is None:  # br_validate_ipv4
            raise Drop(reason or DropReason.IP_HDR_TRUNCATED, "br_nf_pre_routing")
        st = self._st
        skb = Skb(data, iif=br.name, pkt_id=pkt_id)
        st.skb = skb
        ptype = pkt_type(dst_mac, br)
        if ptype == _PKT_OTHERHOST and dst_mac == port.mac:
            ptype = _PKT_HOST  # eth_type_trans on the port: a frame for the port's own MAC
        otherhost = ptype == _PKT_OTHERHOST
        skb.pkt_type = _PKT_HOST if otherhost else ptype  # setup_pre_routing: pkt_otherhost
        skb.src_mac, skb.dst_mac = src_mac, dst_mac
        skb.nf_bridge = NfBridge(port.name)
        if trace:
            skb.trace = []
            skb.add_trace(f"br_handle_frame on {port.name} (bridge {br.name}): {self._family.describe(skb)}")
        try:
            orig_daddr = skb.daddr
            if self._hooks.run(_HOOK_PRE_ROUTING, skb) != NF_ACCEPT:
                return
            if otherhost:
                skb.pkt_type = _PKT_OTHERHOST
            daddr = skb.daddr
            if daddr != orig_daddr:
                dst_mac = self._dnat_dst_mac(skb, br, daddr)
                skb.dst_mac = dst_mac
            self._handle_frame_finish(frame, dst_mac, port, br, skb, pkt_id, trace)
        finally:
            st.flush_trace(skb)

    def _dnat_dst_mac(self, skb: Skb, br: Interface, daddr: int) -> bytes:
        """`br_nf_pre_routing_finish()` after DNAT: routed out by the bridge again, the frame is bridged to
        the new address's MAC (`br_nf_pre_routing_finish_bridge`); otherwise it is handed to the bridge
        device's stack (its MAC becomes the destination) to be delivered or routed."""
        res = self._fib.lookup(daddr)
        if res is None:
            raise Drop(DropReason.NO_ROUTE, "br_nf_pre_routing_finish", f"no route to {format_addr(daddr)}")
        if res.type == RTN_UNICAST and res.dev == br.name:
            skb.add_trace(f"br_nf_pre_routing_finish: DNAT to {format_addr(daddr)}, still bridged")
            return self.neigh_mac(br, res.nexthop or daddr)[0]
        if res.type not in (RTN_LOCAL, RTN_UNICAST):
            raise Drop(DropReason.NO_ROUTE, "br_nf_pre_routing_finish", f"route type {res.route.type}")
        skb.pkt_type = _PKT_HOST
        skb.add_trace(f"br_nf_pre_routing_finish: DNAT to {format_addr(daddr)}: passed up to {br.name}")
        return br.mac

    def _handle_frame_finish(self, frame: bytes, dst_mac: bytes, port: Interface, br: Interface, skb: Skb | None,
                             pkt_id: int, trace: bool) -> None:
        """`br_handle_frame_finish()`: local, forward to the FDB's port, or flood (and pass up)."""
        if dst_mac[0] & 1:
            out_ports, local = self._flood_ports(br, port.name), True
        elif self._is_local(br, dst_mac):
            out_ports, local = [], True
        else:
            to = self.fdb(br.name).lookup(dst_mac, self._ctx.now)
            if to == port.name:  # br_forward: should_deliver() refuses the input port
                raise Drop(DropReason.OTHERHOST, "br_forward", f"{ethernet.format_mac(dst_mac)} is behind {to}")
            out_ports = self._fdb_port(br, to) if to is not None else self._flood_ports(br, port.name)
            local = False
        if skb is not None and skb.trace is not None:
            ports = ", ".join(p.name for p in out_ports) or "no port"
            skb.add_trace(f"br_handle_frame_finish: {'flood' if len(out_ports) > 1 else 'forward'} to {ports}"
                          + (f", up to {br.name}" if local else ""))
        for i, out in enumerate(out_ports):
            last = i == len(out_ports) - 1 and not local
            try:
                if skb is None:
                    self._st.out.emitted.append(Emitted(out.name, frame, pkt_id, 0))
                else:
                    self._br_nf_forward(skb if last else _clone(skb), dst_mac, br, out)
            except Drop as d:
                self._st.record_drop(pkt_id, d)
        if not local:
            return
        if skb is None:
            self.pass_up_frame(frame, br.name, pkt_id, trace)
        else:
            self.pass_up_ip(skb, br)

    def _fdb_port(self, br: Interface, name: str) -> list[Interface]:
        """The port an FDB entry names, if it is still a port of `br` and up (`should_deliver`)."""
        dev = self._host.interfaces.get(name)
        return [dev] if dev is not None and dev.master == br.name and dev.up else []

    def _flood_ports(self, br: Interface, in_port: str) -> list[Interface]:
        """`br_flood()`'s ports: every port that is up, except the one the frame came in on."""
        return [p for p in self._host.bridge_ports(br.name) if p.up and p.name != in_port]

    def _br_nf_forward(self, skb: Skb, dst_mac: bytes, br: Interface, out: Interface) -> None:
        """`__br_forward` → `br_nf_forward_ip()` (FORWARD, in and out the bridge device, physoutdev the port)
        → `br_nf_post_routing()` (POSTROUTING) → `br_nf_dev_queue_xmit()`."""
        nfb = skb.nf_bridge
        if nfb is not None:
            nfb.physoutdev = out.name
        otherhost = skb.pkt_type == _PKT_OTHERHOST
        if otherhost:
            skb.pkt_type = _PKT_HOST
        skb.oif = br.name
        hooks = self._hooks
        if hooks.run(_HOOK_FORWARD, skb) != NF_ACCEPT or hooks.run(_HOOK_POST_ROUTING, skb) != NF_ACCEPT:
            return
        if otherhost:
            skb.pkt_type = _PKT_OTHERHOST
        if len(skb.data) > out.mtu and not skb.gso_size:
            raise Drop(DropReason.FRAG_NEEDED, "br_nf_dev_queue_xmit", f"{len(skb.data)} > mtu {out.mtu}")
        ct = skb.ct
        self._st.out.emitted.append(Emitted(out.name, dst_mac + skb.src_mac + _ETH_P_IP_BYTES + skb.data,
                                            skb.pkt_id, ct.ct_id if ct is not None else 0))
        if skb.trace is not None:
            skb.add_trace(f"br_forward: bridged to {out.name}: {self._family.describe(skb)}")
            self._st.flush_trace(skb)

    # --- output ------------------------------------------------------------------------------------

    def br_dev_xmit(self, out: Output) -> None:
        """`br_dev_xmit()` for every frame the host sent through a bridge device: to the port the FDB names
        for its destination MAC, else (unknown, broadcast, multicast) flooded to every port that is up."""
        interfaces = self._host.interfaces
        if not any(interfaces[e.iface].kind == "bridge" for e in out.emitted if e.iface in interfaces):
            return
        now = self._ctx.now
        sent: list[Emitted] = []
        for e in out.emitted:
            br = interfaces.get(e.iface)
            ports = self._host.bridge_ports(e.iface) if br is not None and br.kind == "bridge" else []
            if br is None or not ports:  # not a bridge, or one without ports: sent on the device itself
                sent.append(e)
                continue
            dst = e.frame[ETH_DEST:ETH_SOURCE]
            to = None if dst[0] & 1 else self.fdb(e.iface).lookup(dst, now)
            ports = self._fdb_port(br, to) if to is not None else [p for p in ports if p.up]
            sent.extend(Emitted(p.name, e.frame, e.pkt_id, e.ct_id, e.gso_type, e.gso_size, e.partial) for p in ports)
        out.emitted[:] = sent


def _clone(skb: Skb) -> Skb:
    """`skb_clone()` + `nf_bridge_unshare()`: a copy for one more port of a flood, sharing the ct."""
    c = Skb(bytearray(skb.data), iif=skb.iif, pkt_id=skb.pkt_id)
    c.ct, c.ctinfo, c.untracked, c.ct_zone = skb.ct, skb.ctinfo, skb.untracked, skb.ct_zone
    c.mark, c.pkt_type, c.priority, c.secmark = skb.mark, skb.pkt_type, skb.priority, skb.secmark
    c.src_mac, c.dst_mac = skb.src_mac, skb.dst_mac
    c.frag_max_size, c.frag_pmtu, c.frag_list = skb.frag_max_size, skb.frag_pmtu, skb.frag_list
    c.gso_size, c.gso_type, c.csum_partial = skb.gso_size, skb.gso_type, skb.csum_partial
    nfb = skb.nf_bridge
    c.nf_bridge = NfBridge(nfb.physindev, nfb.physoutdev) if nfb is not None else None
    c.trace = [] if skb.trace is not None else None
    return c
