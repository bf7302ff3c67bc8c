"""Checked header views: None for a buffer too short for the fixed part, fields equal to what the
builders wrote and to the independent NamedTuple parsers, at any start offset."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from natbox.wire.ethernet import ETH_P_IP, build_ethernet
from natbox.wire.icmp import build_icmp, build_icmp_echo, parse_icmp
from natbox.wire.ipv4 import build_ipv4, str_to_addr
from natbox.wire.tcp import ACK, PSH, SYN, build_tcp, parse_tcp, tcp_opt_mss
from natbox.wire.udp import build_udp, parse_udp
from natbox.wire.views import EthernetView, IcmpView, Ipv4View, TcpView, UdpView

SRC, DST = str_to_addr("10.0.0.1"), str_to_addr("192.168.1.2")
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def test_too_short_is_none_at_every_length() -> None:
    for view, need in ((EthernetView, 14), (Ipv4View, 20), (TcpView, 20), (UdpView, 8), (IcmpView, 8)):
        for n in range(need):
            assert view.new_checked(bytes(n)) is None
            assert view.new_checked(bytes(n + 3), 4) is None  # the start offset counts
        assert view.new_checked(bytes(need)) is not None
        assert view.new_checked(bytes(need + 3), 3) is not None
        assert view.new_checked(bytes(need + 3), -1) is None


def test_ethernet_and_ipv4_fields() -> None:
    dg = build_ipv4(SRC, DST, 17, b"x" * 12, ttl=33, ident=0xBEEF, df=True, tos=0x12,
                    options=b"\x01\x01\x01\x00")
    frame = build_ethernet(MAC_B, MAC_A, ETH_P_IP, dg)
    eth = EthernetView.new_checked(frame)
    assert eth is not None
    assert (eth.dest, eth.source, eth.proto, eth.payload_offset) == (MAC_B, MAC_A, ETH_P_IP, 14)
    ih = Ipv4View.new_checked(frame, eth.payload_offset)
    assert ih is not None
    assert (ih.version, ih.header_len, ih.tos, ih.tot_len, ih.id) == (4, 24, 0x12, 24 + 12, 0xBEEF)
    assert (ih.frag_off, ih.fragment_offset, ih.ttl, ih.protocol) == (0x4000, 0, 33, 17)
    assert (ih.saddr, ih.daddr) == (SRC, DST)
    assert ih.addrs == struct.pack("!II", SRC, DST)
    assert ih.options == b"\x01\x01\x01\x00"
    assert ih.check == struct.unpack_from("!H", dg, 10)[0]
    assert ih.payload_offset == 14 + 24
    frag = Ipv4View.new_checked(build_ipv4(SRC, DST, 6, bytes(8), mf=True, frag_offset=1480))
    assert frag is not None
    assert (frag.frag_off, frag.fragment_offset) == (0x2000 | 185, 185)


def test_tcp_fields() -> None:
    seg = build_tcp(SRC, DST, 40000, 443, seq=0x01020304, ack=0xFFFFFFFE, flags=SYN | ACK | PSH,
                    window=1234, options=tcp_opt_mss(1460), payload=b"hello", urg_ptr=7)
    th = TcpView.new_checked(b"pad" + seg, 3)
    assert th is not None
    parsed = parse_tcp(seg)
    assert parsed is not None
    assert (th.source, th.dest, th.seq, th.ack_seq) == (40000, 443, 0x01020304, 0xFFFFFFFE)
    assert (th.flags, th.window, th.urg_ptr, th.header_len) == (SYN | ACK | PSH, 1234, 7, 24)
    assert th.check == parsed.check
    assert th.options == tcp_opt_mss(1460)
    assert th.payload_offset == 3 + 24
    # the flag word holds AE (0x100) and the reserved bits above the flag byte
    raw = bytearray(seg)
    raw[12] |= 0x0F
    word_view = TcpView.new_checked(raw)
    assert word_view is not None
    assert word_view.flag_word == 0x0F00 | SYN | ACK | PSH
    assert word_view.header_len == 24


def test_tcp_options_short_when_the_buffer_ends_inside_them() -> None:
    seg = build_tcp(SRC, DST, 1, 2, options=tcp_opt_mss(1460))
    th = TcpView.new_checked(seg[:22])
    assert th is not None
    assert th.header_len == 24
    assert th.options == seg[20:22]


def test_udp_and_icmp_fields() -> None:
    dgram = build_udp(SRC, DST, 5353, 53, b"q" * 10)
    uh = UdpView.new_checked(dgram)
    parsed = parse_udp(dgram)
    assert uh is not None and parsed is not None
    assert (uh.source, uh.dest, uh.len, uh.check) == tuple(parsed)
    assert uh.payload_offset == 8
    echo = build_icmp_echo(0x1234, 0x0042, b"ping")
    ic = IcmpView.new_checked(echo)
    pe = parse_icmp(echo)
    assert ic is not None and pe is not None
    assert (ic.type, ic.code, ic.id, ic.sequence, ic.checksum) == (8, 0, 0x1234, 0x42, pe.check)
    needfrag = build_icmp(3, 4, struct.pack("!HH", 0, 1400), b"E" * 28)
    ic2 = IcmpView.new_checked(needfrag)
    assert ic2 is not None
    assert (ic2.mtu, ic2.rest, ic2.payload_offset) == (1400, b"\x00\x00\x05\x78", 8)
    redirect = build_icmp(5, 1, struct.pack("!I", DST))
    ic3 = IcmpView.new_checked(redirect)
    assert ic3 is not None
    assert ic3.gateway == DST


@given(st.binary(max_size=64), st.integers(0, 70))
def test_checked_views_never_raise(data: bytes, off: int) -> None:
    for view in (EthernetView, Ipv4View, TcpView, UdpView, IcmpView):
        v = view.new_checked(data, off)
        if v is None:
            assert len(data) < off + {EthernetView: 14, Ipv4View: 20, TcpView: 20}.get(view, 8)
            continue
        for name in dir(view):
            if isinstance(getattr(view, name), property):
                getattr(v, name)
