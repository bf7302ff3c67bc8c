"""manip_pkt: header rewriting and the checksum rules of §4.8, checked against full recomputation."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natbox.conntrack.tuple import ConnTuple
from natbox.nat import l4proto as manip_mod
from natbox.nat.manip import crc32c, manip_pkt
from natbox.netfilter import ManipType
from natbox.testing.natpkt import (
    DCCP,
    GRE,
    ICMP,
    SCTP,
    TCP,
    UDP,
    UDPLITE,
    A,
    gre_packet,
    icmp_echo,
    icmp_error,
    ip_csum_ok,
    ip_header,
    l4_csum,
    l4_csum_ok,
    sctp_packet,
    tcp_packet,
    udp_packet,
)
from natbox.wire.checksum import internet_checksum

SRC, DST = ManipType.SRC, ManipType.DST
u16 = st.integers(0, 0xFFFF)
addr = st.integers(0, 0xFFFFFFFF)
payloads = st.binary(max_size=64)


def dccp_packet(src: int, sport: int, dst: int, dport: int, payload: bytes) -> bytearray:
    seg = bytearray(12) + payload  # RFC 4340 generic header with X=0; CsCov 0: the whole packet
    seg[0:2] = sport.to_bytes(2, "big")
    seg[2:4] = dport.to_bytes(2, "big")
    seg[4] = 3  # data offset in 32-bit words
    seg[8] = 2 << 1  # type DCCP-Data
    seg[6:8] = l4_csum(src, dst, DCCP, seg).to_bytes(2, "big")
    return ip_header(src, dst, DCCP, len(seg)) + seg


def build(proto: int, hdr: tuple[int, int, int, int], payload: bytes) -> bytearray:
    src, sport, dst, dport = hdr
    if proto == TCP:
        return tcp_packet(src, sport, dst, dport, payload)
    if proto in (UDP, UDPLITE):
        return udp_packet(src, sport, dst, dport, payload, proto=proto)
    if proto == SCTP:
        return sctp_packet(src, sport, dst, dport, payload)
    if proto == DCCP:
        return dccp_packet(src, sport, dst, dport, payload)
    return icmp_echo(src, dst, sport, payload=payload)


def fields(data: bytearray) -> tuple[int, int, int, int]:
    """(saddr, sport, daddr, dport) as the IP and L4 headers carry them."""
    ihl = (data[0] & 0x0F) * 4
    return (int.from_bytes(data[12:16], "big"), int.from_bytes(data[ihl : ihl + 2], "big"),
            int.from_bytes(data[16:20], "big"), int.from_bytes(data[ihl + 2 : ihl + 4], "big"))


_CSUM_OFF = {TCP: 16, UDP: 6, UDPLITE: 6, DCCP: 6, ICMP: 2}


@pytest.fixture(autouse=True)
def _dccp_as_before_617(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exercise dccp_manip_pkt (kernels ≤ 6.16) in the property test; see test_dccp_is_unknown_on_6_18."""
    monkeypatch.setattr(manip_mod, "NAT_DCCP", True)


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([TCP, UDP, UDPLITE, SCTP, DCCP, ICMP]), addr, u16, addr, u16, payloads,
       st.sampled_from([SRC, DST]), addr, u16)
def test_manip_equals_building_the_rewritten_packet_from_scratch(
    proto: int, src: int, sport: int, dst: int, dport: int, payload: bytes, manip: ManipType, new_addr: int,
    new_port: int,
) -> None:
    """Random packets and targets: the incrementally updated packet equals one built with the new header
    fields and fully computed checksums (0x0000 and 0xFFFF being the same one's complement value)."""
    data = build(proto, (src, sport, dst, dport), payload)
    if proto == ICMP:  # the echo id is src.u for either manip type
        target = ConnTuple(new_addr if manip == SRC else 0, new_port, new_addr if manip == DST else 0, 0, ICMP)
        expected = (new_addr, new_port, dst, 0) if manip == SRC else (src, new_port, new_addr, 0)
    elif manip == SRC:
        target = ConnTuple(new_addr, new_port, 0, 0, proto)
        expected = (new_addr, new_port, dst, dport)
    else:
        target = ConnTuple(0, 0, new_addr, new_port, proto)
        expected = (src, sport, new_addr, new_port)
    assert manip_pkt(data, 20, target, manip)
    ref = build(proto, expected, payload)
    assert ip_csum_ok(data) and l4_csum_ok(data)
    off = 20 + _CSUM_OFF.get(proto, 8)
    if data != ref:
        got, want = data[off : off + 2], ref[off : off + 2]
        assert {bytes(got), bytes(want)} == {b"\x00\x00", b"\xff\xff"}
        assert data[:off] == ref[:off] and data[off + 2 :] == ref[off + 2 :]


