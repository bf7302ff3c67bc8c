"""NAT's per-protocol records: the pre-5.x kernel's `struct nf_nat_l4proto` (§4.5, §4.7, §4.8).

One `NatL4Proto` per protocol NAT rewrites, keyed by protocol number (`nf_nat_l4proto_find`): the packet
rewrite (`manip_pkt`, mirroring the per-protocol functions of net/netfilter/nf_nat_proto.c), what the
protocol's manip part is (`key`: a port, an ICMP id, a GRE key, or nothing), and how
`nf_nat_l4proto_unique_tuple` searches for a free one (`search`). Everything else about a protocol
(`allow_clash`, its tuple layout) is conntrack's record (`natbox.conntrack.l4proto`); nat imports
conntrack, never the other way round.

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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from natbox.conntrack.tuple import ConnTuple
from natbox.netfilter import (
    IPPROTO_DCCP,
    IPPROTO_GRE,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPPROTO_UDPLITE,
    ManipType,
)
from natbox.wire.checksum import crc32c, csum_replace2, csum_replace4
from natbox.wire.layout import (
    GREH_CALL_ID,
    GREH_FLAGS,
    ICMPH_CHECKSUM,
    ICMPH_ID,
    ICMPH_LEN,
    ICMPH_TYPE,
    IPH_DADDR,
    IPH_SADDR,
    L4_DPORT,
    L4_SPORT,
    TCPH_CHECK,
    TCPH_MIN_LEN,
    UDPH_CHECK,
    UDPH_LEN_BYTES,
)

# enum members as module constants: `Enum.MEMBER` costs an attribute lookup through EnumType per use
_MANIP_DST: Final = ManipType.DST
_MANIP_SRC: Final = ManipType.SRC

__all__ = [
    "ICMP_ID_TYPES",
    "NAT_DCCP",
    "NAT_L4PROTOS",
    "NAT_SEARCH_ID",
    "NAT_SEARCH_NONE",
    "NAT_SEARCH_PORTS",
    "PORT_CLASSES",
    "NatL4Proto",
    "crc32c",
    "l4proto_manip_pkt",
    "nf_nat_l4proto_find",
]

# dccp_manip_pkt() exists only in kernels ≤ 6.16 (see the module docstring).
NAT_DCCP = False

# icmp_manip_pkt(): only these ICMP types carry an identifier (echo, timestamp, info, address mask and
# their replies); errors keep their "unused" word untouched.
ICMP_ID_TYPES: Final = frozenset({0, 8, 13, 14, 15, 16, 17, 18})

# SRC manip without a port range: the original port's class decides the search range (§4.5 step 4).
# (first port of the next class, min, range_size)
PORT_CLASSES: tuple[tuple[int, int, int], ...] = (
    (512, 1, 511),  # < 512 → 1..511
    (1024, 600, 424),  # 512..1023 → 600..1023 ("loose convention: >> 512 is credential passing")
    (65536, 1024, 64512),  # >= 1024 → 1024..65535
)

_SCTP_HDR: Final = 12  # sizeof(struct sctphdr)
_SCTP_CHECKSUM: Final = 8  # struct sctphdr.checksum
_DCCP_HDR: Final = 12  # sizeof(struct dccp_hdr)
_DCCP_CHECKSUM: Final = 6  # struct dccp_hdr.dccph_checksum
_L4_MIN: Final = 8  # what conntrack guarantees of every port header ("hdrsize = 8")
_GRE_HDR: Final = 8  # sizeof(struct pptp_gre_header) - 8
_GRE_VERSION_MASK: Final = 0x0007


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
        oldip, newip, newport = _get32(data, iphdroff + IPH_SADDR), target.src, target.sport
    else:
        oldip, newip, newport = _get32(data, iphdroff + IPH_DADDR), target.dst, target.dport
    check = _get16(data, hdroff + csum_off)
    check = csum_replace4(check, oldip, newip)
    return csum_replace2(check, _get16(data, hdroff + port_off), newport)


def _partial_csum(data: bytearray, iphdroff: int, hdroff: int, csum_off: int, manip: ManipType, target: ConnTuple,
                  ) -> None:
    """`inet_proto_csum_replace4(..., pseudohdr=true)` on a CHECKSUM_PARTIAL packet: the field holds the
    uncomplemented pseudo-header sum, so it follows the address change the other way round
    (`~csum_fold(csum_add(csum_sub(csum_unfold(sum), from), to))`); port changes do not touch it."""
    pos = iphdroff + (IPH_SADDR if manip == _MANIP_SRC else IPH_DADDR)
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
    port_off = L4_SPORT if manip == _MANIP_SRC else L4_DPORT
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
    if len(data) < hdroff + UDPH_LEN_BYTES:
        return False
    port_off = L4_SPORT if manip == _MANIP_SRC else L4_DPORT
    newport = target.sport if manip == _MANIP_SRC else target.dport
    if partial and not lite:
        _partial_csum(data, iphdroff, hdroff, UDPH_CHECK, manip, target)
        if not _get16(data, hdroff + UDPH_CHECK):
            _put16(data, hdroff + UDPH_CHECK, 0xFFFF)  # CSUM_MANGLED_0
    elif lite or _get16(data, hdroff + UDPH_CHECK):
        check = _ports_csum(data, iphdroff, hdroff, csum_off=UDPH_CHECK, port_off=port_off, target=target,
                            manip=manip)
        _put16(data, hdroff + UDPH_CHECK, check or 0xFFFF)  # CSUM_MANGLED_0
    _put16(data, hdroff + port_off, newport)
    return True


def tcp_manip_pkt(data: bytearray, iphdroff: int, hdroff: int, target: ConnTuple, manip: ManipType,
                  partial: bool) -> bool:
    """Mirrors `tcp_manip_pkt()`."""
    return _tcp_like(data, iphdroff, hdroff, target=target, manip=manip, full=TCPH_MIN_LEN, csum_off=TCPH_CHECK,
                     partial=partial)


def udp_manip_pkt(data: bytearray, iphdroff: int, hdroff: int, target: ConnTuple, manip: ManipType,
                  partial: bool) -> bool:
    """Mirrors `udp_manip_pkt()`."""
    return _udp(data, iphdroff, hdroff, target=target, manip=manip, lite=False, partial=partial)


def udplite_manip_pkt(data: bytearray, iphdroff: int, hdroff: int, target: ConnTuple, manip: ManipType,
                      partial: bool) -> bool:
    """Mirrors `udplite_manip_pkt()` (the checksum is mandatory; no CHECKSUM_PARTIAL form)."""
    return _udp(data, iphdroff, hdroff, target=target, manip=manip, lite=True)


def sctp_manip_pkt(data: bytearray, iphdroff: int, hdroff: int, target: ConnTuple, manip: ManipType,
                   partial: bool) -> bool:
    """Mirrors `sctp_manip_pkt()`: ports, then CRC32c over everything from the SCTP header on (if it is whole)."""
    n = len(data)
    hdrsize = _SCTP_HDR if n >= hdroff + _SCTP_HDR else _L4_MIN
    if n < hdroff + hdrsize:
        return False
    if manip == _MANIP_SRC:
        _put16(data, hdroff + L4_SPORT, target.sport)
    else:
        _put16(data, hdroff + L4_DPORT, target.dport)
    if hdrsize < _SCTP_HDR:
        return True
    pos = hdroff + _SCTP_CHECKSUM
    data[pos : pos + 4] = b"\x00\x00\x00\x00"
    data[pos : pos + 4] = crc32c(memoryview(data)[hdroff:]).to_bytes(4, "little")
    return True


def dccp_manip_pkt(data: bytearray, iphdroff: int, hdroff: int, target: ConnTuple, manip: ManipType,
                   partial: bool) -> bool:
    """Mirrors `dccp_manip_pkt()` (kernels ≤ 6.16, `NAT_DCCP`); 6.17+ passes DCCP unmodified."""
    if not NAT_DCCP:
        return True
    return _tcp_like(data, iphdroff, hdroff, target=target, manip=manip, full=_DCCP_HDR, csum_off=_DCCP_CHECKSUM)


def icmp_manip_pkt(data: bytearray, iphdroff: int, hdroff: int, target: ConnTuple, manip: ManipType,
                   partial: bool) -> bool:
    """Mirrors `icmp_manip_pkt()`: the id of query messages (either manip type); errors are left alone."""
    if len(data) < hdroff + ICMPH_LEN:
        return False
    if data[hdroff + ICMPH_TYPE] not in ICMP_ID_TYPES:
        return True
    old_id = _get16(data, hdroff + ICMPH_ID)
    _put16(data, hdroff + ICMPH_CHECKSUM, csum_replace2(_get16(data, hdroff + ICMPH_CHECKSUM), old_id, target.sport))
    _put16(data, hdroff + ICMPH_ID, target.sport)
    return True


def gre_manip_pkt(data: bytearray, iphdroff: int, hdroff: int, target: ConnTuple, manip: ManipType,
                  partial: bool) -> bool:
    """Mirrors `gre_manip_pkt()`: only the PPTP (GREv1) call id, and only for DST manip."""
    if len(data) < hdroff + _GRE_HDR:
        return False
    if manip != _MANIP_DST:
        return True
    version = _get16(data, hdroff + GREH_FLAGS) & _GRE_VERSION_MASK
    if version == 0:
        return True
    if version == 1:
        _put16(data, hdroff + GREH_CALL_ID, target.dport)
        return True
    return False  # "can't nat unknown GRE version"


def unknown_manip_pkt(data: bytearray, iphdroff: int, hdroff: int, target: ConnTuple, manip: ManipType,
                      partial: bool) -> bool:
    """`l4proto_manip_pkt()`'s default: "If we don't know protocol -- no error, pass it unmodified."."""
    return True


