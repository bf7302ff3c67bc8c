"""engine/offload_model.py: the offline model of the --offload datapath in front of an engine (the gateway of
tests/engine/test_offload.py): carried packets leave as the slow path sends them, skip the rules, are counted
into the ct, and the flow comes back on FIN, idleness, not on a rule change."""

from __future__ import annotations

from tests.engine.test_offload import FILTER, NAT, Clock, _client, _engine, _ruleset, _server

from natbox.engine.offload import OFFLOAD_TIMEOUT
from natbox.engine.offload_model import ModelDatapath
from natbox.netfilter import CtStatus
from natbox.wire import tcp

ACCEPT_ALL = FILTER.replace("COMMIT", "-A FORWARD -j ACCEPT\nCOMMIT")


def _handshake(dp: ModelDatapath, clock: Clock) -> None:
    for pkt in (_client(0, 0, tcp.SYN), _server(0, 1, tcp.SYN | tcp.ACK), _client(1, 1, tcp.ACK),
                _client(1, 1, tcp.ACK | tcp.PSH, b"hello"), _server(1, 6, tcp.ACK | tcp.PSH, b"world")):
        out = dp.receive(*pkt, clock.step())
        assert len(out.emitted) == 1


def test_carried_packets_leave_as_the_slow_path_sends_them_and_skip_the_rules() -> None:
    engine, clock = _engine(rules=NAT + ACCEPT_ALL), Clock()
    plain, plain_clock = _engine(rules=NAT + ACCEPT_ALL, offload=False), Clock()
    dp = ModelDatapath(engine)
    _handshake(dp, clock)
    for pkt in (_client(0, 0, tcp.SYN), _server(0, 1, tcp.SYN | tcp.ACK), _client(1, 1, tcp.ACK),
                _client(1, 1, tcp.ACK | tcp.PSH, b"hello"), _server(1, 6, tcp.ACK | tcp.PSH, b"world")):
        plain.receive(*pkt, plain_clock.step())
    assert list(dp.installed) == [1]
    rule = engine.rules.tables["filter"].chains["FORWARD"].rules[1]
    counted = rule.packets
    for seq in range(3):
        for pkt in (_client(6 + seq, 6, tcp.ACK, b"x"), _server(6, 7 + seq, tcp.ACK, b"y")):
            out = dp.receive(*pkt, clock.step(), trace=True)
            (sent,) = out.emitted
            (expected,) = plain.receive(*pkt, plain_clock.step()).emitted
            assert (sent.iface, bytes(sent.frame)) == (expected.iface, bytes(expected.frame))
            assert next(step for _pid, step in out.trace).startswith("offloaded: ct #1 ")
    assert rule.packets == counted and dp.carried[0] == 6
    conn = next(iter(engine.table.live(clock.now)))
    assert conn.acct_packets == [3 + 3, 2 + 3] and conn.status & CtStatus.OFFLOAD
    # a rule change leaves the flow offloaded and carried (the kernel's flowtable too)
    engine.rules = _ruleset(NAT + ACCEPT_ALL)
    assert len(dp.receive(*_client(9, 6, tcp.ACK, b"x"), clock.step()).emitted) == 1 and dp.carried[0] == 7
    # the FIN goes up: the flow comes back and the rules see it
    out = dp.receive(*_client(10, 6, tcp.ACK | tcp.FIN), clock.step(), trace=True)
    assert next(step for _pid, step in out.trace).startswith("flow offload: ct #1 back to the slow path (fin)")
    assert not dp.installed and not conn.status & CtStatus.OFFLOAD
    assert dp.events[-1][1].endswith("the datapath carried 4 + 3 packets of it")


def test_an_idle_flow_comes_back_at_a_timer_run() -> None:
    engine, clock = _engine(), Clock()
    dp = ModelDatapath(engine)
    _handshake(dp, clock)
    assert dp.installed
    engine.handle_timers(clock.step(OFFLOAD_TIMEOUT + 1))
    dp.sync(None, clock.now)
    assert not dp.installed and "back to the slow path (idle)" in dp.events[-1][1]
    out = dp.receive(*_client(6, 6, tcp.ACK, b"x"), clock.step(), trace=True)
    assert not any(step.startswith("offloaded:") for _pid, step in out.trace)  # the engine's again
