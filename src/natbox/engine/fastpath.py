"""Compiled flows: the engine's fast path for packets of established TCP, UDP and ICMP echo flows.

Most packets a NAT gateway forwards belong to established connections, and for those the kernel's path
(ip_rcv → PREROUTING: conntrack, nat → routing → ip_forward → FORWARD → POSTROUTING: nat, confirm →
neighbour output) takes the same decisions every time except for a few per-packet facts. The slow path
records its decisions for such a flow; this module turns them into a `FlowPlan`: plain, serialisable
data (`FlowPlan.as_dict()` is JSON) saying the route and out device, both MACs, the bytes both NAT manips
write, the checksum changes NAT and the TTL decrement make, the MTU and GSO limits, and the counters to
bump. `FlowCache.forward` is the plan's executor: a packet of the flow costs one dict lookup, the
per-packet checks (engine/checks.py, conntrack/proto's trackers) and one join of byte strings, and the
executor derives nothing the plan says (the next step runs the same plan from a BPF map, issue #16).
(ICMP echo flows are keyed by addresses, type, code and id, and NAT rewrites the id; the ICMP checksum
covers no pseudo-header.)

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
PREROUTING, mangle PREROUTING/FORWARD/POSTROUTING, filter and security FORWARD) are absent, so no rule can
see, count or change the packet; with them present the engine's second tier (`Forwarder.fast_forward`) runs them.
(Offloading, engine/offload.py, a plan is made with them present too, kept apart in `planned` for the datapath
only: the kernel's flowtable skips every chain as well; the engine's executor never runs such a plan, the
offline datapath's, `FlowCache.datapath()`, does.)

Checksums. NAT updates the IP and L4 checksums with `csum_replace4`/`csum_replace2` (RFC 1624) and the
TTL decrement adds 0x0100 with an end-around carry (`ip_decrease_ttl`). For a change whose one's-complement
difference d is not zero, each of them maps a checksum c to (c - d) mod 0xFFFF (the TTL: c + 0x0100), a
value in [0, 0xFFFE], so a sequence of them is one subtraction of the sum of the differences. A flow with
a zero difference in some step (only possible for 255.255.255.255 → 0.0.0.0 or port 65535 → 0) is not
compiled. UDP keeps a zero checksum and turns a computed zero into 0xFFFF (CSUM_MANGLED_0), as
`udp_manip_pkt` does after each step.

A flow is compiled at its second ESTABLISHED packet in a direction, not its first: short connections
(a handshake, a request, a close) would pay for a compile they never use.

A plan is valid for one FIB generation, ruleset version, neighbour-table generation and out MTU; the
executor checks those stamps and the live state a plan cannot hold (the ct, the devices being up).

Bounds: at most FLOW_CACHE_MAX compiled flows (and as many flows seen once); the oldest is evicted first.
When a ct is destroyed its entries go (`forget`, registered with `ConntrackTable.register_destroy`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Final

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.conn import Conn, TcpConntrack
from natbox.conntrack.proto.tcp import _INDEX_BY_BYTE, _VALID_BY_BYTE, TCP_ACK_SET, tcp_packet_established
from natbox.conntrack.proto.udp import STREAM_DELAY, udp_packet_seen_reply
from natbox.conntrack.tuple import ConnTuple
from natbox.engine.checks import gso_fits
from natbox.engine.family import FlowKey, flow_key
from natbox.engine.hooks import Hooks
from natbox.engine.host import Host, Interface
from natbox.engine.neigh import NeighTable
from natbox.engine.output import Emitted, Output
from natbox.engine.path import Held, PathState
from natbox.engine.route6 import Fib6
from natbox.engine.routing import Fib
from natbox.netfilter import NFPROTO_IPV4, CtInfo, CtStatus, TcpState
from natbox.skb import Skb
from natbox.wire.gso import GSO_TCPV4, GSO_UDP_L4
from natbox.wire.layout import (
    ETH_HDR_LEN,
    ETH_PROTO,
    ICMPH_CHECKSUM,
    ICMPH_LEN,
    ICMPH_SEQUENCE,
    IPH_CHECK,
    IPH_MIN_LEN,
    IPH_SADDR,
    IPH_TOT_LEN,
    IPH_TTL,
    L4_PORTS_END,
    TCPH_ACK_SEQ,
    TCPH_CHECK,
    TCPH_DOFF,
    TCPH_FLAGS,
    TCPH_MIN_LEN,
    TCPH_SEQ,
    TCPH_WINDOW,
    UDPH_CHECK,
    UDPH_LEN,
    UDPH_LEN_BYTES,
)

__all__ = ["FLOW_CACHE_MAX", "CompiledFlow", "FlowCache", "FlowPlan", "nat_steps"]

_CHECK_LEN: Final = 2  # the 16-bit TCP/UDP/ICMP checksum field: what follows it is copied unchanged

# compiled flows (and tier-2 entries, engine/forward.py) kept; the oldest is evicted first
FLOW_CACHE_MAX: Final = 65536
VIEW_MIN = 2048  # a memoryview frame longer than this keeps its payload in place (shorter ones are copied)
HEAD_LEN: Final = 128  # bytes of a view frame copied for the checks: Ethernet 14 + IP 20 + TCP with options 60

# where things are in an Ethernet frame carrying IPv4 without options (the only kind a plan covers)
_IP: Final = ETH_HDR_LEN
_L4: Final = ETH_HDR_LEN + IPH_MIN_LEN
_TOT_LEN: Final = _IP + IPH_TOT_LEN
_TTL: Final = _IP + IPH_TTL
_IP_CHECK: Final = _IP + IPH_CHECK
_ADDRS: Final = _IP + IPH_SADDR
_PORTS_END: Final = _L4 + L4_PORTS_END
_TCP_SEQ, _TCP_ACK, _TCP_WIN = _L4 + TCPH_SEQ, _L4 + TCPH_ACK_SEQ, _L4 + TCPH_WINDOW
_TCP_DOFF, _TCP_FLAGS = _L4 + TCPH_DOFF, _L4 + TCPH_FLAGS
_UDP_LEN: Final = _L4 + UDPH_LEN
_ICMP_ID_END: Final = _L4 + ICMPH_SEQUENCE
_CSUM_AT: Final = {6: _L4 + TCPH_CHECK, 17: _L4 + UDPH_CHECK, 1: _L4 + ICMPH_CHECKSUM}
_ETH_P_IP_BYTES: Final = b"\x08\x00"
_ETH_P_IPV6_BYTES: Final = b"\x86\xdd"
_ETHERTYPE, _ETHERTYPE_END = ETH_PROTO, ETH_PROTO + 2

# the ct status a compiled flow needs on every packet: (status & _MASK) == SEEN_REPLY, and for TCP ASSURED too
_MASK: Final = int(CtStatus.DYING | CtStatus.SEEN_REPLY | CtStatus.FIXED_TIMEOUT | CtStatus.NAT_CLASH)
_WANT: Final = int(CtStatus.SEEN_REPLY)
_ASSURED: Final = int(CtStatus.ASSURED)
_SRC_NAT: Final = int(CtStatus.SRC_NAT)
_DST_NAT: Final = int(CtStatus.DST_NAT)
_ES: Final = TcpState.ESTABLISHED
# enum members as module constants: `Enum.MEMBER` costs a lookup per use
_CTINFO_ESTABLISHED: Final = CtInfo.ESTABLISHED
_CTINFO_ESTABLISHED_REPLY: Final = CtInfo.ESTABLISHED_REPLY
_ESTABLISHED_CTINFO: Final = (_CTINFO_ESTABLISHED, _CTINFO_ESTABLISHED_REPLY)
# flag bytes tcp_error accepts and get_conntrack_index classes as TCP_ACK_SET (no SYN, FIN or RST)
_ACK_ONLY: Final = tuple(_INDEX_BY_BYTE[b] == TCP_ACK_SET and _VALID_BY_BYTE[b] for b in range(256))
_U32: Final = 0xFFFFFFFF


def _diff4(old: int, new: int) -> int:
    """The one's-complement difference `csum_replace4` adds for a 32-bit field (0 only for ~0 → 0)."""
    return ((~old >> 16) & 0xFFFF) + (~old & 0xFFFF) + (new >> 16) + (new & 0xFFFF)