def test_udp_zero_checksum_stays_zero() -> None:
    # [V] exp. 7: a zero UDP checksum stayed "no cksum" after MASQUERADE.
    data = udp_packet(A("192.168.50.2"), 40000, A("203.0.113.2"), 53, b"query", no_csum=True)
    assert manip_pkt(data, 20, ConnTuple(A("203.0.113.1"), 41000, 0, 0, UDP), SRC)
    assert data[26:28] == b"\x00\x00"
    assert fields(data)[:2] == (A("203.0.113.1"), 41000)
    assert ip_csum_ok(data)


def test_udp_computed_zero_is_sent_as_ffff() -> None:
    src, dst, payload = A("192.168.50.2"), A("203.0.113.2"), b"abc"
    data = udp_packet(src, 40000, dst, 53, payload)
    new = A("203.0.113.1")
    # Find the port whose full RFC 768 computation is 0x0000 (transmitted as 0xFFFF, RFC 768).
    port = next(p for p in range(65536) if l4_csum(new, dst, UDP, bytes(udp_packet(new, p, dst, 53, payload,
                                                                                  no_csum=True)[20:])) == 0)
    assert manip_pkt(data, 20, ConnTuple(new, port, 0, 0, UDP), SRC)
    assert data[26:28] == b"\xff\xff"
    assert l4_csum_ok(data)


def test_udplite_checksum_always_updated() -> None:
    data = udp_packet(A("10.0.0.1"), 1000, A("10.0.0.2"), 2000, b"payload", proto=UDPLITE)
    assert manip_pkt(data, 20, ConnTuple(0, 0, A("10.9.9.9"), 2222, UDPLITE), DST)
    assert l4_csum_ok(data)


def test_tcp_without_full_header_changes_ports_only() -> None:
    # An 8..19-byte TCP header (e.g. inside an ICMP error): ports rewritten, checksum field untouched.
    full = tcp_packet(A("10.0.0.1"), 1000, A("10.0.0.2"), 80)
    for n in (8, 12, 19):
        seg = bytes(full[20 : 20 + n])
        data = ip_header(A("10.0.0.1"), A("10.0.0.2"), TCP, n) + seg
        assert manip_pkt(data, 20, ConnTuple(A("10.0.0.9"), 4444, 0, 0, TCP), SRC)
        assert fields(data)[:2] == (A("10.0.0.9"), 4444)
        assert data[24:] == seg[4:]  # everything after the ports, checksum bytes included, unchanged
        assert ip_csum_ok(data)


def test_truncated_l4_headers_fail_and_leave_the_packet_alone() -> None:
    for proto, need in ((TCP, 8), (UDP, 8), (UDPLITE, 8), (SCTP, 8), (DCCP, 8), (ICMP, 8), (GRE, 8)):
        for n in range(need):
            data = ip_header(A("10.0.0.1"), A("10.0.0.2"), proto, n) + bytes(range(n))
            before = bytes(data)
            assert not manip_pkt(data, 20, ConnTuple(0, 1, A("10.0.0.3"), 1, proto), DST)
            assert bytes(data) == before


def test_unknown_protocol_rewrites_the_address_only() -> None:
    payload = bytes(range(40))
    data = ip_header(A("10.0.0.1"), A("10.0.0.2"), 50, len(payload)) + payload  # ESP
    assert manip_pkt(data, 20, ConnTuple(A("198.51.100.1"), 0, 0, 0, 50), SRC)
    assert fields(data)[0] == A("198.51.100.1")
    assert data[20:] == payload
    assert ip_csum_ok(data)


def test_ip_options_shift_the_transport_header() -> None:
    opts = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
    seg = bytearray(udp_packet(A("10.0.0.1"), 1000, A("10.0.0.2"), 2000, b"x")[20:])
    data = ip_header(A("10.0.0.1"), A("10.0.0.2"), UDP, len(seg), options=opts) + seg
    assert manip_pkt(data, 24, ConnTuple(A("10.1.1.1"), 1111, 0, 0, UDP), SRC)
    assert int.from_bytes(data[24:26], "big") == 1111
    assert internet_checksum(data[:24]) == 0


