"""The ICMP tracker: queries and errors (§3.4). Mirrors nf_conntrack_proto_icmp.c.

Queries (`nf_conntrack_icmp_packet`): a ct may only be created by a request (`VALID_NEW`: echo 8,
timestamp 13, info 15, address mask 17). Every valid packet refreshes to `nf_conntrack_icmp_timeout`
(30 s); the entry is not deleted on the reply and never becomes ASSURED.

Errors (`nf_conntrack_icmpv4_error`, run before the normal lookup for every ICMP packet):

| check (in order)                                   | failure                    |
|----------------------------------------------------|----------------------------|
| 8 bytes of ICMP header                             | INVALID "short packet"     |
| checksum (PRE_ROUTING, nf_conntrack_checksum=1)    | INVALID "bad checksum"     |
| type <= 18 (NR_ICMP_TYPES)                         | INVALID "invalid icmp type"|
| type is an error (3, 4, 5, 11, 12)                 | not an error: normal path  |
| inner IP header + 8 bytes give a tuple             | INVALID                    |
| the inverted inner tuple is in the table           | INVALID "no ct"            |
| found direction's dst == outer daddr               | INVALID                    |

On success the skb gets the found ct with RELATED (found ORIGINAL) or RELATED_REPLY (found REPLY). Errors
never create a ct and never set SEEN_REPLY. Failures count `error` (not `invalid`) in `conntrack -S`, as
`nf_conntrack_handle_icmp` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from natbox.conntrack.proto.generic import NF_INVALID, nf_ct_refresh_acct
from natbox.conntrack.tuple import invert
from natbox.netfilter import NF_ACCEPT, CtInfo, Direction, Hook
from natbox.wire.checksum import internet_checksum
from natbox.wire.icmp import NR_ICMP_TYPES
from natbox.wire.layout import ICMPH_LEN, ICMPH_TYPE, IPH_DADDR

if TYPE_CHECKING:
    from collections.abc import Callable

    from natbox.conntrack.config import ConntrackConfig
    from natbox.conntrack.conn import Conn
    from natbox.conntrack.ops import CtTableOps
    from natbox.conntrack.tuple import ConnTuple
    from natbox.skb import Skb

__all__ = ["ICMP_ERROR_TRACKED", "ICMP_ERROR_TYPES", "NR_ICMP_TYPES", "VALID_NEW", "icmp_packet", "icmpv4_error"]

# icmp_is_err(): dest unreachable, source quench, redirect, time exceeded, parameter problem
ICMP_ERROR_TYPES: Final = frozenset({3, 4, 5, 11, 12})
# valid_new[] in nf_conntrack_icmp_packet(): the types that may create a ct
VALID_NEW: Final = frozenset({8, 13, 15, 17})
# icmpv4_error() result: the packet is an ICMP error about a tracked flow and `skb.ct` is set (the kernel
# returns NF_ACCEPT and its caller tests skb->_nfct).
ICMP_ERROR_TRACKED: Final = 2


def icmp_packet(conn: Conn, skb: Skb, direction: int, now: float, cfg: ConntrackConfig) -> int:
    """Mirrors `nf_conntrack_icmp_packet()`: the ORIGINAL tuple's type must be a request type."""
    itype = conn.tuples[0].dport >> 8
    if itype not in VALID_NEW:
        skb.note = f"icmp: can't create new conn with type {itype}"
        return NF_INVALID
    nf_ct_refresh_acct(conn, direction, len(skb.data), cfg.icmp_timeout, now, cfg.acct)
    return NF_ACCEPT


def icmpv4_error(
    skb: Skb, dataoff: int, hook: Hook, now: float, table: CtTableOps, cfg: ConntrackConfig,
    get_tuplepr: Callable[[bytes | bytearray, int], ConnTuple | None],
) -> int:
    """Mirrors `nf_conntrack_icmpv4_error()` + `nf_conntrack_inet_error()`.

    `get_tuplepr` is `nf_ct_get_tuplepr` (natbox.conntrack.l4proto, which sits above the trackers and is
    passed in by nf_conntrack_in): the embedded header's tuple, whatever its protocol. Returns
    ICMP_ERROR_TRACKED (`skb.ct` and `skb.ctinfo` set), NF_ACCEPT (not an error: track it as a query) or
    NF_INVALID (`skb.note` says why).
    """
    data = skb.data
    if len(data) < dataoff + ICMPH_LEN:
        skb.note = "icmp: short packet"
        return NF_INVALID
    if cfg.checksum and hook == Hook.PRE_ROUTING and internet_checksum(memoryview(data)[dataoff:]) != 0:
        skb.note = "icmp: bad checksum"
        return NF_INVALID
    itype = data[dataoff + ICMPH_TYPE]
    if itype > NR_ICMP_TYPES:
        skb.note = f"icmp: invalid icmp type {itype}"
        return NF_INVALID
    if itype not in ICMP_ERROR_TYPES:
        return NF_ACCEPT
    outer_daddr = int.from_bytes(data[IPH_DADDR : IPH_DADDR + 4], "big")
    # "Are they talking about one of our connections?"
    orig = get_tuplepr(data, dataoff + ICMPH_LEN)
    if orig is None:
        skb.note = "icmp: cannot parse the embedded header"
        return NF_INVALID
    # Ordinarily we'd expect the inverted tuple, but it's been preserved inside the ICMP.
    inner = invert(orig)
    if inner is None:
        skb.note = "icmp: embedded tuple cannot be inverted"
        return NF_INVALID
    hit = table.lookup(inner, now) if not skb.ct_zone else table.find_in_zone(inner, skb.ct_zone, now)
    if hit is None:
        skb.note = "icmp: no ct for inner tuple"
        return NF_INVALID
    conn, found_dir = hit
    if conn.tuples[found_dir].dst != outer_daddr:
        skb.note = "icmp: outer daddr != inner ct daddr"
        return NF_INVALID
    skb.ct = conn
    skb.ctinfo = CtInfo.RELATED if found_dir == Direction.ORIGINAL else CtInfo.RELATED_REPLY
    return ICMP_ERROR_TRACKED
