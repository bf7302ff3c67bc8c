"""The LOG target's line is the kernel's (nf_log_syslog.c `nf_log_ip_packet`)."""

from __future__ import annotations

from natbox.conntrack.tuple import parse_addr
from natbox.engine.log import XT_LOG_IPOPT, XT_LOG_MACDECODE, XT_LOG_TCPSEQ, format_log_line
from natbox.wire import icmp, ipv4, tcp, udp

A, B = parse_addr("192.168.50.2"), parse_addr("198.51.100.2")
MAC = bytes.fromhex("020000000001" "0242c0a83202" "0800")


def test_forwarded_tcp_syn() -> None:
    seg = tcp.build_tcp(A, B, 40000, 80, seq=1000, ack=0, flags=tcp.SYN, window=64240)
    d = ipv4.build_ipv4(A, B, 6, seg, ttl=63, ident=4660, df=True)
    line = format_log_line("FWD ", d, iif="eth0", oif="eth1", mac=MAC)
    assert line == ("FWD IN=eth0 OUT=eth1 MAC=02:00:00:00:00:01:02:42:c0:a8:32:02:08:00 SRC=192.168.50.2 "
                    "DST=198.51.100.2 LEN=40 TOS=0x00 PREC=0x00 TTL=63 ID=4660 DF PROTO=TCP SPT=40000 DPT=80 "
                    "WINDOW=64240 RES=0x00 SYN URGP=0 ")


def test_local_output_udp_has_no_mac_and_shows_the_mark() -> None:
    d = ipv4.build_ipv4(A, B, 17, udp.build_udp(A, B, 5353, 53, b"abc"), ttl=64, tos=0xB8)
    line = format_log_line("", d, iif="", oif="eth1", mac=None, mark=7)
    assert line == ("IN= OUT=eth1 SRC=192.168.50.2 DST=198.51.100.2 LEN=31 TOS=0x18 PREC=0xA0 TTL=64 ID=0 "
                    "PROTO=UDP SPT=5353 DPT=53 LEN=11 MARK=0x7 ")


def test_icmp_error_quotes_the_inner_datagram_once() -> None:
    inner = ipv4.build_ipv4(A, B, 17, udp.build_udp(A, B, 44001, 5999, b"x"), ttl=63)
    err = ipv4.build_ipv4(B, A, 1, icmp.build_icmp_error(3, 3, bytes(inner)), ttl=64)
    line = format_log_line("", err, iif="eth1", oif="eth0", mac=b"", flags=XT_LOG_TCPSEQ)
    assert line == ("IN=eth1 OUT=eth0 MAC= SRC=198.51.100.2 DST=192.168.50.2 LEN=57 TOS=0x00 PREC=0x00 TTL=64 "
                    "ID=0 PROTO=ICMP TYPE=3 CODE=3 [SRC=192.168.50.2 DST=198.51.100.2 LEN=29 TOS=0x00 "
                    "PREC=0x00 TTL=63 ID=0 PROTO=UDP SPT=44001 DPT=5999 LEN=9 ] ")


def test_fragments_truncation_options_and_macdecode() -> None:
    d = bytearray(ipv4.build_ipv4(A, B, 6, b"\x00" * 40, ttl=9, ident=1, mf=True, frag_offset=80,
                                  options=b"\x01\x01\x01\x00"))
    line = format_log_line("", d, iif="eth0", oif="", mac=MAC, flags=XT_LOG_IPOPT | XT_LOG_MACDECODE)
    assert "MACSRC=02:42:c0:a8:32:02 MACDST=02:00:00:00:00:01 MACPROTO=0800 " in line
    assert line.endswith("MF FRAG:10 OPT (01010100) PROTO=TCP ")
    short = ipv4.build_ipv4(A, B, 6, b"\x00" * 6, ttl=1)
    assert format_log_line("", short, iif="", oif="x", mac=None).endswith("PROTO=TCP INCOMPLETE [6 bytes] ")
    assert format_log_line("", b"\x45\x00", iif="", oif="", mac=None) == "IN= OUT= TRUNCATED"
