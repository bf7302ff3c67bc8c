"""The LOG target's kernel line for IPv6 packets (nf_log_syslog.c `nf_log_ip6_packet`, `dump_ipv6_packet`)."""

from __future__ import annotations

from natbox.engine.log import XT_LOG_IPOPT, XT_LOG_MACDECODE
from natbox.engine.log6 import format_log_line6
from natbox.wire.ipv6 import (
    NEXTHDR_AUTH,
    NEXTHDR_FRAGMENT,
    NEXTHDR_ICMP,
    NEXTHDR_TCP,
    NEXTHDR_UDP,
    build_frag_hdr,
    build_ipv6,
    parse_addr6,
)

A = parse_addr6("fd00::2")
B = parse_addr6("2001:db8::10")
UDP = bytes.fromhex("9c400035000c0000") + b"abcd"
MAC = bytes.fromhex("0a0000000001" "0a0000000002" "86dd")
HEAD = ("IN=lan OUT=wan MAC=0a:00:00:00:00:01:0a:00:00:00:00:02:86:dd "
        "SRC=fd00:0000:0000:0000:0000:0000:0000:0002 DST=2001:0db8:0000:0000:0000:0000:0000:0010 ")


def line(d: bytes | bytearray, **kw: int) -> str:
    return format_log_line6("fw: ", d, iif="lan", oif="wan", mac=MAC, **kw)


def test_udp_with_traffic_class_flow_label_and_mark() -> None:
    d = build_ipv6(A, B, NEXTHDR_UDP, UDP, hop_limit=63, tclass=0x28, flowlabel=0x12345)
    assert line(d, mark=5) == ("fw: " + HEAD + "LEN=52 TC=40 HOPLIMIT=63 FLOWLBL=74565 PROTO=UDP SPT=40000 DPT=53 "
                               "LEN=12 MARK=0x5 ")


def test_tcp_syn() -> None:
    tcp = bytes.fromhex("9c40005000000001000000005002ffff00000000")
    assert line(build_ipv6(A, B, NEXTHDR_TCP, tcp)).endswith(
        "LEN=60 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=TCP SPT=40000 DPT=80 WINDOW=65535 RES=0x00 SYN URGP=0 ")


def test_fragments() -> None:
    first = build_ipv6(A, B, NEXTHDR_FRAGMENT, build_frag_hdr(NEXTHDR_UDP, 0, True, 0xABC) + UDP)
    assert line(first).endswith("FRAG:0 INCOMPLETE ID:00000abc PROTO=UDP SPT=40000 DPT=53 LEN=12 ")
    later = build_ipv6(A, B, NEXTHDR_FRAGMENT, build_frag_hdr(NEXTHDR_UDP, 1232, False, 0xABC) + bytes(8))
    assert line(later).endswith("FRAG:1232 ID:00000abc PROTO=UDP ")
    assert line(later, flags=XT_LOG_IPOPT).endswith("OPT ( FRAG:1232 ID:00000abc ) PROTO=UDP ")


def test_ah_spi_with_ip_options_flag() -> None:
    ah = bytes((NEXTHDR_UDP, 2, 0, 0)) + (0x1234).to_bytes(4, "big") + bytes(8)
    d = build_ipv6(A, B, NEXTHDR_AUTH, ah + UDP)
    assert line(d).endswith("FLOWLBL=0 PROTO=UDP SPT=40000 DPT=53 LEN=12 ")
    assert line(d, flags=XT_LOG_IPOPT).endswith("FLOWLBL=0 OPT ( AH SPI=0x1234 ) PROTO=UDP SPT=40000 DPT=53 LEN=12 ")


def test_icmpv6_echo_and_error_quoting_the_packet() -> None:
    echo = build_ipv6(A, B, NEXTHDR_ICMP, bytes((128, 0, 0, 0, 0, 7, 0, 1)))
    assert line(echo).endswith("PROTO=ICMPv6 TYPE=128 CODE=0 ID=7 SEQ=1 ")
    inner = build_ipv6(B, A, NEXTHDR_UDP, UDP)
    ptb = build_ipv6(A, B, NEXTHDR_ICMP, bytes((2, 0, 0, 0)) + (1280).to_bytes(4, "big") + inner)
    assert line(ptb, mark=1).endswith(
        "PROTO=ICMPv6 TYPE=2 CODE=0 [SRC=2001:0db8:0000:0000:0000:0000:0000:0010 "
        "DST=fd00:0000:0000:0000:0000:0000:0000:0002 LEN=52 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=UDP SPT=40000 DPT=53 "
        "LEN=12 ] MTU=1280 MARK=0x1 ")


def test_short_data_and_no_input_device() -> None:
    cut = build_ipv6(A, B, NEXTHDR_UDP, UDP)[:44]
    assert line(cut, mark=1).endswith("PROTO=UDP INCOMPLETE [4 bytes] ")  # no MARK after a cut header
    assert format_log_line6("", bytes(20), iif="", oif="wan", mac=None) == "IN= OUT=wan TRUNCATED"
    local = format_log_line6("", build_ipv6(A, B, NEXTHDR_UDP, UDP), iif="", oif="wan", mac=None)
    assert local.startswith("IN= OUT=wan SRC=fd00:")


def test_macdecode() -> None:
    d = build_ipv6(A, B, NEXTHDR_UDP, UDP)
    assert "MACSRC=0a:00:00:00:00:02 MACDST=0a:00:00:00:00:01 MACPROTO=86dd " in line(d, flags=XT_LOG_MACDECODE)
