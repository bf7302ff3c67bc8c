"""natbox.render.tcpdump against the real `tcpdump -nne -r` (4.99, TZ=UTC): frames built with struct are
written to a capture, tcpdump renders them, and our rendering must be identical line for line.

Tests needing the tcpdump binary skip cleanly without it."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natbox.adapters.pcap import CaptureReader, PcapRecord, PcapWriter
from natbox.render.tcpdump import TcpdumpPrinter, format_timestamp, tcpdump_line
from natbox.testing.paths import PCAPS
from natbox.wire.checksum import internet_checksum, l4_checksum

PCAP_DIR = PCAPS
TCPDUMP = shutil.which("tcpdump")
Tcpdump = Callable[..., list[str]]


def _tcpdump_packets(path: Path, *flags: str) -> list[str]:
    """`tcpdump <flags or -nne> -r path` with TZ=UTC, one string per packet (hex-dump lines joined)."""
    assert TCPDUMP is not None
    proc = subprocess.run([TCPDUMP, *(flags or ("-nne",)), "-r", str(path)], capture_output=True,
                          env={**os.environ, "TZ": "UTC"}, check=False)
    packets: list[str] = []
    for line in proc.stdout.decode("utf-8", "replace").split("\n"):
        if line.startswith("\t") and packets:
            packets[-1] += "\n" + line
        elif line:
            packets.append(line)
    return packets


@pytest.fixture
def tcpdump() -> Tcpdump:
    if TCPDUMP is None:
        pytest.skip("tcpdump binary not installed")
    return _tcpdump_packets


# ---- frame builders (struct only) ---------------------------------------------------------------------

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def ip4(s: str) -> bytes:
    return bytes(int(x) for x in s.split("."))


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, ident: int = 1, frag: int = 0, ttl: int = 64,
         tot: int | None = None, ihl: int = 5, version: int = 4, options: bytes = b"") -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0,
                      20 + len(options) + len(payload) if tot is None else tot, ident, frag, ttl, proto, 0,
                      ip4(src), ip4(dst)) + options
    csum = internet_checksum(hdr)
    return hdr[:10] + struct.pack("!H", csum) + hdr[12:] + payload


def ether(payload: bytes, etype: int = 0x0800, src: bytes = MAC_A, dst: bytes = MAC_B) -> bytes:
    return dst + src + struct.pack("!H", etype) + payload


def tcp(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, *,
        win: int = 64240,
        options: bytes = b"", data: bytes = b"", urp: int = 0, doff: int | None = None) -> bytes:
    off = (20 + len(options)) // 4 if doff is None else doff
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off << 4, flags, win, 0,
                      urp) + options + data
    c = l4_checksum(int.from_bytes(ip4(src), "big"), int.from_bytes(ip4(dst), "big"), 6, seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def udp(sport: int, dport: int, data: bytes, ulen: int | None = None) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data) if ulen is None else ulen, 0) + data


def icmp(t: int, code: int, rest: bytes, body: bytes = b"") -> bytes:
    msg = struct.pack("!BBH", t, code, 0) + rest + body
    return msg[:2] + struct.pack("!H", internet_checksum(msg)) + msg[4:]


def arp(op: int, sha: bytes, spa: str, tha: bytes, tpa: str) -> bytes:
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, ip4(spa), tha, ip4(tpa))


def dns_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def dns(ident: int, flags: int, questions: list[tuple[str, int]], answers: list[tuple[int, bytes]]) -> bytes:
    out = struct.pack("!HHHHHH", ident, flags, len(questions), len(answers), 0, 0)
    for name, qtype in questions:
        out += dns_name(name) + struct.pack("!HH", qtype, 1)
    for rtype, rdata in answers:
        out += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 300, len(rdata)) + rdata
    return out


C, S = "10.0.0.1", "198.51.100.7"
MSS_SYN = b"\x02\x04\x05\xb4\x04\x02\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x00\x01\x03\x03\x07"


def _inner(proto: int, sport: int, dport: int) -> bytes:
    """The quoted datagram of an ICMP error: header + first 8 bytes."""
    l4 = struct.pack("!HHHH", sport, dport, 20, 0)
    return ipv4(C, S, proto, l4, tot=48)


def mixed_frames() -> list[tuple[bytes, int | None]]:
    """(frame, wirelen or None) pairs covering the kinds the module promises to render exactly."""
    f: list[tuple[bytes, int | None]] = []

    def add(frame: bytes, wirelen: int | None = None) -> None:
        f.append((frame, wirelen))

    bcast = b"\xff" * 6
    # ARP request (minimal and padded), with a known target MAC, reply
    add(ether(arp(1, MAC_A, C, b"\x00" * 6, "10.0.0.254"), 0x0806, dst=bcast))
    add(ether(arp(1, MAC_A, C, b"\x00" * 6, "10.0.0.254") + b"\x00" * 18, 0x0806, dst=bcast))
    add(ether(arp(1, MAC_A, C, MAC_B, "10.0.0.254"), 0x0806))
    add(ether(arp(2, MAC_B, "10.0.0.254", MAC_A, C), 0x0806, src=MAC_B, dst=MAC_A))
    # ICMP echo
    add(ether(ipv4(C, S, 1, icmp(8, 0, struct.pack("!HH", 0x1234, 1), b"x" * 56))))
    add(ether(ipv4(S, C, 1, icmp(0, 0, struct.pack("!HH", 0x1234, 1), b"x" * 56))))
    # ICMP errors
    for code in (0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 99):
        add(ether(ipv4(S, C, 1, icmp(3, code, b"\x00" * 4, _inner(17, 5000, 53)))))
    add(ether(ipv4(S, C, 1, icmp(3, 3, b"\x00" * 4, _inner(17, 5000, 33434)))))
    add(ether(ipv4(S, C, 1, icmp(3, 3, b"\x00" * 4, _inner(6, 5000, 443)))))
    add(ether(ipv4(S, C, 1, icmp(3, 3, b"\x00" * 4, _inner(132, 5000, 9)))))
    add(ether(ipv4(S, C, 1, icmp(3, 4, struct.pack("!HH", 0, 1400), _inner(6, 5000, 443)))))
    add(ether(ipv4(S, C, 1, icmp(3, 4, b"\x00" * 4, _inner(6, 5000, 443)))))
    add(ether(ipv4(S, C, 1, icmp(11, 0, b"\x00" * 4, _inner(17, 5000, 33434)))))
    add(ether(ipv4(S, C, 1, icmp(11, 1, b"\x00" * 4, _inner(17, 5000, 33434)))))
    add(ether(ipv4(S, C, 1, icmp(11, 7, b"\x00" * 4, _inner(17, 5000, 33434)))))
    add(ether(ipv4(S, C, 1, icmp(5, 1, ip4("10.0.0.254"), _inner(17, 5000, 53)))))
    add(ether(ipv4(S, C, 1, icmp(5, 0, ip4("10.0.0.254"), _inner(17, 5000, 53)))))
    add(ether(ipv4(S, C, 1, icmp(5, 9, ip4("10.0.0.254"), _inner(17, 5000, 53)))))
    add(ether(ipv4(S, C, 1, icmp(12, 0, b"\x08\x00\x00\x00", _inner(17, 5000, 53)))))
    add(ether(ipv4(S, C, 1, icmp(12, 2, b"\x00" * 4, _inner(17, 5000, 53)))))
    add(ether(ipv4(S, C, 1, icmp(4, 0, b"\x00" * 4, _inner(17, 5000, 53)))))
    add(ether(ipv4(S, C, 1, icmp(13, 0, struct.pack("!HH", 7, 9), b"\x00" * 12))))
    add(ether(ipv4(S, C, 1, icmp(14, 0, struct.pack("!HH", 7, 9), struct.pack("!III", 3723004, 1, 86399999)))))
    add(ether(ipv4(S, C, 1, icmp(18, 0, struct.pack("!HH", 7, 9), b"\xff\xff\xff\x00"))))
    add(ether(ipv4(S, C, 1, icmp(9, 0, struct.pack("!BBH", 1, 2, 1800), ip4("10.0.0.254") + b"\x00\x00\x00\x05"))))
    add(ether(ipv4(S, C, 1, icmp(9, 0, struct.pack("!BBH", 0, 0, 7200), b""))))
    add(ether(ipv4(S, C, 1, icmp(10, 0, b"\x00" * 4))))
    add(ether(ipv4(S, C, 1, icmp(42, 0, b"\x00" * 4))))
    # TCP: a whole conversation (relative numbers after the handshake), then odd flags and options
    isn_c, isn_s = 0xFFFFFF00, 1000
    add(ether(ipv4(C, S, 6, tcp(C, S, 40000, 5555, isn_c, 0, 0x02, options=MSS_SYN))))
    add(ether(ipv4(S, C, 6, tcp(S, C, 5555, 40000, isn_s, isn_c + 1, 0x12, win=65160,
                                options=b"\x02\x04\x05\xb4\x01\x01\x04\x02\x01\x03\x03\x07"))))
    add(ether(ipv4(C, S, 6, tcp(C, S, 40000, 5555, isn_c + 1, isn_s + 1, 0x10))))
    add(ether(ipv4(C, S, 6, tcp(C, S, 40000, 5555, isn_c + 1, isn_s + 1, 0x18, data=b"hello world\n"))))
    sack = struct.pack("!II", (isn_c + 200) & 0xFFFFFFFF, (isn_c + 300) & 0xFFFFFFFF)
    add(ether(ipv4(S, C, 6, tcp(S, C, 5555, 40000, isn_s + 1, isn_c + 13, 0x10, options=b"\x01\x01\x05\x0a" + sack))))
    add(ether(ipv4(S, C, 6, tcp(S, C, 5555, 40000, isn_s + 1, isn_c + 13, 0x19, data=b"bye"))))
    add(ether(ipv4(C, S, 6, tcp(C, S, 40000, 5555, isn_c + 13, isn_s + 5, 0x11))))
    add(ether(ipv4(C, S, 6, tcp(C, S, 40000, 5555, isn_c + 14, 0, 0x04, win=0))))
    add(ether(ipv4(C, S, 6, tcp(C, S, 40001, 5555, 77, 0, 0x04, win=0))))
    add(ether(ipv4(S, C, 6, tcp(S, C, 5555, 40002, 0, 12346, 0x14, win=0))))
    add(ether(ipv4(C, S, 6, tcp(C, S, 40003, 5555, 5, 6, 0x00))))
    add(ether(ipv4(C, S, 6, tcp(C, S, 40003, 5555, 5, 6, 0xC2 | 0x20, urp=3, data=b"abc"))))
    add(ether(ipv4(C, S, 6, tcp(C, S, 40004, 5555, 9, 0, 0x02, options=b"\x02\x03\x05\xb4"))))  # bad opt len
    add(ether(ipv4(C, S, 6, tcp(C, S, 40004, 5555, 9, 0, 0x02, options=b"\x63\x04\xab\xcd\x01\x01\x00\x00"))))
    add(ether(ipv4(C, S, 6, tcp(C, S, 40004, 5555, 9, 0, 0x02, options=b"\x08\x0a" + b"\x00" * 6))))
    add(ether(ipv4(C, S, 6, tcp(C, S, 40005, 5555, 9, 0, 0x02, doff=4))))  # too-short header length
    add(ether(ipv4(C, S, 6, tcp(C, S, 40006, 5555, 9, 0, 0x02, doff=15))))  # header longer than segment
    add(ether(ipv4(C, S, 6, tcp(C, S, 40007, 80, 9, 1, 0x18, data=b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"))))
    add(ether(ipv4(S, C, 6, tcp(S, C, 80, 40007, 1, 10, 0x18, data=b"HTTP/1.1 200 OK\r\n\r\n"))))
    add(ether(ipv4(S, C, 6, tcp(S, C, 80, 40007, 20, 10, 0x18, data=b"\x00\x01binary"))))
    # UDP, lengths
    add(ether(ipv4(C, S, 17, udp(40000, 5555, b"z" * 10))))
    add(ether(ipv4(C, S, 17, udp(40000, 5555, b"z" * 10, ulen=100))))
    add(ether(ipv4(C, S, 17, udp(40000, 5555, b"z" * 10, ulen=4))))
    add(ether(ipv4(C, S, 17, udp(40000, 5555, b"z" * 10, ulen=12))))
    # DNS
    q = dns(0x3039, 0x0100, [("example.com", 1)], [])
    add(ether(ipv4(C, S, 17, udp(40000, 53, q))))
    add(ether(ipv4(C, S, 17, udp(40000, 53, dns(7, 0x0100, [("example.com", 28)], [])))))
    add(ether(ipv4(C, S, 17, udp(40000, 53, dns(8, 0x0000, [("example.org", 15)], [])))))
    add(ether(ipv4(S, C, 17, udp(53, 40000, dns(0x3039, 0x8180, [("example.com", 1)],
                                               [(5, dns_name("www.example.net")), (1, ip4("93.184.216.34"))])))))
    add(ether(ipv4(S, C, 17, udp(53, 40000, dns(9, 0x8183, [("nope.example", 1)], [])))))
    add(ether(ipv4(S, C, 17, udp(53, 40000, dns(10, 0x8580, [("example.org", 15)],
                                               [(15, b"\x00\x0a" + dns_name("mail.example.org"))])))))
    add(ether(ipv4(S, C, 17, udp(53, 40000, dns(11, 0x8180, [("example.org", 16)],
                                               [(16, b"\x05hello\x05world")])))))
    add(ether(ipv4(S, C, 17, udp(53, 40000, dns(12, 0x8180, [("example.org", 28)],
                                               [(28, bytes.fromhex("20010db8000000000000000000000001"))])))))
    add(ether(ipv4(S, C, 17, udp(53, 40000, b"\x00" * 4))))
    # application protocols a NAT box has helpers or special cases for
    add(ether(ipv4(C, S, 17, udp(40000, 69, b"\x00\x01boot.img\x00octet\x00blksize\x001428\x00"))))
    add(ether(ipv4(S, C, 17, udp(40001, 40000, b"\x00\x03\x00\x01" + b"D" * 512))))
    add(ether(ipv4(C, S, 17, udp(40000, 40001, b"\x00\x04\x00\x01"))))
    add(ether(ipv4(S, C, 17, udp(69, 40000, b"\x00\x05\x00\x01File not found\x00"))))
    add(ether(ipv4(S, C, 17, udp(69, 40000, b"\x00\x09\x00\x01"))))
    add(ether(ipv4(C, S, 17, udp(4500, 4500, struct.pack("!II", 0x12345678, 7) + b"e" * 40))))
    add(ether(ipv4(C, S, 17, udp(4500, 4500, b"\xff"))))
    add(ether(ipv4(C, S, 50, struct.pack("!II", 0xDEADBEEF, 1) + b"e" * 40)))
    add(ether(ipv4(C, S, 17, udp(5060, 5060, b"INVITE sip:bob@example.com SIP/2.0\r\nVia: x\r\n\r\n"))))
    add(ether(ipv4(S, C, 17, udp(5060, 5060, b"SIP/2.0 180 Ringing\r\n\r\n"))))
    add(ether(ipv4(C, "224.0.0.251", 17, udp(5353, 5353, dns(0, 0, [("printer.local", 12)], [])))))
    add(ether(ipv4(C, S, 6, tcp(C, S, 40008, 22, 1, 1, 0x18, data=b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"))))
    add(ether(ipv4(C, S, 6, tcp(C, S, 40008, 22, 40, 1, 0x18, data=b"\x00\x00\x01\x00binary"))))
    # IPv4 fragments: first (UDP, MF), middle, last; a TCP first fragment
    big = udp(40000, 5555, b"f" * 1000)
    add(ether(ipv4(C, S, 17, big[:600], ident=777, frag=0x2000)))
    add(ether(ipv4(C, S, 17, big[600:800], ident=777, frag=0x2000 | 75)))
    add(ether(ipv4(C, S, 17, big[800:], ident=777, frag=100)))
    add(ether(ipv4(C, S, 6, tcp(C, S, 1, 2, 3, 4, 0x18, data=b"d" * 40)[:48], ident=778, frag=0x2000)))
    add(ether(ipv4(C, S, 1, icmp(8, 0, struct.pack("!HH", 1, 2), b"i" * 100)[:64], ident=779, frag=0x2000)))
    # other protocols, IP-in-IP, bad lengths
    add(ether(ipv4(C, S, 99, b"\x00" * 12)))
    add(ether(ipv4(C, S, 253, b"")))
    add(ether(ipv4(C, S, 4, ipv4("192.168.1.1", "192.168.1.2", 1, icmp(8, 0, struct.pack("!HH", 5, 6))))))
    add(ether(ipv4(C, S, 17, udp(1, 2, b"q" * 20), tot=20 + 28 + 30)))     # truncated-ip, N bytes missing
    add(ether(ipv4(C, S, 17, udp(1, 2, b"q" * 20), tot=12)))               # bad-len
    add(ether(ipv4(C, S, 17, udp(1, 2, b"q" * 20), ihl=3)))                # bad-hlen
    add(ether(ipv4(C, S, 17, udp(1, 2, b"q" * 20), version=6)))            # IP6 in an IPv4 ethertype
    add(ether(ipv4(C, S, 17, udp(1, 2, b"q" * 20), version=5)))
    add(ether(ipv4(C, S, 17, b"")[:19]))                                   # short IPv4 header
    add(ether(b"\x45"), 14 + 40)
    # truncated captures (caplen < wirelen)
    syn = ether(ipv4(C, S, 6, tcp(C, S, 40010, 5555, 1, 0, 0x02, options=MSS_SYN)))
    for cut in (14 + 10, 14 + 20, 14 + 22, 14 + 30, 14 + 34, 14 + 44, 14 + 50):
        add(syn[:cut], len(syn))
    u = ether(ipv4(C, S, 17, udp(40000, 5555, b"u" * 30)))
    for cut in (14 + 21, 14 + 24, 14 + 27):
        add(u[:cut], len(u))
    d = ether(ipv4(C, S, 17, udp(40000, 53, q)))
    for cut in (14 + 28 + 5, 14 + 28 + 14, 14 + 28 + 20):
        add(d[:cut], len(d))
    e = ether(ipv4(S, C, 1, icmp(3, 3, b"\x00" * 4, _inner(17, 5000, 53))))
    for cut in (14 + 21, 14 + 20 + 8 + 12, 14 + 20 + 8 + 21):
        add(e[:cut], len(e))
    add(MAC_B + MAC_A, 60)
    # 802.1Q tagged IPv4, an unknown ethertype, 802.3 length field
    add(ether(struct.pack("!HH", 0x2005, 0x0800) + ipv4(C, S, 17, udp(1, 2, b"v")), 0x8100))
    add(ether(b"\x01\x02\x03\x04" * 9 + b"\x05", 0x88B5))
    return f


def _write(path: Path, frames: list[tuple[bytes, int | None]], linktype: int = 1) -> list[int]:
    ts_list = []
    with PcapWriter(path, linktype=linktype) as w:
        for i, (fr, wl) in enumerate(frames):
            ts_ns = 1_700_000_000_000_000_000 + i * 1_234_567_000
            w.write(fr, ts_ns=ts_ns, wirelen=wl)
            ts_list.append(ts_ns)
    return ts_list


def _compare(ours: list[str], theirs: list[str]) -> list[tuple[int, str, str]]:
    assert len(ours) == len(theirs)
    return [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]


# ---- constructed frames vs tcpdump --------------------------------------------------------------------

def test_mixed_frames_match_tcpdump_line_for_line(tmp_path: Path, tcpdump: Tcpdump) -> None:
    frames = mixed_frames()
    p = tmp_path / "mixed.pcap"
    ts = _write(p, frames)
    printer = TcpdumpPrinter()
    ours = [printer.line(fr, ts_ns=t, wirelen=wl) for (fr, wl), t in zip(frames, ts, strict=True)]
    assert _compare(ours, tcpdump(p)) == []


def test_absolute_mode_matches_tcpdump_S(tmp_path: Path, tcpdump: Tcpdump) -> None:
    frames = mixed_frames()
    p = tmp_path / "mixed.pcap"
    ts = _write(p, frames)
    ours = [tcpdump_line(fr, ts_ns=t, wirelen=wl) for (fr, wl), t in zip(frames, ts, strict=True)]
    assert _compare(ours, tcpdump(p, "-nne", "-S")) == []
    ours_abs = [TcpdumpPrinter(absolute=True).line(fr, ts_ns=t, wirelen=wl)
                for (fr, wl), t in zip(frames, ts, strict=True)]
    assert ours_abs == ours


def test_without_link_header_matches_tcpdump_n(tmp_path: Path, tcpdump: Tcpdump) -> None:
    frames = [(fr, wl) for fr, wl in mixed_frames() if len(fr) >= 14 and fr[12:14] in (b"\x08\x00", b"\x08\x06")]
    p = tmp_path / "mixed.pcap"
    ts = _write(p, frames)
    printer = TcpdumpPrinter(eflag=False)
    ours = [printer.line(fr, ts_ns=t, wirelen=wl) for (fr, wl), t in zip(frames, ts, strict=True)]
    assert _compare(ours, tcpdump(p, "-n")) == []


@pytest.mark.parametrize("linktype", [228, 101])
def test_raw_ip_link_types_match_tcpdump(tmp_path: Path, tcpdump: Tcpdump, linktype: int) -> None:
    # (tcpdump's raw printer dispatches on the version nibble; IPv6 is not rendered here)
    frames = [(fr[14:], None if wl is None else wl - 14) for fr, wl in mixed_frames()
              if len(fr) > 14 and fr[12:14] == b"\x08\x00" and fr[14] >> 4 != 6]
    p = tmp_path / "raw.pcap"
    ts = _write(p, frames, linktype=linktype)
    printer = TcpdumpPrinter(link="raw")
    ours = [printer.line(fr, ts_ns=t, wirelen=wl) for (fr, wl), t in zip(frames, ts, strict=True)]
    assert _compare(ours, tcpdump(p)) == []
    printer_n = TcpdumpPrinter(link="raw", eflag=False)
    ours_n = [printer_n.line(fr, ts_ns=t, wirelen=wl) for (fr, wl), t in zip(frames, ts, strict=True)]
    assert _compare(ours_n, tcpdump(p, "-n")) == []


# ---- SCTP (print-sctp.c) ---------------------------------------------------------------------------

def sctp_chunk(ctype: int, flags: int, body: bytes) -> bytes:
    c = struct.pack("!BBH", ctype, flags, 4 + len(body)) + body
    return c + bytes(-len(c) % 4)


def sctp(sport: int, dport: int, *chunks: bytes, vtag: int = 0) -> bytes:
    return struct.pack("!HHII", sport, dport, vtag, 0) + b"".join(chunks)


SCTP_INIT = struct.pack("!IIHHI", 0x11223344, 106496, 10, 65535, 123456) + struct.pack("!HHI", 0xC000, 8, 0)


def sctp_frames() -> list[tuple[bytes, int | None]]:
    """Every chunk kind print-sctp.c names, DATA flag combinations, SACK gap/dup lists, and tcpdump's
    malformed-chunk texts (cut-off descriptor, bad lengths, bogus DATA/INIT/SACK lengths, truncation)."""
    bodies = [
        sctp(7, 7, sctp_chunk(1, 0, SCTP_INIT)),
        sctp(7, 7, sctp_chunk(2, 0, SCTP_INIT + b"cookie!!")),
        sctp(7, 7, sctp_chunk(0, 3, struct.pack("!IHHI", 5, 1, 2, 0) + b"hello")),
        sctp(7, 7, sctp_chunk(0, 0, struct.pack("!IHHI", 5, 1, 2, 3) + b"hi"),
             sctp_chunk(0, 7, struct.pack("!IHHI", 6, 0, 0, 46) + b"x")),
        sctp(7, 7, sctp_chunk(3, 0, struct.pack("!IIHH", 0xFFFFFFFE, 5000, 2, 1) + struct.pack("!HHHH", 2, 3, 5, 6)
                              + struct.pack("!I", 99))),
        sctp(7, 7, sctp_chunk(4, 0, struct.pack("!HH", 1, 8) + b"abcd"), sctp_chunk(5, 0, struct.pack("!HH", 1, 8))),
        sctp(7, 7, sctp_chunk(6, 0, b""), sctp_chunk(7, 0, struct.pack("!I", 77)), sctp_chunk(8, 0, b""),
             sctp_chunk(14, 1, b"")),
        sctp(7, 7, sctp_chunk(9, 0, struct.pack("!HH", 1, 8) + b"\0\1\0\0"), sctp_chunk(10, 0, b"cookie"),
             sctp_chunk(11, 0, b"")),
        sctp(7, 7, sctp_chunk(12, 0, struct.pack("!I", 5)), sctp_chunk(13, 0, struct.pack("!I", 6)),
             sctp_chunk(0xC0, 0, struct.pack("!I", 7)), sctp_chunk(0xC1, 0, b""), sctp_chunk(0xC2, 0, b""),
             sctp_chunk(0x40, 0, b"zz"), sctp_chunk(0x99, 0, b"")),
        sctp(7, 7),
        sctp(7, 7, b"\x01\x00"),
        sctp(7, 7, struct.pack("!BBH", 1, 0, 2)),
        sctp(7, 7, sctp_chunk(0, 3, b"ab")),
        sctp(7, 7, sctp_chunk(1, 0, b"ab")),
        sctp(7, 7, sctp_chunk(3, 0, struct.pack("!IIHH", 100, 5000, 3, 0))),
        sctp(7, 7, sctp_chunk(3, 0, struct.pack("!IIHH", 100, 5000, 1, 0) + b"\0\1")),
        sctp(7, 7, sctp_chunk(0, 3, struct.pack("!IHHI", 5, 1, 2, 0))),
        sctp(7, 7, struct.pack("!BBH", 1, 0, 40) + b"x" * 8),
        sctp(7, 7, struct.pack("!BBH", 4, 0, 5) + b"x"),
        struct.pack("!HH", 7, 7),
    ]
    f: list[tuple[bytes, int | None]] = [(ether(ipv4(S, C, 132, b)), None) for b in bodies]
    f.append((ether(ipv4(S, C, 132, bodies[0]))[:50], None))  # capture cut inside the INIT chunk
    f.append((ether(ipv4(S, C, 132, bodies[0][:8], frag=0x2000)), None))  # first fragment
    f.append((ether(ipv4(S, C, 132, bodies[0][8:], frag=1)), None))  # later fragment
    return f


def test_sctp_init_line() -> None:
    """The issue #13 example: addresses and ports, then the INIT chunk's fields (trailing space as tcpdump)."""
    frame = ether(ipv4("198.51.100.1", "192.168.170.56", 132, sctp(7, 7, sctp_chunk(1, 0, SCTP_INIT))))
    assert tcpdump_line(frame, eflag=False) == (
        "IP 198.51.100.1.7 > 192.168.170.56.7: sctp (1) [INIT] [init tag: 287454020] [rwnd: 106496] [OS: 10] "
        "[MIS: 65535] [init TSN: 123456] ")


