"""The engine's flow offload for IPv6 (engine/offload.py `bind6`, nf_flow_offload_ipv6_hook's side), no kernel.

A NAT66 router (natbox.testing.offload6: fd00:1::/64 MASQUERADEd out of eth1 to 2001:db8:1::1) carries TCP,
UDP and ICMPv6 echo flows; the tests play the datapath as tests/engine/test_offload.py does for IPv4.
"""

from __future__ import annotations

import pytest

from natbox.conntrack.conn import IP_CT_TCP_FLAG_BE_LIBERAL, Conn
from natbox.conntrack.format import format_conntrack
from natbox.engine.offload import OffloadAdd, OffloadDel
from natbox.engine.offload_model import ModelDatapath
from natbox.netfilter import NFPROTO_IPV6, CtStatus, TcpState
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.testing.offload6 import CLIENT6, PUBLIC6, RULES6, SERVER6, RouterFlows6, datagram6
from natbox.wire import tcp
from natbox.wire.ipv6 import parse_addr6

MACS = (bytes.fromhex("020000000001"), bytes.fromhex("020000000101"), bytes.fromhex("020000000a02"),
        bytes.fromhex("02000000aa02"))
FILTER6 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -p tcp --dport 5001 -j ACCEPT
-A FORWARD -p ipv6-icmp -j ACCEPT
COMMIT
"""


def _router(rules: str = RULES6) -> RouterFlows6:
    return RouterFlows6(*MACS, rules=rules, offload=True)


def _conn(r: RouterFlows6, proto: int) -> Conn:
    (conn,) = [c for c in r.engine.table.live(r.now) if c.tuples[0].proto == proto]
    return conn


def test_an_established_ipv6_tcp_flow_is_offloaded_with_both_plans() -> None:
    r = _router()
    r.tcp(40001, 5001)
    (req,) = r.engine.offload_requests()
    conn = _conn(r, 6)
    assert isinstance(req, OffloadAdd) and req.ct_id == conn.ct_id
    orig, reply = req.plans
    assert (orig.family, orig.direction, orig.iif, orig.oif, orig.dst_mac) == (NFPROTO_IPV6, 0, "eth0", "eth1",
                                                                                 MACS[3])
    assert (reply.family, reply.direction, reply.iif, reply.oif, reply.dst_mac) == (NFPROTO_IPV6, 1, "eth1", "eth0",
                                                                                      MACS[2])
    assert orig.new_addrs[:32] == PUBLIC6.to_bytes(16, "big") + SERVER6.to_bytes(16, "big")
    assert conn.status & CtStatus.OFFLOAD and conn.tcp is not None
    assert all(s.flags & IP_CT_TCP_FLAG_BE_LIBERAL for s in conn.tcp.seen)
    # conntrack -L -f ipv6 lists it as ctnetlink dumps an offloaded entry
    assert format_conntrack(conn, r.now).startswith("tcp      6 src=fd00:1::2 dst=2001:db8:1::2 sport=40001 ")
    assert "[OFFLOAD]" in format_conntrack(conn, r.now)
    assert r.engine.offload_requests() == []  # asked once


@pytest.mark.parametrize(("flags", "reason", "state"), [(tcp.ACK | tcp.FIN, "fin", TcpState.FIN_WAIT),
                                                        (tcp.RST, "rst", TcpState.CLOSE)])
def test_a_fin_or_rst_of_an_offloaded_ipv6_flow_brings_it_back(flags: int, reason: str, state: TcpState) -> None:
    r = _router()
    c_seq, s_seq = r.tcp(40001, 5001)
    r.engine.offload_requests()
    conn = _conn(r, 6)
    # the datapath carried a MB meanwhile: the engine's windows are stale, liberal tracking takes the FIN
    seq = c_seq + (1_000_000 if flags & tcp.FIN else 0)
    r.feed(datagram6(CLIENT6, SERVER6, 6, 40001, 5001, seq=seq, ack=s_seq, flags=flags), True)
    assert r.engine.offload_requests() == [OffloadDel(conn.ct_id, reason)]
    assert not conn.status & CtStatus.OFFLOAD and conn.tcp is not None and conn.tcp.state == state
    assert r.engine.offload is not None and not r.engine.offload.keys


def test_an_icmpv6_echo_flow_is_offloaded_and_refreshed_to_the_icmpv6_timeout() -> None:
    r = _router()
    r.engine.host.conntrack.icmpv6_timeout = 17
    r.ping(0x4242)
    (req,) = r.engine.offload_requests()
    conn = _conn(r, 58)
    assert isinstance(req, OffloadAdd) and [p.proto for p in req.plans] == [58, 58]
    assert r.engine.offload_stats(conn.ct_id, 0, 10, 1040, r.now + 5)
    assert conn.timeout == pytest.approx(r.now + 5 + 17)
    assert r.engine.offload is not None and r.engine.offload.flows[conn.ct_id].packets == [10, 0]


def test_a_udp_flow_comes_back_when_the_ipv6_routes_change() -> None:
    r = _router()
    r.udp(40000, 5000)
    (req,) = r.engine.offload_requests()
    conn = _conn(r, 17)
    r.engine.add_address6("eth1", parse_addr6("2001:db8:1::7"), 64)  # the FIB6 generation changes
    assert r.engine.offload_requests() == [OffloadDel(conn.ct_id, "route")]
    # the next packets are the slow path's; the flow is compiled and offloaded again
    r.udp(40000, 5000, rounds=2)
    (again,) = r.engine.offload_requests()
    assert isinstance(again, OffloadAdd) and again.ct_id == req.ct_id


def test_under_ip6tables_filter_rules_the_flow_is_offloaded_but_what_natbox_sees_meets_them() -> None:
    r = _router()
    rules = Ruleset(NFPROTO_IPV6)
    rules.restore(parse_restore(RULES6 + FILTER6, file="test", family=NFPROTO_IPV6))
    r.engine.rules6 = rules
    c_seq, s_seq = r.tcp(40001, 5001)
    (req,) = r.engine.offload_requests()
    assert isinstance(req, OffloadAdd) and req.plans[0].family == NFPROTO_IPV6
    assert not r.engine._flowcache6.flows  # plans for the datapath only: natbox's executor never runs them
    established = r.engine.rules6.tables["filter"].chains["FORWARD"].rules[0]
    counted = established.packets
    r.feed(datagram6(CLIENT6, SERVER6, 6, 40001, 5001, seq=c_seq, ack=s_seq), True)  # one the datapath passed up
    assert established.packets == counted + 1


def test_without_offload_ipv6_flows_are_not_marked() -> None:
    r = RouterFlows6(*MACS)
    r.tcp(40001, 5001)
    assert r.engine.offload_requests() == [] and not _conn(r, 6).status & CtStatus.OFFLOAD


class _Modelled(RouterFlows6):
    """The router with engine/offload_model.py's datapath in front (what replay/explain --offload run)."""

    def __init__(self) -> None:
        super().__init__(*MACS, offload=True)
        self.model = ModelDatapath(self.engine)

    def feed(self, datagram: bytes | bytearray, outbound: bool, *, partial: bool = False) -> bytes:
        out = self.model.receive(self.frame(datagram, outbound), "eth0" if outbound else "eth1", self.now)
        self.now += 0.01
        assert len(out.emitted) == 1, out
        return bytes(out.emitted[0].frame)