def _diff2(old: int, new: int) -> int:
    """The one's-complement difference `csum_replace2` adds for a 16-bit field."""
    return (~old & 0xFFFF) + new


NatStep = tuple[int, int, int, int]  # one manip: (old address, new address, old port, new port)


def nat_steps(status: int, direction: int, cur: ConnTuple, other: ConnTuple) -> tuple[list[NatStep], ConnTuple]:
    """The manips `nf_nat_packet` applies to a packet of tuple `cur` (the ct's tuple in its direction; `other`
    the other direction's, whose inverse both manips write), in hook order: the DST manip at PREROUTING, then
    the SRC manip at POSTROUTING. Returns the steps and the addresses and ports the packet leaves with (as a
    tuple: src, sport, dst, dport, proto). One definition for both families' plans."""
    src, dst, sport, dport = cur.src, cur.dst, cur.sport, cur.dport
    steps: list[NatStep] = []
    if status & (_DST_NAT if direction == 0 else _SRC_NAT):  # PREROUTING: the DST manip
        steps.append((dst, other.src, dport, other.sport))
        dst, dport = other.src, other.sport
    if status & (_SRC_NAT if direction == 0 else _DST_NAT):  # POSTROUTING: the SRC manip
        steps.append((src, other.dst, sport, other.dport))
        src, sport = other.dst, other.dport
    return steps, ConnTuple(src, sport, dst, dport, cur.proto)