def test_sctp_frames_match_tcpdump(tmp_path: Path, tcpdump: Tcpdump) -> None:
    frames = sctp_frames()
    p = tmp_path / "sctp.pcap"
    ts = _write(p, frames)
    for eflag, flags in ((True, ("-nne",)), (False, ("-n",))):
        printer = TcpdumpPrinter(eflag=eflag)
        ours = [printer.line(fr, ts_ns=t, wirelen=wl) for (fr, wl), t in zip(frames, ts, strict=True)]
        assert _compare(ours, tcpdump(p, *flags)) == []


def test_mutated_sctp_frames_match_tcpdump(tmp_path: Path, tcpdump: Tcpdump) -> None:
    rng = random.Random(132)
    base = [fr for fr, _ in sctp_frames()]
    frames: list[tuple[bytes, int | None]] = []
    for _ in range(1500):
        f = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 3)):
            if len(f) > 34:
                f[rng.randrange(34, len(f))] = rng.randrange(256)
        if rng.random() < 0.3:
            f = f[:rng.randint(34, max(34, len(f)))]
        frames.append((bytes(f), None))
    p = tmp_path / "sctp-fuzz.pcap"
    ts = _write(p, frames)
    printer = TcpdumpPrinter()
    ours = [printer.line(fr, ts_ns=t, wirelen=wl) for (fr, wl), t in zip(frames, ts, strict=True)]
    theirs = tcpdump(p)
    bad = [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b and "ForCES" not in b]
    assert bad == []


