"""-m connlimit evaluated as xt_connlimit/nf_conncount count connections (per rule, per masked address)."""

from __future__ import annotations

import shlex

from natbox.conntrack.conn import Conn, TcpConntrack
from natbox.conntrack.tuple import ConnTuple
from natbox.netfilter import CtInfo, CtStatus, Hook, TcpState
from natbox.rules.evaluate import Ruleset
from natbox.rules.matches.connlimit import Connlimit
from natbox.rules.parser import parse_argv
from natbox.skb import Skb
from natbox.testing.rules_fakes import FakeCtx, ip, tcp

_ids = iter(range(1, 10000))


def rule(spec: str) -> Ruleset:
    rs = Ruleset()
    rs.execute(parse_argv(["-A", "INPUT", *shlex.split(spec)]))
    return rs


def syn(src: str, sport: int, dst: str = "10.0.0.2") -> Skb:
    """A SYN with its new, unconfirmed ct (what nf_conntrack_in gives the INPUT chain)."""
    skb = tcp(src, sport, dst, 22, iif="eth0")
    orig = ConnTuple(ip(src), sport, ip(dst), 22, 6)
    ct = Conn(orig, ConnTuple(ip(dst), 22, ip(src), sport, 6), now=0.0, ct_id=next(_ids))
    ct.tcp = TcpConntrack()
    ct.tcp.state = TcpState.SYN_SENT
    skb.ct, skb.ctinfo = ct, CtInfo.NEW
    return skb


def confirm(skb: Skb, until: float = 1000.0) -> Conn:
    ct = skb.ct
    assert ct is not None
    ct.status |= CtStatus.CONFIRMED
    ct.timeout = until
    return ct


def hit(rs: Ruleset, ctx: FakeCtx, skb: Skb, now: float) -> bool:
    r = rs.tables["filter"].chains["INPUT"].rules[0]
    before = r.packets
    ctx.set_now(now)
    rs.run("filter", Hook.LOCAL_IN, skb, ctx)
    return r.packets > before


def test_counts_live_connections_of_a_source_and_evicts_the_gone() -> None:
    rs = rule("-p tcp --syn -m connlimit --connlimit-above 2 -j REJECT")
    ctx = FakeCtx(Hook.LOCAL_IN)
    a, b, c = syn("10.0.0.1", 1), syn("10.0.0.1", 2), syn("10.0.0.1", 3)
    assert [hit(rs, ctx, a, 0.0), hit(rs, ctx, b, 0.0), hit(rs, ctx, c, 0.0)] == [False, False, True]
    confirm(a)
    confirm(b)  # c was rejected: its ct never reaches the table
    d = syn("10.0.0.1", 4)
    assert hit(rs, ctx, d, 1.0)  # a, b and d: c is evicted by the walk, three is above two
    m = rs.tables["filter"].chains["INPUT"].rules[0].matches[-1]
    assert isinstance(m, Connlimit)
    lst = m.data.lists[(ip("10.0.0.1"), 0)]
    assert [ct.tuples[0].sport for _t, ct in lst.conns if ct is not None] == [1, 2, 4]
    # another source has its own count
    assert not hit(rs, ctx, syn("10.0.0.9", 1), 1.0)
    # a closes (TIME_WAIT counts as gone), d was rejected: b and e remain
    ca = a.ct
    assert ca is not None and ca.tcp is not None
    ca.tcp.state = TcpState.TIME_WAIT
    assert not hit(rs, ctx, syn("10.0.0.1", 5), 2.0)
    # b expires from the table: only e and f now
    cb = b.ct
    assert cb is not None
    cb.timeout = 2.5
    e = lst.conns[-1][1]
    assert e is not None
    e.status |= CtStatus.CONFIRMED
    e.timeout = 1000.0
    assert not hit(rs, ctx, syn("10.0.0.1", 6), 3.0)
    assert [ct.tuples[0].sport for _t, ct in lst.conns if ct is not None] == [5, 6]


def test_mask_and_destination_grouping_and_upto() -> None:
    rs = rule("-m connlimit --connlimit-upto 1 --connlimit-mask 24 --connlimit-daddr")
    ctx = FakeCtx(Hook.LOCAL_IN)
    assert hit(rs, ctx, syn("10.0.0.1", 1, "192.168.1.1"), 0.0)  # 1 <= 1
    assert not hit(rs, ctx, syn("10.0.0.7", 1, "192.168.1.2"), 0.0)  # same /24 of the destination: 2
    assert hit(rs, ctx, syn("10.0.0.7", 1, "192.168.2.2"), 0.0)


def test_packets_of_confirmed_connections_are_counted_but_not_added() -> None:
    rs = rule("-m connlimit --connlimit-above 1")
    ctx = FakeCtx(Hook.LOCAL_IN)
    a = syn("10.0.0.1", 1)
    assert not hit(rs, ctx, a, 0.0)
    confirm(a)
    for t in (1.0, 2.0, 3.0):  # the established flow's later packets: -EEXIST, still one connection
        assert not hit(rs, ctx, a, t)
    b = syn("10.0.0.1", 2)
    assert hit(rs, ctx, b, 4.0)


def test_copied_rules_keep_counting_in_the_same_lists() -> None:
    rs = rule("-m connlimit --connlimit-above 1")
    m = rs.tables["filter"].chains["INPUT"].rules[0].matches[0]
    c = m.clone()
    assert isinstance(m, Connlimit) and isinstance(c, Connlimit) and c.data is m.data


def test_a_retransmitted_syn_stops_the_walk_at_its_own_entry() -> None:
    """A confirmed ct that is not ASSURED (a SYN retransmit) is looked up, not skipped: the walk stops at its
    own entry, so a stale entry after it (a rejected SYN's) is still counted; once ASSURED, its packets take
    the -EEXIST path, which collects the whole list (the kernel's difftest connlimit-above-reject)."""
    rs = rule("-p tcp --syn -m connlimit --connlimit-above 2 -j REJECT")
    ctx = FakeCtx(Hook.LOCAL_IN)
    a, b = syn("10.0.0.1", 1), syn("10.0.0.1", 2)
    assert not hit(rs, ctx, a, 0.0)
    confirm(a)
    assert not hit(rs, ctx, b, 0.1)
    confirm(b)
    assert hit(rs, ctx, syn("10.0.0.1", 3), 0.2)  # rejected: its entry stays until a walk meets it
    assert hit(rs, ctx, syn("10.0.0.1", 4), 0.3)  # the walk evicts 3, then 4 makes three again
    assert hit(rs, ctx, a, 0.4)  # a's retransmit: found first, 4's stale entry still counted
    ca = a.ct
    assert ca is not None
    ca.status |= CtStatus.ASSURED
    assert not hit(rs, ctx, a, 0.5)  # -EEXIST: gc evicts 4, two connections
