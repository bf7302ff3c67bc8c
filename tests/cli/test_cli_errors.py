"""No tracebacks, no silent failures: the real `natbox` console script, run as a user would, on every kind
of file that cannot be used (binary, missing, in a missing directory, a directory) and on TOML values of
the wrong type. Each must give one line on stderr naming the file (and file:line: key where there is
one) and the documented exit code; none may print a traceback."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from natbox.adapters.pcap import PcapngWriter, PcapWriter
from natbox.testing.natpkt import udp_packet
from natbox.testing.paths import EXAMPLES, IMPORT_ROOT

HOST = str(EXAMPLES / "masquerade-host.toml")
SCENARIO = str(EXAMPLES / "masquerade-scenario.toml")

GOOD_HOST = """\
name = "gw"
ip_forward = true
[[interface]]
name = "eth0"
addresses = ["192.168.50.1/24"]
[[interface]]
name = "eth1"
addresses = ["198.51.100.1/24"]
"""


def natbox(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The installed `natbox` console script (else `python -m natbox`), importing this tree's src."""
    exe = shutil.which("natbox")
    argv = [exe, *args] if exe else [sys.executable, "-m", "natbox", *args]
    env = dict(os.environ, PYTHONPATH=str(IMPORT_ROOT))
    env.pop("NATBOX_RULES", None)
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=cwd, check=False)


def check(res: subprocess.CompletedProcess[str], code: int, first_line: str) -> None:
    """Exit code `code`, and a first stderr line matching the regular expression `first_line`."""
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    lines = res.stderr.splitlines()
    assert res.returncode == code, res.stderr
    assert lines and re.search(first_line, lines[0]), res.stderr


@pytest.fixture
def bad(tmp_path: Path) -> dict[str, str]:
    """Files that cannot be used, by kind."""
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00\x01binary\x89PNG")
    (tmp_path / "adir").mkdir()
    return {"binary": str(binary), "missing": str(tmp_path / "missing.toml"),
            "nodir": str(tmp_path / "nodir" / "x.toml"), "dir": str(tmp_path / "adir")}


WHY = {"binary": r"not a text file", "missing": r"no such file$", "nodir": r"no such file \(directory .*nodir does not",
       "dir": r"is a directory"}


@pytest.mark.parametrize("kind", ["binary", "missing", "nodir", "dir"])
def test_scenario_file(kind: str, bad: dict[str, str]) -> None:
    path = bad[kind]
    check(natbox("replay", "--host", HOST, "--scenario", path), 2, rf"^natbox replay: {re.escape(path)}: {WHY[kind]}")


@pytest.mark.parametrize("kind", ["binary", "missing", "nodir"])
def test_host_file(kind: str, bad: dict[str, str]) -> None:
    path = bad[kind]
    check(natbox("replay", "--host", path, "--scenario", SCENARIO), 2,
          rf"^natbox replay: {re.escape(path)}: {WHY[kind]}")


def test_host_directory_that_is_not_a_snapshot(bad: dict[str, str]) -> None:
    check(natbox("replay", "--host", bad["dir"], "--scenario", SCENARIO), 2,
          rf"^natbox replay: {re.escape(bad['dir'])}/link\.json: missing")


@pytest.mark.parametrize("kind", ["binary", "missing", "nodir", "dir"])
def test_host_rules_file(kind: str, bad: dict[str, str], tmp_path: Path) -> None:
    host = tmp_path / "h.toml"
    host.write_text(GOOD_HOST + f'[rules]\nfile = "{bad[kind]}"\n')
    check(natbox("replay", "--host", str(host), "--scenario", SCENARIO), 2,
          rf"^natbox replay: {re.escape(str(host))}: rules.file {re.escape(bad[kind])}: {WHY[kind]}")


@pytest.mark.parametrize("kind", ["binary", "missing", "nodir", "dir"])
def test_capture_file(kind: str, bad: dict[str, str]) -> None:
    path = bad[kind]
    check(natbox("replay", "--host", HOST, "--in", f"eth0={path}"), 2, rf"^natbox replay: {re.escape(path)}: ")


@pytest.mark.parametrize("kind", ["binary", "missing", "nodir", "dir"])
def test_lab_file(kind: str, bad: dict[str, str]) -> None:
    path = bad[kind]
    check(natbox("lab", path, "plan"), 2, rf"^natbox lab: {re.escape(path)}: {WHY[kind]}")


@pytest.mark.parametrize("kind", ["binary", "missing", "nodir"])
def test_difftest_scenario_file(kind: str, bad: dict[str, str]) -> None:
    path = bad[kind]
    check(natbox("difftest", path), 2, rf"^natbox difftest: {re.escape(path)}: {WHY[kind]}")


def test_difftest_on_a_directory_without_scenarios(bad: dict[str, str]) -> None:
    check(natbox("difftest", bad["dir"]), 2, r"^natbox difftest: .*adir: no scenario files \(\*\.toml\)")


def test_difftest_without_scenarios() -> None:
    check(natbox("difftest"), 2, r"^natbox difftest: no scenario given")


