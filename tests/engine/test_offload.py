"""The engine's side of the flow offload (engine/offload.py): which cts it hands to a datapath, when they come
back, how the datapath's counters are folded into them, and what `conntrack -L` shows, with no kernel.

A MASQUERADE gateway (lan0 10.0.1.0/24, wan0 198.51.100.0/24) carries a TCP connection and a UDP flow; the
tests play the datapath: they drain `Engine.offload_requests()` and report counters with `offload_stats`.
"""

from __future__ import annotations

import pytest

from natbox.conntrack.conn import IP_CT_TCP_FLAG_BE_LIBERAL, Conn
from natbox.conntrack.format import format_conntrack, format_proc
from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Neighbour
from natbox.engine.offload import NF_CT_DAY, OFFLOAD_TIMEOUT, OffloadAdd, OffloadDel
from natbox.gateway.ctoutput import format_save, format_xml
from natbox.netfilter import CtStatus, TcpState
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ethernet, icmp, ipv4, tcp, udp

CLIENT, GW_LAN, GW_WAN, SERVER = (parse_addr(a) for a in ("10.0.1.2", "10.0.1.1", "198.51.100.1", "198.51.100.2"))
CLIENT_MAC, SERVER_MAC = bytes.fromhex("02000000c002"), bytes.fromhex("02000000aa02")
LAN_MAC, WAN_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000101")
NAT = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 10.0.1.0/24 -o wan0 -j MASQUERADE
COMMIT
"""
FILTER = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp --dport 9 -j DROP
COMMIT
"""
SPORT, DPORT = 42012, 5001
C_ISN, S_ISN = 1000, 5000


def _ruleset(text: str) -> Ruleset:
    rules = Ruleset()
    rules.restore(parse_restore(text, file="test"))
    return rules


def _engine(*, offload: bool = True, rules: str = NAT, acct: bool = True) -> Engine:
    host = Host(name="gw", ip_forward=True)
    host.add_interface(Interface("lan0", mac=LAN_MAC))
    host.add_interface(Interface("wan0", mac=WAN_MAC))
    host.add_address("lan0", GW_LAN, 24)
    host.add_address("wan0", GW_WAN, 24)
    host.neighbours.append(Neighbour("lan0", CLIENT, CLIENT_MAC))
    host.neighbours.append(Neighbour("wan0", SERVER, SERVER_MAC))
    host.conntrack.acct = acct
    return Engine(host, ruleset=_ruleset(rules), seed=1, offload=offload, events=True)


def _client(seq: int, ack: int, flags: int, payload: bytes = b"", dport: int = DPORT) -> tuple[bytes, str]:
    seg = tcp.build_tcp(CLIENT, SERVER, SPORT, dport, seq=C_ISN + seq, ack=S_ISN + ack if ack else 0, flags=flags,
                        window=65000, payload=payload)
    return bytes(ethernet.build_ethernet(LAN_MAC, CLIENT_MAC, ethernet.ETH_P_IP, ipv4.build_ipv4(
        CLIENT, SERVER, 6, seg))), "lan0"


def _server(seq: int, ack: int, flags: int, payload: bytes = b"", sport: int = DPORT) -> tuple[bytes, str]:
    seg = tcp.build_tcp(SERVER, GW_WAN, sport, SPORT, seq=S_ISN + seq, ack=C_ISN + ack if ack else 0, flags=flags,
                        window=65000, payload=payload)
    return bytes(ethernet.build_ethernet(WAN_MAC, SERVER_MAC, ethernet.ETH_P_IP, ipv4.build_ipv4(
        SERVER, GW_WAN, 6, seg))), "wan0"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def step(self, dt: float = 0.001) -> float:
        self.now += dt
        return self.now


def _send(engine: Engine, clock: Clock, pkt: tuple[bytes, str]) -> None:
    out = engine.receive(pkt[0], pkt[1], clock.step())
    assert len(out.emitted) == 1 and not out.dropped, out


