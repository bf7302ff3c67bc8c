"""IPv4: ip_rcv_core, build_ipv4 against real captures, TTL, addresses, options."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natbox.netfilter import DropReason
from natbox.wire.checksum import internet_checksum
from natbox.wire.ethernet import ETH_P_IP, parse_ethernet
from natbox.wire.ip_options import IPOPT_LSRR, IPOPT_RR, IPOPT_TIMESTAMP, ip_options_compile
from natbox.wire.ipv4 import (
    addr_to_str,
    build_ipv4,
    ip_daddr,
    ip_decrease_ttl,
    ip_exceeds_mtu,
    ip_finish_output_needs_fragment,
    ip_fragment_df_blocked,
    ip_header_csum_ok,
    ip_is_fragment,
    ip_rcv_core,
    ip_rcv_options,
    ip_saddr,
    ip_send_check,
    str_to_addr,
)

WIKI_HDR = bytes.fromhex("45000073000040004011b861c0a80001c0a800c7")
CAPTURES = [
    "github-appneta-tcpreplay__test.pcap",
    "debbin-python3-libtrace__icmp-sample.pcap",
    "debsrc-tcpdump-4.99.3__afs.pcap",
    "debsrc-wireshark-4.0.17__communityid.pcap",
]


# Frames (1-based numbers) that tshark also flags: bad IP header checksum (`ip.checksum.status == 0`
# with ip.check_checksum on) or captured with an 82-byte snaplen (tot_len beyond the captured bytes).
KNOWN_BAD = {
    ("github-appneta-tcpreplay__test.pcap", 12): DropReason.IP_CSUM,
    ("github-appneta-tcpreplay__test.pcap", 14): DropReason.IP_CSUM,
    ("debsrc-wireshark-4.0.17__communityid.pcap", 93): DropReason.IP_BAD_TOTLEN,
    ("debsrc-wireshark-4.0.17__communityid.pcap", 95): DropReason.IP_BAD_TOTLEN,
    ("debsrc-wireshark-4.0.17__communityid.pcap", 97): DropReason.IP_BAD_TOTLEN,
}


def ipv4_payloads(frames: list[bytes]) -> list[tuple[int, bytes]]:
    out = []
    for number, frame in enumerate(frames, 1):
        eth = parse_ethernet(frame)
        if eth is not None and eth[2] == ETH_P_IP:
            out.append((number, frame[eth[3] :]))
    return out


# --- parse -------------------------------------------------------------------------------------


def test_parse_known_header() -> None:
    dg = WIKI_HDR + bytes(0x73 - 20)
    data, reason = ip_rcv_core(dg)
    assert reason is None and data is not None
    assert addr_to_str(ip_saddr(data)) == "192.168.0.1"
    assert addr_to_str(ip_daddr(data)) == "192.168.0.199"
    assert len(data) == 0x73 and not ip_is_fragment(data)


@pytest.mark.parametrize("name", CAPTURES)
def test_real_captures_pass_ip_rcv_core(name: str, pcap_frames: Callable[[str], list[bytes]]) -> None:
    payloads = ipv4_payloads(pcap_frames(name))
    assert payloads
    for number, p in payloads:
        data, reason = ip_rcv_core(p)
        assert reason == KNOWN_BAD.get((name, number)), (name, number, reason)
        if data is not None:
            assert len(data) == (p[2] << 8 | p[3])  # Ethernet padding trimmed, as pskb_trim_rcsum does


# --- build -------------------------------------------------------------------------------------


def test_build_matches_known_header() -> None:
    dg = build_ipv4(str_to_addr("192.168.0.1"), str_to_addr("192.168.0.199"), 17, bytes(0x73 - 20), df=True)
    assert bytes(dg[:20]) == WIKI_HDR


@pytest.mark.parametrize("name", CAPTURES)
def test_build_reproduces_real_headers(name: str, pcap_frames: Callable[[str], list[bytes]]) -> None:
    checked = 0
    for _number, p in ipv4_payloads(pcap_frames(name)):
        data, _ = ip_rcv_core(p)
        if data is None:
            continue
        ihl = (data[0] & 15) * 4
        fo = (data[6] << 8) | data[7]
        rebuilt = build_ipv4(
            ip_saddr(data), ip_daddr(data), data[9], data[ihl:], ttl=data[8], ident=(data[4] << 8) | data[5],
            df=bool(fo & 0x4000), mf=bool(fo & 0x2000), frag_offset=(fo & 0x1FFF) * 8, tos=data[1],
            options=bytes(data[20:ihl]),
        )
        assert rebuilt == data
        checked += 1
    assert checked


# --- round trip --------------------------------------------------------------------------------


@given(
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 255), st.binary(max_size=200),
    st.integers(0, 255), st.integers(0, 65535), st.booleans(), st.integers(0, 255),
)
def test_round_trip(
    src: int, dst: int, proto: int, payload: bytes, ttl: int, ident: int, df: bool, tos: int
) -> None:
    dg = build_ipv4(src, dst, proto, payload, ttl=ttl, ident=ident, df=df, tos=tos)
    data, reason = ip_rcv_core(bytes(dg) + b"\x00" * 7)
    assert reason is None and data == dg
    assert ip_saddr(data) == src and ip_daddr(data) == dst and bytes(data[20:]) == payload


# --- edge cases --------------------------------------------------------------------------------


def test_ttl_decrement_forwarded_packet() -> None:
    # §1.2 [V]: a forwarded packet leaves with TTL 63 and a valid header checksum
    dg = build_ipv4(str_to_addr("192.168.50.2"), str_to_addr("198.51.100.2"), 17, b"x" * 10)
    assert ip_decrease_ttl(dg) == 63
    assert dg[8] == 63 and ip_header_csum_ok(dg)


@given(
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(1, 255),
    st.integers(0, 65535), st.integers(0, 255), st.integers(0, 0x3FFF),
    st.binary(max_size=40).map(lambda b: b + bytes(-len(b) % 4)),
)
def test_ip_decrease_ttl_keeps_checksum_valid(
    src: int, dst: int, proto: int, ttl: int, ident: int, tos: int, fo: int, options: bytes
) -> None:
    dg = build_ipv4(src, dst, proto, b"", ttl=ttl, ident=ident, tos=tos, options=options)
    dg[6] = fo >> 8
    dg[7] = fo & 0xFF
    ip_send_check(dg)
    ip_decrease_ttl(dg)
    assert dg[8] == ttl - 1
    assert ip_header_csum_ok(dg)
    expect = bytearray(dg)
    ip_send_check(expect)
    assert dg == expect  # byte-identical to a full recompute


def test_ip_decrease_ttl_kernel_arithmetic() -> None:
    # check += htons(0x0100) on a little-endian u16, then `check + (check >= 0xFFFF)`:
    # stored bytes fe ff -> u16 0xfffe + 1 = 0xffff -> + 1 -> 0x0000 (not 0xffff)
    dg = bytearray(20)
    dg[8] = 5
    dg[10:12] = b"\xfe\xff"
    ip_decrease_ttl(dg)
    assert dg[10:12] == b"\x00\x00" and dg[8] == 4
    dg[10:12] = b"\xff\xff"  # 0xffff + 1 = 0x10000 -> + 1 -> 0x0001 stored as 01 00
    ip_decrease_ttl(dg)
    assert dg[10:12] == b"\x01\x00"


def test_mtu_decisions() -> None:
    big_df = build_ipv4(1, 2, 17, bytes(1480), df=True)
    big = build_ipv4(1, 2, 17, bytes(1480))
    assert ip_exceeds_mtu(big_df, 1400) and not ip_exceeds_mtu(big, 1400)
    assert not ip_exceeds_mtu(big_df, 1500)
    assert not ip_exceeds_mtu(big_df, 1400, ignore_df=True)
    assert ip_exceeds_mtu(big_df, 1400, frag_max_size=1420, ignore_df=True)
    assert ip_fragment_df_blocked(big_df, 1400) and not ip_fragment_df_blocked(big, 1400)
    assert not ip_fragment_df_blocked(big_df, 1400, frag_max_size=620, ignore_df=True)
    assert ip_fragment_df_blocked(big_df, 600, frag_max_size=620, ignore_df=True)
    assert ip_finish_output_needs_fragment(1228, 1500, 620) and not ip_finish_output_needs_fragment(1228, 1500)


# --- options -----------------------------------------------------------------------------------


def with_options(options: bytes) -> bytearray:
    return build_ipv4(str_to_addr("10.0.0.1"), str_to_addr("10.0.0.2"), 17, b"abcdefgh", options=options)


def test_options_valid() -> None:
    rr = bytes((IPOPT_RR, 11, 4)) + bytes(8)
    ts = bytes((IPOPT_TIMESTAMP, 12, 5, 0)) + bytes(8)
    opts, ptr = ip_options_compile(with_options(b"\x01" + rr + ts))
    assert ptr == 0 and opts is not None
    assert opts.rr == 21 and opts.ts == 32 and opts.srr == 0 and opts.optlen == 24


@pytest.mark.parametrize(
    ("options", "pointer"),
    [
        (bytes((IPOPT_RR, 1)), 20),  # length < 2
        (bytes((IPOPT_RR, 40)), 20),  # length past the header
        (bytes((IPOPT_RR, 7, 3, 0, 0, 0, 0)), 22),  # pointer < 4
        (bytes((IPOPT_RR, 7, 4, 0, 0, 0, 0, IPOPT_RR, 3, 8)), 27),  # second RR
        (bytes((IPOPT_RR, 6, 4, 0, 0, 0)), 22),  # no room for an address at the pointer
        (bytes((IPOPT_TIMESTAMP, 3, 5)), 21),  # TS length < 4
        (bytes((IPOPT_TIMESTAMP, 4, 4, 0)), 22),  # TS pointer < 5
        (bytes((IPOPT_TIMESTAMP, 8, 9, 0xF0, 0, 0, 0, 0)), 23),  # full, overflow counter at 15
        (bytes((IPOPT_LSRR, 7, 3, 0, 0, 0, 0)), 22),  # source route pointer < 4
        (bytes((148, 2)), 21),  # router alert length < 4
        (b"\x01\x44", 21),  # a kind at the very end with no length octet
    ],
)
def test_options_malformed(options: bytes, pointer: int) -> None:
    dg = with_options(options)
    opts, ptr = ip_options_compile(dg)
    assert opts is None and ptr == pointer
    assert ip_rcv_options(dg) == (None, DropReason.IP_BAD_OPTIONS, pointer)


def test_source_route_dropped_by_default() -> None:
    lsrr = bytes((IPOPT_LSRR, 7, 4)) + bytes((10, 0, 0, 9))
    dg = with_options(lsrr)
    opts, reason, ptr = ip_rcv_options(dg)
    assert opts is not None and opts.srr == 20 and not opts.is_strictroute
    assert reason == DropReason.IP_BAD_OPTIONS and ptr == 0  # silent drop, no PARAMETERPROB
    opts, reason, _ = ip_rcv_options(dg, accept_source_route=True)
    assert reason is None and opts is not None and opts.srr == 20


def test_end_of_options_stops_parsing() -> None:
    opts, ptr = ip_options_compile(with_options(b"\x00\xff\xff\xff"))
    assert ptr == 0 and opts is not None


# --- malformed ---------------------------------------------------------------------------------


def _with(dg: bytearray, pos: int, value: int, *, fix: bool = True) -> bytearray:
    dg = bytearray(dg)
    dg[pos] = value
    if fix:
        ip_send_check(dg)
    return dg


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d[:19], DropReason.IP_HDR_TRUNCATED),
        (lambda d: _with(d, 0, 0x65), DropReason.IP_BAD_VERSION),
        (lambda d: _with(d, 0, 0x44, fix=False), DropReason.IP_BAD_IHL),
        (lambda d: _with(d, 0, 0x4F, fix=False)[:40], DropReason.IP_HDR_TRUNCATED),
        (lambda d: _with(d, 8, 1, fix=False), DropReason.IP_CSUM),
        (lambda d: _with(d, 3, 0xFF), DropReason.IP_BAD_TOTLEN),
        (lambda d: _with(_with(d, 2, 0), 3, 19), DropReason.IP_BAD_TOTLEN),
    ],
)
def test_ip_rcv_core_malformed(mutate: Callable[[bytearray], bytearray], reason: DropReason) -> None:
    dg = build_ipv4(1, 2, 17, bytes(30))
    assert ip_rcv_core(mutate(dg)) == (None, reason)


@given(st.binary(max_size=100))
def test_ip_rcv_core_never_raises(data: bytes) -> None:
    dg, reason = ip_rcv_core(data)
    assert (dg is None) != (reason is None)
    if dg is not None:
        assert internet_checksum(dg[: (dg[0] & 15) * 4]) == 0
        ip_options_compile(dg)
        ip_rcv_options(dg)


@given(st.binary(min_size=20, max_size=80))
def test_options_never_raise(data: bytes) -> None:
    ip_options_compile(data)