def test_difftest_report_in_a_missing_directory(tmp_path: Path) -> None:
    check(natbox("difftest", "--report", str(tmp_path / "none" / "r.md"), str(EXAMPLES)), 2,
          r"^natbox difftest: --report .*none/r\.md: directory .*none does not exist")
    assert not (tmp_path / "none").exists()


def test_snapshot_into_a_missing_directory(tmp_path: Path) -> None:
    check(natbox("snapshot", str(tmp_path / "none" / "x")), 2,
          r"^natbox snapshot: .*none/x: directory .*none does not exist")
    assert not (tmp_path / "none").exists()


def test_replay_out_in_a_missing_directory(tmp_path: Path) -> None:
    check(natbox("replay", "--host", HOST, "--scenario", SCENARIO, "--out", str(tmp_path / "none" / "out")), 2,
          r"^natbox replay: --out .*none/out: directory .*none does not exist")
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(("toml", "where"), [
    ('[[route]]\ndst = "default"\ndev = []\n', r"h\.toml:11: route\[0\]\.dev: dev must be str"),
    ('[rules]\nfile = "\\u0000"\n', r"h\.toml:10: rules\[0\]\.file: not a file name"),
    ('[[route]]\ndst = "default"\ndev = "eth1"\ntype = 1\n', r"h\.toml:12: route\[0\]\.type: type must be str"),
    ('[sysctl]\n"net.ipv4.ip_forward" = [1]\n', r"h\.toml:10: sysctl\[0\]\.net\.ipv4\.ip_forward: must be a string"),
])
def test_host_file_values_of_the_wrong_type(toml: str, where: str, tmp_path: Path) -> None:
    host = tmp_path / "h.toml"
    host.write_text(GOOD_HOST + toml)
    check(natbox("replay", "--host", str(host), "--scenario", SCENARIO), 2, rf"^natbox replay: .*{where}")


@pytest.mark.parametrize(("toml", "where"), [
    ('[[bridge]]\nnode = []\nname = "br0"\n', r"l\.toml:5: \[\[bridge\]\] #1: node = \[\]: must be a node's name"),
    ('[[tap]]\nnode = 7\nname = "tap0"\n', r"l\.toml:5: \[\[tap\]\] #1: node = 7: must be a node's name"),
    ('[[link]]\na = { node = [], name = "x" }\nb = { node = "a", name = "y" }\n',
     r"l\.toml:4: \[\[link\]\] #1: link end: node = \[\]: must be a node's name"),
    ("node = [1]\n", r"l\.toml:\d+: node must be written as \[\[node\]\] tables"),
])
def test_lab_file_values_of_the_wrong_type(toml: str, where: str, tmp_path: Path) -> None:
    lab = tmp_path / "l.toml"
    lab.write_text('name = "t"\n' + ('[[node]]\nname = "a"\n' if not toml.startswith("node") else "") + toml)
    check(natbox("lab", str(lab), "plan"), 2, rf"^natbox lab: .*{where}")


def test_explain_packet_past_the_end() -> None:
    check(natbox("explain", "--host", HOST, "--scenario", SCENARIO, "--packet", "999"), 1,
          r"^natbox explain: .*packets")
    res = natbox("explain", "--host", HOST, "--scenario", SCENARIO, "--packet", "999")
    assert "error: --packet 999: the input has only 23 packets" in res.stderr


def test_replay_of_a_capture_on_interfaces_the_host_lacks(tmp_path: Path) -> None:
    """A pcapng whose interface en1 the host does not have: every packet skipped, said, exit 1."""
    cap = tmp_path / "en1.pcapng"
    frame = (b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x09" + b"\x08\x00"
             + bytes(udp_packet(0xC0A83202, 5000, 0x08080808, 53, b"q")))
    with PcapngWriter(cap) as w:
        w.add_interface("en1")
        for i in range(3):
            w.write(frame, interface="en1", ts=1.0 + i)
    res = natbox("replay", "--host", HOST, "--in", str(cap))
    check(res, 1, r"^natbox replay: 3 packets \(0 replayed\)")
    assert "error: nothing was replayed: every packet was skipped (3 arrived on en1, an interface the host does " \
           "not have" in res.stderr


def test_replay_where_nothing_is_replayed_is_an_error(tmp_path: Path) -> None:
    """A PPP capture (a link type natbox does not take): every packet skipped, said, exit 1."""
    cap = tmp_path / "ppp.pcap"
    with PcapWriter(cap, linktype=9) as w:
        for i in range(18):
            w.write(b"\xff\x03\x00\x21" + bytes(udp_packet(0xC0A83202, 5000, 0x08080808, 53, b"q")), ts=1.0 + i)
    res = natbox("replay", "--host", HOST, "--in", f"eth0={cap}")
    check(res, 1, r"^natbox replay: 18 packets \(0 replayed\)")
    assert "error: nothing was replayed: every packet was skipped (18 foreign link type 9)" in res.stderr
