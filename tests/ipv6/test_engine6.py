"""The IPv6 path through the engine: forwarding with conntrack and NAT66, ICMPv6 errors and their
translation, ND, echo (ipv6-semantics.md; the [V] results of its experiments are the expectations)."""

from __future__ import annotations

import struct

from natbox.conntrack.format import format_conntrack
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Route6
from natbox.engine.output import Emitted
from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.skb import Skb6
from natbox.wire.ethernet import ETH_P_IPV6, build_ethernet
from natbox.wire.icmpv6 import build_icmpv6_echo, build_icmpv6_error, build_ns, icmpv6_checksum
from natbox.wire.ipv6 import build_ipv6, format_addr6, parse_addr6, solicited_node

A = parse_addr6
LAN_MAC, WAN_MAC = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
C1_MAC, C2_MAC, SV_MAC = b"\x02\xc1\x00\x00\x00\x01", b"\x02\xc2\x00\x00\x00\x02", b"\x02\x5e\x00\x00\x00\x10"
C1, C2, RT_LAN, RT_LL = A("fd00:77::2"), A("fd00:77::3"), A("fd00:77::1"), A("fe80::1")
SV, RT_WAN = A("2001:db8:100::10"), A("2001:db8:100::1")
FAR = A("2001:db8:200::10")

