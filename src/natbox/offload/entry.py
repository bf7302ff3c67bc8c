"""One BPF map entry per flow direction, made from the engine's FlowPlan: plain data, no I/O.

The kernel data path (natbox_offload.bpf.c, loaded by datapath.py) looks a packet up by an `OffloadKey`
and does what the `OffloadAction` says. Both are built only from the fields of a `FlowPlan`
(engine/fastpath.py): the plan already holds the match (`match`: the addresses and ports the packets
carry), what both NAT manips write (`new_addrs`, `icmp_id`), the checksum differences NAT and the TTL
decrement make (`ip_add`, `l4_sub`, `l4_partial_add`), the route (`oif`, `dst_mac`, `l2`) and the MTU; nothing
about NAT is derived again here.

ICMP echo keys hold the echo id in `sport` and type << 8 | code in `dport`, where conntrack's tuple keeps
them (icmp_pkt_to_tuple), so a request and a reply with the same id and addresses are different keys.

Checksum differences. The plan's differences are one's-complement values mod 0xFFFF that an executor adds
to (IP) or subtracts from (L4) a checksum. The BPF program applies them with the csum helpers' difference
form (size 0: `csum_replace_by_diff`, which subtracts; `inet_proto_csum_replace_by_diff` for L4, which
for a CHECKSUM_PARTIAL skb adds the pseudo-header part instead), so the action holds:
- `l3_diff`: what to subtract from the IP checksum, -ip_add mod 0xFFFF (NAT's address changes and
  ip_decrease_ttl's +0x0100);
- `l4_addr_diff`: the addresses' part of the L4 difference (applied with BPF_F_PSEUDO_HDR: a partial
  checksum gets it too), the plan's `l4_partial_add`;
- `l4_port_diff`: the rest (ports; ICMP: the id, the whole difference since ICMP has no pseudo-header),
  `l4_sub - l4_partial_add`.
Each is a 16-bit value in network order stored in the first two bytes of a 32-bit __wsum, which the
one's-complement sum reads the same on either byte order.

Struct layouts (native byte order for ifindex, MTU, flags and counters; network order for the rest); the
C structs in natbox_offload.bpf.c are the same, which tests/offload/test_entry.py checks:
- key, 20 bytes: ifindex u32, saddr, daddr, sport, dport, proto u8, 3 bytes padding;
- action, 48 bytes: oif u32, mtu u32, dst MAC, src MAC, saddr, daddr, sport, dport, l3_diff, l4_addr_diff,
  l4_port_diff (each 4 bytes), flags u32 (bit 0: the L4 checksum changes);
- stats, 24 bytes per CPU: packets, bytes (IP total lengths, as conntrack's accounting counts), last_seen_ns
  (bpf_ktime_get_ns: CLOCK_MONOTONIC), all u64.

IPv6 (plans of family NFPROTO_IPV6, engine/fastpath6.py) has maps of its own (nb_flows6, nb_stats6), so the
IPv4 key stays 20 bytes: `OffloadKey.family` and `OffloadAction.family` say which. There is no header
checksum (`l3_diff` is 0 and not encoded); the L4 checksums of TCP, UDP and ICMPv6 all cover the
pseudo-header of 128-bit addresses, so for ICMPv6 too `l4_addr_diff` is the addresses' part and
`l4_port_diff` the echo id's (`icmpv6_manip_pkt`). Layouts:
- key6, 44 bytes: ifindex u32, saddr (16 bytes), daddr (16), sport, dport, proto u8, 3 bytes padding;
- action6, 68 bytes: oif u32, mtu u32, dst MAC, src MAC, saddr (16), daddr (16), sport, dport, l4_addr_diff,
  l4_port_diff (each 4 bytes), flags u32;
- stats: as IPv4's (bytes: 40 + payload_len, the IPv6 packet's length, as conntrack counts).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from natbox.netfilter import NFPROTO_IPV4, NFPROTO_IPV6

if TYPE_CHECKING:  # the engine makes plans; this module only reads them (no import at run time)
    from natbox.engine.fastpath import FlowPlan

__all__ = [
    "ACTION6_SIZE",
    "ACTION_SIZE",
    "KEY6_SIZE",
    "KEY_SIZE",
    "MAX_FLOWS",
    "STATS_SIZE",
    "FlowStats",
    "OffloadAction",
    "OffloadKey",
    "decode_action",
    "decode_key",
    "decode_stats",
    "encode_action",
    "encode_key",
    "offload_entry",
]

MAX_FLOWS = 65536  # entries of the BPF maps (NB_MAX_FLOWS in the C source): engine/fastpath.FLOW_CACHE_MAX
F_L4_REWRITE = 1  # action flag: NAT changes the L4 checksum (NB_F_L4_REWRITE)

# each layout as its native-order and network-order runs
_U32 = struct.Struct("=I")  # ifindex, oif, mtu, flags
_KEY_NET = struct.Struct("!IIHHB3x")  # saddr, daddr, sport, dport, proto, padding
_ACTION_HEAD = struct.Struct("=II6s6s")  # oif, mtu, dst MAC, src MAC
_ACTION_NET = struct.Struct("!IIHHH2xH2xH2x")  # saddr, daddr, sport, dport, the three __wsum differences
_STATS = struct.Struct("=QQQ")
KEY_SIZE = _U32.size + _KEY_NET.size  # 20
ACTION_SIZE = _ACTION_HEAD.size + _ACTION_NET.size + _U32.size  # 48
STATS_SIZE = _STATS.size  # 24
_NET_END = _ACTION_HEAD.size + _ACTION_NET.size
_KEY6_NET = struct.Struct("!16s16sHHB3x")  # IPv6: saddr, daddr, sport, dport, proto, padding
_ACTION6_NET = struct.Struct("!16s16sHHH2xH2x")  # saddr, daddr, sport, dport, the two L4 __wsum differences
KEY6_SIZE = _U32.size + _KEY6_NET.size  # 44
ACTION6_SIZE = _ACTION_HEAD.size + _ACTION6_NET.size + _U32.size  # 68
_NET6_END = _ACTION_HEAD.size + _ACTION6_NET.size

_PROTOS = (1, 6, 17)  # ICMP (echo), TCP, UDP: what a FlowPlan covers
_PROTOS6 = (6, 17, 58)  # TCP, UDP, ICMPv6 (echo): what an IPv6 FlowPlan covers
_MAC_LEN = 6
_MATCH_LEN = 12  # saddr, daddr and 4 bytes of ports (ICMP: type, code, id)
_MATCH6_LEN = 36  # IPv6: saddr, daddr and 4 bytes of ports (ICMPv6: type, code, id)


class OffloadKey(NamedTuple):
    """What a packet is looked up by: where it arrives and its addresses and ports (host-order ints).
    ICMP echo: `sport` is the id, `dport` the type << 8 | code. `family`: NFPROTO_IPV4 or NFPROTO_IPV6 (which
    map, which layout)."""

    ifindex: int
    proto: int
    saddr: int
    daddr: int
    sport: int
    dport: int
    family: int = NFPROTO_IPV4


class OffloadAction(NamedTuple):
    """What the data path does with a packet of the key: the rewrite and the way out (see the module
    docstring for the checksum differences). ICMP echo: `sport` is the id NAT writes, `dport` unused (0)."""

    oif: int
    mtu: int
    dst_mac: bytes
    src_mac: bytes
    saddr: int
    daddr: int
    sport: int
    dport: int
    l3_diff: int
    l4_addr_diff: int
    l4_port_diff: int
    l4_rewrite: bool
    family: int = NFPROTO_IPV4


class FlowStats(NamedTuple):
    """The data path's counters of one entry, summed over CPUs: packets, bytes (IP total lengths) and the
    last packet's time, CLOCK_MONOTONIC nanoseconds (0: none yet). Cumulative since the key was installed:
    installing it again keeps them, removing it deletes them (a reader folds the differences)."""

    packets: int
    bytes: int
    last_seen_ns: int


def offload_entry(plan: FlowPlan, ifindex: Callable[[str], int]) -> tuple[OffloadKey, OffloadAction] | None:
    """The map entry of a compiled flow's plan; None when the data path cannot carry it: a next hop whose
    MAC natbox made up (neigh_synthetic) or resolves per packet (no `dst_mac`), a plan without its match,
    a device without an index (`ifindex` returns 0 or less)."""
    if plan.family == NFPROTO_IPV6:
        return _entry6(plan, ifindex)
    match = plan.match
    if (plan.proto not in _PROTOS or plan.neigh_synthetic or len(plan.dst_mac) != _MAC_LEN
            or len(match) != _MATCH_LEN or len(plan.l2) < _MAC_LEN or not 0 < plan.mtu <= 0xFFFF):
        return None
    iif, oif = ifindex(plan.iif), ifindex(plan.oif)
    if iif <= 0 or oif <= 0:
        return None
    new = plan.new_addrs
    saddr, daddr = int.from_bytes(match[0:4], "big"), int.from_bytes(match[4:8], "big")
    if plan.proto == 1:  # match: addresses, type and code, id (family.flow_key)
        if len(plan.icmp_id) != 2 or len(new) < 8:  # the id; two addresses
            return None
        key = OffloadKey(iif, 1, saddr, daddr, int.from_bytes(match[10:12], "big"),
                         int.from_bytes(match[8:10], "big"))
        sport, dport = int.from_bytes(plan.icmp_id, "big"), 0
        addr_diff, port_diff = 0, plan.l4_sub  # no pseudo-header: the whole difference is the id's
    else:
        if len(new) != _MATCH_LEN:
            return None
        key = OffloadKey(iif, plan.proto, saddr, daddr, int.from_bytes(match[8:10], "big"),
                         int.from_bytes(match[10:12], "big"))
        sport, dport = int.from_bytes(new[8:10], "big"), int.from_bytes(new[10:12], "big")
        addr_diff, port_diff = plan.l4_partial_add, (plan.l4_sub - plan.l4_partial_add) % 0xFFFF
    action = OffloadAction(
        oif, plan.mtu, plan.dst_mac, plan.l2[:_MAC_LEN], int.from_bytes(new[0:4], "big"),
        int.from_bytes(new[4:8], "big"), sport, dport, -plan.ip_add % 0xFFFF,
        addr_diff % 0xFFFF if plan.l4_rewrite else 0, port_diff % 0xFFFF if plan.l4_rewrite else 0,
        plan.l4_rewrite)
    return key, action


def _entry6(plan: FlowPlan, ifindex: Callable[[str], int]) -> tuple[OffloadKey, OffloadAction] | None:
    """`offload_entry` for an IPv6 plan (engine/fastpath6.py): the match is flow_key6's (addresses, then ports,
    or ICMPv6's type, code and id), `new_addrs` the 32 address bytes (TCP/UDP: and the ports), no IP checksum."""
    match, new = plan.match, plan.new_addrs
    if (plan.proto not in _PROTOS6 or plan.neigh_synthetic or len(plan.dst_mac) != _MAC_LEN
            or len(match) != _MATCH6_LEN or len(plan.l2) < _MAC_LEN or not 0 < plan.mtu <= 0xFFFF):
        return None
    iif, oif = ifindex(plan.iif), ifindex(plan.oif)
    if iif <= 0 or oif <= 0:
        return None
    saddr, daddr = int.from_bytes(match[0:16], "big"), int.from_bytes(match[16:32], "big")
    if plan.proto == 58:  # match: addresses, type and code, id (flow_key6)
        if len(plan.icmp_id) != 2 or len(new) < 32:
            return None
        key = OffloadKey(iif, 58, saddr, daddr, int.from_bytes(match[34:36], "big"),
                         int.from_bytes(match[32:34], "big"), NFPROTO_IPV6)
        sport, dport = int.from_bytes(plan.icmp_id, "big"), 0
    else:
        if len(new) != _MATCH6_LEN:
            return None
        key = OffloadKey(iif, plan.proto, saddr, daddr, int.from_bytes(match[32:34], "big"),
                         int.from_bytes(match[34:36], "big"), NFPROTO_IPV6)
        sport, dport = int.from_bytes(new[32:34], "big"), int.from_bytes(new[34:36], "big")
    # the pseudo-header covers the addresses for all three (ICMPv6 too): the addresses' part, then the rest
    addr_diff, port_diff = plan.l4_partial_add, (plan.l4_sub - plan.l4_partial_add) % 0xFFFF
    action = OffloadAction(
        oif, plan.mtu, plan.dst_mac, plan.l2[:_MAC_LEN], int.from_bytes(new[0:16], "big"),
        int.from_bytes(new[16:32], "big"), sport, dport, 0,
        addr_diff % 0xFFFF if plan.l4_rewrite else 0, port_diff if plan.l4_rewrite else 0, plan.l4_rewrite,
        NFPROTO_IPV6)
    return key, action


