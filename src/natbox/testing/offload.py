"""Test helpers for the kernel data path (tests/offload): a router's engine and the plans it makes.

The router has eth0 on the LAN (10.0.1.1/24, the client 10.0.1.2 behind it) and eth1 on the WAN
(198.51.100.1/24, the server 198.51.100.2), MASQUERADE out of eth1, and static neighbours. Feeding it a
flow's packets (a UDP exchange, a TCP handshake and data, ICMP echoes) makes it compile both directions;
`flow_plans` returns those plans, original direction first.
"""

from __future__ import annotations

from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.fastpath import FlowPlan
from natbox.engine.host import Host, Interface, Neighbour
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ethernet, icmp, ipv4, tcp, udp

CLIENT = parse_addr("10.0.1.2")
LAN_ADDR = parse_addr("10.0.1.1")
PUBLIC = parse_addr("198.51.100.1")
SERVER = parse_addr("198.51.100.2")
RULES = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
         "-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n")
_SYN, _ACK, _PSH = 0x02, 0x10, 0x08


class RouterFlows:
    """An engine for the router above with the given MACs, and frames of flows to feed it."""

    def __init__(self, lan_mac: bytes, wan_mac: bytes, client_mac: bytes, server_mac: bytes, *,
                 wan_mtu: int = 1500) -> None:
        host = Host(name="router", ip_forward=True)
        host.add_interface(Interface("eth0", mac=lan_mac))
        host.add_interface(Interface("eth1", mac=wan_mac, mtu=wan_mtu))
        host.add_address("eth0", LAN_ADDR, 24)
        host.add_address("eth1", PUBLIC, 24)
        host.neighbours.append(Neighbour("eth0", CLIENT, client_mac))
        host.neighbours.append(Neighbour("eth1", SERVER, server_mac))
        rs = Ruleset()
        rs.restore(parse_restore(RULES, file="offload-test"))
        self.engine = Engine(host, ruleset=rs, seed=1)
        self.macs = (lan_mac, wan_mac, client_mac, server_mac)
        self.now = 1.0

    def _feed(self, datagram: bytes | bytearray, outbound: bool) -> None:
        lan_mac, wan_mac, client_mac, server_mac = self.macs
        if outbound:
            frame = ethernet.build_ethernet(lan_mac, client_mac, ethernet.ETH_P_IP, bytes(datagram))
        else:
            frame = ethernet.build_ethernet(wan_mac, server_mac, ethernet.ETH_P_IP, bytes(datagram))
        self.engine.receive(bytes(frame), "eth0" if outbound else "eth1", self.now)
        self.now += 0.01

    def udp(self, cport: int, sport: int, rounds: int = 3) -> None:
        for _ in range(rounds):
            self._feed(ipv4.build_ipv4(CLIENT, SERVER, 17, udp.build_udp(CLIENT, SERVER, cport, sport, b"q")), True)
            self._feed(ipv4.build_ipv4(SERVER, PUBLIC, 17, udp.build_udp(SERVER, PUBLIC, sport, cport, b"a")), False)

    def tcp(self, cport: int, sport: int, rounds: int = 3) -> None:
        """A handshake (client ISN 1000, server ISN 5000) and `rounds` of data each way."""
        c_seq, s_seq = 1000, 5000

        def seg(outbound: bool, flags: int, payload: bytes = b"") -> None:
            if outbound:
                data = tcp.build_tcp(CLIENT, SERVER, cport, sport, seq=c_seq, ack=s_seq, flags=flags, payload=payload)
                self._feed(ipv4.build_ipv4(CLIENT, SERVER, 6, data), True)
            else:
                data = tcp.build_tcp(SERVER, PUBLIC, sport, cport, seq=s_seq, ack=c_seq, flags=flags, payload=payload)
                self._feed(ipv4.build_ipv4(SERVER, PUBLIC, 6, data), False)

        seg(True, _SYN)
        c_seq += 1
        seg(False, _SYN | _ACK)
        s_seq += 1
        seg(True, _ACK)
        for _ in range(rounds):
            seg(True, _ACK | _PSH, b"data")
            c_seq += 4
            seg(False, _ACK | _PSH, b"back")
            s_seq += 4

    def ping(self, ident: int, rounds: int = 3) -> None:
        for seq in range(rounds):
            self._feed(ipv4.build_ipv4(CLIENT, SERVER, 1, icmp.build_icmp_echo(ident, seq, b"ping")), True)
            self._feed(ipv4.build_ipv4(SERVER, PUBLIC, 1, icmp.build_icmp_echo(ident, seq, b"ping", reply=True)),
                       False)

    def flow_plans(self, proto: int, cport: int) -> tuple[FlowPlan, FlowPlan]:
        """The compiled plans of the flow of protocol `proto` whose client port (ICMP: echo id) is
        `cport`: (original direction, reply direction)."""
        plans = [f.plan for f in self.engine._flowcache.flows.values()
                 if f.plan.proto == proto and cport.to_bytes(2, "big") in (f.plan.match[8:10], f.plan.match[10:12])]
        orig = [p for p in plans if p.direction == 0]
        reply = [p for p in plans if p.direction == 1]
        if len(orig) != 1 or len(reply) != 1:
            raise AssertionError(f"expected one plan per direction, got {plans}")
        return orig[0], reply[0]