def _establish(engine: Engine, clock: Clock, dport: int = DPORT) -> Conn:
    """Handshake, then data both ways: at the second ESTABLISHED packet of each direction the flow is compiled."""
    _send(engine, clock, _client(0, 0, tcp.SYN, dport=dport))
    _send(engine, clock, _server(0, 1, tcp.SYN | tcp.ACK, sport=dport))
    _send(engine, clock, _client(1, 1, tcp.ACK, dport=dport))
    _send(engine, clock, _client(1, 1, tcp.ACK | tcp.PSH, b"hello", dport=dport))
    _send(engine, clock, _server(1, 6, tcp.ACK, sport=dport))
    _send(engine, clock, _server(1, 6, tcp.ACK | tcp.PSH, b"world", sport=dport))
    conns = [c for c in engine.table.live(clock.now) if c.original.dport == dport]
    assert len(conns) == 1
    return conns[0]


def test_an_established_tcp_flow_is_offloaded_once_both_directions_are_compiled() -> None:
    engine, clock = _engine(), Clock()
    _send(engine, clock, _client(0, 0, tcp.SYN))
    _send(engine, clock, _server(0, 1, tcp.SYN | tcp.ACK))
    _send(engine, clock, _client(1, 1, tcp.ACK))
    _send(engine, clock, _client(1, 1, tcp.ACK | tcp.PSH, b"hello"))
    assert engine.offload_requests() == []  # one direction compiled only
    _send(engine, clock, _server(1, 6, tcp.ACK))
    _send(engine, clock, _server(1, 6, tcp.ACK | tcp.PSH, b"world"))
    (req,) = engine.offload_requests()
    conn = next(iter(engine.table.live(clock.now)))
    assert isinstance(req, OffloadAdd) and req.ct_id == conn.ct_id
    orig, reply = req.plans
    assert (orig.direction, orig.iif, orig.oif, orig.dst_mac) == (0, "lan0", "wan0", SERVER_MAC)
    assert (reply.direction, reply.iif, reply.oif, reply.dst_mac) == (1, "wan0", "lan0", CLIENT_MAC)
    assert orig.new_addrs == (GW_WAN.to_bytes(4, "big") + SERVER.to_bytes(4, "big")
                              + SPORT.to_bytes(2, "big") + DPORT.to_bytes(2, "big"))
    assert conn.status & CtStatus.OFFLOAD
    assert conn.tcp is not None
    assert all(s.flags & IP_CT_TCP_FLAG_BE_LIBERAL for s in conn.tcp.seen)  # as nft_flow_offload_eval sets it
    assert engine.offload_requests() == []  # asked once


def test_conntrack_lists_an_offloaded_entry_as_ctnetlink_dumps_it() -> None:
    engine, clock = _engine(acct=False), Clock()
    conn = _establish(engine, clock)
    # ctnetlink_dump_info: no timeout, no protoinfo; [OFFLOAD] before (instead of) [ASSURED]; the flow's reference
    assert format_conntrack(conn, clock.now) == (
        "tcp      6 src=10.0.1.2 dst=198.51.100.2 sport=42012 dport=5001 "
        "src=198.51.100.2 dst=198.51.100.1 sport=5001 dport=42012 [OFFLOAD] mark=0 use=2")
    assert format_proc(conn, clock.now).startswith(
        "ipv4     2 tcp      6 src=10.0.1.2 dst=198.51.100.2 sport=42012 dport=5001 ")
    # -o xml and -o save print only the attributes the dump carried: no <state>/<timeout>, no -t/--state
    xml = format_xml(conn, clock.now)
    assert "<state>" not in xml and "<timeout>" not in xml
    assert '<meta direction="independent"><mark>0</mark><use>2</use>' in xml and "<assured/>" in xml
    assert format_save(conn, clock.now) == (
        "-A -u SEEN_REPLY,ASSURED -s 10.0.1.2 -d 198.51.100.2 -r 198.51.100.2 -n 198.51.100.1 -p tcp "
        "--sport 42012 --dport 5001 --reply-port-src 5001 --reply-port-dst 42012")
    assert format_proc(conn, clock.now).endswith("[OFFLOAD] mark=0 zone=0 use=3")
    assert engine.offload is not None
    engine.offload.teardown(conn, "rst")
    # back on the slow path: the timeout the tracker chose at the last packet (data unacknowledged: 300 s; the
    # packet came after the offload, as one the datapath passes up would), sooner than ESTABLISHED's
    assert format_conntrack(conn, clock.now).startswith("tcp      6 300 ESTABLISHED src=10.0.1.2 ")
    assert format_conntrack(conn, clock.now).endswith("[ASSURED] mark=0 use=1")


