"""ip6tables-restore's fast path (natbox.rules.fastparse with family NFPROTO_IPV6) against the general loop:
every line gives the same rule (extensions by class and attributes) or the same error, whichever path reads
it; most ip6tables-save lines take the fast path."""

from __future__ import annotations

from pathlib import Path

import pytest

from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.evaluate import Ruleset
from natbox.rules.fastparse import GroupCache
from natbox.rules.parser import parse_restore
from natbox.rules.printer import save_tables
from natbox.rules.words import tokenize_restore_line
from natbox.testing.fastparse import compare_paths, compare_t_files
from natbox.testing.rules_conformance import T6_DIR, T_DIR

V6 = NFPROTO_IPV6
DATA = Path(__file__).parent / "data"


T_FILES = (sorted(T6_DIR.glob("*.t")) + sorted(T_DIR.glob("libxt_*.t"))) if T6_DIR.is_dir() else []


@pytest.mark.skipif(not T_FILES, reason="shared/conformance not present beside the repository")
def test_every_ip6tables_t_line_parses_the_same() -> None:
    taken, total = compare_t_files(T_FILES, V6)
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
    assert lines and all(compare_paths(tokenize_restore_line(line), table, groups, line, V6) for table, line in lines)


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
    compare_paths(tokenize_restore_line(line), "filter" if "HL" not in line and "TTL" not in line else "mangle",
                  GroupCache(), line, V6)


def test_nat_lines_and_a_restore_round_trip() -> None:
    text = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
            "-A PREROUTING -d 2001:db8::1/128 -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00::2]:80\n"
            "-A POSTROUTING -s fd00::/64 ! -o lan0 -j MASQUERADE\n"
            "-A POSTROUTING -s fd00:2::/64 -p udp -j SNAT --to-source [2001:db8::5]:1000-2000\nCOMMIT\n")
    groups = GroupCache()
    for table, line in _rule_lines(text):
        assert compare_paths(tokenize_restore_line(line), table, groups, line, V6)
    rs = Ruleset(V6)
    rs.restore(parse_restore(text, family=V6))
    saved = [x for x in save_tables(rs.saved_tables(), "Sun Dec  6 00:00:00 2026").splitlines() if x.startswith("-A ")]
    assert saved == [x for x in text.splitlines() if x.startswith("-A ")]
