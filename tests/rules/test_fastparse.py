"""The restore fast path (natbox.rules.fastparse) parses exactly as the general loop does, and its shared
option groups stay unchanged (issue #12: a 50,000-rule file read in under a second)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natbox.ipset.command import IpsetSession
from natbox.ipset.core import IpsetRegistry
from natbox.ipset.scope import using_sets
from natbox.rules.evaluate import Ruleset
from natbox.rules.fastparse import GroupCache, parse_fast
from natbox.rules.model import RulesError
from natbox.rules.parser import parse_restore
from natbox.rules.printer import format_rule_spec, save_tables
from natbox.rules.words import tokenize_restore_line
from natbox.testing.fastparse import compare_paths, compare_t_files
from natbox.testing.rules_conformance import RULESETS, T_DIR


def _sets(text: str = "create KUBE-CLUSTER-IP hash:ip,port family inet\n") -> IpsetRegistry:
    reg = IpsetRegistry()
    rc, _o, err = IpsetSession(reg, 0.0, lambda: 0x2468ACE1).run(["restore"], text)
    assert rc == 0, err
    return reg


T_FILES = sorted(T_DIR.glob("*.t")) if T_DIR.is_dir() else []


@pytest.mark.skipif(not T_FILES, reason="shared/conformance not present beside the repository")
def test_every_t_line_parses_the_same() -> None:
    """Every line of iptables' .t tests (accepted or refused) gives the same rule or the same error."""
    taken, total = compare_t_files(T_FILES)
    assert total > 1000
    assert taken > total // 2  # most .t lines are in iptables-save's shape


RULESET_FILES = sorted(p for p in RULESETS.iterdir() if p.is_file()) if RULESETS.is_dir() else []


@pytest.mark.skipif(not RULESET_FILES, reason="shared/conformance not present beside the repository")
def test_real_rulesets_parse_the_same() -> None:
    """The rule lines of the real rulesets, one shared cache for all of them, as iptables-restore reads them."""
    groups = GroupCache()
    taken = total = 0
    for path in RULESET_FILES:
        table = "filter"
        for line in path.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("*"):
                table = line[1:].strip()
            if line.startswith("["):
                line = line.partition(" ")[2]
            if not line.startswith("-A ") or table not in ("raw", "mangle", "nat", "filter"):
                continue
            total += 1
            taken += compare_paths(tokenize_restore_line(line), table, groups, line)
    assert total > 100
    assert taken > total * 9 // 10


