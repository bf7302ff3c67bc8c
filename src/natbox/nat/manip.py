"""Rewriting one IPv4 header and its transport header in place (§4.7, §4.8).

Mirrors `nf_nat_manip_pkt()` and `nf_nat_ipv4_manip_pkt()` of net/netfilter/nf_nat_proto.c; the
per-protocol part (`l4proto_manip_pkt`) is each protocol's record in `natbox.nat.l4proto`. The transport
header is rewritten first, then the address and the IP header checksum. Every checksum update is
incremental (RFC 1624, `natbox.wire.checksum`), exactly as the kernel computes it for `CHECKSUM_NONE`
packets, except SCTP whose CRC32c is recomputed.

`NatCore.nat_packet` (nf_nat_packet → nf_nat_manip_pkt) runs one rewrite, traced or not: for TCP and UDP
(not CHECKSUM_PARTIAL) `manip_pkt_ports` writes from the (address, port) pair without building the target
tuple (byte for byte what `manip_pkt` does, tests/engine/test_slowpath_equivalence.py); every other case
inverts the tuple and runs `manip_pkt`.
"""

from __future__ import annotations

from typing import Final

from natbox.conntrack.tuple import ConnTuple
from natbox.nat.l4proto import ICMP_ID_TYPES, crc32c, l4proto_manip_pkt
from natbox.netfilter import IPPROTO_TCP, ManipType
from natbox.wire.checksum import csum_replace4
from natbox.wire.layout import (
    IPH_CHECK,
    IPH_DADDR,
    IPH_MIN_LEN,
    IPH_SADDR,
    L4_DPORT,
    L4_SPORT,
    TCPH_CHECK,
    TCPH_MIN_LEN,
    UDPH_CHECK,
    UDPH_LEN_BYTES,
)

_IPH_CHECK_HI: Final = IPH_CHECK  # the IP checksum's two bytes, as constants (no addition per packet)
_IPH_CHECK_LO: Final = IPH_CHECK + 1
_L4_MIN: Final = 8  # what conntrack guarantees of every port header ("hdrsize = 8")

# enum members as module constants: `Enum.MEMBER` costs an attribute lookup through EnumType per use
_MANIP_DST: Final = ManipType.DST
_MANIP_SRC: Final = ManipType.SRC

__all__ = ["ICMP_ID_TYPES", "crc32c", "manip_pkt", "manip_pkt_ports"]


def _get16(data: bytearray, pos: int) -> int:
    return (data[pos] << 8) | data[pos + 1]


def _put16(data: bytearray, pos: int, value: int) -> None:
    data[pos] = (value >> 8) & 0xFF
    data[pos + 1] = value & 0xFF


def manip_pkt(data: bytearray, ihl: int, target: ConnTuple, manip: ManipType, *, iphdroff: int = 0,
              partial: bool = False) -> bool:
    """Mirrors `nf_nat_ipv4_manip_pkt()`: make the header at `iphdroff` carry `target`'s manip part.

    SRC manip writes `target.src`/`target.sport`, DST manip `target.dst`/`target.dport`. `ihl` is the
    length in bytes of the IP header at `iphdroff`. Returns False (the caller drops the packet) when the
    bytes the protocol needs are not all present; `data` is then unchanged.
    """
    if len(data) < iphdroff + IPH_MIN_LEN or ihl < IPH_MIN_LEN:
        return False
    if not l4proto_manip_pkt(data, iphdroff, iphdroff + ihl, target, manip, partial):
        return False
    if manip == _MANIP_SRC:
        pos, new = iphdroff + IPH_SADDR, target.src
    else:
        pos, new = iphdroff + IPH_DADDR, target.dst
    csum = iphdroff + IPH_CHECK
    _put16(data, csum, csum_replace4(_get16(data, csum), int.from_bytes(data[pos : pos + 4], "big"), new))
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
    if n < IPH_MIN_LEN or ihl < IPH_MIN_LEN:
        return False
    if manip == _MANIP_SRC:
        pos, port_pos = IPH_SADDR, ihl + L4_SPORT
    else:
        pos, port_pos = IPH_DADDR, ihl + L4_DPORT
    oldip = int.from_bytes(data[pos : pos + 4], "big")
    # what csum_replace4 adds for oldip -> addr
    ipdiff = ((~oldip >> 16) & 0xFFFF) + (~oldip & 0xFFFF) + (addr >> 16) + (addr & 0xFFFF)
    c = -1
    if proto == IPPROTO_TCP:
        if n >= ihl + TCPH_MIN_LEN:
            c = ihl + TCPH_CHECK
        elif n < ihl + _L4_MIN:
            return False
    else:  # UDP
        if n < ihl + UDPH_LEN_BYTES:
            return False
        if data[ihl + UDPH_CHECK] or data[ihl + UDPH_CHECK + 1]:
            c = ihl + UDPH_CHECK
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
    total = (~((data[_IPH_CHECK_HI] << 8) | data[_IPH_CHECK_LO]) & 0xFFFF) + ipdiff
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    check = ~total & 0xFFFF
    data[_IPH_CHECK_HI] = check >> 8
    data[_IPH_CHECK_LO] = check & 0xFF
    data[pos : pos + 4] = addr.to_bytes(4, "big")
    return True
