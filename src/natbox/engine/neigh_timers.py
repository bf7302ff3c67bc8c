"""The neighbour table's timers (engine/neigh.py's `NeighTable`): every entry's `timer_list` as one heap of
deadlines, and the periodic gc's (`neigh_periodic_work`) next run. Sans-IO: deadlines are float seconds on the
caller's clock.

A re-armed or deleted timer leaves a stale record in the heap (the entry's `timer` no longer matches it); stale
records are skipped when they come up, and the heap is rebuilt from the live entries once it holds more than
`HEAP_SLACK` records per entry (+64), so it is bounded by the table's own bound (gc_thresh3 entries).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Final, Generic, TypeVar

from natbox.engine.nud import NeighEntry

__all__ = ["HEAP_SLACK", "NeighTimers"]

T = TypeVar("T")
HEAP_SLACK: Final = 4  # the timer heap is rebuilt when it holds more than 4 records per live entry (+64)


class NeighTimers(Generic[T]):
    """The armed timers of the entries in `entries` (the table's own dict, shared, not copied)."""

    def __init__(self, entries: dict[tuple[str, int], NeighEntry[T]]) -> None:
        self._entries = entries
        self.heap: list[tuple[float, int, tuple[str, int]]] = []  # (deadline, seq, key); stale records skipped
        self._seq = 0
        self.gc_next: float | None = None  # next neigh_periodic_work run

    def arm(self, e: NeighEntry[T], when: float) -> None:
        """`mod_timer(&neigh->timer, when)`."""
        e.timer = when
        self._seq += 1
        heapq.heappush(self.heap, (when, self._seq, (e.dev, e.addr)))
        if len(self.heap) > HEAP_SLACK * len(self._entries) + 64:
            self.heap = [(x.timer, i, k) for i, (k, x) in enumerate(self._entries.items()) if x.timer is not None]
            heapq.heapify(self.heap)

    def due(self, now: float) -> Iterator[tuple[NeighEntry[T], float]]:
        """Each entry whose timer is due at or before `now`, with its deadline, earliest first; its timer is
        cleared before it is handed out (the handler may arm it again, even while this runs)."""
        while self.heap and self.heap[0][0] <= now:  # self.heap: `arm` may rebuild it meanwhile
            when, _seq, key = heapq.heappop(self.heap)
            e = self._entries.get(key)
            if e is None or e.timer != when:
                continue  # a stale record: the timer was deleted or re-armed
            e.timer = None
            yield e, when

    def next_timer(self) -> float | None:
        """The earliest live timer's deadline (stale records at the top are dropped), None if none is armed."""
        heap = self.heap
        while heap:
            when, _seq, key = heap[0]
            e = self._entries.get(key)
            if e is not None and e.timer == when:
                return when
            heapq.heappop(heap)
        return None
