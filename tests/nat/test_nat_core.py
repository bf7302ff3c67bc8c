"""get_unique_tuple / setup_info: the consequences of §4.5-§4.6 and the [V] facts of experiments 1-5."""

from __future__ import annotations

import random

import pytest

from natbox.cli.builds import is_compiled
from natbox.conntrack.conn import Conn
from natbox.conntrack.tuple import ConnTuple, invert
from natbox.nat.range import NatRange, RangeFlags
from natbox.netfilter import CtStatus, ManipType, TcpState
from natbox.testing.natpkt import ICMP, TCP, UDP, A, Lab, masq, snat_to

S = A("203.0.113.2")  # the server
ROUTER = A("203.0.113.1")  # the masquerade address
C2, C3 = A("192.168.50.2"), A("192.168.50.3")


def reply_port(ct_reply: ConnTuple) -> int:
    """The NATed source port as the wire shows it: the REPLY tuple's destination port."""
    return ct_reply.dport


# --- SNAT / MASQUERADE: port preservation and port classes ------------------------------------------


def test_masquerade_preserves_a_free_port() -> None:
    lab = Lab()
    trace: list[str] = []
    ct = lab.flow(ConnTuple(C2, 40010, S, 80, TCP), snat=masq(), trace=trace)
    assert ct.reply == ConnTuple(S, 80, ROUTER, 40010, TCP)
    assert ct.has(CtStatus.SRC_NAT) and ct.has(CtStatus.SRC_NAT_DONE | CtStatus.DST_NAT_DONE)
    assert not ct.has(CtStatus.DST_NAT)
    assert "SNAT: port 40010 kept" in trace


@pytest.mark.parametrize(("port", "lo", "hi"), [(40010, 1024, 65535), (100, 1, 511), (700, 600, 1023),
                                                 (511, 1, 511), (512, 600, 1023), (1023, 600, 1023),
                                                 (1024, 1024, 65535)])
def test_second_host_same_port_gets_a_port_of_the_same_class(port: int, lo: int, hi: int) -> None:
    # [V] exp. 1: 40010 → 26390, 100 → 410, 700 → 962 (random offsets: compare the class only, §10).
    for seed in range(20):
        lab = Lab(seed)
        first = lab.flow(ConnTuple(C2, port, S, 80, UDP), snat=masq())
        assert first.reply.dport == port
        trace: list[str] = []
        second = lab.flow(ConnTuple(C3, port, S, 80, UDP), snat=masq(), trace=trace)
        got = second.reply.dport
        assert got != port
        assert lo <= got <= hi
        assert second.reply.dst == ROUTER
        assert any(f"{port} clashes with ct #{first.ct_id}; port {got} taken from {lo}-{hi}" in line
                   for line in trace), trace


def test_endpoint_independent_mapping_find_appropriate_src() -> None:
    # [V] exp. 2: 192.168.50.3:40030 → S:8080 got 32336, and 192.168.50.3:40030 → S:80 also got 32336.
    lab = Lab(7)
    lab.flow(ConnTuple(C2, 40030, S, 8080, TCP), snat=masq())  # holds 203.0.113.1:40030 toward S:8080
    b = lab.flow(ConnTuple(C3, 40030, S, 8080, TCP), snat=masq())
    mapped = b.reply.dport
    assert mapped != 40030
    trace: list[str] = []
    c = lab.flow(ConnTuple(C3, 40030, S, 80, TCP), snat=masq(), trace=trace)
    # 40030 toward S:80 would be free, but the existing mapping of 192.168.50.3:40030 wins.
    assert c.reply == ConnTuple(S, 80, ROUTER, mapped, TCP)
    assert f"SNAT: reused mapping 203.0.113.1:{mapped} of ct #{b.ct_id} (find_appropriate_src)" in trace


def test_find_appropriate_src_falls_through_when_the_mapping_is_used() -> None:
    lab = Lab(3)
    b = lab.flow(ConnTuple(C3, 5555, S, 80, UDP), snat=snat_to("203.0.113.1", 20000, 20010))
    mapped = b.reply.dport
    # Someone else already holds ROUTER:mapped toward S:53: the mapping cannot be reused there.
    lab.flow(ConnTuple(A("192.168.50.9"), mapped, S, 53, UDP), snat=snat_to("203.0.113.1", 20000, 20010))
    trace: list[str] = []
    c = lab.flow(ConnTuple(C3, 5555, S, 53, UDP), snat=snat_to("203.0.113.1", 20000, 20010), trace=trace)
    assert c.reply.dport != mapped and 20000 <= c.reply.dport <= 20010
    assert any("not reused" in line for line in trace)


