"""`natbox bench`'s IPv6 workload: the IPv4 one (cli/bench.py) in IPv6, through a NAT66 MASQUERADE gateway.

Established TCP and UDP flows from ULA clients (fd00:1::/64) to a server beyond the WAN link, NATed to the
gateway's global address by `ip6tables -t nat -A POSTROUTING -o eth1 -j MASQUERADE` (what Docker and podman
write for an IPv6 bridge network). Same flow counts, payloads and packet mix as the IPv4 workload (TCP data
out, ACKs back, UDP both ways), so `natbox bench` can print both rates from one run and their ratio.
"""

from __future__ import annotations

from natbox.cli.bench import PAYLOAD, steady_work
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Neighbour, Route6
from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ethernet, tcp
from natbox.wire.checksum import csum_fold, csum_partial
from natbox.wire.ipv6 import build_ipv6, parse_addr6, pseudo6_sum
from natbox.wire.layout import TCPH_CHECK, UDPH_CHECK, UDPH_LEN_BYTES

__all__ = ["gateway6", "workload6"]

RULES6 = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
          ":POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n")
GW_LAN_MAC = bytes.fromhex("020000000001")
GW_WAN_MAC = bytes.fromhex("020000000101")
SERVER_MAC = bytes.fromhex("02000000aa02")
SERVER6 = parse_addr6("2001:db8:100::2")
PUBLIC6 = parse_addr6("2001:db8:100::1")
CLIENTS6 = parse_addr6("fd00:1::")


def gateway6() -> Engine:
    """The IPv6 twin of `bench._gateway`: eth0 (LAN, fd00:1::1/64), eth1 (WAN, 2001:db8:100::1/64)."""
    host = Host(name="bench6", ipv6_forward=True)
    host.add_interface(Interface("eth0", mac=GW_LAN_MAC))
    host.add_interface(Interface("eth1", mac=GW_WAN_MAC))
    host.add_address6("eth0", CLIENTS6 + 1, 64)
    host.add_address6("eth1", PUBLIC6, 64)
    host.routes6.append(Route6(0, 0, "eth1", gateway=SERVER6))
    host.neighbours.append(Neighbour("eth1", SERVER6, SERVER_MAC))
    ruleset = Ruleset(NFPROTO_IPV6)
    ruleset.restore(parse_restore(RULES6, file="bench6", family=NFPROTO_IPV6))
    return Engine(host, ruleset6=ruleset, seed=1)


def _seal(src: int, dst: int, proto: int, seg: bytearray, at: int) -> bytes:
    """Write the segment's checksum with the IPv6 pseudo-header; the datagram with hop limit 64."""
    seg[at:at + 2] = b"\0\0"
    check = csum_fold(csum_partial(seg, pseudo6_sum(src, dst, proto, len(seg))))
    seg[at:at + 2] = (check or 0xFFFF).to_bytes(2, "big")
    return bytes(build_ipv6(src, dst, proto, seg))


def _frame(dst_mac: bytes, src_mac: bytes, datagram: bytes) -> bytes:
    return bytes(ethernet.build_ethernet(dst_mac, src_mac, ethernet.ETH_P_IPV6, datagram))


def _udp(src: int, dst: int, sport: int, dport: int) -> bytes:
    seg = bytearray(sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
                    + (UDPH_LEN_BYTES + len(PAYLOAD)).to_bytes(2, "big") + b"\0\0" + PAYLOAD)
    return _seal(src, dst, 17, seg, UDPH_CHECK)


class _TcpFlow6:
    """One TCP connection's frames: client data out, server ACKs back (the reply side is post-NAT)."""

    def __init__(self, client: int, sport: int) -> None:
        self.client, self.sport = client, sport
        self.cmac = b"\x02\x00" + (client & 0xFFFFFFFF).to_bytes(4, "big")
        self.cseq, self.sseq = 1000, 5000

    def _seg(self, src: int, dst: int, sp: int, dp: int, seq: int, ack: int, flags: int, data: bytes) -> bytes:
        seg = bytearray(tcp.build_tcp(0, 0, sp, dp, seq=seq, ack=ack, flags=flags, window=65535, payload=data))
        return _seal(src, dst, 6, seg, TCPH_CHECK)

    def out(self, flags: int, data: bytes = b"") -> bytes:
        d = self._seg(self.client, SERVER6, self.sport, 80, self.cseq, self.sseq, flags, data)
        self.cseq += len(data) + (1 if flags & (tcp.SYN | tcp.FIN) else 0)
        return _frame(GW_LAN_MAC, self.cmac, d)

    def back(self, flags: int, data: bytes = b"") -> bytes:
        d = self._seg(SERVER6, PUBLIC6, 80, self.sport, self.sseq, self.cseq, flags, data)
        self.sseq += len(data) + (1 if flags & (tcp.SYN | tcp.FIN) else 0)
        return _frame(GW_WAN_MAC, SERVER_MAC, d)


def workload6(flows: int, packets: int) -> tuple[Engine, list[tuple[bytes, str]]]:
    """Open `flows` TCP and `flows` UDP flows over IPv6, then build `packets` frames of established traffic
    (the same mix as `bench._workload`)."""
    engine = gateway6()
    tcp_flows = [_TcpFlow6(CLIENTS6 + 0x100 + i, 20000 + i) for i in range(flows)]
    for f in tcp_flows:
        engine.receive(f.out(tcp.SYN), "eth0", 0.0)
        engine.receive(f.back(tcp.SYN | tcp.ACK), "eth1", 0.0)
        engine.receive(f.out(tcp.ACK), "eth0", 0.0)
    udp_out, udp_back = [], []
    for i in range(flows):
        c = CLIENTS6 + 0x100 + i
        udp_out.append(_frame(GW_LAN_MAC, b"\x02\x00" + (c & 0xFFFFFFFF).to_bytes(4, "big"),
                              _udp(c, SERVER6, 30000 + i, 53)))
        udp_back.append(_frame(GW_WAN_MAC, SERVER_MAC, _udp(SERVER6, PUBLIC6, 53, 30000 + i)))
        engine.receive(udp_out[-1], "eth0", 0.0)
        engine.receive(udp_back[-1], "eth1", 0.0)
    return engine, steady_work(tcp_flows, udp_out, udp_back, packets)