# ---- the sample captures ----------------------------------------------------------------------------

LINKS = {1: "ether", 113: "sll", 101: "raw", 228: "raw"}
# Files made only of packet kinds this module renders: every line must match.
FULLY_COVERED = {
    "debbin-python3-dpkt__dns_icmp.pcap", "debbin-python3-dpkt__http.pcap", "debbin-python3-dpkt__truncated_dns.pcap",
    "debbin-python3-libtrace__icmp-sample.pcap", "debsrc-tcpdump-4.99.3__dns_tcp.pcap",
    "debsrc-tcpdump-4.99.3__dns_udp.pcap", "debsrc-tcpdump-4.99.3__icmp-cksum-oobr-1.pcap",
    "debsrc-tcpdump-4.99.3__print-flags.pcap", "debsrc-tcpdump-4.99.3__whois.pcap",
    "debsrc-wireshark-4.0.17__dns+icmp.pcapng", "debsrc-wireshark-4.0.17__dns_port.pcap",
    "debsrc-wireshark-4.0.17__http-ooo.pcap", "debsrc-wireshark-4.0.17__icmp.pcapng",
    "debsrc-wireshark-4.0.17__ipoipoip.pcap", "debsrc-wireshark-4.0.17__tcp-badsegments.pcap",
    "debsrc-tcpdump-4.99.3__espudp1.pcap", "debsrc-tcpdump-4.99.3__ssh.pcap", "debsrc-tcpdump-4.99.3__tftp.pcap",
    "debsrc-wireshark-4.0.17__sip.pcapng",
}
# TCP ports whose payload tcpdump decodes (print-tcp.c) and this module does not (telnet, bgp, pptp,
# redis, netbios/smb, beep, openflow, rtsp, msdp, rpki-rtr, ldp, nfs).
TCP_APP_PORTS = frozenset({23, 179, 1723, 6379, 139, 445, 10288, 6633, 6653, 554, 8554, 639, 323, 646, 2049})


