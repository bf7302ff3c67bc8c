"""The slow path's specialised forms agree with the general code they stand in for.

The per-packet shortcuts of the slow path (bench/slowpath_bench.py measures it) must not change a byte:
* `manip_pkt_ports` (nf_nat_packet's TCP/UDP rewrite from an (address, port) pair) against `manip_pkt`
  with the full target tuple, on random headers, truncated segments and zero UDP checksums;
* `ip_rcv_core`'s inline header-checksum test against RFC 1071 (`internet_checksum` of the header is 0), and
  conntrack's `l4_checksum_ok` against `nf_ip_checksum` written with the checksum helpers;
* the engine's subnet tests against `Address.contains` / `Address.broadcast`;
* whole connection lifecycles (SYN to the last ACK, and UDP) through the gateway and Docker rulesets:
  the frames an engine sends are the same with tracing on (which takes the general NAT code) and off, and
  the same again with the engine's fast paths off.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from natbox.conntrack.conn import Conn
from natbox.conntrack.proto.udp import l4_checksum_ok
from natbox.conntrack.table import ConntrackTable
from natbox.conntrack.tuple import ConnTuple, parse_addr
from natbox.engine.engine import Engine, Output
from natbox.engine.family import IPV4
from natbox.engine.host import Address, Interface
from natbox.nat.core import NatCore
from natbox.nat.manip import manip_pkt, manip_pkt_ports
from natbox.netfilter import CtStatus, DropReason, ManipType
from natbox.rand import SplitMix64
from natbox.wire import ipv4, tcp, udp
from natbox.wire.checksum import csum_fold, csum_partial, internet_checksum, pseudo_header_sum

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import slowpath_bench as sb  # type: ignore[import-not-found]  # bench/ is a directory of scripts

u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)


def _datagram(proto: int, src: int, dst: int, sport: int, dport: int, payload: bytes, zero_csum: bool) -> bytearray:
    if proto == 6:
        seg = tcp.build_tcp(src, dst, sport, dport, seq=1, ack=2, payload=payload)
    else:
        seg = udp.build_udp(src, dst, sport, dport, payload, zero_checksum=zero_csum)
    return ipv4.build_ipv4(src, dst, proto, seg, ttl=64)


@settings(max_examples=400, deadline=None)
@given(proto=st.sampled_from([6, 17]), src=u32, dst=u32, sport=u16, dport=u16, naddr=u32, nport=u16,
       manip=st.sampled_from([ManipType.SRC, ManipType.DST]), payload=st.binary(max_size=24),
       zero_csum=st.booleans(), cut=st.integers(0, 60))
def test_manip_pkt_ports_is_manip_pkt(proto: int, src: int, dst: int, sport: int, dport: int, naddr: int,
                                      nport: int, manip: ManipType, payload: bytes, zero_csum: bool,
                                      cut: int) -> None:
    data = _datagram(proto, src, dst, sport, dport, payload, zero_csum)
    data = data[:max(20, len(data) - cut)]  # truncated transport headers too (skb->len is what counts)
    if manip == ManipType.SRC:
        target = ConnTuple(naddr, nport, dst, dport, proto)
    else:
        target = ConnTuple(src, sport, naddr, nport, proto)
    general, special = bytearray(data), bytearray(data)
    ok = manip_pkt(general, 20, target, manip)
    assert manip_pkt_ports(special, 20, proto, manip, naddr, nport) == ok
    assert special == general


@settings(max_examples=400, deadline=None)
@given(header=st.binary(min_size=20, max_size=60), fix=st.booleans())
def test_ip_rcv_core_checksum(header: bytes, fix: bool) -> None:
    data = bytearray(header)
    data[0] = 0x40 | max(5, data[0] & 0x0F)  # version 4, a valid IHL (ip_rcv_core's earlier checks pass)
    ihl = (data[0] & 0x0F) * 4
    data[2:4] = len(data).to_bytes(2, "big")
    if fix and ihl <= len(data):
        data[10:12] = b"\x00\x00"
        data[10:12] = internet_checksum(data[:ihl]).to_bytes(2, "big")
    out, reason = ipv4.ip_rcv_core(bytes(data))
    if ihl > len(data):
        assert out is None
        return
    good = internet_checksum(data[:ihl]) == 0
    assert (reason != DropReason.IP_CSUM) == good
    if good:
        assert out == data


@settings(max_examples=400, deadline=None)
@given(body=st.binary(min_size=20, max_size=1200), proto=st.sampled_from([6, 17, 136]), off=st.integers(0, 40),
       end=st.one_of(st.none(), st.integers(0, 1300)), fix=st.booleans())
def test_l4_checksum_ok(body: bytes, proto: int, off: int, end: int | None, fix: bool) -> None:
    data = bytearray(body)
    dataoff = min(20 + off, len(data))
    n = len(data)
    src, dst = int.from_bytes(data[12:16], "big"), int.from_bytes(data[16:20], "big")
    total = pseudo_header_sum(src, dst, proto, n - dataoff)
    if fix and n >= dataoff + 2:  # make the sum come out right, as a real sender's checksum does
        data[dataoff:dataoff + 2] = b"\x00\x00"
        want = csum_fold(csum_partial(memoryview(data)[dataoff:n], total))
        data[dataoff:dataoff + 2] = want.to_bytes(2, "big")
    stop = n if end is None else end
    expected = csum_fold(csum_partial(memoryview(data)[dataoff:stop], total)) == 0
    assert l4_checksum_ok(data, dataoff, proto, end) == expected


@settings(max_examples=300, deadline=None)
@given(addrs=st.lists(st.tuples(u32, st.integers(0, 32)), max_size=4), probe=u32, pick=st.integers(0, 3))
def test_subnet_tests(addrs: list[tuple[int, int]], probe: int, pick: int) -> None:
    dev = Interface("eth0", addresses=[Address(a, p) for a, p in addrs])
    candidates = [probe] + [a.broadcast for a in dev.addresses] + [a.network for a in dev.addresses]
    for addr in candidates[:pick + 2]:
        assert IPV4.on_link(dev, addr) == any(a.contains(addr) for a in dev.addresses)
        assert (addr in IPV4.subnet_broadcasts(dev)) == any(a.broadcast == addr for a in dev.addresses)


def _lifecycles(sc: Any, *, trace: bool, fast: bool, conns: int = 6) -> list[tuple[str, bytes]]:
    """Every frame sent for `conns` TCP lifecycles and as many UDP flows (the benchmark's traffic)."""
    runner = sb.Runner(sc)
    engine: Engine = runner.engine
    engine.fast_path = fast
    sent: list[tuple[str, bytes]] = []

    class Spy:
        """The runner's engine seen through its receive calls (a compiled Engine's methods cannot be replaced)."""

        def receive(self, frame: bytes, iface: str, now: float) -> Output:
            out = engine.receive(frame, iface, now, trace=trace)
            sent.extend((e.iface, e.frame) for e in out.emitted)
            assert not out.dropped
            return out

    runner.engine = Spy()
    for _ in range(conns):
        runner.tcp_conn(check=True)
        if sc.name != "docker-in":
            runner.udp_flow(check=True)
    return sent


def test_lifecycles_same_with_and_without_tracing_and_fast_paths() -> None:
    for sc in sb.SCENARIOS:
        plain = _lifecycles(sc, trace=False, fast=True)
        assert len(plain) == 6 * (7 + (0 if sc.name == "docker-in" else 2))
        assert _lifecycles(sc, trace=True, fast=True) == plain
        assert _lifecycles(sc, trace=False, fast=False) == plain


@settings(max_examples=60, deadline=None)
@given(proto=st.sampled_from([6, 17, 132, 136]), clash=st.sampled_from(["none", "live", "expired"]),
       done=st.booleans(), confirmed=st.booleans())
def test_dst_null_binding_same_with_and_without_trace(proto: int, clash: str, done: bool, confirmed: bool) -> None:
    """`alloc_null_binding` for DST (its shortcut without a trace, the full setup_info with one): same
    verdict, status, reply tuple, `found` count and table (an expired clashing entry is reaped either way)."""
    results = []
    traces: tuple[list[str] | None, ...] = (None, [])
    for trace in traces:
        table = ConntrackTable(events_enabled=True)
        nat = NatCore()
        a, b = parse_addr("10.0.0.2"), parse_addr("198.51.100.2")
        ct = Conn(ConnTuple(a, 1000, b, 80, proto), ConnTuple(b, 80, a, 1000, proto), now=0.0, ct_id=1)
        if done:
            ct.status |= CtStatus.DST_NAT_DONE
        if confirmed:
            ct.status |= CtStatus.CONFIRMED
        if clash != "none":  # the same flow seen from the other side, with another original tuple
            other = Conn(ConnTuple(b, 80, a, 1000, proto), ConnTuple(a, 1000, b, 80, proto), now=0.0, ct_id=2)
            other.timeout = 5.0 if clash == "expired" else 100.0
            table.insert(other, 0.0)
        verdict = nat.alloc_null_binding(ct, ManipType.DST, now=10.0, table=table, rnd=SplitMix64(1), trace=trace)
        results.append((verdict, ct.status, tuple(ct.tuples), table.stats.found, len(table),
                        [(e.kind, e.conn.ct_id) for e in table.drain_events()]))
    assert results[0] == results[1]