ODD_LINES = [
    "-A INPUT -p tcp --dport 80 -j ACCEPT",  # implicit -m tcp
    "-A INPUT -p tcp -m tcp --dport=80 -j ACCEPT",
    "-A INPUT -m mark --mark 1 -m comment --comment x --mark 2 -j ACCEPT",  # an earlier extension's option
    "-A INPUT -m comment --comment a b -j ACCEPT",
    "-A INPUT ! -m comment --comment a",
    "-A INPUT -m comment ! --comment a",
    "-A INPUT -m conntrack ! ! --ctstate NEW",
    "-A INPUT -p tcp -p udp",
    "-A INPUT -s 1.2.3.4 -s 5.6.7.8",
    "-A INPUT -s 1.2.3.4,5.6.7.8 -d 9.9.9.9,8.8.8.8 -j DROP",
    "-A INPUT -j ACCEPT -j DROP",
    "-A INPUT -g FOO -j ACCEPT",
    "-A INPUT ! -j ACCEPT",
    "-A INPUT ! -g FOO",
    "-A INPUT -j DNAT --to-destination 1.2.3.4",
    "-t nat -A PREROUTING -j DNAT --to-destination 1.2.3.4",
    "-A PREROUTING -o eth0 -j ACCEPT",
    "-A INPUT -j FOO --bar",
    "-A INPUT -j",
    "-A INPUT -p tcp -m tcp --tcp-flags SYN,RST SYN -j ACCEPT",
    "-A INPUT -p tcp -m tcp --tcp-flags SYN -j ACCEPT",
    "-A INPUT -p tcp -m tcp --tcp-flags SYN -RST -j ACCEPT",
    "-A INPUT -p tcp -m tcp --dport 80 -m tcp --sport 5 -j ACCEPT",
    "-A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT",
    "-A INPUT -p udp -m multiport --dports 80,443 -j ACCEPT",
    "-A INPUT -m multiport --dports 80,443 -j ACCEPT",
    "-A INPUT ! -p 0 -j ACCEPT",
    "-A INPUT -f ! -f",
    "-A INPUT ! -f -i eth0+ ! -o lo",
    "-A INPUT -i 0123456789abcdefghij",
    "-A INPUT -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
    "-A INPUT -m set --match-set nosuchset dst -j ACCEPT",
    "-A INPUT -m statistic --mode nth --every 2 -j ACCEPT",
    "-A INPUT -m nosuchmatch -j ACCEPT",
    "-A INPUT -m owner --uid-owner 0 -j ACCEPT",
    "-A INPUT -j CLUSTERIP",
    "-A INPUT -j ACCEPT extra",
    "-A INPUT -m comment --comment",
    "-A INPUT -m comment --comment x !",
    "-A INPUT -m comment -- -j ACCEPT",
    "-A INPUT -tnat -j ACCEPT",
    "-A INPUT -c 1 2 -j ACCEPT",
    "-A INPUT --source 1.2.3.4 -j ACCEPT",
    "-A INPUT -m comment --comment x --protocol tcp",
    "-A",
    "-I INPUT -j ACCEPT",
    "-A INPUT -p tcp -j REJECT --reject-with tcp-reset",
    "-A INPUT -j REJECT --reject-with tcp-reset",
    "-A OUTPUT -j LOG --log-prefix \"-j DROP \" --log-level 4",
    "-A OUTPUT -j LOG --log-prefix -j --log-level 4",
    "-A OUTPUT -j MARK --set-xmark 0x4000/0x4000",
    "-A OUTPUT -j MARK --set-xmark 0x4000/0x4000 --set-mark 1",
    "-A POSTROUTING -p tcp -j MASQUERADE --to-ports 1000-2000 --random-fully",
    "-A POSTROUTING -j MASQUERADE --to-ports 1000-2000",
    "-A POSTROUTING -p tcp -j SNAT --to-source 1.2.3.4:1000-2000 --persistent",
    '-A INPUT -m comment --comment "a -m tcp --dport 1" -j ACCEPT',  # a cut inside quotes
    '-A INPUT -m comment --comment "a -j DROP" -j ACCEPT',
    '-A INPUT -m comment --comment "x" -m comment --comment "a -g X" -j ACCEPT',
    '-A INPUT -m "comment" --comment x -j "ACCEPT"',
    '-A INPUT -m comment --comment ""x -j ACCEPT',
    '-A INPUT -m comment --comment x"" -j ACCEPT',
    '-A INPUT -m comment --comment "x\\"y" -j ACCEPT',
    "-A INPUT -m  comment --comment x -j ACCEPT",
    "-A INPUT -m comment --comment x  -j ACCEPT",
    "-A INPUT -m comment --comment x ! -j ACCEPT",
    "-A INPUT -p tcp ! -m tcp --dport 1",
    "-A INPUT -s 1.2.3.4 ! -j ACCEPT",
    "-A INPUT -g FOO BAR",
    "-A INPUT -g FOO -g BAR",
    "-A INPUT -j FOO -m comment --comment x",
    "-A INPUT -j DNAT -m comment --comment x",
    "-A INPUT -j ACCEPT -m comment --comment x",
    "-A INPUT -j standard",
    "-A INPUT -j QUEUE",
    "-A -m comment --comment x",
    "-A INPUT -m comment --comment -m -j ACCEPT",
    "-A INPUT -j LOG --log-prefix -m",
    "-A INPUT -p tcp -m tcp --tcp-flags SYN -m tcp",
    "-A INPUT -s -m comment --comment x",
]


@pytest.mark.parametrize("table", ["filter", "nat", "mangle"])
def test_odd_lines_parse_the_same(table: str) -> None:
    """Lines off iptables-save's shape, or refused, on both paths; the cache shared across all of them."""
    groups = GroupCache()
    with using_sets(_sets()):
        for _round in range(2):  # the second round meets every cached group again
            for line in ODD_LINES:
                compare_paths(tokenize_restore_line(line), table, groups, line)


def _restore_save(text: str) -> str:
    rs = Ruleset()
    rs.restore(parse_restore(text))
    return save_tables(rs.saved_tables(), "DATE")


def test_shared_groups_stay_what_each_rule_says() -> None:
    """A group merged into another (two `-m tcp`) or met under another protocol is not changed for the
    other rules that spell it the same way."""
    text = ("*filter\n"
            "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT\n"
            "-A INPUT -p tcp -m tcp --dport 80 -m tcp --sport 5 -j ACCEPT\n"
            "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT\n"
            "-A INPUT -p tcp -m multiport --dports 53 -j ACCEPT\n"
            "-A INPUT -p udp -m multiport --dports 53 -j ACCEPT\n"
            "COMMIT\n")
    body = [line for line in _restore_save(text).splitlines() if line.startswith("-A")]
    assert body == ["-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT",
                    "-A INPUT -p tcp -m tcp --sport 5 --dport 80 -j ACCEPT",
                    "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT",
                    "-A INPUT -p tcp -m multiport --dports 53 -j ACCEPT",
                    "-A INPUT -p udp -m multiport --dports 53 -j ACCEPT"]
    rs = Ruleset()
    rs.restore(parse_restore(text))
    rules = rs.tables["filter"].chains["INPUT"].rules
    assert rules[0].matches[0] is rules[2].matches[0]  # shared
    assert rules[1].matches[0] is not rules[0].matches[0]  # the merged one is a copy
    assert rules[3].matches[0].proto == 6 and rules[4].matches[0].proto == 17  # type: ignore[attr-defined]


