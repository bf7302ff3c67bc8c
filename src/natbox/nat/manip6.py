"""Rewriting one IPv6 packet for NAT66 (`nf_nat_ipv6_manip_pkt`, net/netfilter/nf_nat_proto.c; §3.3).

1. `ipv6_skip_exthdr` from the IPv6 header; if it fails only the address is written.
2. Unless the packet is a non-first fragment, the transport header: TCP (ports; the checksum when the
   whole 20-byte header is there), UDP (ports; a zero checksum stays zero; a computed zero becomes
   0xFFFF), UDP-Lite, SCTP (CRC32c recomputed), ICMPv6 (the checksum covers the pseudo-header, so
   every address change updates it; the identifier of echo request/reply only), GRE (the PPTP call id).
   Each checksum follows the address with `inet_proto_csum_replace16` and the port with `replace2`.
3. The address. There is no IP header checksum; the flow label is never touched.
"""

from __future__ import annotations

from typing import Final

from natbox.conntrack.tuple import ConnTuple, invert
from natbox.nat.l4proto import crc32c, gre_manip_pkt
from natbox.netfilter import (
    IPPROTO_GRE,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPPROTO_UDPLITE,
    ManipType,
)
from natbox.wire.checksum import csum_replace2
from natbox.wire.ipv6 import ipv6_skip_exthdr
from natbox.wire.layout import (
    GREH_CALL_ID,
    ICMP6H_CKSUM,
    ICMP6H_IDENTIFIER,
    ICMP6H_LEN,
    ICMP6H_TYPE,
    IP6H_DADDR,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IP6H_SADDR,
    L4_DPORT,
    L4_SPORT,
    SCTPH_CHECKSUM,
    SCTPH_LEN,
    TCPH_CHECK,
    TCPH_MIN_LEN,
    UDPH_CHECK,
    UDPH_LEN_BYTES,
)

__all__ = ["csum_replace16", "nf_nat_ipv6_manip_other", "nf_nat_ipv6_manip_pkt"]

_MASK128: Final = (1 << 128) - 1
_ECHO_TYPES: Final = frozenset({128, 129})  # icmpv6_manip_pkt rewrites the id of echo request/reply only
_MANIP_SRC: Final = ManipType.SRC


def csum_replace16(check: int, old: int, new: int) -> int:
    """`inet_proto_csum_replace16()` (not CHECKSUM_PARTIAL): the checksum `check` after a 128-bit field went
    from `old` to `new`. The kernel folds `~check + ~old words + new words`, a non-zero sum, so the folded
    value is the sum's residue modulo 0xFFFF in 1..0xFFFF (a 16-bit word sum is congruent to the int)."""
    total = (~check & 0xFFFF) + ((old ^ _MASK128) % 0xFFFF) + (new % 0xFFFF)
    folded = (total - 1) % 0xFFFF + 1
    return ~folded & 0xFFFF


def _partial_replace16(check: int, old: int, new: int) -> int:
    """`inet_proto_csum_replace16(..., pseudohdr=true)` on CHECKSUM_PARTIAL: the field holds the
    uncomplemented pseudo-header sum, which follows the address the other way round."""
    total = check + ((old ^ _MASK128) % 0xFFFF) + (new % 0xFFFF)
    return (total - 1) % 0xFFFF + 1 if total else 0


def _get16(data: bytearray, pos: int) -> int:
    return (data[pos] << 8) | data[pos + 1]


def _put16(data: bytearray, pos: int, value: int) -> None:
    data[pos] = (value >> 8) & 0xFF
    data[pos + 1] = value & 0xFF


