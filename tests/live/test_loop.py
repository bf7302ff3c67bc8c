"""The event loop and neighbour resolution, with fake ports and a fake engine (pure: no root needed).

Neighbour timings are the kernel's defaults (net.ipv4.neigh.default: retrans_time_ms 1000,
mcast_solicit 3, unres_qlen_bytes 212992).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from natbox.adapters.vnet import GSO_TCPV4, RxFrame
from natbox.gateway.loop import EventLoop

MAC_A = bytes.fromhex("020000000101")
MAC_B = bytes.fromhex("020000000201")
PEER = bytes.fromhex("0a1b2c3d4e5f")


class FakePort:
    def __init__(self, name: str) -> None:
        self.ifname = name
        self.r, self.w = socket.socketpair()
        self.inbox: list[RxFrame] = []
        self.sent: list[tuple[bytes, int, int, bool]] = []
        self.ready: list[bool] = []

    def push(self, frame: bytes, gso_type: int = 0, gso_size: int = 0, partial: bool = False) -> None:
        self.inbox.append((frame, gso_type, gso_size, partial))
        self.w.send(b"x")

    def fileno(self) -> int:
        return self.r.fileno()

    def recv_batch(self, max_frames: int) -> list[RxFrame]:
        out, self.inbox = self.inbox[:max_frames], self.inbox[max_frames:]
        if not self.inbox:
            self.r.setblocking(False)
            try:
                while self.r.recv(4096):
                    pass
            except BlockingIOError:
                pass
        return out

    def send(self, frame: bytes | bytearray, gso_type: int = 0, gso_size: int = 0, partial: bool = False,
             csum_ready: bool = False, tail: memoryview | None = None) -> bool:
        self.sent.append((bytes(frame) + (b"" if tail is None else bytes(tail)), gso_type, gso_size, partial))
        self.ready.append(csum_ready)
        return True

    def close(self) -> None:
        self.r.close()
        self.w.close()


@dataclass
class Em:
    """An Emitted (natbox.engine.output): the frame and how it leaves."""

    iface: str
    frame: bytes
    gso_type: int = 0
    gso_size: int = 0
    partial: bool = False
    tail: memoryview | None = None


@dataclass
class Out:
    emitted: list[Em] = field(default_factory=list)


class Swap:
    """Forwards a to b and b to a unchanged; `expired` for the timer tests."""

    def __init__(self) -> None:
        self.neigh: dict[tuple[str, int], bytes] = {}
        self.expired: list[float] = []
        self.seen: list[tuple[str, float]] = []
        self.next: list[Em] | None = None

    def receive(self, frame: bytes | memoryview, iface: str, now: float, *, gso_type: int = 0, gso_size: int = 0,
                partial: bool = False) -> Out:
        """A GSO packet leaves whole, its checksum as partial as it came (what the engine does when its
        segments fit)."""
        self.seen.append((iface, now))
        if self.next is not None:
            out, self.next = self.next, None
            return Out(out)
        return Out([Em("b" if iface == "a" else "a", bytes(frame), gso_type, gso_size, partial)])

    def next_deadline(self) -> float | None:
        return None

    def handle_timers(self, now: float) -> Out:
        self.expired.append(now)
        return Out()


def tcp_frame(size: int) -> bytes:
    ip = bytes([0x45, 0, (size - 14) >> 8, (size - 14) & 0xFF, 0, 1, 0x40, 0, 64, 6, 0, 0,
                10, 0, 1, 2, 198, 51, 100, 2])
    tcp = bytes([0x9C, 0x40, 0, 80]) + bytes(8) + bytes([0x50, 0x10, 0xFF, 0xFF, 0, 0, 0, 0])
    return PEER + MAC_A + b"\x08\x00" + ip + tcp + bytes(size - 54)


def make(batch: int = 64) -> tuple[EventLoop, Swap, FakePort, FakePort, list[float]]:
    clock = [100.0]
    eng = Swap()
    a, b = FakePort("a"), FakePort("b")
    loop = EventLoop(eng, {"a": a, "b": b}, mtus={"a": 1500, "b": 1500}, batch=batch, clock=lambda: clock[0])
    return loop, eng, a, b, clock


def test_forwards_and_batches() -> None:
    loop, eng, a, b, _clock = make(batch=4)
    for i in range(10):
        a.push(tcp_frame(100 + i))
    assert loop.poll_once(1.0) == 4  # at most `batch` frames per port per wakeup
    assert loop.poll_once(1.0) == 4
    assert loop.poll_once(1.0) == 2
    assert [len(f) for f, *_ in b.sent] == [100 + i for i in range(10)]
    assert all(iface == "a" for iface, _ in eng.seen)
    loop.close()


def test_gso_kept_only_for_oversize_frames() -> None:
    loop, _eng, a, b, _clock = make()
    a.push(tcp_frame(30000), GSO_TCPV4, 1448, True)
    a.push(tcp_frame(1000), GSO_TCPV4, 1448, True)  # fits the MTU: one wire packet
    a.push(tcp_frame(3000))  # too big and no GSO info: the kernel would refuse it
    loop.poll_once(1.0)
    assert [(len(f), gt, gs, p) for f, gt, gs, p in b.sent] == [(30000, GSO_TCPV4, 1448, True),
                                                                 (1000, 0, 0, True)]
    assert loop.stats["tx_oversize"] == 1
    loop.close()


def test_gso_size_capped_by_out_mtu() -> None:
    loop, _eng, a, b, _clock = make()
    loop.mtus["b"] = 1400
    a.push(tcp_frame(30000), GSO_TCPV4, 1448, True)
    loop.poll_once(1.0)
    assert b.sent[0][2] == 1400 - 20 - 20  # each segment's IP packet fits the MTU
    loop.close()


class WithTimers(Swap):
    """An engine whose timers fall due `period` seconds after each run (the loop must wake for them)."""

    def __init__(self, period: float) -> None:
        super().__init__()
        self.period = period
        self.due = time.monotonic() + period

    def next_deadline(self) -> float | None:
        return self.due

    def handle_timers(self, now: float) -> Out:
        self.expired.append(now)
        self.due = now + self.period
        return Out()


def test_timers_run_when_due_and_stop() -> None:
    eng = WithTimers(0.05)
    loop = EventLoop(eng, {"a": FakePort("a")})
    t = threading.Timer(0.3, loop.stop)
    t.start()
    loop.run(duration=5)
    t.join()
    assert len(eng.expired) >= 2
    assert all(now >= 0 for now in eng.expired)
    loop.close()


def test_timers_run_only_when_due() -> None:
    eng = WithTimers(0.1)
    loop = EventLoop(eng, {"a": FakePort("a")})
    loop.run(duration=0.55)
    assert 3 <= len(eng.expired) <= 6  # every 0.1 s, although the loop's select timeout is 0.5 s
    assert all(b - a >= 0.1 for a, b in zip(eng.expired, eng.expired[1:], strict=False))
    loop.close()


def test_no_deadline_no_timers() -> None:
    eng = Swap()
    loop = EventLoop(eng, {"a": FakePort("a")})
    loop.run(duration=0.3)
    assert eng.expired == []
    loop.close()


def test_oversize_frame_without_gso_is_reported_once() -> None:
    loop, _eng, a, _b, _clock = make()
    said: list[str] = []
    loop.warn = said.append
    a.push(tcp_frame(3000))
    a.push(tcp_frame(3000))
    a.push(tcp_frame(30000), GSO_TCPV4, 1448, True)  # described by GSO fields: fine
    loop.poll_once(1.0)
    assert loop.stats["rx_oversize"] == 2
    assert len(said) == 1 and "a: a 3000-byte frame without GSO information" in said[0]
    loop.close()


class TruncatingPort(FakePort):
    """A port whose receive ring cuts frames short (PacketSocket without vnet headers: 4 KiB slots)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.on_truncated: Callable[[int], None] | None = None


