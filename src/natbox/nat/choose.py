"""Choosing a NAT tuple's parts: the range tests, the address choice and the manip part (§4.5).

Mirrors `nf_in_range()`, `l4proto_in_range()` and `find_best_ips_proto()` of net/netfilter/nf_nat_core.c,
with the small helpers `get_unique_tuple` (natbox.nat.core) uses to read, replace and describe a tuple's
manip part (a port, an ICMP id or a GRE key, as its protocol's NAT record says) in its trace lines.
"""

from __future__ import annotations

from typing import Final

from natbox.conntrack.conn import Conn
from natbox.conntrack.tuple import ConnTuple, _new_tuple, format_addr
from natbox.nat.jhash import addr_word, jhash2, reciprocal_scale
from natbox.nat.l4proto import nf_nat_l4proto_find
from natbox.nat.range import NatRange, RangeFlags
from natbox.netfilter import ManipType

__all__ = ["find_best_ips_proto", "in_range", "l4proto_in_range"]

# enum members as module constants: `Enum.MEMBER` costs an attribute lookup through EnumType per use
_MANIP_DST: Final = ManipType.DST
_MANIP_SRC: Final = ManipType.SRC
_M32: Final = 0xFFFFFFFF
# the range flags as plain ints: `flags & RangeFlags.X` on an IntFlag builds a new member every time
_RANDOM_ALL: Final = int(RangeFlags.PROTO_RANDOM_ALL)
_MAP_IPS: Final = int(RangeFlags.MAP_IPS)
_PROTO_SPECIFIED: Final = int(RangeFlags.PROTO_SPECIFIED)
_PERSISTENT: Final = int(RangeFlags.PERSISTENT)
_PROTO_RANDOM_FULLY: Final = int(RangeFlags.PROTO_RANDOM_FULLY)
_PROTO_OFFSET: Final = int(RangeFlags.PROTO_OFFSET)
LABEL: Final = {_MANIP_SRC: "SNAT", _MANIP_DST: "DNAT"}


def l4proto_in_range(t: ConnTuple, manip: ManipType, lo: int, hi: int) -> bool:
    """Mirrors `l4proto_in_range()`: is the manip part (ICMP id, port, GRE key) within [lo, hi]?"""
    l4 = nf_nat_l4proto_find(t.proto)
    if not l4.key:
        return True
    return lo <= key_of(t, manip) <= hi


def in_range(t: ConnTuple, rng: NatRange) -> bool:
    """Mirrors `nf_in_range()`: would `t`'s source satisfy `rng` (address if MAP_IPS, port if specified)?"""
    flags = int(rng.flags)
    if flags & _MAP_IPS and not rng.min_addr <= t.src <= rng.max_addr:
        return False
    if not flags & _PROTO_SPECIFIED:
        return True
    return l4proto_in_range(t, _MANIP_SRC, rng.min_proto, rng.max_proto)


def find_best_ips_proto(t: ConnTuple, rng: NatRange, zone: int, manip: ManipType) -> ConnTuple:
    """Mirrors `find_best_ips_proto()` for IPv4: the address chosen from the range (§4.5 step 2).

    min == max: that address. Otherwise `min + reciprocal_scale(jhash2(src, 4 words, initval), size)`,
    with initval 0 for --persistent, else the destination word xor the zone id. Deterministic.
    """
    flags = int(rng.flags)
    if not flags & _MAP_IPS:
        return t
    lo, hi = rng.min_addr, rng.max_addr
    if lo == hi:
        new = lo
    elif (lo | hi | t.src | t.dst) >> 32:
        new = _best_ip6(t, lo, hi, zone, bool(flags & _PERSISTENT))
    else:
        initval = 0 if flags & _PERSISTENT else (addr_word(t.dst) ^ zone) & _M32
        j = jhash2((addr_word(t.src), 0, 0, 0), initval)
        new = (lo + reciprocal_scale(j, (hi - lo + 1) & _M32)) & _M32
    if manip == _MANIP_SRC:
        return _new_tuple(ConnTuple, (new, t[1], t[2], t[3], t[4]))
    return _new_tuple(ConnTuple, (t[0], t[1], new, t[3], t[4]))


