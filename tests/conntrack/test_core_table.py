"""nf_conntrack_in / confirm: classification, table full, expiry, clash resolution (§2.3, §2.5-§2.8)."""

from __future__ import annotations

from natbox.conntrack.conn import Conn
from natbox.conntrack.core import get_tuple, nf_conntrack_confirm, nf_conntrack_in
from natbox.conntrack.table import ConntrackTable, CtEventType
from natbox.netfilter import CtInfo, CtStatus, Hook, TcpState
from natbox.skb import Skb
from natbox.testing.conntrack import ACK, SYN, A, B, Box, C, raw, t, tcp, udp

T0 = 3000.0


def skb_of(data: bytearray) -> Skb:
    return Skb(bytearray(data))


def test_unconfirmed_until_confirm() -> None:
    box = Box()
    skb = skb_of(udp(A, B, 1000, 53))
    assert nf_conntrack_in(skb, Hook.PRE_ROUTING, T0, box.table, box.cfg) == 1
    assert skb.ct is not None and skb.ctinfo == CtInfo.NEW
    assert not skb.ct.status & CtStatus.CONFIRMED
    assert len(box.table) == 0  # attached to the skb only
    assert nf_conntrack_confirm(skb, T0, box.table) == 1
    assert skb.ct.status & CtStatus.CONFIRMED and len(box.table) == 1
    assert [e.kind for e in box.table.drain_events()] == [CtEventType.NEW]


def test_dropped_before_confirm_leaves_no_entry() -> None:
    box = Box()
    box.send(udp(A, B, 1000, 53), T0, confirm=False)  # e.g. a filter DROP
    assert box.entries(T0) == []
    sent = box.send(udp(A, B, 1000, 53), T0 + 1)
    assert sent.ctinfo == CtInfo.NEW and len(box.entries(T0 + 1)) == 1


def test_reply_direction_ctinfo_is_not_confirmed() -> None:
    box = Box()
    skb = skb_of(udp(A, B, 1000, 53))
    nf_conntrack_in(skb, Hook.PRE_ROUTING, T0, box.table, box.cfg)
    skb.ctinfo = CtInfo.RELATED_REPLY  # as REJECT's attached packet
    assert nf_conntrack_confirm(skb, T0, box.table) == 1
    assert len(box.table) == 0


def test_loopback_ct_reused_and_untracked_skipped() -> None:
    box = Box()
    out = box.send(udp(A, B, 1000, 53), T0, hook=Hook.LOCAL_OUT)
    skb = out.skb
    ct = skb.ct
    assert nf_conntrack_in(skb, Hook.PRE_ROUTING, T0, box.table, box.cfg) == 1
    assert skb.ct is ct and skb.ctinfo == CtInfo.NEW
    skb2 = skb_of(udp(A, B, 1, 2))
    skb2.untracked = True
    assert nf_conntrack_in(skb2, Hook.PRE_ROUTING, T0, box.table, box.cfg) == 1
    assert skb2.ct is None and skb2.ctinfo == CtInfo.UNTRACKED
    assert box.table.stats.invalid == 0


def test_non_first_fragment_is_invalid() -> None:
    box = Box()
    frag = bytearray(udp(A, B, 1000, 53))
    frag[6:8] = b"\x00\x03"  # offset 24 bytes
    assert get_tuple(skb_of(frag)) is None
    sent = box.send(frag, T0)
    assert sent.invalid and box.table.stats.invalid == 1
    first = bytearray(udp(A, B, 1000, 53))
    first[6:8] = b"\x20\x00"  # MF, offset 0: the first fragment is tracked
    assert get_tuple(skb_of(first)) == t(A, 1000, B, 53, 17)


def test_get_tuple_truncated_l4_is_none() -> None:
    pkt = udp(A, B, 1000, 53)
    short = pkt[:22]
    short[2:4] = (22).to_bytes(2, "big")
    assert get_tuple(skb_of(short)) is None
    assert get_tuple(skb_of(raw(A, B, 253, b""))) == t(A, 0, B, 0, 253)


def test_established_ctinfo_after_reply() -> None:
    box = Box()
    assert box.send(udp(A, B, 1000, 53), T0).ctinfo == CtInfo.NEW
    assert box.send(udp(A, B, 1000, 53), T0 + 0.1).ctinfo == CtInfo.NEW
    assert box.send(udp(B, A, 53, 1000), T0 + 0.2).ctinfo == CtInfo.ESTABLISHED_REPLY
    assert box.send(udp(A, B, 1000, 53), T0 + 0.3).ctinfo == CtInfo.ESTABLISHED


