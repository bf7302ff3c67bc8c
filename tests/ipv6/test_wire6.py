"""IPv6 wire helpers: the extension-header walkers (ipv6-semantics.md §1.6), ip6_rcv_core (§1.2), ICMPv6
checksums, NPTv6 mapping (§3.7) and the conntrack text of IPv6 tuples (§7.1)."""

from __future__ import annotations

import struct

import pytest

from natbox.conntrack.conn import Conn
from natbox.conntrack.format import format_conntrack, format_proc
from natbox.conntrack.tuple import ConnTuple, invert, tuple_l3num
from natbox.nat.npt import npt_adjustment, npt_check, npt_map
from natbox.netfilter import NFPROTO_IPV4, NFPROTO_IPV6, CtStatus, DropReason
from natbox.skb import Skb6
from natbox.wire.icmpv6 import build_icmpv6_echo, build_icmpv6_error, icmpv6_checksum, icmpv6_is_ineligible
from natbox.wire.ipv6 import (
    build_frag_hdr,
    build_ipv6,
    format_addr6,
    format_addr6_full,
    ip6_rcv_core,
    ipv6_find_hdr,
    ipv6_skip_exthdr,
    parse_addr6,
)

C1 = parse_addr6("fd00:77::2")
SV = parse_addr6("2001:db8:100::10")
UDP = struct.pack("!HHHH", 40100, 7001, 12, 0) + b"abcd"


def _dest_opts(nexthdr: int) -> bytes:
    return bytes([nexthdr, 0, 1, 4, 0, 0, 0, 0])  # 8 bytes: PadN