def test_mapping_is_forgotten_when_its_ct_dies() -> None:
    lab = Lab(5)
    lab.flow(ConnTuple(C2, 40030, S, 8080, TCP), snat=masq())
    b = lab.flow(ConnTuple(C3, 40030, S, 8080, TCP), snat=masq())
    assert len(lab.nat) == 2
    lab.table.delete(b, lab.now)  # the destroy hook unlinks b from the bysource index
    assert len(lab.nat) == 1
    c = lab.flow(ConnTuple(C3, 40030, S, 80, TCP), snat=masq())
    assert c.reply.dport == 40030  # port preserved: no sticky mapping any more
    lab.nat.forget(c)
    assert len(lab.nat) == 1  # the first flow only


def test_bysource_holds_exactly_the_tables_src_bound_entries() -> None:
    lab = Lab(1, max_entries=8)
    for i in range(40):
        ct = lab.flow(ConnTuple(C2, 1000 + i, S, 80, UDP), snat=masq())
        if i % 2:
            lab.table.delete(ct, lab.now)  # nf_nat_cleanup_conntrack unlinks it at once
        assert len(lab.nat) == len(lab.table)


# --- DNAT ------------------------------------------------------------------------------------------------


def test_dnat_port_range_gives_lowest_free_port() -> None:
    # [V] exp. 3: DNAT to 203.0.113.2:5000-5010 gave 5000 for every non-clashing flow; clashing flows got
    # 5001, 5002, 5003 in order.
    lab = Lab()
    rng = NatRange(RangeFlags.MAP_IPS | RangeFlags.PROTO_SPECIFIED, S, S, 5000, 5010)
    client = A("198.51.100.7")
    got = [lab.flow(ConnTuple(client, 45000, ROUTER, 10000 + i, TCP), dnat=rng).reply.sport for i in range(4)]
    assert got == [5000, 5001, 5002, 5003]
    other = lab.flow(ConnTuple(A("198.51.100.8"), 45000, ROUTER, 10000, TCP), dnat=rng)
    assert other.reply.sport == 5000
    assert other.has(CtStatus.DST_NAT) and not other.has(CtStatus.SRC_NAT)


def test_dnat_without_port_never_changes_the_port_even_on_clash() -> None:
    lab = Lab()
    rng = NatRange(RangeFlags.MAP_IPS, S, S)
    client = A("198.51.100.7")
    first = lab.flow(ConnTuple(client, 45000, ROUTER, 80, TCP), dnat=rng, snat=None)
    trace: list[str] = []
    second = lab.conn(ConnTuple(client, 45000, A("203.0.113.9"), 80, TCP))
    lab.setup(second, rng, ManipType.DST, trace)
    assert second.reply == first.reply  # same reply tuple: the clash is left to confirm (or a later SNAT)
    assert lab.table.clash(second, lab.now) is not None
    assert any("DNAT without a port range never changes the port" in line for line in trace)
    # A later SNAT (here the null binding at POSTROUTING) resolves it by changing the source port.
    lab.null(second, ManipType.SRC)
    assert lab.table.clash(second, lab.now) is None
    assert second.reply.dport != 45000 and second.has(CtStatus.SRC_NAT)


def test_dnat_offset_base_maps_relative_to_base() -> None:
    # DNAT --to-destination 203.0.113.2:5000-5009/1000: port = min + (orig - base) mod size (§5.1).
    lab = Lab()
    rng = NatRange(RangeFlags.MAP_IPS | RangeFlags.PROTO_SPECIFIED | RangeFlags.PROTO_OFFSET, S, S, 5000, 5009, 1000)
    client = A("198.51.100.7")
    assert lab.flow(ConnTuple(client, 1, ROUTER, 1003, TCP), dnat=rng).reply.sport == 5003
    assert lab.flow(ConnTuple(client, 2, ROUTER, 1012, TCP), dnat=rng).reply.sport == 5002
    # In range already: OFFSET still maps (step 3 is skipped with OFFSET).
    assert lab.flow(ConnTuple(client, 3, ROUTER, 5001, TCP), dnat=rng).reply.sport == 5001
    # (4001 - 1000) mod 10 = 1, and 5001 for port 3... is free for client port 4: offset mapping holds.
    assert lab.flow(ConnTuple(client, 4, ROUTER, 4001, TCP), dnat=rng).reply.sport == 5001
    # Clash: same client port to 1003 again via another public address → next port.
    clash = lab.flow(ConnTuple(client, 1, A("203.0.113.9"), 1003, TCP), dnat=rng)
    assert clash.reply.sport == 5004


