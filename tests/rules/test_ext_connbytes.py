"""-m connbytes on the ct's accounting counters (xt_connbytes), -m connlabel on its label bits (xt_connlabel)."""

from __future__ import annotations

import shlex

from natbox.conntrack.conn import Conn
from natbox.conntrack.tuple import ConnTuple
from natbox.netfilter import Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.rules.xtstate import XtState
from natbox.testing.rules_fakes import FakeCtx, ip, tcp


def hits(specs: list[str], ct: Conn | None) -> list[bool]:
    rs = Ruleset()
    for spec in specs:
        rs.execute(parse_argv(["-A", "INPUT", *shlex.split(spec)]))
    skb = tcp("10.0.0.1", 1, "10.0.0.2", 80, iif="eth0")
    skb.ct = ct
    rs.run("filter", Hook.LOCAL_IN, skb, FakeCtx(Hook.LOCAL_IN))
    return [r.packets == 1 for r in rs.tables["filter"].chains["INPUT"].rules]


def conn(pkts: tuple[int, int], nbytes: tuple[int, int]) -> Conn:
    t = ConnTuple(ip("10.0.0.1"), 1, ip("10.0.0.2"), 80, 6)
    ct = Conn(t, ConnTuple(t.dst, t.dport, t.src, t.sport, 6), now=0.0, ct_id=1)
    ct.acct_packets, ct.acct_bytes = list(pkts), list(nbytes)
    return ct


SPECS = [
    "-m connbytes --connbytes 3:4 --connbytes-mode packets --connbytes-dir original",
    "-m connbytes --connbytes 5 --connbytes-mode packets --connbytes-dir both",
    "-m connbytes ! --connbytes 1000 --connbytes-mode bytes --connbytes-dir reply",
    "-m connbytes --connbytes 100:200 --connbytes-mode avgpkt --connbytes-dir both",
    "-m connbytes ! --connbytes 100:200 --connbytes-mode avgpkt --connbytes-dir original",
]


def test_counters_directions_and_inversion() -> None:
    # original 3 packets / 180 bytes, reply 2 packets / 1200 bytes: average both 276, original 60
    assert hits(SPECS, conn((3, 2), (180, 1200))) == [True, True, False, False, True]
    assert hits(SPECS, conn((4, 0), (600, 0))) == [True, False, True, True, False]


def test_no_ct_or_no_accounting_never_matches() -> None:
    assert hits(SPECS, None) == [False] * 5
    t = ConnTuple(ip("10.0.0.1"), 1, ip("10.0.0.2"), 80, 6)
    bare = Conn(t, ConnTuple(t.dst, t.dport, t.src, t.sport, 6), now=0.0, ct_id=2)
    assert hits(SPECS, bare) == [False] * 5


def test_loading_a_connbytes_rule_forces_accounting_on() -> None:
    rs = Ruleset()
    rs.execute(parse_argv(shlex.split("-A INPUT " + SPECS[0])))
    st = XtState()
    st.sync([rs.tables["filter"]])
    assert st.acct_forced
    st2 = XtState()
    st2.sync([Ruleset().tables["filter"]])
    assert not st2.acct_forced


def test_connlabel_tests_and_sets_the_ct_label_bits() -> None:
    specs = ['-m connlabel --label "5"', '-m connlabel ! --label "6"', '-m connlabel --label "7" --set',
             '-m connlabel --label "7"']
    ct = conn((1, 0), (60, 0))
    assert hits(specs, ct) == [False, True, True, True]  # --set sets bit 7 and matches; the next rule sees it
    assert ct.labels == 1 << 7
    ct.labels |= 1 << 5 | 1 << 6
    assert hits(specs, ct) == [True, False, True, True]
    # no ct: only the inverted test matches, and --set has nothing to set
    assert hits(specs, None) == [False, True, False, False]
