"""ip6tables-restore's fast path (natbox.rules.fastparse with family NFPROTO_IPV6) against the general loop:
every line gives the same rule (extensions by class and attributes) or the same error, whichever path reads
it; most ip6tables-save lines take the fast path."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.rules.test_fastparse import _attrs

from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.evaluate import Ruleset
from natbox.rules.fastparse import GroupCache, parse_fast, parse_fast_line
from natbox.rules.model import Rule, RulesError
from natbox.rules.parser import Command, parse_argv, parse_restore, parse_restore_argv, parse_restore_line
from natbox.rules.printer import save_tables
from natbox.rules.words import tokenize_restore_line
from natbox.testing.rules_conformance import T6_DIR, T_DIR, read_t

V6 = NFPROTO_IPV6
DATA = Path(__file__).parent / "data"
Outcome = tuple[str, object]


def _dump(rule: Rule) -> object:
    fields = {f.name: getattr(rule, f.name) for f in dataclasses.fields(rule) if f.name not in ("matches", "target")}
    exts = [(type(e).__name__, _attrs(e)) for e in [*rule.matches, *([rule.target] if rule.target else [])]]
    return fields, exts


def _outcome(parse: Callable[[list[str]], Command], argv: list[str]) -> Outcome:
    try:
        cmd = parse(list(argv))
    except RulesError as e:
        return "error", (e.exit_code, e.message)
    return "ok", (cmd.op, cmd.chain, cmd.table, cmd.table_given, [_dump(r) for r in cmd.rules])


def _compare(argv: list[str], table: str, groups: GroupCache, line: str | None = None) -> bool:
    """Both fast paths agree with the general loop; returns whether a fast path took the line."""
    slow = _outcome(lambda a: parse_argv(a, table=table, family=V6), argv)
    fast = _outcome(lambda a: parse_restore_argv(a, table, groups, V6), argv)
    assert fast == slow, argv
    taken = parse_fast(list(argv), GroupCache(), V6) is not None
    if line is not None:
        assert tokenize_restore_line(line) == argv
        by_line = _outcome(lambda _a: parse_restore_line(line, table, groups, V6), argv)
        assert by_line == slow, line
        taken = taken or parse_fast_line(line, GroupCache(), V6) is not None
    return taken


T_FILES = (sorted(T6_DIR.glob("*.t")) + sorted(T_DIR.glob("libxt_*.t"))) if T6_DIR.is_dir() else []


@pytest.mark.skipif(not T_FILES, reason="shared/conformance not present beside the repository")
def test_every_ip6tables_t_line_parses_the_same() -> None:
    groups = GroupCache()
    taken = total = 0
    for path in T_FILES:
        for case in read_t(path).cases:
            try:
                words = shlex.split(case.rule)
            except ValueError:
                continue
            for chain in case.chains:
                total += 1
                line: str | None = f"-A {chain} {case.rule}"
                if tokenize_restore_line(line or "") != ["-A", chain, *words]:
                    line = None
                taken += _compare(["-A", chain, *words], case.table, groups, line)
    assert total > 500
    assert taken > total // 2


def _rule_lines(text: str) -> list[tuple[str, str]]:
    out, table = [], "filter"
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        if line.startswith("["):
            line = line.partition(" ")[2]
        if line.startswith("-A "):
            out.append((table, line))
    return out


def test_docker6_ruleset_lines_take_the_fast_path() -> None:
    groups = GroupCache()
    lines = _rule_lines((DATA / "docker6_counters.rules").read_text())
    assert lines and all(_compare(tokenize_restore_line(line), table, groups, line) for table, line in lines)


ODD6 = [
    "-A INPUT -s fd00::/64,2001:db8::1 -d ::/0 -j ACCEPT", "-A INPUT ! -s fd00::1/128 -p ipv6-icmp -j DROP",
    "-A INPUT -s 10.0.0.1 -j DROP", "-A INPUT -d fd00::1/129 -j DROP", "-A INPUT -f -j DROP",
    "-A INPUT -p icmpv6 -m icmp6 --icmpv6-type echo-request -j ACCEPT", "-A INPUT -p icmp -j ACCEPT",
    "-A FORWARD -i lan0 -o wan0 -p tcp -m tcp --dport 80 -m conntrack --ctstate NEW -j ACCEPT",
    "-A INPUT -m hl --hl-eq 255 -j ACCEPT", "-A INPUT -m frag --fragid 5 --fraglast -j DROP",
    "-A INPUT -m ttl --ttl-eq 5 -j DROP", "-A INPUT -j REJECT --reject-with icmp6-adm-prohibited",
    "-A INPUT -j REJECT --reject-with icmp-host-prohibited", "-A INPUT -p tcp -j REJECT --reject-with tcp-reset",
    "-A INPUT -m recent --set --name x --mask ffff:ffff:ffff:ffff:: --rsource", '-A INPUT -m comment --comment "a b"',
    "-A INPUT -j HL --hl-dec 1", "-A INPUT -j TTL --ttl-dec 1", "-A INPUT -j NOPE", "-A INPUT -g NOPE",
    "-A INPUT -p tcp -m tcp --dport 22 -m connlimit --connlimit-above 3 --connlimit-mask 64 --connlimit-saddr",
    "-A INPUT -m hashlimit --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-name h --hashlimit-srcmask 64",
    "-A INPUT -m osf --genre Linux", "-A INPUT -m realm --realm 1", "-A INPUT -j CLUSTERIP",
    "-A INPUT -m ipv6header --header frag --soft -j DROP", "-A INPUT -m rt --rt-type 0 -j DROP",
]


@pytest.mark.parametrize("line", ODD6)
def test_odd_ip6tables_lines_parse_the_same(line: str) -> None:
    _compare(tokenize_restore_line(line), "filter" if "HL" not in line and "TTL" not in line else "mangle",
             GroupCache(), line)


def test_nat_lines_and_a_restore_round_trip() -> None:
    text = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
            "-A PREROUTING -d 2001:db8::1/128 -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00::2]:80\n"
            "-A POSTROUTING -s fd00::/64 ! -o lan0 -j MASQUERADE\n"
            "-A POSTROUTING -s fd00:2::/64 -p udp -j SNAT --to-source [2001:db8::5]:1000-2000\nCOMMIT\n")
    groups = GroupCache()
    for table, line in _rule_lines(text):
        assert _compare(tokenize_restore_line(line), table, groups, line)
    rs = Ruleset(V6)
    rs.restore(parse_restore(text, family=V6))
    saved = [x for x in save_tables(rs.saved_tables(), "Sun Dec  6 00:00:00 2026").splitlines() if x.startswith("-A ")]
    assert saved == [x for x in text.splitlines() if x.startswith("-A ")]
