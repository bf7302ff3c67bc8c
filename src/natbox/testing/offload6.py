"""Test helpers for the IPv6 side of the kernel data path (tests/offload, tests/engine): a NAT66 router's engine.

The router has eth0 on the LAN (fd00:1::1/64, the client fd00:1::2 behind it) and eth1 on the WAN
(2001:db8:1::1/64, the server 2001:db8:1::2), ip6tables MASQUERADE out of eth1, and static neighbours.
Feeding it a flow's packets (a UDP exchange, a TCP handshake and data, ICMPv6 echoes) makes it compile both
directions (engine/fastpath6.py); `flow_plans` returns those plans, original direction first.

For the live tests: `capture6` (a packet socket in a namespace that says which frames are CHECKSUM_PARTIAL)
and `check_frame6` (addresses, hop limit and the L4 checksum of a frame on the wire, full or partial).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator

from natbox.adapters.netns import enter_netns
from natbox.engine.engine import Engine
from natbox.engine.fastpath import FlowPlan
from natbox.engine.host import Host, Interface, Neighbour
from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ethernet, tcp, udp
from natbox.wire.checksum import csum_fold, csum_partial
from natbox.wire.icmpv6 import build_icmpv6_echo
from natbox.wire.ipv6 import build_ipv6, parse_addr6, pseudo6_sum
from natbox.wire.layout import (
    ETH_HDR_LEN,
    ICMP6H_CKSUM,
    ICMP6H_IDENTIFIER,
    IP6H_HOP_LIMIT,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IP6H_PAYLOAD_LEN,
    IP6H_SADDR,
    TCPH_CHECK,
    UDPH_CHECK,
)

CLIENT6 = parse_addr6("fd00:1::2")
LAN6 = parse_addr6("fd00:1::1")
PUBLIC6 = parse_addr6("2001:db8:1::1")
SERVER6 = parse_addr6("2001:db8:1::2")
RULES6 = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
          "-A POSTROUTING -s fd00:1::/64 -o eth1 -j MASQUERADE\nCOMMIT\n")
# DNAT of the router's own port 6000/6001 to the server's 5000/5001 and SNAT to a port range: both manips
# change addresses and ports
PORTMAP_RULES6 = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                  ":POSTROUTING ACCEPT [0:0]\n"
                  "-A PREROUTING -i eth0 -d fd00:1::1 -p udp --dport 6000 -j DNAT --to-destination "
                  "[2001:db8:1::2]:5000\n"
                  "-A PREROUTING -i eth0 -d fd00:1::1 -p tcp --dport 6001 -j DNAT --to-destination "
                  "[2001:db8:1::2]:5001\n"
                  "-A POSTROUTING -o eth1 -p udp -j SNAT --to-source [2001:db8:1::1]:30000-30099\n"
                  "-A POSTROUTING -o eth1 -p tcp -j SNAT --to-source [2001:db8:1::1]:30000-30099\n"
                  "-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n")
_SYN, _ACK, _PSH = 0x02, 0x10, 0x08
_L4 = ETH_HDR_LEN + IP6H_LEN
_CSUM_AT = {6: TCPH_CHECK, 17: UDPH_CHECK, 58: ICMP6H_CKSUM}
_PORTS = struct.Struct("!HH")


def l4_checksum6(src: int, dst: int, proto: int, seg: bytes | bytearray, *, partial: bool = False) -> bytes:
    """`seg` with its TCP/UDP/ICMPv6 checksum set for the IPv6 pseudo-header (UDP: 0 sent as 0xFFFF); with
    `partial`, the folded pseudo-header sum a CHECKSUM_PARTIAL sender leaves there (uncomplemented)."""
    out = bytearray(seg)
    at = _CSUM_AT[proto]
    out[at:at + 2] = b"\0\0"
    total = pseudo6_sum(src, dst, proto, len(out))
    if partial:
        check = ~csum_fold(total) & 0xFFFF
    else:
        check = csum_fold(csum_partial(out, total)) or (0xFFFF if proto == 17 else 0)
    out[at:at + 2] = check.to_bytes(2, "big")
    return bytes(out)


def datagram6(src: int, dst: int, proto: int, sport: int, dport: int, *, seq: int = 0, ack: int = 0,
              flags: int = _ACK, payload: bytes = b"", partial: bool = False, reply: bool = False) -> bytes:
    """An IPv6 datagram: TCP, UDP, or an ICMPv6 echo (`sport` the id, `dport` the sequence; `reply`)."""
    if proto == 58:
        return build_icmpv6_echo(src, dst, sport, dport, payload, reply=reply)
    if proto == 6:
        seg = tcp.build_tcp(src, dst, sport, dport, seq=seq, ack=ack, flags=flags, payload=payload)
    else:
        seg = udp.build_udp(src, dst, sport, dport, payload)
    return bytes(build_ipv6(src, dst, proto, l4_checksum6(src, dst, proto, seg, partial=partial)))


class RouterFlows6:
    """An engine for the router above with the given MACs, and frames of flows to feed it: each reply is
    built from what the engine emitted for the request (whatever NAT chose)."""

    def __init__(self, lan_mac: bytes, wan_mac: bytes, client_mac: bytes, server_mac: bytes, *,
                 wan_mtu: int = 1500, rules: str = RULES6, offload: bool = False) -> None:
        host = Host(name="router", ipv6_forward=True)
        host.add_interface(Interface("eth0", mac=lan_mac))
        host.add_interface(Interface("eth1", mac=wan_mac, mtu=wan_mtu))
        host.add_address6("eth0", LAN6, 64)
        host.add_address6("eth1", PUBLIC6, 64)
        host.neighbours.append(Neighbour("eth0", CLIENT6, client_mac))
        host.neighbours.append(Neighbour("eth1", SERVER6, server_mac))
        rs = Ruleset(NFPROTO_IPV6)
        rs.restore(parse_restore(rules, file="offload6-test", family=NFPROTO_IPV6))
        self.engine = Engine(host, ruleset6=rs, seed=1, offload=offload)
        self.macs = (lan_mac, wan_mac, client_mac, server_mac)
        self.now = 1.0

    def frame(self, datagram: bytes | bytearray, outbound: bool) -> bytes:
        """The frame carrying a datagram from the client (`outbound`) or the server to the router."""
        lan_mac, wan_mac, client_mac, server_mac = self.macs
        dst, src = (lan_mac, client_mac) if outbound else (wan_mac, server_mac)
        return bytes(ethernet.build_ethernet(dst, src, ethernet.ETH_P_IPV6, bytes(datagram)))

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
        """saddr, daddr, sport, dport (ICMPv6 echo: the id twice) of an emitted frame."""
        ip = frame[ETH_HDR_LEN:]
        saddr = int.from_bytes(ip[IP6H_SADDR:IP6H_SADDR + 16], "big")
        daddr = int.from_bytes(ip[IP6H_SADDR + 16:IP6H_LEN], "big")
        if ip[IP6H_NEXTHDR] == 58:
            ident = int.from_bytes(ip[IP6H_LEN + ICMP6H_IDENTIFIER:IP6H_LEN + ICMP6H_IDENTIFIER + 2], "big")
            return saddr, daddr, ident, ident
        sport, dport = _PORTS.unpack_from(ip, IP6H_LEN)
        return saddr, daddr, sport, dport

    def udp(self, cport: int, dport: int, rounds: int = 3, dst: int = SERVER6) -> None:
        for _ in range(rounds):
            sent = self.feed(datagram6(CLIENT6, dst, 17, cport, dport, payload=b"q"), True)
            s, d, sp, dp = self.translated(sent)
            self.feed(datagram6(d, s, 17, dp, sp, payload=b"a"), False)

    def tcp(self, cport: int, dport: int, rounds: int = 3, dst: int = SERVER6) -> tuple[int, int]:
        """A handshake (client ISN 1000, server ISN 5000) and `rounds` of data each way; the next sequence
        numbers of the client and the server."""
        c_seq, s_seq = 1000, 5000
        wan = (0, 0, 0, 0)

        def seg(outbound: bool, flags: int, payload: bytes = b"") -> None:
            nonlocal wan
            if outbound:
                data = datagram6(CLIENT6, dst, 6, cport, dport, seq=c_seq, ack=s_seq, flags=flags, payload=payload)
                wan = self.translated(self.feed(data, True))
            else:
                s, d, sp, dp = wan
                self.feed(datagram6(d, s, 6, dp, sp, seq=s_seq, ack=c_seq, flags=flags, payload=payload), False)

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
            sent = self.feed(datagram6(CLIENT6, SERVER6, 58, ident, seq, payload=b"ping"), True)
            s, d, wan_id, _ = self.translated(sent)
            self.feed(datagram6(d, s, 58, wan_id, seq, payload=b"ping", reply=True), False)

    def flow_plans(self, proto: int, cport: int) -> tuple[FlowPlan, FlowPlan]:
        """The compiled plans of the flow of protocol `proto` whose client port (ICMPv6: echo id) is
        `cport`: (original direction, reply direction)."""
        at = slice(34, 36) if proto == 58 else slice(32, 34)  # the match's id (ICMPv6) or source port
        cache = self.engine._flowcache6
        plans = [f.plan for f in (*cache.flows.values(), *cache.planned.values()) if f.plan.proto == proto]
        orig = [p for p in plans if p.direction == 0 and p.match[at] == cport.to_bytes(2, "big")]
        if len(orig) != 1:
            raise AssertionError(f"expected one original-direction plan, got {plans}")
        reply = [p for p in plans if p.direction == 1 and p.ct_id == orig[0].ct_id]
        if len(reply) != 1:
            raise AssertionError(f"expected one reply-direction plan, got {plans}")
        return orig[0], reply[0]


# --- on the wire (live tests) -------------------------------------------------------------------------------

SOL_PACKET, PACKET_AUXDATA, TP_STATUS_CSUMNOTREADY, PACKET_OUTGOING = 263, 8, 8, 4
_AUX = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata: tp_status first


@contextlib.contextmanager
def capture6(ns: str, dev: str, rcvbuf: int = 8 << 20) -> Iterator[socket.socket]:
    """A packet socket for the IPv6 frames `dev` receives in namespace `ns`, with PACKET_AUXDATA (`received6`)."""
    with enter_netns(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethernet.ETH_P_IPV6))
    try:
        s.bind((dev, 0))
        s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(0.2)
        yield s
    finally:
        s.close()


def received6(s: socket.socket, limit: int = 100000) -> list[tuple[bytes, bool]]:
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


def check_frame6(frame: bytes, partial: bool, saddr: int, daddr: int, hop: int = 63) -> int:
    """Assert a translated IPv6 frame is well formed: addresses, hop limit, and its L4 checksum valid as a full
    sum or, CHECKSUM_PARTIAL, equal to the folded pseudo-header sum of the addresses on the wire (what the
    rewrite must leave for whoever completes it). Returns its next header."""
    ip = frame[ETH_HDR_LEN:]
    ip = ip[:IP6H_LEN + int.from_bytes(ip[IP6H_PAYLOAD_LEN:IP6H_PAYLOAD_LEN + 2], "big")]
    assert int.from_bytes(ip[IP6H_SADDR:IP6H_SADDR + 16], "big") == saddr
    assert int.from_bytes(ip[IP6H_SADDR + 16:IP6H_LEN], "big") == daddr
    assert ip[IP6H_HOP_LIMIT] == hop
    proto = ip[IP6H_NEXTHDR]
    seg = ip[IP6H_LEN:]
    pseudo = pseudo6_sum(saddr, daddr, proto, len(seg))
    if partial:
        at = _CSUM_AT[proto]
        field = int.from_bytes(seg[at:at + 2], "big")
        assert (field - (~csum_fold(pseudo) & 0xFFFF)) % 0xFFFF == 0, f"partial checksum {field:#06x}"
    else:
        assert proto != 17 or seg[UDPH_CHECK:UDPH_CHECK + 2] != b"\0\0", "a zero UDP checksum on IPv6"
        assert csum_fold(csum_partial(seg, pseudo)) == 0, f"{proto} checksum"
    return proto
