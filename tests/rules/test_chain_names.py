"""Chain and target names iptables refuses (issue #12): `-N ""` and `-N standard` used to be accepted, saved
as `: - [0:0]`, and every later command on the file failed.

Expected texts were recorded with the real iptables v1.8.9 (nf_tables) in a scratch network namespace
(`ip netns add x; ip netns exec x iptables ...`), one fresh command per case.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natbox.cli.iptables import iptables_main, iptables_restore_main
from natbox.rules.words import _tokenize_escaped, tokenize_restore_line

HEAD = "iptables v1.8.9 (nf_tables): "
TRY = "Try `iptables -h' or 'iptables --help' for more information.\n"
CLASH = HEAD + "chain name may not clash with target name\n" + TRY
RHEAD = "iptables-restore v1.8.9 (nf_tables): "
RTRY = "Try `iptables-restore -h' or 'iptables-restore --help' for more information.\n"


def run(path: Path, *argv: str) -> tuple[int, str]:
    err = io.StringIO()
    rc = iptables_main(list(argv), rules_path=str(path), stdout=io.StringIO(), stderr=err)
    return rc, err.getvalue()


@pytest.mark.parametrize(("argv", "rc", "err"), [
    (["-N", ""], 2, CLASH),
    (["-N", "standard"], 2, CLASH),
    (["-N", "ACCEPT"], 2, CLASH),
    (["-N", "QUEUE"], 2, CLASH),
    (["-N", "NFQUEUE"], 2, CLASH),  # a target natbox does not implement clashes all the same
    (["-N", "TPROXY"], 2, CLASH),
    (["-N", "MASQUERADE"], 2, CLASH),
    (["-N", "-foo"], 2, HEAD + "chain name not allowed to start with `-'\n" + TRY),
    (["-N", "!foo"], 2, HEAD + "chain name not allowed to start with `!'\n" + TRY),
    (["-N", "a" * 29], 2, HEAD + f"chain name `{'a' * 29}' too long (must be under 29 chars)\n" + TRY),
    (["-N", "a b"], 2, HEAD + "Invalid chain name `a b'\n" + TRY),
    (["-N", "a" * 28], 0, ""),
    (["-N", "Standard"], 0, ""),
    (["-N", "mark"], 0, ""),
    (["-N", "ERROR"], 0, ""),
    (["-N", "NAT"], 0, ""),
    (["-N", "x!"], 0, ""),
    (["-A", "INPUT", "-j", ""], 2, HEAD + "Invalid target name (too short)\n" + TRY),
    (["-A", "INPUT", "-g", ""], 2, HEAD + "Invalid target name (too short)\n" + TRY),
    (["-A", "INPUT", "-j", "standard"], 4, HEAD + " RULE_APPEND failed (Invalid argument): rule in chain INPUT\n"),
    (["-I", "INPUT", "-j", "standard"], 4, HEAD + " RULE_INSERT failed (Invalid argument): rule in chain INPUT\n"),
    (["-A", "INPUT", "-g", "standard"], 2, HEAD + "Chain 'standard' does not exist\n" + TRY),
    (["-C", "INPUT", "-j", "standard"], 1, "iptables: Bad rule (does a matching rule exist in that chain?).\n"),
])
def test_chain_and_target_names_like_iptables(tmp_path: Path, argv: list[str], rc: int, err: str) -> None:
    path = tmp_path / "rules"
    assert run(path, *argv) == (rc, err)
    # whatever was refused or accepted, the file stays usable
    assert run(path, "-A", "INPUT", "-j", "ACCEPT") == (0, "")
    assert run(path, "-S")[0] == 0


def restore(path: Path, text: str) -> tuple[int, str]:
    err = io.StringIO()
    rc = iptables_restore_main([], rules_path=str(path), stdin=io.StringIO(text), stderr=err)
    return rc, err.getvalue()


@pytest.mark.parametrize(("line", "rc", "err"), [
    (": - [0:0]", 2, RHEAD + "chain name not allowed to start with `-'\nError occurred at line: 2\n" + RTRY),
    (":!x - [0:0]", 2, RHEAD + "chain name not allowed to start with `!'\nError occurred at line: 2\n" + RTRY),
    (f":{'a' * 29} - [0:0]", 2,
     RHEAD + f"chain name `{'a' * 29}' too long (must be under 29 chars)\nError occurred at line: 2\n" + RTRY),
    (f":-{'a' * 32} - [0:0]", 2,
     RHEAD + f"chain name `-{'a' * 32}' too long (must be under 29 chars)\nError occurred at line: 2\n" + RTRY),
    (":ACCEPT - [0:0]", 2, RHEAD + "chain name may not clash with target name\nError occurred at line: 2\n" + RTRY),
    (":DROP - [0:0]", 2, RHEAD + "chain name may not clash with target name\nError occurred at line: 2\n" + RTRY),
    (":x", 2, RHEAD + "iptables-restore: line 2 policy invalid\nError occurred at line: 2\n" + RTRY),
    (":MASQUERADE - [0:0]", 0, ""),  # iptables-restore checks only the verdict names
    (":NFQUEUE - [0:0]", 0, ""),
    (":standard - [0:0]", 0, ""),
    ("-N standard", 2, RHEAD + "chain name may not clash with target name\nError occurred at line: 2\n" + RTRY),
    ('-N ""', 2, RHEAD + "chain name may not clash with target name\nError occurred at line: 2\n" + RTRY),
    ("-A INPUT -j standard", 4, RHEAD + "\nline 2: RULE_APPEND failed (Invalid argument): rule in chain INPUT\n"),
    # add_param_to_argv: a closing quote ends an argument, even an empty one
    ('-A INPUT -m comment --comment ""x -j ACCEPT', 2, "Bad argument `x'\nError occurred at line: 2\n" + RTRY),
    ('-A INPUT "" -j ACCEPT', 2, "Bad argument `'\nError occurred at line: 2\n" + RTRY),
])
def test_restore_chain_names_like_iptables(tmp_path: Path, line: str, rc: int, err: str) -> None:
    path = tmp_path / "rules"
    assert restore(path, f"*filter\n{line}\nCOMMIT\n") == (rc, err)
    assert run(path, "-S")[0] == 0


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=' \t\n"ab-', max_size=24))
def test_restore_line_split_by_quotes_is_the_character_loop(line: str) -> None:
    assert tokenize_restore_line(line) == _tokenize_escaped(line)