def encode_key(k: OffloadKey) -> bytes:
    """struct nb_key (IPv6: struct nb_key6)."""
    if k.family == NFPROTO_IPV6:
        return _U32.pack(k.ifindex) + _KEY6_NET.pack(k.saddr.to_bytes(16, "big"), k.daddr.to_bytes(16, "big"),
                                                     k.sport, k.dport, k.proto)
    return _U32.pack(k.ifindex) + _KEY_NET.pack(k.saddr, k.daddr, k.sport, k.dport, k.proto)


def decode_key(b: bytes) -> OffloadKey:
    """struct nb_key or nb_key6 (by its size) read back (the inverse of encode_key)."""
    if len(b) == KEY6_SIZE:
        s6, d6, sport, dport, proto = _KEY6_NET.unpack_from(b, _U32.size)
        return OffloadKey(_U32.unpack_from(b)[0], proto, int.from_bytes(s6, "big"), int.from_bytes(d6, "big"),
                          sport, dport, NFPROTO_IPV6)
    saddr, daddr, sport, dport, proto = _KEY_NET.unpack_from(b, _U32.size)
    return OffloadKey(_U32.unpack_from(b)[0], proto, saddr, daddr, sport, dport)


def encode_action(a: OffloadAction) -> bytes:
    """struct nb_action (IPv6: nb_action6); each checksum difference is a network-order 16-bit value in a
    32-bit __wsum."""
    flags = _U32.pack(F_L4_REWRITE if a.l4_rewrite else 0)
    if a.family == NFPROTO_IPV6:
        return (_ACTION_HEAD.pack(a.oif, a.mtu, a.dst_mac, a.src_mac)
                + _ACTION6_NET.pack(a.saddr.to_bytes(16, "big"), a.daddr.to_bytes(16, "big"), a.sport, a.dport,
                                    a.l4_addr_diff, a.l4_port_diff) + flags)
    return (_ACTION_HEAD.pack(a.oif, a.mtu, a.dst_mac, a.src_mac)
            + _ACTION_NET.pack(a.saddr, a.daddr, a.sport, a.dport, a.l3_diff, a.l4_addr_diff, a.l4_port_diff)
            + _U32.pack(F_L4_REWRITE if a.l4_rewrite else 0))


