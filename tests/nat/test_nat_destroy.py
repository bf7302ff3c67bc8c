"""The conntrack destroy hook (`nf_ct_destroy` → `nf_nat_cleanup_conntrack`) and the memory it frees.

Every way a ct leaves the table (delete, flush, expiry at lookup, gc, early_drop) runs each registered
callback exactly once, and an unconfirmed ct that loses a clash at confirm runs them too. NAT's bysource
index registers there, so it holds no entry after its ct is gone; a long churn through conntrack + NAT
returns to its baseline of traced memory (issue #12: 27,800 expired entries kept 47.6 MB).
"""

from __future__ import annotations

import gc
import sys
import tracemalloc

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.conn import Conn
from natbox.conntrack.core import nf_conntrack_confirm, nf_conntrack_in
from natbox.conntrack.table import ConntrackTable
from natbox.conntrack.tuple import ConnTuple
from natbox.nat.core import NatCore
from natbox.netfilter import CtStatus, Hook, ManipType
from natbox.skb import Skb
from natbox.testing.natpkt import UDP, A, Lab, masq, snat_to, udp_packet

C = A("192.168.1.2")
S = A("198.51.100.7")


def _recorder(table: ConntrackTable) -> list[int]:
    seen: list[int] = []
    table.register_destroy(lambda ct: seen.append(ct.ct_id))
    return seen


def test_every_way_out_of_the_table_runs_the_hook_once() -> None:
    lab = Lab(max_entries=4)
    seen = _recorder(lab.table)
    cts = [lab.flow(ConnTuple(C, 1000 + i, S, 53, UDP), snat=masq()) for i in range(4)]
    for ct in cts:
        ct.timeout = lab.now + 10 + ct.ct_id
    assert len(lab.nat) == 4
    lab.table.delete(cts[0], lab.now, reason="conntrack -D")
    lab.table.delete(cts[0], lab.now, reason="again")  # not in the table any more: no second call
    assert seen == [cts[0].ct_id]
    # expiry found by a lookup
    assert lab.table.lookup(cts[1].tuples[0], cts[1].timeout) is None
    assert seen == [cts[0].ct_id, cts[1].ct_id]
    # gc reaps the expired ones
    assert lab.table.gc(cts[2].timeout) == 1
    assert seen[-1] == cts[2].ct_id
    # early_drop takes the unassured entry
    assert lab.table.early_drop(lab.now)
    assert seen[-1] == cts[3].ct_id
    assert len(seen) == 4 and len(set(seen)) == 4
    assert len(lab.nat) == 0
    assert all(ct.status & CtStatus.DYING for ct in cts)


def test_flush_runs_the_hook_and_empties_bysource() -> None:
    lab = Lab()
    seen = _recorder(lab.table)
    cts = [lab.flow(ConnTuple(C, 2000 + i, S, 80, UDP), snat=snat_to("203.0.113.1")) for i in range(50)]
    assert len(lab.nat) == 50
    assert lab.table.flush(lab.now) == 50
    assert sorted(seen) == sorted(ct.ct_id for ct in cts)
    assert len(lab.nat) == 0
    assert lab.table.flush(lab.now) == 0
    assert len(seen) == 50


def test_nat_registers_with_the_table_once() -> None:
    table = ConntrackTable()
    nat = NatCore(table)
    nat.attach(table)
    lab = Lab()
    lab.table = table
    lab.nat = nat
    ct = lab.flow(ConnTuple(C, 3000, S, 80, UDP), snat=masq())
    assert len(nat) == 1
    table.delete(ct, lab.now)
    assert len(nat) == 0
    assert len(table._destroy_cbs) == 1


def _udp_skb(sport: int, dport: int = 53) -> Skb:
    skb = Skb(udp_packet(C, sport, S, dport))
    skb.oif = "eth1"
    return skb