def _out_of_scope(rec: PcapRecord, want: str) -> bool:
    """Whether a packet is of a kind tcpdump decodes further than this module (so a difference is allowed).

    Decided from the packet itself (link type, IP protocol, ports), not from our output."""
    frac = want.split(" ", 1)[0].rsplit(".", maxsplit=1)[-1]
    if len(frac) > 6:  # fuzzed microsecond field >= 10**6: tcpdump prints it raw
        return True
    if rec.ethertype not in (0x0800, 0x0806) or rec.foreign:
        return True
    return rec.ipv4 is not None and _ip_out_of_scope(rec.ipv4, want)


def _ip_out_of_scope(ip: bytes, want: str) -> bool:
    if len(ip) < 20 or ip[0] >> 4 != 4:
        return False
    ihl = (ip[0] & 15) * 4
    if (ip[6] << 8 | ip[7]) & 0x1FFF:
        return False  # later fragment: "ip-proto-N"
    ports = set(struct.unpack("!HH", ip[ihl:ihl + 4])) if len(ip) >= ihl + 4 else set()
    proto = ip[9]
    if proto == 6:
        return bool(ports & TCP_APP_PORTS)
    if proto == 17:
        # the long list of UDP application printers in print-udp.c: only DNS, mDNS, TFTP, SIP, ESP-in-UDP
        # and the generic "UDP, length N" text are rendered here
        return not (ports & {53, 5353, 69, 5060, 4500} or "UDP, " in want) or "NONESP" in want
    if proto == 4:
        return _ip_out_of_scope(ip[ihl:], want)
    if proto == 132:
        # print-sctp.c is rendered except the ForCES messages (ports 6704-6706, PPIDs 21-23)
        return bool(ports & {6704, 6705, 6706}) or "ForCES" in want
    return proto != 1