def test_the_offline_model_carries_ipv6_flows_as_the_datapath() -> None:
    """engine/offload_model.py (replay/explain --offload): an IPv6 flow is installed once offloaded, its next
    packets are carried by the IPv6 executor without the conntrack step (counted into the ct at once) and leave
    as the engine alone forwards them; the FIN goes to the engine and removes the entries."""
    r, plain = _Modelled(), RouterFlows6(*MACS)
    c_seq, s_seq = r.tcp(40001, 5001)
    p_seq = plain.tcp(40001, 5001)
    assert (c_seq, s_seq) == p_seq
    conn = _conn(r, 6)
    assert list(r.model.installed) == [conn.ct_id] and conn.status & CtStatus.OFFLOAD
    carried, counted = r.model.carried[0], list(r.model.counted[(conn.ct_id, 0)])
    assert carried > 0  # the handshake's last data rounds already
    for i in range(3):
        data = datagram6(CLIENT6, SERVER6, 6, 40001, 5001, seq=c_seq + 4 * i, ack=s_seq, payload=b"more")
        assert r.feed(data, True) == plain.feed(data, True)
    assert r.model.carried[0] == carried + 3
    assert r.model.counted[(conn.ct_id, 0)] == [counted[0] + 3, counted[1] + 3 * (40 + 20 + 4)]
    fin = datagram6(CLIENT6, SERVER6, 6, 40001, 5001, seq=c_seq + 12, ack=s_seq, flags=tcp.ACK | tcp.FIN)
    assert r.feed(fin, True) == plain.feed(fin, True)
    assert not r.model.installed and not conn.status & CtStatus.OFFLOAD
