"""The tcpdump renderer prints IPv6 and ICMPv6 as tcpdump 4.99 does: each packet below is written to a pcap,
read back with the real `tcpdump -nr` (and `-nner`), and natbox's lines must be the same."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest

from natbox.adapters.pcap_write import PcapWriter
from natbox.render.tcpdump import TcpdumpPrinter
from natbox.testing.live import require_programs
from natbox.wire.ethernet import ETH_P_IPV6, build_ethernet
from natbox.wire.icmpv6 import build_icmpv6, build_icmpv6_echo, build_icmpv6_error, build_na, build_ns
from natbox.wire.ipv6 import build_ipv6, parse_addr6, solicited_node

A = parse_addr6
C1, SV, RT, LL = A("fd00::2"), A("2001:db8::1"), A("fd00::1"), A("fe80::1")
MAPPED = A("::ffff:1.2.3.4")
MAC1, MAC2 = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"


def _csum(src: int, dst: int, nh: int, seg: bytes) -> int:
    data = src.to_bytes(16, "big") + dst.to_bytes(16, "big") + struct.pack("!IxxxB", len(seg), nh) + seg
    if len(data) & 1:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _tcp(src: int, dst: int, sport: int, dport: int, flags: int, seq: int, ack: int, payload: bytes = b"",
         opts: bytes = b"") -> bytes:
    hl = 20 + len(opts)
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (hl // 4) << 4, flags, 64240, 0, 0) + opts + payload
    seg = seg[:16] + struct.pack("!H", _csum(src, dst, 6, seg)) + seg[18:]
    return bytes(build_ipv6(src, dst, 6, seg))


def _udp_seg(src: int, dst: int, sport: int, dport: int, payload: bytes) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return seg[:6] + struct.pack("!H", _csum(src, dst, 17, seg) or 0xFFFF) + seg[8:]


def _udp(src: int, dst: int, sport: int, dport: int, payload: bytes, hlim: int = 64) -> bytes:
    return bytes(build_ipv6(src, dst, 17, _udp_seg(src, dst, sport, dport, payload), hop_limit=hlim))


def _frag(src: int, dst: int, nh: int, chunk: bytes, off: int, more: bool, ident: int = 0x1234) -> bytes:
    fh = struct.pack("!BBHI", nh, 0, off | int(more), ident)
    return bytes(build_ipv6(src, dst, 44, fh + chunk))


def _ext(src: int, dst: int, kind: int, nh: int, body: bytes) -> bytes:
    hdr = bytes([nh, 0]) + b"\x01\x04\x00\x00\x00\x00"  # PadN to 8 bytes
    return bytes(build_ipv6(src, dst, kind, hdr + body))


def packets() -> list[bytes]:
    """IPv6 datagrams (from the IPv6 header on) covering what the renderer must print."""
    udp_big = _udp_seg(C1, SV, 40000, 5001, bytes(2000))
    syn_opts = b"\x02\x04\x05\xa0\x04\x02\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x00\x01\x03\x03\x07"
    inner = _udp(SV, C1, 53, 40000, b"x" * 20)
    return [
        _tcp(C1, SV, 34567, 80, 0x02, 1000, 0, opts=syn_opts),
        _tcp(SV, C1, 80, 34567, 0x12, 5000, 1001, opts=b"\x02\x04\x05\xa0\x01\x01\x04\x02"),
        _tcp(C1, SV, 34567, 80, 0x10, 1001, 5001),
        _tcp(C1, SV, 34567, 80, 0x18, 1001, 5001, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        _tcp(C1, SV, 34567, 80, 0x11, 1028, 5001),
        _udp(C1, SV, 40000, 5001, b"hello"),
        _udp(C1, MAPPED, 40000, 5001, b"mapped"),
        build_icmpv6_echo(C1, SV, 7, 1, b"x" * 56, reply=False),
        build_icmpv6_echo(SV, C1, 7, 1, b"x" * 56, reply=True),
        build_ns(C1, solicited_node(RT), RT, MAC1),
        build_ns(0, solicited_node(RT), RT, None),
        build_na(RT, C1, RT, 0x60, MAC2),
        build_na(RT, A("ff02::1"), RT, 0xA0, None),
        build_icmpv6_error(RT, C1, 2, 0, _udp(C1, SV, 40000, 5001, bytes(1400)), info=1280),
        build_icmpv6_error(RT, C1, 3, 0, inner),
        build_icmpv6_error(RT, C1, 3, 1, inner),
        *[build_icmpv6_error(RT, C1, 1, code, inner) for code in range(8)],
        build_icmpv6_error(RT, C1, 1, 4, _tcp(SV, C1, 80, 34567, 0x12, 1, 2)),
        build_icmpv6_error(RT, C1, 4, 0, inner, info=6),
        build_icmpv6_error(RT, C1, 4, 1, inner, info=40),
        bytes(build_ipv6(LL, A("ff02::1"), 58, build_icmpv6(LL, A("ff02::1"), 134, 0,
                                                            b"\x40\x00\x07\x08" + bytes(8)), hop_limit=255)),
        bytes(build_ipv6(LL, A("ff02::2"), 58, build_icmpv6(LL, A("ff02::2"), 133, 0, bytes(4)), hop_limit=255)),
        _frag(C1, SV, 17, udp_big[:1448], 0, True),
        _frag(C1, SV, 17, udp_big[1448:], 1448, False),
        _frag(C1, SV, 58, build_icmpv6_echo(C1, SV, 9, 2, bytes(1500), reply=False)[40:1488], 0, True),
        _frag(C1, SV, 6, _tcp(C1, SV, 34567, 80, 0x18, 1001, 5001, bytes(1500))[40:1488], 0, True),
        _ext(C1, SV, 60, 17, _udp_seg(C1, SV, 1, 2, b"d")),
        _ext(C1, SV, 0, 17, _udp_seg(C1, SV, 1, 2, b"h")),
        bytes(build_ipv6(C1, SV, 59, b"")),
        bytes(build_ipv6(LL, A("ff02::16"), 58, build_icmpv6(LL, A("ff02::16"), 143, 0, b"\x00\x00\x00\x01",
                                                             b"\x04\x00\x00\x00" + A("ff02::fb").to_bytes(16, "big")))),
        bytes(build_ipv6(RT, C1, 58, build_icmpv6(RT, C1, 137, 0, bytes(4), A("fd00::9").to_bytes(16, "big")
                                                  + SV.to_bytes(16, "big")))),
        bytes(build_ipv6(RT, C1, 58, build_icmpv6(RT, C1, 200, 0, bytes(4)))),
        bytes(build_ipv6(C1, SV, 43, bytes([17, 2, 0, 1, 0, 0, 0, 0]) + RT.to_bytes(16, "big")
                         + _udp_seg(C1, SV, 1, 2, b"r"))),
        build_icmpv6_error(RT, C1, 1, 4, build_icmpv6_echo(C1, SV, 3, 4, b"e", reply=False)),
        _tcp(C1, SV, 34567, 80, 0x02, 1000, 0)[:50],  # cut inside the TCP header
        _udp(C1, SV, 40000, 53, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00"
             b"\x00\x1c\x00\x01"),
    ]


def _tcpdump(tmp: Path, frames: list[bytes], *flags: str) -> list[str]:
    pcap = tmp / "v6.pcap"
    with PcapWriter(pcap) as w:
        for i, f in enumerate(frames):
            w.write(f, ts=1_700_000_000.0 + i)
    out = subprocess.run(["tcpdump", *flags, "-r", str(pcap)], capture_output=True, text=True, check=True,
                         env={**os.environ, "TZ": "UTC"})
    return out.stdout.splitlines()


@pytest.mark.parametrize("flags", [("-n",), ("-nne",), ("-nS",)])
def test_ipv6_lines_as_tcpdump(tmp_path: Path, flags: tuple[str, ...]) -> None:
    require_programs("tcpdump")
    frames = [bytes(build_ethernet(MAC2, MAC1, ETH_P_IPV6, d)) for d in packets()]
    expected = _tcpdump(tmp_path, frames, *flags)
    printer = TcpdumpPrinter(eflag="e" in flags[0], absolute="S" in flags[0])
    got = "\n".join(printer.line(f, ts=1_700_000_000.0 + i) for i, f in enumerate(frames)).splitlines()
    assert got == expected