def _l4_manip(data: bytearray, hdroff: int, proto: int, old: int, new: int, target: ConnTuple,
              manip: ManipType, partial: bool) -> bool:
    """`nf_nat_l4proto_manip_pkt()` for an IPv6 packet: False when the header the protocol needs is
    truncated (the packet is dropped)."""
    n = len(data)
    port_off = L4_SPORT if manip == _MANIP_SRC else L4_DPORT
    newport = target.sport if manip == _MANIP_SRC else target.dport
    if proto == IPPROTO_TCP:
        full, csum_off = TCPH_MIN_LEN, TCPH_CHECK
        if n < hdroff + 8:
            return False
        if n >= hdroff + full:
            c = hdroff + csum_off
            if partial:
                _put16(data, c, _partial_replace16(_get16(data, c), old, new))
            else:
                check = csum_replace16(_get16(data, c), old, new)
                _put16(data, c, csum_replace2(check, _get16(data, hdroff + port_off), newport))
        _put16(data, hdroff + port_off, newport)
        return True
    if proto in (IPPROTO_UDP, IPPROTO_UDPLITE):
        if n < hdroff + UDPH_LEN_BYTES:
            return False
        c = hdroff + UDPH_CHECK
        check = _get16(data, c)
        if check or proto == IPPROTO_UDPLITE:
            if partial:
                _put16(data, c, _partial_replace16(check, old, new))
            else:
                check = csum_replace2(csum_replace16(check, old, new), _get16(data, hdroff + port_off), newport)
                _put16(data, c, check or 0xFFFF)  # CSUM_MANGLED_0
        _put16(data, hdroff + port_off, newport)
        return True
    if proto == IPPROTO_ICMPV6:
        if n < hdroff + ICMP6H_LEN:
            return False
        c = hdroff + ICMP6H_CKSUM
        _put16(data, c, csum_replace16(_get16(data, c), old, new))
        if data[hdroff + ICMP6H_TYPE] in _ECHO_TYPES:
            idp = hdroff + ICMP6H_IDENTIFIER
            _put16(data, c, csum_replace2(_get16(data, c), _get16(data, idp), target.sport))
            _put16(data, idp, target.sport)
        return True
    if proto == IPPROTO_SCTP:
        if n < hdroff + SCTPH_LEN:
            return False
        _put16(data, hdroff + port_off, newport)
        if not partial:
            data[hdroff + SCTPH_CHECKSUM:hdroff + SCTPH_CHECKSUM + 4] = bytes(4)
            data[hdroff + SCTPH_CHECKSUM:hdroff + SCTPH_CHECKSUM + 4] = \
                crc32c(memoryview(data)[hdroff:]).to_bytes(4, "little")
        return True
    if proto == IPPROTO_GRE:
        return n >= hdroff + GREH_CALL_ID + 2 and gre_manip_pkt(data, 0, hdroff, target, manip, partial)
    return True


def nf_nat_ipv6_manip_pkt(data: bytearray, target: ConnTuple, manip: ManipType, *, iphdroff: int = 0,
                          partial: bool = False) -> bool:
    """Mirrors `nf_nat_ipv6_manip_pkt()` (see the module docstring) for the IPv6 header at `iphdroff`: make it
    carry `target`'s manip half. Returns False (drop) when the transport header is truncated; `data` may
    then have been left unchanged."""
    if len(data) < iphdroff + IP6H_LEN:
        return False
    pos = iphdroff + (IP6H_SADDR if manip == _MANIP_SRC else IP6H_DADDR)
    old = int.from_bytes(data[pos:pos + 16], "big")
    new = target.src if manip == _MANIP_SRC else target.dst
    hdroff, nexthdr, frag_off = ipv6_skip_exthdr(data, iphdroff + IP6H_LEN, data[iphdroff + IP6H_NEXTHDR])
    if hdroff >= 0 and not frag_off & ~0x7:
        if not _l4_manip(data, hdroff, nexthdr, old, new, target, manip, partial):
            return False
    data[pos:pos + 16] = new.to_bytes(16, "big")
    return True


def nf_nat_ipv6_manip_other(data: bytearray, other: ConnTuple, manip: ManipType, partial: bool) -> bool:
    """`nf_nat_manip_pkt()` for an IPv6 skb: the target is `invert(ct->tuplehash[!dir].tuple)`."""
    target = invert(other)
    return target is not None and nf_nat_ipv6_manip_pkt(data, target, manip, partial=partial)