# --- SNAT with ports, --random, exhaustion -------------------------------------------------------------


def test_snat_port_range_keeps_in_range_port_and_maps_others_into_range() -> None:
    # [V] exp. 3: SNAT --to-source 203.0.113.1:20000-20010: random in range, 20005 kept.
    lab = Lab(11)
    rng = snat_to("203.0.113.1", 20000, 20010)
    assert lab.flow(ConnTuple(C2, 20005, S, 80, TCP), snat=rng).reply.dport == 20005
    for i in range(5):
        p = lab.flow(ConnTuple(C2, 40000 + i, S, 80, TCP), snat=rng).reply.dport
        assert 20000 <= p <= 20010


def test_to_ports_range() -> None:
    # [V] exp. 5: --to-ports 30000-30005 kept an in-range 30003 and mapped 43002 into the range.
    lab = Lab(2)
    rng = masq(lo=30000, hi=30005)
    assert lab.flow(ConnTuple(C2, 30003, S, 80, TCP), snat=rng).reply.dport == 30003
    assert 30000 <= lab.flow(ConnTuple(C2, 43002, S, 80, TCP), snat=rng).reply.dport <= 30005


def test_reversed_port_range_is_swapped() -> None:
    lab = Lab(2)
    rng = NatRange(RangeFlags.MAP_IPS | RangeFlags.PROTO_SPECIFIED, ROUTER, ROUTER, 30005, 30000)
    p = lab.flow(ConnTuple(C2, 43002, S, 80, TCP), snat=rng).reply.dport
    assert 30000 <= p <= 30005


@pytest.mark.parametrize("flag", [RangeFlags.PROTO_RANDOM, RangeFlags.PROTO_RANDOM_FULLY])
@pytest.mark.parametrize(("port", "lo", "hi"), [(43000, 1024, 65535), (300, 1, 511), (700, 600, 1023)])
def test_random_changes_a_free_port_within_its_class(flag: RangeFlags, port: int, lo: int, hi: int) -> None:
    # [V] exp. 5: --random changed a free port (43000 → 25954; 300 → 413).
    changed = 0
    for seed in range(10):
        lab = Lab(seed)
        trace: list[str] = []
        p = lab.flow(ConnTuple(C2, port, S, 80, TCP), snat=masq(flags=flag), trace=trace).reply.dport
        assert lo <= p <= hi
        changed += p != port
        assert any("randomised" in line for line in trace)
    assert changed >= 9


def test_random_skips_find_appropriate_src() -> None:
    lab = Lab(4)
    lab.flow(ConnTuple(C2, 40030, S, 8080, TCP), snat=masq())
    b = lab.flow(ConnTuple(C3, 40030, S, 8080, TCP), snat=masq())
    c = lab.flow(ConnTuple(C3, 40030, S, 80, TCP), snat=masq(flags=RangeFlags.PROTO_RANDOM))
    assert c.reply.dport != b.reply.dport


def test_single_port_range_is_taken_without_clash_check() -> None:
    lab = Lab()
    rng = snat_to("203.0.113.1", 20000)
    a = lab.flow(ConnTuple(C2, 20000, S, 80, UDP), snat=rng)
    trace: list[str] = []
    b = lab.flow(ConnTuple(C3, 20000, S, 80, UDP), snat=rng, trace=trace)
    assert a.reply.dport == b.reply.dport == 20000
    assert lab.table.clash(b, lab.now) is not None  # confirm would fail (insert_failed)
    assert "SNAT: port 20000 is the single port of the range (taken without a clash check)" in trace
    # An out-of-range port goes through the search instead: one probe, which clashes, and is kept.
    trace = []
    c = lab.flow(ConnTuple(C3, 1111, S, 80, UDP), snat=rng, trace=trace)
    assert c.reply.dport == 20000
    assert any("no free port in 20000-20000 after 1 probe;" in line for line in trace)


