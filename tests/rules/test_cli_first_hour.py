"""Issue #13, the iptables tools: the real `natbox` console script, run as a user would.

Exit codes and first stderr lines; never a traceback. Where iptables itself answers (-h, -V, getopt errors,
`iptables-restore -t` and FILE, `iptables -L -Z`), the expected text was recorded with the real iptables
v1.8.9 (nf_tables) in a scratch network namespace.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from natbox.cli.iptables import IPTABLES_HELP
from natbox.testing.paths import IMPORT_ROOT


def natbox(*args: str, cwd: Path, stdin: str = "", env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("natbox")
    argv = [exe, *args] if exe else [sys.executable, "-m", "natbox", *args]
    full = dict(os.environ, PYTHONPATH=str(IMPORT_ROOT))
    full.pop("NATBOX_RULES", None)
    full.update(env or {})
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=full, cwd=cwd, input=stdin,
                          check=False)


def check(res: subprocess.CompletedProcess[str], code: int, first_line: str) -> None:
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert res.returncode == code, res.stderr
    lines = res.stderr.splitlines()
    assert lines and re.search(first_line, lines[0]), res.stderr


NO_RULESET = r"^natbox {}: no ruleset given: use --rules FILE or set NATBOX_RULES .*--control SOCKET"


@pytest.mark.parametrize(("args", "prog"), [
    (["iptables", "-A", "INPUT", "-j", "ACCEPT"], "iptables"),
    (["iptables", "-L"], "iptables"),
    (["iptables-save"], "iptables-save"),
    (["iptables-restore"], "iptables-restore"),
])
def test_no_ruleset_is_an_error_not_a_silent_success(tmp_path: Path, args: list[str], prog: str) -> None:
    res = natbox(*args, cwd=tmp_path, stdin="*filter\n-A INPUT -j ACCEPT\nCOMMIT\n")
    check(res, 2, NO_RULESET.format(prog))
    assert list(tmp_path.iterdir()) == []
    # NATBOX_RULES is the other way to give one
    ok = natbox(*args, cwd=tmp_path, env={"NATBOX_RULES": str(tmp_path / "r")},
                stdin="*filter\n-A INPUT -j ACCEPT\nCOMMIT\n")
    assert ok.returncode == 0, ok.stderr


def test_unimplemented_extensions_say_so(tmp_path: Path) -> None:
    res = natbox("iptables", "--rules", "r", "-A", "INPUT", "-m", "devgroup", "--src-group", "1", cwd=tmp_path)
    check(res, 2, r"^iptables v1\.8\.9 \(nf_tables\): Couldn't load match `devgroup': natbox does not implement"
                  r" the devgroup match$")
    assert "natbox implements the matches addrtype, " in res.stderr
    res = natbox("iptables", "--rules", "r", "-A", "INPUT", "-j", "ULOG", cwd=tmp_path)
    check(res, 2, r"^iptables v1\.8\.9 \(nf_tables\): Couldn't load target `ULOG': natbox does not implement")
    assert "natbox implements the targets AUDIT, CHECKSUM, CLASSIFY, CLUSTERIP, CONNMARK," in res.stderr
    assert "standard" not in res.stderr
    for name in ("devgroup",):
        res = natbox("iptables", "--rules", "r", "-A", "INPUT", "-m", name, cwd=tmp_path)
        check(res, 2, f"Couldn't load match `{name}': natbox does not implement the {name} match$")
    # a name iptables does not know either keeps iptables' own words
    res = natbox("iptables", "--rules", "r", "-A", "INPUT", "-m", "fooo", cwd=tmp_path)
    check(res, 2, r"^iptables v1\.8\.9 \(nf_tables\): Couldn't load match `fooo':No such file or directory$")
    # refused in a restore as well, with the line
    res = natbox("iptables-restore", "--rules", "r", cwd=tmp_path,
                 stdin="*filter\n-A INPUT -m devgroup --src-group 1 -j DROP\nCOMMIT\n")
    check(res, 2, "Couldn't load match `devgroup': natbox does not implement the devgroup match$")
    assert "Error occurred at line: 2" in res.stderr


def test_help_and_version_as_iptables_answers_them(tmp_path: Path) -> None:
    for flag in ("-h", "--help"):
        res = natbox("iptables", flag, cwd=tmp_path)
        assert (res.returncode, res.stderr) == (0, "")
        assert res.stdout.startswith(IPTABLES_HELP)
        assert "--rules FILE" in res.stdout and "NATBOX_RULES" in res.stdout and "--control SOCKET" in res.stdout
    assert IPTABLES_HELP.startswith("iptables v1.8.9 (nf_tables)\n\nUsage: iptables -[ACD] chain rule-spec")
    for prog in ("iptables", "iptables-save", "iptables-restore"):
        for flag in ("-V", "--version"):
            res = natbox(prog, flag, cwd=tmp_path)
            assert (res.returncode, res.stdout, res.stderr) == (0, f"{prog} v1.8.9 (nf_tables)\n", "")
    res = natbox("iptables", "-V", "-h", cwd=tmp_path)  # the first one decides
    assert res.stdout == "iptables v1.8.9 (nf_tables)\n"
    res = natbox("iptables-restore", "-h", cwd=tmp_path)
    assert res.returncode == 0
    assert res.stderr.startswith("Usage: iptables-restore [-c] [-v] [-V] [-t] [-h] [-n] [-T table] [-M command]"
                                 " [-4] [-6] [file]\n\t   [ --counters ]\n")
    check(natbox("iptables-save", "-h", cwd=tmp_path), 1, r"^iptables-save: invalid option -- 'h'$")
    check(natbox("iptables-save", "--bogus", cwd=tmp_path), 1, r"^iptables-save: unrecognized option '--bogus'$")
    check(natbox("iptables-save", "foo", cwd=tmp_path), 1, r"^Unknown arguments found on commandline$")
    check(natbox("iptables-restore", "--bogus", cwd=tmp_path), 1,
          r"^iptables-restore: unrecognized option '--bogus'$")
    check(natbox("iptables-restore", "a", "b", cwd=tmp_path), 1, r"^Unknown arguments found on commandline$")


def test_restore_test_mode_and_file_argument(tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    dump.write_text("*filter\n:X - [0:0]\n-A INPUT -j X\nCOMMIT\n")
    for flag in ("-t", "--test"):
        res = natbox("iptables-restore", "--rules", "r", flag, str(dump), cwd=tmp_path)
        assert (res.returncode, res.stderr) == (0, "")
        assert not (tmp_path / "r").exists()  # checked, not applied
    bad = tmp_path / "bad"
    bad.write_text("*nat\n-A PREROUTING -j MASQUERADE\nCOMMIT\n")
    check(natbox("iptables-restore", "-t", str(bad), cwd=tmp_path), 4, r"^iptables-restore v1\.8\.9 \(nf_tables\): $")
    res = natbox("iptables-restore", "--rules", "r", str(dump), cwd=tmp_path)
    assert (res.returncode, res.stderr) == (0, "")
    assert natbox("iptables", "--rules", "r", "-S", "INPUT", cwd=tmp_path).stdout == "-P INPUT ACCEPT\n-A INPUT -j X\n"
    check(natbox("iptables-restore", "--rules", "r", "/nonexistent/dump", cwd=tmp_path), 1,
          r"^Can't open /nonexistent/dump: No such file or directory$")


def test_list_and_zero(tmp_path: Path) -> None:
    for _ in range(2):
        natbox("iptables", "--rules", "r", "-A", "INPUT", "-j", "ACCEPT", "-c", "5", "500", cwd=tmp_path)
    res = natbox("iptables", "--rules", "r", "-L", "INPUT", "-Z", "-nv", cwd=tmp_path)
    assert (res.returncode, res.stderr) == (0, "")
    # recorded: the listing shows the counters before they are zeroed, then one line per zeroed chain
    assert res.stdout == (
        "Chain INPUT (policy ACCEPT 0 packets, 0 bytes)\n"
        " pkts bytes target     prot opt in     out     source               destination         \n"
        "    5   500 ACCEPT     0    --  *      *       0.0.0.0/0            0.0.0.0/0           \n"
        "    5   500 ACCEPT     0    --  *      *       0.0.0.0/0            0.0.0.0/0           \n"
        "Zeroing chain `INPUT'\n")
    res = natbox("iptables", "--rules", "r", "-Z", "-L", "-n", cwd=tmp_path)  # either order; quiet without -v
    assert res.returncode == 0 and "Zeroing" not in res.stdout
    res = natbox("iptables", "--rules", "r", "-nvL", "INPUT", cwd=tmp_path)
    assert res.stdout.count("    0     0 ACCEPT") == 2
    res = natbox("iptables", "--rules", "r", "-S", "-Z", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.endswith("-A INPUT -j ACCEPT\n")
    check(natbox("iptables", "--rules", "r", "-L", "-F", cwd=tmp_path), 2,
          r"^iptables v1\.8\.9 \(nf_tables\): Cannot use -F with -L$")


@pytest.mark.parametrize("kind", ["directory", "binary", "missing-dir"])
def test_unusable_rules_file_is_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "f"
    if kind == "directory":
        path.mkdir()
        why = "Is a directory"
    elif kind == "binary":
        path.write_bytes(b"\x00\xff\xfe*filter\n")
        why = "not UTF-8 text"
    else:
        path = tmp_path / "no" / "f"
        why = "No such file or directory"
    res = natbox("iptables", "--rules", str(path), "-A", "INPUT", "-j", "ACCEPT", cwd=tmp_path)
    check(res, 2, rf"^natbox: cannot (read|write) rules file {re.escape(str(path))}: {why}")
    assert len(res.stderr.splitlines()) == 1
