"""The conntrack hash table: both tuples of every confirmed ct, exact expiry, bounded size (§2.1, §2.5-2.8).

Mirrors `nf_conntrack_hash` plus the parts of `nf_conntrack_core.c` that manage it:
`__nf_conntrack_find_get` (lookup with expired entries treated as absent and reaped),
`__nf_conntrack_confirm`'s insertion, `nf_conntrack_tuple_taken`, `early_drop` and `gc_worker`, and
`nf_ct_destroy`'s extension destroy hooks (`register_destroy`).

The table is a dict from tuple to `(conn, direction)`; each confirmed ct is present under its ORIGINAL
and its REPLY tuple. Plain tuples `(src, sport, dst, dport, proto)` can be used as keys for lookup.

Bounds: `max_entries` is `nf_conntrack_max` (kernel default on a >4 GiB 64-bit host: 262144, §2.6; 0
means no limit, as in `__nf_conntrack_alloc`). A new ct beyond it triggers `early_drop`, which looks at
no more than `EARLY_DROP_SCAN` of the oldest entries for one that is not ASSURED: its cost does not grow
with the table (the entries are kept in an OrderedDict, whose oldest entries are reached without walking
deleted slots). Deliberate difference: the kernel scans the chains of `NF_CT_EVICTION_RANGE` (8) hash
buckets from the new tuple's bucket (a random choice, since its hash has a boot-time key); natbox takes
the oldest unassured entry so that replays are reproducible.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Final

from natbox.conntrack.conn import Conn, SctpConntrack, TcpConntrack
from natbox.conntrack.l4proto import nf_ct_l4proto_find
from natbox.conntrack.tuple import ConnTuple
from natbox.netfilter import CtStatus, Direction

__all__ = ["ConntrackStats", "ConntrackTable", "CtEvent", "CtEventType", "zone_id_dir", "zone_key"]

DEFAULT_MAX_ENTRIES: Final = 262144  # nf_conntrack_max on the reference box (§2.6)
EARLY_DROP_SCAN: Final = 64  # entries one early_drop looks at (kernel: the chains of 8 buckets, NF_CT_EVICTION_RANGE)
GC_BUDGET: Final = 4096  # entries one gc() call examines at most (kernel: 10 ms per gc_worker run)
EVENT_BACKLOG: Final = 100_000  # events kept before the oldest are discarded (counted in events_lost)

_ASSURED: Final = CtStatus.ASSURED
_ORIGINAL: Final = Direction.ORIGINAL
_REPLY: Final = Direction.REPLY


def zone_key(t: tuple[int, int, int, int, int], zone_id: int) -> tuple[int, ...]:
    """The table's key of tuple `t` in the zone with id `zone_id`: the tuple itself in zone 0, the tuple and
    the zone id otherwise (`nf_ct_key_equal`: the tuple and `nf_ct_zone_equal`). Zone 0, the common case,
    costs nothing: the table's per-packet paths test the zone and call this (and zone_id_dir) only for a
    zone other than 0."""
    return t if not zone_id else (*t, zone_id)


def zone_id_dir(zone: int, direction: int) -> int:
    """`nf_ct_zone_id(zone, dir)`. A zone is kept as one int: its id (16 bits), and above it the directions it
    applies to when not both (`NF_CT_ZONE_DIR_ORIG` 1, `NF_CT_ZONE_DIR_REPL` 2, from -j CT --zone-orig /
    --zone-reply); in a direction it does not apply to, the id is the default zone's, 0."""
    dirs = zone >> 16
    return zone & 0xFFFF if not dirs or dirs & (1 << direction) else 0


def _gc_can_early_drop(conn: Conn) -> bool:
    """`gc_worker_can_early_drop()`: not ASSURED, or the protocol's `.can_early_drop` says so."""
    if not conn.status & _ASSURED:
        return True
    can_early_drop = nf_ct_l4proto_find(conn.tuples[0].proto).can_early_drop
    return can_early_drop is not None and can_early_drop(conn)


def _snapshot(conn: Conn) -> Conn:
    """A copy of what an event shows of `conn` (tuples, status, deadline, mark, zone, counters, TCP/SCTP state):
    ctnetlink builds the event message when the event fires, so later changes must not show in it."""
    copy = Conn(conn.tuples[0], conn.tuples[1], now=conn.start, ct_id=conn.ct_id, zone=conn.zone)
    copy.status = conn.status
    copy.timeout = conn.timeout
    copy.mark = conn.mark
    copy.acct_packets = list(conn.acct_packets)
    copy.acct_bytes = list(conn.acct_bytes)
    if conn.tcp is not None:
        tcp = TcpConntrack()
        tcp.state = conn.tcp.state
        copy.tcp = tcp
    if conn.sctp is not None:
        sctp = SctpConntrack()
        sctp.state = conn.sctp.state
        copy.sctp = sctp
    return copy