def test_exhaustion_keeps_the_last_probed_clashing_tuple() -> None:
    # [V] exp. 5: an exhausted --to-ports range gave insert_failed.
    lab = Lab(9)
    rng = masq(lo=30000, hi=30005)
    for i in range(6):
        lab.flow(ConnTuple(C2, 40000 + i, S, 80, UDP), snat=rng)
    used = {c.reply.dport for c in lab.table}
    assert used == set(range(30000, 30006))
    trace: list[str] = []
    ct = lab.flow(ConnTuple(C2, 40100, S, 80, UDP), snat=rng, confirm=False, trace=trace)
    assert 30000 <= ct.reply.dport <= 30005
    assert lab.table.clash(ct, lab.now) is not None
    assert any("no free port in 30000-30005 after 6 probes" in line for line in trace)


@pytest.mark.skipif(is_compiled(),
                    reason="interpreted only: replaces a ConntrackTable method, which a compiled (mypyc) "
                           "class does not allow")
def test_search_rounds_are_128_64_32_16_8() -> None:
    """With the 1024-65535 class fully clashing for every probe, 248 probes are made and 5 offsets drawn."""

    class CountingRandom(random.Random):
        draws = 0

        def getrandbits(self, k: int, /) -> int:
            type(self).draws += 1
            return super().getrandbits(k)

    lab = Lab()
    lab.rnd = CountingRandom(1)
    # Occupy every port toward S:80 from the router: too many entries to insert; fake "taken" instead.
    taken_calls: list[ConnTuple] = []

    def always_taken(t: ConnTuple, ignored: object, now: float) -> tuple[object, int]:
        taken_calls.append(t)
        return (ignored, 0)

    lab.table.find_taken = always_taken  # type: ignore[assignment,method-assign]
    ct = lab.conn(ConnTuple(C2, 40000, S, 80, UDP))
    lab.null(ct, ManipType.DST)
    trace: list[str] = []
    lab.setup(ct, masq(), ManipType.SRC, trace)
    # step 1a (1 check) + step 3 (1 check) + 248 probes
    assert len(taken_calls) == 2 + 128 + 64 + 32 + 16 + 8
    assert CountingRandom.draws == 5
    assert any("after 248 probes" in line for line in trace)


# --- TIME_WAIT eviction (nf_nat_used_tuple_harder) ----------------------------------------------------------


def _fill_with_closing(lab: Lab, rng: NatRange, state: TcpState, td_end: int) -> list[Conn]:
    cts = []
    for i in range(6):
        ct = lab.flow(ConnTuple(C2, 40000 + i, S, 80, TCP), snat=rng, tcp_state=TcpState.SYN_SENT, td_end=td_end)
        assert ct.tcp is not None
        ct.tcp.state = state
        cts.append(ct)
    return cts


def test_time_wait_entry_is_evicted_by_a_newer_syn() -> None:
    # [V] exp. 5: with a 6-port range exhausted by TIME_WAIT entries a new SYN evicted one and took its port.
    lab = Lab(12)
    rng = masq(lo=30000, hi=30005)
    olds = _fill_with_closing(lab, rng, TcpState.TIME_WAIT, td_end=1000)
    trace: list[str] = []
    ct = lab.flow(ConnTuple(C3, 50000, S, 80, TCP), snat=rng, tcp_state=TcpState.SYN_SENT, td_end=5000, trace=trace)
    assert ct.confirmed  # it got a free port
    evicted = [o for o in olds if o.status & CtStatus.DYING]
    assert len(evicted) == 1
    assert evicted[0].reply.dport == ct.reply.dport
    assert len(lab.table) == 6
    assert any("evicted TIME_WAIT ct #" in line for line in trace)


