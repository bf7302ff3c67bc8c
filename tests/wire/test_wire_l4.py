"""TCP, UDP and ICMP builders and parsers: real captures rebuilt byte for byte, RFC layouts, kernel rules."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natbox.wire.checksum import internet_checksum, pseudo_header_sum
from natbox.wire.ethernet import ETH_P_IP, parse_ethernet
from natbox.wire.icmp import (
    ICMP_DEST_UNREACH,
    ICMP_ECHO,
    ICMP_ECHOREPLY,
    ICMP_FRAG_NEEDED,
    ICMP_PORT_UNREACH,
    ICMP_TIME_EXCEEDED,
    ICMP_TYPE_NAMES,
    build_icmp,
    build_icmp_echo,
    build_icmp_error,
    icmp_error_allowed,
    icmp_error_tos,
    icmp_is_error,
    parse_icmp,
)
from natbox.wire.ipv4 import build_ipv4, ip_rcv_core, str_to_addr
from natbox.wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    build_tcp,
    encode_options,
    parse_tcp,
    parse_tcp_options,
    tcp_flags_str,
    tcp_opt_mss,
    tcp_opt_sack,
    tcp_opt_sack_perm,
    tcp_opt_timestamps,
    tcp_opt_wscale,
    tcp_options_pad,
)
from natbox.wire.udp import build_udp, parse_udp

CAPTURES = [
    "github-appneta-tcpreplay__test.pcap",
    "debbin-python3-libtrace__icmp-sample.pcap",
    "debsrc-wireshark-4.0.17__communityid.pcap",
    "debbin-python3-dpkt__dns_icmp.pcap",
]
A = str_to_addr("192.168.50.2")
B = str_to_addr("198.51.100.2")


def datagrams(frames: list[bytes]) -> Iterator[bytearray]:
    for frame in frames:
        eth = parse_ethernet(frame)
        if eth is None or eth[2] != ETH_P_IP:
            continue
        dg, _ = ip_rcv_core(frame[eth[3] :])
        if dg is not None and not (dg[6] & 0x3F or dg[7]):
            yield dg


def l4_ok(dg: bytearray) -> bool:
    ihl = (dg[0] & 15) * 4
    seg = dg[ihl:]
    src = int.from_bytes(dg[12:16], "big")
    dst = int.from_bytes(dg[16:20], "big")
    return internet_checksum(seg, pseudo_header_sum(src, dst, dg[9], len(seg))) == 0


def addrs(dg: bytearray) -> tuple[int, int]:
    return int.from_bytes(dg[12:16], "big"), int.from_bytes(dg[16:20], "big")


# --- TCP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CAPTURES)
def test_tcp_rebuilds_real_segments(name: str, pcap_frames: Callable[[str], list[bytes]]) -> None:
    for dg in datagrams(pcap_frames(name)):
        ihl = (dg[0] & 15) * 4
        if dg[9] != 6 or not l4_ok(dg):
            continue
        seg = bytes(dg[ihl:])
        th = parse_tcp(seg)
        assert th is not None
        rebuilt = build_tcp(
            *addrs(dg), th.sport, th.dport, seq=th.seq, ack=th.ack, flags=th.flags, window=th.window,
            options=seg[20 : th.doff], payload=seg[th.doff :], urg_ptr=th.urg_ptr,
        )
        if seg[12] & 0x0F:  # reserved bits / NS set: not produced by build_tcp
            continue
        assert rebuilt == seg


def test_tcp_option_layouts() -> None:
    # RFC 9293 / RFC 7323 / RFC 2018 encodings
    assert tcp_opt_mss(1460) == bytes.fromhex("020405b4")
    assert tcp_opt_wscale(7) == bytes.fromhex("030307")
    assert tcp_opt_sack_perm() == bytes.fromhex("0402")
    assert tcp_opt_timestamps(1, 2) == bytes.fromhex("080a0000000100000002")
    assert tcp_opt_sack([(1, 2)]) == bytes.fromhex("050a0000000100000002")
    assert tcp_options_pad(b"\x03\x03\x07") == b"\x03\x03\x07\x00"
    assert tcp_options_pad(b"\x03\x03\x07", with_nop=True) == b"\x03\x03\x07\x01"
    # Linux SYN: "mss 1460,sackOK,TS val 5 ecr 0,nop,wscale 7" (20 option bytes)
    opts = encode_options(mss=1460, sack_perm=True, timestamp=(5, 0), wscale=7)
    assert opts == bytes.fromhex("020405b4" "0402" "080a0000000500000000" "01" "030307")
    assert parse_tcp_options(opts) == [("mss", (1460,)), ("sackOK", ()), ("TS", (5, 0)), ("nop", ()), ("wscale", (7,))]


def test_tcp_build_parse_round_trip() -> None:
    seg = build_tcp(A, B, 40000, 80, seq=1, ack=2, flags=SYN | ACK, window=29200,
                    options=encode_options(mss=1460), payload=b"hi")
    th = parse_tcp(seg)
    assert th == (40000, 80, 1, 2, 24, SYN | ACK, 29200, th.check if th else 0, 0)
    assert internet_checksum(seg, pseudo_header_sum(A, B, 6, len(seg))) == 0
    assert seg[24:] == b"hi"


def test_tcp_flags_text() -> None:
    assert [tcp_flags_str(f) for f in (SYN, SYN | ACK, ACK, FIN | ACK, RST, PSH | ACK, 0)] == [
        "S", "S.", ".", "F.", "R", "P.", "none"]


def test_tcp_options_malformed() -> None:
    assert parse_tcp_options(b"\x02\x04\x05") == []  # runs past the end
    assert parse_tcp_options(b"\x01\x02\x01") == [("nop", ())]  # length < 2
    assert parse_tcp_options(b"\x02\x03\x05\x00") == [("bad-mss", (5,)), ("eol", ())]
    assert parse_tcp(b"\x00" * 19) is None
    assert parse_tcp(b"\x00" * 12 + b"\x40" + b"\x00" * 7) is None  # data offset 4 words


@given(st.binary(max_size=60))
def test_tcp_parsers_never_raise(data: bytes) -> None:
    parse_tcp(data)
    parse_tcp_options(data)


# --- UDP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CAPTURES)
def test_udp_rebuilds_real_datagrams(name: str, pcap_frames: Callable[[str], list[bytes]]) -> None:
    for dg in datagrams(pcap_frames(name)):
        ihl = (dg[0] & 15) * 4
        seg = bytes(dg[ihl:])
        if dg[9] != 17 or len(seg) < 8:
            continue
        uh = parse_udp(seg)
        assert uh is not None
        if uh.length != len(seg):
            continue
        if uh.check == 0:
            assert build_udp(*addrs(dg), uh.sport, uh.dport, seg[8:], zero_checksum=True) == seg
        elif l4_ok(dg):
            assert build_udp(*addrs(dg), uh.sport, uh.dport, seg[8:]) == seg


def test_udp_zero_sum_sent_as_ffff() -> None:
    base = build_udp(A, B, 1000, 2000, b"\x00\x00")
    check = (base[6] << 8) | base[7]
    # a payload word equal to the checksum makes the one's complement sum 0xffff: RFC 768 sends 0xffff
    seg = build_udp(A, B, 1000, 2000, check.to_bytes(2, "big"))
    assert seg[6:8] == b"\xff\xff"
    assert internet_checksum(seg, pseudo_header_sum(A, B, 17, len(seg))) == 0


def test_udp_round_trip_and_malformed() -> None:
    seg = build_udp(A, B, 5353, 53, b"abc")
    assert parse_udp(seg) == (5353, 53, 11, (seg[6] << 8) | seg[7])
    assert build_udp(A, B, 1, 2, b"", zero_checksum=True)[6:8] == b"\x00\x00"
    assert parse_udp(b"\x00" * 7) is None


# --- ICMP --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CAPTURES)
def test_icmp_rebuilds_real_messages(name: str, pcap_frames: Callable[[str], list[bytes]]) -> None:
    for dg in datagrams(pcap_frames(name)):
        ihl = (dg[0] & 15) * 4
        msg = bytes(dg[ihl:])
        if dg[9] != 1 or len(msg) < 8 or internet_checksum(msg) != 0:
            continue
        assert build_icmp(msg[0], msg[1], msg[4:8], msg[8:]) == msg
        if msg[0] in (ICMP_ECHO, ICMP_ECHOREPLY) and msg[1] == 0:
            ident, seq = (msg[4] << 8) | msg[5], (msg[6] << 8) | msg[7]
            assert build_icmp_echo(ident, seq, msg[8:], reply=msg[0] == 0) == msg


def test_icmp_error_quotes_up_to_576() -> None:
    offending = build_ipv4(A, B, 17, build_udp(A, B, 1, 2, bytes(1000)))
    msg = build_icmp_error(ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, offending)
    assert len(msg) == 576 - 20  # the reply datagram is exactly 576 bytes
    assert msg[8:] == offending[: 576 - 28]
    assert internet_checksum(msg) == 0
    small = build_ipv4(A, B, 17, build_udp(A, B, 1, 2, b"x"))
    assert build_icmp_error(ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, small)[8:] == small
    assert len(build_icmp_error(3, 3, offending, mtu=400)) == 400 - 20
    assert build_icmp_error(3, 3, offending, mtu=48) == b""  # room <= sizeof(iphdr): nothing sent


def test_icmp_frag_needed_mtu_in_low_16_bits() -> None:
    msg = build_icmp_error(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, build_ipv4(A, B, 17, bytes(100)), info=1400)
    hdr = parse_icmp(msg)
    assert hdr is not None and hdr.type == 3 and hdr.code == 4
    assert msg[4:8] == b"\x00\x00\x05\x78"


def test_icmp_error_rules() -> None:
    udp = build_ipv4(A, B, 17, build_udp(A, B, 1, 2, b"x"))
    assert icmp_error_allowed(udp)
    assert not icmp_error_allowed(udp, pkt_type_host=False)
    assert not icmp_error_allowed(udp, dst_broadcast=True)
    assert not icmp_error_allowed(build_ipv4(A, str_to_addr("224.0.0.1"), 17, b"12345678"))
    assert not icmp_error_allowed(build_ipv4(A, B, 17, bytes(16), frag_offset=8))  # not fragment 0
    assert icmp_error_allowed(build_ipv4(A, B, 17, bytes(16), mf=True))  # fragment 0 is fine
    # no source test, as in __icmp_send: routing keeps martian sources out before anything answers them
    # ([V] 6.18: 127.0.0.1 -> 127.0.0.2:closed over lo and 240.0.0.1 -> a closed port are answered)
    for src in ("127.0.0.1", "127.0.0.5", "240.0.0.1", "0.1.2.3"):
        assert icmp_error_allowed(build_ipv4(str_to_addr(src), B, 17, bytes(8))), src
    echo = build_ipv4(A, B, 1, build_icmp_echo(1, 1))
    assert icmp_error_allowed(echo, icmp_type=ICMP_TIME_EXCEEDED)
    err = build_ipv4(A, B, 1, build_icmp_error(3, 3, udp))
    assert not icmp_error_allowed(err, icmp_type=ICMP_TIME_EXCEEDED)  # never about an ICMP error
    unknown = build_ipv4(A, B, 1, build_icmp(42, 0, bytes(4)))
    assert not icmp_error_allowed(unknown)  # unknown type > NR_ICMP_TYPES counts as an error
    assert not icmp_error_allowed(build_ipv4(A, B, 1, b""))  # ICMP type unreadable
    assert not icmp_error_allowed(udp[:19])


def test_icmp_tables() -> None:
    assert [t for t in range(19) if icmp_is_error(t)] == [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12]
    assert ICMP_TYPE_NAMES[3] == "destination-unreachable" and ICMP_TYPE_NAMES[8] == "echo-request"
    # RT_TOS(tos) = tos & IPTOS_TOS_MASK (0x1E): bit 0x02 survives, 0x01 and the precedence bits do not
    assert icmp_error_tos(0x10) == 0xD0 and icmp_error_tos(0x03) == 0xC2 and icmp_error_tos(0xE1) == 0xC0


def test_icmp_echo_layout() -> None:
    msg = build_icmp_echo(0x1234, 7, b"ping")
    assert msg[:2] == b"\x08\x00" and msg[4:8] == b"\x12\x34\x00\x07" and msg[8:] == b"ping"
    assert internet_checksum(msg) == 0
    assert build_icmp_echo(0x1234, 7, b"ping", reply=True)[0] == 0


@given(st.binary(max_size=60))
def test_icmp_never_raises(data: bytes) -> None:
    parse_icmp(data)
    icmp_error_allowed(data)
    icmp_error_allowed(data, icmp_type=0)


def test_icmp_errors_match_linux_router() -> None:
    """[V] Linux 6.18 router in a veth lab (10.99.1.2 -> router -> 10.99.2.2, MASQUERADE on the way out).

    A 1228-byte UDP datagram with TTL 1 came back as a 576-byte TIME_EXCEEDED whose ICMP header was
    0b00 1193 00000000; a 1400-byte DF datagram over a 1000-byte MTU came back as a 576-byte
    FRAG_NEEDED with header 0304 1653 000003e8. The checksums cover the 548 quoted bytes, so equal
    headers mean equal messages.
    """
    a, b = str_to_addr("10.99.1.2"), str_to_addr("10.99.2.2")
    dg = build_ipv4(a, b, 17, build_udp(a, b, 40000, 5009, bytes(1200)), ident=990, ttl=1)
    msg = build_icmp_error(ICMP_TIME_EXCEEDED, 0, dg)
    assert len(msg) + 20 == 576 and msg[:8] == bytes.fromhex("0b00119300000000")
    dg = build_ipv4(a, b, 17, build_udp(a, b, 40000, 5010, bytes(1372)), ident=991, df=True)
    msg = build_icmp_error(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, dg, info=1000)
    assert len(msg) + 20 == 576 and msg[:8] == bytes.fromhex("03041653000003e8")
