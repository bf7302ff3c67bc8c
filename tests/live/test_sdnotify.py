"""systemd integration without systemd: sd_notify datagrams to a socket the test binds, and diagnostics
that carry syslog priorities when stderr is the journal."""

from __future__ import annotations

import io
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from natbox.gateway.log import journal_stream, say
from natbox.gateway.sdnotify import Notifier
from natbox.lab.model import Lab
from natbox.testing.live import build_lab, env, gateway_argv, load_example, stop, unique_lab_name, wait_ready
from natbox.testing.paths import LAB_EXAMPLES as EXAMPLES


def listener(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(10)
    return s


def fields(s: socket.socket) -> dict[str, str]:
    return dict(line.split("=", 1) for line in s.recv(4096).decode().splitlines())


def test_notifier_sends_ready_reloading_stopping(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with listener(path) as s:
        n = Notifier({"NOTIFY_SOCKET": path})
        assert n.ready("forwarding on lan0, wan0")
        got = fields(s)
        assert got["READY"] == "1" and got["STATUS"] == "forwarding on lan0, wan0"
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert n.reloading()
        got = fields(s)
        assert got["RELOADING"] == "1" and before <= int(got["MONOTONIC_USEC"]) <= before + 10_000_000
        assert n.stopping()
        assert fields(s)["STOPPING"] == "1"
        n.close()


def test_notifier_abstract_socket_and_absent() -> None:
    name = f"natbox-test-{os.getpid()}"
    with listener("\0" + name) as s:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.stopping() and fields(s)["STOPPING"] == "1"
        n.close()
    assert not Notifier({}).ready("x")  # not run by systemd: nothing to do, no error
    assert not Notifier({"NOTIFY_SOCKET": "/nonexistent/notify"}).ready("x")


def test_log_lines_on_a_terminal_and_in_the_journal(tmp_path: Path) -> None:
    plain = io.StringIO()
    say("warning: wan0 is down", stream=plain)
    say("ready: gw on lan0", stream=plain)
    assert plain.getvalue() == "natbox gateway: warning: wan0 is down\nnatbox gateway: ready: gw on lan0\n"
    with open(tmp_path / "journal", "w+", encoding="utf-8") as f:
        st = os.fstat(f.fileno())
        os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        try:
            assert journal_stream(f)
            say("warning: wan0 is down", stream=f)
            say("refusing to start: lan0 has kernel address 10.0.1.1/24", stream=f)
            say("ready: gw on lan0", stream=f)
        finally:
            del os.environ["JOURNAL_STREAM"]
        f.seek(0)
        assert f.read().splitlines() == ["<4>warning: wan0 is down",
                                         "<3>refusing to start: lan0 has kernel address 10.0.1.1/24",
                                         "<6>ready: gw on lan0"]
    assert not journal_stream(plain)


@pytest.fixture
def basic_lab() -> Iterator[Lab]:
    yield from build_lab(load_example("basic.toml", unique_lab_name("sd")))


@pytest.mark.netns
@pytest.mark.usefixtures("need_netns")
def test_gateway_notifies_systemd(basic_lab: Lab, tmp_path: Path) -> None:
    """The gateway under Type=notify: READY=1 once it forwards, RELOADING=1 then READY=1 around a SIGHUP,
    STOPPING=1 on SIGTERM."""
    import subprocess

    path = str(tmp_path / "notify")
    with listener(path) as s:
        e = env()
        e["NOTIFY_SOCKET"] = path
        proc = subprocess.Popen(["ip", "netns", "exec", basic_lab.netns("gw"),
                                 *gateway_argv(EXAMPLES / "basic-gw.toml")], env=e, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            wait_ready(proc)
            got = fields(s)
            assert got["READY"] == "1" and got["MAINPID"] == str(proc.pid) and "lan0" in got["STATUS"]
            proc.send_signal(signal.SIGHUP)
            assert fields(s)["RELOADING"] == "1"
            assert fields(s)["READY"] == "1"
        finally:
            rest = stop(proc)
        assert fields(s)["STOPPING"] == "1"
    assert proc.returncode == 0, rest


def test_example_unit_file() -> None:
    """examples/natbox-gateway.service: Type=notify, reload by SIGHUP, and an ExecStart natbox accepts."""
    from natbox.cli.gateway import parse_gateway_args
    from natbox.testing.paths import EXAMPLES as REPO_EXAMPLES

    text = (REPO_EXAMPLES / "natbox-gateway.service").read_text().replace("\\\n", " ")
    keys: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key, value)
    assert keys["Type"] == "notify" and keys["ExecReload"] == "kill -HUP $MAINPID"
    assert keys["RestartPreventExitStatus"] == "2"
    argv = keys["ExecStart"].split()
    assert argv[1] == "gateway"
    cfg = parse_gateway_args(argv[2:])
    assert cfg.control == "/run/natbox/control.sock" and cfg.state == "/var/lib/natbox/conntrack.json"
