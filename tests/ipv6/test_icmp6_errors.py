"""The ICMPv6 errors the router sends besides hop limit, unreachable and too big (ipv6-semantics.md §4): Time
Exceeded for a conntrack reassembly queue that timed out (ip6frag_expire_frag_queue), Parameter Problem for
an unrecognised Hop-by-Hop option (ip6_parse_tlv), and Redirect for a packet forwarded out of the interface
it came in on (ip6_forward → ndisc_send_redirect)."""

from __future__ import annotations

import struct

from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Route6
from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire.ethernet import ETH_P_IPV6, build_ethernet
from natbox.wire.ipv6 import build_ipv6, parse_addr6

A = parse_addr6
LAN_MAC, WAN_MAC = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
C1_MAC, C2_MAC = b"\x02\xc1\x00\x00\x00\x01", b"\x02\xc2\x00\x00\x00\x02"
C1, C2, RT_LAN, RT_LL = A("fd00:77::2"), A("fd00:77::3"), A("fd00:77::1"), A("fe80::1")
SV, RT_WAN = A("2001:db8:100::10"), A("2001:db8:100::1")
MASQ = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o wan0 -j MASQUERADE
COMMIT
"""


def _engine(rules: str = MASQ) -> Engine:
    host = Host(ipv6_forward=True)
    host.add_interface(Interface("lan0", mac=LAN_MAC))
    host.add_interface(Interface("wan0", mac=WAN_MAC))
    host.add_address6("lan0", RT_LL, 64)
    host.add_address6("lan0", RT_LAN, 64)
    host.add_address6("wan0", RT_WAN, 64)
    host.routes6.append(Route6(0, 0, "wan0", gateway=SV))
    rs = Ruleset(NFPROTO_IPV6)
    if rules:
        rs.restore(parse_restore(rules, file="<test>", family=NFPROTO_IPV6))
    return Engine(host, ruleset6=rs)


def _frame(src_mac: bytes, datagram: bytes | bytearray, dst_mac: bytes = LAN_MAC) -> bytes:
    return bytes(build_ethernet(dst_mac, src_mac, ETH_P_IPV6, datagram))


def _udp(src: int, dst: int, sport: int, dport: int, payload: bytes) -> bytes:
    return bytes(build_ipv6(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload))


def _frag(datagram: bytes, off: int, size: int, more: bool, ident: int) -> bytes:
    body = datagram[40:][off:off + size]
    h = bytearray(datagram[:40])
    h[6] = 44
    h[4:6] = (8 + len(body)).to_bytes(2, "big")
    return bytes(h) + struct.pack("!BBHI", datagram[6], 0, off | int(more), ident) + body


def _icmp6(out: list[bytes]) -> list[tuple[int, int, int, bytes]]:
    """(type, code, destination, quoted bytes) of the ICMPv6 messages among `out` datagrams."""
    return [(d[40], d[41], int.from_bytes(d[24:40], "big"), d[48:]) for d in out if d[6] == 58]


def test_reassembly_timeout_sends_time_exceeded_for_the_first_fragment_only() -> None:
    eng = _engine()
    whole = _udp(C1, SV, 40400, 53, bytes(600))
    first, last = _frag(whole, 0, 304, True, 0x51), _frag(whole, 304, 304, False, 0x52)
    assert not eng.receive(_frame(C1_MAC, first), "lan0", 1.0).emitted  # held by nf_defrag_ipv6
    assert not eng.receive(_frame(C1_MAC, last), "lan0", 2.0).emitted  # another queue: no first fragment
    assert eng.next_deadline() == 61.0
    assert not eng.handle_timers(60.9).emitted
    out = eng.handle_timers(62.0)
    msgs = _icmp6([e.frame[14:] for e in out.emitted])
    assert [(t, c, d) for t, c, d, _ in msgs] == [(3, 1, C1)]  # one error: the second queue had no first
    assert [e.iface for e in out.emitted] == ["lan0"]
    assert msgs[0][3] == first  # the first fragment as received, untranslated
    assert out.emitted[0].frame[14 + 8:14 + 24] == RT_LAN.to_bytes(16, "big")  # ipv6_dev_get_saddr(lan0, C1)


def _hbh(src: int, dst: int, opt: bytes, payload: bytes = b"hbh!") -> bytes:
    """A UDP datagram behind a Hop-by-Hop header holding `opt` (padded to 8 bytes with Pad1/PadN)."""
    body = bytes([17, 0]) + opt
    pad = 8 - len(body)
    body += b"" if pad == 0 else b"\x00" if pad == 1 else bytes([1, pad - 2]) + bytes(pad - 2)
    udp = struct.pack("!HHHH", 40000, 7001, 8 + len(payload), 0) + payload
    return bytes(build_ipv6(src, dst, 0, body + udp))


def test_unknown_hop_by_hop_options_act_as_their_type_says() -> None:
    """ip6_parse_tlv / ip6_tlvopt_unknown: 00 skip, 01 drop, 10 Parameter Problem code 2, 11 Parameter Problem
    unless the destination is multicast; pointer = the option's offset (42 here)."""
    eng = _engine("")
    fwd = eng.receive(_frame(C1_MAC, _hbh(C1, SV, bytes([0x1E, 2, 0, 0]))), "lan0", 1.0)
    assert [e.iface for e in fwd.emitted] == ["wan0"]
    assert not eng.receive(_frame(C1_MAC, _hbh(C1, SV, bytes([0x5E, 2, 0, 0]))), "lan0", 1.1).emitted
    for i, kind in enumerate((0x9E, 0xDE)):
        pkt = _hbh(C1, SV, bytes([kind, 2, 0, 0]))
        out = eng.receive(_frame(C1_MAC, pkt), "lan0", 1.2 + i / 10)
        (msg,) = _icmp6([e.frame[14:] for e in out.emitted])
        assert msg[:3] == (4, 2, C1) and out.emitted[0].iface == "lan0"
        assert out.emitted[0].frame[14 + 44:14 + 48] == (42).to_bytes(4, "big") and msg[3] == pkt
        assert out.dropped[0].reason == "ip6_bad_exthdr"
    mcast = A("ff0e::1")
    assert not eng.receive(_frame(C1_MAC, _hbh(C1, mcast, bytes([0xDE, 2, 0, 0])), b"\x33\x33\0\0\0\x01"),
                           "lan0", 1.5).emitted  # 11 and a multicast destination: dropped silently
    # malformed: PadN with a non-zero byte, a Router Alert of the wrong length: dropped, no error
    assert not eng.receive(_frame(C1_MAC, _hbh(C1, SV, bytes([1, 4, 0, 0, 1, 0]))), "lan0", 1.6).emitted
    assert not eng.receive(_frame(C1_MAC, _hbh(C1, SV, bytes([5, 4, 0, 0, 0, 0]))), "lan0", 1.7).emitted
    ra = eng.receive(_frame(C1_MAC, _hbh(C1, SV, bytes([5, 2, 0, 0]))), "lan0", 1.8)
    assert [e.iface for e in ra.emitted] == ["wan0"]  # a well-formed Router Alert passes


