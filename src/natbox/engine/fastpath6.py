"""Compiled flows for IPv6: established TCP, UDP and ICMPv6 echo flows, plain forwarded or through NAT66.

The same contract as engine/fastpath.py (read its docstring first): the slow path makes a `FlowPlan` (plain
data, `family` NFPROTO_IPV6) from its decisions for a flow direction, and `FlowCache6.forward` executes it
doing only the per-packet checks, in the kernel's order, and one join of byte strings; anything unusual
returns None before changing anything and the slow path takes the packet from the start. The bookkeeping
(when a flow is compiled, bounds, `forget` on ct destruction) is `FlowCache`'s; the manips a plan writes
are `fastpath.nat_steps`; the TCP and UDP steps are conntrack/proto's `tcp_packet_established` and
`udp_packet_seen_reply`, the ICMPv6 refresh `nf_ct_refresh_acct`, the header checks engine/checks.py's
`ip6_forward_ok`. `tests/engine/test_compiled_flows6.py` runs traffic with and without it and compares.

| per-packet check (kernel function)                                    | otherwise                         |
|-----------------------------------------------------------------------|-----------------------------------|
| IPv6 with TCP, UDP or ICMPv6 echo right after the fixed header        | slow path: extension headers,     |
| (`flow_key6`; the addresses, fixed by the key, passed ip6_rcv_core's  | fragments (defrag), jumbograms    |
| and ip6_forward's address checks when the flow was compiled)          |                                   |
| 40 + payload_len within the frame (ip6_rcv_core), hop limit > 1       | slow path: Time Exceeded, drops   |
| fits the out MTU, or a GSO packet of the flow's type whose segments   | slow path: Packet Too Big         |
| fit (ip6_pkt_too_big, skb_gso_validate_network_len)                   |                                   |
| (compile time) leaves by another device than it came in on          | slow path: redirects (hairpin)    |
| ct alive, SEEN_REPLY, no FIXED_TIMEOUT or NAT_CLASH                   | slow path looks it up             |
| TCP: ESTABLISHED, ASSURED, an ACK, header and checksum valid, in window | slow path                       |
| UDP: length valid, a non-zero checksum (RFC 8200 §8.1) that is valid;  | slow path                         |
| no ASSURED to set now                                                 |                                   |
| ICMPv6: 8 bytes, checksum valid (nf_conntrack_icmpv6_error)           | slow path                         |
| FIB6, ip6tables ruleset, neighbours, MTU unchanged; forwarding, links up | slow path                      |

Differences from IPv4: no header checksum (the hop limit is decremented, nothing else in the fixed header
changes); the L4 checksums cover a pseudo-header of 128-bit addresses, the ICMPv6 one too, so NAT66's
address change updates the ICMPv6 checksum as well (`csum_replace16`, which maps a checksum c to
(c - d) mod 0xFFFF for the difference d of the 16-bit word sums, like `csum_replace4`); the MTU is at least
1280 (a flow leaving by a device with a smaller MTU is not compiled). A UDP datagram with a zero checksum is
invalid in IPv6 and always left to the slow path. GSO super-packets and CHECKSUM_PARTIAL packets are
forwarded as IPv4's executor forwards them (and as the slow path's ip6_output passes them on): whole when
their segments fit, a partial checksum not verified and updated for the address changes only
(`inet_proto_csum_replace16(..., pseudohdr=true)`), a long frame given as a memoryview copied only up to
its TCP/UDP header (`Emitted.tail` is the rest, a view of the same buffer).

Compilable: a flow leaves through no table but conntrack and nat (`_compilable6`, the ip6tables ruleset's
view of `Hooks.tier2_plan`): raw PREROUTING, mangle PREROUTING/FORWARD/POSTROUTING, filter and security
FORWARD absent, conntrack registered. Without an ip6tables nat table NAT66 is not registered and the plan
rewrites nothing (plain forwarding of a tracked flow).
"""

from __future__ import annotations

