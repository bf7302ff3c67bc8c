"""Connection tracking's IPv6 entry: `ipv6_conntrack_in` / `ipv6_conntrack_local` (nf_conntrack_proto.c) and
the IPv6 `nf_ct_get_tuplepr` (ipv6-semantics.md §2).

The layer-3 part differs from IPv4 (`ipv6_get_l4proto`: the extension headers skipped by
`ipv6_skip_exthdr`, a non-first fragment or a chain ending in NEXTHDR_NONE is INVALID; 128-bit addresses;
ICMPv6's error check with its untracked ND/MLD types); from the tuple on, both families run the same
`nf_conntrack_in` (its `resolve_normal_ct` part) and the same trackers (conntrack/core.py), which
`ipv6_conntrack_in` calls with its layer-3 result. One table holds both families (§1.1).
"""

from __future__ import annotations

from typing import Final

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.core import nf_conntrack_in
from natbox.conntrack.l4proto import GENERIC, L4PROTOS
from natbox.conntrack.proto.icmp import ICMP_ERROR_TRACKED
from natbox.conntrack.proto.icmpv6 import ICMPV6_UNTRACKED, icmpv6_error
from natbox.conntrack.table import ConntrackTable
from natbox.conntrack.tuple import ConnTuple
from natbox.netfilter import IPPROTO_ICMPV6, NF_ACCEPT, NF_DROP, CtInfo, CtStatus, Hook
from natbox.skb import Skb
from natbox.wire.ipv6 import ipv6_skip_exthdr
from natbox.wire.layout import IP6H_DADDR, IP6H_LEN, IP6H_NEXTHDR, IP6H_SADDR

__all__ = ["ipv6_conntrack_in", "ipv6_get_l4proto", "nf_ct_get_tuplepr6"]

_V4_SPACE: Final = 32  # addresses below 2**32 in both tuple fields would read as IPv4 (conntrack/tuple.py)


def ipv6_get_l4proto(data: bytes | bytearray, nhoff: int) -> tuple[int, int] | None:
    """Mirrors `ipv6_get_l4proto()`: (dataoff, protocol) of the IPv6 packet at `nhoff`, or None for a chain
    `ipv6_skip_exthdr` cannot follow or a non-first fragment."""
    if len(data) < nhoff + IP6H_LEN:
        return None
    off, nexthdr, frag_off = ipv6_skip_exthdr(data, nhoff + IP6H_LEN, data[nhoff + IP6H_NEXTHDR])
    if off < 0 or frag_off & ~0x7:
        return None
    return off, nexthdr


def nf_ct_get_tuplepr6(data: bytes | bytearray, nhoff: int) -> ConnTuple | None:
    """Mirrors `nf_ct_get_tuplepr(skb, nhoff, NFPROTO_IPV6)`: the tuple of the IPv6 packet at `data[nhoff]`
    (an ICMPv6 error's embedded packet), None when it cannot be made."""
    l4 = ipv6_get_l4proto(data, nhoff)
    if l4 is None:
        return None
    dataoff, proto = l4
    src = int.from_bytes(data[nhoff + IP6H_SADDR:nhoff + IP6H_DADDR], "big")
    dst = int.from_bytes(data[nhoff + IP6H_DADDR:nhoff + IP6H_DADDR + 16], "big")
    return L4PROTOS.get(proto, GENERIC).pkt_to_tuple(data, src, dst, dataoff, proto)


def ipv6_conntrack_in(skb: Skb, hook: Hook, now: float, table: ConntrackTable, cfg: ConntrackConfig) -> int:
    """Mirrors `nf_conntrack_in()` for an IPv6 skb (PREROUTING and LOCAL_OUT, -200): attach a ct and ctinfo;
    returns NF_ACCEPT or NF_DROP. INVALID packets are accepted with no ct and `skb.note` saying why. The
    layer-3 part is here (`ipv6_get_l4proto`, `icmpv6_error`, the tuple); conntrack/core.py's
    `nf_conntrack_in` does the rest for both families."""
    tmpl = skb.ct
    if tmpl is not None:
        if not tmpl.status & CtStatus.TEMPLATE:
            return NF_ACCEPT
        skb.ct = None  # a template (SYNPROXY's): handed back to nf_conntrack_in with the tuple below
    if skb.untracked:
        skb.ctinfo = CtInfo.UNTRACKED
        return NF_ACCEPT
    skb.ctinfo = CtInfo.INVALID
    stats = table.stats
    data = skb.data
    l4 = ipv6_get_l4proto(data, 0)
    if l4 is None:
        stats.invalid += 1
        skb.note = "conntrack: no transport header (non-first fragment or extension header chain)"
        return NF_ACCEPT
    dataoff, proto = l4
    src = int.from_bytes(data[IP6H_SADDR:IP6H_DADDR], "big")
    dst = int.from_bytes(data[IP6H_DADDR:IP6H_DADDR + 16], "big")
    if not (src | dst) >> _V4_SPACE:
        stats.invalid += 1
        skb.note = "conntrack: both addresses in ::/96 (not tracked by natbox)"
        return NF_ACCEPT
    l4proto = L4PROTOS.get(proto, GENERIC)
    if proto == IPPROTO_ICMPV6:
        ret = icmpv6_error(skb, dataoff, hook, now, table, cfg, nf_ct_get_tuplepr6)
        if ret == ICMPV6_UNTRACKED:
            skb.untracked = True
            skb.ct = None
            skb.ctinfo = CtInfo.UNTRACKED
            return NF_ACCEPT
        if ret <= 0:
            stats.error += 1
            skb.ct = None
            skb.ctinfo = CtInfo.INVALID
            return -ret if ret < 0 else NF_DROP
        if ret == ICMP_ERROR_TRACKED:
            return NF_ACCEPT
    t = l4proto.pkt_to_tuple(data, src, dst, dataoff, proto)
    if t is None:
        stats.invalid += 1
        skb.note = "conntrack: transport header too short for a tuple"
        return NF_ACCEPT
    skb.ct = tmpl
    return nf_conntrack_in(skb, hook, now, table, cfg, (t, l4proto, dataoff))