MASQ = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o wan0 -j MASQUERADE
COMMIT
"""


def _engine(rules: str = MASQ, wan_mtu: int = 1500) -> Engine:
    host = Host(ipv6_forward=True)
    host.add_interface(Interface("lan0", mac=LAN_MAC))
    host.add_interface(Interface("wan0", mac=WAN_MAC, mtu=wan_mtu))
    host.add_address6("lan0", RT_LL, 64)
    host.add_address6("lan0", RT_LAN, 64)
    host.add_address6("wan0", RT_WAN, 64)
    host.routes6.append(Route6(0, 0, "wan0", gateway=SV))
    rs = Ruleset(NFPROTO_IPV6)
    if rules:
        rs.restore(parse_restore(rules, file="<test>", family=NFPROTO_IPV6))
    return Engine(host, ruleset6=rs)


def _frame(src_mac: bytes, dst_mac: bytes, datagram: bytes | bytearray) -> bytes:
    return bytes(build_ethernet(dst_mac, src_mac, ETH_P_IPV6, datagram))


def _udp(src: int, dst: int, sport: int, dport: int, payload: bytes = b"hello", hlim: int = 64) -> bytes:
    seg = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
    pseudo = src.to_bytes(16, "big") + dst.to_bytes(16, "big") + struct.pack("!IxxxB", len(seg), 17)
    total: int = sum(struct.unpack(f"!{(len(pseudo) + len(seg) + 1) // 2}H", (pseudo + seg + b"\0")[:((len(pseudo)
                                                                                         + len(seg) + 1) // 2) * 2]))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    seg[6:8] = (~total & 0xFFFF or 0xFFFF).to_bytes(2, "big")
    return bytes(build_ipv6(src, dst, 17, seg, hop_limit=hlim))


def _l4_ok(datagram: bytes) -> bool:
    """The transport checksum of a datagram without extension headers verifies (pseudo-header included)."""
    src, dst, nh = int.from_bytes(datagram[8:24], "big"), int.from_bytes(datagram[24:40], "big"), datagram[6]
    seg = datagram[40:]
    pseudo = src.to_bytes(16, "big") + dst.to_bytes(16, "big") + struct.pack("!IxxxB", len(seg), nh)
    data = pseudo + seg + (b"\0" if len(seg) & 1 else b"")
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def _sent(out_emitted: list[Emitted], iface: str) -> list[bytes]:
    return [e.frame[14:] for e in out_emitted if e.iface == iface]


def test_ping6_through_masquerade_and_back() -> None:
    eng = _engine()
    out = eng.receive(_frame(C1_MAC, LAN_MAC, build_icmpv6_echo(C1, SV, 23072, 1, b"x" * 56, reply=False)),
                      "lan0", 1.0)
    [pkt] = _sent(out.emitted, "wan0")
    assert format_addr6(int.from_bytes(pkt[8:24], "big")) == "2001:db8:100::1"
    assert pkt[7] == 63 and _l4_ok(pkt)
    reply = build_icmpv6_echo(SV, RT_WAN, 23072, 1, b"x" * 56, reply=True)
    out = eng.receive(_frame(SV_MAC, WAN_MAC, reply), "wan0", 1.1)
    [back] = _sent(out.emitted, "lan0")
    assert int.from_bytes(back[24:40], "big") == C1 and _l4_ok(back)
    assert out.emitted[0].frame[:6] == C1_MAC  # learned from the request's source MAC (offline)
    [ct] = list(eng.table)
    assert format_conntrack(ct, 1.5) == (
        "icmpv6   58 29 src=fd00:77::2 dst=2001:db8:100::10 type=128 code=0 id=23072 src=2001:db8:100::10 "
        "dst=2001:db8:100::1 type=129 code=0 id=23072 mark=0 use=1")


def test_udp_port_kept_then_clash_remapped() -> None:
    eng = _engine()
    out1 = eng.receive(_frame(C1_MAC, LAN_MAC, _udp(C1, SV, 40100, 7001)), "lan0", 1.0)
    out2 = eng.receive(_frame(C2_MAC, LAN_MAC, _udp(C2, SV, 40100, 7001)), "lan0", 1.1)
    [p1], [p2] = _sent(out1.emitted, "wan0"), _sent(out2.emitted, "wan0")
    assert struct.unpack("!H", p1[40:42])[0] == 40100
    sport2 = struct.unpack("!H", p2[40:42])[0]
    assert sport2 != 40100 and 1024 <= sport2 <= 65535  # remapped within the port's class (§3.2 [V])
    assert _l4_ok(p1) and _l4_ok(p2)
    back = eng.receive(_frame(SV_MAC, WAN_MAC, _udp(SV, RT_WAN, 7001, sport2, b"pong")), "wan0", 1.2)
    [b] = _sent(back.emitted, "lan0")
    assert int.from_bytes(b[24:40], "big") == C2 and struct.unpack("!H", b[42:44])[0] == 40100 and _l4_ok(b)


def test_port_unreachable_from_server_translated_back() -> None:
    eng = _engine()
    eng.receive(_frame(C1_MAC, LAN_MAC, _udp(C1, SV, 40303, 45999)), "lan0", 1.0)
    nat_pkt = _udp(RT_WAN, SV, 40303, 45999)
    err = build_icmpv6_error(SV, RT_WAN, 1, 4, nat_pkt)
    out = eng.receive(_frame(SV_MAC, WAN_MAC, err), "wan0", 1.1)
    [b] = _sent(out.emitted, "lan0")
    assert int.from_bytes(b[24:40], "big") == C1 and b[40] == 1 and b[41] == 4
    inner = b[48:]
    assert int.from_bytes(inner[8:24], "big") == C1  # the embedded source restored
    assert icmpv6_checksum(SV, C1, b[40:42] + b"\0\0" + b[44:]) == int.from_bytes(b[42:44], "big")
    assert _l4_ok(inner)


def test_hop_limit_exceeded_from_the_lan_address() -> None:
    eng = _engine()
    out = eng.receive(_frame(C1_MAC, LAN_MAC, _udp(C1, FAR, 40000, 33434, hlim=1)), "lan0", 1.0)
    assert not _sent(out.emitted, "wan0")
    [te] = _sent(out.emitted, "lan0")
    assert te[40] == 3 and te[41] == 0
    assert int.from_bytes(te[8:24], "big") == RT_LAN and int.from_bytes(te[24:40], "big") == C1
    assert out.dropped[0].reason == "ttl_exceeded"


def test_packet_too_big_from_a_small_wan_mtu() -> None:
    eng = _engine(wan_mtu=1280)
    big = _udp(C1, SV, 40001, 7000, b"z" * 1352)  # 1400 bytes
    out = eng.receive(_frame(C1_MAC, LAN_MAC, big), "lan0", 1.0)
    [ptb] = _sent(out.emitted, "lan0")
    assert ptb[40] == 2 and int.from_bytes(ptb[44:48], "big") == 1280
    assert len(ptb) == 1280 and int.from_bytes(ptb[8:24], "big") == RT_LAN
    # never rate limited: 20 in a burst give 20 errors
    n = sum(len(_sent(eng.receive(_frame(C1_MAC, LAN_MAC, big), "lan0", 1.0).emitted, "lan0")) for _ in range(20))
    assert n == 20


def test_time_exceeded_is_rate_limited_burst_of_six() -> None:
    eng = _engine()
    n = sum(len(_sent(eng.receive(_frame(C1_MAC, LAN_MAC, _udp(C1, FAR, 40000 + i, 33434, hlim=1)), "lan0",
                                  1.0).emitted, "lan0")) for i in range(20))
    assert n == 6  # §4.3 [V]


def test_no_route_before_hop_limit_and_beyond_scope() -> None:
    eng = _engine()
    eng.host.routes6.clear()
    eng.fib6.rebuild()
    out = eng.receive(_frame(C1_MAC, LAN_MAC, _udp(C1, FAR, 40000, 33434, hlim=1)), "lan0", 1.0)
    [err] = _sent(out.emitted, "lan0")
    assert (err[40], err[41]) == (1, 0)  # no route, not time exceeded (§1.2 [V])
    eng2 = _engine()
    ll = A("fe80::c1")
    out = eng2.receive(_frame(C1_MAC, LAN_MAC, _udp(ll, SV, 40000, 7000)), "lan0", 1.0)
    [err] = _sent(out.emitted, "lan0")
    assert (err[40], err[41]) == (1, 2) and int.from_bytes(err[8:24], "big") == RT_LL


def test_neighbour_solicitation_answered_and_echo_to_the_router() -> None:
    eng = _engine()
    ns = build_ns(C1, solicited_node(RT_LAN), RT_LAN, C1_MAC)
    out = eng.receive(_frame(C1_MAC, b"\x33\x33\xff\x00\x00\x01", ns), "lan0", 1.0)
    [na] = _sent(out.emitted, "lan0")
    assert na[40] == 136 and na[7] == 255 and na[44] == 0xE0  # router, solicited, override
    assert int.from_bytes(na[48:64], "big") == RT_LAN and na[64:72] == b"\x02\x01" + LAN_MAC
    assert out.emitted[0].frame[:6] == C1_MAC
    out = eng.receive(_frame(C1_MAC, LAN_MAC, build_icmpv6_echo(C1, RT_LAN, 7, 1, b"abc", reply=False)), "lan0", 2.0)
    [rep] = _sent(out.emitted, "lan0")
    assert rep[40] == 129 and int.from_bytes(rep[8:24], "big") == RT_LAN and _l4_ok(rep)


def test_nd_is_untracked_and_forwarding_off_drops() -> None:
    eng = _engine()
    ns = build_ns(C1, solicited_node(RT_LAN), RT_LAN, C1_MAC)
    eng.receive(_frame(C1_MAC, b"\x33\x33\xff\x00\x00\x01", ns), "lan0", 1.0)
    assert len(eng.table) == 0
    eng.host.ipv6_forward = False
    out = eng.receive(_frame(C1_MAC, LAN_MAC, _udp(C1, SV, 40000, 7000)), "lan0", 1.0)
    assert not out.emitted and out.dropped[0].reason == "forwarding_disabled"


def test_dnat_port_forward_to_the_lan() -> None:
    rules = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i wan0 -p udp -m udp --dport 8080 -j DNAT --to-destination [fd00:77::2]:80
COMMIT
"""
    eng = _engine(rules)
    out = eng.receive(_frame(SV_MAC, WAN_MAC, _udp(SV, RT_WAN, 46000, 8080)), "wan0", 1.0)
    [p] = _sent(out.emitted, "lan0")
    assert int.from_bytes(p[24:40], "big") == C1 and struct.unpack("!H", p[42:44])[0] == 80 and _l4_ok(p)
    # a router-generated time exceeded for the DNATed packet leaves translated back (§3.4 [V])
    out = eng.receive(_frame(SV_MAC, WAN_MAC, _udp(SV, RT_WAN, 46001, 8080, hlim=1)), "wan0", 2.0)
    [te] = _sent(out.emitted, "wan0")
    assert te[40] == 3 and int.from_bytes(te[8:24], "big") == RT_WAN
    assert int.from_bytes(te[48 + 24:48 + 40], "big") == RT_WAN  # the quoted destination is the public one
    assert struct.unpack("!H", te[48 + 42:48 + 44])[0] == 8080


