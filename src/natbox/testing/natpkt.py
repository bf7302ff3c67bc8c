"""Test helpers for tests/nat: packet builders, checksum verifiers, flow set-up.

Packets are built from first principles (RFC 791/793/768/792, RFC 9260 for SCTP) with full checksums, so
they are independent of the code under test.
"""

from __future__ import annotations

import random

from natbox.conntrack.conn import Conn, TcpConntrack
from natbox.conntrack.table import ConntrackTable
from natbox.conntrack.tuple import ConnTuple, invert, parse_addr
from natbox.nat.core import NatCore
from natbox.nat.l4proto import crc32c
from natbox.nat.range import NatRange, RangeFlags
from natbox.netfilter import ManipType, TcpState
from natbox.wire.checksum import internet_checksum, pseudo_header_sum

TCP, UDP, ICMP, GRE, SCTP, UDPLITE, DCCP = 6, 17, 1, 47, 132, 136, 33
FAR_FUTURE = 1e9
NO_FLAGS = RangeFlags(0)
A = parse_addr


def ip_header(src: int, dst: int, proto: int, payload_len: int, *, ttl: int = 64, ident: int = 0x1234,
              options: bytes = b"") -> bytearray:
    ihl = 5 + len(options) // 4
    hdr = bytearray(20 + len(options))
    hdr[0] = 0x40 | ihl
    hdr[2:4] = (ihl * 4 + payload_len).to_bytes(2, "big")
    hdr[4:6] = ident.to_bytes(2, "big")
    hdr[8] = ttl
    hdr[9] = proto
    hdr[12:16] = src.to_bytes(4, "big")
    hdr[16:20] = dst.to_bytes(4, "big")
    hdr[20:] = options
    hdr[10:12] = internet_checksum(hdr).to_bytes(2, "big")
    return hdr


def l4_csum(src: int, dst: int, proto: int, seg: bytes | bytearray) -> int:
    return internet_checksum(seg, pseudo_header_sum(src, dst, proto, len(seg)))


def tcp_packet(src: int, sport: int, dst: int, dport: int, payload: bytes = b"", *, flags: int = 0x02,
               seq: int = 1000, options: bytes = b"") -> bytearray:
    off = 5 + len(options) // 4
    seg = bytearray(20 + len(options)) + payload
    seg[0:2] = sport.to_bytes(2, "big")
    seg[2:4] = dport.to_bytes(2, "big")
    seg[4:8] = seq.to_bytes(4, "big")
    seg[12] = off << 4
    seg[13] = flags
    seg[14:16] = (65535).to_bytes(2, "big")
    seg[20 : 20 + len(options)] = options
    seg[16:18] = l4_csum(src, dst, TCP, seg).to_bytes(2, "big")
    return ip_header(src, dst, TCP, len(seg)) + seg


def udp_packet(src: int, sport: int, dst: int, dport: int, payload: bytes = b"", *, no_csum: bool = False,
               proto: int = UDP, ttl: int = 64) -> bytearray:
    seg = bytearray(8) + payload
    seg[0:2] = sport.to_bytes(2, "big")
    seg[2:4] = dport.to_bytes(2, "big")
    seg[4:6] = (8 + len(payload) if proto == UDP else 8).to_bytes(2, "big")  # UDPLITE: checksum coverage 8
    if not no_csum:
        if proto == UDP:
            c = l4_csum(src, dst, UDP, seg) or 0xFFFF
        else:  # UDP-Lite covers the pseudo-header and the first `coverage` bytes (RFC 3828)
            c = internet_checksum(seg[:8], pseudo_header_sum(src, dst, proto, len(seg))) or 0xFFFF
        seg[6:8] = c.to_bytes(2, "big")
    return ip_header(src, dst, proto, len(seg), ttl=ttl) + seg


def icmp_message(icmp_type: int, code: int, rest: bytes, body: bytes) -> bytearray:
    msg = bytearray([icmp_type, code, 0, 0]) + rest + body
    msg[2:4] = internet_checksum(msg).to_bytes(2, "big")
    return msg


def icmp_echo(
    src: int, dst: int, ident: int, *, seq: int = 1, reply: bool = False, payload: bytes = b"ping",
) -> bytearray:
    msg = icmp_message(0 if reply else 8, 0, ident.to_bytes(2, "big") + seq.to_bytes(2, "big"), payload)
    return ip_header(src, dst, ICMP, len(msg)) + msg


def icmp_error(
    src: int, dst: int, icmp_type: int, code: int, offending: bytes | bytearray, *, keep: int = 28,
) -> bytearray:
    msg = icmp_message(icmp_type, code, b"\x00\x00\x00\x00", bytes(offending[:keep]))
    return ip_header(src, dst, ICMP, len(msg)) + msg


def sctp_packet(src: int, sport: int, dst: int, dport: int, payload: bytes = b"\x00" * 16) -> bytearray:
    seg = bytearray(12) + payload
    seg[0:2] = sport.to_bytes(2, "big")
    seg[2:4] = dport.to_bytes(2, "big")
    seg[4:8] = (0xCAFEBABE).to_bytes(4, "big")
    seg[8:12] = crc32c(seg).to_bytes(4, "little")
    return ip_header(src, dst, SCTP, len(seg)) + seg