@pytest.mark.parametrize(("seq", "flags", "reason", "state"), [
    (1_000_006, tcp.ACK | tcp.FIN, "fin", TcpState.FIN_WAIT),  # the datapath carried a MB meanwhile
    (6, tcp.RST, "rst", TcpState.CLOSE),
    # past the stale td_maxack: flow_offload_fixup_tcp cleared MAXACK_SET, so the RST is not taken for a challenge
    (1_000_006, tcp.RST, "rst", TcpState.CLOSE)])
def test_a_fin_or_rst_brings_the_flow_back_before_the_slow_path_tracks_it(seq: int, flags: int, reason: str,
                                                                          state: TcpState) -> None:
    engine, clock = _engine(), Clock()
    conn = _establish(engine, clock)
    engine.offload_requests()
    # the engine's idea of the windows is stale (the datapath carried the data): liberal tracking accepts the FIN
    _send(engine, clock, _client(seq, 11, flags))
    assert engine.offload_requests() == [OffloadDel(conn.ct_id, reason)]
    assert not conn.status & CtStatus.OFFLOAD
    assert conn.tcp is not None and conn.tcp.state == state
    assert engine.offload is not None and not engine.offload.keys


def test_a_flow_comes_back_when_its_ct_is_deleted_flushed_or_expires() -> None:
    engine, clock = _engine(), Clock()
    first = _establish(engine, clock)
    second = _establish(engine, clock, dport=5002)
    third = _establish(engine, clock, dport=5003)
    assert len(engine.offload_requests()) == 3
    engine.table.delete(first, clock.now)  # conntrack -D
    assert engine.offload_requests() == [OffloadDel(first.ct_id, "destroyed")]
    engine.table.flush(clock.now)  # conntrack -F
    assert sorted(engine.offload_requests()) == [OffloadDel(second.ct_id, "destroyed"),
                                                 OffloadDel(third.ct_id, "destroyed")]
    # expiry: the flowtable holds the ct at a day; a timeout shorter than that still ends it
    conn = _establish(engine, clock, dport=5004)
    engine.offload_requests()
    conn.timeout = clock.now + 0.5  # as if the tracker had set a short timeout (a sysctl)
    engine.handle_timers(clock.step(1.0))
    assert engine.offload_requests() == [OffloadDel(conn.ct_id, "destroyed")]


def test_an_idle_flow_comes_back_after_the_flowtable_timeout() -> None:
    engine, clock = _engine(), Clock()
    conn = _establish(engine, clock)
    engine.offload_requests()
    engine.handle_timers(clock.step(OFFLOAD_TIMEOUT / 2))
    engine.offload_stats(conn.ct_id, 1, 5, 500, clock.now)  # a packet now: the idle time restarts
    engine.handle_timers(clock.step(OFFLOAD_TIMEOUT - 1))
    assert engine.offload_requests() == []
    engine.handle_timers(clock.step(2))
    assert engine.offload_requests() == [OffloadDel(conn.ct_id, "idle")]
    assert not conn.status & CtStatus.OFFLOAD and conn in engine.table.live(clock.now)
    # traffic again: two packets each way through the slow path, and the flow is offloaded anew
    for pkt in (_client(11, 11, tcp.ACK), _client(11, 11, tcp.ACK), _server(11, 11, tcp.ACK), _server(11, 11, tcp.ACK)):
        _send(engine, clock, pkt)
    (req,) = engine.offload_requests()
    assert isinstance(req, OffloadAdd) and req.ct_id == conn.ct_id and conn.status & CtStatus.OFFLOAD


