"""One record per layer-4 protocol conntrack knows: the kernel's `struct nf_conntrack_l4proto` (§2, §3).

`nf_ct_l4proto_find(protonum)` returns the record (the generic one for a protocol without a tracker), as
the kernel's function of that name does. A record holds what the kernel keeps per protocol, spread over
`nf_conntrack_l4proto_*` in nf_conntrack_proto_*.c and the switches of nf_conntrack_core.c:

| field            | kernel                                                                       |
|------------------|------------------------------------------------------------------------------|
| `l4proto`, `name`| `.l4proto`; the name `conntrack -L` prints                                    |
| `pkt_to_tuple`   | `nf_ct_get_tuple()`'s case for the protocol (`*_pkt_to_tuple`)               |
| `invert_tuple`   | `nf_ct_invert_tuple()`'s case (ICMP's `invmap`, else `u` parts swap)          |
| `error`          | the header check run before tracking (`tcp_error`, `udp_error`, ICMP errors)  |
| `packet`         | the tracker (`nf_conntrack_*_packet`), dispatched by `nf_conntrack_handle_packet` |
| `allow_clash`    | `.allow_clash`: clash resolution at confirm (§2.5) and `nf_nat_used_tuple_new` |
| `timeouts`       | the per-netns `timeouts[]` the tracker refreshes to (`*_get_timeouts`)        |
| `can_early_drop` | `.can_early_drop` (`tcp_can_early_drop`), asked by gc in early-drop mode      |

The sets other modules test in their hot paths (`PORT_PROTOS`, `ALLOW_CLASH`) are derived from these
records, never kept by hand. NAT's per-protocol record is `natbox.nat.l4proto` (nat imports conntrack,
not the other way round).

`.allow_clash` in Linux 6.x: true for UDP and UDP-Lite (nf_conntrack_proto_udp.c) and GRE (since 6.5,
nf_conntrack_proto_gre.c, "netfilter: conntrack: allow insertion clash of gre protocol"); false for TCP,
ICMP and the generic tracker. ICMP gets it only in a patch for a later kernel ("netfilter: nf_conntrack:
enable icmp clash support", nf-next, January 2026), so 6.x resolves no ICMP clash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from natbox.conntrack.proto.generic import NF_INVALID, generic_packet, gre_packet
from natbox.conntrack.proto.icmp import icmp_packet
from natbox.conntrack.proto.icmpv6 import icmpv6_packet
from natbox.conntrack.proto.sctp import sctp_can_early_drop, sctp_packet
from natbox.conntrack.proto.tcp import tcp_can_early_drop, tcp_error, tcp_packet
from natbox.conntrack.proto.udp import udp_error, udp_packet, udplite_error, udplite_packet
from natbox.conntrack.tuple import (
    ConnTuple,
    generic_pkt_to_tuple,
    gre_pkt_to_tuple,
    icmp_invert_tuple,
    icmp_pkt_to_tuple,
    icmpv6_invert_tuple,
    ipv4_addrs,
    ipv4_get_l4proto,
    ports_invert_tuple,
    ports_pkt_to_tuple,
)
from natbox.netfilter import (
    IPPROTO_GRE,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPPROTO_UDPLITE,
    NFPROTO_IPV6,
    Hook,
)

if TYPE_CHECKING:
    from natbox.conntrack.config import ConntrackConfig
    from natbox.conntrack.conn import Conn
    from natbox.conntrack.ops import CtTableOps
    from natbox.skb import Skb

__all__ = ["ALLOW_CLASH", "L4PROTOS", "PORT_PROTOS", "L4Proto", "nf_ct_get_tuplepr", "nf_ct_l4proto_find"]

# (conn, skb, dataoff, direction, hook, now, table, cfg) -> verdict (see natbox.conntrack.proto.generic)
PacketFn = Callable[["Conn", "Skb", int, int, Hook, float, "CtTableOps", "ConntrackConfig"], int]
# (skb, dataoff, hook, cfg) -> the INVALID reason, or None
ErrorFn = Callable[["Skb", int, Hook, "ConntrackConfig"], "str | None"]
# (data, saddr, daddr, dataoff, protonum) -> tuple, or None when the header is too short
PktToTupleFn = Callable[[bytes | bytearray, int, int, int, int], ConnTuple | None]


@dataclass(frozen=True, slots=True)
class L4Proto:
    """`struct nf_conntrack_l4proto`: what conntrack knows about one layer-4 protocol."""

    l4proto: int
    name: str
    pkt_to_tuple: PktToTupleFn
    invert_tuple: Callable[[ConnTuple], ConnTuple | None]
    packet: PacketFn
    timeouts: Callable[[ConntrackConfig], tuple[int, ...]]
    error: ErrorFn | None = None
    allow_clash: bool = False
    can_early_drop: Callable[[Conn], bool] | None = None
    ports: bool = False  # the tuple's `u` parts are ports (nf_ct_port_tuple_to_nlattr)


# --- the trackers with the common signature (`nf_conntrack_handle_packet`'s switch) ---------------------

def _udp(conn: Conn, skb: Skb, dataoff: int, direction: int, hook: Hook, now: float, table: CtTableOps,
         cfg: ConntrackConfig) -> int:
    return udp_packet(conn, skb, dataoff, direction, hook, now, cfg)


def _udplite(conn: Conn, skb: Skb, dataoff: int, direction: int, hook: Hook, now: float, table: CtTableOps,
             cfg: ConntrackConfig) -> int:
    return udplite_packet(conn, skb, dataoff, direction, hook, now, cfg)


def _icmp(conn: Conn, skb: Skb, dataoff: int, direction: int, hook: Hook, now: float, table: CtTableOps,
          cfg: ConntrackConfig) -> int:
    return icmp_packet(conn, skb, direction, now, cfg)


def _icmpv6(conn: Conn, skb: Skb, dataoff: int, direction: int, hook: Hook, now: float, table: CtTableOps,
            cfg: ConntrackConfig) -> int:
    if skb.family != NFPROTO_IPV6:
        skb.note = "icmpv6: not an IPv6 packet"
        return NF_INVALID  # nf_conntrack_icmpv6_packet: state->pf != NFPROTO_IPV6
    return icmpv6_packet(conn, skb, direction, now, cfg)


def _gre(conn: Conn, skb: Skb, dataoff: int, direction: int, hook: Hook, now: float, table: CtTableOps,
         cfg: ConntrackConfig) -> int:
    return gre_packet(conn, direction, len(skb.data), now, cfg)


def _generic(conn: Conn, skb: Skb, dataoff: int, direction: int, hook: Hook, now: float, table: CtTableOps,
             cfg: ConntrackConfig) -> int:
    return generic_packet(conn, direction, len(skb.data), now, cfg)


def _sctp(conn: Conn, skb: Skb, dataoff: int, direction: int, hook: Hook, now: float, table: CtTableOps,
          cfg: ConntrackConfig) -> int:
    return sctp_packet(conn, skb, dataoff, direction, hook, now, cfg)


def _udp_error(skb: Skb, dataoff: int, hook: Hook, cfg: ConntrackConfig) -> str | None:
    return udp_error(skb, dataoff, hook, cfg.checksum)


def _udplite_error(skb: Skb, dataoff: int, hook: Hook, cfg: ConntrackConfig) -> str | None:
    return udplite_error(skb, dataoff, hook, cfg.checksum)


# --- the records ------------------------------------------------------------------------------------------

TCP: Final = L4Proto(
    IPPROTO_TCP, "tcp", ports_pkt_to_tuple, ports_invert_tuple, tcp_packet, lambda cfg: cfg.tcp_timeouts(),
    error=tcp_error, can_early_drop=tcp_can_early_drop, ports=True,
)
UDP: Final = L4Proto(
    IPPROTO_UDP, "udp", ports_pkt_to_tuple, ports_invert_tuple, _udp,
    lambda cfg: (cfg.udp_timeout, cfg.udp_timeout_stream),  # UDP_CT_UNREPLIED, UDP_CT_REPLIED
    error=_udp_error, allow_clash=True, ports=True,
)
UDPLITE: Final = L4Proto(
    IPPROTO_UDPLITE, "udplite", ports_pkt_to_tuple, ports_invert_tuple, _udplite,
    lambda cfg: (cfg.udp_timeout, cfg.udp_timeout_stream),
    error=_udplite_error, allow_clash=True, ports=True,
)
ICMP: Final = L4Proto(
    IPPROTO_ICMP, "icmp", icmp_pkt_to_tuple, icmp_invert_tuple, _icmp, lambda cfg: (cfg.icmp_timeout,),
)  # its error check (nf_conntrack_icmpv4_error) runs before the lookup: natbox.conntrack.proto.icmp
ICMPV6: Final = L4Proto(
    IPPROTO_ICMPV6, "icmpv6", icmp_pkt_to_tuple, icmpv6_invert_tuple, _icmpv6, lambda cfg: (cfg.icmpv6_timeout,),
)  # its error check (nf_conntrack_icmpv6_error) runs before the lookup: natbox.conntrack.proto.icmpv6
GRE: Final = L4Proto(
    IPPROTO_GRE, "gre", gre_pkt_to_tuple, ports_invert_tuple, _gre,
    lambda cfg: (cfg.gre_timeout, cfg.gre_timeout_stream),  # GRE_CT_UNREPLIED, GRE_CT_REPLIED
    allow_clash=True,
)
# nf_conntrack_l4proto_sctp (its error check, sctp_error, runs inside the tracker as in the kernel)
SCTP: Final = L4Proto(
    IPPROTO_SCTP, "sctp", ports_pkt_to_tuple, ports_invert_tuple, _sctp, lambda cfg: cfg.sctp_timeouts(),
    can_early_drop=sctp_can_early_drop, ports=True,
)
# nf_conntrack_l4proto_generic: every protocol without a record (DCCP too since Linux 6.16).
GENERIC: Final = L4Proto(0, "unknown", generic_pkt_to_tuple, ports_invert_tuple, _generic,
    lambda cfg: (cfg.generic_timeout,))

L4PROTOS: dict[int, L4Proto] = {p.l4proto: p for p in (TCP, UDP, UDPLITE, ICMP, ICMPV6, GRE, SCTP)}

# Derived views for hot paths.
PORT_PROTOS: Final = frozenset(p.l4proto for p in L4PROTOS.values() if p.ports)
ALLOW_CLASH: Final = frozenset(p.l4proto for p in L4PROTOS.values() if p.allow_clash)


def nf_ct_l4proto_find(l4proto: int) -> L4Proto:
    """Mirrors `nf_ct_l4proto_find()`: the protocol's record, or the generic one."""
    return L4PROTOS.get(l4proto, GENERIC)


def nf_ct_get_tuplepr(data: bytes | bytearray, nhoff: int) -> ConnTuple | None:
    """Mirrors `nf_ct_get_tuplepr()` → `nf_ct_get_tuple()`: the tuple of the IPv4 datagram at `data[nhoff]`
    (the header embedded in an ICMP error, or a packet), its layer-4 part from the protocol's record. None
    for a non-first fragment or a header too short for the tuple."""
    l4 = ipv4_get_l4proto(data, nhoff)
    if l4 is None or l4[0] <= 0:
        return None
    dataoff, proto = l4
    src, dst = ipv4_addrs(data, nhoff)
    return L4PROTOS.get(proto, GENERIC).pkt_to_tuple(data, src, dst, dataoff, proto)