def _words6(addr: int) -> tuple[int, int, int, int]:
    """The four 32-bit words of an IPv6 address as the kernel loads them from memory (`addr_word`: host
    order of network-order bytes)."""
    return (addr_word(addr >> 96), addr_word((addr >> 64) & _M32), addr_word((addr >> 32) & _M32),
            addr_word(addr & _M32))


def _best_ip6(t: ConnTuple, lo: int, hi: int, zone: int, persistent: bool) -> int:
    """`find_best_ips_proto()`'s IPv6 loop (IPv6 §3.2): j = jhash2(the 4 source words, initval 0 if
    persistent else dst word 3 ^ zone); per word i, `min + reciprocal_scale(j, max - min + 1)` until a chosen
    word differs from max's, then the full 32-bit range; unless persistent, j ^= dst word i after each."""
    src_w, dst_w = _words6(t.src), _words6(t.dst)
    j = jhash2(src_w, 0 if persistent else (dst_w[3] ^ zone) & _M32)
    full_range = False
    new = 0
    for i in range(4):
        shift = 96 - 32 * i
        max_i = (hi >> shift) & _M32
        if not full_range:
            min_i = (lo >> shift) & _M32
            dist = (max_i - min_i + 1) & _M32
        else:
            min_i, dist = 0, _M32
        word = (min_i + reciprocal_scale(j, dist)) & _M32
        new = (new << 32) | word
        if word != max_i:
            full_range = True
        if not persistent:
            j ^= dst_w[i]
    return new


def key_name(proto: int) -> str:
    return nf_nat_l4proto_find(proto).key or "port"


def part(t: ConnTuple, manip: ManipType) -> str:
    """The manip half of `t` as text: "203.0.113.1:40010", "203.0.113.1 id 7" or just the address."""
    addr, port = (t.src, t.sport) if manip == _MANIP_SRC else (t.dst, t.dport)
    l4 = nf_nat_l4proto_find(t.proto)
    if l4.has_ports:
        return f"{format_addr(addr)}:{port}"
    if l4.key_in_sport:
        return f"{format_addr(addr)} {l4.key} {t.sport}"
    return format_addr(addr)


def key_of(t: ConnTuple, manip: ManipType) -> int:
    """The manip part of `t`: src.u for SRC manip (and always for the ICMP id), else dst.u."""
    if manip == _MANIP_SRC or nf_nat_l4proto_find(t.proto).key_in_sport:
        return t.sport
    return t.dport


def with_key(t: ConnTuple, manip: ManipType, key: int) -> ConnTuple:
    if manip == _MANIP_SRC or nf_nat_l4proto_find(t.proto).key_in_sport:
        return ConnTuple(t.src, key, t.dst, t.dport, t.proto)
    return ConnTuple(t.src, t.sport, t.dst, key, t.proto)


def search_note(
    rng: NatRange, manip: ManipType, *, key: int, clash: Conn | None, lo: int, size: int, cand: ConnTuple,
    probes: int,
) -> str:
    """The trace line for a successful `nf_nat_l4proto_unique_tuple` search."""
    flags = int(rng.flags)
    label = LABEL[manip]
    name = key_name(cand.proto)
    if flags & _RANDOM_ALL:
        how = "--random-fully" if flags & _PROTO_RANDOM_FULLY else "--random"
        why = f"{name} {key} randomised ({how})"
    elif clash is not None:
        why = f"{key} clashes with ct #{clash.ct_id}"
    elif flags & _PROTO_OFFSET:
        why = f"{name} {key} mapped relative to base {rng.base_proto}"
    else:
        why = f"{name} {key} outside the range"
    plural = "probe" if probes == 1 else "probes"
    return f"{label}: {why}; {name} {key_of(cand, manip)} taken from {lo}-{lo + size - 1} after {probes} {plural}"