def test_the_datapath_counters_are_folded_into_the_ct() -> None:
    engine, clock = _engine(), Clock()
    conn = _establish(engine, clock)
    engine.offload_requests()
    before = (list(conn.acct_packets), list(conn.acct_bytes))
    timeout = conn.timeout
    assert before == ([3, 3], [40 * 3 + 5, 40 * 3 + 5])
    assert engine.offload_stats(conn.ct_id, 0, 10, 15000, clock.now + 0.5)
    assert engine.offload_stats(conn.ct_id, 1, 4, 160, clock.now + 0.7)
    assert (conn.acct_packets, conn.acct_bytes) == ([13, 7], [15125, 285])
    assert engine.offload_stats(conn.ct_id, 0, 12, 18000, clock.now + 1.5)  # cumulative: 2 more
    assert (conn.acct_packets[0], conn.acct_bytes[0]) == (15, 18125)
    assert engine.offload_stats(conn.ct_id, 0, 1, 1500, clock.now + 2.5)  # rewritten entry: counters restarted
    assert (conn.acct_packets[0], conn.acct_bytes[0]) == (16, 19625)
    assert conn.timeout == timeout  # the datapath's packets refresh the flow's idle timer, not the ct
    assert engine.offload is not None and engine.offload.flows[conn.ct_id].last_seen == clock.now + 2.5
    assert engine.offload is not None and engine.offload.flows[conn.ct_id].packets == [13, 4]
    assert not engine.offload_stats(conn.ct_id + 100, 0, 1, 1, clock.now)  # not offloaded: nothing


def test_a_rule_change_keeps_offloaded_flows_as_the_kernels_flowtable_does() -> None:
    engine, clock = _engine(), Clock()
    conn = _establish(engine, clock)
    engine.offload_requests()
    engine.rules = _ruleset(NAT + FILTER)
    assert engine.offload_requests() == []
    assert conn.status & CtStatus.OFFLOAD
    # a new connection meets the new rules: to port 9 it is dropped, to 5002 it passes and is offloaded
    out = engine.receive(*_client(0, 0, tcp.SYN, dport=9), clock.step())
    assert not out.emitted and out.dropped
    second = _establish(engine, clock, dport=5002)
    (req,) = engine.offload_requests()
    assert isinstance(req, OffloadAdd) and req.ct_id == second.ct_id


def test_a_route_change_brings_flows_back() -> None:
    engine, clock = _engine(), Clock()
    conn = _establish(engine, clock)
    engine.offload_requests()
    engine.add_address("wan0", parse_addr("198.51.100.7"), 24)  # the FIB generation changes
    assert engine.offload_requests() == [OffloadDel(conn.ct_id, "route")]
    # the next packets are the slow path's; the flow is compiled and offloaded again
    _send(engine, clock, _client(6, 6, tcp.ACK))
    _send(engine, clock, _client(6, 6, tcp.ACK))
    _send(engine, clock, _server(6, 6, tcp.ACK))
    _send(engine, clock, _server(6, 6, tcp.ACK))
    (req,) = engine.offload_requests()
    assert isinstance(req, OffloadAdd) and req.ct_id == conn.ct_id


def test_a_refused_flow_stays_on_the_slow_path() -> None:
    engine, clock = _engine(), Clock()
    conn = _establish(engine, clock)
    engine.offload_requests()
    engine.offload_refused(conn.ct_id)
    assert not conn.status & CtStatus.OFFLOAD
    _send(engine, clock, _client(6, 6, tcp.ACK))
    _send(engine, clock, _server(6, 6, tcp.ACK))
    assert engine.offload_requests() == []


def _udp(src_side: bool, payload: bytes = b"x") -> tuple[bytes, str]:
    if src_side:
        seg = udp.build_udp(CLIENT, SERVER, 4000, 53, payload)
        return bytes(ethernet.build_ethernet(LAN_MAC, CLIENT_MAC, ethernet.ETH_P_IP, ipv4.build_ipv4(
            CLIENT, SERVER, 17, seg))), "lan0"
    seg = udp.build_udp(SERVER, GW_WAN, 53, 4000, payload)
    return bytes(ethernet.build_ethernet(WAN_MAC, SERVER_MAC, ethernet.ETH_P_IP, ipv4.build_ipv4(
        SERVER, GW_WAN, 17, seg))), "wan0"