def test_icmp_error_id_word_is_not_touched() -> None:
    inner = udp_packet(A("10.0.0.1"), 1000, A("10.0.0.2"), 2000, b"x")
    data = icmp_error(A("10.0.0.2"), A("10.0.0.1"), 3, 3, inner)
    before = bytes(data)
    assert manip_pkt(data, 20, ConnTuple(0, 4242, A("192.168.1.1"), 0, ICMP), DST)
    assert data[20:] == before[20:]  # type, code, checksum, "unused" word and body unchanged
    assert ip_csum_ok(data)


def test_icmp_echo_reply_id_and_checksum() -> None:
    data = icmp_echo(A("203.0.113.2"), A("203.0.113.1"), 64432, reply=True)
    assert manip_pkt(data, 20, ConnTuple(0, 4242, A("192.168.50.3"), 0, ICMP), DST)
    assert int.from_bytes(data[24:26], "big") == 4242
    assert internet_checksum(data[20:]) == 0


def test_crc32c_known_answer() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720 / iSCSI CRC-32C check value


def test_sctp_crc_recomputed_only_with_the_full_common_header() -> None:
    data = sctp_packet(A("10.0.0.1"), 5000, A("10.0.0.2"), 6000, b"\x01" * 20)
    assert manip_pkt(data, 20, ConnTuple(A("10.0.0.7"), 7000, 0, 0, SCTP), SRC)
    assert l4_csum_ok(data)
    assert fields(data)[:2] == (A("10.0.0.7"), 7000)
    short = ip_header(A("10.0.0.1"), A("10.0.0.2"), SCTP, 10) + bytes(data[20:30])
    before = bytes(short)
    assert manip_pkt(short, 20, ConnTuple(0, 0, A("10.0.0.8"), 8000, SCTP), DST)
    assert int.from_bytes(short[22:24], "big") == 8000
    assert short[24:] == before[24:]


def test_gre_pptp_call_id_on_dst_manip_only() -> None:
    v1 = gre_packet(A("10.0.0.1"), A("10.0.0.2"), version=1, call_id=0x1111)
    assert manip_pkt(v1, 20, ConnTuple(0, 0, A("10.0.0.3"), 0x2222, GRE), DST)
    assert v1[26:28] == b"\x22\x22"
    v1 = gre_packet(A("10.0.0.1"), A("10.0.0.2"), version=1, call_id=0x1111)
    assert manip_pkt(v1, 20, ConnTuple(A("10.0.0.3"), 0x2222, 0, 0, GRE), SRC)
    assert v1[26:28] == b"\x11\x11"
    v0 = gre_packet(A("10.0.0.1"), A("10.0.0.2"), version=0, call_id=0x1111)
    assert manip_pkt(v0, 20, ConnTuple(0, 0, A("10.0.0.3"), 0x2222, GRE), DST)
    assert v0[26:28] == b"\x11\x11" and fields(v0)[2] == A("10.0.0.3")
    v2 = gre_packet(A("10.0.0.1"), A("10.0.0.2"), version=2)
    assert not manip_pkt(v2, 20, ConnTuple(0, 0, A("10.0.0.3"), 0x2222, GRE), DST)


def test_inner_header_offset() -> None:
    inner = tcp_packet(A("203.0.113.1"), 44001, A("203.0.113.2"), 80)
    data = icmp_error(A("203.0.113.2"), A("203.0.113.1"), 3, 3, inner, keep=48)  # the whole TCP header
    assert manip_pkt(data, 20, ConnTuple(A("192.168.50.2"), 44001, 0, 0, TCP), SRC, iphdroff=28)
    assert data[40:44] == A("192.168.50.2").to_bytes(4, "big")
    assert ip_csum_ok(data, 28)
    inner_pkt = data[28:]
    assert l4_csum_ok(inner_pkt)  # full inner TCP header present: its checksum follows the address


def test_dccp_is_unknown_on_6_18(monkeypatch: pytest.MonkeyPatch) -> None:
    # 6.17 removed DCCP from conntrack and NAT; the 6.18 reference box has no nf_conntrack_dccp sysctls.
    monkeypatch.setattr(manip_mod, "NAT_DCCP", False)
    data = dccp_packet(A("10.0.0.1"), 1000, A("10.0.0.2"), 2000, b"x")
    before = bytes(data)
    assert manip_pkt(data, 20, ConnTuple(A("10.9.9.9"), 4444, 0, 0, DCCP), SRC)
    assert data[20:] == before[20:]  # ports and checksum untouched (the checksum is now stale, as in 6.18)
    assert fields(data)[0] == A("10.9.9.9") and ip_csum_ok(data)