class _Churn:
    """Forwarded first packets of UDP flows: PRE_ROUTING conntrack, POST_ROUTING SNAT, confirm."""

    def __init__(self, flows: int) -> None:
        self.lab = Lab(max_entries=262144)
        self.cfg = ConntrackConfig()
        self.packets = [bytes(udp_packet(C, 1024 + i, S, 53)) for i in range(flows)]
        self.rng = snat_to("203.0.113.1")
        self.now = 1000.0

    def _chain(self, skb: Skb) -> int:
        assert skb.ct is not None
        lab = self.lab
        return lab.nat.setup_info(skb.ct, self.rng, ManipType.SRC, now=self.now, table=lab.table, rnd=lab.rnd)

    def round(self, flush: bool) -> None:
        """Every flow once, then a flush (`conntrack -F`) or expiry reaped by gc as the engine's timer does."""
        table, nat, cfg, rnd = self.lab.table, self.lab.nat, self.cfg, self.lab.rnd
        for data in self.packets:
            skb = Skb(bytearray(data))
            skb.oif = "eth1"
            now = self.now
            assert nf_conntrack_in(skb, Hook.PRE_ROUTING, now, table, cfg) == 1
            nat.nf_nat_inet_fn(skb, Hook.POST_ROUTING, now=now, table=table, rnd=rnd, run_chain=self._chain)
            assert nf_conntrack_confirm(skb, now, table) == 1
            self.now += 0.0001
        assert len(nat) == len(self.packets)
        if flush:
            table.flush(self.now)
        else:
            self.now += cfg.udp_timeout + 1
            while len(table):
                table.gc(self.now)
        assert len(table) == 0
        assert len(nat) == 0


def test_a_clash_loser_leaves_bysource() -> None:
    lab = Lab()
    cfg = ConntrackConfig()
    table, nat = lab.table, lab.nat
    seen = _recorder(table)
    # two packets of one UDP flow race to confirm: the second's ct is a loser merged into the first
    a, b = _udp_skb(4000), _udp_skb(4000)
    for skb in (a, b):
        assert nf_conntrack_in(skb, Hook.PRE_ROUTING, lab.now, table, cfg) == 1
    losers: list[Conn] = []
    for skb in (a, b):
        assert skb.ct is not None
        losers.append(skb.ct)
        nat.setup_info(skb.ct, snat_to("203.0.113.1"), ManipType.SRC, now=lab.now, table=table, rnd=lab.rnd)
        if skb is a:
            assert nf_conntrack_confirm(a, lab.now, table) == 1
    assert len(nat) == 2  # b reused a's mapping (find_appropriate_src): identical tuples
    assert nf_conntrack_confirm(b, lab.now, table) == 1  # merged (allow_clash) into a's ct
    assert b.ct is losers[0]
    assert seen == [losers[1].ct_id]
    assert losers[1].status & CtStatus.DYING
    assert len(nat) == 1


def test_churn_through_nat_returns_to_baseline_memory() -> None:
    """120,000 flows through conntrack + SNAT, with flushes and expiry: memory goes back to its baseline.

    Before the destroy hook the bysource index kept every expired and flushed entry (about 1.7 KB each,
    issue #12). The long churn counts allocated blocks (cheap); a shorter one under tracemalloc counts bytes.
    """
    churn = _Churn(10_000)
    churn.round(flush=True)  # warm-up: interned ints, dict sizes, code caches
    churn.round(flush=False)
    gc.collect()
    blocks = sys.getallocatedblocks()
    for r in range(8):
        churn.round(flush=bool(r % 2))
    gc.collect()
    # 80,000 flows after the baseline; a leak of one object per flow would add 80,000 blocks
    assert sys.getallocatedblocks() - blocks < 2_000

    small = _Churn(3_000)
    small.round(flush=True)
    tracemalloc.start()
    try:
        small.round(flush=False)
        gc.collect()
        baseline = tracemalloc.get_traced_memory()[0]
        for r in range(4):
            small.round(flush=bool(r % 2))
        gc.collect()
        current = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # 12,000 traced flows after the baseline; a leak of 100 bytes each would add 1.2 MB
    assert current - baseline < 64 * 1024, (baseline, current)

