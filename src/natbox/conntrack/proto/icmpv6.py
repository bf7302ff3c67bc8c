"""ICMPv6 connection tracking (net/netfilter/nf_conntrack_proto_icmpv6.c; ipv6-semantics.md §2.2).

`icmpv6_error` runs before the lookup (`nf_conntrack_icmpv6_error`):

- shorter than the 8-byte header, or a bad checksum at PREROUTING: INVALID;
- MLD 130-132 and 143, RS/RA/NS/NA 133-136, multicast router discovery 151/152: UNTRACKED (`noct_valid_new`);
- Redirect 137 with code 0, hop limit 255, a link-local source and the Redirected Header as its first
  option: its embedded packet is handled like an error's; any other Redirect is tracked normally (INVALID);
- other types >= 128: tracked normally (only 128 and 139 create a ct);
- errors (< 128): `nf_conntrack_inet_error`, RELATED / RELATED_REPLY to the ct of the embedded packet, or
  INVALID.

`icmpv6_packet` is `nf_conntrack_icmpv6_packet`: an unconfirmed ct must be an echo or node information
request; every packet refreshes the ct to `nf_conntrack_icmpv6_timeout` (30 s); never ASSURED.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from natbox.conntrack.proto.generic import NF_INVALID, nf_ct_refresh_acct
from natbox.conntrack.proto.icmp import ICMP_ERROR_TRACKED
from natbox.conntrack.tuple import invert
from natbox.netfilter import NF_ACCEPT, CtInfo, CtStatus, Direction, Hook
from natbox.wire.checksum import csum_fold, csum_partial
from natbox.wire.ipv6 import NEXTHDR_ICMP, is_link_local, pseudo6_sum
from natbox.wire.layout import (
    ICMP6H_LEN,
    ICMP6H_TYPE,
    IP6H_DADDR,
    IP6H_HOP_LIMIT,
    IP6H_SADDR,
    ND_OPT_TYPE,
    RD_OPTS,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from natbox.conntrack.config import ConntrackConfig
    from natbox.conntrack.conn import Conn
    from natbox.conntrack.ops import CtTableOps
    from natbox.conntrack.tuple import ConnTuple
    from natbox.skb import Skb

__all__ = ["ICMPV6_UNTRACKED", "NOCT_VALID_NEW", "VALID_NEW6", "icmpv6_checksum_ok", "icmpv6_error", "icmpv6_packet"]

# noct_valid_new[]: MLD, router/neighbour discovery, multicast router discovery — never tracked
NOCT_VALID_NEW: Final = frozenset({130, 131, 132, 133, 134, 135, 136, 143, 151, 152})
# valid_new[] of nf_conntrack_icmpv6_packet: echo request, node information query
VALID_NEW6: Final = frozenset({128, 139})
ICMPV6_UNTRACKED: Final = 3  # icmpv6_error's result for an ND/MLD message: `nf_ct_set(skb, NULL, IP_CT_UNTRACKED)`
_NDISC_REDIRECT: Final = 137
_ND_OPT_REDIRECT_HDR: Final = 4
_ND_OPT_RH_LEN: Final = 8  # struct nd_opt_hdr + 6 reserved bytes before the redirected packet


def icmpv6_checksum_ok(data: bytes | bytearray, dataoff: int) -> bool:
    """`nf_ip6_checksum()` for ICMPv6: the message from `dataoff` with the pseudo-header sums to 0xFFFF."""
    saddr = int.from_bytes(data[IP6H_SADDR:IP6H_DADDR], "big")
    daddr = int.from_bytes(data[IP6H_DADDR:IP6H_DADDR + 16], "big")
    msg = memoryview(data)[dataoff:]
    return csum_fold(csum_partial(msg, pseudo6_sum(saddr, daddr, NEXTHDR_ICMP, len(msg)))) == 0


def icmpv6_error(
    skb: Skb, dataoff: int, hook: Hook, now: float, table: CtTableOps, cfg: ConntrackConfig,
    get_tuplepr: Callable[[bytes | bytearray, int], ConnTuple | None],
) -> int:
    """Mirrors `nf_conntrack_icmpv6_error()` (see the module docstring). Returns ICMP_ERROR_TRACKED (`skb.ct`
    set, RELATED*), ICMPV6_UNTRACKED, NF_ACCEPT (track it normally) or NF_INVALID (`skb.note` says why).
    `get_tuplepr` is the IPv6 `nf_ct_get_tuplepr` (conntrack/core6.py)."""
    data = skb.data
    if len(data) < dataoff + ICMP6H_LEN:
        skb.note = "icmpv6: short packet"
        return NF_INVALID
    if cfg.checksum and hook == Hook.PRE_ROUTING and not icmpv6_checksum_ok(data, dataoff):
        skb.note = "icmpv6: ICMPv6 checksum failed"
        return NF_INVALID
    itype = data[dataoff + ICMP6H_TYPE]
    if itype in NOCT_VALID_NEW:
        return ICMPV6_UNTRACKED
    inner = dataoff + ICMP6H_LEN
    if itype == _NDISC_REDIRECT:
        # ndisc_check_redirect: only a well-formed redirect from a link-local router quotes a packet
        if data[dataoff + 1] != 0:
            return NF_ACCEPT
        if data[IP6H_HOP_LIMIT] != 255 or not is_link_local(int.from_bytes(data[IP6H_SADDR:IP6H_DADDR], "big")):
            skb.note = "icmpv6: invalid redirect"
            return NF_INVALID
        opt = dataoff + RD_OPTS
        if len(data) < opt + _ND_OPT_RH_LEN or data[opt + ND_OPT_TYPE] != _ND_OPT_REDIRECT_HDR:
            return NF_ACCEPT
        inner = opt + _ND_OPT_RH_LEN
    elif itype >= 128:
        return NF_ACCEPT
    return inet_error(skb, inner, now, table, get_tuplepr)


def inet_error(skb: Skb, inner: int, now: float, table: CtTableOps,
               get_tuplepr: Callable[[bytes | bytearray, int], ConnTuple | None]) -> int:
    """Mirrors `nf_conntrack_inet_error()` for IPv6: the embedded packet at `inner` must belong to a tracked
    flow whose tuple in that direction has the outer daddr as its destination."""
    data = skb.data
    outer_daddr = int.from_bytes(data[IP6H_DADDR:IP6H_DADDR + 16], "big")
    orig = get_tuplepr(data, inner)
    if orig is None:
        skb.note = "icmpv6: cannot parse the embedded header"
        return NF_INVALID
    t = invert(orig)
    if t is None:
        skb.note = "icmpv6: embedded tuple cannot be inverted"
        return NF_INVALID
    hit = table.lookup(t, now)
    if hit is None:
        skb.note = "icmpv6: no ct for inner tuple"
        return NF_INVALID
    conn, found_dir = hit
    if conn.tuples[found_dir].dst != outer_daddr:
        skb.note = "icmpv6: outer daddr != inner ct daddr"
        return NF_INVALID
    skb.ct = conn
    skb.ctinfo = CtInfo.RELATED if found_dir == Direction.ORIGINAL else CtInfo.RELATED_REPLY
    return ICMP_ERROR_TRACKED


def icmpv6_packet(conn: Conn, skb: Skb, direction: int, now: float, cfg: ConntrackConfig) -> int:
    """Mirrors `nf_conntrack_icmpv6_packet()`: a new ct only for types 128 and 139; refresh to 30 s."""
    if not conn.status & CtStatus.CONFIRMED:
        itype = conn.tuples[0].dport >> 8
        if itype not in VALID_NEW6:
            skb.note = f"icmpv6: invalid new with type {itype}"
            return NF_INVALID
    nf_ct_refresh_acct(conn, direction, len(skb.data), cfg.icmpv6_timeout, now, cfg.acct)
    return NF_ACCEPT