def _sample_files() -> list[Path]:
    if not PCAP_DIR.is_dir():
        return []
    return sorted(p for p in PCAP_DIR.iterdir() if p.suffix in (".pcap", ".pcapng"))


@pytest.mark.parametrize("path", _sample_files(), ids=lambda p: p.name)
def test_sample_captures_against_tcpdump(path: Path, tcpdump: Tcpdump) -> None:
    with CaptureReader(path) as reader:
        recs = list(reader)
    theirs = tcpdump(path)
    assert len(theirs) == len(recs)
    printer = TcpdumpPrinter()
    matched = 0
    for rec, want in zip(recs, theirs, strict=True):
        link = LINKS.get(rec.linktype)
        if link is None:
            continue  # PPP: foreign to the printer
        got = printer.line(rec.data, ts_ns=rec.ts_ns, wirelen=rec.wirelen, link=link)
        if got == want:
            matched += 1
            continue
        assert path.name not in FULLY_COVERED, (got, want)
        assert _out_of_scope(rec, want), (got, want)
    print(f"{path.name}: {matched}/{len(theirs)} lines identical")
    if path.name in FULLY_COVERED:
        assert matched == len(theirs)


def test_mutated_frames_match_tcpdump(tmp_path: Path, tcpdump: Tcpdump) -> None:
    """Differential fuzz: 3000 randomly mutated/truncated copies of the mixed frames; every packet of a
    kind this module renders must print exactly as tcpdump prints it."""
    rng = random.Random(20240601)
    base = [fr for fr, _ in mixed_frames()]
    frames: list[tuple[bytes, int | None]] = []
    for _ in range(3000):
        f = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 4)):
            if len(f) > 14:
                f[rng.randrange(14, len(f))] = rng.randrange(256)
        if rng.random() < 0.3 and len(f) > 14:
            f = f[:rng.randint(14, len(f))]
        frames.append((bytes(f), len(f) + (rng.randint(0, 50) if rng.random() < 0.3 else 0)))
    p = tmp_path / "fuzz.pcap"
    ts = _write(p, frames)
    theirs = tcpdump(p)
    with CaptureReader(p) as reader:
        recs = list(reader)
    printer = TcpdumpPrinter()
    checked = 0
    for rec, t, want in zip(recs, ts, theirs, strict=True):
        got = printer.line(rec.data, ts_ns=t, wirelen=rec.wirelen)
        if got != want:
            assert _out_of_scope(rec, want), (got, want)
        else:
            checked += 1
    assert checked > 2900