def gre_packet(src: int, dst: int, *, version: int, call_id: int = 0x1111) -> bytearray:
    seg = bytearray(8)
    seg[0:2] = ((0x2000 if version == 1 else 0) | version).to_bytes(2, "big")
    seg[2:4] = (0x880B if version == 1 else 0x0800).to_bytes(2, "big")
    seg[6:8] = call_id.to_bytes(2, "big")
    return ip_header(src, dst, GRE, len(seg)) + seg


# --- verification ----------------------------------------------------------------------------------


def ip_csum_ok(data: bytes | bytearray, off: int = 0) -> bool:
    ihl = (data[off] & 0x0F) * 4
    return internet_checksum(data[off : off + ihl]) == 0


def l4_csum_ok(data: bytes | bytearray) -> bool:
    """Does the transport checksum verify (as a receiver checks it)? UDP 0 means "none"."""
    ihl = (data[0] & 0x0F) * 4
    proto = data[9]
    src = int.from_bytes(data[12:16], "big")
    dst = int.from_bytes(data[16:20], "big")
    seg = bytes(data[ihl:])
    if proto == UDP and seg[6:8] == b"\x00\x00":
        return True
    if proto in (TCP, UDP, DCCP):
        return internet_checksum(seg, pseudo_header_sum(src, dst, proto, len(seg))) == 0
    if proto == UDPLITE:
        return internet_checksum(seg[:8], pseudo_header_sum(src, dst, proto, len(seg))) == 0
    if proto == ICMP:
        return internet_checksum(seg) == 0
    if proto == SCTP:
        zeroed = seg[:8] + b"\x00\x00\x00\x00" + seg[12:]
        return crc32c(zeroed).to_bytes(4, "little") == seg[8:12]
    return True


def tuple_of(data: bytes | bytearray) -> ConnTuple:
    """The conntrack tuple of a TCP/UDP/ICMP-echo packet (`nf_ct_get_tuple`)."""
    ihl = (data[0] & 0x0F) * 4
    proto = data[9]
    src = int.from_bytes(data[12:16], "big")
    dst = int.from_bytes(data[16:20], "big")
    if proto == ICMP:
        ident = int.from_bytes(data[ihl + 4 : ihl + 6], "big")
        return ConnTuple(src, ident, dst, (data[ihl] << 8) | data[ihl + 1], proto)
    sport = int.from_bytes(data[ihl : ihl + 2], "big")
    dport = int.from_bytes(data[ihl + 2 : ihl + 4], "big")
    return ConnTuple(src, sport, dst, dport, proto)


# --- flows -----------------------------------------------------------------------------------------


class Lab:
    """A NAT core, a table and a seeded RNG, with helpers that create flows the way the hooks would."""

    def __init__(self, seed: int = 1, max_entries: int = 262144) -> None:
        self.nat = NatCore()
        self.table = ConntrackTable(max_entries=max_entries)
        self.rnd = random.Random(seed)
        self.now = 100.0

    def conn(self, orig: ConnTuple, *, tcp_state: TcpState | None = None, td_end: int = 0) -> Conn:
        reply = invert(orig)
        assert reply is not None
        ct = Conn(orig, reply, now=self.now, ct_id=self.table.new_id())
        ct.timeout = FAR_FUTURE
        if tcp_state is not None:
            ct.tcp = TcpConntrack()
            ct.tcp.state = tcp_state
            ct.tcp.seen[0].td_end = td_end
        return ct

    def setup(self, ct: Conn, rng: NatRange, manip: ManipType, trace: list[str] | None = None) -> int:
        return self.nat.setup_info(ct, rng, manip, now=self.now, table=self.table, rnd=self.rnd, trace=trace)

    def null(self, ct: Conn, manip: ManipType) -> int:
        return self.nat.alloc_null_binding(ct, manip, now=self.now, table=self.table, rnd=self.rnd)

    def flow(self, orig: ConnTuple, *, dnat: NatRange | None = None, snat: NatRange | None = None,
             confirm: bool = True, tcp_state: TcpState | None = None, td_end: int = 0,
             trace: list[str] | None = None) -> Conn:
        """A forwarded flow: DST manip at PREROUTING, SRC at POSTROUTING (null bindings where no rule),
        then confirmation (insertion) unless it clashes."""
        ct = self.conn(orig, tcp_state=tcp_state, td_end=td_end)
        if dnat is not None:
            assert self.setup(ct, dnat, ManipType.DST, trace) == 1
        else:
            assert self.nat.alloc_null_binding(ct, ManipType.DST, now=self.now, table=self.table,
                                               rnd=self.rnd, trace=trace) == 1
        if snat is not None:
            assert self.setup(ct, snat, ManipType.SRC, trace) == 1
        else:
            assert self.nat.alloc_null_binding(ct, ManipType.SRC, now=self.now, table=self.table,
                                               rnd=self.rnd, trace=trace) == 1
        if confirm and self.table.clash(ct, self.now) is None:
            self.table.insert(ct, self.now)
        return ct


def snat_to(addr: str, lo: int = 0, hi: int = 0, flags: RangeFlags = NO_FLAGS) -> NatRange:
    f = flags | RangeFlags.MAP_IPS
    if lo:
        f |= RangeFlags.PROTO_SPECIFIED
    return NatRange(f, A(addr), A(addr), lo, hi or lo)


def masq(addr: str = "203.0.113.1", lo: int = 0, hi: int = 0, flags: RangeFlags = NO_FLAGS) -> NatRange:
    """The range MASQUERADE hands to setup_info (§5.2)."""
    return snat_to(addr, lo, hi, flags)
