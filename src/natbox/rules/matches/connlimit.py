"""`-m connlimit` (libxt_connlimit.c revision 1, xt_connlimit.c `connlimit_mt` over nf_conncount.c).

Connections are counted per masked source (or destination) address and conntrack zone in lists the rule
owns (`info->data`, so they live on the match instance and survive recompilation): the packet's ct is added
unless it is confirmed and ASSURED (`__nf_conncount_add`; a confirmed ct in its setup phase is looked up in
the list first, as Linux 6.18.y does since the fix for setup-phase connections), and a list walk evicts
the entries whose ct has left the table or is a closed TCP connection (TIME_WAIT, CLOSE). At most one
walk per list and jiffy unless 64 entries were added since (`CONNCOUNT_GC_MAX_COLLECT`); a new key's
insertion also collects up to 8 other lists, as `insert_tree` does on its way down the tree, so dead
entries do not pile up under keys never seen again. A ct is "in the table" while it is confirmed, not
dying and not expired (natbox's table holds it by reference where the kernel looks its tuple up,
docs/differences.md).
"""

from __future__ import annotations

from typing import Any, Final

from natbox.conntrack.conn import Conn
from natbox.netfilter import NFPROTO_IPV6, CtStatus, TcpState
from natbox.rules.api import XtContext
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec, parse_plen, parse_plen6, plen_mask, plen_mask6
from natbox.rules.matches._xtopt import U32_MAX, parse_value
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError
from natbox.rules.xtstate import jiffies
from natbox.skb import Skb

__all__ = ["CONNCOUNT_GC_MAX_COLLECT", "ConnCount", "Connlimit"]

XT_CONNLIMIT_INVERT, XT_CONNLIMIT_DADDR = 1, 2
CONNCOUNT_GC_MAX_NODES: Final = 8
CONNCOUNT_GC_MAX_COLLECT: Final = 64
O_UPTO, O_ABOVE, O_MASK, O_SADDR, O_DADDR = range(5)
_SPECS: Final = (
    XtOptSpec("connlimit-upto", O_UPTO, excl=1 << O_ABOVE), XtOptSpec("connlimit-above", O_ABOVE, excl=1 << O_UPTO),
    XtOptSpec("connlimit-mask", O_MASK), XtOptSpec("connlimit-saddr", O_SADDR, excl=1 << O_DADDR),
    XtOptSpec("connlimit-daddr", O_DADDR, excl=1 << O_SADDR),
)
_GONE: Final = CtStatus.DYING


class _List:
    """`struct nf_conncount_list`: (original tuple, ct or None) per counted connection."""

    __slots__ = ("conns", "last_gc", "last_gc_count")

    def __init__(self, now: int) -> None:
        self.conns: list[tuple[object, Conn | None]] = []
        self.last_gc = now
        self.last_gc_count = 0


def _alive(ct: Conn | None, now: float) -> bool:
    """`nf_conntrack_find_get` of the saved tuple found it."""
    return ct is not None and bool(ct.status & CtStatus.CONFIRMED) and not ct.status & _GONE and now < ct.timeout


def _closed(ct: Conn) -> bool:
    """`already_closed()`."""
    return ct.tcp is not None and ct.tcp.state in (TcpState.TIME_WAIT, TcpState.CLOSE)


class ConnCount:
    """`struct nf_conncount_data` of one rule: the lists by key (the kernel's rbtrees)."""

    def __init__(self) -> None:
        self.lists: dict[tuple[int, int], _List] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConnCount) and {k: v.conns for k, v in self.lists.items()} == {
            k: v.conns for k, v in other.lists.items()}

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __deepcopy__(self, memo: dict[int, Any]) -> ConnCount:
        return self  # a copied rule is the same rule: it keeps counting in the same lists

    @staticmethod
    def _gc_list(lst: _List, jif: int, now: float) -> bool:
        """`__nf_conncount_gc_list`: evict the gone and the closed; True when the list is empty."""
        if jif == lst.last_gc:
            return False
        kept, collected = [], 0
        for i, (tup, ct) in enumerate(lst.conns):
            if collected > CONNCOUNT_GC_MAX_COLLECT:
                kept.extend(lst.conns[i:])
                break
            if not _alive(ct, now) or (ct is not None and _closed(ct)):
                collected += 1
                continue
            kept.append((tup, ct))
        lst.conns = kept
        lst.last_gc, lst.last_gc_count = jif, len(kept)
        return not kept

    @staticmethod
    def _add(lst: _List, skb: Skb, jif: int, now: float) -> bool:
        """`__nf_conncount_add`: the packet's connection, unless it is assured already or listed.

        False for -EEXIST (a confirmed, ASSURED ct: the caller collects the list instead). A confirmed ct
        still in its setup phase (a retransmitted SYN) is looked for in the list like a new one ("netfilter:
        nf_conncount: make sure to track setup-phase connections", after the rework that skipped every
        confirmed ct); the walk stops at its own tuple, so stale entries after it stay counted.
        """
        ct = skb.ct
        tup: object = ct.tuples[0] if ct is not None else (skb.saddr, skb.daddr, skb.protocol)
        if ct is not None and ct.status & CtStatus.CONFIRMED:
            if ct.status & CtStatus.ASSURED:
                return False  # -EEXIST: count_tree collects the list instead
        elif jif == lst.last_gc and len(lst.conns) - lst.last_gc_count < CONNCOUNT_GC_MAX_COLLECT:
            lst.conns.append((tup, ct))
            return True
        kept: list[tuple[object, Conn | None]] = []
        collected = 0
        for i, (t, c) in enumerate(lst.conns):
            if collected > CONNCOUNT_GC_MAX_COLLECT:
                kept.extend(lst.conns[i:])
                break
            if not _alive(c, now):
                collected += 1  # find_or_evict: one CPU, so a missing ct is always evicted
                continue
            assert c is not None
            if t == tup:
                # "we should not see tuples twice": the walk stops here, what it evicted stays evicted
                lst.conns = kept + lst.conns[i:]
                return True
            if _closed(c):
                collected += 1
                continue
            kept.append((t, c))
        lst.conns = kept
        lst.last_gc, lst.last_gc_count = jif, len(kept)
        lst.conns.append((tup, ct))
        return True

    def count(self, key: tuple[int, int], skb: Skb, now: float) -> int:
        """`count_tree()`: how many connections the key has, the packet's own included."""
        jif = jiffies(now)
        lst = self.lists.get(key)
        if lst is None or not lst.conns:
            # insert_tree: collect up to 8 other lists on the way, drop the empty ones, then a new node
            for other in [k for k in list(self.lists)[:CONNCOUNT_GC_MAX_NODES] if k != key]:
                if self._gc_list(self.lists[other], jif, now):
                    del self.lists[other]
            new = self.lists[key] = _List(jif)
            ct = skb.ct
            new.conns.append((ct.tuples[0] if ct is not None else (skb.saddr, skb.daddr, skb.protocol), ct))
            return 1
        if not self._add(lst, skb, jif, now):
            self._gc_list(lst, jif, now)  # -EEXIST means add was skipped, update the list
        return len(lst.conns)


