"""-m hashlimit evaluated on packets as xt_hashlimit's hashlimit_mt_common does (revision 3, HZ=250)."""

from __future__ import annotations

import shlex

from natbox.netfilter import Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.rules.xtstate import HZ, XtState
from natbox.rules.xtstate.hashlimit import CREDITS_PER_JIFFY, user2credits
from natbox.skb import Skb
from natbox.testing.rules_fakes import FakeCtx, ip, udp


def rule(spec: str) -> Ruleset:
    rs = Ruleset()
    rs.execute(parse_argv(["-A", "INPUT", *shlex.split(spec)]))
    return rs


def matches(rs: Ruleset, ctx: FakeCtx, pkts: list[tuple[float, Skb]]) -> list[bool]:
    r = rs.tables["filter"].chains["INPUT"].rules[0]
    out = []
    for t, skb in pkts:
        ctx.set_now(t)
        before = r.packets
        rs.run("filter", Hook.LOCAL_IN, skb, ctx)
        out.append(r.packets > before)
    return out


def pkt(src: str = "10.0.0.1", size: int = 0, sport: int = 1000) -> Skb:
    return udp(src, sport, "10.0.0.2", 53, iif="eth0", size=size)


def test_packet_bucket_per_source_refills_one_cost_per_period() -> None:
    rs = rule("-m hashlimit --hashlimit-upto 1/sec --hashlimit-burst 3 --hashlimit-mode srcip --hashlimit-name t")
    ctx = FakeCtx(Hook.LOCAL_IN)
    got = matches(rs, ctx, [(0.0, pkt())] * 4 + [(0.0, pkt("10.0.0.9")), (0.996, pkt()), (1.0, pkt()),
                                                   (1.5, pkt())])
    assert got == [True, True, True, False, True, False, True, False]
    t = ctx.xt.hashlimit["t"]
    # the kernel's units: the cap is avg*burst credits, one packet costs avg (user2credits, 2^39 per jiffy)
    e = t.entries[(ip("10.0.0.1"), 0, 0, 0)]
    assert e.cost == user2credits(1000000) == 1000000 * (HZ * CREDITS_PER_JIFFY // 1000000)
    assert e.credit_cap == user2credits(3000000)


def test_above_matches_over_the_limit() -> None:
    rs = rule("-m hashlimit --hashlimit-above 2/sec --hashlimit-burst 2 --hashlimit-name a")
    ctx = FakeCtx(Hook.LOCAL_IN)
    # no mode: one bucket for everything
    assert matches(rs, ctx, [(0.0, pkt()), (0.0, pkt("10.1.1.1")), (0.0, pkt()), (0.5, pkt())]) == [
        False, False, True, False]


def test_bytes_mode_refills_the_credit_burst_times() -> None:
    # 1kb/s with a 2kb burst: credit_cap 2, so three 1000-byte datagrams pass at once and the fourth does not
    rs = rule("-m hashlimit --hashlimit-upto 1kb/s --hashlimit-burst 2kb --hashlimit-name b")
    ctx = FakeCtx(Hook.LOCAL_IN)
    p = pkt(size=1000 - 28)
    assert len(p.data) == 1000
    assert matches(rs, ctx, [(0.0, p)] * 4) == [True, True, True, False]
    # one second later: one second of credit, about 1 kB
    assert matches(rs, ctx, [(1.0, p), (1.0, p)]) == [True, False]


def test_masks_ports_and_the_entry_bound() -> None:
    rs = rule("-m hashlimit --hashlimit-upto 1/min --hashlimit-burst 1 --hashlimit-mode srcip,srcport "
              "--hashlimit-srcmask 24 --hashlimit-htable-max 2 --hashlimit-htable-size 1 --hashlimit-name m")
    ctx = FakeCtx(Hook.LOCAL_IN)
    got = matches(rs, ctx, [(0.0, pkt("10.0.0.1", sport=1)), (0.0, pkt("10.0.0.2", sport=1)),
                            (0.0, pkt("10.0.0.2", sport=2)), (0.0, pkt("10.0.0.3", sport=3))])
    # 10.0.0.1 and .2 share the /24 bucket; port 2 is a second key; port 3 would be a third: the table is full
    assert got == [True, False, True, False]
    assert sorted(ctx.xt.hashlimit["m"].entries) == [(ip("10.0.0.0"), 0, 1, 0), (ip("10.0.0.0"), 0, 2, 0)]


def test_idle_entries_are_collected_after_expire() -> None:
    rs = rule("-m hashlimit --hashlimit-upto 1/hour --hashlimit-burst 1 --hashlimit-mode srcip "
              "--hashlimit-htable-expire 2000 --hashlimit-htable-gcinterval 1000 --hashlimit-name e")
    ctx = FakeCtx(Hook.LOCAL_IN)
    assert matches(rs, ctx, [(0.0, pkt()), (1.0, pkt())]) == [True, False]
    t = ctx.xt.hashlimit["e"]
    # /proc recalculates first: 1.5 s of credit since the first packet (the second found too little)
    assert t.proc_lines(int(1.5 * HZ)) == [f"1 10.0.0.1:0->0.0.0.0:0 {int(1.5 * HZ) * CREDITS_PER_JIFFY} "
                                            f"{user2credits(3600 * 1000000)} {user2credits(3600 * 1000000)}"]
    # expires 2 s after the last packet (3 s); the gc run at 4 s removes it, and the key starts afresh
    assert matches(rs, ctx, [(3.9, pkt("10.0.0.7")), (4.1, pkt())]) == [True, True]


def test_rate_match_counts_windows() -> None:
    rs = rule("-m hashlimit --hashlimit-upto 2/sec --hashlimit-rate-match --hashlimit-name r "
              "--hashlimit-htable-expire 10000")
    ctx = FakeCtx(Hook.LOCAL_IN)
    # rate 2 per window of 1 s, burst 5 + 2: seven packets in the window match
    assert matches(rs, ctx, [(0.0, pkt())] * 8) == [True] * 7 + [False]
    # the previous window was over the rate: the whole next one does not match; the one after does
    assert matches(rs, ctx, [(1.0, pkt()), (2.0, pkt())]) == [False, True]


def test_a_table_keeps_the_config_of_the_rule_that_created_it() -> None:
    rs = Ruleset()
    for spec in ("-m hashlimit --hashlimit-upto 1/sec --hashlimit-burst 1 --hashlimit-name s",
                 "-m hashlimit --hashlimit-upto 100/sec --hashlimit-burst 100 --hashlimit-name s"):
        rs.execute(parse_argv(["-A", "INPUT", *shlex.split(spec)]))
    st = XtState()
    st.sync([rs.tables["filter"]])
    assert st.hashlimit["s"].cfg.burst == 1
    rs.execute(parse_argv(["-D", "INPUT", "1"]))
    st.sync([rs.tables["filter"]])
    assert st.hashlimit["s"].cfg.burst == 1  # still named by rule 2: the table lives on unchanged
    rs.execute(parse_argv(["-F", "INPUT"]))
    st.sync([rs.tables["filter"]])
    assert st.hashlimit == {}
