"""Issue #14, bugs found on real files. Every expected text was recorded with the real iptables v1.8.9
(nf_tables) in a scratch network namespace (`ip netns add x; ip netns exec x iptables ...`)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from natbox.cli.iptables import iptables_main, iptables_restore_main, iptables_save_main

HEAD = "iptables v1.8.9 (nf_tables): "
TRY = "Try `iptables -h' or 'iptables --help' for more information.\n"
RHEAD = "iptables-restore v1.8.9 (nf_tables): "


def run(path: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = iptables_main(list(argv), rules_path=str(path), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def restore(path: Path, text: str, *args: str) -> tuple[int, str]:
    err = io.StringIO()
    return iptables_restore_main(list(args), rules_path=str(path), stdin=io.StringIO(text), stderr=err), \
        err.getvalue()


def save_tables_named(path: Path) -> list[str]:
    out = io.StringIO()
    assert iptables_save_main([], rules_path=str(path), stdout=out) == 0
    return [line for line in out.getvalue().splitlines() if line.startswith("*")]


def test_iptables_save_prints_tables_in_nft_order(tmp_path: Path) -> None:
    path = tmp_path / "r"
    text = ("*nat\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n*raw\n-A PREROUTING -j ACCEPT\nCOMMIT\n"
            "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n*mangle\n-A INPUT -j ACCEPT\nCOMMIT\n")
    assert restore(path, text) == (0, "")
    assert save_tables_named(path) == ["*mangle", "*raw", "*filter", "*nat"]
    path2 = tmp_path / "r2"
    assert run(path2, "-t", "nat", "-A", "POSTROUTING", "-j", "ACCEPT")[0] == 0
    assert run(path2, "-t", "raw", "-A", "PREROUTING", "-j", "ACCEPT")[0] == 0
    assert run(path2, "-t", "mangle", "-A", "INPUT", "-j", "ACCEPT")[0] == 0
    assert save_tables_named(path2) == ["*mangle", "*raw", "*nat"]


def test_a_loop_no_base_chain_reaches_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "r"
    assert run(path, "-N", "X")[0] == 0
    assert run(path, "-A", "X", "-j", "X") == (0, "", "")
    assert run(path, "-N", "Y")[0] == 0
    assert run(path, "-A", "Y", "-j", "X") == (0, "", "")
    assert run(path, "-A", "INPUT", "-j", "Y") == (
        4, "", HEAD + " RULE_APPEND failed (Too many links): rule in chain INPUT\n")
    assert run(path, "-S", "X")[1] == "-N X\n-A X -j X\n"
    assert run(path, "-N", "Z")[0] == 0
    assert run(path, "-A", "INPUT", "-j", "Z")[0] == 0
    assert run(path, "-A", "Z", "-j", "Z") == (4, "", HEAD + " RULE_APPEND failed (Too many links): rule in chain Z\n")


@pytest.mark.parametrize(("text", "rc", "err"), [
    ("*filter\n:X - [0:0]\n:Y - [0:0]\n-A X -j Y\n-A Y -j X\nCOMMIT\n", 0, ""),
    ("*filter\n:X - [0:0]\n:Y - [0:0]\n-A INPUT -j X\n-A X -j Y\n-A Y -j X\nCOMMIT\n", 4,
     RHEAD + "\nline 6: RULE_APPEND failed (Too many links): rule in chain Y\n"),
    ("*filter\n:X - [0:0]\n-A X -j X\n-A INPUT -j X\nCOMMIT\n", 4,
     RHEAD + "\nline 4: RULE_APPEND failed (Too many links): rule in chain INPUT\n"),
])
def test_restore_loops_like_iptables(tmp_path: Path, text: str, rc: int, err: str) -> None:
    assert restore(tmp_path / "r", text) == (rc, err)


@pytest.mark.parametrize(("length", "kept"), [(63, 63), (65, 65), (70, 70), (127, 127), (130, 127), (200, 127)])
def test_nflog_prefix_kept_as_iptables_nft_keeps_it(tmp_path: Path, length: int, kept: int) -> None:
    path = tmp_path / "r"
    assert run(path, "-A", "INPUT", "-j", "NFLOG", "--nflog-prefix", "a" * length)[0] == 0
    assert run(path, "-S", "INPUT")[1] == f"-P INPUT ACCEPT\n-A INPUT -j NFLOG --nflog-prefix {'a' * kept}\n"
    listed = run(path, "-L", "INPUT", "-n")[1].splitlines()[-1]
    assert listed.endswith(f"nflog-prefix {'a' * kept}")


@pytest.mark.parametrize(("argv", "err"), [
    ("-A INPUT -s ! 10.0.0.1 -j ACCEPT", "Bad argument `10.0.0.1'\n" + TRY),
    ("-A INPUT -d ! 10.0.0.1", "Bad argument `10.0.0.1'\n" + TRY),
    ("-A INPUT -i ! eth0", "Bad argument `eth0'\n" + TRY),
    ("-A INPUT -p ! tcp", HEAD + 'unknown protocol "!" specified\n' + TRY),
    ("-A INPUT -s 1.2.3.256 --foo", HEAD + 'unknown option "--foo"\n' + TRY),
    ("-A INPUT -s 1.2.3.256 -p tcp --dport 99999", HEAD + "invalid port/service `99999' specified\n" + TRY),
    ("-A INPUT -s 1.2.3.256 -j ACCEPT", HEAD + "host/network `1.2.3.256' not found\n" + TRY),
])
def test_old_style_inversion_and_address_errors(tmp_path: Path, argv: str, err: str) -> None:
    assert run(tmp_path / "r", *argv.split()) == (2, "", err)
