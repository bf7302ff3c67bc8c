"""Round trips of iptables 1.8.9's own rulesets, the Docker ruleset of §6 and the listing tests (§7)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from natbox.rules.evaluate import Ruleset
from natbox.rules.model import RulesError
from natbox.rules.parser import parse_argv, parse_restore
from natbox.rules.printer import save_tables
from natbox.testing.paths import SHARED
from natbox.testing.rules_conformance import RULESETS

pytestmark = pytest.mark.skipif(not RULESETS.is_dir(), reason="shared/conformance not present")

SEMANTICS = SHARED / "reference" / "netfilter-semantics.md"


def _save_without_comments(rs: Ruleset) -> str:
    text = save_tables(rs.saved_tables(), "DATE")
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))


def _table_order(text: str) -> list[str]:
    return [line[1:] for line in text.splitlines() if line.startswith("*")]


@pytest.mark.parametrize("name", ["wireless.txt", "ipt-save-filter.txt", "policy-drop.txt"])
def test_byte_for_byte(name: str) -> None:
    text = (RULESETS / name).read_text()
    rs = Ruleset()
    rs.restore(parse_restore(text))
    want = "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))
    assert _save_without_comments(rs) == want


def _blocks(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    cur: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            cur = out.setdefault(line[1:], [])
        elif cur is not None and line and not line.startswith("#"):
            cur.append(line)
    return out


@pytest.mark.parametrize("name", ["fedora27-iptables", "ipt-save-completed.txt", "iptables.dump"])
def test_round_trip_per_table(name: str) -> None:
    """Other rulesets: per table, the same text; restored without -c the counters are zero."""
    text = (RULESETS / name).read_text()
    try:
        blocks = parse_restore(text)
    except Exception as e:  # an extension natbox lacks
        if "Couldn't load" in str(e) or "unknown option" in str(e) or "does not exist" in str(e):
            pytest.skip(f"uses an unsupported extension: {e}")
        raise
    rs = Ruleset()
    rs.restore(blocks)
    got = _blocks(_save_without_comments(rs))
    import re

    for table, lines in _blocks(text).items():
        want = [re.sub(r"^\[\d+:\d+\] ", "", re.sub(r" \[\d+:\d+\]$", " [0:0]", x)) for x in lines]
        assert got[table] == want, table


def test_restore_with_counters_keeps_them() -> None:
    text = (RULESETS / "fedora27-iptables").read_text()
    try:
        blocks = parse_restore(text, with_counters=True)
    except Exception as e:
        pytest.skip(f"uses an unsupported extension: {e}")
    rs = Ruleset()
    rs.restore(blocks)
    saved = save_tables(rs.saved_tables(), "DATE", counters=True)
    assert "[0:123456789] -A INPUT -i virbr0 -p tcp -m tcp --dport 53 -j ACCEPT" in saved
    assert ":OUTPUT ACCEPT [1619:171281]" in saved


def _docker_block() -> str:
    text = SEMANTICS.read_text()
    start = text.index("```\n*filter") + 4
    return text[start:text.index("```", start)]


@pytest.mark.skipif(not SEMANTICS.exists(), reason="reference document absent")
def test_docker_ruleset_round_trip_and_listing() -> None:
    dump = _docker_block()
    rs = Ruleset()
    rs.restore(parse_restore(dump))
    assert _save_without_comments(rs) == dump
    listing = rs.execute(parse_argv(["-t", "nat", "-nvL"]))
    # verified lines of §7.1 (zero counters here; the 1/60 MASQUERADE row carries counters there)
    assert ("    0     0 DOCKER     0    --  *      *       0.0.0.0/0           !127.0.0.0/8"
            "          ADDRTYPE match dst-type LOCAL\n") in listing
    assert ("    0     0 MASQUERADE  6    --  *      *       172.17.0.2           172.17.0.2"
            "           tcp dpt:8000\n") in listing
    assert ("    0     0 DNAT       6    --  !docker0 *       0.0.0.0/0            0.0.0.0/0"
            "            tcp dpt:10000 to:172.17.0.2:8000\n") in listing
    assert "Chain DOCKER (2 references)\n" in listing
    assert not listing.endswith("\n\n")


def test_masquerade_row_with_counters() -> None:
    """§7.1: `    1    60 MASQUERADE  0    --  *      !docker0  172.17.0.0/16        0.0.0.0/0           `."""
    rs = Ruleset()
    rs.restore(parse_restore("*nat\n[1:60] -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\nCOMMIT\n",
                             with_counters=True))
    listing = rs.execute(parse_argv(["-t", "nat", "-nvL", "POSTROUTING"]))
    assert "    1    60 MASQUERADE  0    --  *      !docker0  172.17.0.0/16        0.0.0.0/0           \n" in listing


def test_kilo_mega_counters() -> None:
    """§7.1: ` 123K 4691K            17   --  nfr-r1 *  ...` and `12000   12M ...`, and the -x forms."""
    rs = Ruleset()
    rs.restore(parse_restore(
        "*filter\n[123456:4691328] -A INPUT -i nfr-r1 -p udp -m udp --dport 9999\n"
        "[12000:12336000] -A INPUT -i nfr-r1 -p icmp\nCOMMIT\n", with_counters=True))
    out = rs.execute(parse_argv(["-nvL", "INPUT"]))
    assert (" 123K 4691K            17   --  nfr-r1 *       0.0.0.0/0            0.0.0.0/0"
            "            udp dpt:9999\n") in out
    assert "12000   12M            1    --  nfr-r1 *       0.0.0.0/0            0.0.0.0/0           \n" in out
    out = rs.execute(parse_argv(["-nvxL", "INPUT"]))
    assert "  123456  4691328            17   --  nfr-r1" in out
    assert "   12000 12336000            1    --  nfr-r1" in out
    assert "    pkts      bytes target     prot opt in     out     source               destination         \n" in out


def _script_expectations(name: str) -> list[tuple[list[str], str]]:
    """(command, expected output) pairs from iptables' listing shell tests."""
    text = (RULESETS / name).read_text()
    import re

    pattern = r"EXPECT='(.*?)'\n\ndiff -u -Z <\(echo -e \"\$EXPECT\"\) <\(\$XT_MULTI iptables (.*?)\)\n"
    return [(shlex.split(m.group(2)), m.group(1)) for m in re.finditer(pattern, text, re.S)]