@pytest.mark.parametrize(
    ("state", "old_end", "new_end", "new_state"),
    [
        (TcpState.ESTABLISHED, 1000, 5000, TcpState.SYN_SENT),  # not closing
        (TcpState.TIME_WAIT, 5000, 5000, TcpState.SYN_SENT),  # sequence not advanced
        (TcpState.TIME_WAIT, 0x7FFFFFFF, 0x80000000 + 0x7FFFFFFF, TcpState.SYN_SENT),  # s32 difference <= 0
        (TcpState.TIME_WAIT, 1000, 5000, TcpState.ESTABLISHED),  # our ct is not in SYN_SENT
    ],
)
def test_no_eviction(state: TcpState, old_end: int, new_end: int, new_state: TcpState) -> None:
    lab = Lab(12)
    rng = masq(lo=30000, hi=30005)
    _fill_with_closing(lab, rng, state, td_end=old_end)
    ct = lab.flow(ConnTuple(C3, 50000, S, 80, TCP), snat=rng, tcp_state=new_state, td_end=new_end & 0xFFFFFFFF)
    assert not ct.confirmed
    assert len(lab.table) == 6


def test_close_and_syn_sent2_entries_are_evictable_but_not_without_src_nat() -> None:
    for state in (TcpState.CLOSE, TcpState.SYN_SENT2):
        lab = Lab(1)
        rng = masq(lo=30000, hi=30005)
        _fill_with_closing(lab, rng, state, td_end=10)
        ct = lab.flow(ConnTuple(C3, 50000, S, 80, TCP), snat=rng, tcp_state=TcpState.SYN_SENT, td_end=20)
        assert ct.confirmed
    # Entries whose port was not changed by NAT (no IPS_SRC_NAT) are never killed.
    lab = Lab(1)
    for i in range(6):
        old = lab.flow(ConnTuple(ROUTER, 30000 + i, S, 80, TCP), tcp_state=TcpState.TIME_WAIT, td_end=10)
        assert not old.has(CtStatus.SRC_NAT)
    ct = lab.flow(ConnTuple(C3, 50000, S, 80, TCP), snat=masq(lo=30000, hi=30005),
                  tcp_state=TcpState.SYN_SENT, td_end=20)
    assert not ct.confirmed


# --- ICMP ids ------------------------------------------------------------------------------------------------


def test_icmp_id_clash_is_remapped_over_the_whole_id_space() -> None:
    # [V] exp. 5: ICMP id clash 4242 → 64432 (random: compare "different id, full range").
    ids = set()
    for seed in range(10):
        lab = Lab(seed)
        a = lab.flow(ConnTuple(C2, 4242, S, 8 << 8, ICMP), snat=masq())
        assert a.reply == ConnTuple(S, 4242, ROUTER, 0, ICMP)
        trace: list[str] = []
        b = lab.flow(ConnTuple(C3, 4242, S, 8 << 8, ICMP), snat=masq(), trace=trace)
        assert b.reply.sport != 4242 and b.reply.dport == 0 and b.reply.dst == ROUTER
        assert f"SNAT: 4242 clashes with ct #{a.ct_id}; id {b.reply.sport} taken from 0-65535" in " ".join(trace)
        ids.add(b.reply.sport)
    assert len(ids) == 10
    assert any(i < 1024 for i in ids) or any(i > 32768 for i in ids)


# --- null bindings and used_tuple_new ---------------------------------------------------------------------


def test_null_binding_rewrites_port_of_a_flow_colliding_with_an_existing_nat() -> None:
    # [V] §4.4: a local connection made after a NATed flow held 203.0.113.1:52001 got its source port
    # rewritten (52001 → 40139) through its null binding.
    lab = Lab(8)
    lab.flow(ConnTuple(C2, 52001, S, 80, TCP), snat=masq())
    trace: list[str] = []
    local = lab.flow(ConnTuple(ROUTER, 52001, S, 80, TCP), trace=trace)
    assert local.confirmed
    assert local.reply.dport != 52001 and 1024 <= local.reply.dport <= 65535
    assert local.has(CtStatus.SRC_NAT)
    assert trace[0].startswith("null binding (DNAT to the current destination 203.0.113.2")


def test_local_socket_ports_are_not_consulted_only_conntrack() -> None:
    # [V] §4.4: the router's own connection 203.0.113.1:52000 → S forced a forwarded flow with sport 52000
    # to another port.
    lab = Lab(8)
    lab.flow(ConnTuple(ROUTER, 52000, S, 80, TCP))
    fwd = lab.flow(ConnTuple(C2, 52000, S, 80, TCP), snat=masq())
    assert fwd.reply.dport != 52000


