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

Addresses are IPv4 addresses as host-order ints (`int.from_bytes(b, "big")`).

The direction of a tuple is not part of it: `nf_ct_tuple_equal` ignores `dst.dir` (§2.1).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import NamedTuple

from natbox.netfilter import IPPROTO_ICMP

__all__ = ["ICMP_INVMAP", "ConnTuple", "format_addr", "invert", "parse_addr"]

# Port-carrying protocols: src.u and dst.u are ports and swap on inversion.
PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})

_PROTO_NAMES = {6: "tcp", 17: "udp", 33: "dccp", 132: "sctp", 136: "udplite"}

# `invmap` in nf_conntrack_proto_icmp.c: request type → reply type and back (§2.2).
ICMP_INVMAP: dict[int, int] = {
    8: 0, 0: 8,  # echo ↔ echo reply
    13: 14, 14: 13,  # timestamp
    15: 16, 16: 15,  # information
    17: 18, 18: 17,  # address mask
}


class ConnTuple(NamedTuple):
    """One direction of a connection: `(src, sport, dst, dport, proto)`."""

    src: int
    sport: int
    dst: int
    dport: int
    proto: int

    def __str__(self) -> str:
        """The tuple as `conntrack -L` prints one direction (§7.3)."""
        head = f"src={format_addr(self.src)} dst={format_addr(self.dst)}"
        if self.proto in PORT_PROTOCOLS:
            return f"{head} sport={self.sport} dport={self.dport} ({_PROTO_NAMES.get(self.proto, self.proto)})"
        if self.proto == IPPROTO_ICMP:
            return f"{head} type={self.dport >> 8} code={self.dport & 0xFF} id={self.sport} (icmp)"
        return f"{head} (proto {self.proto})"

    @property
    def icmp_type(self) -> int:
        return self.dport >> 8

    @property
    def icmp_code(self) -> int:
        return self.dport & 0xFF


# `ConnTuple(a, b, c, d, e)` without the generated `__new__`'s Python frame (half the cost; same object)
_new_tuple: Callable[[type[ConnTuple], tuple[int, int, int, int, int]], ConnTuple] = tuple.__new__


def invert(t: ConnTuple) -> ConnTuple | None:
    """Mirrors `nf_ct_invert_tuple()`: the tuple a reply would carry.

    Returns None when the kernel cannot invert it (an ICMP type without an `invmap` entry), in which
    case no ct can be created and the packet is INVALID.
    """
    proto = t.proto
    if proto in PORT_PROTOCOLS:
        return _new_tuple(ConnTuple, (t[2], t[3], t[0], t[1], proto))
    if proto == IPPROTO_ICMP:
        rtype = ICMP_INVMAP.get(t.dport >> 8)
        if rtype is None:
            return None
        return ConnTuple(t.dst, t.sport, t.src, (rtype << 8) | (t.dport & 0xFF), proto)
    if proto == 47:  # GRE: keys swap like ports
        return ConnTuple(t.dst, t.dport, t.src, t.sport, proto)
    return ConnTuple(t.dst, 0, t.src, 0, proto)


def format_addr(addr: int) -> str:
    """Dotted quad of a host-order IPv4 address."""
    return f"{(addr >> 24) & 0xFF}.{(addr >> 16) & 0xFF}.{(addr >> 8) & 0xFF}.{addr & 0xFF}"


def parse_addr(text: str) -> int:
    """Host-order int of a dotted-quad IPv4 address (raises ValueError on bad input)."""
    return int(ipaddress.IPv4Address(text))