def test_0003_list_rules() -> None:
    rs = Ruleset()
    for cmd in ("-N foo", "-A FORWARD -i eth23 -o eth42 -j ACCEPT", "-A FORWARD -i eth42 -o eth23 -g foo",
                "-t nat -A OUTPUT -o eth123 -m mark --mark 0x42 -j ACCEPT"):
        rs.execute(parse_argv(shlex.split(cmd)))
    pairs = _script_expectations("0003-list-rules_0.sh.txt")
    assert len(pairs) == 6
    for argv, want in pairs:
        got = rs.execute(parse_argv(argv))
        assert [x.rstrip() for x in got.splitlines()] == want.splitlines(), argv
    with pytest.raises(RulesError):
        rs.execute(parse_argv(["-S", "nonexistent"]))
    assert rs.execute(parse_argv(["-S", "FORWARD", "234"])) == ""


def test_0002_verbose_listing() -> None:
    rs = Ruleset()
    rule1 = "-i eth2 -o eth3 -s 10.0.0.1 -d 10.0.0.2 -j ACCEPT"
    out1 = rs.execute(parse_argv(["-v", "-A", "FORWARD", *shlex.split(rule1)]))
    out2 = rs.execute(parse_argv(shlex.split("-v -I FORWARD 2 -i eth2 -o eth3 -s 10.0.0.4 -d 10.0.0.5 -j ACCEPT")))
    # diff -u -Z: trailing whitespace ignored
    assert out1.rstrip() == "ACCEPT  all opt -- in eth2 out eth3  10.0.0.1  -> 10.0.0.2"
    assert out2.rstrip() == "ACCEPT  all opt -- in eth2 out eth3  10.0.0.4  -> 10.0.0.5"
    assert rs.execute(parse_argv(["-v", "-C", "FORWARD", *shlex.split(rule1)])).rstrip() == out1.rstrip()
    pairs = _script_expectations("0002-verbose-output_0.sh.txt")
    assert pairs
    argv, want = pairs[0]
    got = rs.execute(parse_argv(argv))
    # diff -Z ignores trailing whitespace
    assert [x.rstrip() for x in got.splitlines()] == want.splitlines()
    assert rs.execute(parse_argv(["-v", "-N", "foobar"])) == ""
    assert rs.execute(parse_argv(["-v", "-F"])) == (
        "Flushing chain `INPUT'\nFlushing chain `FORWARD'\nFlushing chain `OUTPUT'\nFlushing chain `foobar'\n")
    assert rs.execute(parse_argv(["-v", "-Z", "OUTPUT"])) == "Zeroing chain `OUTPUT'\n"


