"""Test helpers for the kernel data path (tests/offload): a router's engine and the plans it makes.

The router has eth0 on the LAN (10.0.1.1/24, the client 10.0.1.2 behind it) and eth1 on the WAN
(198.51.100.1/24, the server 198.51.100.2), MASQUERADE out of eth1, and static neighbours. Feeding it a
flow's packets (a UDP exchange, a TCP handshake and data, ICMP echoes) makes it compile both directions;
`flow_plans` returns those plans, original direction first.
"""

from __future__ import annotations

import struct

from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.fastpath import FlowPlan
from natbox.engine.host import Host, Interface, Neighbour
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ethernet, icmp, ipv4, tcp, udp
from natbox.wire.layout import ETH_HDR_LEN, ICMPH_ID, IPH_MIN_LEN, IPH_PROTOCOL, IPH_SADDR

CLIENT = parse_addr("10.0.1.2")
LAN_ADDR = parse_addr("10.0.1.1")
PUBLIC = parse_addr("198.51.100.1")
SERVER = parse_addr("198.51.100.2")
RULES = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
         "-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n")
_SYN, _ACK, _PSH = 0x02, 0x10, 0x08


# DNAT of the router's own port 6000 to the server's 5000 and SNAT to a port range: both manips change
# addresses and ports (the checksum differences of ports are not zero)
PORTMAP_RULES = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                 ":POSTROUTING ACCEPT [0:0]\n"
                 "-A PREROUTING -i eth0 -d 10.0.1.1 -p udp --dport 6000 -j DNAT --to-destination 198.51.100.2:5000\n"
                 "-A PREROUTING -i eth0 -d 10.0.1.1 -p tcp --dport 6001 -j DNAT --to-destination 198.51.100.2:5001\n"
                 "-A POSTROUTING -o eth1 -p udp -j SNAT --to-source 198.51.100.1:30000-30099\n"
                 "-A POSTROUTING -o eth1 -p tcp -j SNAT --to-source 198.51.100.1:30000-30099\n"
                 "-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n")
_TUPLE = struct.Struct("!4s4sHH")  # saddr, daddr, sport, dport from the IP saddr on (TCP and UDP)


class RouterFlows:
    """An engine for the router above with the given MACs, and frames of flows to feed it: each reply is
    built from what the engine emitted for the request (whatever NAT chose)."""

    def __init__(self, lan_mac: bytes, wan_mac: bytes, client_mac: bytes, server_mac: bytes, *,
                 wan_mtu: int = 1500, rules: str = RULES) -> None:
        host = Host(name="router", ip_forward=True)
        host.add_interface(Interface("eth0", mac=lan_mac))
        host.add_interface(Interface("eth1", mac=wan_mac, mtu=wan_mtu))
        host.add_address("eth0", LAN_ADDR, 24)
        host.add_address("eth1", PUBLIC, 24)
        host.neighbours.append(Neighbour("eth0", CLIENT, client_mac))
        host.neighbours.append(Neighbour("eth1", SERVER, server_mac))
        rs = Ruleset()
        rs.restore(parse_restore(rules, file="offload-test"))
        self.engine = Engine(host, ruleset=rs, seed=1)
        self.macs = (lan_mac, wan_mac, client_mac, server_mac)
        self.now = 1.0

    def frame(self, datagram: bytes | bytearray, outbound: bool) -> bytes:
        """The frame carrying a datagram from the client (`outbound`) or the server to the router."""
        lan_mac, wan_mac, client_mac, server_mac = self.macs
        if outbound:
            return bytes(ethernet.build_ethernet(lan_mac, client_mac, ethernet.ETH_P_IP, bytes(datagram)))
        return bytes(ethernet.build_ethernet(wan_mac, server_mac, ethernet.ETH_P_IP, bytes(datagram)))

    def feed(self, datagram: bytes | bytearray, outbound: bool, *, partial: bool = False) -> bytes:
        """One datagram in, from the client (`outbound`) or the server; the one frame the engine emits."""
        out = self.engine.receive(self.frame(datagram, outbound), "eth0" if outbound else "eth1", self.now,
                                  partial=partial)
        self.now += 0.01
        if len(out.emitted) != 1:
            raise AssertionError(f"expected one frame out, got {out}")
        return bytes(out.emitted[0].frame)

    @staticmethod
    def translated(frame: bytes) -> tuple[int, int, int, int]:
        """saddr, daddr, sport, dport (ICMP echo: the id twice) of an emitted frame."""
        ip = frame[ETH_HDR_LEN:]
        if ip[IPH_PROTOCOL] == 1:
            saddr, daddr = struct.unpack_from("!II", ip, IPH_SADDR)
            ident = int.from_bytes(ip[IPH_MIN_LEN + ICMPH_ID:IPH_MIN_LEN + ICMPH_ID + 2], "big")
            return saddr, daddr, ident, ident
        s, d, sp, dp = _TUPLE.unpack_from(ip, IPH_SADDR)
        return int.from_bytes(s, "big"), int.from_bytes(d, "big"), sp, dp

    def udp(self, cport: int, dport: int, rounds: int = 3, dst: int = SERVER) -> None:
        for _ in range(rounds):
            sent = self.feed(ipv4.build_ipv4(CLIENT, dst, 17, udp.build_udp(CLIENT, dst, cport, dport, b"q")), True)
            s, d, sp, dp = self.translated(sent)
            self.feed(ipv4.build_ipv4(d, s, 17, udp.build_udp(d, s, dp, sp, b"a")), False)

    def tcp(self, cport: int, dport: int, rounds: int = 3, dst: int = SERVER) -> None:
        """A handshake (client ISN 1000, server ISN 5000) and `rounds` of data each way."""
        c_seq, s_seq = 1000, 5000
        wan = (0, 0, 0, 0)

        def seg(outbound: bool, flags: int, payload: bytes = b"") -> None:
            nonlocal wan
            if outbound:
                data = tcp.build_tcp(CLIENT, dst, cport, dport, seq=c_seq, ack=s_seq, flags=flags, payload=payload)
                wan = self.translated(self.feed(ipv4.build_ipv4(CLIENT, dst, 6, data), True))
            else:
                s, d, sp, dp = wan
                data = tcp.build_tcp(d, s, dp, sp, seq=s_seq, ack=c_seq, flags=flags, payload=payload)
                self.feed(ipv4.build_ipv4(d, s, 6, data), False)

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
            sent = self.feed(ipv4.build_ipv4(CLIENT, SERVER, 1, icmp.build_icmp_echo(ident, seq, b"ping")), True)
            s, d, wan_id, _ = self.translated(sent)
            self.feed(ipv4.build_ipv4(d, s, 1, icmp.build_icmp_echo(wan_id, seq, b"ping", reply=True)), False)

    def flow_plans(self, proto: int, cport: int) -> tuple[FlowPlan, FlowPlan]:
        """The compiled plans of the flow of protocol `proto` whose client port (ICMP: echo id) is
        `cport`: (original direction, reply direction)."""
        at = slice(10, 12) if proto == 1 else slice(8, 10)  # the match's id (ICMP) or source port
        plans = [f.plan for f in self.engine._flowcache.flows.values() if f.plan.proto == proto]
        orig = [p for p in plans if p.direction == 0 and p.match[at] == cport.to_bytes(2, "big")]
        if len(orig) != 1:
            raise AssertionError(f"expected one original-direction plan, got {plans}")
        reply = [p for p in plans if p.direction == 1 and p.ct_id == orig[0].ct_id]
        if len(reply) != 1:
            raise AssertionError(f"expected one reply-direction plan, got {plans}")
        return orig[0], reply[0]