@dataclass(frozen=True, slots=True)
class FlowPlan:
    """One direction of one established flow as the slow path forwarded it: plain data (ints, bytes, strs),
    what an executor needs to forward the flow's next packets without deriving anything again. (Slots, not a
    NamedTuple: the executor reads a dozen fields per packet, and a slot is read 4x faster than a NamedTuple
    field's descriptor.)"""

    proto: int  # 6 (TCP), 17 (UDP) or 1 (ICMP echo)
    direction: int  # the ct direction of the packets (0 ORIGINAL, 1 REPLY): whose tracker state and counters
    ct_id: int  # the ct each packet checks and refreshes
    iif: str  # the device the packets arrive on
    oif: str  # the device they leave by
    nexthop: int  # the route's next hop
    dst_mac: bytes  # the next hop's MAC (offline; with resolve_neighbours the neighbour table says, per packet)
    neigh_synthetic: bool  # dst_mac is natbox's synthetic 02:00:<ipv4> (counted per packet as neigh_synthetic)
    l2: bytes  # the output frame's source MAC and ethertype
    new_addrs: bytes  # saddr, daddr (TCP/UDP: and sport, dport) after both manips, written from the IP saddr on
    icmp_id: bytes  # ICMP echo: the id NAT writes; b"" otherwise
    ip_add: int  # added to the IP checksum mod 0xFFFF: the TTL decrement less NAT's address differences
    l4_sub: int  # subtracted from a full L4 checksum mod 0xFFFF: NAT's differences
    l4_partial_add: int  # added to a partial (CHECKSUM_PARTIAL) L4 checksum: the addresses' differences
    l4_rewrite: bool  # NAT changes the L4 checksum at all
    pseudo: int  # the received packet's pseudo-header sum without its length (for the checksum check)
    csum_at: int  # the L4 checksum's offset in the frame
    mtu: int  # the out device's MTU: a bigger packet must be a GSO packet whose segments fit
    gso_type: int  # the GSO type such a packet must have (GSO_TCPV4, GSO_UDP_L4; 0: none allowed)
    fib_gen: int  # valid while the FIB generation,
    rules_version: int  # the ruleset version
    neigh_gen: int  # and the neighbour table's generation are these
    # the packets' addresses and ports (ICMP echo: addresses, type, code, id) as the flow key holds them
    # (family.flow_key): what a kernel data path matches on (natbox/offload/entry.py)
    match: bytes = b""
    family: int = NFPROTO_IPV4  # NFPROTO_IPV4, or NFPROTO_IPV6 (engine/fastpath6.py: no IP checksum, ip_add 0)

    def as_dict(self) -> dict[str, int | str | bool]:
        """The plan as JSON-ready data: bytes as hex strings."""
        return {f.name: v.hex() if isinstance(v := getattr(self, f.name), bytes) else v for f in fields(self)}