def test_table_order_is_first_use() -> None:
    rs = Ruleset()
    rs.execute(parse_argv(["-t", "raw", "-L"]))
    rs.execute(parse_argv(["-A", "INPUT", "-j", "ACCEPT"]))
    rs.execute(parse_argv(["-t", "nat", "-L"]))
    assert _table_order(save_tables(rs.saved_tables(), "D")) == ["raw", "filter", "nat"]


_ = Path


def test_multiple_addresses_make_one_rule_per_pair() -> None:
    """As iptables 1.8.9 did in a scratch namespace: sources outermost; -I inserts each at the same index."""
    rs = Ruleset()
    rs.execute(parse_argv(shlex.split("-A INPUT -s 1.1.1.1,2.2.2.0/24 -d 3.3.3.3,4.4.4.4 -j ACCEPT")))
    rs.execute(parse_argv(shlex.split("-I INPUT 2 -s 5.5.5.5,6.6.6.6 -j DROP")))
    assert rs.execute(parse_argv(["-S", "INPUT"])) == (
        "-P INPUT ACCEPT\n-A INPUT -s 1.1.1.1/32 -d 3.3.3.3/32 -j ACCEPT\n-A INPUT -s 6.6.6.6/32 -j DROP\n"
        "-A INPUT -s 5.5.5.5/32 -j DROP\n-A INPUT -s 1.1.1.1/32 -d 4.4.4.4/32 -j ACCEPT\n"
        "-A INPUT -s 2.2.2.0/24 -d 3.3.3.3/32 -j ACCEPT\n-A INPUT -s 2.2.2.0/24 -d 4.4.4.4/32 -j ACCEPT\n")
    out = rs.execute(parse_argv(shlex.split("-v -A INPUT -s 7.7.7.7,8.8.8.8 -j ACCEPT")))
    assert out == ("ACCEPT  all opt -- in * out *  7.7.7.7  -> 0.0.0.0/0  \n"
                   "ACCEPT  all opt -- in * out *  8.8.8.8  -> 0.0.0.0/0  \n")
    rs.execute(parse_argv(shlex.split("-D INPUT -s 1.1.1.1,2.2.2.0/24 -d 3.3.3.3,4.4.4.4 -j ACCEPT")))
    assert rs.execute(parse_argv(["-S", "INPUT"])) == (
        "-P INPUT ACCEPT\n-A INPUT -s 6.6.6.6/32 -j DROP\n-A INPUT -s 5.5.5.5/32 -j DROP\n"
        "-A INPUT -s 7.7.7.7/32 -j ACCEPT\n-A INPUT -s 8.8.8.8/32 -j ACCEPT\n")
    with pytest.raises(RulesError):
        rs.execute(parse_argv(shlex.split("-C INPUT -s 7.7.7.7,9.9.9.9 -j ACCEPT")))


