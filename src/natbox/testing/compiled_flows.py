"""What the compiled-flow differential tests of both families share (tests/engine/test_compiled_flows.py and
test_compiled_flows6.py): the flows, a driver's bookkeeping (sequence numbers, what the engine emitted and
dropped, the common events), the conntrack state compared, and an engine seen through its receive calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from natbox.engine.engine import Engine
from natbox.engine.output import Emitted, Output


@dataclass
class Flow:
    """One connection as its two ends see it: (address, port) of the initiator and of the responder, as
    addressed on the wire at each end (the responder's view is after NAT)."""

    proto: int
    client: tuple[int, int, bytes, str]  # address, port, MAC, interface the gateway receives it on
    server: tuple[int, int, bytes, str]
    c_dst: tuple[int, int]  # where the client sends to
    s_dst: tuple[int, int]  # where the server's replies go (the NATed client)
    seq: tuple[int, int] = (1000, 900000)


class FlowDriver:
    """Sends traffic to an engine, tracking each flow's sequence numbers as real ends would; a family's
    driver builds the segments and handles its own events (`apply` returns False for them)."""

    def __init__(self, engine: Engine, flows: list[Flow]) -> None:
        self.engine = engine
        self.flows = flows
        self.now = 1.0
        self.seq = [list(f.seq) for f in flows]
        self.out: list[object] = []

    def l3(self, flow: Flow, back: bool) -> tuple[int, int, int, int]:
        """(source, source port, destination, destination port) of a packet of `flow`, either way."""
        if back:
            return flow.server[0], flow.server[1], flow.s_dst[0], flow.s_dst[1]
        return flow.client[0], flow.client[1], flow.c_dst[0], flow.c_dst[1]

    def record(self, res: Output) -> None:
        """What one receive call emitted (frame and tail copied) and dropped; the clock moves on."""
        self.out.extend((e.iface, bytes(e.frame) + (b"" if e.tail is None else bytes(e.tail)), e.pkt_id, e.ct_id,
                         e.gso_type, e.gso_size, e.partial) for e in res.emitted)
        self.out.extend((d.pkt_id, d.reason, d.where, d.detail, d.ct_id) for d in res.dropped)
        self.now += 0.0001

    def segment(self, *args: Any, **kwargs: Any) -> None:
        """One packet of a flow, built and sent by the family's driver."""
        raise NotImplementedError

    def apply(self, ev: tuple[str, object]) -> bool:
        """The events both families have: a packet (`segment`'s arguments), time passing, a flow's entry
        deleted, the table flushed. False for any other."""
        kind, arg = ev
        if kind == "packet":
            assert isinstance(arg, tuple)
            self.segment(*arg)
        elif kind == "time":
            assert isinstance(arg, float)
            self.now += arg
        elif kind == "delete":
            assert isinstance(arg, int)
            f = self.flows[arg]
            for conn in list(self.engine.table):
                if conn.tuples[0].sport == f.client[1] and conn.tuples[0].proto == f.proto:
                    self.engine.table.delete(conn, self.now, reason="conntrack -D")
        elif kind == "flush":
            for conn in list(self.engine.table):
                self.engine.table.delete(conn, self.now, reason="conntrack -F")
        else:
            return False
        return True

    def conntrack_rows(self) -> list[object]:
        """Every entry with its TCP window-tracking state, timeout and counters, by ct id."""
        rows: list[object] = []
        for c in sorted(self.engine.table, key=lambda c: c.ct_id):
            row: list[object] = [c.ct_id, c.tuples[0], c.tuples[1], c.status, c.timeout, c.accounted]
            if c.accounted:
                row += [c.acct_packets, c.acct_bytes]
            if c.tcp is not None:
                t = c.tcp
                row += [t.state, t.last_dir, t.last_index, t.last_seq, t.last_ack, t.last_end, t.last_win, t.retrans]
                row += [(s.td_end, s.td_maxend, s.td_maxwin, s.td_maxack, s.td_scale, s.flags) for s in t.seen]
            rows.append(row)
        return rows


class Recorder:
    """An engine seen through its `receive` calls: what they emitted, how many, and how many took the slow
    path (which leaves its Output in the engine's PathState; a compiled flow returns one of its own).
    Observed from outside: a compiled build's Engine methods cannot be replaced."""

    def __init__(self, engine: Engine, captured: list[Emitted]) -> None:
        self.engine, self.captured, self.calls, self.slow = engine, captured, 0, 0

    def receive(self, frame: bytes | bytearray | memoryview, iface: str, now: float, **kw: Any) -> Output:
        out = self.engine.receive(frame, iface, now, **kw)
        self.calls += 1
        self.slow += out is self.engine._st.out
        self.captured.extend(out.emitted)
        return out
