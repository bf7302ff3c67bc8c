"""dccp and string evaluated on packets (xt_dccp.c `dccp_mt`, xt_string.c `string_mt`)."""

from __future__ import annotations

import shlex
import struct

from natbox.netfilter import Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.skb import Skb
from natbox.testing.rules_fakes import FakeCtx, ipv4, udp


def rules(*lines: str) -> Ruleset:
    rs = Ruleset()
    for line in lines:
        rs.execute(parse_argv(["-t", "filter", "-A", "INPUT", *shlex.split(line)]))
    return rs


def hits(rs: Ruleset, skb: Skb) -> list[int]:
    before = [r.packets for r in rs.tables["filter"].chains["INPUT"].rules]
    rs.run("filter", Hook.LOCAL_IN, skb, FakeCtx(Hook.LOCAL_IN))
    return [r.packets - b for r, b in zip(rs.tables["filter"].chains["INPUT"].rules, before, strict=True)]


def dccp(sport: int, dport: int, ptype: int, options: bytes = b"", *, ext: bool = True) -> Skb:
    """A DCCP header: generic part (X=1: 48-bit sequence), the type's part (8 bytes for ACK-like), options."""
    type_len = {2: 0, 0: 4}.get(ptype, 8 if ptype in (3, 4, 5, 6, 8, 9) else 12)
    hdr_len = 12 + (4 if ext else 0) + type_len
    doff = (hdr_len + len(options)) // 4
    generic = struct.pack("!HHBBHB", sport, dport, doff, 0, 0, (ptype << 1) | int(ext)) + bytes(3)
    seg = generic + bytes(hdr_len - 12) + options
    return Skb(ipv4("10.0.0.1", "10.0.0.2", 33, seg))


def test_dccp_ports_types_options() -> None:
    rs = rules("-p dccp -m dccp --sport 1000 --dport 5000:5010", "-p dccp -m dccp ! --sport 1000",
               "-p dccp -m dccp --dccp-types ACK,DATAACK", "-p dccp -m dccp ! --dccp-types REQUEST",
               "-p dccp -m dccp --dccp-option 32", "-p dccp -m dccp ! --dccp-option 32",
               "-p dccp -m dccp --dccp-types INVALID")
    # ACK (type 3) with options: padding (0), a one-byte option 1, then option 32 of length 3
    assert hits(rs, dccp(1000, 5005, 3, b"\x00\x01\x20\x03\x05\x00\x00\x00")) == [1, 0, 1, 1, 1, 0, 0]
    # REQUEST without options: option rules see none (optlen 0)
    assert hits(rs, dccp(1001, 5005, 0)) == [0, 1, 0, 0, 0, 1, 0]
    # type 12 is INVALID (the bits from 10 up)
    assert hits(rs, dccp(1, 1, 12)) == [0, 1, 0, 1, 0, 1, 1]
    # a data offset shorter than the header the type needs is the kernel's hotdrop: no option rule matches
    bad = dccp(1, 1, 3)
    bad.data[20 + 4] = 3
    assert hits(rs, bad)[4:6] == [0, 0]


def payload(data: bytes) -> Skb:
    return Skb(ipv4("10.0.0.1", "10.0.0.2", 17, struct.pack("!HHHH", 1, 2, 8 + len(data), 0) + data))


def test_string_window_inversion_and_icase() -> None:
    rs = rules("-m string --string GET --algo bm", "-m string ! --string GET --algo kmp",
               "-m string --string get --algo kmp --icase", "-m string --string GET --algo bm --from 28 --to 31",
               "-m string --string GET --algo bm --from 29", "-m string --hex-string |474554| --algo bm")
    # the payload starts at offset 28 (20 IP + 8 UDP): [28, 31) holds exactly GET
    assert hits(rs, payload(b"GET / HTTP/1.1")) == [1, 0, 1, 1, 0, 1]
    assert hits(rs, payload(b"get / http/1.1")) == [0, 1, 1, 0, 0, 0]
    # a pattern that starts inside the window but ends past --to does not count (skb_find_text)
    rs = rules("-m string --string GET --algo bm --to 30")
    assert hits(rs, payload(b"GET")) == [0]


def test_string_icase_uses_the_kernel_toupper() -> None:
    rs = rules("-m string --hex-string |e9| --algo bm --icase")
    assert hits(rs, payload(b"\xc9")) == [1]  # é and É are one letter to lib/ctype.c
    assert hits(rs, udp("10.0.0.1", 1, "10.0.0.2", 2)) == [0]


