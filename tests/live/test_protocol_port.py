"""gateway.ports.ProtocolPort (--offload's per-ethertype sockets polled as one descriptor), with fake sockets
(pure: no root needed)."""

from __future__ import annotations

from tests.live.test_loop import FakePort

from natbox.gateway.ports import ProtocolPort
from natbox.wire.ethernet import ETH_P_ARP, ETH_P_IP, ETH_P_IPV6


class CountingPort(FakePort):
    """A FakePort that counts its reads (a ring socket's empty reads count towards its stall recovery)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reads = 0
        self.stats: dict[str, int] = {}

    def recv_batch(self, max_frames: int) -> list[tuple[bytes | memoryview, int, int, bool]]:
        self.reads += 1
        return super().recv_batch(max_frames)


def test_only_readable_sockets_are_read() -> None:
    """IPv6 (or ARP) traffic alone wakes the port, and only the IPv6 socket is read: an IPv4 ring read that
    finds nothing each time made the ring look stuck after 256 of them and tore it down."""
    v4, arp, v6 = CountingPort("lan0"), CountingPort("lan0"), CountingPort("lan0")
    port = ProtocolPort("lan0", {ETH_P_IP: v4, ETH_P_ARP: arp, ETH_P_IPV6: v6})  # type: ignore[dict-item]
    try:
        for i in range(300):
            v6.push(b"v6 frame %d" % i)
            assert [f[0] for f in port.recv_batch(64)] == [b"v6 frame %d" % i]
        assert (v4.reads, arp.reads, v6.reads) == (0, 0, 300)
        v4.push(b"v4 frame")
        v6.push(b"v6 frame")
        assert [f[0] for f in port.recv_batch(64)] == [b"v4 frame", b"v6 frame"]  # IPv4's first
        assert port.recv_batch(64) == []  # nothing readable: nothing read
        assert (v4.reads, arp.reads, v6.reads) == (1, 0, 301)
    finally:
        port.close()
