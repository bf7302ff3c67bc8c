"""The event loop and neighbour resolution, with fake ports and a fake engine (pure: no root needed).

Neighbour timings are the kernel's defaults (net.ipv4.neigh.default: retrans_time_ms 1000,
mcast_solicit 3, unres_qlen_bytes 212992).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

from natbox.adapters.loop import EventLoop, NeighResolver
from natbox.adapters.packet_socket import GSO_TCPV4, RxFrame
from natbox.wire.arp import parse_arp

MAC_A = bytes.fromhex("020000000101")
MAC_B = bytes.fromhex("020000000201")
PEER = bytes.fromhex("0a1b2c3d4e5f")
SERVER = (198 << 24) | (51 << 16) | (100 << 8) | 2


class FakePort:
    def __init__(self, name: str) -> None:
        self.ifname = name
        self.r, self.w = socket.socketpair()
        self.inbox: list[RxFrame] = []
        self.sent: list[tuple[bytes, int, int, bool]] = []

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

    def send(self, frame: bytes | bytearray, gso_type: int = 0, gso_size: int = 0, partial: bool = False) -> bool:
        self.sent.append((bytes(frame), gso_type, gso_size, partial))
        return True

    def close(self) -> None:
        self.r.close()
        self.w.close()


@dataclass
class Em:
    iface: str
    frame: bytes


@dataclass
class Out:
    emitted: list[Em] = field(default_factory=list)


class Swap:
    """Forwards a to b and b to a unchanged; `neigh` and `expired` for the resolver and timer tests."""

    def __init__(self) -> None:
        self.neigh: dict[tuple[str, int], bytes] = {}
        self.expired: list[float] = []
        self.seen: list[tuple[str, float]] = []
        self.next: list[Em] | None = None

    def receive(self, frame: bytes, iface: str, now: float) -> Out:
        self.seen.append((iface, now))
        if self.next is not None:
            out, self.next = self.next, None
            return Out(out)
        return Out([Em("b" if iface == "a" else "a", frame)])

    def expire(self, now: float) -> Out:
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
    resolver = NeighResolver(eng.neigh, {"a": (MAC_A, [((10 << 24) | (1 << 8) | 1, 24)]),
                                         "b": (MAC_B, [((198 << 24) | (51 << 16) | (100 << 8) | 1, 24)])})
    loop = EventLoop(eng, {"a": a, "b": b}, mtus={"a": 1500, "b": 1500}, batch=batch,
                     clock=lambda: clock[0], resolver=resolver)
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


def test_neighbour_resolution() -> None:
    loop, eng, a, b, clock = make()
    held = b"\x02\x00" + SERVER.to_bytes(4, "big") + MAC_B + b"\x08\x00" + bytes(40)
    eng.next = [Em("b", held)]
    a.push(tcp_frame(100))
    loop.poll_once(1.0)
    # the frame is held; one ARP request (broadcast, from the interface's address in that subnet)
    assert len(b.sent) == 1
    req = b.sent[0][0]
    assert req[:6] == b"\xff" * 6 and req[6:12] == MAC_B and req[12:14] == b"\x08\x06"
    arp = parse_arp(req[14:])
    assert arp is not None
    assert (arp.op, arp.sender_ip, arp.target_ip) == (1, (198 << 24) | (51 << 16) | (100 << 8) | 1, SERVER)
    # a retransmission after retrans_time (1 s)
    clock[0] += 1.0
    loop._neigh_timers(clock[0])
    assert len(b.sent) == 2
    # the reply arrives (the engine learns it): the held frame leaves with the real MAC
    eng.neigh[("b", SERVER)] = PEER
    eng.next = []
    b.push(b"arp reply")
    loop.poll_once(1.0)
    assert b.sent[-1][0] == PEER + held[6:]
    assert not loop.resolver.pending  # type: ignore[union-attr]
    loop.close()


def test_neighbour_failure_drops_after_three_requests() -> None:
    loop, eng, a, b, clock = make()
    held = b"\x02\x00" + SERVER.to_bytes(4, "big") + MAC_B + b"\x08\x00" + bytes(40)
    eng.next = [Em("b", held)]
    a.push(tcp_frame(100))
    loop.poll_once(1.0)
    for _ in range(3):
        clock[0] += 1.0
        loop._neigh_timers(clock[0])
    assert len(b.sent) == 3  # mcast_solicit = 3 requests in all
    assert loop.resolver is not None
    assert loop.resolver.stats["neigh_failed"] == 1 and loop.resolver.stats["neigh_failed_drop"] == 1
    assert not loop.resolver.pending
    loop.close()


def test_unresolved_queue_is_bounded() -> None:
    resolver = NeighResolver({}, {"b": (MAC_B, [(1, 24)])})
    assert resolver.unresolved("b", b"\x02\x00" + (5).to_bytes(4, "big") + bytes(8))
    assert not resolver.unresolved("b", b"\x02\x00" + (0x0A000005).to_bytes(4, "big") + bytes(8))  # off-link
    frame = b"\x02\x00" + (5).to_bytes(4, "big") + bytes(1500)
    for _ in range(200):
        resolver.hold("b", frame, (0, 0, False), 0.0)
    entry = resolver.pending[("b", 5)]
    assert isinstance(entry[2], int) and entry[2] <= 212992  # unres_qlen_bytes
    assert resolver.stats["neigh_unres_drop"] == 200 - 212992 // len(frame)


def test_expire_timer_and_stop() -> None:
    eng = Swap()
    a = FakePort("a")
    loop = EventLoop(eng, {"a": a}, expire_interval=0.05)
    t = threading.Timer(0.3, loop.stop)
    t.start()
    loop.run(duration=5)
    t.join()
    assert len(eng.expired) >= 2
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


class _Broken(Swap):
    def receive(self, frame: bytes, iface: str, now: float) -> Out:
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
