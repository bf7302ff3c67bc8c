"""`struct nf_conntrack_tuple` for IPv4, and its inversion (§2.1, §2.2).

A tuple is a NamedTuple of five ints so that it hashes and compares as a plain Python tuple: the
fast path builds plain tuples `(src, sport, dst, dport, proto)` straight from packet bytes and looks
them up in dicts keyed by `ConnTuple`s.

Field meanings (the kernel's `src.u` / `dst.u` union):

| proto            | sport (src.u)      | dport (dst.u)                   |
|------------------|--------------------|---------------------------------|
| TCP/UDP/UDPLITE/SCTP/DCCP | source port | destination port            |
| ICMP             | echo id            | `type << 8 | code`              |
| GRE              | key (0 unless PPTP)| key                             |
| anything else    | 0                  | 0                               |

Addresses are host-order ints (`int.from_bytes(b, "big")`): 32-bit for IPv4, 128-bit for IPv6. One table
holds both families (ipv6-semantics.md §1.1); a tuple's family (`src.l3num`) is `tuple_l3num(t)`: IPv6 when an
address does not fit 32 bits. IPv6 conntrack does not track a packet whose both addresses lie in ::/96, so
the rule is exact (docs/differences.md). ICMPv6 tuples are laid out as ICMP's (§2.2 of the IPv6 file).

The direction of a tuple is not part of it: `nf_ct_tuple_equal` ignores `dst.dir` (§2.1).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Final, NamedTuple

from natbox.netfilter import IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_ICMPV6, NFPROTO_IPV4, NFPROTO_IPV6
from natbox.wire.ipv4 import IP_OFFSET
from natbox.wire.layout import (
    GREH_CALL_ID,
    GREH_FLAGS,
    GREH_PROTOCOL,
    ICMPH_CODE,
    ICMPH_ID,
    ICMPH_LEN,
    ICMPH_TYPE,
    IPH_DADDR,
    IPH_FRAG_OFF,
    IPH_MIN_LEN,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_VER_IHL,
    L4_DPORT,
    L4_PORTS_END,
    L4_SPORT,
)

__all__ = [
    "ICMP_INVMAP",
    "ConnTuple",
    "format_addr",
    "generic_pkt_to_tuple",
    "gre_pkt_to_tuple",
    "icmp_invert_tuple",
    "icmp_pkt_to_tuple",
    "icmpv6_invert_tuple",
    "invert",
    "ipv4_get_l4proto",
    "parse_addr",
    "ports_invert_tuple",
    "ports_pkt_to_tuple",
    "tuple_l3num",
]

# Port-carrying protocols: src.u and dst.u are ports and swap on inversion.
PORT_PROTOCOLS: Final = frozenset({6, 17, 33, 132, 136})

_PROTO_NAMES: Final = {6: "tcp", 17: "udp", 33: "dccp", 132: "sctp", 136: "udplite"}

# `invmap` in nf_conntrack_proto_icmp.c: request type → reply type and back (§2.2).
ICMP_INVMAP: dict[int, int] = {
    8: 0, 0: 8,  # echo ↔ echo reply
    13: 14, 14: 13,  # timestamp
    15: 16, 16: 15,  # information
    17: 18, 18: 17,  # address mask
}


# `invmap` in nf_conntrack_proto_icmpv6.c: echo 128 ↔ 129, node information 139 ↔ 140 (IPv6 §2.2).
ICMPV6_INVMAP: dict[int, int] = {128: 129, 129: 128, 139: 140, 140: 139}


class ConnTuple(NamedTuple):
    """One direction of a connection: `(src, sport, dst, dport, proto)`."""

    src: int
    sport: int
    dst: int
    dport: int
    proto: int

    def __str__(self) -> str:
        """The tuple as `conntrack -L` prints one direction (§7.3)."""
        fmt = format_addr if tuple_l3num(self) == NFPROTO_IPV4 else _format_addr6
        head = f"src={fmt(self.src)} dst={fmt(self.dst)}"
        if self.proto in PORT_PROTOCOLS:
            return f"{head} sport={self.sport} dport={self.dport} ({_PROTO_NAMES.get(self.proto, self.proto)})"
        if self.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            name = "icmp" if self.proto == IPPROTO_ICMP else "icmpv6"
            return f"{head} type={self.dport >> 8} code={self.dport & 0xFF} id={self.sport} ({name})"
        return f"{head} (proto {self.proto})"

    @property
    def icmp_type(self) -> int:
        return self.dport >> 8

    @property
    def icmp_code(self) -> int:
        return self.dport & 0xFF


def tuple_l3num(t: ConnTuple | tuple[int, int, int, int, int]) -> int:
    """`t->src.l3num`: NFPROTO_IPV6 when an address needs more than 32 bits, else NFPROTO_IPV4."""
    return NFPROTO_IPV6 if (t[0] | t[2]) >> 32 else NFPROTO_IPV4


def _format_addr6(addr: int) -> str:
    return str(ipaddress.IPv6Address(addr))


# `ConnTuple(a, b, c, d, e)` without the generated `__new__`'s Python frame (half the cost; same object)
_new_tuple: Callable[[type[ConnTuple], tuple[int, int, int, int, int]], ConnTuple] = tuple.__new__


def icmp_invert_tuple(t: ConnTuple) -> ConnTuple | None:
    """Mirrors `nf_conntrack_invert_icmp_tuple()`: the reply type from `invmap`, the id kept; None for a type
    without a reply type (no ct can be created; the packet is INVALID)."""
    rtype = ICMP_INVMAP.get(t.dport >> 8)
    if rtype is None:
        return None
    return ConnTuple(t.dst, t.sport, t.src, (rtype << 8) | (t.dport & 0xFF), t.proto)


def icmpv6_invert_tuple(t: ConnTuple) -> ConnTuple | None:
    """Mirrors `icmpv6_invert_tuple()`: the reply type from the ICMPv6 `invmap`, the id kept; None when the
    type has no reply type."""
    rtype = ICMPV6_INVMAP.get(t.dport >> 8)
    if rtype is None:
        return None
    return ConnTuple(t.dst, t.sport, t.src, (rtype << 8) | (t.dport & 0xFF), t.proto)


def ports_invert_tuple(t: ConnTuple) -> ConnTuple:
    """`nf_ct_invert_tuple()`'s default: addresses swap and `src.u.all` / `dst.u.all` swap (ports, GRE keys;
    zeros for a protocol without a tuple part)."""
    return _new_tuple(ConnTuple, (t[2], t[3], t[0], t[1], t[4]))


def invert(t: ConnTuple) -> ConnTuple | None:
    """Mirrors `nf_ct_invert_tuple()`: the tuple a reply would carry.

    The kernel's switch: ICMP inverts through `invmap`; every other protocol swaps the addresses and the
    `u` parts (ports, GRE keys, or zeros). Returns None when the kernel cannot invert (an ICMP type without
    an `invmap` entry), in which case no ct can be created and the packet is INVALID. Each l4proto record
    (`natbox.conntrack.l4proto`) names the same function as its `invert_tuple`.
    """
    src, sport, dst, dport, proto = t
    if proto == IPPROTO_ICMP:
        return icmp_invert_tuple(t)
    if proto == IPPROTO_ICMPV6:
        return icmpv6_invert_tuple(t)
    return _new_tuple(ConnTuple, (dst, dport, src, sport, proto))


# --- nf_ct_get_tuple: the tuple of a packet's bytes -------------------------------------------------------

_GRE_PROTO_PPP: Final = b"\x88\x0b"
_GRE_VERSION_MASK: Final = 0x07
_GRE_VERSION_PPTP: Final = 1
_IP_OFFSET: Final = IP_OFFSET


def ipv4_get_l4proto(data: bytes | bytearray, nhoff: int) -> tuple[int, int] | None:
    """Mirrors `ipv4_get_l4proto()`: (dataoff, protocol), or None for a fragment with an offset or a header
    that does not fit."""
    if len(data) < nhoff + IPH_MIN_LEN:
        return None
    frag = nhoff + IPH_FRAG_OFF
    if ((data[frag] << 8) | data[frag + 1]) & _IP_OFFSET:  # conntrack sees reassembled packets only
        return None
    dataoff = nhoff + (data[nhoff + IPH_VER_IHL] & 0x0F) * 4
    if dataoff > len(data):
        return None
    return dataoff, data[nhoff + IPH_PROTOCOL]


def ipv4_addrs(data: bytes | bytearray, nhoff: int) -> tuple[int, int]:
    """`ipv4_pkt_to_tuple()`: (saddr, daddr) of the IPv4 header at `nhoff` (the caller checked its length)."""
    return (int.from_bytes(data[nhoff + IPH_SADDR : nhoff + IPH_SADDR + 4], "big"),
            int.from_bytes(data[nhoff + IPH_DADDR : nhoff + IPH_DADDR + 4], "big"))


def ports_pkt_to_tuple(data: bytes | bytearray, src: int, dst: int, dataoff: int, proto: int) -> ConnTuple | None:
    """Mirrors `nf_ct_get_tuple_ports()`: the first four bytes of the header are the ports (TCP, UDP,
    UDP-Lite, SCTP)."""
    if len(data) < dataoff + L4_PORTS_END:
        return None
    sport = (data[dataoff + L4_SPORT] << 8) | data[dataoff + L4_SPORT + 1]
    dport = (data[dataoff + L4_DPORT] << 8) | data[dataoff + L4_DPORT + 1]
    return _new_tuple(ConnTuple, (src, sport, dst, dport, proto))


def icmp_pkt_to_tuple(data: bytes | bytearray, src: int, dst: int, dataoff: int, proto: int) -> ConnTuple | None:
    """Mirrors `icmp_pkt_to_tuple()`: the id from bytes 4-5 of every type; type and code as `dst.u`."""
    if len(data) < dataoff + ICMPH_LEN:
        return None
    ident = (data[dataoff + ICMPH_ID] << 8) | data[dataoff + ICMPH_ID + 1]
    return ConnTuple(src, ident, dst, (data[dataoff + ICMPH_TYPE] << 8) | data[dataoff + ICMPH_CODE], proto)


def gre_pkt_to_tuple(data: bytes | bytearray, src: int, dst: int, dataoff: int, proto: int) -> ConnTuple | None:
    """Mirrors `gre_pkt_to_tuple()`: PPTP (GRE version 1) keys; keys 0, like generic, for any other GRE."""
    n = len(data)
    if n < dataoff + GREH_PROTOCOL + 2 or (data[dataoff + GREH_FLAGS + 1] & _GRE_VERSION_MASK) != _GRE_VERSION_PPTP:
        return ConnTuple(src, 0, dst, 0, IPPROTO_GRE)  # not PPTP: keys 0, like generic
    if n < dataoff + GREH_CALL_ID + 2:
        return ConnTuple(src, 0, dst, 0, IPPROTO_GRE)
    if data[dataoff + GREH_PROTOCOL : dataoff + GREH_PROTOCOL + 2] != _GRE_PROTO_PPP:
        return None  # "Unsupported GRE proto"
    # dst key = PPTP call id; src key from the PPTP helper's keymap (none here: 0)
    return ConnTuple(src, 0, dst, (data[dataoff + GREH_CALL_ID] << 8) | data[dataoff + GREH_CALL_ID + 1], IPPROTO_GRE)


def generic_pkt_to_tuple(data: bytes | bytearray, src: int, dst: int, dataoff: int, proto: int) -> ConnTuple | None:
    """`nf_ct_get_tuple()`'s default: no layer-4 part (`u.all` = 0)."""
    return ConnTuple(src, 0, dst, 0, proto)


def format_addr(addr: int) -> str:
    """Dotted quad of a host-order IPv4 address (an int wider than 32 bits is an IPv6 address: RFC 5952 text,
    so traces and messages about either family read right)."""
    if addr > 0xFFFFFFFF:
        return _format_addr6(addr)
    return f"{(addr >> 24) & 0xFF}.{(addr >> 16) & 0xFF}.{(addr >> 8) & 0xFF}.{addr & 0xFF}"


def parse_addr(text: str) -> int:
    """Host-order int of a dotted-quad IPv4 address (raises ValueError on bad input)."""
    return int(ipaddress.IPv4Address(text))
