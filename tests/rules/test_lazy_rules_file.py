"""Issue #12: a ruleset file natbox wrote is read without parsing every rule, with the same results.

`natbox iptables --rules F` stamps F; a stamped file keeps its rule lines unparsed until a command needs
them (natbox.rules.lazy). Every command must answer exactly as on a fully parsed file: random command
sequences run on a stamped file and on the same file with its stamp removed before each command (so it is
parsed and validated in full every time) print, exit and save the same.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natbox.cli.builds import is_compiled
from natbox.cli.iptables import iptables_main, load_ruleset
from natbox.rules.fastparse import GroupCache
from natbox.rules.lazy import STAMP_PREFIX
from natbox.rules.parser import Command, parse_restore_line


def run(path: Path, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = iptables_main(list(argv), rules_path=str(path), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def unstamp(path: Path) -> None:
    if path.exists():
        text = path.read_text()
        path.write_text("".join(line for line in text.splitlines(True) if not line.startswith(STAMP_PREFIX)))


def content(path: Path) -> str:
    if not path.exists():
        return ""
    return "".join(line for line in path.read_text().splitlines(True) if not line.startswith("#"))


COMMANDS = [
    "-N X", "-N Y", "-t nat -N X", "-A INPUT -j X", "-A X -j Y", "-A Y -j X", "-A X -g Y",
    "-A INPUT -p tcp --dport 22 -j ACCEPT", "-A X -s 10.0.0.1 -j DROP", "-A Y -m conntrack --ctstate NEW",
    "-I X 1 -j RETURN", "-R X 1 -j ACCEPT", "-D X 1", "-D INPUT -j X", "-F X", "-F", "-X Y", "-X",
    "-E X Z", "-E Z X", "-Z", "-P FORWARD DROP", "-C INPUT -j X", "-S", "-nvL", "-L X 1", "-S X",
    "-t nat -A POSTROUTING -j MASQUERADE", "-t nat -A PREROUTING -j X", "-t nat -A X -j MASQUERADE",
    "-t nat -A X -j DNAT --to-destination 10.0.0.2", "-t nat -A OUTPUT -j X", "-t nat -F X", "-t nat -S",
    "-A OUTPUT -j REJECT --reject-with tcp-reset -p tcp", "-A X -j REJECT", "-A FORWARD -j Y",
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(COMMANDS), min_size=1, max_size=14))
def test_stamped_file_answers_like_a_parsed_one(tmp_path_factory: pytest.TempPathFactory, cmds: list[str]) -> None:
    d = tmp_path_factory.mktemp("lazy")
    stamped, plain = d / "stamped", d / "plain"
    for c in cmds:
        unstamp(plain)
        assert run(stamped, c.split()) == run(plain, c.split()), c
        assert content(stamped) == content(plain), c


def test_stamp_written_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "rules"
    assert run(path, ["-N", "X"])[0] == 0
    assert run(path, ["-A", "INPUT", "-j", "X"])[0] == 0
    assert path.read_text().splitlines()[-1].startswith(STAMP_PREFIX)
    rs = load_ruleset(str(path))
    assert rs.tables["filter"].chains["INPUT"].raw is not None  # kept as text
    # an edit by hand invalidates the stamp: the file is parsed (and refused) as before
    path.write_text(path.read_text().replace("-A INPUT -j X", "-A INPUT -j NOPE"))
    rc, _out, err = run(path, ["-S"])
    assert rc == 2
    assert err.startswith(f"natbox: bad rules file: {path}:")
    assert "Chain 'NOPE' does not exist" in err


@pytest.mark.skipif(is_compiled(),
                    reason="interpreted only: replaces a function that the compiled lazy.py calls directly")
def test_append_parses_only_the_chain_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The work of one -A on a stamped file does not grow with the rules of other chains."""
    path = tmp_path / "rules"
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":BIG - [0:0]",
             ":SMALL - [0:0]", "-A INPUT -j BIG", "-A INPUT -j SMALL"]
    lines += [f"-A BIG -s 10.0.{i >> 8}.{i & 255}/32 -j ACCEPT" for i in range(2000)]
    lines += ["-A SMALL -j ACCEPT", "COMMIT"]
    from natbox.cli.iptables import iptables_restore_main

    assert iptables_restore_main([], rules_path=str(path), stdin=io.StringIO("\n".join(lines) + "\n")) == 0
    parsed: list[str] = []
    real = parse_restore_line

    def counting(line: str, table: str, groups: GroupCache, family: int = 2) -> Command:
        parsed.append(line.split()[1])
        return real(line, table, groups, family)

    monkeypatch.setattr("natbox.rules.lazy.parse_restore_line", counting)
    assert run(path, ["-A", "SMALL", "-j", "DROP"])[0] == 0
    assert parsed == ["SMALL"]
    parsed.clear()
    assert run(path, ["-A", "INPUT", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"])[0] == 0
    assert parsed == ["INPUT", "INPUT"]
    assert content(path).count("-A BIG ") == 2000