# ---- properties -----------------------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120), st.sampled_from(["ether", "raw", "sll"]), st.booleans(),
       st.integers(0, 70000))
def test_never_raises(data: bytes, link: str, eflag: bool, extra: int) -> None:
    out = tcpdump_line(data, link=link, eflag=eflag, wirelen=len(data) + extra)
    assert "\n" not in out.split("\n\t", 1)[0]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=14, max_size=90))
def test_random_ipv4_frames_never_raise(tail: bytes) -> None:
    frame = ether(b"\x45" + tail)
    printer = TcpdumpPrinter()
    assert isinstance(printer.line(frame), str)


def test_format_timestamp_utc_and_truncation() -> None:
    # 2023-11-14 22:13:20 UTC
    assert format_timestamp(ts_ns=1_700_000_000_999_999_999) == "22:13:20.999999"
    assert format_timestamp(1_700_000_000.25) == "22:13:20.250000"
    assert format_timestamp(0.0) == "00:00:00.000000"


def test_relative_sequence_table_is_bounded() -> None:
    printer = TcpdumpPrinter(max_conversations=2)
    lines = []
    for port in (1001, 1002, 1003, 1001):
        seg = tcp(C, S, port, 5555, 5000, 7000, 0x10, data=b"x")
        lines.append(printer.line(ether(ipv4(C, S, 6, seg))))
    # first packet of each conversation is absolute; 1001 was evicted, so it is absolute again
    assert all("seq 5000:5001, ack 7000" in line for line in lines)
    again = printer.line(ether(ipv4(C, S, 6, tcp(C, S, 1001, 5555, 5001, 7000, 0x10, data=b"x"))))
    assert "seq 1:2, ack 1" in again