# --- the records ----------------------------------------------------------------------------------------

# how nf_nat_l4proto_unique_tuple searches a protocol's manip part (§4.5 step 4)
NAT_SEARCH_NONE: Final = 0  # nothing to change (GRE keys change only for PPTP with a master ct; other protocols)
NAT_SEARCH_PORTS: Final = 1  # a port: the given range, or for SRC manip the original port's class (PORT_CLASSES)
NAT_SEARCH_ID: Final = 2  # the ICMP id: the given range (u32 arithmetic, no swap), else 0..65535

ManipPktFn = Callable[[bytearray, int, int, ConnTuple, ManipType, bool], bool]


@dataclass(frozen=True, slots=True)
class NatL4Proto:
    """`struct nf_nat_l4proto` (Linux ≤ 5.0): NAT's view of one protocol.

    `manip_pkt(data, iphdroff, hdroff, target, manip, partial)` rewrites the manip part of the header at
    `hdroff` to `target`'s (False: truncated, the packet is dropped). `key` names the manip part in traces
    ("port", "id", "key") or is "" when the protocol has none; `key_in_sport` says the part is `src.u` for
    both manip types (the ICMP id); `search` is one of the NAT_SEARCH_* ways of finding a free one.
    """

    l4proto: int
    manip_pkt: ManipPktFn
    key: str = ""
    key_in_sport: bool = False
    search: int = NAT_SEARCH_NONE

    @property
    def has_ports(self) -> bool:
        """Whether the manip part is a port (traces print `address:port`)."""
        return self.search == NAT_SEARCH_PORTS