class Connlimit(Match):
    name = "connlimit"
    revision = 1
    options = (Opt("connlimit-upto", 1, True), Opt("connlimit-above", 1, True), Opt("connlimit-mask"),
               Opt("connlimit-saddr", 0), Opt("connlimit-daddr", 0))

    def __init__(self) -> None:
        self.limit = 0
        self.flags_ = 0  # XT_CONNLIMIT_*
        self.mask: int | None = None  # None: all ones (libxt_connlimit's init, for either family)
        self.xflags = XtFlags("connlimit", _SPECS)
        self.data = ConnCount()

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        e = self.xflags.parse(opt)
        a = arg or ""
        if e.id in (O_UPTO, O_ABOVE):
            self.limit = parse_value("connlimit", opt, a, U32_MAX)
            if inverted == (e.id == O_ABOVE):  # "upto N" is the inverse of "above N"
                self.flags_ |= XT_CONNLIMIT_INVERT
        elif e.id == O_MASK:
            if rule.family == NFPROTO_IPV6:
                self.mask = plen_mask6(parse_plen6("connlimit", opt, a))
            else:
                self.mask = plen_mask(parse_plen("connlimit", opt, a))
        elif e.id == O_SADDR:
            self.flags_ &= ~XT_CONNLIMIT_DADDR
        else:
            self.flags_ |= XT_CONNLIMIT_DADDR

    def final_check(self, rule: Rule) -> None:
        if not self.xflags.has(O_UPTO) and not self.xflags.has(O_ABOVE):
            raise RulesError('You must specify "--connlimit-above" or "--connlimit-upto".')
        self.xflags.fcheck()

    def _mask(self) -> int:
        full = (1 << 128) - 1 if self.family == NFPROTO_IPV6 else 0xFFFFFFFF
        return full if self.mask is None else self.mask

    def _bits(self) -> int:
        """`count_bits4`: 32 minus the position of the highest clear bit of the mask, plus one;
        `count_bits6`: the same over each 32-bit word of the IPv6 mask, from 128."""
        mask = self._mask()
        if self.family == NFPROTO_IPV6:
            return 128 - sum((~(mask >> s) & 0xFFFFFFFF).bit_length() for s in (96, 64, 32, 0))
        return 32 - (~mask & 0xFFFFFFFF).bit_length()

    def save(self) -> str:
        inv = self.flags_ & XT_CONNLIMIT_INVERT
        return (f" --connlimit-{'upto' if inv else 'above'} {self.limit} --connlimit-mask {self._bits()}"
                + (" --connlimit-daddr" if self.flags_ & XT_CONNLIMIT_DADDR else " --connlimit-saddr"))

    def print_list(self, numeric: bool) -> str:
        side = "dst" if self.flags_ & XT_CONNLIMIT_DADDR else "src"
        return f" #conn {side}/{self._bits()} {'<=' if self.flags_ & XT_CONNLIMIT_INVERT else '>'} {self.limit}"

    def compile(self) -> MatchFn:
        limit, mask, data = self.limit, self._mask(), self.data
        dest, invert = bool(self.flags_ & XT_CONNLIMIT_DADDR), bool(self.flags_ & XT_CONNLIMIT_INVERT)

        def connlimit_mt(skb: Skb, ctx: XtContext) -> bool:
            """`connlimit_mt()`."""
            ct = skb.ct
            key = ((skb.daddr if dest else skb.saddr) & mask, ct.zone if ct is not None else 0)
            n = data.count(key, skb, ctx.now)
            return (n > limit) != invert

        return connlimit_mt