def test_skb6_is_what_the_hooks_see() -> None:
    skb = Skb6(bytearray(_udp(C1, SV, 1, 2)))
    assert skb.family == 10 and skb.ihl == 40


def _fragments(datagram: bytes, size: int, ident: int) -> list[bytes]:
    """`datagram` (no extension headers) cut into Fragment-header pieces of `size` payload bytes."""
    head, body, nh = datagram[:40], datagram[40:], datagram[6]
    out = []
    for off in range(0, len(body), size):
        chunk = body[off:off + size]
        more = 1 if off + size < len(body) else 0
        fh = struct.pack("!BBHI", nh, 0, off | more, ident)
        h = bytearray(head)
        h[6] = 44
        h[4:6] = (8 + len(chunk)).to_bytes(2, "big")
        out.append(bytes(h) + fh + chunk)
    return out


def test_fragments_reassembled_natted_and_refragmented_at_their_geometry() -> None:
    eng = _engine()
    whole = _udp(C1, SV, 40400, 45003, bytes(range(256)) * 6 + b"x" * 256)  # 1808 bytes of UDP
    frags = _fragments(whole, 648, 0x777)
    outs = [eng.receive(_frame(C1_MAC, LAN_MAC, f), "lan0", 1.0 + i / 100) for i, f in enumerate(reversed(frags))]
    assert not any(o.emitted for o in outs[:-1])  # held until complete
    sent = _sent(outs[-1].emitted, "wan0")
    assert len(sent) == 3  # the received geometry, in offset order (§1.5 [V])
    offs = [struct.unpack("!H", p[42:44])[0] for p in sent]
    assert [o & 0xFFF8 for o in offs] == [0, 648, 1296] and [o & 1 for o in offs] == [1, 1, 0]
    ids = {p[44:48] for p in sent}
    assert len(ids) == 1 and ids != {(0x777).to_bytes(4, "big")}  # a new fragment id
    assert all(int.from_bytes(p[8:24], "big") == RT_WAN and p[7] == 63 for p in sent)
    body = b"".join(p[48:] for p in sent)
    rebuilt = build_ipv6(RT_WAN, SV, 17, body, hop_limit=63)
    assert _l4_ok(bytes(rebuilt))  # the UDP checksum follows the NATed source