from typing import Final

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.conn import Conn
from natbox.conntrack.proto.generic import nf_ct_refresh_acct
from natbox.conntrack.proto.tcp import tcp_packet_established
from natbox.conntrack.proto.udp import STREAM_DELAY, udp_packet_seen_reply
from natbox.engine.checks import gso_fits, ip6_forward_ok
from natbox.engine.family import FlowKey, flow_key6
from natbox.engine.fastpath import (  # the per-packet constants and csum step IPv4's executor defines
    _ACK_ONLY,
    _ASSURED,
    _CHECK_LEN,
    _ES,
    _MASK,
    _U32,
    _WANT,
    HEAD_LEN,
    VIEW_MIN,
    CompiledFlow,
    FlowCache,
    FlowPlan,
    NeighMac,
    _diff2,
    nat_steps,
)
from natbox.engine.hooks import Hooks
from natbox.engine.host import Host, Interface
from natbox.engine.neigh import NeighTable
from natbox.engine.output import Emitted, Output
from natbox.engine.path import Held, PathState
from natbox.engine.route6 import Fib6
from natbox.netfilter import NFPROTO_IPV6, CtInfo, CtStatus, Hook
from natbox.rules.evaluate import Ruleset
from natbox.skb import PacketType, Skb
from natbox.wire.gso import GSO_TCPV6, GSO_UDP_L4
from natbox.wire.ipv6 import IPV6_MIN_MTU
from natbox.wire.layout import (
    ETH_HDR_LEN,
    ICMP6H_CKSUM,
    ICMP6H_LEN,
    ICMP6H_SEQUENCE,
    IP6H_HOP_LIMIT,
    IP6H_LEN,
    IP6H_SADDR,
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

__all__ = ["FlowCache6"]


# where things are in an Ethernet frame carrying IPv6 with no extension header (the only kind a plan covers)
_IP: Final = ETH_HDR_LEN
_L4: Final = ETH_HDR_LEN + IP6H_LEN
_HOP: Final = _IP + IP6H_HOP_LIMIT
_ADDRS: Final = _IP + IP6H_SADDR
_PORTS_END: Final = _L4 + L4_PORTS_END
_TCP_SEQ, _TCP_ACK, _TCP_WIN = _L4 + TCPH_SEQ, _L4 + TCPH_ACK_SEQ, _L4 + TCPH_WINDOW
_TCP_DOFF, _TCP_FLAGS = _L4 + TCPH_DOFF, _L4 + TCPH_FLAGS
_UDP_LEN: Final = _L4 + UDPH_LEN
_ICMP_ID_END: Final = _L4 + ICMP6H_SEQUENCE
_CSUM_AT: Final = {6: _L4 + TCPH_CHECK, 17: _L4 + UDPH_CHECK, 58: _L4 + ICMP6H_CKSUM}
_ETH_P_IPV6_BYTES: Final = b"\x86\xdd"

_NAT_BITS: Final = int(CtStatus.SRC_NAT | CtStatus.DST_NAT)
_M128: Final = (1 << 128) - 1
_PKT_HOST: Final = PacketType.HOST
_PRE, _FWD, _POST = Hook.PRE_ROUTING, Hook.FORWARD, Hook.POST_ROUTING


def _diff16(old: int, new: int) -> int:
    """The one's-complement difference `csum_replace16` adds for a 128-bit address (nat/manip6.py): the
    complement's and the new value's word sums, each taken mod 0xFFFF (0 only when both are 0)."""
    return (old ^ _M128) % 0xFFFF + new % 0xFFFF


class FlowCache6(FlowCache):
    """The IPv6 compiled flows of one engine: `compile6` makes plans (with `FlowCache`'s bookkeeping),
    `forward` executes them. Stamped with the FIB6, the ip6tables ruleset and the ND table's generation."""

    def __init__(self, host: Host, fib6: Fib6, cfg: ConntrackConfig, hooks: Hooks, neighs6: NeighTable[Held],
                 state: PathState, neigh_mac: NeighMac, *, resolve_neighbours: bool) -> None:
        super().__init__(host, fib6, cfg, hooks, neighs6, state, neigh_mac, resolve_neighbours=resolve_neighbours)
        self._fib6 = fib6
        self._compilable = self._compilable6
        self._rules: Ruleset | None = None  # the ip6tables ruleset the plans were made under
        self._view: tuple[Ruleset | None, int, bool] = (None, -1, False)

    def _compilable6(self) -> bool:
        """`Hooks.compilable` for the ip6tables ruleset (see the module docstring), once per ruleset version."""
        rules = self._hooks.rules6
        cached, version, ok = self._view
        if cached is rules and version == rules.version:
            return ok
        ok = (rules.needs_conntrack() and rules.is_trivial("raw", _PRE) and rules.is_trivial("mangle", _PRE)
              and rules.is_trivial("mangle", _FWD) and rules.is_trivial("filter", _FWD)
              and rules.is_trivial("security", _FWD) and rules.is_trivial("mangle", _POST))
        self._view = (rules, rules.version, ok)
        return ok

    def _ruleset_version(self) -> int:
        return self._hooks.rules6.version

    def datapath(self) -> FlowCache:
        """`FlowCache.datapath` for IPv6: the same plans executed with a kernel datapath's semantics (no
        conntrack step, no L4 checksum verified), for the offline model of `--offload`; its plans are taken
        as made under the current ip6tables ruleset (`current_ruleset`)."""
        dp = FlowCache6(self._host, self._fib6, ConntrackConfig(checksum=False), self._hooks, self._neighs, self._st,
                        self._neigh_mac, resolve_neighbours=self._resolve)
        dp.track = False
        dp.current_ruleset()
        return dp

    def current_ruleset(self) -> None:
        """Take the engine's ip6tables ruleset object as the one the plans were made under (the offline model
        re-stamps its plans: a datapath's entries do not depend on the rules)."""
        self._rules = self._hooks.rules6

    def _current(self, flow: CompiledFlow) -> bool:
        plan = flow.plan
        rules = self._hooks.rules6
        return (rules is self._rules and plan.fib_gen == self._fib6.generation and plan.rules_version == rules.version
                and plan.neigh_gen == self._neighs.generation and plan.mtu == flow.out.mtu)

    def compile6(self, skb: Skb) -> None:
        """Compile the flow of `skb`, an IPv6 packet the slow path has just forwarded (`Ip6Input.ip6_forward`
        after the output). Its key is the one `flow_key6` gives the flow's frames as received: the Ethernet
        header the packet came with and its tuple (the packet before NAT)."""
        conn = skb.ct
        if (conn is None or not skb.src_mac or skb.pkt_type != _PKT_HOST or skb.ctinfo not in
                (CtInfo.ESTABLISHED, CtInfo.ESTABLISHED_REPLY)) or conn.synproxy is not None:
            return  # (a SYNPROXY ct: its seqadj and timestamp offsets are the slow path's, engine/synproxy.py)
        if self.on_compiled is None and not self._compilable6():  # (before making the key: the slow path
            return  # calls this for every packet; offloading, `compile` makes plans for the datapath only)
        cur = conn.tuples[1 if skb.ctinfo == CtInfo.ESTABLISHED_REPLY else 0]
        proto = cur.proto
        addrs = cur.src.to_bytes(16, "big") + cur.dst.to_bytes(16, "big")
        if proto == 58:
            if cur.dport >> 8 not in (128, 129):
                return
            l4 = cur.dport.to_bytes(2, "big") + cur.sport.to_bytes(2, "big")
        elif proto in (6, 17):
            l4 = cur.sport.to_bytes(2, "big") + cur.dport.to_bytes(2, "big")
        else:
            return
        rules = self._hooks.rules6
        if rules is not self._rules:  # another ruleset object: its version says nothing about the old one's
            self.flows.clear()
            self.planned.clear()
            self._rules = rules
        self.compile(skb, (skb.iif, skb.dst_mac + skb.src_mac + _ETH_P_IPV6_BYTES, proto, addrs + l4))

    def _plan(self, skb: Skb, key: FlowKey, conn: Conn, dev: Interface, out: Interface) -> FlowPlan | None:
        """The plan of `skb`'s flow direction from the slow path's decisions (None: not compilable)."""
        proto = key[2]
        direction = 1 if skb.ctinfo == CtInfo.ESTABLISHED_REPLY else 0
        cur = conn.tuples[direction]
        if cur.proto != proto or out.mtu < IPV6_MIN_MTU or dev.kind == "loopback":
            return None
        if dev is out:
            return None  # in == out: ip6_forward sends paced redirects, the slow path's business
        if direction == 0 and conn.masq_index is not None and conn.masq_index != skb.oif:
            return None  # nf_nat_oif_changed would kill it: the slow path's business
        other = conn.tuples[1 - direction]
        rules = self._hooks.rules6
        # NAT66 runs only while an ip6tables nat table exists (Hooks6._nat)
        status = int(conn.status) if "nat" in rules.present else int(conn.status) & ~_NAT_BITS
        steps, after = nat_steps(status, direction, cur, other)
        l4_diff = addr_diff = 0
        icmp_id = cur.sport
        for old_addr, new_addr, old_port, new_port in steps:
            d16 = _diff16(old_addr, new_addr)
            if proto == 58:  # icmpv6_manip_pkt: the address (pseudo-header), then the echo id
                d2 = _diff2(icmp_id, other.sport)
                icmp_id = other.sport
            else:
                d2 = _diff2(old_port, new_port)
            if not d16 or not d2:
                return None
            l4_diff += d16 + d2
            addr_diff += d16
        new_addrs = after.src.to_bytes(16, "big") + after.dst.to_bytes(16, "big")
        if proto != 58:
            new_addrs += after.sport.to_bytes(2, "big") + after.dport.to_bytes(2, "big")
        pseudo = (cur.src + cur.dst) % 0xFFFF + proto  # the pseudo-header without its length, mod 0xFFFF
        nexthop = skb.nexthop or skb.daddr
        dst_mac, synthetic = (b"", False) if self._resolve else self._neigh_mac(out, nexthop)
        return FlowPlan(
            proto, direction, conn.ct_id, dev.name, out.name, nexthop, dst_mac, synthetic,
            out.mac + _ETH_P_IPV6_BYTES, new_addrs, icmp_id.to_bytes(2, "big") if proto == 58 else b"",
            0, l4_diff % 0xFFFF, addr_diff % 0xFFFF, bool(steps), pseudo, _CSUM_AT[proto], out.mtu,
            GSO_TCPV6 if proto == 6 else GSO_UDP_L4 if proto == 17 else 0,
            self._fib6.generation, rules.version, self._neighs.generation, key[3], NFPROTO_IPV6)

    def forward(self, frame: bytes | bytearray | memoryview, iface: str, now: float, gso_type: int = 0,
                gso_size: int = 0, partial: bool = False) -> Output | None:
        """Execute the plan of `frame`'s IPv6 flow if there is one and nothing about the packet is unusual;
        else None, with nothing changed, and the caller takes the slow path (see the module docstring). GSO,
        partial checksums and memoryview frames as `FlowCache.forward` takes them."""
        view: memoryview | None = None
        if type(frame) is not bytes:
            if type(frame) is memoryview and len(frame) > VIEW_MIN:
                view = frame
                frame = bytes(view[:HEAD_LEN])  # the fixed header and TCP with options end by byte 114
            else:
                frame = bytes(frame)
        src = frame if view is None else view  # the whole frame, for what lies past the headers
        key = self.miss_key = flow_key6(frame, iface)
        if key is None:
            return None
        flow = self.flows.get(key)
        if flow is None:
            return None
        plan = flow.plan
        conn = flow.conn
        out = flow.out
        rules = self._hooks.rules6
        if (conn.status & _MASK != _WANT or now >= conn.timeout or plan.fib_gen != self._fib6.generation
                or rules is not self._rules or plan.rules_version != rules.version or plan.mtu != out.mtu):
            return None
        dev = flow.dev
        tot_len = ip6_forward_ok(frame[_IP:_L4], len(src) - _IP)
        if not tot_len or not self._host.ipv6_forward or not dev.up or not out.up:
            return None  # ip6_rcv_core, ip6_forward (hop limit), forwarding, links
        mtu = plan.mtu
        whole = tot_len > mtu  # ip6_pkt_too_big unless a GSO packet whose segments fit (checked below)
        if whole and not (gso_size and gso_type):
            return None
        end = _IP + tot_len
        if self._resolve:  # neigh_output: an unresolved next hop is the slow path's (it queues)
            dst_mac = self._neighs.lookup(plan.oif, plan.nexthop, now)
            if dst_mac is None:
                return None
        elif plan.neigh_gen == self._neighs.generation:
            dst_mac = plan.dst_mac
        else:
            return None
        cfg = self._cfg
        seg_len = tot_len - IP6H_LEN
        csum_at = plan.csum_at
        check = (frame[csum_at] << 8) | frame[csum_at + 1]
        tcp = flow.tcp
        proto = plan.proto
        if proto == 58:
            # nf_conntrack_icmpv6_error for an echo: 8 bytes, a valid checksum (pseudo-header included); then
            # nf_conntrack_icmpv6_packet: refresh to icmpv6_timeout (a partial checksum, unusual here: the slow path)
            if seg_len < ICMP6H_LEN or whole or partial or (cfg.checksum and (
                    plan.pseudo + seg_len + (int.from_bytes(src[_L4:end], "big") << (seg_len & 1) * 8)) % 0xFFFF):
                return None
            if plan.l4_rewrite:
                check = (check - plan.l4_sub) % 0xFFFF
            if self.track:
                nf_ct_refresh_acct(conn, plan.direction, tot_len, cfg.icmpv6_timeout, now, cfg.acct)
        elif tcp is not None:
            if tcp.state != _ES or seg_len < TCPH_MIN_LEN or not conn.status & _ASSURED:
                return None
            doff = (frame[_TCP_DOFF] >> 4) * 4
            if doff < TCPH_MIN_LEN or seg_len < doff or not _ACK_ONLY[frame[_TCP_FLAGS]]:
                return None
            if whole and (gso_type != plan.gso_type or not gso_fits(IP6H_LEN + doff + gso_size, mtu)):
                return None  # ip6_pkt_too_big: the slow path sends Packet Too Big
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
                check = (check + plan.l4_partial_add - 1) % 0xFFFF + 1 if partial else (check - plan.l4_sub) % 0xFFFF
        else:
            if seg_len < UDPH_LEN_BYTES or not check:
                return None
            ulen = (frame[_UDP_LEN] << 8) | frame[_UDP_LEN + 1]
            if ulen > seg_len or ulen < UDPH_LEN_BYTES:
                return None
            if whole and (gso_type != plan.gso_type or not gso_fits(IP6H_LEN + UDPH_LEN_BYTES + gso_size, mtu)):
                return None
            if cfg.checksum and not partial and (
                    plan.pseudo + seg_len + (int.from_bytes(src[_L4:end], "big") << (seg_len & 1) * 8)) % 0xFFFF:
                return None
            track = self.track
            if track and not conn.status & _ASSURED and now > conn.start + STREAM_DELAY:
                return None  # this packet makes the ct ASSURED (an event): the slow path's business
            if plan.l4_rewrite:
                if partial:
                    check = (check + plan.l4_partial_add - 1) % 0xFFFF + 1
                else:
                    check = (check - plan.l4_sub) % 0xFFFF or 0xFFFF  # CSUM_MANGLED_0
            if track:
                udp_packet_seen_reply(conn, plan.direction, tot_len, now, cfg)
        # committed: the packet leaves, its hop limit decremented (ip6_forward), NATed
        st = self._st
        pkt_id = st.next_pkt_id
        st.next_pkt_id = pkt_id + 1
        if plan.neigh_synthetic:
            st.stats["neigh_synthetic"] += 1
        hop = bytes((frame[_HOP] - 1,))
        if proto == 58:
            data = b"".join((dst_mac, plan.l2, frame[_IP:_HOP], hop, plan.new_addrs, frame[_L4:csum_at],
                             bytes((check >> 8, check & 0xFF)), plan.icmp_id, src[_ICMP_ID_END:end]))
            return Output([Emitted(plan.oif, data, pkt_id, conn.ct_id, 0, 0, False)], [], [], [], [])
        if not whole:
            gso_type = gso_size = 0
        if view is not None:  # the headers are copied (to the end of the TCP/UDP header), the payload stays
            l4_end = _L4 + ((frame[_TCP_DOFF] >> 4) * 4 if tcp is not None else UDPH_LEN_BYTES)
            data = b"".join((dst_mac, plan.l2, frame[_IP:_HOP], hop, plan.new_addrs, frame[_PORTS_END:csum_at],
                             bytes((check >> 8, check & 0xFF)), frame[csum_at + _CHECK_LEN:l4_end]))
            return Output([Emitted(plan.oif, data, pkt_id, conn.ct_id, gso_type, gso_size, partial,
                                   view[l4_end:end])], [], [], [], [])
        after_csum = csum_at + _CHECK_LEN
        data = b"".join((dst_mac, plan.l2, frame[_IP:_HOP], hop, plan.new_addrs, frame[_PORTS_END:csum_at],
                         bytes((check >> 8, check & 0xFF)),
                         frame[after_csum:end] if end < 1024 else memoryview(frame)[after_csum:end]))
        return Output([Emitted(plan.oif, data, pkt_id, conn.ct_id, gso_type, gso_size, partial)], [], [], [], [])