def decode_action(b: bytes) -> OffloadAction:
    """struct nb_action or nb_action6 (by its size) read back (the inverse of encode_action)."""
    oif, mtu, dmac, smac = _ACTION_HEAD.unpack_from(b)
    if len(b) == ACTION6_SIZE:
        s6, d6, sport, dport, l4a, l4p = _ACTION6_NET.unpack_from(b, _ACTION_HEAD.size)
        flags = _U32.unpack_from(b, _NET6_END)[0]
        return OffloadAction(oif, mtu, dmac, smac, int.from_bytes(s6, "big"), int.from_bytes(d6, "big"), sport,
                             dport, 0, l4a, l4p, bool(flags & F_L4_REWRITE), NFPROTO_IPV6)
    saddr, daddr, sport, dport, l3, l4a, l4p = _ACTION_NET.unpack_from(b, _ACTION_HEAD.size)
    flags = _U32.unpack_from(b, _NET_END)[0]
    return OffloadAction(oif, mtu, dmac, smac, saddr, daddr, sport, dport, l3, l4a, l4p, bool(flags & F_L4_REWRITE))


def decode_stats(b: bytes) -> FlowStats:
    """struct nb_stats: one CPU's, or several CPUs' values one after the other (a per-CPU map's lookup),
    summed (last_seen_ns: the latest)."""
    packets = nbytes = last = 0
    for p, n, t in _STATS.iter_unpack(b[: len(b) - len(b) % STATS_SIZE]):
        packets += p
        nbytes += n
        last = max(last, t)
    return FlowStats(packets, nbytes, last)
