"""Rewriting one IPv4 header and its transport header in place (§4.7, §4.8).

Mirrors `nf_nat_ipv4_manip_pkt()` and `l4proto_manip_pkt()` with the per-protocol functions of
net/netfilter/nf_nat_proto.c. The transport header is rewritten first, then the address and the IP
header checksum. Every checksum update is incremental (RFC 1624, `natbox.wire.checksum`), exactly as
the kernel computes it for `CHECKSUM_NONE` packets, except SCTP whose CRC32c is recomputed.

Truncation (`skb_ensure_writable(skb, n)` fails when the packet is shorter than `n`; the manip then
returns false and `nf_nat_packet` drops the packet). `len(data)` plays the role of `skb->len`, so for
an inner header inside an ICMP error the "full header present" tests look at what follows in the
whole datagram, as in the kernel:

| proto   | bytes required at the L4 offset | checksum updated only if present | checksum rule                  |
|---------|---------------------------------|----------------------------------|--------------------------------|
| TCP     | 8                               | 20 (full header)                 | pseudo-header + port           |
| UDP     | 8                               | (always, if check != 0)          | 0 stays 0; a result of 0 → 0xFFFF |
| UDPLITE | 8                               | (always)                         | a result of 0 → 0xFFFF         |
| SCTP    | 8                               | 12                               | CRC32c over the rest of the packet |
| DCCP    | 8 (≤ 6.16 only, `NAT_DCCP`)     | 12                               | pseudo-header + port           |
| ICMP    | 8                               | (always)                         | id only for query types        |
| GRE     | 8                               | -                                | v1 (PPTP) call id on DST; v2-7 drop |
| other   | 0                               | -                                | addresses only                 |

DCCP: kernels 6.17+ removed DCCP from conntrack and NAT (commit fd72f265bb00, "netfilter: conntrack:
remove DCCP protocol support"); the reference box (6.18, no `nf_conntrack_dccp_*` sysctls) treats DCCP as
an unknown protocol, and so does natbox by default. `NAT_DCCP = True` restores the ≤ 6.16 port rewrite.
"""

from __future__ import annotations

from natbox.conntrack.tuple import ConnTuple
from natbox.netfilter import (
    IPPROTO_DCCP,
    IPPROTO_GRE,
    IPPROTO_ICMP,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPPROTO_UDPLITE,
    ManipType,
)
from natbox.wire.checksum import csum_replace2, csum_replace4

# enum members as module constants: `Enum.MEMBER` costs an attribute lookup through EnumType per use
_MANIP_DST = ManipType.DST
_MANIP_SRC = ManipType.SRC

__all__ = ["ICMP_ID_TYPES", "NAT_DCCP", "crc32c", "manip_pkt", "manip_pkt_ports"]

# dccp_manip_pkt() exists only in kernels ≤ 6.16 (see the module docstring).
NAT_DCCP = False

# icmp_manip_pkt(): only these ICMP types carry an identifier (echo, timestamp, info, address mask and
# their replies); errors keep their "unused" word untouched.
ICMP_ID_TYPES = frozenset({0, 8, 13, 14, 15, 16, 17, 18})

_TCP_HDR = 20  # sizeof(struct tcphdr)
_SCTP_HDR = 12  # sizeof(struct sctphdr)
_DCCP_HDR = 12  # sizeof(struct dccp_hdr)
_L4_MIN = 8  # what conntrack guarantees of every port header ("hdrsize = 8")
_GRE_VERSION_MASK = 0x0007


