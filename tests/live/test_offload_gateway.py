"""The gateway's side of --offload (natbox.gateway.offload) against an in-process datapath: requests become
map entries, counters are folded into the cts, entries go when their flows come back, and what cannot be
installed stays on natbox's path. No root: the datapath is a dict; the entries are the real ones
(natbox.offload.entry.offload_entry of the engine's plans)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from tests.engine.test_offload import CLIENT, GW_WAN, SPORT, Clock, _client, _engine, _establish, _send, _server

from natbox.conntrack.format import format_conntrack
from natbox.engine.engine import Engine
from natbox.gateway.offload import FULL_RETRIES, GatewayOffload
from natbox.netfilter import CtStatus
from natbox.offload.entry import FlowStats, OffloadAction, OffloadKey, offload_entry
from natbox.wire import tcp
from natbox.wire.layout import ETH_HDR_LEN
from natbox.wire.views import Ipv4View

IFINDEX = {"lan0": 11, "wan0": 12}


class FakeDatapath:
    """The map as a dict: what `install` wrote, counters the test sets."""

    def __init__(self) -> None:
        self.entries: dict[OffloadKey, OffloadAction] = {}
        self.counters: dict[OffloadKey, FlowStats] = {}
        self.attached: list[str] = []
        self.closed = False
        self.capacity: int | None = None  # entries the map takes (None: any number)
        self.calls = 0  # install calls

    def attach(self, ifname: str) -> None:
        self.attached.append(ifname)

    def install(self, key: OffloadKey, action: OffloadAction) -> None:
        self.calls += 1
        if self.capacity is not None and len(self.entries) >= self.capacity and key not in self.entries:
            raise OSError(errno.E2BIG, "Argument list too long")  # what the kernel says for a full hash map
        self.entries[key] = action
        self.counters.setdefault(key, FlowStats(0, 0, 0))

    def remove(self, key: OffloadKey) -> None:
        self.entries.pop(key, None)
        self.counters.pop(key, None)

    def stats(self) -> dict[OffloadKey, FlowStats]:
        return dict(self.counters)

    def close(self) -> None:
        self.closed = True


def _gateway(engine: Engine, clock: Clock) -> tuple[GatewayOffload[OffloadKey, OffloadAction], FakeDatapath]:
    dp = FakeDatapath()
    return GatewayOffload(engine, dp, offload_entry, lambda name: IFINDEX.get(name, 0), clock=lambda: clock.now), dp


def test_an_offloaded_flow_is_installed_both_ways_counted_and_removed_on_fin() -> None:
    engine, clock = _engine(), Clock()
    gw, dp = _gateway(engine, clock)
    conn = _establish(engine, clock)
    gw.sync()
    assert len(dp.entries) == 2 and gw.installed == {conn.ct_id: tuple(dp.entries)}
    orig = next(k for k in dp.entries if k.ifindex == IFINDEX["lan0"])
    assert (orig.proto, orig.sport, orig.dport) == (6, SPORT, 5001)
    assert dp.entries[orig].oif == IFINDEX["wan0"]
    # the datapath forwards 100 packets of 1500 bytes: folded into the ct, the timeout refreshed
    dp.counters[orig] = FlowStats(100, 150_000, int((clock.now + 0.5) * 1e9))
    gw.handle_timers(clock.step(1.0))
    assert conn.acct_packets[0] == 103 and conn.acct_bytes[0] == 150_125
    assert "[OFFLOAD]" in format_conntrack(conn, clock.now)
    report = gw.report()
    assert "1 flows offloaded, 2 map entries" in report and "original packets=100 bytes=150000" in report
    # the FIN comes up: the entries go, what they counted last is folded first
    dp.counters[orig] = FlowStats(120, 180_000, int((clock.now + 0.2) * 1e9))
    _send(engine, clock, _client(1_000_006, 6, tcp.ACK | tcp.FIN))
    gw.sync()
    assert not dp.entries and not gw.installed
    assert conn.acct_packets[0] == 124  # 103 + 20 folded + the FIN itself
    assert conn.tcp is not None and conn.timeout < clock.now + 300  # FIN_WAIT's, not refreshed by the fold
    assert "back to natbox (fin)" in gw.report()
    gw.close()
    assert dp.closed


class RefusingDatapath(FakeDatapath):
    def install(self, key: OffloadKey, action: OffloadAction) -> None:
        self.calls += 1
        raise OSError(errno.EPERM, "Operation not permitted")


def test_a_flow_the_datapath_cannot_take_stays_natbox_s() -> None:
    engine, clock = _engine(), Clock()
    dp = RefusingDatapath()
    gw = GatewayOffload(engine, dp, offload_entry, lambda name: IFINDEX.get(name, 0), clock=lambda: clock.now)
    conn = _establish(engine, clock)
    gw.sync()
    assert not dp.entries and not gw.installed
    assert not conn.status & CtStatus.OFFLOAD  # handed back: the engine keeps forwarding it
    assert gw.stats["errors"] == 1 and "installing failed" in gw.last_error and gw.stats["full"] == 0
    for _ in range(5):  # never offered again: one try in all
        _send(engine, clock, _client(11, 11, tcp.ACK))
        gw.sync()
    assert dp.calls == 1


def _forwarded_natted(engine: Engine, clock: Clock, dport: int) -> None:
    """Two data segments of the connection to `dport` and two ACKs back go through natbox, NATed both ways."""
    for _ in range(2):
        frame, iface = _client(11, 11, tcp.ACK, b"data", dport=dport)
        (sent,) = engine.receive(frame, iface, clock.step()).emitted
        assert sent.iface == "wan0" and Ipv4View(sent.frame, ETH_HDR_LEN).saddr == GW_WAN
    for _ in range(2):
        frame, iface = _server(11, 15, tcp.ACK, sport=dport)
        (sent,) = engine.receive(frame, iface, clock.step()).emitted
        assert sent.iface == "lan0" and Ipv4View(sent.frame, ETH_HDR_LEN).daddr == CLIENT


def test_a_full_map_leaves_new_flows_on_natbox_s_path_counted_and_offers_them_again_when_room_is_made() -> None:
    engine, clock = _engine(), Clock()
    gw, dp = _gateway(engine, clock)
    dp.capacity = 2  # one flow
    first = _establish(engine, clock)
    gw.sync()
    assert first.ct_id in gw.installed and dp.calls == 2
    second = _establish(engine, clock, dport=5002)
    gw.sync()  # the second entry pair does not fit: E2BIG
    assert gw.full and gw.stats["full"] == 1 and gw.stats["errors"] == 0 and dp.calls == 3
    assert not second.status & CtStatus.OFFLOAD and second.ct_id not in gw.installed
    _forwarded_natted(engine, clock, 5002)  # natbox forwards it, NAT and all
    # while full, no install is even tried: each new flow counted, none costs a system call
    for dport in (5003, 5004, 5005):
        _establish(engine, clock, dport=dport)
        gw.sync()
    assert dp.calls == 3 and gw.stats["full"] == 4
    assert "full 4" in gw.report()
    for _ in range(3):  # the refused flows' packets ask nothing
        _forwarded_natted(engine, clock, 5002)
        gw.sync()
    assert dp.calls == 3
    # the first flow ends: its entries go, the oldest waiting flow is offered again and its next packet installs it
    engine.table.delete(first, clock.now)
    gw.sync()
    assert (gw.full, dp.calls) == (False, 3)
    _forwarded_natted(engine, clock, 5002)
    gw.sync()
    assert second.status & CtStatus.OFFLOAD and second.ct_id in gw.installed and dp.calls == 5


def test_a_flow_refused_for_a_full_map_is_offered_again_a_bounded_number_of_times() -> None:
    engine, clock = _engine(), Clock()
    gw, dp = _gateway(engine, clock)
    held = [_establish(engine, clock, dport=6000 + i) for i in range(FULL_RETRIES + 2)]
    gw.sync()
    dp.capacity = 0  # from now on nothing fits
    waiting = _establish(engine, clock, dport=5002)
    gw.sync()
    assert gw.stats["full"] == 1
    tries = []
    for conn in held:  # each flow that goes makes room: the waiting one is offered, tried, refused again
        engine.table.delete(conn, clock.now)
        gw.sync()
        calls = dp.calls
        _forwarded_natted(engine, clock, 5002)
        gw.sync()
        tries.append(dp.calls - calls)
    assert tries == [1] * FULL_RETRIES + [0, 0]  # FULL_RETRIES offers after the first refusal, then no more
    assert not waiting.status & CtStatus.OFFLOAD


def test_a_flush_removes_every_entry() -> None:
    engine, clock = _engine(), Clock()
    gw, dp = _gateway(engine, clock)
    _establish(engine, clock)
    _establish(engine, clock, dport=5002)
    gw.sync()
    assert len(dp.entries) == 4
    engine.table.flush(clock.now)
    gw.sync()
    assert not dp.entries and gw.stats["removed"] == 2


def test_a_flow_through_a_device_without_the_program_is_refused() -> None:
    """A TAP natbox holds has no program (nothing crosses the kernel there): its index is 0 to offload_entry,
    which declines, and the flow stays natbox's."""
    engine, clock = _engine(), Clock()
    dp = FakeDatapath()
    gw = GatewayOffload(engine, dp, offload_entry, lambda name: IFINDEX["wan0"] if name == "wan0" else 0,
                        clock=lambda: clock.now)
    conn = _establish(engine, clock)
    gw.sync()
    assert not dp.entries and gw.stats["refused"] == 1 and not conn.status & CtStatus.OFFLOAD


