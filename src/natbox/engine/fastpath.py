"""Compiled flows: the engine's fast path for packets of established TCP, UDP and ICMP echo flows.

Most packets a NAT gateway forwards belong to established connections, and for those the kernel's path
(ip_rcv → PREROUTING: conntrack, nat → routing → ip_forward → FORWARD → POSTROUTING: nat, confirm →
neighbour output) takes the same decisions every time except for a few per-packet facts. The slow path
records its decisions for such a flow; this module turns them into a `CompiledFlow`: the route, the
output header, the bytes NAT writes (both manips at once) and the checksum changes NAT and the TTL
decrement make, precomputed. A packet of the flow then costs one dict lookup, the per-packet checks and
one join of byte strings. (ICMP echo flows are keyed by addresses, type, code and id, and NAT rewrites
the id; the ICMP checksum covers no pseudo-header.)

Exactness is the contract: the result (frame out, conntrack state, counters) is byte for byte what the
slow path produces, which `tests/engine/test_compiled_flows.py` checks by running traffic through engines
with and without it. Everything that can differ from packet to packet is checked on each packet, in
the kernel's order, and anything unusual returns None *before* changing anything, so the slow path
handles the packet from the start:

| per-packet check (kernel function)                                  | otherwise                          |
|---------------------------------------------------------------------|------------------------------------|
| IPv4, IHL 5, not a fragment, TTL > 1, fits the MTU (ip_forward)     | slow path: options, defrag, errors |
| header checksum, tot_len within the frame (ip_rcv_core)             | slow path drops it with the reason |
| ct alive (not DYING, not expired), SEEN_REPLY, no FIXED_TIMEOUT or NAT_CLASH | slow path looks it up |
| TCP: ESTABLISHED, ASSURED, an ACK, header and checksum valid (tcp_error), in window | slow path     |
| UDP: length and checksum valid (udp_error); no ASSURED to set now   | slow path                          |
| FIB, ruleset, interfaces unchanged (generation, version, up, forwarding) | slow path                     |

A flow is compiled only while the tables a forwarded packet meets besides conntrack and nat (raw
PREROUTING, mangle PREROUTING/FORWARD/POSTROUTING, filter FORWARD) are absent, so no rule can see, count
or change the packet; with them present the engine's second tier (`Engine._fast_forward`) runs them.

Checksums. NAT updates the IP and L4 checksums with `csum_replace4`/`csum_replace2` (RFC 1624) and the
TTL decrement adds 0x0100 with an end-around carry (`ip_decrease_ttl`). For a change whose one's-complement
difference d is not zero, each of them maps a checksum c to (c - d) mod 0xFFFF (the TTL: c + 0x0100), a
value in [0, 0xFFFE], so a sequence of them is one subtraction of the sum of the differences. A flow with
a zero difference in some step (only possible for 255.255.255.255 → 0.0.0.0 or port 65535 → 0) is not
compiled. UDP keeps a zero checksum and turns a computed zero into 0xFFFF (CSUM_MANGLED_0), as
`udp_manip_pkt` does after each step.

A flow is compiled at its second ESTABLISHED packet in a direction, not its first: short connections
(a handshake, a request, a close) would pay for a compile they never use.

Bounds: at most FLOW_CACHE_MAX compiled flows; the oldest is evicted first. An entry whose ct died stays
until evicted or replaced, and is never used (the DYING bit).
"""

from __future__ import annotations

from collections.abc import Callable

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.conn import Conn, TcpConntrack
from natbox.conntrack.proto.tcp import _INDEX_BY_BYTE, _VALID_BY_BYTE, TCP_ACK_SET, tcp_packet_established
from natbox.conntrack.proto.udp import STREAM_DELAY, udp_packet_seen_reply
from natbox.engine.family import FlowKey, flow_key
from natbox.engine.hooks import Hooks
from natbox.engine.host import Host, Interface
from natbox.engine.neigh import NeighTable
from natbox.engine.output import Emitted, Output
from natbox.engine.path import Held, PathState
from natbox.engine.routing import Fib
from natbox.netfilter import CtInfo, CtStatus, TcpState
from natbox.skb import Skb
from natbox.wire.gso import GSO_TCPV4, GSO_UDP_L4

__all__ = ["FLOW_CACHE_MAX", "CompiledFlow", "FlowCache"]

FLOW_CACHE_MAX = 65536  # compiled flows kept; the oldest is evicted first
VIEW_MIN = 2048  # a memoryview frame longer than this keeps its payload in place (shorter ones are copied)
HEAD_LEN = 128  # bytes of a view frame copied for the checks: Ethernet 14 + IP 20 + TCP with options 60


