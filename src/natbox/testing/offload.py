"""Test helpers for the kernel data path (tests/offload, tests/engine, bench): a router's engine and the plans it
makes, and packet sockets that see frames on a lab's devices.

The IPv4 router has eth0 on the LAN (10.0.1.1/24, the client 10.0.1.2 behind it) and eth1 on the WAN
(198.51.100.1/24, the server 198.51.100.2), MASQUERADE out of eth1, and static neighbours. Feeding it a
flow's packets (a UDP exchange, a TCP handshake and data, ICMP echoes) makes it compile both directions;
`flow_plans` returns those plans, original direction first. RouterFlowsBase is what the IPv4 router here and
the NAT66 one (offload6.RouterFlows6) share: only the host, the datagrams and the header offsets differ.

For the live tests: `capture` (a packet socket in a namespace that says which frames are CHECKSUM_PARTIAL),
`received`, and `check_frame` (addresses, TTL, the IP checksum and the L4 checksum of a frame on the wire,
full or partial).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from typing import ClassVar

from natbox.adapters.netns import enter_netns
from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.fastpath import FlowPlan
from natbox.engine.host import Host, Interface, Neighbour
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ethernet, icmp, ipv4, tcp, udp
from natbox.wire.checksum import csum_partial, internet_checksum, pseudo_header_sum
from natbox.wire.layout import (
    ETH_HDR_LEN,
    ICMPH_ID,
    IPH_DADDR,
    IPH_MIN_LEN,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_TOT_LEN,
    IPH_TTL,
    TCPH_CHECK,
    UDPH_CHECK,
)

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


def datagram4(src: int, dst: int, proto: int, sport: int, dport: int, *, seq: int = 0, ack: int = 0,
              flags: int = _ACK, payload: bytes = b"", reply: bool = False) -> bytes:
    """An IPv4 datagram: TCP, UDP, or an ICMP echo (`sport` the id, `dport` the sequence; `reply`)."""
    if proto == 1:
        seg = icmp.build_icmp_echo(sport, dport, payload, reply=reply)
    elif proto == 6:
        seg = tcp.build_tcp(src, dst, sport, dport, seq=seq, ack=ack, flags=flags, payload=payload)
    else:
        seg = udp.build_udp(src, dst, sport, dport, payload)
    return bytes(ipv4.build_ipv4(src, dst, proto, seg))


class RouterFlowsBase:
    """An engine of a two-device router (eth0 LAN, eth1 WAN) with the given MACs, and frames of flows to feed
    it: each reply is built from what the engine emitted for the request (whatever NAT chose). A family's
    subclass builds the engine and says how its datagrams are made and read."""

    ETHERTYPE: ClassVar[int]
    ICMP: ClassVar[int]  # the echo's protocol (IPPROTO_ICMP or IPPROTO_ICMPV6)
    CLIENT: ClassVar[int]
    SERVER: ClassVar[int]
    SPORT_AT: ClassVar[slice]  # a FlowPlan's match: the source port (TCP, UDP) ...
    ID_AT: ClassVar[slice]  # ... and the echo id

    def __init__(self, engine: Engine, macs: tuple[bytes, bytes, bytes, bytes]) -> None:
        self.engine = engine
        self.macs = macs  # router eth0, router eth1, client, server
        self.now = 1.0

    @staticmethod
    def datagram(src: int, dst: int, proto: int, sport: int, dport: int, *, seq: int = 0, ack: int = 0,
                 flags: int = _ACK, payload: bytes = b"", reply: bool = False) -> bytes:
        raise NotImplementedError

    @staticmethod
    def translated(frame: bytes) -> tuple[int, int, int, int]:
        """saddr, daddr, sport, dport (ICMP echo: the id twice) of an emitted frame."""
        raise NotImplementedError

    def frame(self, datagram: bytes | bytearray, outbound: bool) -> bytes:
        """The frame carrying a datagram from the client (`outbound`) or the server to the router."""
        lan_mac, wan_mac, client_mac, server_mac = self.macs
        dst, src = (lan_mac, client_mac) if outbound else (wan_mac, server_mac)
        return bytes(ethernet.build_ethernet(dst, src, self.ETHERTYPE, bytes(datagram)))

    def feed(self, datagram: bytes | bytearray, outbound: bool, *, partial: bool = False) -> bytes:
        """One datagram in, from the client (`outbound`) or the server; the one frame the engine emits."""
        out = self.engine.receive(self.frame(datagram, outbound), "eth0" if outbound else "eth1", self.now,
                                  partial=partial)
        self.now += 0.01
        if len(out.emitted) != 1:
            raise AssertionError(f"expected one frame out, got {out}")
        return bytes(out.emitted[0].frame)

    def udp(self, cport: int, dport: int, rounds: int = 3, dst: int | None = None) -> None:
        dst = self.SERVER if dst is None else dst
        for _ in range(rounds):
            sent = self.feed(self.datagram(self.CLIENT, dst, 17, cport, dport, payload=b"q"), True)
            s, d, sp, dp = self.translated(sent)
            self.feed(self.datagram(d, s, 17, dp, sp, payload=b"a"), False)

    def tcp(self, cport: int, dport: int, rounds: int = 3, dst: int | None = None) -> tuple[int, int]:
        """A handshake (client ISN 1000, server ISN 5000) and `rounds` of data each way; the next sequence
        numbers of the client and the server."""
        dst = self.SERVER if dst is None else dst
        c_seq, s_seq = 1000, 5000
        wan = (0, 0, 0, 0)

        def seg(outbound: bool, flags: int, payload: bytes = b"") -> None:
            nonlocal wan
            if outbound:
                data = self.datagram(self.CLIENT, dst, 6, cport, dport, seq=c_seq, ack=s_seq, flags=flags,
                                     payload=payload)
                wan = self.translated(self.feed(data, True))
            else:
                s, d, sp, dp = wan
                self.feed(self.datagram(d, s, 6, dp, sp, seq=s_seq, ack=c_seq, flags=flags, payload=payload), False)

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
        return c_seq, s_seq

    def ping(self, ident: int, rounds: int = 3) -> None:
        for seq in range(rounds):
            sent = self.feed(self.datagram(self.CLIENT, self.SERVER, self.ICMP, ident, seq, payload=b"ping"), True)
            s, d, wan_id, _ = self.translated(sent)
            self.feed(self.datagram(d, s, self.ICMP, wan_id, seq, payload=b"ping", reply=True), False)

    def flow_plans(self, proto: int, cport: int) -> tuple[FlowPlan, FlowPlan]:
        """The compiled plans of the flow of protocol `proto` whose client port (ICMP: echo id) is
        `cport`: (original direction, reply direction); the plans an offloading engine keeps for the
        datapath alone (FlowCache.planned) too."""
        at = self.ID_AT if proto == self.ICMP else self.SPORT_AT
        cache = self.engine._flowcache6 if self.ETHERTYPE == ethernet.ETH_P_IPV6 else self.engine._flowcache
        plans = [f.plan for f in (*cache.flows.values(), *cache.planned.values()) if f.plan.proto == proto]
        orig = [p for p in plans if p.direction == 0 and p.match[at] == cport.to_bytes(2, "big")]
        if len(orig) != 1:
            raise AssertionError(f"expected one original-direction plan, got {plans}")
        reply = [p for p in plans if p.direction == 1 and p.ct_id == orig[0].ct_id]
        if len(reply) != 1:
            raise AssertionError(f"expected one reply-direction plan, got {plans}")
        return orig[0], reply[0]


class RouterFlows(RouterFlowsBase):
    """The IPv4 router above (the module docstring)."""

    ETHERTYPE = ethernet.ETH_P_IP
    ICMP = 1
    CLIENT = CLIENT
    SERVER = SERVER
    SPORT_AT = slice(8, 10)
    ID_AT = slice(10, 12)
    datagram = staticmethod(datagram4)

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
        super().__init__(Engine(host, ruleset=rs, seed=1), (lan_mac, wan_mac, client_mac, server_mac))

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


# --- on the wire (live tests) -------------------------------------------------------------------------------

SOL_PACKET, PACKET_AUXDATA, TP_STATUS_CSUMNOTREADY, PACKET_OUTGOING = 263, 8, 8, 4
_AUX = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata: tp_status first


@contextlib.contextmanager
def capture(ns: str, dev: str, ethertype: int = ethernet.ETH_P_IP, rcvbuf: int = 8 << 20) -> Iterator[socket.socket]:
    """A packet socket for the frames of `ethertype` `dev` receives in namespace `ns`, with PACKET_AUXDATA
    (`received`)."""
    with enter_netns(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
    try:
        s.bind((dev, 0))
        s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(0.2)
        yield s
    finally:
        s.close()


def received(s: socket.socket, limit: int = 100000) -> list[tuple[bytes, bool]]:
    """Frames the device received since the socket opened (at most `limit`): (frame, CHECKSUM_PARTIAL)."""
    out: list[tuple[bytes, bool]] = []
    while len(out) < limit:
        try:
            data, anc, _flags, addr = s.recvmsg(70000, socket.CMSG_SPACE(_AUX.size))
        except TimeoutError:
            break
        if addr[2] == PACKET_OUTGOING:
            continue
        status = 0
        for level, kind, value in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA:
                status = _AUX.unpack(value[:_AUX.size])[0]
        out.append((data, bool(status & TP_STATUS_CSUMNOTREADY)))
    return out


def check_frame(frame: bytes, partial: bool, saddr: int, daddr: int, ttl: int = 63) -> int:
    """Assert a translated IPv4 frame is well formed: addresses, TTL, the IP header checksum, and its L4
    checksum valid as a full sum (ICMP: always) or, CHECKSUM_PARTIAL, equal to the folded pseudo-header sum
    of the addresses on the wire; a UDP datagram may have none. Returns its protocol."""
    ip = frame[ETH_HDR_LEN:]
    tot_len = int.from_bytes(ip[IPH_TOT_LEN:IPH_TOT_LEN + 2], "big")
    ip = ip[:tot_len]
    assert int.from_bytes(ip[IPH_SADDR:IPH_SADDR + 4], "big") == saddr
    assert int.from_bytes(ip[IPH_DADDR:IPH_DADDR + 4], "big") == daddr
    assert ip[IPH_TTL] == ttl
    assert internet_checksum(ip[:IPH_MIN_LEN]) == 0, "IP header checksum"
    proto = ip[IPH_PROTOCOL]
    seg = ip[IPH_MIN_LEN:]
    pseudo = pseudo_header_sum(saddr, daddr, proto, len(seg))
    if proto == 1:
        assert internet_checksum(seg) == 0, "ICMP checksum"
    elif partial:  # the field holds the folded, uncomplemented pseudo-header sum
        at = TCPH_CHECK if proto == 6 else UDPH_CHECK
        field = int.from_bytes(seg[at:at + 2], "big")
        assert (field - csum_partial(b"", pseudo)) % 0xFFFF == 0, f"partial checksum {field:#06x}"
    elif proto == 17 and seg[UDPH_CHECK:UDPH_CHECK + 2] == b"\0\0":
        pass  # no checksum
    else:
        assert internet_checksum(seg, pseudo) == 0, "L4 checksum"
    return proto
