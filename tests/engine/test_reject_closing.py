"""REJECT --reject-with tcp-reset moves the packet's confirmed ct to CLOSE (`nf_send_reset` calls
`nf_ct_set_closing`, which runs `nf_conntrack_tcp_set_closing`); an unconfirmed one never reaches the table."""

from __future__ import annotations

import shlex

from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Neighbour
from natbox.netfilter import TcpState
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.wire import ethernet, ipv4, tcp

LAN_MAC, WAN_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000101")
SERVER_MAC, CLIENT_MAC = bytes.fromhex("02000000aa02"), bytes.fromhex("020000000a05")
CLIENT, SERVER = parse_addr("10.0.1.5"), parse_addr("198.51.100.2")


def _engine(rules: list[str]) -> Engine:
    host = Host(name="gw", ip_forward=True)
    host.add_interface(Interface("eth0", mac=LAN_MAC))
    host.add_interface(Interface("eth1", mac=WAN_MAC))
    host.add_address("eth0", parse_addr("10.0.0.1"), 16)
    host.add_address("eth1", parse_addr("198.51.100.1"), 24)
    host.neighbours.append(Neighbour("eth1", SERVER, SERVER_MAC))
    host.neighbours.append(Neighbour("eth0", CLIENT, CLIENT_MAC))
    rs = Ruleset()
    for line in rules:
        rs.execute(parse_argv(shlex.split(line)))
    return Engine(host, ruleset=rs, seed=1)


def _syn(sport: int) -> bytes:
    seg = tcp.build_tcp(CLIENT, SERVER, sport, 80, seq=1000, flags=tcp.SYN)
    datagram = ipv4.build_ipv4(CLIENT, SERVER, 6, seg)
    return bytes(ethernet.build_ethernet(LAN_MAC, CLIENT_MAC, ethernet.ETH_P_IP, datagram))


def test_a_reset_for_a_confirmed_connection_closes_it() -> None:
    # the second SYN of the same connection (a retransmit) meets the REJECT rule the first one skipped;
    # -m conntrack makes the namespace track connections (nf_ct_netns_get)
    engine = _engine(["-A FORWARD -p tcp -m conntrack --ctstate NEW -m recent --name r --rcheck"
                      " -j REJECT --reject-with tcp-reset",
                      "-A FORWARD -p tcp -m recent --name r --set"])
    out = engine.receive(_syn(40000), "eth0", 1.0)
    assert [e.iface for e in out.emitted] == ["eth1"]
    [ct] = engine.table.live(1.0)
    assert ct.tcp is not None and ct.tcp.state == TcpState.SYN_SENT
    out = engine.receive(_syn(40000), "eth0", 2.0)
    assert [e.iface for e in out.emitted] == ["eth0"]  # the RST, to the client
    [ct] = engine.table.live(2.0)
    assert ct.tcp is not None and ct.tcp.state == TcpState.CLOSE
    assert ct.timeout == 2.0 + 10  # nf_conntrack_tcp_timeout_close
    assert engine.table.live(12.5) == []


def test_a_reset_for_a_new_connection_leaves_no_entry() -> None:
    engine = _engine(["-A FORWARD -p tcp -j REJECT --reject-with tcp-reset"])
    out = engine.receive(_syn(40001), "eth0", 1.0)
    assert [e.iface for e in out.emitted] == ["eth0"]
    assert engine.table.live(1.0) == []