# the ct status a compiled flow needs on every packet: (status & _MASK) == SEEN_REPLY, and for TCP ASSURED too
_MASK = int(CtStatus.DYING | CtStatus.SEEN_REPLY | CtStatus.FIXED_TIMEOUT | CtStatus.NAT_CLASH)
_WANT = int(CtStatus.SEEN_REPLY)
_ASSURED = int(CtStatus.ASSURED)
_SRC_NAT = int(CtStatus.SRC_NAT)
_DST_NAT = int(CtStatus.DST_NAT)
_ES = TcpState.ESTABLISHED
# flag bytes tcp_error accepts and get_conntrack_index classes as TCP_ACK_SET (no SYN, FIN or RST)
_ACK_ONLY = tuple(_INDEX_BY_BYTE[b] == TCP_ACK_SET and _VALID_BY_BYTE[b] for b in range(256))
_U32 = 0xFFFFFFFF
# tables whose chains at these hooks would see a forwarded packet besides conntrack and nat

def _diff4(old: int, new: int) -> int:
    """The one's-complement difference `csum_replace4` adds for a 32-bit field (0 only for ~0 → 0)."""
    return ((~old >> 16) & 0xFFFF) + (~old & 0xFFFF) + (new >> 16) + (new & 0xFFFF)


def _diff2(old: int, new: int) -> int:
    """The one's-complement difference `csum_replace2` adds for a 16-bit field."""
    return (~old & 0xFFFF) + new


class CompiledFlow:
    """One direction of one established flow, as the slow path forwarded it."""

    __slots__ = ("conn", "cpos", "dev", "direction", "gen", "icmp_id", "ip_add", "l2", "l4_partial_add", "l4_steps",
                 "l4_sub", "learn_key",
                 "neigh_key", "new_tuple", "nexthop", "oif", "out", "pseudo", "rules_version", "tcp")

    def __init__(self, conn: Conn, tcp: TcpConntrack | None, direction: int, dev: Interface, out: Interface,
                 nexthop: int, new_tuple: bytes, ip_add: int, l4_sub: int, l4_partial_add: int, l4_steps: bool,
                 pseudo: int,
                 cpos: int, gen: int, rules_version: int, learn_key: tuple[str, int] | None) -> None:
        self.conn = conn
        self.tcp = tcp
        self.direction = direction
        self.dev = dev
        self.out = out
        self.oif = out.name
        self.nexthop = nexthop
        self.neigh_key = (out.name, nexthop)
        self.l2 = out.mac + b"\x08\x00"  # source MAC and ethertype of the output frame
        self.new_tuple = new_tuple  # saddr, daddr, sport, dport after both manips (frame bytes 26..38)
        self.ip_add = ip_add  # added to the IP checksum, mod 0xFFFF (TTL - NAT differences)
        self.l4_sub = l4_sub  # subtracted from the L4 checksum, mod 0xFFFF (NAT differences)
        self.l4_partial_add = l4_partial_add  # added to a partial L4 checksum (the addresses' differences)
        self.l4_steps = l4_steps  # whether NAT changes the L4 checksum at all
        self.pseudo = pseudo  # the pseudo-header sum of the received packet, without its length
        self.cpos = cpos  # offset of the L4 checksum in the frame
        self.gen = gen  # the FIB generation it was routed with
        self.rules_version = rules_version
        self.learn_key = learn_key  # the sender, when on-link: its neighbour entry is refreshed (_learn_neighbour)
        self.icmp_id: bytes | None = None  # ICMP echo: the id NAT writes (new_tuple then holds the addresses only)