def test_u32_operators_and_nexthop() -> None:
    # the classic u32 example: TCP (proto 6), not a fragment, payload byte 0 of the TCP data in a range
    tcp_payload = "6&0xFF=6 && 4&0x1FFF=0 && 0>>22&0x3C@12>>26&0x3C@0>>24=0x47"
    rs = rules(f"-m u32 --u32 '{tcp_payload}'", f"-m u32 ! --u32 '{tcp_payload}'",
               "-m u32 --u32 '0>>24=0x45 && 8>>24=0x40:0x41,0x80'", "-m u32 --u32 '0x10000=1'")
    seg = struct.pack("!HHIIBBHHH", 1, 80, 0, 0, 5 << 4, 0x18, 0, 0, 0) + b"GET /"
    assert hits(rs, Skb(ipv4("10.0.0.1", "10.0.0.2", 6, seg))) == [1, 0, 1, 0]
    seg = struct.pack("!HHIIBBHHH", 1, 80, 0, 0, 5 << 4, 0x18, 0, 0, 0) + b"PUT /"
    # a location past the end is false before the inversion: `!` of it matches
    assert hits(rs, Skb(ipv4("10.0.0.1", "10.0.0.2", 6, seg, ttl=0x80))) == [0, 1, 1, 0]
    cut = Skb(ipv4("10.0.0.1", "10.0.0.2", 6, b""))
    assert hits(rs, cut) == [0, 1, 1, 0]


def test_bpf_classic_program() -> None:
    # ldb [9]; jeq #6 jt 0 jf 1; ret #1; ret #0: "is TCP"
    rs = rules('-m bpf --bytecode "4,48 0 0 9,21 0 1 6,6 0 0 1,6 0 0 0"',
               # ld len; jge #100 -> ret #1 else ret #0
               '-m bpf --bytecode "4,128 0 0 0,53 0 1 100,6 0 0 1,6 0 0 0"',
               # ldxb 4*([0]&0xf); ldh [x+2] (destination port); jeq #80; ret a (non-zero) / ret #0
               '-m bpf --bytecode "5,177 0 0 0,72 0 0 2,21 0 1 80,22 0 0 0,6 0 0 0"',
               # ld [1000]: out of the packet, the program ends with 0
               '-m bpf --bytecode "2,32 0 0 1000,6 0 0 1"')
    seg = struct.pack("!HHIIBBHHH", 1, 80, 0, 0, 5 << 4, 0x18, 0, 0, 0)
    assert hits(rs, Skb(ipv4("10.0.0.1", "10.0.0.2", 6, seg))) == [1, 0, 1, 0]
    assert hits(rs, udp("10.0.0.1", 1, "10.0.0.2", 2, size=100)) == [0, 1, 0, 0]


def test_bpf_programs_the_kernel_refuses() -> None:
    from natbox.rules.matches.bpf import bpf_check_classic

    assert bpf_check_classic(((6, 0, 0, 1),))
    assert not bpf_check_classic(((48, 0, 0, 9),))  # no final RET
    assert not bpf_check_classic(((21, 5, 0, 6), (6, 0, 0, 1)))  # a jump out of the program
    assert not bpf_check_classic(((0x34, 0, 0, 0), (6, 0, 0, 1)))  # div #0
    assert not bpf_check_classic(((0x61, 0, 0, 16), (6, 0, 0, 1)))  # ldx M[16]


def time_hits(rs: Ruleset, now: float) -> list[int]:
    before = [r.packets for r in rs.tables["filter"].chains["INPUT"].rules]
    rs.run("filter", Hook.LOCAL_IN, udp("10.0.0.1", 1, "10.0.0.2", 2), FakeCtx(Hook.LOCAL_IN, now=now))
    return [r.packets - b for r, b in zip(rs.tables["filter"].chains["INPUT"].rules, before, strict=True)]


def test_time_on_the_injected_clock() -> None:
    rs = rules("-m time --timestart 08:00 --timestop 17:00 --weekdays Mon,Tue,Wed,Thu,Fri",
               "-m time --timestart 22:00 --timestop 02:00",
               "-m time --timestart 22:00 --timestop 02:00 --weekdays Fri --contiguous",
               "-m time --datestart 2024-01-01 --datestop 2024-12-31T23:59:59 --monthdays 1",
               "-m time ! --weekdays Sat,Sun --kerneltz")
    # 2024-03-01 (a Friday) 12:00 UTC
    fri_noon = 1709294400
    assert time_hits(rs, fri_noon) == [1, 0, 0, 1, 1]
    # Saturday 01:00: over midnight; --contiguous counts it to Friday
    assert time_hits(rs, fri_noon + 13 * 3600) == [0, 1, 1, 0, 0]
    # Friday 01:00 belongs to Thursday's evening for --contiguous
    assert time_hits(rs, fri_noon - 11 * 3600) == [0, 1, 0, 1, 1]
    # 2025: past --datestop
    assert time_hits(rs, fri_noon + 366 * 86400)[3] == 0