class CompiledFlow:
    """A plan and the live objects its executor checks: the ct, its TCP state, the devices."""

    __slots__ = ("conn", "dev", "out", "plan", "tcp")

    def __init__(self, plan: FlowPlan, conn: Conn, tcp: TcpConntrack | None, dev: Interface, out: Interface) -> None:
        self.plan = plan
        self.conn = conn
        self.tcp = tcp
        self.dev = dev
        self.out = out


NeighMac = Callable[[Interface, int], tuple[bytes, bool]]


class FlowCache:
    """The compiled flows of one engine: `compile` makes plans, `forward` executes them."""

    def __init__(self, host: Host, fib: Fib | Fib6, cfg: ConntrackConfig, hooks: Hooks, neighs: NeighTable[Held],
                 state: PathState, neigh_mac: NeighMac, *, resolve_neighbours: bool) -> None:
        self.flows: dict[FlowKey, CompiledFlow] = {}
        self._fib, self._host, self._cfg, self._hooks, self._neighs = fib, host, cfg, hooks, neighs
        self._st = state
        self._neigh_mac = neigh_mac
        self._resolve = resolve_neighbours
        # flows seen once, to be compiled at their next packet (at most FLOW_CACHE_MAX; emptied when full)
        self._seen: dict[FlowKey, Conn] = {}
        # the keys of each ct in flows or _seen (forget() finds them): a tuple, one or two keys for most cts
        self._by_ct: dict[int, tuple[FlowKey, ...]] = {}
        # the flow key of the frame the last `forward` call declined: the slow path's tier 2 uses it instead
        # of deriving the same key again (Engine.receive hands it over)
        self.miss_key: FlowKey | None = None
        # called after `compile` made or found current the plan of a packet's flow (the engine's flow offload,
        # engine/offload.py, decides there as nft_flow_offload_eval does); None unless offloading
        self.on_compiled: Callable[[Skb, Conn], None] | None = None
        self._compilable = hooks.compilable  # whether nothing but conntrack and nat sees a forwarded packet
        # the IPv6 compiled flows (engine/fastpath6.py), bound by the engine: `forward` hands them IPv6 frames
        self.v6: FlowCache | None = None
        # offloading while other tables see forwarded packets: plans for the datapath only, never run here
        # (the kernel's flowtable skips every chain too); bounded and forgotten like `flows`
        self.planned: dict[FlowKey, CompiledFlow] = {}
        # False: a kernel datapath's executor (`datapath()`), which runs no conntrack step
        self.track = True

    def datapath(self) -> FlowCache:
        """A second executor of the same plans with a kernel datapath's semantics, for the offline model of
        `--offload` (engine/offload_model.py): its `flows` are what the datapath holds; it runs no conntrack
        step (the flowtable's packets bypass the tracker: no refresh, no counters, no window check, no ASSURED
        to set; the caller counts and folds) and verifies no L4 checksum (nor does natbox_offload.bpf.c)."""
        dp = FlowCache(self._host, self._fib, ConntrackConfig(checksum=False), self._hooks, self._neighs, self._st,
                       self._neigh_mac, resolve_neighbours=self._resolve)
        dp.track = False
        return dp

    def compiled_of(self, ct: Conn) -> list[tuple[FlowKey, CompiledFlow]]:
        """The compiled flows of `ct` (one per direction at most), with their keys."""
        version = self._ruleset_version()
        found = []
        for key in self._by_ct.get(ct.ct_id, ()):
            mine = [f for f in (self.planned.get(key), self.flows.get(key)) if f is not None and f.conn is ct]
            if mine:  # the plan made under the current ruleset, if one was
                found.append((key, next((f for f in mine if f.plan.rules_version == version), mine[0])))
        return found

    def _link(self, key: FlowKey, conn: Conn) -> None:
        by_ct = self._by_ct
        keys = by_ct.get(conn.ct_id, ())
        if key not in keys:
            by_ct[conn.ct_id] = (*keys, key)

    def forget(self, ct: Conn) -> None:
        """Drop the compiled flows (and flows seen once) of a destroyed ct (its `register_destroy` callback)."""
        keys = self._by_ct.pop(ct.ct_id, None)
        if keys is None:
            return
        flows, seen, planned = self.flows, self._seen, self.planned
        for key in keys:
            flow = flows.get(key)
            if flow is not None and flow.conn is ct:
                del flows[key]
            if seen.get(key) is ct:
                del seen[key]
            flow = planned.get(key)
            if flow is not None and flow.conn is ct:
                del planned[key]

    def _ruleset_version(self) -> int:
        """The version of the ruleset the plans are made under (FlowCache6: the ip6tables one)."""
        return self._hooks.rules.version

    def _current(self, flow: CompiledFlow) -> bool:
        plan = flow.plan
        return (plan.fib_gen == self._fib.generation and plan.rules_version == self._hooks.rules.version
                and plan.neigh_gen == self._neighs.generation and plan.mtu == flow.out.mtu)

    def compile(self, skb: Skb, key: FlowKey) -> None:
        """Compile the flow of `skb`, which the slow path has just forwarded as an ESTABLISHED packet.

        Does nothing when the flow is not eligible (see the module docstring)."""
        conn = skb.ct
        if conn is None or skb.ctinfo not in _ESTABLISHED_CTINFO or skb.frag_max_size:
            return
        if conn.synproxy is not None:
            return  # SYNPROXY's seqadj and timestamp offsets (engine/synproxy.py): no plan applies them
        if conn.tcp is not None and conn.tcp.state != _ES:
            return  # opening or closing: a compiled flow would not be used (tier 2 compiles it later)
        known = self.flows.get(key)
        if known is not None and known.conn is conn and self._current(known):
            if self.on_compiled is not None:
                self.on_compiled(skb, conn)
            return  # compiled already and current
        flows = self.flows
        if not self._compilable():  # something besides conntrack and nat would see the packets
            if self.on_compiled is None:
                return
            flows = self.planned  # offloading: a plan for the datapath only
            known = flows.get(key)
            if known is not None and known.conn is conn and self._current(known):
                self.on_compiled(skb, conn)
                return
        if (known is None or known.conn is not conn) and (self.on_compiled is None
                                                          or skb.ctinfo == _CTINFO_ESTABLISHED):
            # a new flow is compiled at its second ESTABLISHED packet in this direction: a connection
            # that closes right after its handshake (most of a busy server's) never pays for it. (Offloading,
            # a reply direction at its first: a one-way flow may have one reply only, iperf3's UDP connect
            # reply, and the kernel offloads it all the same, nft_flow_route routing both directions.)
            seen = self._seen
            if seen.get(key) is not conn:
                if len(seen) >= FLOW_CACHE_MAX:
                    seen.clear()
                seen[key] = conn
                self._link(key, conn)
                return
            del seen[key]
        dev = self._host.interfaces.get(key[0])
        out = self._host.interfaces.get(skb.oif)
        if dev is None or out is None or out.kind == "loopback":
            return
        plan = self._plan(skb, key, conn, dev, out)
        if plan is None:
            return
        if len(flows) >= FLOW_CACHE_MAX and key not in flows:
            del flows[next(iter(flows))]
        flows[key] = CompiledFlow(plan, conn, conn.tcp if plan.proto == 6 else None, dev, out)
        self._link(key, conn)
        if self.on_compiled is not None:
            self.on_compiled(skb, conn)

    def _plan(self, skb: Skb, key: FlowKey, conn: Conn, dev: Interface, out: Interface) -> FlowPlan | None:
        """The plan of `skb`'s flow direction from the slow path's decisions (None: not compilable)."""
        proto = key[2]
        direction = 1 if skb.ctinfo == _CTINFO_ESTABLISHED_REPLY else 0
        cur = conn.tuples[direction]
        if cur.proto != proto or proto not in (1, 6, 17):
            return None
        addrs = cur.src.to_bytes(4, "big") + cur.dst.to_bytes(4, "big")
        if proto == 1:  # echo: the tuple's sport is the id, dport the type and code (icmp_pkt_to_tuple)
            if (cur.dport >> 8 not in (0, 8)
                    or key[3] != addrs + cur.dport.to_bytes(2, "big") + cur.sport.to_bytes(2, "big")):
                return None
        elif key[3] != addrs + cur.sport.to_bytes(2, "big") + cur.dport.to_bytes(2, "big"):
            return None
        if direction == 0 and conn.masq_index is not None and conn.masq_index != skb.oif:
            return None  # nf_nat_oif_changed would kill it: the slow path's business
        other = conn.tuples[1 - direction]  # its inverse is what both manips write (nf_nat_packet)
        steps, after = nat_steps(int(conn.status), direction, cur, other)
        src, dst, sport, dport = after.src, after.dst, after.sport, after.dport
        icmp_id = cur.sport
        ip_diff = l4_diff = 0
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
                return None
            ip_diff += d4
        new_addrs = src.to_bytes(4, "big") + dst.to_bytes(4, "big")
        if proto != 1:
            new_addrs += sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
        pseudo = (cur.src >> 16) + (cur.src & 0xFFFF) + (cur.dst >> 16) + (cur.dst & 0xFFFF) + proto
        dst_mac, synthetic = (b"", False) if self._resolve else self._neigh_mac(out, skb.nexthop)
        return FlowPlan(
            proto, direction, conn.ct_id, dev.name, out.name, skb.nexthop, dst_mac, synthetic,
            out.mac + _ETH_P_IP_BYTES, new_addrs, icmp_id.to_bytes(2, "big") if proto == 1 else b"",
            (0x100 - ip_diff) % 0xFFFF, l4_diff % 0xFFFF, ip_diff % 0xFFFF, bool(steps), pseudo, _CSUM_AT[proto],
            out.mtu, GSO_TCPV4 if proto == 6 else GSO_UDP_L4 if proto == 17 else 0,
            self._fib.generation, self._hooks.rules.version, self._neighs.generation, key[3])

    def forward(self, frame: bytes | bytearray | memoryview, iface: str, now: float, gso_type: int = 0,
                gso_size: int = 0, partial: bool = False) -> Output | None:
        """Execute the plan of `frame`'s flow if there is one and nothing about the packet is unusual; else
        None, with nothing changed (not even the packet counter), and the caller takes the slow path.

        A GSO super-packet (`gso_size`) is forwarded whole when its segments fit the MTU; a partial checksum
        (`partial`) is not verified and is updated for the address changes only, as `nf_ip_checksum` and
        `inet_proto_csum_replace4` treat CHECKSUM_PARTIAL. A large frame given as a memoryview is not copied:
        its headers are (HEAD_LEN bytes: every header byte the checks read, as IHL is 5 and TCP options end by
        byte 94), and the TCP/UDP payload leaves as `Emitted.tail`, a view of the same buffer. (`track` False,
        `datapath()`: no conntrack step.)"""
        view: memoryview | None = None
        if type(frame) is not bytes:
            if type(frame) is memoryview and len(frame) > VIEW_MIN:
                view = frame
                frame = bytes(view[:HEAD_LEN])
            else:
                frame = bytes(frame)
        key = self.miss_key = flow_key(frame, iface)
        if key is None:
            v6 = self.v6
            if v6 is not None and frame[_ETHERTYPE:_ETHERTYPE_END] == _ETH_P_IPV6_BYTES:
                return v6.forward(frame if view is None else view, iface, now, gso_type, gso_size, partial)
            return None
        flow = self.flows.get(key)
        if flow is None:
            return None
        src = frame if view is None else view  # the whole frame, for what lies past the headers
        plan = flow.plan
        conn = flow.conn
        out = flow.out
        if (conn.status & _MASK != _WANT or now >= conn.timeout or plan.fib_gen != self._fib.generation
                or plan.rules_version != self._hooks.rules.version or plan.mtu != out.mtu):
            return None
        dev = flow.dev
        forwarding = dev.forwarding
        if forwarding is None:
            forwarding = self._host.ip_forward
        # ip_rcv_core (tot_len within the frame; the header's words, checksum included, read as one integer w sum
        # to w mod 0xFFFF, RFC 1071: w != 0 and w ≡ 0) and ip_forward (TTL > 1, forwarding on, devices up)
        tot_len = (frame[_TOT_LEN] << 8) | frame[_TOT_LEN + 1]
        if (not IPH_MIN_LEN <= tot_len <= len(src) - _IP or frame[_TTL] <= 1 or not forwarding or not dev.up
                or not out.up or not (w := int.from_bytes(frame[_IP:_L4], "big")) or w % 0xFFFF):
            return None
        end = _IP + tot_len
        mtu = plan.mtu
        whole = tot_len > mtu
        if whole and not (gso_size and gso_type):
            return None
        if self._resolve:  # neigh_output: an unresolved next hop is the slow path's (it queues)
            dst_mac = self._neighs.lookup(plan.oif, plan.nexthop, now)
            if dst_mac is None:
                return None
        elif plan.neigh_gen == self._neighs.generation:
            dst_mac = plan.dst_mac
        else:
            return None
        cfg = self._cfg
        seg_len = tot_len - IPH_MIN_LEN
        csum_at = plan.csum_at
        after_csum = csum_at + _CHECK_LEN
        tcp = flow.tcp
        proto = plan.proto
        if proto == 1:
            # icmpv4_error for a query: 8 bytes, a valid checksum (on the whole message), not an error type
            # (the key holds the type); then nf_conntrack_icmp_packet: refresh to icmp_timeout
            if seg_len < ICMPH_LEN or whole:
                return None
            if cfg.checksum:
                total = int.from_bytes(src[_L4:end], "big") << (seg_len & 1) * 8
                if not total or total % 0xFFFF:
                    return None
            check = (frame[csum_at] << 8) | frame[csum_at + 1]
            if plan.l4_rewrite:
                check = (check - plan.l4_sub) % 0xFFFF
            if self.track:
                conn.timeout = now + cfg.icmp_timeout
                if cfg.acct:
                    conn.acct_packets[plan.direction] += 1
                    conn.acct_bytes[plan.direction] += tot_len
        elif tcp is not None:
            if tcp.state != _ES or seg_len < TCPH_MIN_LEN or not conn.status & _ASSURED:
                return None
            check = (frame[csum_at] << 8) | frame[csum_at + 1]
            doff = (frame[_TCP_DOFF] >> 4) * 4
            if doff < TCPH_MIN_LEN or seg_len < doff or not _ACK_ONLY[frame[_TCP_FLAGS]]:
                return None
            if whole and (gso_type != plan.gso_type or not gso_fits(IPH_MIN_LEN + doff + gso_size, mtu)):
                return None  # skb_gso_validate_network_len fails: the slow path segments or refuses it
            if cfg.checksum and not partial and (
                    plan.pseudo + seg_len + (int.from_bytes(src[_L4:end], "big") << (seg_len & 1) * 8)) % 0xFFFF:
                return None
            seq = int.from_bytes(frame[_TCP_SEQ:_TCP_SEQ + 4], "big")
            if self.track and not tcp_packet_established(conn, tcp, plan.direction, frame, _L4, doff, seq,
                                                         int.from_bytes(frame[_TCP_ACK:_TCP_ACK + 4], "big"),
                                                         (frame[_TCP_WIN] << 8) | frame[_TCP_WIN + 1],
                                                         (seq + seg_len - doff) & _U32, tot_len, now, cfg):
                return None
            if plan.l4_rewrite:
                if partial:
                    check = (check + plan.l4_partial_add - 1) % 0xFFFF + 1
                else:
                    check = (check - plan.l4_sub) % 0xFFFF
        else:
            if seg_len < UDPH_LEN_BYTES:
                return None
            check = (frame[csum_at] << 8) | frame[csum_at + 1]
            ulen = (frame[_UDP_LEN] << 8) | frame[_UDP_LEN + 1]
            if ulen > seg_len or ulen < UDPH_LEN_BYTES:
                return None
            if whole and (gso_type != plan.gso_type or not gso_fits(IPH_MIN_LEN + UDPH_LEN_BYTES + gso_size, mtu)):
                return None
            if partial:
                if plan.l4_rewrite:
                    check = (check + plan.l4_partial_add - 1) % 0xFFFF + 1
            elif check:
                if cfg.checksum and (plan.pseudo + seg_len
                                     + (int.from_bytes(src[_L4:end], "big") << (seg_len & 1) * 8)) % 0xFFFF:
                    return None
                if plan.l4_rewrite:
                    check = (check - plan.l4_sub) % 0xFFFF or 0xFFFF
            if self.track:
                if not conn.status & _ASSURED and now > conn.start + STREAM_DELAY:
                    return None  # this packet makes the ct ASSURED (an event): the slow path's business
                udp_packet_seen_reply(conn, plan.direction, tot_len, now, cfg)
        # committed: the packet leaves
        st = self._st
        pkt_id = st.next_pkt_id
        st.next_pkt_id = pkt_id + 1
        if plan.neigh_synthetic:
            st.stats["neigh_synthetic"] += 1
        ipcheck = (((frame[_IP_CHECK] << 8) | frame[_IP_CHECK + 1]) + plan.ip_add) % 0xFFFF
        ip_head = bytes((frame[_TTL] - 1, proto, ipcheck >> 8, ipcheck & 0xFF))
        if proto == 1:
            data = b"".join((dst_mac, plan.l2, frame[_IP:_TTL], ip_head, plan.new_addrs, frame[_L4:csum_at],
                             bytes((check >> 8, check & 0xFF)), plan.icmp_id, src[_ICMP_ID_END:end]))
            return Output([Emitted(plan.oif, data, pkt_id, conn.ct_id, 0, 0, False)], [], [], [], [])
        if view is not None:  # the headers are copied (to the end of the TCP/UDP header), the payload stays
            l4_end = _L4 + ((frame[_TCP_DOFF] >> 4) * 4 if tcp is not None else UDPH_LEN_BYTES)
            data = b"".join((dst_mac, plan.l2, frame[_IP:_TTL], ip_head, plan.new_addrs, frame[_PORTS_END:csum_at],
                             bytes((check >> 8, check & 0xFF)), frame[after_csum:l4_end]))
            return Output([Emitted(plan.oif, data, pkt_id, conn.ct_id, gso_type if whole else 0,
                                   gso_size if whole else 0, partial, view[l4_end:end])], [], [], [], [])
        data = b"".join((dst_mac, plan.l2, frame[_IP:_TTL], ip_head, plan.new_addrs, frame[_PORTS_END:csum_at],
                         bytes((check >> 8, check & 0xFF)),
                         frame[after_csum:end] if end < 1024 else memoryview(frame)[after_csum:end]))  # a view:
        # a 64 KiB GSO payload is copied once (for a small one, slicing is cheaper than making the view)
        if whole:
            return Output([Emitted(plan.oif, data, pkt_id, conn.ct_id, gso_type, gso_size, partial)], [], [], [], [])
        return Output([Emitted(plan.oif, data, pkt_id, conn.ct_id, 0, 0, partial)], [], [], [], [])
