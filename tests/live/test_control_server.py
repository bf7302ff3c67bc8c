"""The control server on its own (no root, no namespaces): a real engine and an event loop without
ports, clients driven from this thread against `poll_once`. Every abuse is answered or dropped, the
listening path is only ever replaced when it is a stale socket."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from natbox.adapters.snapshot import load_host
from natbox.conntrack.table import CtEvent
from natbox.engine.engine import Engine
from natbox.gateway import control as control_mod
from natbox.gateway.control import CLIENTS_MAX, ControlPathError, ControlServer, claim_path
from natbox.gateway.loop import EventLoop
from natbox.testing.paths import LAB_EXAMPLES


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ControlServer, EventLoop, Clock, Path]]:
    engine = Engine(load_host(LAB_EXAMPLES / "basic-gw.toml").host, seed=1)
    clock = Clock()
    loop = EventLoop(engine, {}, clock=clock)
    path = tmp_path / "ctl.sock"
    server = ControlServer(str(path), engine, loop, clock=clock)
    yield server, loop, clock, path
    server.close()
    loop.close()


def connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))
    s.setblocking(False)
    return s


def pump(loop: EventLoop, rounds: int = 5) -> None:
    for _ in range(rounds):
        loop.poll_once(0.01)


def answer(loop: EventLoop, s: socket.socket, rounds: int = 50) -> bytes:
    """Run the loop until the server closes `s`; what it said."""
    chunks = []
    for _ in range(rounds):
        loop.poll_once(0.01)
        try:
            chunk = s.recv(1 << 20)
        except BlockingIOError:
            continue
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def send_all(loop: EventLoop, s: socket.socket, data: bytes) -> bool:
    """Send `data` on the non-blocking `s`, running the loop while the socket is full; whether all went."""
    view = memoryview(data)
    for _ in range(10000):
        if not view:
            return True
        try:
            view = view[s.send(view):]
        except BlockingIOError:
            loop.poll_once(0.01)
        except OSError:
            return False
    return False


def request(loop: EventLoop, path: Path, data: bytes) -> bytes:
    s = connect(path)
    send_all(loop, s, data)
    s.shutdown(socket.SHUT_WR)
    try:
        return answer(loop, s)
    finally:
        s.close()


def test_a_request_is_answered(served: tuple[ControlServer, EventLoop, Clock, Path]) -> None:
    _server, loop, _clock, path = served
    got = json.loads(request(loop, path, json.dumps({"cmd": "conntrack", "argv": ["-C"]}).encode()))
    assert got == {"exit": 0, "stdout": "0\n", "stderr": ""}
    assert b"unknown command" in request(loop, path, b"bogus")


@pytest.mark.parametrize("data", [b'{"a":' + b"[" * 100000, b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}",
                                  b"{nope", b'{"cmd": 3}', b'{"cmd": "iptables", "argv": "-L"}', b'{"x": 1} [2]'],
                         ids=["nested-open", "nested-closed", "not-json", "cmd-int", "argv-str", "trailing"])
def test_malformed_requests_are_answered(served: tuple[ControlServer, EventLoop, Clock, Path], data: bytes) -> None:
    _server, loop, _clock, path = served
    got = json.loads(request(loop, path, data))
    assert got["exit"] == 2 and "malformed control request" in got["stderr"]


def test_a_plain_request_that_is_not_a_command(served: tuple[ControlServer, EventLoop, Clock, Path]) -> None:
    _server, loop, _clock, path = served
    said = request(loop, path, b"[" * 100000 + b"]" * 100000)
    assert said.startswith(b"unknown command '[[[[") and len(said) < 200


def test_oversized_request_is_answered(served: tuple[ControlServer, EventLoop, Clock, Path]) -> None:
    server, loop, _clock, path = served
    s = connect(path)
    assert not send_all(loop, s, b'{"cmd": "iptables-restore", "stdin": "' + b"#" * (5 << 20))
    said = answer(loop, s)
    s.close()
    assert server.stats["oversize"] == 1
    assert said == b"" or b"byte limit" in said


def test_half_open_and_slowloris_time_out(served: tuple[ControlServer, EventLoop, Clock, Path]) -> None:
    server, loop, clock, path = served
    half = connect(path)
    half.sendall(b'{"cmd": "conntrack"')
    slow = connect(path)
    pump(loop)
    sent = 0
    for _ in range(40):  # a byte every second: never idle for long, but never done
        try:
            slow.send(b" ")
        except BrokenPipeError:
            break
        sent += 1
        clock.now += 1.0
        pump(loop, 1)
    assert 9 <= sent <= 11  # REQUEST_TIMEOUT
    assert b"timed out" in answer(loop, half)
    assert b"timed out" in answer(loop, slow)
    assert server.stats["timeout"] == 2 and not server.clients
    half.close()
    slow.close()


def test_clients_are_bounded(served: tuple[ControlServer, EventLoop, Clock, Path]) -> None:
    server, loop, clock, path = served
    idle = []
    for _ in range(CLIENTS_MAX + 10):
        idle.append(connect(path))
        loop.poll_once(0)
    pump(loop)
    assert len(server.clients) == CLIENTS_MAX and server.stats["busy"] == 10
    assert b"busy" in answer(loop, idle[-1])
    clock.now += 60
    pump(loop)
    assert not server.clients
    for s in idle:
        s.close()
    assert json.loads(request(loop, path, b'{"cmd": "conntrack", "argv": ["-C"]}'))["exit"] == 0


def events_enabled(server: ControlServer) -> bool:
    return server.engine.table.events_enabled


def test_a_listener_that_never_reads_is_dropped(served: tuple[ControlServer, EventLoop, Clock, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    server, loop, _clock, path = served
    deaf = connect(path)
    deaf.sendall(json.dumps({"cmd": "conntrack", "argv": ["-E"]}).encode())
    deaf.shutdown(socket.SHUT_WR)
    pump(loop)
    assert len(server.subscribers) == 1 and events_enabled(server)
    line = "    [NEW] udp      17 30 src=10.0.1.2 dst=198.51.100.2 sport=1 dport=2 " + "x" * 200
    monkeypatch.setattr(control_mod, "format_event", lambda ev: line)
    fake: list[CtEvent] = []
    monkeypatch.setattr(server.engine.table, "drain_events", lambda: fake)
    for _ in range(200):
        fake[:] = [SimpleNamespace(snapshot=None, conn=None)] * 100  # type: ignore[list-item]
        loop.poll_once(0)
        if not server.subscribers:
            break
    assert not server.subscribers and server.stats["dropped_listener"] == 1
    assert not events_enabled(server)  # no listener left: the table stops queueing events
    deaf.close()


def test_claim_path(tmp_path: Path) -> None:
    claim_path(str(tmp_path / "nothing"))
    regular = tmp_path / "file"
    regular.write_text("keep me")
    with pytest.raises(ControlPathError, match="not a socket"):
        claim_path(str(regular))
    assert regular.read_text() == "keep me"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(tmp_path / "live"))
    live.listen(1)
    with pytest.raises(ControlPathError, match="listening"):
        claim_path(str(tmp_path / "live"))
    assert (tmp_path / "live").exists()
    live.close()  # now stale: a socket file no one listens on
    claim_path(str(tmp_path / "live"))
    assert not (tmp_path / "live").exists()
    os.mkdir(tmp_path / "dir")
    with pytest.raises(ControlPathError):
        claim_path(str(tmp_path / "dir"))


def test_close_leaves_a_socket_that_is_no_longer_ours(served: tuple[ControlServer, EventLoop, Clock, Path]) -> None:
    server, _loop, _clock, path = served
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))  # someone else's socket at the path now
    server.close()
    assert path.exists()
    other.close()
    time.sleep(0)


def test_event_listeners_get_what_their_filters_select(served: tuple[ControlServer, EventLoop, Clock, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    server, loop, _clock, path = served
    said = request(loop, path, json.dumps({"cmd": "conntrack", "argv": ["-E", "-p", "foo"]}).encode())
    assert said == (b"conntrack v1.4.7 (conntrack-tools): `foo' unsupported protocol\n"
                    b"Try `conntrack -h' or 'conntrack --help' for more information.\n")
    tcp = connect(path)
    tcp.sendall(json.dumps({"cmd": "conntrack", "argv": ["-E", "-p", "tcp", "--dport", "80"]}).encode())
    tcp.shutdown(socket.SHUT_WR)
    pump(loop)
    assert len(server.subscribers) == 1

    def ct(proto: int, dport: int) -> SimpleNamespace:
        t = SimpleNamespace(proto=proto, src=1, dst=2, sport=1000, dport=dport)
        return SimpleNamespace(tuples=(t, t))

    events = [SimpleNamespace(snapshot=None, conn=ct(17, 80), text="udp"),
              SimpleNamespace(snapshot=ct(6, 80), conn=None, text="tcp80"),
              SimpleNamespace(snapshot=ct(6, 81), conn=None, text="tcp81")]
    monkeypatch.setattr(control_mod, "format_event", lambda ev: ev.text)
    monkeypatch.setattr(server.engine.table, "drain_events", lambda: events)
    loop.poll_once(0)
    assert tcp.recv(100) == b"tcp80\n"
    tcp.close()
