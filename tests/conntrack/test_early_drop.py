"""early_drop's work per new connection does not grow with the table (issue #12; kernel: a bounded scan of
NF_CT_EVICTION_RANGE buckets). Measured in entries examined and memory allocated, not wall time."""

from __future__ import annotations

import tracemalloc

from natbox.conntrack.conn import Conn
from natbox.conntrack.table import EARLY_DROP_SCAN, ConntrackTable
from natbox.conntrack.tuple import ConnTuple
from natbox.netfilter import CtInfo, CtStatus
from natbox.testing.conntrack import A, B, Box, udp

T0 = 5000.0


def _fill(table: ConntrackTable, n: int, *, assured: bool) -> None:
    for i in range(n):
        orig = ConnTuple(0x0A000000 + i, 1024 + i % 50000, 0xC6336407, 80, 17)
        reply = ConnTuple(orig.dst, orig.dport, orig.src, orig.sport, 17)
        ct = Conn(orig, reply, now=T0, ct_id=table.new_id())
        ct.timeout = T0 + 10_000
        if assured:
            ct.status |= CtStatus.ASSURED
        table.insert(ct, T0)


def _work_of_failed_early_drops(n: int, calls: int) -> tuple[int, int]:
    """(entries examined, peak bytes allocated) for `calls` early_drops on a full table of ASSURED entries."""
    table = ConntrackTable(max_entries=n)
    _fill(table, n, assured=True)
    tracemalloc.start()
    try:
        for _ in range(calls):
            assert not table.early_drop(T0 + 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return table.early_drop_scanned, peak


def test_early_drop_work_is_flat_as_the_table_fills() -> None:
    small = _work_of_failed_early_drops(1_000, 200)
    large = _work_of_failed_early_drops(100_000, 200)
    assert small[0] == large[0] == 200 * EARLY_DROP_SCAN
    # no copy of the table per call (the old code built a list of every entry: 800 KB at 100,000)
    assert large[1] < 64 * 1024, large


def test_syn_flood_on_a_full_table_examines_one_entry_per_new_connection() -> None:
    box = Box(table=ConntrackTable(max_entries=20_000))
    _fill(box.table, 20_000, assured=False)
    for port in range(1, 2001):
        sent = box.send(udp(A, B, port, 53), T0 + 1)
        assert sent.verdict == 1 and sent.ctinfo == CtInfo.NEW
    assert box.table.early_drop_scanned == 2000  # the oldest entry is unassured: one look each
    assert box.table.stats.early_drop == 2000
    assert len(box.table) == 20_000