# --- expiry is exact (§2.8) -------------------------------------------------------------------------


def test_expiry_is_exact() -> None:
    box = Box()
    box.send(udp(A, B, 1000, 53), T0)
    tup = t(A, 1000, B, 53, 17)
    assert box.find(tup, T0 + 30 - 1e-6) is not None
    assert box.find(tup, T0 + 30) is None
    # a packet at the deadline makes a new ct
    sent = box.send(udp(A, B, 1000, 53), T0 + 30)
    assert sent.ctinfo == CtInfo.NEW and sent.ct is not None and sent.ct.ct_id == 2


# --- table full (§2.6, §2.7) --------------------------------------------------------------------------


def test_table_full_early_drops_an_unassured_entry() -> None:
    box = Box(table=ConntrackTable(max_entries=2))
    box.send(udp(A, B, 1, 53), T0)
    box.send(udp(A, B, 2, 53), T0)
    sent = box.send(udp(A, B, 3, 53), T0 + 1)
    assert sent.verdict == 1 and sent.ctinfo == CtInfo.NEW
    ports = sorted(c.original.sport for c in box.entries(T0 + 1))
    assert ports == [2, 3]  # natbox evicts the oldest unassured entry
    assert box.table.stats.early_drop == 1


def _assured_tcp(box: Box, sport: int, now: float) -> None:
    box.send(tcp(A, B, sport, 80, SYN, seq=100), now)
    box.send(tcp(B, A, 80, sport, SYN | ACK, seq=900, ack=101), now)
    box.send(tcp(A, B, sport, 80, ACK, seq=101, ack=901), now)


def test_table_full_of_assured_entries_drops() -> None:
    box = Box(table=ConntrackTable(max_entries=2))
    _assured_tcp(box, 1001, T0)
    _assured_tcp(box, 1002, T0)
    assert all(c.status & CtStatus.ASSURED for c in box.entries(T0))
    sent = box.send(udp(A, B, 3, 53), T0 + 1)
    assert sent.verdict == 0 and sent.ct is None
    assert sent.skb.note == "conntrack: table full, dropping packet"
    assert box.table.stats.drop == 1 and box.table.stats.early_drop == 0
    assert len(box.entries(T0 + 1)) == 2
    # known flows still pass
    assert box.send(tcp(A, B, 1001, 80, ACK, seq=101, ack=901), T0 + 1).ctinfo == CtInfo.ESTABLISHED


def test_table_full_expired_entry_makes_room() -> None:
    box = Box(table=ConntrackTable(max_entries=1))
    box.send(udp(A, B, 1, 53), T0)
    box.table._conns[1].status |= CtStatus.ASSURED
    sent = box.send(udp(A, B, 2, 53), T0 + 31)
    assert sent.verdict == 1 and sent.ctinfo == CtInfo.NEW


# --- clash resolution (§2.5) ---------------------------------------------------------------------------


def _two_unconfirmed(box: Box, first: bytearray, second: bytearray) -> tuple[Skb, Skb]:
    s1, s2 = skb_of(first), skb_of(second)
    assert nf_conntrack_in(s1, Hook.PRE_ROUTING, T0, box.table, box.cfg) == 1
    assert nf_conntrack_in(s2, Hook.PRE_ROUTING, T0, box.table, box.cfg) == 1
    assert s1.ct is not None and s2.ct is not None and s1.ct is not s2.ct
    return s1, s2


def test_udp_clash_identical_tuples_reattaches() -> None:
    box = Box()
    s1, s2 = _two_unconfirmed(box, udp(A, B, 1000, 53), udp(A, B, 1000, 53))
    loser = s2.ct
    assert nf_conntrack_confirm(s1, T0, box.table) == 1
    assert nf_conntrack_confirm(s2, T0, box.table) == 1
    assert s2.ct is s1.ct and s2.ctinfo == CtInfo.NEW
    assert loser is not None and loser.status & CtStatus.DYING
    assert box.table.stats.clash_resolve == 1 and box.table.stats.insert_failed == 0
    assert len(box.table) == 1


def test_udp_clash_reverse_tuples_reattaches() -> None:
    box = Box()
    s1, s2 = _two_unconfirmed(box, udp(A, B, 1000, 53), udp(B, A, 53, 1000))
    assert nf_conntrack_confirm(s1, T0, box.table) == 1
    assert nf_conntrack_confirm(s2, T0, box.table) == 1
    assert s2.ct is s1.ct
    assert box.table.stats.clash_resolve == 1


