"""NeighTable against the kernel's neighbour layer (net/core/neighbour.c, net/ipv4/arp.c).

Expected values come from the kernel's defaults (net.ipv4.neigh.default.*: retrans_time_ms 1000,
mcast_solicit 3, ucast_solicit 3, base_reachable_time_ms 30000, delay_first_probe_time 5,
unres_qlen_bytes 212992, locktime 1 s) and from the state machine in neigh_timer_handler /
__neigh_event_send / __neigh_update / arp_process; the kernel comparison itself is test_neigh_kernel.py.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natbox.conntrack.tuple import parse_addr
from natbox.engine.host import Host, Interface
from natbox.engine.neigh import (
    SKB_TRUESIZE_MIN,
    ArpRequest,
    NeighParms,
    NeighTable,
    Nud,
    arp_solicit_saddr,
    build_arp_solicit,
    format_ip_neigh,
    skb_truesize,
)
from natbox.engine.routing import Fib
from natbox.wire import arp, ethernet

DEV = "eth1"
NH = parse_addr("198.51.100.7")
OTHER = parse_addr("198.51.100.8")
MAC_A = bytes.fromhex("5204aa000001")
MAC_B = bytes.fromhex("5204bb000002")
OUR_MAC = bytes.fromhex("020000000101")
OUR_IP = parse_addr("198.51.100.1")
LAN_IP = parse_addr("192.168.50.1")
CLIENT = parse_addr("192.168.50.10")


def reply(sip: int, sha: bytes, tip: int = OUR_IP) -> arp.ArpPacket:
    return arp.ArpPacket(arp.ARPOP_REPLY, sha, sip, OUR_MAC, tip)


def request(sip: int, sha: bytes, tip: int) -> arp.ArpPacket:
    return arp.ArpPacket(arp.ARPOP_REQUEST, sha, sip, bytes(6), tip)


def resolving(t0: float = 100.0, parms: NeighParms | None = None) -> tuple[NeighTable[str], list[ArpRequest]]:
    """A table with one packet queued for NH at t0 (the first packet to an unknown next hop)."""
    tbl: NeighTable[str] = NeighTable(parms)
    reqs, dropped = tbl.queue(DEV, NH, "p1", 1000, t0, saddr=CLIENT)
    assert dropped == []
    return tbl, reqs


# --- INCOMPLETE: mcast_solicit broadcasts retrans_time apart, then FAILED ---------------------------------

def test_first_packet_sends_one_broadcast_request_at_once() -> None:
    tbl, reqs = resolving()
    assert reqs == [ArpRequest(DEV, NH, None, CLIENT)]
    assert tbl.state(DEV, NH) == Nud.INCOMPLETE
    assert tbl.lookup(DEV, NH, 100.0) is None
    assert tbl.next_deadline() == 101.0


def test_three_broadcasts_one_second_apart_then_failed_at_three_seconds() -> None:
    tbl, reqs = resolving()
    times = [100.0] * len(reqs)
    t = 100.0
    failed: list[str] = []
    while (deadline := tbl.next_deadline()) is not None:
        assert deadline > t
        t = deadline
        r, f = tbl.timers(t)
        times += [t] * len(r)
        assert all(x.dst_mac is None for x in r)  # broadcast while INCOMPLETE
        failed += f
        if f:
            fail_at = t
    assert times == [100.0, 101.0, 102.0]
    assert failed == ["p1"]
    assert fail_at == 103.0
    assert tbl.state(DEV, NH) == Nud.FAILED
    assert tbl.stats["solicit_mcast"] == 3
    assert tbl.stats["res_failed"] == 1


def test_nothing_happens_between_deadlines() -> None:
    tbl, _ = resolving()
    assert tbl.timers(100.999) == ([], [])
    assert len(tbl.timers(101.0)[0]) == 1
    assert tbl.timers(101.999) == ([], [])
    assert len(tbl.timers(102.0)[0]) == 1
    assert tbl.timers(102.999) == ([], [])
    assert tbl.state(DEV, NH) == Nud.INCOMPLETE


def test_late_timer_call_runs_every_expiry() -> None:
    tbl, _ = resolving()
    reqs, failed = tbl.timers(500.0)
    assert len(reqs) == 2 and failed == ["p1"]
    assert tbl.next_deadline() is None


def test_more_packets_while_incomplete_send_no_more_requests_and_fail_together_in_order() -> None:
    tbl, _ = resolving()
    assert tbl.queue(DEV, NH, "p2", 1000, 100.3) == ([], [])
    assert tbl.queue(DEV, NH, "p3", 1000, 101.5) == ([], [])
    assert tbl.timers(103.0)[1] == ["p1", "p2", "p3"]


def test_request_source_hint_is_the_newest_queued_packet() -> None:
    # neigh_probe solicits with skb_peek_tail(&neigh->arp_queue)
    tbl, _ = resolving()
    tbl.queue(DEV, NH, "p2", 1000, 100.5, saddr=OUR_IP)
    reqs, _ = tbl.timers(101.0)
    assert reqs == [ArpRequest(DEV, NH, None, OUR_IP)]


def test_failed_entry_restarts_resolution_on_the_next_packet() -> None:
    tbl, _ = resolving()
    tbl.timers(103.0)
    assert tbl.lookup(DEV, NH, 110.0) is None
    reqs, dropped = tbl.queue(DEV, NH, "q1", 1000, 110.0)
    assert dropped == []
    assert reqs == [ArpRequest(DEV, NH, None, 0)]
    assert tbl.state(DEV, NH) == Nud.INCOMPLETE
    assert tbl.timers(113.0) == ([ArpRequest(DEV, NH, None, 0)] * 2, ["q1"])


def test_no_solicitation_configured_fails_at_once() -> None:
    # __neigh_event_send: mcast_probes + app_probes == 0 -> NUD_FAILED, skb freed
    tbl: NeighTable[str] = NeighTable(NeighParms(mcast_solicit=0))
    assert tbl.queue(DEV, NH, "p", 100, 1.0) == ([], ["p"])
    assert tbl.state(DEV, NH) == Nud.FAILED


def test_app_solicit_probes_are_counted_not_sent() -> None:
    tbl, reqs = resolving(parms=NeighParms(app_solicit=1, mcast_solicit=2))
    # probes start at ucast_solicit (3): 3 is an app probe (no frame), 4 a broadcast; max 3+1+2 = 6
    assert reqs == []
    r, f = tbl.timers(200.0)
    assert [x.dst_mac for x in r] == [None, None]
    assert f == ["p1"]
    assert tbl.stats["solicit_app"] == 1


# --- unres_qlen_bytes --------------------------------------------------------------------------------

def test_queue_drops_the_oldest_beyond_unres_qlen_bytes() -> None:
    tbl: NeighTable[str] = NeighTable()
    tbl.queue(DEV, NH, "a", 100_000, 0.0)
    tbl.queue(DEV, NH, "b", 100_000, 0.1)
    assert tbl.queued(DEV, NH) == (2, 200_000)
    reqs, dropped = tbl.queue(DEV, NH, "c", 100_000, 0.2)  # 300000 > 212992: "a" goes
    assert (reqs, dropped) == ([], ["a"])
    assert tbl.stats["unres_discards"] == 1
    assert tbl.confirm(DEV, NH, MAC_A, 0.5) == ["b", "c"]


def test_an_item_larger_than_the_limit_is_still_queued_alone() -> None:
    tbl: NeighTable[str] = NeighTable()
    tbl.queue(DEV, NH, "a", 1000, 0.0)
    assert tbl.queue(DEV, NH, "big", 300_000, 0.1) == ([], ["a"])
    assert tbl.queued(DEV, NH) == (1, 300_000)


def test_queue_is_charged_at_least_the_skb_overhead() -> None:
    tbl: NeighTable[int] = NeighTable()
    dropped: list[int] = []
    for i in range(400):
        dropped += tbl.queue(DEV, NH, i, 0, 0.0)[1]
    fit = 212992 // SKB_TRUESIZE_MIN  # SK_WMEM_MAX / SKB_TRUESIZE(0)
    assert tbl.queued(DEV, NH)[0] == fit
    assert dropped == list(range(400 - fit))
    assert skb_truesize(256) * 256 == 212992  # SK_WMEM_MAX = SKB_TRUESIZE(256) * 256


# --- confirmation, REACHABLE, STALE, DELAY, PROBE --------------------------------------------------------

def test_reply_makes_it_reachable_and_releases_the_queue_in_order() -> None:
    tbl, _ = resolving()
    tbl.queue(DEV, NH, "p2", 1000, 100.2)
    released = tbl.arp_process(DEV, reply(NH, MAC_A), 100.4, pkt_host=True, target_local=False)
    assert released == ["p1", "p2"]
    assert tbl.state(DEV, NH) == Nud.REACHABLE
    assert tbl.lookup(DEV, NH, 100.4) == MAC_A
    assert tbl.queued(DEV, NH) == (0, 0)
    assert tbl.timers(101.0) == ([], [])  # the INCOMPLETE retransmit timer is gone


def test_reachable_turns_stale_after_reachable_time() -> None:
    tbl, _ = resolving(0.0)
    tbl.confirm(DEV, NH, MAC_A, 1.0)
    assert tbl.next_deadline() == 31.0
    tbl.timers(31.0)  # at confirmed + reachable_time it is still alive (time_before_eq) ...
    assert tbl.state(DEV, NH) == Nud.REACHABLE
    tbl.timers(31.02)  # ... and the re-armed timer (HZ/100 later) finds it stale
    assert tbl.state(DEV, NH) == Nud.STALE
    assert tbl.next_deadline() is None  # STALE has no timer


def test_reachable_used_through_the_fast_path_does_not_delay_expiry() -> None:
    # neigh_output takes the hh cache for a CONNECTED entry: neigh->used is not refreshed
    tbl, _ = resolving(0.0)
    tbl.confirm(DEV, NH, MAC_A, 1.0)
    for t in range(2, 31):
        assert tbl.lookup(DEV, NH, float(t)) == MAC_A
    tbl.timers(32.0)
    assert tbl.state(DEV, NH) == Nud.STALE


def test_confirmation_while_reachable_extends_it() -> None:
    tbl, _ = resolving(0.0)
    tbl.confirm(DEV, NH, MAC_A, 1.0)
    tbl.confirm(DEV, NH, MAC_A, 20.0)
    tbl.timers(40.0)
    assert tbl.state(DEV, NH) == Nud.REACHABLE
    assert tbl.next_deadline() == 50.0
    tbl.timers(50.02)
    assert tbl.state(DEV, NH) == Nud.STALE


def stale_entry() -> NeighTable[str]:
    tbl, _ = resolving(0.0)
    tbl.confirm(DEV, NH, MAC_A, 0.5)
    tbl.timers(40.0)
    assert tbl.state(DEV, NH) == Nud.STALE
    return tbl


def test_stale_used_goes_delay_then_probe_with_three_unicasts_then_failed() -> None:
    tbl = stale_entry()
    assert tbl.lookup(DEV, NH, 50.0) == MAC_A  # usable; __neigh_event_send: STALE -> DELAY
    assert tbl.state(DEV, NH) == Nud.DELAY
    assert tbl.next_deadline() == 55.0
    assert tbl.lookup(DEV, NH, 52.0) == MAC_A  # DELAY is usable
    reqs, failed = tbl.timers(55.0)
    assert tbl.state(DEV, NH) == Nud.PROBE
    assert reqs == [ArpRequest(DEV, NH, MAC_A, 0)]  # unicast to the cached MAC
    assert tbl.lookup(DEV, NH, 55.5) == MAC_A  # PROBE is usable
    r2, _ = tbl.timers(56.0)
    r3, _ = tbl.timers(57.0)
    assert r2 == r3 == reqs
    reqs, failed = tbl.timers(58.0)
    assert (reqs, failed) == ([], [])  # FAILED with an empty queue: nothing to report
    assert tbl.state(DEV, NH) == Nud.FAILED
    assert tbl.lookup(DEV, NH, 58.0) is None
    assert tbl.stats["solicit_ucast"] == 3


def test_probe_answered_becomes_reachable() -> None:
    tbl = stale_entry()
    tbl.lookup(DEV, NH, 50.0)
    tbl.timers(56.0)
    assert tbl.state(DEV, NH) == Nud.PROBE
    assert tbl.arp_process(DEV, reply(NH, MAC_A), 56.3, pkt_host=True, target_local=False) == []
    assert tbl.state(DEV, NH) == Nud.REACHABLE
    assert tbl.timers(60.0) == ([], [])
    assert tbl.next_deadline() == pytest.approx(86.3)


def test_delay_confirmed_becomes_reachable() -> None:
    tbl = stale_entry()
    tbl.lookup(DEV, NH, 50.0)
    tbl.confirm(DEV, NH, MAC_A, 52.0)
    assert tbl.state(DEV, NH) == Nud.REACHABLE
    assert tbl.timers(56.0) == ([], [])
    assert tbl.state(DEV, NH) == Nud.REACHABLE


def test_reachable_expiring_soon_after_use_goes_to_delay() -> None:
    # neigh_timer_handler: reachable time over but used within delay_first_probe_time -> DELAY
    tbl, _ = resolving(0.0, NeighParms(base_reachable_time=2.0))
    tbl.confirm(DEV, NH, MAC_A, 0.1)  # neigh_add_timer moved used up to confirmed (0.1)
    tbl.timers(2.2)  # at 2.1 still alive (time_before_eq), re-armed HZ/100 later: DELAY at 2.11
    assert tbl.state(DEV, NH) == Nud.DELAY
    assert tbl.next_deadline() == pytest.approx(7.11)


def test_randomised_reachable_time_is_in_the_kernels_range() -> None:
    for seed in range(50):
        tbl: NeighTable[str] = NeighTable(rng=random.Random(seed))
        assert 15.0 <= tbl.reachable_time < 45.0  # neigh_rand_reach_time: [base/2, 3*base/2)


# --- arp_process ---------------------------------------------------------------------------------------

def test_unsolicited_reply_creates_nothing() -> None:
    tbl: NeighTable[str] = NeighTable()
    assert tbl.arp_process(DEV, reply(NH, MAC_A), 1.0, pkt_host=True, target_local=False) == []
    assert len(tbl) == 0


def test_request_for_us_creates_a_stale_entry() -> None:
    tbl: NeighTable[str] = NeighTable()
    tbl.arp_process(DEV, request(NH, MAC_A, OUR_IP), 1.0, pkt_host=False, target_local=True)
    assert tbl.state(DEV, NH) == Nud.STALE
    assert tbl.lookup(DEV, NH, 2.0) == MAC_A
    assert tbl.state(DEV, NH) == Nud.DELAY


def test_request_not_for_us_updates_only_an_existing_entry() -> None:
    tbl: NeighTable[str] = NeighTable()
    tbl.arp_process(DEV, request(OTHER, MAC_B, NH), 1.0, pkt_host=False, target_local=False)
    assert len(tbl) == 0


def test_request_from_an_incomplete_neighbour_releases_the_queue_and_delays() -> None:
    tbl, _ = resolving(0.0)
    released = tbl.arp_process(DEV, request(NH, MAC_A, OUR_IP), 0.3, pkt_host=False, target_local=True)
    assert released == ["p1"]
    # STALE, then the released packet's neigh_resolve_output moves it to DELAY
    assert tbl.state(DEV, NH) == Nud.DELAY
    reqs, _ = tbl.timers(5.3)
    assert tbl.state(DEV, NH) == Nud.PROBE
    assert reqs == [ArpRequest(DEV, NH, MAC_A, 0)]


def test_broadcast_reply_is_only_stale() -> None:
    tbl, _ = resolving(0.0)
    released = tbl.arp_process(DEV, reply(NH, MAC_A), 0.3, pkt_host=False, target_local=False)
    assert released == ["p1"]
    assert tbl.state(DEV, NH) == Nud.DELAY


def test_request_with_the_same_mac_keeps_reachable() -> None:
    tbl, _ = resolving(0.0)
    tbl.confirm(DEV, NH, MAC_A, 0.2)
    tbl.arp_process(DEV, request(NH, MAC_A, OUR_IP), 5.0, pkt_host=False, target_local=True)
    assert tbl.state(DEV, NH) == Nud.REACHABLE


def test_request_with_a_new_mac_overrides_to_stale() -> None:
    tbl, _ = resolving(0.0)
    tbl.confirm(DEV, NH, MAC_A, 0.2)
    tbl.arp_process(DEV, request(NH, MAC_B, OUR_IP), 5.0, pkt_host=False, target_local=True)
    assert tbl.state(DEV, NH) == Nud.STALE
    assert tbl.lookup(DEV, NH, 5.0) == MAC_B


def test_a_different_reply_within_locktime_is_ignored() -> None:
    tbl, _ = resolving(0.0)
    tbl.confirm(DEV, NH, MAC_A, 0.2)
    tbl.arp_process(DEV, reply(NH, MAC_B), 0.9, pkt_host=True, target_local=False)
    assert tbl.lookup(DEV, NH, 0.9) == MAC_A  # "use the FIRST one"
    tbl.arp_process(DEV, reply(NH, MAC_B), 1.3, pkt_host=True, target_local=False)
    assert tbl.lookup(DEV, NH, 1.3) == MAC_B


def test_gratuitous_arp_overrides_within_locktime() -> None:
    tbl, _ = resolving(0.0)
    tbl.confirm(DEV, NH, MAC_A, 0.2)
    tbl.arp_process(DEV, request(NH, MAC_B, NH), 0.5, pkt_host=False, target_local=False)
    assert tbl.lookup(DEV, NH, 0.5) == MAC_B
    assert tbl.state(DEV, NH) == Nud.DELAY  # STALE (request), then used


def test_dad_probe_and_bad_targets_are_ignored() -> None:
    tbl, _ = resolving(0.0)
    assert tbl.arp_process(DEV, reply(0, MAC_A), 0.1, pkt_host=True, target_local=False) == []
    assert tbl.arp_process(DEV, reply(NH, MAC_A, parse_addr("224.0.0.1")), 0.1, pkt_host=True,
                           target_local=False) == []
    assert tbl.arp_process(DEV, reply(NH, MAC_A, parse_addr("127.0.0.1")), 0.1, pkt_host=True,
                           target_local=False) == []
    assert tbl.state(DEV, NH) == Nud.INCOMPLETE


# --- static entries --------------------------------------------------------------------------------------

def test_permanent_entries_never_change() -> None:
    tbl: NeighTable[str] = NeighTable(static=[(DEV, NH, MAC_A)])
    assert tbl.lookup(DEV, NH, 0.0) == MAC_A
    tbl.arp_process(DEV, reply(NH, MAC_B), 10.0, pkt_host=True, target_local=False)
    tbl.arp_process(DEV, request(NH, MAC_B, NH), 20.0, pkt_host=False, target_local=True)
    assert tbl.timers(1e6) == ([], [])
    assert tbl.next_deadline() is None
    assert tbl.state(DEV, NH) == Nud.PERMANENT
    assert tbl.lookup(DEV, NH, 1e6) == MAC_A
    with pytest.raises(ValueError, match="PERMANENT"):
        tbl.queue(DEV, NH, "x", 10, 1.0)


def test_permanent_entries_survive_gc_and_carrier_down() -> None:
    parms = NeighParms(gc_thresh1=1, gc_thresh2=1, gc_thresh3=2)
    tbl: NeighTable[str] = NeighTable(parms, static=[(DEV, NH, MAC_A)])
    tbl.timers(1000.0)
    assert tbl.flush_dev(DEV, keep_permanent=True) == []
    assert tbl.state(DEV, NH) == Nud.PERMANENT
    tbl.flush_dev(DEV)  # neigh_ifdown removes every entry of the device
    assert tbl.state(DEV, NH) is None


# --- bounds and gc ---------------------------------------------------------------------------------------

def test_table_full_drops_the_packet() -> None:
    parms = NeighParms(gc_thresh2=2, gc_thresh3=3)
    tbl: NeighTable[int] = NeighTable(parms)
    for i in range(3):
        assert tbl.queue(DEV, NH + i, i, 100, 0.0)[1] == []
    # 3 entries, all INCOMPLETE and updated within 5 s: neigh_forced_gc frees nothing, neigh_alloc fails
    assert tbl.queue(DEV, NH + 3, 3, 100, 0.5) == ([], [3])
    assert tbl.stats["table_fulls"] == 1
    assert len(tbl) == 3


def test_forced_gc_frees_failed_entries_for_new_ones() -> None:
    parms = NeighParms(gc_thresh2=2, gc_thresh3=3)
    tbl: NeighTable[int] = NeighTable(parms)
    for i in range(3):
        tbl.queue(DEV, NH + i, i, 100, 0.0)
    assert tbl.stats["forced_gc_runs"] == 1  # the third creation found gc_thresh2 entries
    tbl.timers(3.0)  # all FAILED
    reqs, dropped = tbl.queue(DEV, NH + 3, 3, 100, 3.5)
    assert dropped == [] and len(reqs) == 1
    assert tbl.stats["forced_gc_runs"] == 2
    assert len(tbl) == 2  # max_clean = 4 - gc_thresh2 = 2 removed (gc_entries counts the new one), + the new one


def test_periodic_gc_removes_failed_and_stale_unused_entries_above_thresh1() -> None:
    parms = NeighParms(gc_thresh1=2)
    tbl: NeighTable[str] = NeighTable(parms)
    tbl.queue(DEV, NH, "a", 100, 0.0)
    tbl.timers(3.0)  # FAILED
    tbl.arp_process(DEV, request(OTHER, MAC_B, OUR_IP), 1.0, pkt_host=False, target_local=True)  # STALE
    assert tbl.next_deadline() == 15.0  # gc every base_reachable_time/2 once there are gc_thresh1 entries
    tbl.timers(15.0)
    assert tbl.state(DEV, NH) is None  # FAILED: removed
    assert tbl.state(DEV, OTHER) == Nud.STALE  # used 14 s ago < gc_stale_time
    assert tbl.next_deadline() is None  # below gc_thresh1 the periodic gc would do nothing
    tbl.arp_process(DEV, request(NH, MAC_A, OUR_IP), 16.0, pkt_host=False, target_local=True)
    tbl.timers(75.0)
    assert tbl.state(DEV, OTHER) is None  # unused for more than gc_stale_time (60 s)
    assert tbl.state(DEV, NH) == Nud.STALE


def test_flush_dev_returns_queued_items() -> None:
    tbl, _ = resolving()
    tbl.queue("eth0", CLIENT, "lan", 100, 100.0)
    assert tbl.flush_dev(DEV) == ["p1"]
    assert tbl.state("eth0", CLIENT) == Nud.INCOMPLETE
    assert tbl.timers(200.0)[1] == ["lan"]


_OPS = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(0, 150_000),
                          st.floats(0, 4, allow_nan=False)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(_OPS)
def test_every_item_is_accounted_for_exactly_once(ops: list[tuple[int, int, int, float]]) -> None:
    """Queued items leave exactly once (released, dropped, failed or flushed); bounds hold throughout."""
    parms = NeighParms(gc_thresh1=2, gc_thresh2=2, gc_thresh3=3)
    tbl: NeighTable[int] = NeighTable(parms, static=[(DEV, OTHER, MAC_B)])
    now = 0.0
    sent = 0
    out: list[int] = []
    for op, host, size, dt in ops:
        now += dt
        addr = NH + host
        if op <= 1:
            if tbl.lookup(DEV, addr, now) is None:
                out += tbl.queue(DEV, addr, sent, size, now)[1]
                sent += 1
        elif op == 2:
            out += tbl.arp_process(DEV, reply(addr, MAC_A), now, pkt_host=bool(size & 1), target_local=False)
        elif op == 3:
            out += tbl.arp_process(DEV, request(addr, MAC_A, OUR_IP), now, pkt_host=False, target_local=True)
        else:
            out += tbl.timers(now)[1]
            deadline = tbl.next_deadline()
            assert deadline is None or deadline > now
        for v in tbl.show():
            n, b = tbl.queued(v.dev, v.addr)
            assert b <= parms.unres_qlen_bytes or n == 1
        assert len(tbl) <= parms.gc_thresh3 + 1  # + the static entry
    out += tbl.flush_dev(DEV)
    assert len(set(out)) == len(out)
    assert len(out) + tbl.stats["gc_purged_items"] == sent


# --- the request on the wire -----------------------------------------------------------------------------

def gateway() -> tuple[Host, Fib]:
    host = Host(name="gw", ip_forward=True)
    host.add_interface(Interface("eth0", mac=bytes.fromhex("020000000001")))
    host.add_interface(Interface(DEV, mac=OUR_MAC))
    host.add_address("eth0", LAN_IP, 24)
    host.add_address(DEV, OUR_IP, 24)
    host.ensure_loopback()
    return host, Fib(host)


def test_solicit_sender_ip_follows_arp_announce() -> None:
    host, fib = gateway()
    dev = host.interfaces[DEV]
    forwarded = ArpRequest(DEV, NH, None, CLIENT)  # a forwarded packet's source is not local
    local_other_dev = ArpRequest(DEV, NH, None, LAN_IP)  # ping -I <LAN address> through eth1
    assert arp_solicit_saddr(forwarded, dev, fib) == OUR_IP  # inet_select_addr(eth1, target)
    assert arp_solicit_saddr(local_other_dev, dev, fib) == LAN_IP  # arp_announce 0: any local address
    assert arp_solicit_saddr(local_other_dev, dev, fib, arp_announce=1) == OUR_IP  # not on-link with target
    assert arp_solicit_saddr(ArpRequest(DEV, NH, None, OUR_IP), dev, fib, arp_announce=1) == OUR_IP
    assert arp_solicit_saddr(local_other_dev, dev, fib, arp_announce=2) == OUR_IP
    assert arp_solicit_saddr(ArpRequest(DEV, NH, MAC_A, 0), dev, fib) == OUR_IP


def test_solicit_frame() -> None:
    frame = build_arp_solicit(ArpRequest(DEV, NH, None, 0), OUR_MAC, OUR_IP)
    assert len(frame) == 42  # 14 + 28, unpadded as on a veth (tcpdump: "length 28")
    parsed = ethernet.parse_ethernet(frame)
    assert parsed is not None
    dst, src, etype, off = parsed
    assert (dst, src, etype) == (ethernet.BROADCAST, OUR_MAC, ethernet.ETH_P_ARP)
    assert arp.parse_arp(frame[off:]) == arp.ArpPacket(arp.ARPOP_REQUEST, OUR_MAC, OUR_IP, bytes(6), NH)
    unicast = build_arp_solicit(ArpRequest(DEV, NH, MAC_A, 0), OUR_MAC, OUR_IP)
    assert unicast[:6] == MAC_A


def test_ip_neigh_listing() -> None:
    tbl: NeighTable[str] = NeighTable(static=[("eth0", CLIENT, MAC_B)])
    tbl.queue(DEV, NH, "p", 100, 0.0)
    tbl.queue(DEV, OTHER, "q", 100, 0.0)
    tbl.arp_process(DEV, reply(OTHER, MAC_A), 0.1, pkt_host=True, target_local=False)
    tbl.timers(3.0)
    # the formats of iproute2's `ip neigh show` (lladdr only for NUD_VALID states)
    assert format_ip_neigh(tbl.show()) == [
        "192.168.50.10 dev eth0 lladdr 52:04:bb:00:00:02 PERMANENT",
        "198.51.100.7 dev eth1 FAILED",
        "198.51.100.8 dev eth1 lladdr 52:04:aa:00:00:01 REACHABLE",
    ]
    assert [v.addr for v in tbl.show("eth0")] == [CLIENT]


def test_timer_records_stay_bounded_under_churn() -> None:
    """Re-armed timers leave stale heap records; the heap is rebuilt before it grows past HEAP_SLACK
    records per entry (+64), and the live timer survives the rebuild."""
    tbl: NeighTable[int] = NeighTable()
    tbl.queue(DEV, NH, 0, 100, 0.0)
    tbl.confirm(DEV, NH, MAC_A, 0.1)
    t = 0.1
    for i in range(300):  # never calling timers(): nothing pops the stale records
        t += 2.0  # past locktime, so a new MAC overrides
        mac = MAC_B if i % 2 == 0 else MAC_A
        tbl.arp_process(DEV, request(NH, mac, OUR_IP), t, pkt_host=False, target_local=True)  # STALE
        assert tbl.lookup(DEV, NH, t) == mac  # DELAY: armed
        tbl.confirm(DEV, NH, mac, t)  # REACHABLE: re-armed
        assert len(tbl._timers.heap) <= 4 * len(tbl) + 64
    assert tbl.next_deadline() == pytest.approx(t + 30.0)
    tbl.timers(t + 30.02)
    assert tbl.state(DEV, NH) == Nud.STALE


def test_reachable_time_is_redrawn_by_the_periodic_work_every_300_s() -> None:
    tbl: NeighTable[str] = NeighTable(rng=random.Random(1))
    tbl.queue(DEV, NH, "p", 100, 0.0)  # starts the periodic work (every 15 s)
    first = tbl.reachable_time
    drawn = {first}
    t = 0.0
    while t < 1000.0:
        t += 15.0
        tbl.timers(t)
        drawn.add(tbl.reachable_time)
        assert 15.0 <= tbl.reachable_time < 45.0
    assert 3 <= len(drawn) <= 5  # at the first run, then each time 300 s have passed (neigh_periodic_work)


def test_request_for_us_when_the_table_is_full_creates_nothing() -> None:
    tbl: NeighTable[str] = NeighTable(NeighParms(gc_thresh2=1, gc_thresh3=1))
    tbl.queue(DEV, NH, "p", 100, 0.0)
    assert tbl.arp_process(DEV, request(OTHER, MAC_B, OUR_IP), 0.5, pkt_host=False, target_local=True) == []
    assert tbl.state(DEV, OTHER) is None
    assert tbl.stats["table_fulls"] == 1
    assert tbl.confirm(DEV, OTHER, MAC_B, 0.6) == []  # confirm never creates (arp_accept 0)
