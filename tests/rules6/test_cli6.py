"""`natbox ip6tables`, `ip6tables-save`, `ip6tables-restore`: the IPv6 ruleset file, ip6tables' messages,
version and options (recorded with ip6tables 1.8.9)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from natbox.cli.ip6tables import ip6tables_main, ip6tables_restore_main, ip6tables_save_main


def _run(fn: object, argv: list[str], path: Path | None, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    assert callable(fn)
    rc = fn(argv, rules_path=str(path) if path else None, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def test_no_ruleset_names_natbox_rules6(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NATBOX_RULES6", raising=False)
    monkeypatch.setenv("NATBOX_RULES", "/nonexistent/r.v4")  # the IPv4 file is never used for IPv6
    for fn, prog in ((ip6tables_main, "ip6tables"), (ip6tables_save_main, "ip6tables-save"),
                     (ip6tables_restore_main, "ip6tables-restore")):
        rc, _out, err = _run(fn, [], None)
        assert rc == 2 and err.startswith(f"natbox {prog}: no ruleset given") and "NATBOX_RULES6" in err


def test_environment_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NATBOX_RULES6", str(tmp_path / "r.v6"))
    assert _run(ip6tables_main, ["-A", "FORWARD", "-d", "2001:DB8::1", "-j", "DROP"], None)[0] == 0
    rc, out, _err = _run(ip6tables_main, ["-S", "FORWARD"], None)
    assert (rc, out) == (0, "-P FORWARD ACCEPT\n-A FORWARD -d 2001:db8::1/128 -j DROP\n")


def test_versions_and_refused_family_options(tmp_path: Path) -> None:
    path = tmp_path / "r.v6"
    assert _run(ip6tables_main, ["-V"], path)[1] == "ip6tables v1.8.9 (nf_tables)\n"
    assert _run(ip6tables_save_main, ["-V"], path)[1] == "ip6tables-save v1.8.9 (nf_tables)\n"
    assert _run(ip6tables_main, ["-6", "-A", "INPUT"], path)[0] == 0
    rc, _out, err = _run(ip6tables_main, ["-4", "-A", "INPUT"], path)
    assert (rc, err) == (2, "Try `ip6tables -h' or 'ip6tables --help' for more information.\n")
    rc, _out, err = _run(ip6tables_save_main, ["-6"], path)
    assert (rc, err) == (1, "ip6tables-save: invalid option -- '6'\n"
                            "Look at manual page `ip6tables-save.8' for more information.\n")
    rc, _out, err = _run(ip6tables_restore_main, ["-4"], path, "*filter\nCOMMIT\n")
    assert (rc, err) == (1, "ip6tables-restore: invalid option -- '4'\n"
                            "Try `ip6tables-restore -h' for more information.\n")
    rc, _out, err = _run(ip6tables_main, ["-A", "INPUT", "-f"], path)
    assert rc == 2 and err.startswith("ip6tables v1.8.9 (nf_tables): `-f' is not supported in IPv6, use -m frag")


def test_restore_errors_name_ip6tables_restore(tmp_path: Path) -> None:
    rc, _out, err = _run(ip6tables_restore_main, [], tmp_path / "r.v6", "*foo\nCOMMIT\n")
    assert rc == 2 and err.startswith("ip6tables-restore v1.8.9 (nf_tables): ip6tables-restore: line 1 table name")
    rc, _out, err = _run(ip6tables_restore_main, [], tmp_path / "r.v6", "*filter\n-A INPUT -s 10.0.0.1\nCOMMIT\n")
    assert rc == 2 and "host/network `10.0.0.1' not found" in err and "Error occurred at line: 2" in err


def test_gateway_control_serves_the_ip6tables_tools() -> None:
    """`natbox ip6tables --control SOCKET` reaches the gateway's `run_command`, which uses engine.rules6."""
    from typing import cast

    from natbox.engine.engine import Engine
    from natbox.engine.host import Host
    from natbox.gateway.commands import Commands
    from natbox.gateway.loop import EventLoop

    engine = Engine(Host(ipv6_forward=True))
    cmds = Commands(engine, cast(EventLoop, None))

    def run(cmd: str, *argv: str, stdin: str = "") -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        rc = cmds.run_command(cmd, list(argv), io.StringIO(stdin), out, err)
        return rc, out.getvalue() + err.getvalue()

    assert run("ip6tables", "-t", "nat", "-A", "POSTROUTING", "-s", "fd00::/64", "-j", "MASQUERADE")[0] == 0
    assert run("ip6tables-restore", "--noflush", stdin="*filter\n-A FORWARD -p ipv6-icmp -j ACCEPT\nCOMMIT\n")[0] == 0
    rc, text = run("ip6tables-save")
    assert rc == 0 and "-A POSTROUTING -s fd00::/64 -j MASQUERADE\n" in text
    assert "-A FORWARD -p ipv6-icmp -j ACCEPT\n" in text
    assert "nat" in engine.rules6.present and not engine.rules.present  # the IPv4 ruleset is untouched
    assert run("ip6tables-frobnicate")[0] == 2