def test_udp_nat_clash_inserts_reply_only_hidden_entry() -> None:
    box = Box()
    s1, s2 = _two_unconfirmed(box, udp(A, B, 1000, 53), udp(A, B, 1000, 53))
    loser = s2.ct
    assert loser is not None
    loser.tuples[1] = t(B, 53, C, 31000, 17)  # as if SNAT had chosen another address/port for it
    assert nf_conntrack_confirm(s1, T0, box.table) == 1
    assert nf_conntrack_confirm(s2, T0, box.table) == 1
    assert s2.ct is loser
    assert loser.status & CtStatus.NAT_CLASH and loser.status & CtStatus.FIXED_TIMEOUT
    assert loser.timeout == T0 + 1
    assert box.table.stats.clash_resolve == 1
    assert box.entries(T0) == [s1.ct]  # hidden from conntrack -L
    hit = box.table.lookup(t(B, 53, C, 31000, 17), T0)
    assert hit is not None and hit[0] is loser
    # replies to it refresh nothing (FIXED_TIMEOUT) and it never becomes ASSURED
    box.send(udp(B, C, 53, 31000), T0 + 0.5)
    assert loser.timeout == T0 + 1 and not loser.status & CtStatus.ASSURED


def test_udp_clash_both_directions_drops() -> None:
    box = Box()
    third = box.send(udp(C, B, 2000, 53), T0).ct
    assert third is not None
    s1, s2 = _two_unconfirmed(box, udp(A, B, 1000, 53), udp(A, B, 1000, 53))
    assert s2.ct is not None
    s2.ct.tuples[1] = third.reply  # its reply tuple clashes with another ct too
    assert nf_conntrack_confirm(s1, T0, box.table) == 1
    assert nf_conntrack_confirm(s2, T0, box.table) == 0
    stats = box.table.stats
    assert (stats.insert_failed, stats.drop, stats.clash_resolve) == (1, 1, 0)


def test_tcp_and_generic_clash_drop() -> None:
    for first, second in (
        (tcp(A, B, 1000, 80, SYN), tcp(A, B, 1000, 80, SYN)),
        (raw(A, B, 253), raw(A, B, 253)),
    ):
        box = Box()
        s1, s2 = _two_unconfirmed(box, first, second)
        assert nf_conntrack_confirm(s1, T0, box.table) == 1
        assert nf_conntrack_confirm(s2, T0, box.table) == 0
        assert box.table.stats.insert_failed == 1 and box.table.stats.drop == 1
        assert s2.note.startswith("conntrack: insert failed")


def test_generic_masquerade_like_clash_second_host_dropped() -> None:
    """§3.5 [V]: two hosts, one unknown protocol, one server, same NATed source: the second clashes."""
    box = Box()
    s1, s2 = _two_unconfirmed(box, raw(A, B, 253), raw(C, B, 253))
    assert s2.ct is not None and s1.ct is not None
    s2.ct.tuples[1] = s1.ct.reply  # both MASQUERADEd to the same address
    assert nf_conntrack_confirm(s1, T0, box.table) == 1
    assert nf_conntrack_confirm(s2, T0, box.table) == 0
    assert box.table.stats.insert_failed == 1


def test_found_counted_by_tuple_taken() -> None:
    box = Box()
    box.send(udp(A, B, 1000, 53), T0)
    other = Conn(t(C, 1000, B, 53, 17), t(B, 53, C, 1000, 17), now=T0, ct_id=99)
    assert box.table.tuple_taken(t(B, 53, A, 1000, 17), other, T0)
    assert box.table.stats.found == 1


def early_drop_mode(table: ConntrackTable) -> bool:
    return table.gc_early_drop


def test_gc_early_drop_mode_after_a_failed_early_drop() -> None:
    """§2.7: with the table full of ASSURED entries, gc then evicts closing TCP entries (tcp_can_early_drop)."""
    box = Box(table=ConntrackTable(max_entries=2))
    _assured_tcp(box, 1001, T0)
    _assured_tcp(box, 1002, T0)
    closing = box.find(t(A, 1002, B, 80, 6), T0)
    assert closing is not None and closing.tcp is not None
    assert box.send(udp(A, B, 3, 53), T0 + 1).verdict == 0
    assert early_drop_mode(box.table)
    closing.tcp.state = TcpState.TIME_WAIT
    assert box.table.gc(T0 + 1) == 1
    assert [c.original.sport for c in box.entries(T0 + 1)] == [1001]
    assert not early_drop_mode(box.table)
    assert box.send(udp(A, B, 3, 53), T0 + 2).verdict == 1
