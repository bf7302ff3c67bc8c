"""IPv6 GSO and CHECKSUM_PARTIAL through the engine, as the live gateway hands them over (vnet headers): a
super-packet over the out MTU leaves whole with its GSO metadata (the device segments it), a partial
checksum stays partial and, completed, is right for the NATed addresses (inet_proto_csum_replace16 with
pseudohdr on CHECKSUM_PARTIAL)."""

from __future__ import annotations

import struct

from natbox.adapters.vnet import GSO_UDP_L4, complete_partial_csum, to_partial_csum
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Route6
from natbox.engine.output import Emitted
from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire.checksum import csum_fold, csum_partial
from natbox.wire.ethernet import ETH_P_IPV6, build_ethernet
from natbox.wire.ipv6 import build_ipv6, parse_addr6

LAN_MAC, WAN_MAC, C1_MAC = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02", b"\x02\xc1\x00\x00\x00\x01"
C1, SV, RT_WAN = parse_addr6("fd00:77::2"), parse_addr6("2001:db8:100::10"), parse_addr6("2001:db8:100::1")
MASQ = "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o wan0 -j MASQUERADE\nCOMMIT\n"


def _engine() -> Engine:
    host = Host(ipv6_forward=True)
    host.add_interface(Interface("lan0", mac=LAN_MAC))
    host.add_interface(Interface("wan0", mac=WAN_MAC))
    host.add_address6("lan0", parse_addr6("fd00:77::1"), 64)
    host.add_address6("wan0", RT_WAN, 64)
    host.routes6.append(Route6(0, 0, "wan0", gateway=SV))
    rs = Ruleset(NFPROTO_IPV6)
    rs.restore(parse_restore(MASQ, file="<test>", family=NFPROTO_IPV6))
    return Engine(host, ruleset6=rs)


def _pseudo(datagram: bytes | bytearray) -> int:
    return csum_partial(bytes(datagram[8:40]) + struct.pack("!IxxxB", len(datagram) - 40, datagram[6]))


def _l4_ok(datagram: bytes | bytearray) -> bool:
    return csum_fold(csum_partial(bytes(datagram[40:]), _pseudo(datagram))) == 0


def _gso_udp(size: int) -> bytearray:
    """An Ethernet frame with an IPv6 UDP datagram of `size` payload bytes, its checksum in partial form."""
    seg = bytearray(struct.pack("!HHHH", 40000, 5002, 8 + size, 0) + bytes(range(256)) * (size // 256))
    datagram = build_ipv6(C1, SV, 17, bytes(seg))
    datagram[46:48] = (csum_fold(csum_partial(bytes(datagram[40:]), _pseudo(datagram))) or 0xFFFF).to_bytes(2, "big")
    assert _l4_ok(datagram)
    frame = bytearray(build_ethernet(LAN_MAC, C1_MAC, ETH_P_IPV6, datagram))
    assert to_partial_csum(frame) == (54, 6)
    return frame


def test_gso_super_packet_leaves_whole_with_its_metadata() -> None:
    eng = _engine()
    out = eng.receive(bytes(_gso_udp(4096)), "lan0", 1.0, gso_type=GSO_UDP_L4, gso_size=1200, partial=True)
    sent: list[Emitted] = [e for e in out.emitted if e.iface == "wan0"]
    assert len(sent) == 1, out.emitted
    e = sent[0]
    assert (e.gso_type, e.gso_size, e.partial) == (GSO_UDP_L4, 1200, True)
    frame = bytearray(e.frame)
    assert int.from_bytes(frame[14 + 8:14 + 24], "big") == RT_WAN  # masqueraded
    assert complete_partial_csum(frame, 54, 6) and _l4_ok(bytes(frame[14:]))


def test_small_partial_packet_stays_partial_without_gso() -> None:
    eng = _engine()
    out = eng.receive(bytes(_gso_udp(512)), "lan0", 1.0, partial=True)
    (e,) = [e for e in out.emitted if e.iface == "wan0"]
    assert (e.gso_type, e.gso_size, e.partial) == (0, 0, True)
    frame = bytearray(e.frame)
    assert complete_partial_csum(frame, 54, 6) and _l4_ok(bytes(frame[14:]))
