"""MASQUERADE, REDIRECT and NETMAP: the NAT targets whose range depends on the packet (§5.1, §5.2).

Mirrors `nf_nat_masquerade_ipv4()` and its two flush notifiers (`masq_device_event`,
`masq_inet_event`) from net/netfilter/nf_nat_masquerade.c, `nf_nat_redirect_ipv4()` from
nf_nat_redirect.c and `netmap_tg4()` from xt_NETMAP.c. The rule targets (natbox.rules) call these
with what the host knows (the chosen source address, the incoming interface's primary address); the
address selection itself (`inet_select_addr`) belongs to the engine's routing code.

The kernel runs the flushes from a workqueue and skips one when more than 16 are already queued
(MAX_MASQ_WORKER_COUNT); natbox runs them synchronously, so none is ever skipped.
"""

from __future__ import annotations

from typing import Final

from natbox.conntrack.conn import Conn
from natbox.conntrack.table import ConntrackTable
from natbox.conntrack.tuple import format_addr
from natbox.nat.core import NatCore
from natbox.nat.range import NatRange, RangeFlags
from natbox.netfilter import NF_ACCEPT, NF_DROP, DropReason, Hook, ManipType
from natbox.rand import RandomSource
from natbox.skb import Skb

__all__ = [
    "INADDR_LOOPBACK",
    "masq_addr_removed",
    "masq_device_down",
    "masquerade",
    "netmap_addr",
    "netmap_range",
    "redirect_range",
]

INADDR_LOOPBACK: Final = 0x7F000001  # REDIRECT in OUTPUT sends to 127.0.0.1
_M32: Final = 0xFFFFFFFF
MASQ_RANGE_CACHE_MAX: Final = 1024  # MASQUERADE ranges kept for reuse, by (rule range, address); emptied when full
_MASQ_RANGES: dict[tuple[NatRange, int], NatRange] = {}


def masquerade(
    skb: Skb, ct: Conn, rng: NatRange, out_dev: str, newsrc: int | None, *, nat: NatCore, now: float,
    table: ConntrackTable, rnd: RandomSource,
) -> int:
    """Mirrors `nf_nat_masquerade_ipv4()` (§5.2); `newsrc` is `inet_select_addr(out_dev, nexthop)`.

    - ORIGINAL source 0.0.0.0: NF_ACCEPT without a binding (the null binding follows).
    - no address (None or 0): "<dev> ate my IP address", NF_DROP.
    - else record `masq_index = out_dev` and bind SRC to newsrc with the rule's ports and flags.
    """
    if ct.tuples[0].src == 0:
        skb.add_trace("MASQUERADE: original source is 0.0.0.0; not masqueraded")
        return NF_ACCEPT
    if not newsrc:
        nat.drop_reason = DropReason.NAT_NO_ADDRESS
        skb.note = f"MASQUERADE: {out_dev} ate my IP address"
        skb.add_trace(f"{skb.note} (no usable address); dropped")
        return NF_DROP
    ct.masq_index = out_dev
    # NatRange(rng.flags | MAP_IPS, newsrc, newsrc, rng.min_proto, rng.max_proto): ranges are immutable,
    # so the few distinct ones (a rule's range and the out device's address) are made once and shared
    key = (rng, newsrc)
    newrange = _MASQ_RANGES.get(key)
    if newrange is None:
        if len(_MASQ_RANGES) >= MASQ_RANGE_CACHE_MAX:
            _MASQ_RANGES.clear()
        newrange = _MASQ_RANGES[key] = NatRange(rng.flags | RangeFlags.MAP_IPS, newsrc, newsrc, rng.min_proto,
                                                rng.max_proto)
    if skb.trace is not None:
        skb.add_trace(f"MASQUERADE: source address {format_addr(newsrc)} of {out_dev} (inet_select_addr)")
    return nat.setup_info(ct, newrange, ManipType.SRC, now=now, table=table, rnd=rnd, trace=skb.trace)


def masq_device_down(dev: str, *, table: ConntrackTable, now: float) -> int:
    """`masq_device_event(NETDEV_DOWN)`: delete every ct masqueraded via `dev`; returns how many.

    The deleted cts become DYING, so the NAT core's bysource index drops them by itself.
    """
    doomed = [ct for ct in table if ct.masq_index == dev]
    for ct in doomed:
        table.delete(ct, now, reason="masquerade_flush")
    return len(doomed)


def masq_addr_removed(dev: str, addr: int, *, table: ConntrackTable, now: float) -> int:
    """`masq_inet_event(NETDEV_DOWN)` for one removed address: delete the cts masqueraded via `dev` whose
    REPLY destination is `addr` (the caller skips this when the whole device is going away)."""
    doomed = [ct for ct in table if ct.masq_index == dev and ct.tuples[1].dst == addr]
    for ct in doomed:
        table.delete(ct, now, reason="masquerade_flush")
    return len(doomed)


def redirect_range(rng: NatRange, hook: Hook, in_dev_addr: int | None) -> NatRange | None:
    """`nf_nat_redirect_ipv4()`'s range: DST to 127.0.0.1 at OUTPUT, else to the first (primary)
    address of the incoming interface. None (the target drops) when that interface has no address.
    Ports and flags come from the rule (`--to-ports`, `--random`)."""
    if hook == Hook.LOCAL_OUT:
        newdst = INADDR_LOOPBACK
    else:
        if not in_dev_addr:
            return None
        newdst = in_dev_addr
    return NatRange(rng.flags | RangeFlags.MAP_IPS, newdst, newdst, rng.min_proto, rng.max_proto)


def netmap_addr(rng: NatRange, hook: Hook, saddr: int, daddr: int) -> int:
    """`netmap_tg4()`'s address: the packet's daddr (PREROUTING, OUTPUT) or saddr (POSTROUTING, INPUT)
    with its network bits replaced by the rule's: `(addr & ~mask) | (min & mask)`, mask = ~(min ^ max)."""
    netmask = ~(rng.min_addr ^ rng.max_addr) & _M32
    addr = daddr if hook in (Hook.PRE_ROUTING, Hook.LOCAL_OUT) else saddr
    return (addr & ~netmask & _M32) | (rng.min_addr & netmask)


def netmap_range(rng: NatRange, hook: Hook, saddr: int, daddr: int) -> NatRange:
    """The range `netmap_tg4()` hands to `nf_nat_setup_info(HOOK2MANIP(hook))`: one address, rule's ports."""
    new = netmap_addr(rng, hook, saddr, daddr)
    return NatRange(rng.flags | RangeFlags.MAP_IPS, new, new, rng.min_proto, rng.max_proto)