class FlowCache:
    """The compiled flows of one engine, and the fast path that uses them."""

    def __init__(self, host: Host, fib: Fib, cfg: ConntrackConfig, hooks: Hooks, neighs: NeighTable[Held],
                 neigh: dict[tuple[str, int], bytes], state: PathState,
                 neigh_resolve: Callable[[Interface, int], bytes], *, resolve_neighbours: bool) -> None:
        self.flows: dict[FlowKey, CompiledFlow] = {}
        self._fib, self._host, self._cfg, self._hooks, self._neighs, self._neigh = fib, host, cfg, hooks, neighs, neigh
        self._st = state
        self._neigh_resolve = neigh_resolve
        self._resolve = resolve_neighbours
        # flows seen once, to be compiled at their next packet (at most FLOW_CACHE_MAX; emptied when full)
        self._seen: dict[FlowKey, Conn] = {}
        self._by_ct: dict[int, list[FlowKey]] = {}  # the keys of each ct in flows or _seen (forget() finds them)

    def clear(self) -> None:
        self.flows.clear()
        self._seen.clear()
        self._by_ct.clear()

    def _link(self, key: FlowKey, conn: Conn) -> None:
        keys = self._by_ct.setdefault(conn.ct_id, [])
        if key not in keys:
            keys.append(key)

    def forget(self, ct: Conn) -> None:
        """Drop the compiled flows (and flows seen once) of a destroyed ct (its `register_destroy` callback)."""
        keys = self._by_ct.pop(ct.ct_id, None)
        if keys is None:
            return
        flows, seen = self.flows, self._seen
        for key in keys:
            flow = flows.get(key)
            if flow is not None and flow.conn is ct:
                del flows[key]
            if seen.get(key) is ct:
                del seen[key]

    def compile(self, skb: Skb, key: FlowKey) -> None:
        """Compile the flow of `skb`, which the slow path has just forwarded as an ESTABLISHED packet.

        Does nothing when the flow is not eligible (see the module docstring)."""
        hooks = self._hooks
        conn = skb.ct
        if conn is None or skb.ctinfo not in (CtInfo.ESTABLISHED, CtInfo.ESTABLISHED_REPLY) or skb.frag_max_size:
            return
        if conn.tcp is not None and conn.tcp.state != _ES:
            return  # opening or closing: a compiled flow would not be used (tier 2 compiles it later)
        known = self.flows.get(key)
        if (known is not None and known.conn is conn and known.gen == self._fib.generation
                and known.rules_version == hooks.rules.version):
            return  # compiled already and current
        if not hooks.compilable():  # something besides conntrack and nat would see the packets
            return
        if known is None or known.conn is not conn:
            # a new flow is compiled at its second ESTABLISHED packet in this direction: a connection
            # that closes right after its handshake (most of a busy server's) never pays for it
            seen = self._seen
            if seen.get(key) is not conn:
                if len(seen) >= FLOW_CACHE_MAX:
                    seen.clear()
                seen[key] = conn
                self._link(key, conn)
                return
            del seen[key]
        proto = key[2]
        direction = 1 if skb.ctinfo == CtInfo.ESTABLISHED_REPLY else 0
        cur = conn.tuples[direction]
        if cur.proto != proto or proto not in (1, 6, 17):
            return
        addrs = cur.src.to_bytes(4, "big") + cur.dst.to_bytes(4, "big")
        if proto == 1:  # echo: the tuple's sport is the id, dport the type and code (icmp_pkt_to_tuple)
            if (cur.dport >> 8 not in (0, 8)
                    or key[3] != addrs + cur.dport.to_bytes(2, "big") + cur.sport.to_bytes(2, "big")):
                return
        elif key[3] != addrs + cur.sport.to_bytes(2, "big") + cur.dport.to_bytes(2, "big"):
            return
        dev = self._host.interfaces.get(key[0])
        out = self._host.interfaces.get(skb.oif)
        if dev is None or out is None or out.kind == "loopback":
            return
        if direction == 0 and conn.masq_index is not None and conn.masq_index != skb.oif:
            return  # nf_nat_oif_changed would kill it: the slow path's business
        other = conn.tuples[1 - direction]  # its inverse is what both manips write (nf_nat_packet)
        src, dst, sport, dport = cur.src, cur.dst, cur.sport, cur.dport
        icmp_id = cur.sport
        status = int(conn.status)
        ip_diff = l4_diff = 0
        steps = []
        if status & (_DST_NAT if direction == 0 else _SRC_NAT):  # PREROUTING: the DST manip
            steps.append((dst, other.src, dport, other.sport))
            dst, dport = other.src, other.sport
        if status & (_SRC_NAT if direction == 0 else _DST_NAT):  # POSTROUTING: the SRC manip
            steps.append((src, other.dst, sport, other.dport))
            src, sport = other.dst, other.dport
        for old_addr, new_addr, old_port, new_port in steps:
            d4 = _diff4(old_addr, new_addr)
            if proto == 1:
                # icmp_manip_pkt: either manip writes the id (the inverted tuple keeps it in sport), and
                # the ICMP checksum covers no pseudo-header
                d2 = _diff2(icmp_id, other.sport)
                icmp_id = other.sport
                l4_diff += d2
            else:
                d2 = _diff2(old_port, new_port)
                l4_diff += d4 + d2
            if not d4 or not d2:
                return
            ip_diff += d4
        new_tuple = src.to_bytes(4, "big") + dst.to_bytes(4, "big")
        if proto != 1:
            new_tuple += sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
        pseudo = (cur.src >> 16) + (cur.src & 0xFFFF) + (cur.dst >> 16) + (cur.dst & 0xFFFF) + proto
        learn = (dev.name, cur.src) if any(a.contains(cur.src) for a in dev.addresses) else None
        flows = self.flows
        if len(flows) >= FLOW_CACHE_MAX and key not in flows:
            del flows[next(iter(flows))]
        flow = CompiledFlow(
            conn, conn.tcp if proto == 6 else None, direction, dev, out, skb.nexthop, new_tuple,
            (0x100 - ip_diff) % 0xFFFF, l4_diff % 0xFFFF, ip_diff % 0xFFFF, bool(steps), pseudo,
            50 if proto == 6 else 40 if proto == 17 else 36,
            self._fib.generation, hooks.rules.version, learn)
        if proto == 1:
            flow.icmp_id = icmp_id.to_bytes(2, "big")
        flows[key] = flow
        self._link(key, conn)

    def forward(self, frame: bytes | bytearray | memoryview, iface: str, now: float, gso_type: int = 0,
                gso_size: int = 0, partial: bool = False) -> Output | None:
        """Forward `frame` if it belongs to a compiled flow and nothing about it is unusual; else None,
        with nothing changed (not even the packet counter), and the caller takes the slow path.

        A GSO super-packet (`gso_size`) is forwarded whole when its segments fit the MTU; a partial checksum
        (`partial`) is not verified and is updated for the address changes only, as `nf_ip_checksum` and
        `inet_proto_csum_replace4` treat CHECKSUM_PARTIAL.

        A large frame given as a memoryview is not copied: its headers are (HEAD_LEN bytes: every
        header byte the checks read, as IHL is 5 and TCP options end by byte 94), and the TCP/UDP
        payload leaves as `Emitted.tail`, a view of the same buffer."""
        view: memoryview | None = None
        if type(frame) is not bytes:
            if type(frame) is memoryview and len(frame) > VIEW_MIN:
                view = frame
                frame = bytes(view[:HEAD_LEN])
            else:
                frame = bytes(frame)
        src = frame if view is None else view  # the whole frame, for what lies past the headers
        key = flow_key(frame, iface)
        if key is None:
            return None
        flow = self.flows.get(key)
        if flow is None:
            return None
        conn = flow.conn
        if (conn.status & _MASK != _WANT or now >= conn.timeout or flow.gen != self._fib.generation
                or flow.rules_version != self._hooks.rules.version):
            return None
        dev = flow.dev
        out = flow.out
        forwarding = dev.forwarding
        if forwarding is None:
            forwarding = self._host.ip_forward
        tot_len = (frame[16] << 8) | frame[17]
        end = 14 + tot_len
        mtu = out.mtu
        if (not forwarding or not dev.up or not out.up or end > len(src) or frame[22] <= 1
                or int.from_bytes(frame[14:34], "big") % 0xFFFF):  # ip_fast_csum: the sum must be 0xFFFF
            return None
        whole = tot_len > mtu
        if whole and not (gso_size and gso_type):
            return None
        live_mac = None
        if self._resolve:  # neigh_output: an unresolved next hop is the slow path's (it queues)
            live_mac = self._neighs.lookup(flow.oif, flow.nexthop, now)
            if live_mac is None:
                return None
        cfg = self._cfg
        seg_len = tot_len - 20
        cpos = flow.cpos
        tcp = flow.tcp
        if flow.icmp_id is not None:
            # icmpv4_error for a query: 8 bytes, a valid checksum (on the whole message), not an error type
            # (the key holds the type); then nf_conntrack_icmp_packet: refresh to icmp_timeout
            if seg_len < 8 or whole:
                return None
            if cfg.checksum:
                total = int.from_bytes(src[34:end], "big") << (seg_len & 1) * 8
                if not total or total % 0xFFFF:
                    return None
            check = (frame[36] << 8) | frame[37]
            if flow.l4_steps:
                check = (check - flow.l4_sub) % 0xFFFF
            conn.timeout = now + cfg.icmp_timeout
            if cfg.acct:
                conn.acct_packets[flow.direction] += 1
                conn.acct_bytes[flow.direction] += tot_len
        elif tcp is not None:
            if tcp.state != _ES or seg_len < 20 or not conn.status & _ASSURED:
                return None
            check = (frame[50] << 8) | frame[51]
            doff = (frame[46] >> 4) * 4
            flags = frame[47]
            if doff < 20 or seg_len < doff or not _ACK_ONLY[flags]:
                return None
            if whole and (gso_type != GSO_TCPV4 or 20 + doff + gso_size > mtu):
                return None  # skb_gso_validate_network_len fails: the slow path segments or refuses it
            if cfg.checksum and not partial and (
                    flow.pseudo + seg_len + (int.from_bytes(src[34:end], "big") << (seg_len & 1) * 8)) % 0xFFFF:
                return None
            seq = int.from_bytes(frame[38:42], "big")
            if not tcp_packet_established(conn, tcp, flow.direction, frame, 34, doff, seq,
                                          int.from_bytes(frame[42:46], "big"), (frame[48] << 8) | frame[49],
                                          (seq + seg_len - doff) & _U32, tot_len, now, cfg):
                return None
            if flow.l4_steps:
                if partial:
                    check = (check + flow.l4_partial_add - 1) % 0xFFFF + 1
                else:
                    check = (check - flow.l4_sub) % 0xFFFF
        else:
            if seg_len < 8:
                return None
            check = (frame[40] << 8) | frame[41]
            ulen = (frame[38] << 8) | frame[39]
            if ulen > seg_len or ulen < 8:
                return None
            if whole and (gso_type != GSO_UDP_L4 or 28 + gso_size > mtu):
                return None
            if partial:
                if flow.l4_steps:
                    check = (check + flow.l4_partial_add - 1) % 0xFFFF + 1
            elif check:
                if cfg.checksum and (flow.pseudo + seg_len
                                     + (int.from_bytes(src[34:end], "big") << (seg_len & 1) * 8)) % 0xFFFF:
                    return None
                if flow.l4_steps:
                    check = (check - flow.l4_sub) % 0xFFFF or 0xFFFF
            if not conn.status & _ASSURED and now > conn.start + STREAM_DELAY:
                return None  # this packet makes the ct ASSURED (an event): the slow path's business
            udp_packet_seen_reply(conn, flow.direction, tot_len, now, cfg)
        # committed: the packet leaves
        st = self._st
        pkt_id = st.next_pkt_id
        st.next_pkt_id = pkt_id + 1
        neigh = self._neigh
        if flow.learn_key is not None:
            neigh[flow.learn_key] = frame[6:12]
        dst_mac = live_mac or neigh.get(flow.neigh_key) or self._neigh_resolve(out, flow.nexthop)
        ipcheck = (((frame[24] << 8) | frame[25]) + flow.ip_add) % 0xFFFF
        if flow.icmp_id is not None:
            data = b"".join((dst_mac, flow.l2, frame[14:22],
                             bytes((frame[22] - 1, 1, ipcheck >> 8, ipcheck & 0xFF)), flow.new_tuple, frame[34:36],
                             bytes((check >> 8, check & 0xFF)), flow.icmp_id, src[40:end]))
            return Output([Emitted(flow.oif, data, pkt_id, conn.ct_id, 0, 0, False)], [], [], [], [])
        if view is not None:  # the headers are copied (to the end of the TCP/UDP header), the payload stays
            l4_end = 34 + ((frame[46] >> 4) * 4 if tcp is not None else 8)
            data = b"".join((dst_mac, flow.l2, frame[14:22],
                             bytes((frame[22] - 1, frame[23], ipcheck >> 8, ipcheck & 0xFF)), flow.new_tuple,
                             frame[38:cpos], bytes((check >> 8, check & 0xFF)), frame[cpos + 2:l4_end]))
            return Output([Emitted(flow.oif, data, pkt_id, conn.ct_id, gso_type if whole else 0,
                                   gso_size if whole else 0, partial, view[l4_end:end])], [], [], [], [])
        data = b"".join((dst_mac, flow.l2, frame[14:22],
                         bytes((frame[22] - 1, frame[23], ipcheck >> 8, ipcheck & 0xFF)), flow.new_tuple,
                         frame[38:cpos], bytes((check >> 8, check & 0xFF)),
                         frame[cpos + 2:end] if end < 1024 else memoryview(frame)[cpos + 2:end]))  # a view: a
        # 64 KiB GSO payload is copied once (for a small one, slicing is cheaper than making the view)
        if whole:
            return Output([Emitted(flow.oif, data, pkt_id, conn.ct_id, gso_type, gso_size, partial)], [], [], [], [])
        return Output([Emitted(flow.oif, data, pkt_id, conn.ct_id, 0, 0, partial)], [], [], [], [])