def test_a_super_packet_the_port_truncated_is_reported_as_oversize() -> None:
    a, b = TruncatingPort("a"), FakePort("b")
    loop = EventLoop(Swap(), {"a": a, "b": b}, mtus={"a": 1500, "b": 1500})
    said: list[str] = []
    loop.warn = said.append
    assert a.on_truncated is not None  # the loop listens
    a.on_truncated(1400)  # within the MTU (a slot smaller than a jumbo MTU): the port's own counter says it
    assert loop.stats["rx_oversize"] == 0 and said == []
    a.on_truncated(7254)
    a.on_truncated(7254)
    assert loop.stats["rx_oversize"] == 2
    assert len(said) == 1 and "a: a 7254-byte frame without GSO information (mtu 1500)" in said[0]
    loop.close()


class WithOffloads(Swap):
    """An engine taking the packet's offload metadata and emitting its own per frame."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list[tuple[int, int, bool]] = []

    def receive(self, frame: bytes | memoryview, iface: str, now: float, *, gso_type: int = 0, gso_size: int = 0,
                partial: bool = False) -> Out:
        self.got.append((gso_type, gso_size, partial))
        # a GSO packet leaves as ordinary frames here, one of them partial (as after software segmentation)
        return Out([Em("b", bytes(frame[:1000]), 0, 0, True), Em("b", bytes(frame[:1000]), 0, 0, False)])


def test_engine_offload_metadata_is_passed_and_emitted_own_is_used() -> None:
    eng = WithOffloads()
    a, b = FakePort("a"), FakePort("b")
    loop = EventLoop(eng, {"a": a, "b": b}, mtus={"a": 1500, "b": 1500})
    a.push(tcp_frame(30000), GSO_TCPV4, 1448, True)
    loop.poll_once(1.0)
    assert eng.got == [(GSO_TCPV4, 1448, True)]
    # each frame with its own metadata (not the input's GSO fields), the engine's partial field kept as is
    assert [(len(f), gt, gs, p) for f, gt, gs, p in b.sent] == [(1000, 0, 0, True), (1000, 0, 0, False)]
    assert b.ready == [True, True]
    loop.close()


class _Broken(Swap):
    def receive(self, frame: bytes | memoryview, iface: str, now: float, *, gso_type: int = 0, gso_size: int = 0,
                partial: bool = False) -> Out:
        raise ValueError("engine bug")


def test_engine_error_does_not_stop_the_loop() -> None:
    a, b = FakePort("a"), FakePort("b")
    loop = EventLoop(_Broken(), {"a": a, "b": b})
    said: list[str] = []
    loop.warn = said.append
    a.push(tcp_frame(100))
    a.push(tcp_frame(100))
    loop.poll_once(1.0)
    a.push(tcp_frame(100))
    loop.poll_once(1.0)
    assert loop.stats["engine_error"] == 2
    assert len(said) == 1 and "engine bug" in said[0]
    loop.close()


class _Down(FakePort):
    """A packet socket whose device went down: the next read fails with ENETDOWN (packet_notifier's sk_err)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.errors = 0

    def recv_batch(self, max_frames: int) -> list[RxFrame]:
        if self.errors:
            self.errors -= 1
            super().recv_batch(max_frames)
            raise OSError(100, "Network is down")
        return super().recv_batch(max_frames)


def test_a_read_error_on_a_port_is_counted_and_the_loop_goes_on() -> None:
    a, b = _Down("a"), FakePort("b")
    loop = EventLoop(Swap(), {"a": a, "b": b})
    said: list[str] = []
    loop.warn = said.append
    a.errors = 2
    for _ in range(2):
        a.push(tcp_frame(100))
        loop.poll_once(1.0)
    a.push(tcp_frame(100))
    loop.poll_once(1.0)
    assert loop.stats["rx_error"] == 2
    assert said == ["warning: a: Network is down"]  # once for the two in a row
    assert len(b.sent) == 1  # the frame after the errors was forwarded
    loop.close()
    a.close()
    b.close()