def _crc32c_table() -> list[int]:
    """The reflected CRC-32C (Castagnoli, polynomial 0x82F63B78) byte table, built once at import."""
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C as SCTP uses it (RFC 9260 appendix A): init and final xor 0xFFFFFFFF."""
    crc = 0xFFFFFFFF
    table = _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _get16(data: bytearray, pos: int) -> int:
    return (data[pos] << 8) | data[pos + 1]


def _put16(data: bytearray, pos: int, value: int) -> None:
    data[pos] = (value >> 8) & 0xFF
    data[pos + 1] = value & 0xFF


def _get32(data: bytearray, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 4], "big")


def _ports_csum(
    data: bytearray, iphdroff: int, hdroff: int, *, csum_off: int, port_off: int, target: ConnTuple, manip: ManipType,
) -> int:
    """`nf_csum_update()` + `inet_proto_csum_replace2()`: the new L4 checksum (port not yet written)."""
    if manip == _MANIP_SRC:
        oldip, newip, newport = _get32(data, iphdroff + 12), target.src, target.sport
    else:
        oldip, newip, newport = _get32(data, iphdroff + 16), target.dst, target.dport
    check = _get16(data, hdroff + csum_off)
    check = csum_replace4(check, oldip, newip)
    return csum_replace2(check, _get16(data, hdroff + port_off), newport)


def _partial_csum(data: bytearray, iphdroff: int, hdroff: int, csum_off: int, manip: ManipType, target: ConnTuple,
                  ) -> None:
    """`inet_proto_csum_replace4(..., pseudohdr=true)` on a CHECKSUM_PARTIAL packet: the field holds the
    uncomplemented pseudo-header sum, so it follows the address change the other way round
    (`~csum_fold(csum_add(csum_sub(csum_unfold(sum), from), to))`); port changes do not touch it."""
    pos = iphdroff + (12 if manip == _MANIP_SRC else 16)
    old, new = _get32(data, pos), (target.src if manip == _MANIP_SRC else target.dst)
    total = (_get16(data, hdroff + csum_off) + ((~old >> 16) & 0xFFFF) + (~old & 0xFFFF) + (new >> 16)
             + (new & 0xFFFF))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    _put16(data, hdroff + csum_off, total)


def _tcp_like(
    data: bytearray, iphdroff: int, hdroff: int, *, target: ConnTuple, manip: ManipType, full: int, csum_off: int,
    partial: bool = False,
) -> bool:
    """`tcp_manip_pkt()` / `dccp_manip_pkt()`: ports always, checksum only with the full header."""
    n = len(data)
    hdrsize = full if n >= hdroff + full else _L4_MIN
    if n < hdroff + hdrsize:
        return False
    port_off = 0 if manip == _MANIP_SRC else 2
    newport = target.sport if manip == _MANIP_SRC else target.dport
    if partial and hdrsize == full:
        _partial_csum(data, iphdroff, hdroff, csum_off, manip, target)
    elif hdrsize == full:
        check = _ports_csum(data, iphdroff, hdroff, csum_off=csum_off, port_off=port_off, target=target, manip=manip)
        _put16(data, hdroff + csum_off, check)
    _put16(data, hdroff + port_off, newport)
    return True


def _udp(data: bytearray, iphdroff: int, hdroff: int, *, target: ConnTuple, manip: ManipType, lite: bool,
         partial: bool = False) -> bool:
    """`udp_manip_pkt()` / `udplite_manip_pkt()` → `__udp_manip_pkt()`."""
    if len(data) < hdroff + 8:
        return False
    port_off = 0 if manip == _MANIP_SRC else 2
    newport = target.sport if manip == _MANIP_SRC else target.dport
    if partial and not lite:
        _partial_csum(data, iphdroff, hdroff, 6, manip, target)
        if not _get16(data, hdroff + 6):
            _put16(data, hdroff + 6, 0xFFFF)  # CSUM_MANGLED_0
    elif lite or _get16(data, hdroff + 6):
        check = _ports_csum(data, iphdroff, hdroff, csum_off=6, port_off=port_off, target=target, manip=manip)
        _put16(data, hdroff + 6, check or 0xFFFF)  # CSUM_MANGLED_0
    _put16(data, hdroff + port_off, newport)
    return True


def _sctp(data: bytearray, hdroff: int, target: ConnTuple, manip: ManipType) -> bool:
    """`sctp_manip_pkt()`: ports, then CRC32c over everything from the SCTP header on (if it is whole)."""
    n = len(data)
    hdrsize = _SCTP_HDR if n >= hdroff + _SCTP_HDR else _L4_MIN
    if n < hdroff + hdrsize:
        return False
    if manip == _MANIP_SRC:
        _put16(data, hdroff, target.sport)
    else:
        _put16(data, hdroff + 2, target.dport)
    if hdrsize < _SCTP_HDR:
        return True
    data[hdroff + 8 : hdroff + 12] = b"\x00\x00\x00\x00"
    data[hdroff + 8 : hdroff + 12] = crc32c(memoryview(data)[hdroff:]).to_bytes(4, "little")
    return True


def _icmp(data: bytearray, hdroff: int, target: ConnTuple) -> bool:
    """`icmp_manip_pkt()`: the id of query messages (either manip type); errors are left alone."""
    if len(data) < hdroff + 8:
        return False
    if data[hdroff] not in ICMP_ID_TYPES:
        return True
    old_id = _get16(data, hdroff + 4)
    _put16(data, hdroff + 2, csum_replace2(_get16(data, hdroff + 2), old_id, target.sport))
    _put16(data, hdroff + 4, target.sport)
    return True


def _gre(data: bytearray, hdroff: int, target: ConnTuple, manip: ManipType) -> bool:
    """`gre_manip_pkt()`: only the PPTP (GREv1) call id, and only for DST manip."""
    if len(data) < hdroff + 8:  # sizeof(struct pptp_gre_header) - 8
        return False
    if manip != _MANIP_DST:
        return True
    version = _get16(data, hdroff) & _GRE_VERSION_MASK
    if version == 0:
        return True
    if version == 1:
        _put16(data, hdroff + 6, target.dport)
        return True
    return False  # "can't nat unknown GRE version"


def l4proto_manip_pkt(data: bytearray, iphdroff: int, hdroff: int, target: ConnTuple, manip: ManipType,
                      partial: bool = False) -> bool:
    """Mirrors `l4proto_manip_pkt()`: dispatch on the target tuple's protocol. `partial`: the packet's
    TCP/UDP checksum is CHECKSUM_PARTIAL (see `_partial_csum`)."""
    proto = target.proto
    if proto == IPPROTO_TCP:
        return _tcp_like(data, iphdroff, hdroff, target=target, manip=manip, full=_TCP_HDR, csum_off=16,
                         partial=partial)
    if proto == IPPROTO_UDP:
        return _udp(data, iphdroff, hdroff, target=target, manip=manip, lite=False, partial=partial)
    if proto == IPPROTO_UDPLITE:
        return _udp(data, iphdroff, hdroff, target=target, manip=manip, lite=True)
    if proto == IPPROTO_SCTP:
        return _sctp(data, hdroff, target, manip)
    if proto == IPPROTO_ICMP:
        return _icmp(data, hdroff, target)
    if proto == IPPROTO_DCCP and NAT_DCCP:
        return _tcp_like(data, iphdroff, hdroff, target=target, manip=manip, full=_DCCP_HDR, csum_off=6)
    if proto == IPPROTO_GRE:
        return _gre(data, hdroff, target, manip)
    return True  # "If we don't know protocol -- no error, pass it unmodified."


def manip_pkt(data: bytearray, ihl: int, target: ConnTuple, manip: ManipType, *, iphdroff: int = 0,
              partial: bool = False) -> bool:
    """Mirrors `nf_nat_ipv4_manip_pkt()`: make the header at `iphdroff` carry `target`'s manip part.

    SRC manip writes `target.src`/`target.sport`, DST manip `target.dst`/`target.dport`. `ihl` is the
    length in bytes of the IP header at `iphdroff`. Returns False (the caller drops the packet) when the
    bytes the protocol needs are not all present; `data` is then unchanged.
    """
    if len(data) < iphdroff + 20 or ihl < 20:
        return False
    if not l4proto_manip_pkt(data, iphdroff, iphdroff + ihl, target, manip, partial):
        return False
    if manip == _MANIP_SRC:
        pos, new = iphdroff + 12, target.src
    else:
        pos, new = iphdroff + 16, target.dst
    _put16(data, iphdroff + 10, csum_replace4(_get16(data, iphdroff + 10), _get32(data, pos), new))
    data[pos : pos + 4] = new.to_bytes(4, "big")
    return True


def manip_pkt_ports(data: bytearray, ihl: int, proto: int, manip: ManipType, addr: int, port: int) -> bool:
    """`manip_pkt()` for a TCP or UDP packet that is not CHECKSUM_PARTIAL, with the target's manip half
    given as `(addr, port)` (SRC: the new source, DST: the new destination), so the per-packet NAT of
    `nf_nat_packet` needs no target tuple. Does exactly what `manip_pkt` → `_tcp_like`/`_udp` do, in
    their order: the L4 checksum (address, then port) and port, then the IP checksum and address. The
    checksum updates are `csum_replace4`/`csum_replace2` written out (each folds twice, so its result
    complemented is the folded sum the next one starts from)."""
    n = len(data)
    if n < 20 or ihl < 20:
        return False
    if manip == _MANIP_SRC:
        pos, port_pos = 12, ihl
    else:
        pos, port_pos = 16, ihl + 2
    oldip = int.from_bytes(data[pos : pos + 4], "big")
    # what csum_replace4 adds for oldip -> addr
    ipdiff = ((~oldip >> 16) & 0xFFFF) + (~oldip & 0xFFFF) + (addr >> 16) + (addr & 0xFFFF)
    c = -1
    if proto == IPPROTO_TCP:
        if n >= ihl + _TCP_HDR:
            c = ihl + 16
        elif n < ihl + _L4_MIN:
            return False
    else:  # UDP
        if n < ihl + 8:
            return False
        if data[ihl + 6] or data[ihl + 7]:
            c = ihl + 6
    if c >= 0:
        total = (~((data[c] << 8) | data[c + 1]) & 0xFFFF) + ipdiff
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        total += (~((data[port_pos] << 8) | data[port_pos + 1]) & 0xFFFF) + port
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        check = ~total & 0xFFFF
        if not check and proto != IPPROTO_TCP:
            check = 0xFFFF  # CSUM_MANGLED_0
        data[c] = check >> 8
        data[c + 1] = check & 0xFF
    data[port_pos] = (port >> 8) & 0xFF
    data[port_pos + 1] = port & 0xFF
    total = (~((data[10] << 8) | data[11]) & 0xFFFF) + ipdiff
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    check = ~total & 0xFFFF
    data[10] = check >> 8
    data[11] = check & 0xFF
    data[pos : pos + 4] = addr.to_bytes(4, "big")
    return True