def test_the_workdirs_of_killed_gateways_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import tempfile

    from natbox.gateway import offload as gw_offload

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    dead, alive, other = (tmp_path / f"natbox-offload-{x}" for x in ("999999999", str(os.getpid()), "bench-x"))
    for d in (dead, alive, other):
        (d / "bpffs").mkdir(parents=True)
    gw_offload._remove_stale_workdirs()
    assert not dead.exists() and alive.exists() and other.exists()


def test_an_ipv6_flow_is_installed_in_the_ipv6_map_counted_and_listed() -> None:
    """A NAT66 TCP flow (natbox.testing.offload6): its entries are IPv6 keys (nb_flows6), the folded counters
    reach the ct, `natbox status` lists it with its IPv6 addresses, the FIN removes both entries."""
    from natbox.netfilter import NFPROTO_IPV6
    from natbox.testing.offload6 import CLIENT6, SERVER6, RouterFlows6, datagram6

    r = RouterFlows6(bytes.fromhex("020000000001"), bytes.fromhex("020000000101"), bytes.fromhex("020000000a02"),
                     bytes.fromhex("02000000aa02"), offload=True)
    r.engine.host.conntrack.acct = True
    dp = FakeDatapath()
    gw = GatewayOffload(r.engine, dp, offload_entry, {"eth0": 11, "eth1": 12}.__getitem__, clock=lambda: r.now)
    c_seq, s_seq = r.tcp(40001, 5001)
    gw.sync()
    assert len(dp.entries) == 2 and all(k.family == NFPROTO_IPV6 for k in dp.entries)
    orig = next(k for k in dp.entries if k.ifindex == 11)
    assert (orig.saddr, orig.daddr, orig.sport, orig.dport) == (CLIENT6, SERVER6, 40001, 5001)
    conn = next(c for c in r.engine.table.live(r.now) if c.ct_id in gw.installed)
    before = conn.acct_packets[0]
    dp.counters[orig] = FlowStats(50, 75_000, int((r.now + 0.5) * 1e9))
    gw.handle_timers(r.now + 1.0)
    assert conn.acct_packets[0] == before + 50
    report = gw.report()
    assert "1 flows offloaded, 2 map entries" in report
    assert "tcp src=fd00:1::2 dst=2001:db8:1::2 sport=40001 dport=5001 original packets=50" in report, report
    r.feed(datagram6(CLIENT6, SERVER6, 6, 40001, 5001, seq=c_seq + 1_000_000, ack=s_seq, flags=tcp.ACK | tcp.FIN), True)
    gw.sync()
    assert not dp.entries and not gw.installed and "back to natbox (fin)" in gw.report()