def test_atomic_fragment_stripped_and_overlap_dropped() -> None:
    eng = _engine()
    whole = _udp(C1, SV, 40401, 45003, b"a" * 100)
    [atomic] = _fragments(whole, 4096, 9)
    [p] = _sent(eng.receive(_frame(C1_MAC, LAN_MAC, atomic), "lan0", 1.0).emitted, "wan0")
    assert p[6] == 17 and struct.unpack("!H", p[4:6])[0] == 108 and _l4_ok(p)  # §1.5 [V]
    big = _udp(C1, SV, 40402, 45003, b"b" * 400)
    f1, f2 = _fragments(big, 208, 10)[:2]
    bad = bytearray(f2)
    bad[42:44] = (200 | 1).to_bytes(2, "big")  # offset 200 overlaps the first fragment's 0..208
    eng.receive(_frame(C1_MAC, LAN_MAC, f1), "lan0", 1.1)
    out = eng.receive(_frame(C1_MAC, LAN_MAC, bytes(bad)), "lan0", 1.2)
    assert not out.emitted and out.dropped[0].reason == "frag_overlap"


def test_odd_sized_fragment_bypasses_defrag_and_nat() -> None:
    eng = _engine()
    frag = _fragments(_udp(C1, SV, 40403, 45003, b"c" * 300), 101, 11)[0]
    [p] = _sent(eng.receive(_frame(C1_MAC, LAN_MAC, frag), "lan0", 1.0).emitted, "wan0")
    assert int.from_bytes(p[8:24], "big") == C1  # forwarded without NAT (§1.5 [V])


def test_conntrack_lists_both_families_and_f_restricts() -> None:
    import io

    from natbox.gateway.ctcommand import conntrack_command

    eng = _engine()
    eng.receive(_frame(C1_MAC, LAN_MAC, _udp(C1, SV, 40100, 7001)), "lan0", 1.0)
    v4 = Engine(Host(ip_forward=True))
    assert len(v4.table) == 0
    out, err = io.StringIO(), io.StringIO()
    assert conntrack_command(eng, ["-L", "-f", "ipv6"], 1.5, out, err) == 0
    assert out.getvalue().startswith("udp      17 29 src=fd00:77::2 dst=2001:db8:100::10 sport=40100 dport=7001 ")
    out = io.StringIO()
    conntrack_command(eng, ["-L", "-f", "ipv4"], 1.5, out, err)
    assert out.getvalue() == ""
    out = io.StringIO()
    conntrack_command(eng, ["-L", "-s", "fd00:77::/64", "-o", "extended"], 1.5, out, err)
    assert out.getvalue().startswith("ipv6     10 udp      17 ")


def test_send_local6_picks_the_source_and_receive_ip_takes_ipv6() -> None:
    eng = _engine("")
    out = eng.send_local(_udp(0, SV, 5000, 7000, b"local"), 1.0)
    [p] = _sent(out.emitted, "wan0")
    assert int.from_bytes(p[8:24], "big") == RT_WAN and _l4_ok(p)  # ipv6_dev_get_saddr, checksum for it
    out = eng.receive_ip(build_icmpv6_echo(C1, RT_LAN, 3, 1, b"raw", reply=False), "lan0", 2.0)
    [rep] = _sent(out.emitted, "lan0")
    assert rep[40] == 129 and _l4_ok(rep)