def test_null_binding_after_dnat_keeps_the_client_address() -> None:
    lab = Lab()
    ct = lab.flow(ConnTuple(C2, 45000, ROUTER, 10000, TCP), dnat=NatRange(
        RangeFlags.MAP_IPS | RangeFlags.PROTO_SPECIFIED, A("172.17.0.2"), A("172.17.0.2"), 8000, 8000))
    # §4.2 example: REPLY becomes S:s → C:c.
    assert ct.reply == ConnTuple(A("172.17.0.2"), 8000, C2, 45000, TCP)
    assert ct.status & CtStatus.NAT_DONE_MASK == CtStatus.NAT_DONE_MASK
    assert not ct.has(CtStatus.SRC_NAT)


def test_dnat_then_snat_reply_tuple() -> None:
    # §4.2 [V] docker row: src=203.0.113.2 dst=203.0.113.1 sport=45000 dport=10000
    #                      src=172.17.0.2 dst=203.0.113.2 sport=8000 dport=45000 (DNAT, then MASQUERADE on
    #                      docker0 … here the SNAT target is the client itself to mirror the row).
    lab = Lab()
    dnat = NatRange(RangeFlags.MAP_IPS | RangeFlags.PROTO_SPECIFIED, A("172.17.0.2"), A("172.17.0.2"), 8000, 8000)
    ct = lab.flow(ConnTuple(S, 45000, ROUTER, 10000, TCP), dnat=dnat)
    assert ct.original == ConnTuple(S, 45000, ROUTER, 10000, TCP)
    assert ct.reply == ConnTuple(A("172.17.0.2"), 8000, S, 45000, TCP)
    lab2 = Lab()
    ct2 = lab2.conn(ConnTuple(C2, 1234, ROUTER, 10000, TCP))
    lab2.setup(ct2, dnat, ManipType.DST)
    lab2.setup(ct2, masq("172.17.0.1"), ManipType.SRC)
    assert ct2.reply == ConnTuple(A("172.17.0.2"), 8000, A("172.17.0.1"), 1234, TCP)
    assert ct2.has(CtStatus.SRC_NAT) and ct2.has(CtStatus.DST_NAT)


def test_used_tuple_new_reverse_direction_twin_is_not_a_clash_for_udp_only() -> None:
    # nf_nat_used_tuple_new: X = A:a → B:b (no NAT); Y = B:b → A:a created as a new ct (two-way race).
    for proto, remapped in ((UDP, False), (TCP, True)):
        lab = Lab()
        lab.flow(ConnTuple(C2, 5000, S, 6000, proto))
        twin = lab.flow(ConnTuple(S, 6000, C2, 5000, proto), confirm=False)
        assert (twin.reply.dport != 6000) is remapped


def test_setup_info_refuses_confirmed_and_double_binding() -> None:
    lab = Lab()
    ct = lab.flow(ConnTuple(C2, 1, S, 80, TCP))
    before = ct.reply
    assert lab.setup(ct, masq("198.51.100.1"), ManipType.SRC) == 1
    assert ct.reply == before
    ct2 = lab.conn(ConnTuple(C2, 2, S, 80, TCP))
    assert lab.setup(ct2, masq(), ManipType.SRC) == 1
    assert lab.setup(ct2, masq(), ManipType.SRC) == 0  # WARN_ON(nf_nat_initialized) → NF_DROP


def test_reply_tuple_is_inverse_of_new_tuple() -> None:
    lab = Lab(3)
    lab.flow(ConnTuple(C2, 7000, S, 80, UDP), snat=masq())
    ct = lab.flow(ConnTuple(C3, 7000, S, 80, UDP), snat=masq())
    assert invert(ct.reply) == ConnTuple(ROUTER, ct.reply.dport, S, 80, UDP)


def test_dccp_ports_are_never_changed_on_6_18() -> None:
    # DCCP left conntrack/NAT in 6.17: a clash cannot be resolved by a port change (confirm drops it).
    lab = Lab()
    lab.flow(ConnTuple(C2, 5000, S, 6000, 33), snat=masq())
    trace: list[str] = []
    ct = lab.flow(ConnTuple(C3, 5000, S, 6000, 33), snat=masq(), trace=trace)
    assert ct.reply == ConnTuple(S, 6000, ROUTER, 5000, 33)
    assert not ct.confirmed
    assert any("protocol 33 has nothing else to change" in line for line in trace)