def _slow_sum(words: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(words) // 2}H", words))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_skip_exthdr_passes_dest_options_and_a_first_fragment() -> None:
    payload = _dest_opts(44) + build_frag_hdr(17, 0, True, 0x777) + UDP
    pkt = build_ipv6(C1, SV, 60, payload)
    off, nexthdr, frag_off = ipv6_skip_exthdr(pkt, 40, 60)
    assert (off, nexthdr, frag_off) == (56, 17, 1)
    skb = Skb6(pkt)
    assert (skb.ihl, skb.protocol, skb.is_fragment, skb.is_later_fragment) == (56, 17, True, False)
    assert skb.l4_u16(0) == 40100


def test_skip_exthdr_stops_at_a_non_first_fragment_but_find_hdr_sees_udp() -> None:
    pkt = build_ipv6(C1, SV, 44, build_frag_hdr(17, 1448, False, 0x777) + b"x" * 16)
    assert ipv6_skip_exthdr(pkt, 40, 44) == (40, 44, 1448)
    skb = Skb6(pkt)
    assert skb.protocol == 44 and skb.is_later_fragment
    assert ipv6_find_hdr(pkt) == (40, 17, 1448, 1)  # ip6tables -p udp matches it (§1.6)
    assert ipv6_find_hdr(pkt, 44) == (40, 44, 1448, 1)


def test_none_and_truncation_fail_the_walk() -> None:
    pkt = build_ipv6(C1, SV, 60, _dest_opts(59))
    assert ipv6_skip_exthdr(pkt, 40, 60)[0] == -1
    assert ipv6_find_hdr(pkt) == (48, 59, 0, 0)  # NEXTHDR_NONE returned as the protocol
    assert Skb6(pkt).protocol == -1
    short = build_ipv6(C1, SV, 60, b"\x11")
    assert ipv6_skip_exthdr(short, 40, 60)[0] == -1
    assert ipv6_find_hdr(short) is None
    assert ipv6_find_hdr(build_ipv6(C1, SV, 17, UDP), 44) is None  # -ENOENT


def test_find_hdr_auth_flag_stops_at_ah() -> None:
    ah = bytes([6, 1]) + bytes(10)  # (1 + 2) * 4 = 12 bytes
    pkt = build_ipv6(C1, SV, 51, ah + bytes(20))
    assert ipv6_find_hdr(pkt) == (52, 6, 0, 0)
    assert ipv6_find_hdr(pkt, flags=2) == (40, 51, 0, 2)


@pytest.mark.parametrize(("saddr", "daddr", "loopback", "reason"), [
    (1, SV, False, DropReason.IP6_BAD_SADDR),
    (C1, 1, False, DropReason.IP6_BAD_DADDR),
    (C1, parse_addr6("ff01::1"), False, DropReason.IP6_BAD_DADDR),
    (C1, parse_addr6("ff00::1"), False, DropReason.IP6_BAD_DADDR),
    (parse_addr6("ff02::1"), SV, False, DropReason.IP6_BAD_SADDR),
    (1, 1, True, None),
])
def test_rcv_core_address_checks(saddr: int, daddr: int, loopback: bool, reason: DropReason | None) -> None:
    data, why = ip6_rcv_core(build_ipv6(saddr, daddr, 17, UDP), loopback=loopback)
    assert why == reason
    assert (data is None) == (reason is not None)


def test_rcv_core_lengths() -> None:
    pkt = build_ipv6(C1, SV, 17, UDP)
    assert ip6_rcv_core(pkt[:39]) == (None, DropReason.IP6_HDR_TRUNCATED)
    assert ip6_rcv_core(pkt[:-1]) == (None, DropReason.IP6_BAD_PAYLOAD_LEN)
    data, why = ip6_rcv_core(pkt + b"\0" * 6)  # Ethernet padding is trimmed
    assert why is None and data == pkt
    v4 = bytearray(pkt)
    v4[0] = 0x45
    assert ip6_rcv_core(v4) == (None, DropReason.IP6_BAD_VERSION)
    bad_hbh = build_ipv6(C1, SV, 0, bytes([17, 0, 0xC2, 4, 0, 0, 0, 0]) + UDP)  # unknown option, action 11
    assert ip6_rcv_core(bad_hbh) == (None, DropReason.IP6_BAD_EXTHDR)
    ok_hbh = build_ipv6(C1, SV, 0, bytes([17, 0, 1, 4, 0, 0, 0, 0]) + UDP)
    assert ip6_rcv_core(ok_hbh)[1] is None


def test_icmpv6_checksum_covers_the_pseudo_header() -> None:
    pkt = build_icmpv6_echo(C1, SV, 23072, 1, b"x" * 56, reply=False)
    msg = pkt[40:]
    pseudo = C1.to_bytes(16, "big") + SV.to_bytes(16, "big") + struct.pack("!IxxxB", len(msg), 58)
    assert _slow_sum(pseudo + msg) == 0  # a valid checksum sums to zero
    zeroed = msg[:2] + b"\0\0" + msg[4:]
    assert icmpv6_checksum(C1, SV, zeroed) == int.from_bytes(msg[2:4], "big")


def test_icmpv6_errors_are_cut_to_1280_bytes_and_not_sent_about_errors() -> None:
    big = build_ipv6(C1, SV, 17, UDP + b"y" * 1500)
    err = build_icmpv6_error(parse_addr6("fd00:77::1"), C1, 2, 0, big, info=1280)
    assert len(err) == 1280 and err[40] == 2 and err[44:48] == (1280).to_bytes(4, "big")
    assert not icmpv6_is_ineligible(big)
    assert icmpv6_is_ineligible(err)
    assert not icmpv6_is_ineligible(build_icmpv6_echo(C1, SV, 1, 1, b"", reply=False))


def test_npt_reference_example_is_checksum_neutral() -> None:
    src, dst = parse_addr6("fd00:77::"), parse_addr6("2001:db8:77::")
    adj = npt_adjustment(src, dst)
    assert adj == 0xCF47
    mapped = npt_map(C1, adj, dst, 64)
    assert mapped is not None and format_addr6(mapped) == "2001:db8:77:0:cf47::2"  # §3.7 [V]
    assert mapped % 0xFFFF == C1 % 0xFFFF  # the same one's-complement sum
    back = npt_map(mapped, npt_adjustment(dst, src), src, 64)
    assert back == C1
    assert npt_map(parse_addr6("fd00:77::ffff:ffff:ffff:ffff"), adj, dst, 64) is None
    assert npt_check(parse_addr6("fd00::1"), 64) is not None and npt_check(src, 96) is not None
    assert npt_check(src, 64) is None


def test_tuple_family_and_conntrack_lines() -> None:
    orig = ConnTuple(C1, 23072, SV, 128 << 8, 58)
    repl = invert(orig)
    assert repl == ConnTuple(SV, 23072, C1, 129 << 8, 58)
    assert tuple_l3num(orig) == NFPROTO_IPV6 and tuple_l3num((1, 0, 2, 0, 6)) == NFPROTO_IPV4
    assert invert(ConnTuple(C1, 0, SV, 1 << 8, 58)) is None  # errors have no reply type
    conn = Conn(orig, ConnTuple(SV, 23072, parse_addr6("2001:db8:100::1"), 129 << 8, 58), now=0.0, ct_id=1)
    conn.timeout = 29.5
    conn.status |= CtStatus.SEEN_REPLY | CtStatus.CONFIRMED
    assert conn.l3num == NFPROTO_IPV6
    assert format_conntrack(conn, 0.0) == (
        "icmpv6   58 29 src=fd00:77::2 dst=2001:db8:100::10 type=128 code=0 id=23072 src=2001:db8:100::10 "
        "dst=2001:db8:100::1 type=129 code=0 id=23072 mark=0 use=1")
    assert format_conntrack(conn, 0.0, extended=True).startswith("ipv6     10 icmpv6   58 29 ")
    assert format_proc(conn, 0.0).startswith(
        "ipv6     10 icmpv6   58 29 src=fd00:0077:0000:0000:0000:0000:0000:0002 "
        "dst=2001:0db8:0100:0000:0000:0000:0000:0010 type=128")
    assert format_addr6_full(1) == "0000:0000:0000:0000:0000:0000:0000:0001"
