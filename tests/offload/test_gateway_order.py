"""The gateway's side of a flow that comes back (pure: the engine, the event loop and GatewayOffload as the
gateway wires them; the datapath and the ports are played by the test).

A FIN brings an offloaded flow back to natbox. The kernel's flowtable tears the flow down in the datapath
itself before the FIN goes on (nf_flow_tcp_state), so the peer's answer to that FIN meets conntrack. natbox's
datapath must likewise lose the flow's entries before the FIN leaves natbox: removed only at the end of the
wakeup, the answer can reach the BPF program first and be carried past conntrack."""

from __future__ import annotations

from tests.engine.test_offload import _client, _engine, _server
from tests.live.test_loop import FakePort

from natbox.gateway.loop import EventLoop
from natbox.gateway.offload import GatewayOffload
from natbox.offload.entry import FlowStats, OffloadAction, OffloadKey, offload_entry
from natbox.wire import tcp

IFINDEX = {"lan0": 4, "wan0": 5}


class Datapath:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.entries: dict[OffloadKey, OffloadAction] = {}

    def attach(self, ifname: str) -> None:
        pass

    def install(self, key: OffloadKey, action: OffloadAction) -> None:
        self.entries[key] = action
        self.log.append("install")

    def remove(self, key: OffloadKey) -> None:
        del self.entries[key]
        self.log.append("remove")

    def stats(self) -> dict[OffloadKey, FlowStats]:
        return {}

    def close(self) -> None:
        pass


class Port(FakePort):
    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__(name)
        self.log = log

    def send(self, frame: bytes | bytearray, gso_type: int = 0, gso_size: int = 0, partial: bool = False,
             csum_ready: bool = False, tail: memoryview | None = None) -> bool:
        flags = frame[14 + 20 + 13]
        self.log.append(f"send {self.ifname} " + ("FIN" if flags & tcp.FIN else "ACK"))
        return super().send(frame, gso_type, gso_size, partial, csum_ready, tail)


def test_the_entries_of_a_flow_a_fin_brought_back_go_before_the_fin_leaves() -> None:
    log: list[str] = []
    engine = _engine()
    ports = {name: Port(name, log) for name in IFINDEX}
    loop = EventLoop(engine, dict(ports), clock=lambda: 100.0)
    datapath = Datapath(log)
    offload = GatewayOffload(engine, datapath, offload_entry, IFINDEX.__getitem__, clock=lambda: 100.0)
    offload.drive(loop)
    try:
        for frame, iface in (_client(0, 0, tcp.SYN), _server(0, 1, tcp.SYN | tcp.ACK), _client(1, 1, tcp.ACK),
                             _client(1, 1, tcp.ACK | tcp.PSH, b"hello"), _server(1, 6, tcp.ACK),
                             _server(1, 6, tcp.ACK | tcp.PSH, b"world")):
            ports[iface].push(frame)
            assert loop.poll_once(0.5) == 1
        assert log.count("install") == 2 and len(datapath.entries) == 2, log  # both directions carried
        del log[:]
        ports["lan0"].push(_client(6, 6, tcp.ACK | tcp.FIN)[0])
        assert loop.poll_once(0.5) == 1
        assert log == ["remove", "remove", "send wan0 FIN"], log
        assert not datapath.entries and not offload.installed
    finally:
        loop.close()
        for port in ports.values():
            port.close()