def _redirect_engine() -> Engine:
    eng = _engine("")
    eng.host.routes6.append(Route6(A("2001:db8:300::"), 48, "lan0", gateway=A("fe80::c2")))
    eng.fib6.rebuild()
    return eng


def test_forwarding_out_the_receiving_interface_sends_redirects() -> None:
    """ip6_forward → ndisc_send_redirect (§4.4 [V]): from the router's link-local address, hop limit 255, target
    = the destination (on-link) or a link-local gateway, the Target Link-Layer option when the target's
    neighbour is known, then the Redirected Header quoting the packet; the packet is still forwarded. Six
    per destination in a burst, then one a second."""
    eng = _redirect_engine()
    eng.receive(_frame(C2_MAC, _udp(C2, C1, 1, 2, b"hi")), "lan0", 0.5)  # C2 learnt as a neighbour
    pkt = _udp(C1, C2, 40000, 7001, b"hello")
    out = eng.receive(_frame(C1_MAC, pkt), "lan0", 1.0)
    assert [e.iface for e in out.emitted] == ["lan0", "lan0"]
    rd, fwd = (e.frame[14:] for e in out.emitted)
    assert fwd[8:40] == pkt[8:40] and fwd[7] == 63
    assert (rd[6], rd[7], rd[40], rd[41]) == (58, 255, 137, 0)
    assert rd[8:24] == RT_LL.to_bytes(16, "big") and rd[24:40] == C1.to_bytes(16, "big")
    assert rd[48:64] == C2.to_bytes(16, "big") and rd[64:80] == C2.to_bytes(16, "big")  # target, destination
    assert rd[80:88] == bytes([2, 1]) + C2_MAC  # Target Link-Layer address
    rd_len = (len(pkt) + 8) & ~7
    assert rd[88:96] == bytes([4, rd_len >> 3]) + bytes(6) and rd[96:] == pkt[:rd_len - 8]
    # through a link-local gateway: the target is the gateway, unknown as a neighbour (no option)
    out = eng.receive(_frame(C1_MAC, _udp(C1, A("2001:db8:300::9"), 1, 2, b"x")), "lan0", 1.1)
    rd = next(e.frame[14:] for e in out.emitted if e.frame[14 + 40] == 137)
    assert rd[48:64] == A("fe80::c2").to_bytes(16, "big") and rd[80] == 4
    # the burst of 6 tokens per address is spent by both checks on one inet_peer per address, whatever its
    # role: C1's went on the redirect for C2's first packet (C1 its destination) and two as a source, so
    # three more; then one a second
    sent = [len([e for e in eng.receive(_frame(C1_MAC, pkt), "lan0", 1.2 + i / 100).emitted
                 if e.frame[14 + 40] == 137]) for i in range(8)]
    assert sent == [1, 1, 1, 0, 0, 0, 0, 0]
    assert len(eng.receive(_frame(C1_MAC, pkt), "lan0", 2.5).emitted) == 2


def test_no_redirect_to_an_off_link_source_or_a_global_gateway() -> None:
    eng = _redirect_engine()
    eng.host.routes6.append(Route6(A("2001:db8:400::"), 48, "lan0", gateway=C2))
    eng.fib6.rebuild()
    out = eng.receive(_frame(C1_MAC, _udp(C1, A("2001:db8:400::9"), 1, 2, b"x")), "lan0", 1.0)
    assert [e.frame[14 + 6] for e in out.emitted] == [17]  # forwarded, no redirect: the target is not link-local
    for far in (A("2001:db8:300::5"), A("2001:db8:100::77")):  # via a gateway on lan0; on wan0's link
        out = eng.receive(_frame(C1_MAC, _udp(far, C2, 1, 2, b"x")), "lan0", 1.1)
        assert [e.frame[14 + 6] for e in out.emitted] == [17]  # "destination is not a neighbour"
