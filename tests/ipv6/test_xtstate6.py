"""ip6tables rule changes and the namespace's stateful extension objects on the IPv6 packet path: the
checkentry/destroy pass (`XtState.sync`) runs when either family's ruleset changed, whichever family's packet
comes next (the kernel runs checkentry at the rule's insertion, before any packet)."""

from __future__ import annotations

import io

from tests.ipv6.test_engine6 import C1, C1_MAC, LAN_MAC, RT_LAN, SV, _engine, _frame, _sent, _udp

from natbox.cli.ip6tables import ip6tables_main
from natbox.engine.engine import Engine
from natbox.wire.layout import IP6H_DADDR, IP6H_NEXTHDR


def _ip6tables(eng: Engine, *argv: str) -> None:
    err = io.StringIO()
    assert ip6tables_main(list(argv), ruleset=eng.rules6, stdin=io.StringIO(""), stdout=io.StringIO(),
                          stderr=err) == 0, err.getvalue()


def _forwarded(eng: Engine, sport: int, count: int, t0: float) -> list[int]:
    """Send `count` datagrams of one flow from the LAN; which of them (1-based) leave on wan0."""
    passed = []
    for i in range(count):
        out = eng.receive(_frame(C1_MAC, LAN_MAC, _udp(C1, SV, sport, 5000, b"d%d" % i)), "lan0", t0 + i * 0.01)
        if _sent(out.emitted, "wan0"):
            passed.append(i + 1)
    return passed


def test_an_ip6tables_connbytes_rule_turns_accounting_on_before_the_next_ipv6_packet() -> None:
    """`connbytes_mt_check` forces nf_conntrack_acct on at the rule's insertion: the IPv6 traffic after an
    `ip6tables -A` of a connbytes rule is counted, so the rule drops from the 3rd packet of the flow on."""
    eng = _engine()
    assert _forwarded(eng, 40000, 1, 1.0) == [1]  # the IPv6 path ran before the rule existed
    _ip6tables(eng, "-A", "FORWARD", "-p", "udp", "-m", "connbytes", "--connbytes", "3:", "--connbytes-dir",
               "original", "--connbytes-mode", "packets", "-j", "DROP")
    assert _forwarded(eng, 40001, 4, 2.0) == [1, 2]
    assert eng.cfg.acct


def test_an_ip6tables_hashlimit_rule_has_its_table_from_its_insertion_and_loses_it_with_its_deletion() -> None:
    """A hashlimit table exists from its rule's checkentry on (its buckets filled by IPv6 traffic) and is
    destroyed with the last rule naming it: a new rule of that name after IPv6 traffic starts with full buckets."""
    eng = _engine()
    rule = ["FORWARD", "-p", "udp", "-m", "hashlimit", "--hashlimit-above", "1/min", "--hashlimit-burst", "2",
            "--hashlimit-mode", "srcip", "--hashlimit-name", "h6", "-j", "DROP"]
    _ip6tables(eng, "-A", *rule)
    assert _forwarded(eng, 40000, 4, 1.0) == [1, 2]  # the burst, then over the limit
    _ip6tables(eng, "-D", *rule)
    assert _forwarded(eng, 40001, 1, 2.0) == [1]  # this packet's path drops the unnamed table
    _ip6tables(eng, "-A", *rule)
    assert _forwarded(eng, 40002, 3, 3.0) == [1, 2]  # a new table: the burst again (the old one's bucket is empty)


def test_rules_after_an_ip6tables_tee_still_see_ipv6() -> None:
    """TEE sends its copy through LOCAL_OUT from inside the PREROUTING hook (`nf_dup_ipv6`): the rules after it
    in the chain, and the next packets, are still evaluated as IPv6 (`-m addrtype` asks the IPv6 routes), so
    datagrams to the router's own address are dropped by the addrtype rule after the copy left."""
    eng = _engine()
    _ip6tables(eng, "-t", "mangle", "-A", "PREROUTING", "-p", "udp", "-j", "TEE", "--gateway", "fd00:77::3")
    _ip6tables(eng, "-t", "mangle", "-A", "PREROUTING", "-p", "udp", "-m", "addrtype", "--dst-type", "LOCAL",
               "-j", "DROP")
    for i in range(3):
        out = eng.receive(_frame(C1_MAC, LAN_MAC, _udp(C1, RT_LAN, 40000 + i, 5000)), "lan0", 1.0 + i)
        sent = _sent(out.emitted, "lan0")
        got = [(p[IP6H_NEXTHDR], int.from_bytes(p[IP6H_DADDR:IP6H_DADDR + 16], "big")) for p in sent]
        assert got == [(17, RT_LAN)], sent  # the copy alone: no port unreachable for the original
        assert [d.where for d in out.dropped] == ["PREROUTING/mangle"], out.dropped
        assert not out.delivered