NAT_TCP: Final = NatL4Proto(IPPROTO_TCP, tcp_manip_pkt, "port", search=NAT_SEARCH_PORTS)
NAT_UDP: Final = NatL4Proto(IPPROTO_UDP, udp_manip_pkt, "port", search=NAT_SEARCH_PORTS)
NAT_UDPLITE: Final = NatL4Proto(IPPROTO_UDPLITE, udplite_manip_pkt, "port", search=NAT_SEARCH_PORTS)
NAT_SCTP: Final = NatL4Proto(IPPROTO_SCTP, sctp_manip_pkt, "port", search=NAT_SEARCH_PORTS)
NAT_ICMP: Final = NatL4Proto(IPPROTO_ICMP, icmp_manip_pkt, "id", key_in_sport=True, search=NAT_SEARCH_ID)
# ICMPv6: the echo id, found like ICMP's (IPv6 §3.2); the IPv6 rewrite is natbox.nat.manip6
NAT_ICMPV6: Final = NatL4Proto(IPPROTO_ICMPV6, unknown_manip_pkt, "id", key_in_sport=True, search=NAT_SEARCH_ID)
NAT_GRE: Final = NatL4Proto(IPPROTO_GRE, gre_manip_pkt, "key")
# DCCP's manip part is no port on 6.18 (its record only rewrites with NAT_DCCP, for ≤ 6.16)
NAT_DCCP_PROTO: Final = NatL4Proto(IPPROTO_DCCP, dccp_manip_pkt)
NAT_UNKNOWN: Final = NatL4Proto(0, unknown_manip_pkt)

NAT_L4PROTOS: dict[int, NatL4Proto] = {
    p.l4proto: p for p in (NAT_TCP, NAT_UDP, NAT_UDPLITE, NAT_SCTP, NAT_ICMP, NAT_ICMPV6, NAT_GRE, NAT_DCCP_PROTO)
}


def nf_nat_l4proto_find(l4proto: int) -> NatL4Proto:
    """Mirrors (≤ 5.0) `__nf_nat_l4proto_find()`: the protocol's NAT record, or the unknown one."""
    return NAT_L4PROTOS.get(l4proto, NAT_UNKNOWN)


def l4proto_manip_pkt(data: bytearray, iphdroff: int, hdroff: int, target: ConnTuple, manip: ManipType,
                      partial: bool = False) -> bool:
    """Mirrors `l4proto_manip_pkt()`: dispatch on the target tuple's protocol. `partial`: the packet's
    TCP/UDP checksum is CHECKSUM_PARTIAL (see `_partial_csum`)."""
    return NAT_L4PROTOS.get(target[4], NAT_UNKNOWN).manip_pkt(data, iphdroff, hdroff, target, manip, partial)
