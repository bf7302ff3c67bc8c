"""The neighbour (ARP) cache: next-hop resolution with the kernel's NUD state machine, sans-IO.

Mirrors net/core/neighbour.c (the generic neighbour layer) as `arp_tbl` (net/ipv4/arp.c) configures it.
One entry per (device, IPv4 address), in one of the NUD states below. Time comes in as `now` (float
seconds on the caller's clock); nothing here reads a clock, sends a frame or draws a random number
unless a `RandomSource` is injected.

How the engine drives it (what `ip_finish_output2` → `neigh_output` and `arp_process` do):

=================================  ==========================================================================
engine event                       NeighTable call
=================================  ==========================================================================
packet to next hop, MAC wanted     `lookup(dev, nh, now)`: the MAC if the entry is usable, else None
lookup said None                   `queue(dev, nh, item, size, now, saddr)`: hold it, maybe solicit
ARP message received               `arp_process(dev, msg, now, pkt_host=…, target_local=…)`: released items
clock tick                         `timers(now)`: (ARP requests to send, items whose resolution FAILED)
=================================  ==========================================================================

The NUD states and their transitions are tabled in engine/nud.py.

Timer granularity: the kernel re-arms a timer no sooner than `HZ/100` after it fires (`neigh_timer_handler`
clamps `next` to `jiffies + HZ/100`), so an entry confirmed at t is still REACHABLE at t + 30 s and turns
STALE 10 ms later. `TIMER_MIN` reproduces that. When `timers(now)` is called late, every expiry up to `now`
is run at its own deadline, so virtual-time replays see the kernel's exact sequence.

What is not modelled: proxy ARP, `app_solicit` daemons (such probes are counted, nothing is sent), the
`managed`/`extern_learn` flags, `arp_accept` other than its default 0, per-device parameter overrides, and
`neigh_confirm()` from TCP (no local TCP sockets confirm reachability here).

Bounds (every one documented where it is defined): `NeighParms.gc_thresh3` dynamic entries (1024), each
holding at most `unres_qlen_bytes` (212992) of queued items counted at `max(size, SKB_TRUESIZE_MIN)` (or
a single item larger than that), so at most 212992 // 576 = 369 items per entry. PERMANENT entries come from
the host model and are as many as it lists. The timer heap (engine/neigh_timers.py) is compacted when stale
records exceed `HEAP_SLACK` times the live entries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

from natbox.conntrack.tuple import format_addr
from natbox.engine.neigh_timers import NeighTimers
from natbox.engine.nud import (
    _DELAY,
    _FAILED,
    _INCOMPLETE,
    _NOARP,
    _PERMANENT,
    _PROBE,
    _REACHABLE,
    _STALE,
    GC_FORCED_MIN_AGE,
    NUD_CONNECTED,
    NUD_IN_TIMER,
    NUD_VALID,
    REACH_RERANDOM_INTERVAL,
    SKB_TRUESIZE_MIN,
    STATE_NAMES,
    TIMER_MIN,
    ArpRequest,
    NeighEntry,
    NeighParms,
    NeighView,
    Nud,
    arp_solicit_saddr,
    build_arp_solicit,
    format_ip_neigh,
    skb_truesize,
)
from natbox.wire import arp

if TYPE_CHECKING:
    from natbox.rand import RandomSource

__all__ = [
    "NUD_CONNECTED",
    "NUD_IN_TIMER",
    "NUD_VALID",
    "SKB_TRUESIZE_MIN",
    "TIMER_MIN",
    "ArpRequest",
    "NeighParms",
    "NeighTable",
    "NeighView",
    "Nud",
    "arp_solicit_saddr",
    "build_arp_solicit",
    "format_ip_neigh",
    "skb_truesize",
]

T = TypeVar("T")


class NeighTable(Generic[T]):
    """The ARP neighbour table (`struct neigh_table arp_tbl`), generic in the queued item type.

    `static` entries ((dev, addr, mac) triples, from the host model's `ip neigh ... permanent` list) are
    PERMANENT: never changed by ARP, never expired, exempt from gc. `rng`, if given, draws
    `reachable_time` uniformly from [base/2, 3·base/2) as `neigh_rand_reach_time` does (re-drawn every
    300 s); without it `reachable_time` is `base_reachable_time` exactly.
    """

    def __init__(self, parms: NeighParms | None = None, *, static: Iterable[tuple[str, int, bytes]] = (),
                 rng: RandomSource | None = None) -> None:
        self.parms = parms if parms is not None else NeighParms()
        self._rng = rng
        self.reachable_time = self._rand_reach_time()
        self._last_rand: float | None = None
        self._entries: dict[tuple[str, int], NeighEntry[T]] = {}  # insertion order is the kernel's gc_list order
        self.entry = self._entries.get  # the entry of (dev, addr), if any: a read that costs no Python frame
        self._gc_entries = 0  # dynamic (non-PERMANENT) entries: tbl->gc_entries, bounded by gc_thresh3
        self._timers: NeighTimers[T] = NeighTimers(self._entries)  # the entries' timers, the periodic gc's
        self._last_flush = float("-inf")  # tbl->last_flush (neigh_forced_gc)
        # the kernel's ndtstats names (`ip -s ntable show name arp_cache`): allocs, destroys, res_failed,
        # unres_discards, table_fulls, forced_gc_runs, periodic_gc_runs; and natbox's own: solicit_mcast,
        # solicit_ucast, solicit_app (requests made, by kind), gc_purged_items (queued items freed by a
        # forced gc that arp_process triggered; queue() returns such items in its dropped list instead)
        self.stats: Counter[str] = Counter()
        # bumped whenever a MAC `known` would give changes (set, changed, entry removed): what was compiled
        # with a neighbour's MAC (engine/fastpath.py) is valid while it is the same
        self.generation = 0
        for dev, addr, mac in static:
            self.add_permanent(dev, addr, mac)

    # --- parameters --------------------------------------------------------------------------------

    def _rand_reach_time(self) -> float:
        """`neigh_rand_reach_time()`: uniform in [base/2, 3·base/2), or base without an rng."""
        base = self.parms.base_reachable_time
        if self._rng is None or base <= 0:
            return base
        return base / 2 + base * (self._rng.getrandbits(32) / 2**32)

    def _max_probes(self, e: NeighEntry[T]) -> int:
        """`neigh_max_probes()`."""
        p = self.parms
        return p.ucast_solicit + p.app_solicit + (p.mcast_resolicit if e.state & _PROBE else p.mcast_solicit)

    # --- static entries ----------------------------------------------------------------------------

    def add_permanent(self, dev: str, addr: int, mac: bytes) -> None:
        """`ip neigh replace ADDR lladdr MAC dev DEV nud permanent`: exempt from gc, never expires."""
        key = (dev, addr)
        old = self._entries.pop(key, None)
        if old is not None and not old.state & _PERMANENT:
            self._gc_entries -= 1
        e: NeighEntry[T] = NeighEntry(dev, addr, 0.0, self.parms.base_reachable_time)
        e.state = _PERMANENT
        e.ha = bytes(mac[:6])
        self._entries[key] = e
        self.generation += 1

    # --- offline resolution ------------------------------------------------------------------------

    def known(self, dev: str, addr: int) -> bytes | None:
        """The MAC last known for `addr` on `dev` (static, from ARP or learned), whatever the entry's state;
        None if there is none. What the engine uses offline, where nothing resolves."""
        e = self._entries.get((dev, addr))
        return e.ha if e is not None and e.ha else None

    def learn(self, dev: str, addr: int, mac: bytes, now: float) -> None:
        """Offline, natbox's shortcut for what ARP would tell: the sender of an ARP message or of an IP
        packet from an on-link address has `mac`. Creates a STALE entry as `neigh_event_ns` would, bounded
        like every entry (`__neigh_create`: the forced gc at gc_thresh2/3, nothing learned when full);
        replaces the MAC of an existing one (a static one too, as captures replay what the wire said)."""
        e = self._entries.get((dev, addr))
        if e is None:
            purged: list[T] = []
            e = self._create((dev, addr), now, purged)
            if e is None:
                return
            e.state = _STALE
        elif e.ha == mac:
            return
        e.ha = bytes(mac)
        e.updated = now
        self.generation += 1

    # --- output path -------------------------------------------------------------------------------

    def lookup(self, dev: str, addr: int, now: float) -> bytes | None:
        """The MAC to put on a packet for next hop `addr` on `dev` now, or None (then call `queue`).

        Mirrors `neigh_output()`: a CONNECTED entry (REACHABLE, PERMANENT) is used as is (the hh cache
        path, which does not touch `neigh->used`); otherwise `neigh_resolve_output()` →
        `neigh_event_send()` sets `used` and `__neigh_event_send()` moves STALE to DELAY (probe in
        `delay_first_probe_time`). DELAY and PROBE entries are usable. INCOMPLETE, FAILED or no entry: None.
        """
        e = self._entries.get((dev, addr))
        if e is None:
            return None
        state = e.state
        if state & NUD_CONNECTED:
            return e.ha
        if state & (_DELAY | _PROBE):
            e.used = now
            return e.ha
        if state == _STALE:
            e.used = now
            self._stale_to_delay(e, now)
            return e.ha
        return None

    def _stale_to_delay(self, e: NeighEntry[T], now: float) -> None:
        """`__neigh_event_send()` on a STALE entry: DELAY, timer in delay_first_probe_time."""
        e.state = _DELAY
        e.updated = now
        self._add_timer(e, now + self.parms.delay_first_probe_time)

    def queue(self, dev: str, addr: int, item: T, size: int, now: float, saddr: int = 0
              ) -> tuple[list[ArpRequest], list[T]]:
        """Hold `item` for next hop `addr` on `dev` (after `lookup` said None).

        Mirrors `neigh_resolve_output()` → `__neigh_event_send()`: with no entry one is created
        (`__neigh_create`, which may run the forced gc and fail when the table holds gc_thresh3 entries);
        a new or FAILED entry becomes INCOMPLETE with `probes = ucast_solicit` and sends its first
        broadcast request at once (`neigh_probe`), its timer set to retrans_time. The item joins the
        entry's queue; older items are dropped while the queue would exceed `unres_qlen_bytes`
        (counted as `unres_discards`, SKB_DROP_REASON_NEIGH_QUEUEFULL).

        `size` is the skb's truesize (see `skb_truesize`); values below SKB_TRUESIZE_MIN are charged as
        SKB_TRUESIZE_MIN. `saddr` is the item's IPv4 source address (for the request's sender IP).
        Returns (ARP requests to send now, items dropped: the oldest queued ones, or `item` itself when
        the table is full or no solicitation is configured). Raises ValueError if the entry is usable
        (`lookup` would have returned its MAC): that is a caller bug, not a packet.
        """
        key = (dev, addr)
        e = self._entries.get(key)
        dropped: list[T] = []
        if e is None:
            e = self._create(key, now, dropped)
            if e is None:
                dropped.append(item)
                return [], dropped
        state = e.state
        if state & NUD_VALID:
            raise ValueError(f"neighbour {format_addr(addr)} on {dev} is {STATE_NAMES[state]}: use lookup()")
        e.used = now
        p = self.parms
        reqs: list[ArpRequest] = []
        immediate = False
        if state != _INCOMPLETE:  # NONE or FAILED
            if p.mcast_solicit + p.app_solicit:
                e.probes = p.ucast_solicit
                e.state = _INCOMPLETE
                e.updated = now
                self._add_timer(e, now + max(p.retrans_time, TIMER_MIN))
                immediate = True
            else:
                e.state = _FAILED
                e.updated = now
                self._del_timer(e)
                self.stats["res_failed"] += 1
                dropped.append(item)
                return reqs, dropped
        charged = max(size, SKB_TRUESIZE_MIN)
        q = e.queue
        while q and e.qbytes + charged > p.unres_qlen_bytes:
            old, osize, _ = q.popleft()
            e.qbytes -= osize
            dropped.append(old)
            self.stats["unres_discards"] += 1
        q.append((item, charged, saddr))
        e.qbytes += charged
        if immediate:
            self._probe(e, reqs)
        return reqs, dropped

    def _create(self, key: tuple[str, int], now: float, dropped: list[T]) -> NeighEntry[T] | None:
        """`___neigh_create()` → `neigh_alloc()`: at gc_thresh3 entries (or gc_thresh2 and 5 s since the
        last forced gc) run `neigh_forced_gc`; fail (`table_fulls`) if that freed nothing at gc_thresh3."""
        p = self.parms
        entries = self._gc_entries
        if entries >= p.gc_thresh3 or (entries >= p.gc_thresh2 and now > self._last_flush + GC_FORCED_MIN_AGE):
            if not self._forced_gc(now, dropped) and entries >= p.gc_thresh3:
                self.stats["table_fulls"] += 1
                return None
        e: NeighEntry[T] = NeighEntry(key[0], key[1], now, p.base_reachable_time)
        self._entries[key] = e
        self._gc_entries += 1
        self.stats["allocs"] += 1
        if self._timers.gc_next is None:
            self._timers.gc_next = now + p.gc_interval
        return e

    def _forced_gc(self, now: float, dropped: list[T]) -> int:
        """`neigh_forced_gc()`: in gc_list (creation) order, remove FAILED/NOARP entries and those not
        updated in the last 5 s, until the table is back at gc_thresh2."""
        self.stats["forced_gc_runs"] += 1
        # neigh_alloc has already counted the entry being allocated in tbl->gc_entries
        max_clean = self._gc_entries + 1 - self.parms.gc_thresh2
        tref = now - GC_FORCED_MIN_AGE
        victims = []  # chosen first, removed after the walk: no copy of the table per call (a full table of
        # fresh entries is walked at every allocation, as the kernel's gc_list is)
        if max_clean > 0:
            for key, e in self._entries.items():
                state = e.state
                if state & _PERMANENT:
                    continue
                if state in (_FAILED, _NOARP) or not tref <= e.updated <= now:
                    victims.append(key)
                    if len(victims) >= max_clean:
                        break
        for key in victims:
            self._remove(key, dropped)
        self._last_flush = now
        return len(victims)

    def _remove(self, key: tuple[str, int], dropped: list[T]) -> None:
        """`neigh_del()` → `neigh_destroy()`: queued items are purged (dropped, no ICMP)."""
        e = self._entries.pop(key)
        self.generation += 1
        if not e.state & _PERMANENT:
            self._gc_entries -= 1
        e.timer = None
        dropped.extend(it for it, _s, _a in e.queue)
        e.queue.clear()
        e.qbytes = 0
        self.stats["destroys"] += 1

    def _probe(self, e: NeighEntry[T], reqs: list[ArpRequest]) -> None:
        """`neigh_probe()` → `arp_solicit()`: unicast to the cached address while `probes < ucast_solicit`,
        then `app_solicit` daemon probes (counted, not sent), then broadcast; `probes` is incremented."""
        p = self.parms
        probes = e.probes
        saddr = e.queue[-1][2] if e.queue else 0
        if probes < p.ucast_solicit:
            reqs.append(ArpRequest(e.dev, e.addr, e.ha, saddr))
            self.stats["solicit_ucast"] += 1
        elif probes < p.ucast_solicit + p.app_solicit:
            self.stats["solicit_app"] += 1
        else:
            reqs.append(ArpRequest(e.dev, e.addr, None, saddr))
            self.stats["solicit_mcast"] += 1
        e.probes = probes + 1

    # --- input path (ARP) --------------------------------------------------------------------------

    def arp_process(self, dev: str, msg: arp.ArpPacket, now: float, *, pkt_host: bool, target_local: bool
                    ) -> list[T]:
        """The neighbour part of `arp_process()` (net/ipv4/arp.c) for a received ARP message.

        `pkt_host`: the frame was unicast to this device (PACKET_HOST; a broadcast reply only proves
        STALE). The caller has already dropped ARP frames for other hosts or looped back (`arp_rcv`
        ignores PACKET_OTHERHOST and PACKET_LOOPBACK). `target_local`: the message is a request whose
        target is an address of this host that it answers (ip_route_input gave RTN_LOCAL and
        arp_ignore/arp_filter allowed the reply).

        - sender 0.0.0.0 (duplicate address detection), a multicast or 127/8 target: no update;
        - a request for us: `neigh_event_ns()`, creating the entry, STALE with override;
        - anything else updates an existing entry only (`arp_accept` 0): REACHABLE for a unicast reply,
          else STALE; a different MAC replaces the cached one only when `locktime` has passed since the
          last change or the message is gratuitous (`arp_is_garp`: sender = target, and for a reply
          target MAC = sender MAC; the kernel also wants the sender to be RTN_UNICAST, which a sender
          that is not this host's own address always is).

        Returns the items queued on the entry if it just became valid, in order: send them now with
        the entry's MAC (`lookup` gives it).
        """
        sip, tip = msg.sender_ip, msg.target_ip
        if msg.op not in (arp.ARPOP_REQUEST, arp.ARPOP_REPLY):
            return []
        if tip >> 28 == 0xE or tip >> 24 == 127 or sip == 0:
            return []
        if msg.op == arp.ARPOP_REQUEST and target_local:
            return self.event_ns(dev, sip, msg.sender_mac, now)
        e = self._entries.get((dev, sip))
        if e is None:
            return []
        garp = sip == tip and (msg.op == arp.ARPOP_REQUEST or msg.target_mac == msg.sender_mac)
        override = now > e.updated + self.parms.locktime or garp
        new = _REACHABLE if msg.op == arp.ARPOP_REPLY and pkt_host else _STALE
        return self._update(e, msg.sender_mac, new, override, now)

    def event_ns(self, dev: str, addr: int, mac: bytes, now: float) -> list[T]:
        """`neigh_event_ns()`: a request from `addr` for one of our addresses. The entry is created if
        missing and updated to STALE with NEIGH_UPDATE_F_OVERRIDE. Returns released items."""
        key = (dev, addr)
        e = self._entries.get(key)
        if e is None:
            purged: list[T] = []
            e = self._create(key, now, purged)
            self.stats["gc_purged_items"] += len(purged)  # freed by the forced gc, as kfree_skb does
            if e is None:
                return []
        return self._update(e, mac, _STALE, True, now)

    def confirm(self, dev: str, addr: int, mac: bytes, now: float, *, reachable: bool = True) -> list[T]:
        """An ARP reply from `addr` (`neigh_update(n, sha, NUD_REACHABLE or NUD_STALE, override-by-locktime)`
        on an existing entry, as `arp_process` does for a unicast reply, or a broadcast one with
        `reachable=False`). Unknown neighbours are not created (arp_accept 0). Returns released items."""
        e = self._entries.get((dev, addr))
        if e is None:
            return []
        override = now > e.updated + self.parms.locktime
        return self._update(e, mac, _REACHABLE if reachable else _STALE, override, now)

    def _update(self, e: NeighEntry[T], lladdr: bytes, new: int, override: bool, now: float) -> list[T]:
        """`__neigh_update()` for a valid new state without NEIGH_UPDATE_F_ADMIN."""
        old = e.state
        if old & (_NOARP | _PERMANENT):
            return []
        lladdr = bytes(lladdr[:6])
        # with an invalid old state the kernel's `lladdr != neigh->ha` compares pointers: always "changed"
        changed = not (old & NUD_VALID) or lladdr != e.ha
        if new & NUD_CONNECTED:
            e.confirmed = now
        if old & NUD_VALID:
            if changed and not override:
                return []
            if not changed and new == _STALE:
                new = old
        if new != old or changed:
            e.updated = now
        if new != old:
            self._del_timer(e)
            if new & _PROBE:
                e.probes = 0
            if new & NUD_IN_TIMER:
                self._add_timer(e, now + (self.reachable_time if new & _REACHABLE else 0.0))
            e.state = new
        if changed:
            e.ha = lladdr
            self.generation += 1
            if not new & NUD_CONNECTED:
                e.confirmed = now - 2 * self.parms.base_reachable_time
        if new == old or old & NUD_VALID:
            return []
        released = [it for it, _s, _a in e.queue]
        e.queue.clear()
        e.qbytes = 0
        if released and e.state == _STALE:
            # each released skb goes through neigh_resolve_output → neigh_event_send: STALE → DELAY
            e.used = now
            self._stale_to_delay(e, now)
        return released

    # --- timers ------------------------------------------------------------------------------------

    def _add_timer(self, e: NeighEntry[T], when: float) -> None:
        """`neigh_add_timer()` (also moves `used` up to `confirmed`), or a re-arm (`mod_timer`)."""
        e.used = max(e.used, e.confirmed)
        self._arm(e, when)

    def _arm(self, e: NeighEntry[T], when: float) -> None:
        self._timers.arm(e, when)

    @staticmethod
    def _del_timer(e: NeighEntry[T]) -> None:
        e.timer = None

    def timers(self, now: float) -> tuple[list[ArpRequest], list[T]]:
        """Run every neighbour timer due at or before `now`, each at its own deadline.

        Returns (ARP requests to send, items of entries whose resolution FAILED, in queue order). For
        each failed item the engine sends ICMP host unreachable and drops it: `neigh_invalidate()` →
        `arp_error_report()` → `dst_link_failure()` → `ipv4_link_failure()` → `icmp_send(skb,
        ICMP_DEST_UNREACH, ICMP_HOST_UNREACH, 0)`. Also runs the periodic gc (`neigh_periodic_work`).
        """
        reqs: list[ArpRequest] = []
        failed: list[T] = []
        for e, when in self._timers.due(now):
            self._timer_handler(e, when, reqs, failed)
        if self._timers.gc_next is not None and now >= self._timers.gc_next:
            self._periodic_gc(now)
        return reqs, failed

    def _timer_handler(self, e: NeighEntry[T], t: float, reqs: list[ArpRequest], failed: list[T]) -> None:
        """`neigh_timer_handler()`, run at the timer's deadline `t`."""
        p = self.parms
        state = e.state
        nxt = t + 1.0  # now + HZ
        if not state & NUD_IN_TIMER:
            return
        if state & _REACHABLE:
            if t <= e.confirmed + self.reachable_time:
                nxt = e.confirmed + self.reachable_time  # still alive (confirmed meanwhile)
            elif t <= e.used + p.delay_first_probe_time:
                e.state = _DELAY
                e.updated = t
                nxt = t + p.delay_first_probe_time
            else:
                e.state = _STALE
                e.updated = t
        elif state & _DELAY:
            if t <= e.confirmed + p.delay_first_probe_time:
                e.state = _REACHABLE
                e.updated = t
                nxt = e.confirmed + self.reachable_time
            else:
                e.state = _PROBE
                e.updated = t
                e.probes = 0
                nxt = t + max(p.retrans_time, TIMER_MIN)
        else:  # INCOMPLETE | PROBE
            nxt = t + max(p.retrans_time, TIMER_MIN)
        if e.state & (_INCOMPLETE | _PROBE) and e.probes >= self._max_probes(e):
            e.state = _FAILED
            self._invalidate(e, t, failed)
            return
        if e.state & NUD_IN_TIMER:
            self._arm(e, max(nxt, t + TIMER_MIN))
        if e.state & (_INCOMPLETE | _PROBE):
            self._probe(e, reqs)

    def _invalidate(self, e: NeighEntry[T], t: float, failed: list[T]) -> None:
        """`neigh_invalidate()`: hand every queued skb to `arp_error_report`, in order."""
        self.stats["res_failed"] += 1
        e.updated = t
        failed.extend(it for it, _s, _a in e.queue)
        e.queue.clear()
        e.qbytes = 0

    def _periodic_gc(self, now: float) -> None:
        """`neigh_periodic_work()`: re-draw reachable_time every 300 s; with at least gc_thresh1 entries,
        remove those not PERMANENT nor in a timer state that are FAILED or unused for gc_stale_time."""
        p = self.parms
        self.stats["periodic_gc_runs"] += 1
        if self._rng is not None and (self._last_rand is None or now > self._last_rand + REACH_RERANDOM_INTERVAL):
            self._last_rand = now
            self.reachable_time = self._rand_reach_time()
        self._timers.gc_next = now + p.gc_interval
        if len(self._entries) < p.gc_thresh1:
            return
        for key, e in list(self._entries.items()):
            if e.state & (_PERMANENT | NUD_IN_TIMER):
                continue
            if e.used < e.confirmed <= now:
                e.used = e.confirmed
            if e.state == _FAILED or not e.used <= now < e.used + p.gc_stale_time:
                self._remove(key, [])

    def next_deadline(self) -> float | None:
        """When `timers` next has work: the earliest neighbour timer, or the periodic gc once the table
        holds gc_thresh1 entries (below that it would remove nothing). None: nothing pending."""
        best = self._timers.next_timer()
        gc_next = self._timers.gc_next
        if gc_next is not None and len(self._entries) >= self.parms.gc_thresh1:
            best = gc_next if best is None else min(best, gc_next)
        return best

    # --- administration ----------------------------------------------------------------------------

    def flush_dev(self, dev: str, *, keep_permanent: bool = False) -> list[T]:
        """`neigh_ifdown()` (device down: every entry of `dev` goes, PERMANENT ones too) or, with
        `keep_permanent`, `neigh_carrier_down()`. Returns the queued items, which are dropped (no ICMP)."""
        dropped: list[T] = []
        for key in [k for k, e in self._entries.items()
                    if k[0] == dev and not (keep_permanent and e.state & _PERMANENT)]:
            self._remove(key, dropped)
        return dropped

    def valid_ha(self, dev: str, addr: int) -> bytes | None:
        """The entry's link-layer address when its state is NUD_VALID (read without touching the entry, as
        `ndisc_send_redirect` reads `neigh->ha`), else None."""
        e = self._entries.get((dev, addr))
        return e.ha if e is not None and e.state & NUD_VALID else None

    def state(self, dev: str, addr: int) -> Nud | None:
        """The entry's NUD state, None if there is no entry."""
        e = self._entries.get((dev, addr))
        return None if e is None else Nud(e.state)

    def queued(self, dev: str, addr: int) -> tuple[int, int]:
        """(items, charged bytes) held for the entry."""
        e = self._entries.get((dev, addr))
        return (0, 0) if e is None else (len(e.queue), e.qbytes)

    def __len__(self) -> int:
        return len(self._entries)

    def show(self, dev: str | None = None) -> list[NeighView]:
        """The entries as `ip neigh show [dev DEV]` lists them (in table order)."""
        return [NeighView(e.dev, e.addr, e.ha if e.state & NUD_VALID else None, STATE_NAMES[e.state])
                for e in self._entries.values() if dev is None or e.dev == dev]
