"""The ct timeout of an offloaded flow (engine/offload.py, nf_flow_table_core.c of Linux 6.18): a day while the
flowtable holds it (`flow_offload_add`, `nf_flow_table_extend_ct_timeout`), no timeout in `conntrack -L`, and
`flow_offload_fixup_ct`'s when it comes back: the state's own timeout, less the flowtable timeout after an idle
teardown, when that is sooner.

The gateway of tests/engine/test_offload.py; here the flow is offloaded by its last packet so that no packet
reaches the slow path afterwards (as with a datapath carrying every one of them).
"""

from __future__ import annotations

import pytest
from tests.engine.test_offload import Clock, _client, _engine, _send, _server, _udp

from natbox.conntrack.conn import Conn
from natbox.conntrack.format import format_conntrack
from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.offload import EXTEND_BELOW, NF_CT_DAY, OFFLOAD_TIMEOUT, OffloadAdd, OffloadDel
from natbox.netfilter import CtStatus
from natbox.wire import tcp


def _tcp_offloaded(engine: Engine, clock: Clock) -> Conn:
    """Handshake, client data, the server's ACK: that last packet offloads the flow."""
    for pkt in (_client(0, 0, tcp.SYN), _server(0, 1, tcp.SYN | tcp.ACK), _client(1, 1, tcp.ACK),
                _client(1, 1, tcp.ACK | tcp.PSH, b"hello"), _server(1, 6, tcp.ACK)):
        _send(engine, clock, pkt)
    (req,) = engine.offload_requests()
    (conn,) = engine.table.live(clock.now)
    assert isinstance(req, OffloadAdd) and req.ct_id == conn.ct_id
    return conn


def _udp_offloaded(engine: Engine, clock: Clock, *, assured: bool) -> Conn:
    """A request, its reply, two more requests (the second offloads it); those past the stream delay: ASSURED."""
    _send(engine, clock, _udp(True))
    _send(engine, clock, _udp(False))
    if assured:
        clock.step(3.0)
    _send(engine, clock, _udp(True))
    _send(engine, clock, _udp(True))
    requests = engine.offload_requests()
    (conn,) = engine.table.live(clock.now)
    assert [type(r) for r in requests] == [OffloadAdd] and bool(conn.status & CtStatus.ASSURED) == assured
    return conn


def _come_back(engine: Engine, clock: Clock, conn: Conn, reason: str) -> None:
    """Bring the flow back: a route change (at once) or the flowtable's idle timeout."""
    if reason == "route":
        engine.handle_timers(clock.step(10.0))
        engine.add_address("wan0", parse_addr("198.51.100.7"), 24)
    else:
        engine.handle_timers(clock.step(OFFLOAD_TIMEOUT))
    assert engine.offload_requests() == [OffloadDel(conn.ct_id, reason)]
    assert not conn.status & CtStatus.OFFLOAD


def test_an_offloaded_tcp_ct_is_held_at_a_day_and_listed_without_a_timeout() -> None:
    engine, clock = _engine(acct=False), Clock()
    conn = _tcp_offloaded(engine, clock)
    offloaded_at = clock.now
    assert conn.timeout == pytest.approx(offloaded_at + NF_CT_DAY)
    assert format_conntrack(conn, clock.now) == (
        "tcp      6 src=10.0.1.2 dst=198.51.100.2 sport=42012 dport=5001 "
        "src=198.51.100.2 dst=198.51.100.1 sport=5001 dport=42012 [OFFLOAD] mark=0 use=2")
    # the datapath's packets keep the flow alive; the ct's day is not refreshed by them
    engine.offload_stats(conn.ct_id, 0, 100, 150000, clock.now + 5)
    assert conn.timeout == pytest.approx(offloaded_at + NF_CT_DAY)
    # the gc gives it a day again once less than five minutes are left (nf_flow_table_extend_ct_timeout)
    late = offloaded_at + NF_CT_DAY - EXTEND_BELOW - 1
    engine.offload_stats(conn.ct_id, 0, 200, 300000, late)
    engine.handle_timers(clock.step(late - clock.now))
    assert conn.timeout == pytest.approx(offloaded_at + NF_CT_DAY)  # 301 s left: not yet
    engine.offload_stats(conn.ct_id, 0, 300, 450000, late + 2)
    engine.handle_timers(clock.step(2.0))
    assert conn.timeout == pytest.approx(clock.now + NF_CT_DAY) and conn.status & CtStatus.OFFLOAD


@pytest.mark.parametrize(("reason", "established", "left"), [
    ("route", 432000, NF_CT_DAY - 10),  # ESTABLISHED's 5 days are more than the day left: kept
    ("idle", 432000, NF_CT_DAY - OFFLOAD_TIMEOUT),
    ("route", 600, 600),  # a shorter established timeout (the sysctl): it is sooner, it applies
    ("idle", 600, 600 - OFFLOAD_TIMEOUT)])  # idle for the flowtable's 30 s already: less those
def test_a_tcp_flow_that_comes_back_gets_its_states_timeout_when_sooner(reason: str, established: int,
                                                                       left: float) -> None:
    engine, clock = _engine(acct=False), Clock()
    engine.cfg.tcp_timeout_established = established
    conn = _tcp_offloaded(engine, clock)
    _come_back(engine, clock, conn, reason)
    assert conn.timeout - clock.now == pytest.approx(left)
    assert format_conntrack(conn, clock.now).startswith(f"tcp      6 {int(left)} ESTABLISHED src=10.0.1.2 ")
    assert format_conntrack(conn, clock.now).endswith("[ASSURED] mark=0 use=1")


@pytest.mark.parametrize("assured", [False, True])
@pytest.mark.parametrize(("reason", "left"), [("route", 120), ("idle", 120 - OFFLOAD_TIMEOUT)])
def test_a_udp_flow_that_comes_back_gets_the_replied_timeout_assured_or_not(assured: bool, reason: str,
                                                                          left: float) -> None:
    """UDP_CT_REPLIED's timeout (udp_timeout_stream) since a reply was seen; ASSURED does not matter and is not
    given by the offload."""
    engine, clock = _engine(acct=False), Clock()
    conn = _udp_offloaded(engine, clock, assured=assured)
    assert conn.timeout == pytest.approx(clock.now + NF_CT_DAY)
    assert format_conntrack(conn, clock.now).startswith("udp      17 src=10.0.1.2 ")  # no timeout while offloaded
    _come_back(engine, clock, conn, reason)
    assert conn.timeout - clock.now == pytest.approx(left)
    listed = format_conntrack(conn, clock.now)
    assert listed.startswith(f"udp      17 {int(left)} src=10.0.1.2 dst=198.51.100.2 sport=4000 dport=53 ")
    assert ("[ASSURED]" in listed) == assured


def test_a_refused_flow_keeps_the_timeout_it_had_before_the_offload() -> None:
    """flow_offload_add failing never gave the ct its day."""
    engine, clock = _engine(acct=False), Clock()
    engine.cfg.tcp_timeout_established = 600
    conn = _tcp_offloaded(engine, clock)
    engine.offload_refused(conn.ct_id)
    assert conn.timeout == pytest.approx(clock.now + 600)