class CtEventType(enum.StrEnum):
    """What `conntrack -E` prints in its first column."""

    NEW = "NEW"
    UPDATE = "UPDATE"
    DESTROY = "DESTROY"


@dataclass(slots=True)
class CtEvent:
    """One ctnetlink event, with a snapshot of what `conntrack -E` would print at that time."""

    kind: CtEventType
    conn: Conn
    now: float
    reason: str = ""
    snapshot: Conn | None = None  # the ct as it was when the event fired (what `conntrack -E` prints)


@dataclass(slots=True)
class ConntrackStats:
    """The per-cpu counters `conntrack -S` prints (one cpu here), in the kernel's order."""

    found: int = 0
    invalid: int = 0
    insert: int = 0
    insert_failed: int = 0
    drop: int = 0
    early_drop: int = 0
    error: int = 0
    search_restart: int = 0
    clash_resolve: int = 0
    chaintoolong: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass
class ConntrackTable:
    """Confirmed conntrack entries, keyed by both tuples."""

    max_entries: int = DEFAULT_MAX_ENTRIES
    stats: ConntrackStats = field(default_factory=ConntrackStats)
    events_enabled: bool = False
    events: list[CtEvent] = field(default_factory=list)
    events_lost: int = 0
    # tuple -> conn; the direction is ORIGINAL when the tuple is the conn's original one (no pair stored per
    # tuple: that saves ~110 bytes per entry)
    _hash: dict[tuple[int, ...], Conn] = field(default_factory=dict)
    # ct_id -> conn, oldest first; an OrderedDict so early_drop reaches the oldest live entries in O(1) (a dict
    # walks the slots its deletions left at the front)
    _conns: OrderedDict[int, Conn] = field(default_factory=OrderedDict)
    _gc_pending: list[int] = field(default_factory=list)
    gc_early_drop: bool = False  # conntrack_gc_work.early_drop
    early_drop_scanned: int = 0  # entries early_drop has looked at (its work, which must not grow with the table)
    _next_id: int = 1
    # nf_ct_destroy's hooks: run once for every ct that leaves the table (and for an unconfirmed ct that dies)
    _destroy_cbs: list[Callable[[Conn], None]] = field(default_factory=list)
    # run for every ct confirmed into the table (natbox's datapath mirrors the tuples: gateway/newconn.py)
    _insert_cbs: list[Callable[[Conn], None]] = field(default_factory=list)

    # --- allocation ----------------------------------------------------------------------------

    def new_id(self) -> int:
        """A fresh ct id (the kernel hashes the pointer; natbox counts, for reproducibility)."""
        ct_id = self._next_id
        self._next_id += 1
        return ct_id

    def __len__(self) -> int:
        """`nf_conntrack_count`: confirmed entries, including expired ones not yet reaped."""
        return len(self._conns)

    def __iter__(self) -> Iterator[Conn]:
        return iter(list(self._conns.values()))

    def live(self, now: float) -> list[Conn]:
        """Every confirmed, unexpired entry (what a ctnetlink dump shows), reaping the expired ones.

        NAT_CLASH entries (reply-only inserts, §2.5) are hidden, as `conntrack -L` hides them.
        """
        out = []
        for conn in list(self._conns.values()):
            if now >= conn.timeout:
                self.delete(conn, now, reason="timeout")
            elif not conn.status & CtStatus.NAT_CLASH:
                out.append(conn)
        return out

    # --- destruction ------------------------------------------------------------------------------

    def register_destroy(self, cb: Callable[[Conn], None]) -> None:
        """Run `cb(ct)` once for every ct that leaves the table, whatever the reason (delete / `conntrack -D`,
        flush, expiry, gc, early_drop, a TCP reopen, NAT eviction) and for every unconfirmed ct that dies
        (`destroy_unconfirmed`).

        The kernel's `nf_ct_destroy()` and the extension destroy hooks it runs (`nf_nat_cleanup_conntrack`
        unlinks the ct from NAT's bysource hash); holders of per-ct state (NAT's bysource index, the engine's
        flow caches) register here so that nothing outlives its ct. Callbacks run in registration order,
        after the ct has been unhashed and marked DYING.
        """
        self._destroy_cbs.append(cb)

    def register_insert(self, cb: Callable[[Conn], None]) -> None:
        """Run `cb(ct)` for every ct `insert` confirms into the table (after it is hashed), as a datapath outside
        the engine that must know every tuple in use asks (the new-connections offload, gateway/newconn.py)."""
        self._insert_cbs.append(cb)

    def destroy_unconfirmed(self, conn: Conn) -> None:
        """An unconfirmed ct dies with its packet (a clash at confirm, a NAT manip failure): `nf_ct_put` of
        the last reference → `nf_ct_destroy`. Marks it DYING and runs the destroy callbacks once."""
        if conn.status & (CtStatus.DYING | CtStatus.CONFIRMED):
            return  # already destroyed, or in the table (delete() destroys those)
        conn.status |= CtStatus.DYING
        for cb in self._destroy_cbs:
            cb(conn)

    # --- lookup --------------------------------------------------------------------------------

    def lookup(self, t: tuple[int, ...], now: float) -> tuple[Conn, Direction] | None:
        """`__nf_conntrack_find_get`: the entry holding `t` in either direction, if alive. `t` is a tuple, or
        the `zone_key` of one in a zone other than 0."""
        conn = self._hash.get(t)
        if conn is None:
            return None
        if now >= conn.timeout:
            self.delete(conn, now, reason="timeout")
            return None
        orig = conn.tuples[0]
        return conn, (_ORIGINAL if orig == t or (conn.zone and orig == t[:5]) else _REPLY)

    def find_in_zone(self, t: tuple[int, int, int, int, int], zone: int, now: float,
                     first: int = _ORIGINAL, *, fallback: bool = True) -> tuple[Conn, Direction] | None:
        """`nf_conntrack_find_get` / `resolve_normal_ct`'s lookup of tuple `t` in a template's `zone`: under the
        zone's id for the `first` direction, then (`fallback`) for the other, an entry counting only if its
        zone has the same id as `zone` in the direction it was found in (`nf_ct_zone_equal`)."""
        if not zone:
            return self.lookup(t, now)
        tried = -1
        for d in ((first, 1 - first) if fallback else (first,)):
            zid = zone_id_dir(zone, d)
            if zid == tried:
                continue
            tried = zid
            hit = self.lookup(zone_key(t, zid), now)
            if hit is not None and zone_id_dir(hit[0].zone, hit[1]) == zone_id_dir(zone, hit[1]):
                return hit
        return None

    def find_taken(self, t: ConnTuple, ignored: Conn, now: float) -> tuple[Conn, Direction] | None:
        """`nf_conntrack_tuple_taken`: another live ct with `t` as its ORIGINAL or REPLY tuple (§4.4).

        A ct whose ORIGINAL tuple equals `ignored`'s ORIGINAL is the same flow and does not count.
        """
        # t is a reply tuple: hashed with the zone id of `ignored` for the reply direction, no second try
        zone = ignored.zone
        hit = self.lookup(t, now) if not zone else self.find_in_zone(t, zone, now, _REPLY, fallback=False)
        if hit is None:
            return None
        conn = hit[0]
        if conn is ignored or conn.tuples[0] == ignored.tuples[0]:
            return None
        self.stats.found += 1  # NF_CT_STAT_INC(found) in nf_conntrack_tuple_taken
        return hit

    def tuple_taken(self, t: ConnTuple, ignored: Conn, now: float) -> bool:
        return self.find_taken(t, ignored, now) is not None

    # --- insertion and deletion ----------------------------------------------------------------

    def clash(self, conn: Conn, now: float) -> tuple[Conn, Direction] | None:
        """The live entry that already holds one of `conn`'s tuples, if any (checked at confirm)."""
        zone = conn.zone
        for d, t in enumerate(conn.tuples):
            hit = self.lookup(t if not zone else zone_key(t, zone_id_dir(zone, d)), now)
            if hit is not None and hit[0] is not conn:
                return hit
        return None

    def insert(self, conn: Conn, now: float) -> None:
        """Insert both directions (the caller has checked for clashes). Emits the NEW event."""
        conn.status |= CtStatus.CONFIRMED
        orig: tuple[int, ...]
        reply: tuple[int, ...]
        orig, reply = conn.tuples
        zone = conn.zone
        if zone:
            orig, reply = zone_key(orig, zone_id_dir(zone, 0)), zone_key(reply, zone_id_dir(zone, 1))
        self._hash[orig] = conn
        self._hash[reply] = conn
        self._conns[conn.ct_id] = conn
        self.event(CtEventType.NEW, conn, now)
        for cb in self._insert_cbs:
            cb(conn)

    def insert_reply_only(self, conn: Conn, now: float) -> None:
        """The NAT_CLASH loser of §2.5: only its REPLY tuple is hashed; hidden from listings."""
        conn.status |= CtStatus.CONFIRMED | CtStatus.NAT_CLASH | CtStatus.FIXED_TIMEOUT
        conn.timeout = now + 1.0
        self._hash[zone_key(conn.tuples[1], zone_id_dir(conn.zone, 1))] = conn
        self._conns[conn.ct_id] = conn

    def delete(self, conn: Conn, now: float, *, reason: str = "") -> None:
        """Remove `conn` under both tuples and emit DESTROY (unless it was a hidden clash entry)."""
        if self._conns.pop(conn.ct_id, None) is None:
            return
        zone = conn.zone
        for d, t in enumerate(conn.tuples):
            key = t if not zone else zone_key(t, zone_id_dir(zone, d))
            if self._hash.get(key) is conn:
                del self._hash[key]
        conn.status |= CtStatus.DYING
        if not conn.status & CtStatus.NAT_CLASH:
            self.event(CtEventType.DESTROY, conn, now, reason)
        for cb in self._destroy_cbs:
            cb(conn)

    def flush(self, now: float) -> int:
        """`conntrack -F`: delete every entry; returns how many.

        The dicts are then replaced by empty ones: a Python dict keeps its allocated size after deletions, and
        the kernel frees every entry a flush removes.
        """
        conns = list(self._conns.values())
        for conn in conns:
            self.delete(conn, now, reason="flush")
        self._hash = {}
        self._conns = OrderedDict()
        self._gc_pending = []
        return len(conns)

    # --- bounds --------------------------------------------------------------------------------

    def early_drop(self, now: float) -> bool:
        """`early_drop()` (§2.7): make room for one new entry by deleting an expired entry or one that is not
        ASSURED, looking at no more than EARLY_DROP_SCAN of the oldest entries (O(1), like the kernel's
        bounded bucket scan)."""
        for conn in islice(self._conns.values(), EARLY_DROP_SCAN):
            self.early_drop_scanned += 1
            if now >= conn.timeout:
                self.delete(conn, now, reason="timeout")
                return True
            if not conn.status & (_ASSURED | CtStatus.OFFLOAD):  # early_drop_list skips offloaded entries too
                self.delete(conn, now, reason="early_drop")
                self.stats.early_drop += 1
                return True
        return False

    def gc(self, now: float, budget: int = GC_BUDGET) -> int:
        """`gc_worker`: reap up to `budget` examined entries that have expired; returns how many went.

        In early-drop mode (set by nf_conntrack_in when `early_drop` found nothing to evict) it also evicts
        entries that are not ASSURED, or are TCP in a closing state (`gc_worker_can_early_drop`), while the
        table holds at least 95 % of `max_entries`.
        """
        reaped = 0
        for _ in range(budget):
            if not self._gc_pending:
                self._gc_pending = list(self._conns)
                self._gc_pending.reverse()
                if not self._gc_pending:
                    break
            conn = self._conns.get(self._gc_pending.pop())
            if conn is not None and now >= conn.timeout:
                self.delete(conn, now, reason="timeout")
                reaped += 1
            elif (
                conn is not None
                and self.gc_early_drop
                and len(self._conns) >= self.max_entries // 100 * 95
                and _gc_can_early_drop(conn)
            ):
                # gc early-drop mode (§2.7): after a failed early_drop, evict while count >= 95 % of max
                self.delete(conn, now, reason="early_drop")
                reaped += 1
            if not self._gc_pending:
                self.gc_early_drop = False  # a full pass is over (the kernel clears it after each run)
                break
        return reaped


    # --- events --------------------------------------------------------------------------------

    def event(self, kind: CtEventType, conn: Conn, now: float, reason: str = "") -> None:
        if not self.events_enabled:
            return
        if len(self.events) >= EVENT_BACKLOG:
            del self.events[: EVENT_BACKLOG // 10]
            self.events_lost += EVENT_BACKLOG // 10
        self.events.append(CtEvent(kind, conn, now, reason, _snapshot(conn)))

    def drain_events(self) -> list[CtEvent]:
        out, self.events = self.events, []
        return out