def test_statistic_nth_counters_are_not_shared() -> None:
    """`-m statistic --mode nth` keeps a per-rule counter: two rules spelling it the same count apart."""
    text = ("*filter\n"
            "-A INPUT -m statistic --mode nth --every 2 --packet 0 -j ACCEPT\n"
            "-A FORWARD -m statistic --mode nth --every 2 --packet 0 -j ACCEPT\n"
            "COMMIT\n")
    rs = Ruleset()
    rs.restore(parse_restore(text))
    a = rs.tables["filter"].chains["INPUT"].rules[0].matches[0]
    b = rs.tables["filter"].chains["FORWARD"].rules[0].matches[0]
    assert a is not b


def test_collector_back_on_after_restore_and_after_an_error() -> None:
    assert gc.isenabled()
    parse_restore("*filter\n-A INPUT -j ACCEPT\nCOMMIT\n")
    assert gc.isenabled()
    with pytest.raises(RulesError):
        parse_restore("*filter\n-A INPUT -j NOSUCH --x\nCOMMIT\n")
    assert gc.isenabled()
    gc.disable()
    try:
        parse_restore("*filter\n-A INPUT -j ACCEPT\nCOMMIT\n")
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()


def test_same_text_as_before_for_a_generated_mixed_ruleset() -> None:
    """A Docker / kube-proxy / Calico-shaped ruleset saves back to its own text."""
    import importlib.util
    import sys

    bench = Path(__file__).resolve().parents[2] / "bench" / "rules_restore_bench.py"
    spec = importlib.util.spec_from_file_location("rules_restore_bench", bench)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["rules_restore_bench"] = mod
    spec.loader.exec_module(mod)
    text, sets = mod.mixed_ruleset(2000)
    with using_sets(_sets(sets)):
        blocks = parse_restore(text)
        rs = Ruleset()
        rs.restore(blocks)
        for b in blocks:
            for _ln, cmd in b.commands:
                assert cmd.rule is not None
                argv = tokenize_restore_line(f"-A {cmd.chain}{format_rule_spec(cmd.rule)}")
                assert parse_fast(argv, GroupCache()) is not None  # iptables-save's shape: all on the fast path
    saved = [line for line in save_tables(rs.saved_tables(), "DATE").splitlines() if not line.startswith("#")]
    want = [line for line in text.splitlines() if not line.startswith("#")]
    assert saved == want


_SELECTORS = ["-s 10.0.0.1/32", "! -s 10.0.0.0/8", "-d 192.168.1.0/24", "-d 1.2.3.4,5.6.7.8", "-s 300.1.1.1",
              "-i eth0", "! -i docker0", "-o br+", "-p tcp", "-p udp", "! -p tcp", "-p icmp", "-p 0", "-f", "! -f",
              "!", "-p", "-x"]
_PIECES = ["-m comment --comment x", '-m comment --comment "a b"', '-m comment --comment "a -m b"',
           '-m comment --comment "a -j DROP"', '-m comment --comment "-g X"',
           "-m tcp --dport 80", "-m tcp ! --dport 80:90", "-m tcp --sport 5", "-m udp --dport 53",
           "-m multiport --dports 80,443", "-m conntrack --ctstate NEW", "-m conntrack ! --ctstate INVALID",
           "-m mark --mark 0x1/0x1", "-m statistic --mode random --probability 0.5", "-m addrtype --dst-type LOCAL",
           "-m set --match-set KUBE-CLUSTER-IP dst,dst", "-m comment", "-m nosuch", "-m comment --comment x --dport 1",
           "-m tcp --tcp-flags SYN,RST SYN", "-m mark ! --mark 1"]
_TARGETS = ["", "-j ACCEPT", "-j DROP", "-j RETURN", "-j KUBE-X", "-g KUBE-X", "-j DNAT --to-destination 1.2.3.4:80",
            "-j SNAT --to-source 1.2.3.4", "-j MASQUERADE", "-j MASQUERADE --random-fully", "-j MARK --set-xmark 1/1",
            "-j REJECT --reject-with tcp-reset", "-j LOG --log-prefix \"x y\"", "-j CLUSTERIP", "-j ACCEPT extra",
            "-j DNAT", "-j TCPMSS --clamp-mss-to-pmtu"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["filter", "nat", "mangle"]), st.sampled_from(["INPUT", "PREROUTING", "OUTPUT", "X"]),
       st.lists(st.sampled_from(_SELECTORS), max_size=3), st.lists(st.sampled_from(_PIECES), max_size=3),
       st.one_of(st.just(""), st.sampled_from(_TARGETS)), st.lists(st.sampled_from(_PIECES), max_size=1),
       st.booleans())
def test_generated_lines_parse_the_same(table: str, chain: str, selectors: list[str], pieces: list[str],
                                        target: str, after: list[str], double: bool) -> None:
    """Lines put together from selectors, matches and targets (some refused, some off iptables-save's shape)
    read the same on the fast paths as on the general loop, one cache shared by every example."""
    words = ["-A", chain, *selectors, *pieces, target, *after]
    line = ("  " if double else " ").join(w for w in words if w)
    with using_sets(_SETS):
        compare_paths(tokenize_restore_line(line), table, _SHARED, line)


_SETS = _sets()
_SHARED = GroupCache()