def test_udp_is_offloaded_once_replied_and_its_counters_do_not_make_it_assured() -> None:
    """udp_packet never sees the flowtable's packets: no ASSURED, no event, the ct's timeout stays the day."""
    engine, clock = _engine(), Clock()
    for side in (True, False, True, True):
        _send(engine, clock, _udp(side))
    (req,) = engine.offload_requests()
    conn = next(iter(engine.table.live(clock.now)))
    assert isinstance(req, OffloadAdd) and not conn.status & CtStatus.ASSURED
    assert conn.timeout == pytest.approx(clock.now + NF_CT_DAY)
    engine.drain_events()
    engine.offload_stats(conn.ct_id, 0, 5, 145, clock.now + 1.0)
    engine.offload_stats(conn.ct_id, 1, 5, 145, clock.now + 3.0)  # past the stream delay
    assert not conn.status & CtStatus.ASSURED and conn.timeout == pytest.approx(clock.now + NF_CT_DAY)
    assert engine.drain_events() == []


def test_an_icmp_echo_flow_is_offloaded_and_refreshed_by_its_counters() -> None:
    """natbox's addition to the flowtable's choice (docs/differences.md): echo flows too."""
    engine, clock = _engine(), Clock()
    requests = []
    for seq in range(3):
        msg = icmp.build_icmp_echo(77, seq, b"ping")
        _send(engine, clock, (bytes(ethernet.build_ethernet(LAN_MAC, CLIENT_MAC, ethernet.ETH_P_IP, ipv4.build_ipv4(
            CLIENT, SERVER, 1, msg))), "lan0"))
        msg = icmp.build_icmp_echo(77, seq, b"ping", reply=True)
        _send(engine, clock, (bytes(ethernet.build_ethernet(WAN_MAC, SERVER_MAC, ethernet.ETH_P_IP, ipv4.build_ipv4(
            SERVER, GW_WAN, 1, msg))), "wan0"))
        requests += engine.offload_requests()
    (req,) = requests
    conn = next(iter(engine.table.live(clock.now)))
    assert isinstance(req, OffloadAdd) and req.ct_id == conn.ct_id and [p.proto for p in req.plans] == [1, 1]
    engine.offload_stats(conn.ct_id, 0, 10, 880, clock.now + 5)
    assert conn.timeout == pytest.approx(clock.now + 5 + 30)  # icmp_timeout from the last echo counted


def test_under_filter_rules_a_flow_is_offloaded_but_what_natbox_sees_meets_the_rules() -> None:
    """As with a flowtable: the first packets pass the filter table, then the datapath carries the flow; the
    plans are the datapath's only, so a packet that still reaches the engine is filtered and counted."""
    accept = FILTER.replace("COMMIT", "-A FORWARD -p tcp --dport 5001 -j ACCEPT\nCOMMIT")
    engine, clock = _engine(rules=NAT + accept), Clock()
    conn = _establish(engine, clock)
    (req,) = engine.offload_requests()
    assert isinstance(req, OffloadAdd) and req.ct_id == conn.ct_id
    counted = engine.rules.tables["filter"].chains["FORWARD"].rules[1].packets
    _send(engine, clock, _client(11, 11, tcp.ACK))  # a packet the datapath passed up
    assert engine.rules.tables["filter"].chains["FORWARD"].rules[1].packets == counted + 1


def test_without_offload_nothing_is_asked_and_no_ct_is_marked() -> None:
    engine, clock = _engine(offload=False), Clock()
    conn = _establish(engine, clock)
    assert engine.offload is None and engine.offload_requests() == []
    assert not conn.status & CtStatus.OFFLOAD
    assert not engine.offload_stats(conn.ct_id, 0, 1, 1, clock.now)
    assert conn.tcp is not None and not any(s.flags & IP_CT_TCP_FLAG_BE_LIBERAL for s in conn.tcp.seen)


def test_a_one_way_flow_with_a_single_reply_is_offloaded() -> None:
    """iperf3's UDP test: one connect reply, then datagrams one way; as the kernel's flowtable, which offloads at
    the first established packet and routes both directions, the engine does not wait for a second reply."""
    engine, clock = _engine(), Clock()
    _send(engine, clock, _udp(True))
    _send(engine, clock, _udp(False))
    _send(engine, clock, _udp(True))  # the first established one: seen (a short exchange never pays a compile)
    assert engine.offload_requests() == []
    _send(engine, clock, _udp(True))
    (req,) = engine.offload_requests()
    assert isinstance(req, OffloadAdd) and [p.direction for p in req.plans] == [0, 1]