def test_nft_merges_payload_matches() -> None:
    """iptables 1.8.9 (nf_tables) printed these -S lines for the same commands."""
    rs = Ruleset()
    rs.execute(parse_argv(shlex.split("-A INPUT -m mark --mark 1 -m mark --mark 2")))
    rs.execute(parse_argv(shlex.split("-A INPUT -p tcp --dport 80 -m tcp --sport 5")))
    rs.execute(parse_argv(shlex.split("-A INPUT -p tcp -m tcp --sport 5 -m comment --comment x --dport 7")))
    assert rs.execute(parse_argv(["-S", "INPUT"])) == (
        "-P INPUT ACCEPT\n-A INPUT -m mark --mark 0x1 -m mark --mark 0x2\n-A INPUT -p tcp -m tcp --sport 5 --dport 80\n"
        "-A INPUT -p tcp -m tcp --sport 5 --dport 7 -m comment --comment x\n")


def test_restore_errors_carry_file_and_line() -> None:
    with pytest.raises(RulesError) as e:
        parse_restore("*filter\n\n-A INPUT -p tcp --dport 99999\nCOMMIT\n", file="rules.v4")
    assert (e.value.file, e.value.line, e.value.column) == ("rules.v4", 3, 25)
    assert str(e.value) == "rules.v4:3:25: invalid port/service `99999' specified"


def test_list_one_rule() -> None:
    """`iptables -L INPUT 2` prints only that row (recorded from iptables 1.8.9)."""
    rs = Ruleset()
    rs.execute(parse_argv(["-A", "INPUT", "-j", "ACCEPT"]))
    rs.execute(parse_argv(["-A", "INPUT", "-p", "tcp", "-j", "DROP"]))
    assert rs.execute(parse_argv(["-L", "INPUT", "2"])) == (
        "DROP       tcp  --  anywhere             anywhere            \n")
    assert rs.execute(parse_argv(["-nvL", "INPUT", "2", "--line-numbers"])) == (
        "2        0     0 DROP       6    --  *      *       0.0.0.0/0            0.0.0.0/0           \n")
    assert rs.execute(parse_argv(["-L", "INPUT", "5"])) == ""
    assert rs.execute(parse_argv(["-S", "INPUT", "2"])) == "-A INPUT -p tcp -j DROP\n"


def test_restore_noflush_and_counter_forms() -> None:
    """Recorded from iptables-restore 1.8.9 (nf_tables)."""
    rs = Ruleset()
    for c in ("-A INPUT -j ACCEPT", "-N U", "-A U -j DROP"):
        rs.execute(parse_argv(shlex.split(c)))
    rs.restore(parse_restore("*filter\n:INPUT DROP [0:0]\n:U - [0:0]\n:NEW - [0:0]\n-A INPUT -p tcp -j ACCEPT\n"
                             "COMMIT\n"), noflush=True)
    assert rs.execute(parse_argv(["-S"])) == (
        "-P INPUT DROP\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-N NEW\n-N U\n-A INPUT -j ACCEPT\n"
        "-A INPUT -p tcp -j ACCEPT\n")
    text = ("*filter\n:INPUT ACCEPT [3:4]\n[5:6] -A INPUT -p udp -j ACCEPT -c 7 8\n"
            "-A INPUT -p tcp -j ACCEPT -c 9 10\nCOMMIT\n")
    rs.restore(parse_restore(text))
    saved = save_tables(rs.saved_tables("filter"), "D", counters=True)
    assert ":INPUT ACCEPT [0:0]\n" in saved
    assert "[7:8] -A INPUT -p udp -j ACCEPT\n[9:10] -A INPUT -p tcp -j ACCEPT\n" in saved
    with pytest.raises(RulesError) as e:
        parse_restore(text, with_counters=True)
    assert (e.value.message, e.value.line) == ("multiple -c flags not allowed", 3)
