"""Checksums: RFC 1071 and RFC 1624 worked examples, and incremental == full recompute."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from natbox.wire.checksum import (
    CSUM_MANGLED_0,
    complete_partial_csum,
    csum_fold,
    csum_partial,
    csum_replace2,
    internet_checksum,
    l4_checksum,
    pseudo_header_sum,
)
from natbox.wire.ipv4 import build_ipv4, ip_header_csum_ok, ip_set_daddr, ip_set_saddr


def test_rfc1071_example() -> None:
    # RFC 1071 section 3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2; the checksum is its complement
    data = bytes.fromhex("0001f203f4f5f6f7")
    total = csum_partial(data)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xDDF2
    assert internet_checksum(data) == 0x220D


def test_rfc1624_example() -> None:
    # RFC 1624 section 4: HC = 0xDD2F, m 0x5555 -> 0x3285 gives HC' = 0x0000 (eqn. 3)
    assert csum_replace2(0xDD2F, 0x5555, 0x3285) == 0x0000


def test_wikipedia_ipv4_header_checksum() -> None:
    # The classic worked example: 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7
    hdr = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert internet_checksum(hdr) == 0xB861


headers = st.builds(
    lambda src, dst, proto, ttl, ident, tos, n: build_ipv4(src, dst, proto, bytes(n), ttl=ttl, ident=ident, tos=tos),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 255),
    st.integers(1, 255),
    st.integers(0, 65535),
    st.integers(0, 255),
    st.integers(0, 64),
)


@given(headers, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_csum_replace4_equals_recompute(dg: bytearray, new_src: int, new_dst: int) -> None:
    ip_set_saddr(dg, new_src)
    ip_set_daddr(dg, new_dst)
    assert ip_header_csum_ok(dg)
    fresh = build_ipv4(new_src, new_dst, dg[9], dg[20:], ttl=dg[8], ident=(dg[4] << 8) | dg[5], tos=dg[1])
    assert dg[10:12] == fresh[10:12]


@given(headers, st.integers(0, 9), st.integers(0, 65535))
def test_csum_replace2_equals_recompute(dg: bytearray, word: int, new: int) -> None:
    if word == 5:  # the checksum word itself
        return
    pos = word * 2
    old = (dg[pos] << 8) | dg[pos + 1]
    check = csum_replace2((dg[10] << 8) | dg[11], old, new)
    dg[pos] = new >> 8
    dg[pos + 1] = new & 0xFF
    dg[10:12] = b"\x00\x00"
    assert check == internet_checksum(dg[:20])


# --- complete_partial_csum: skb_checksum_help ------------------------------------------------------

def _partial_datagram(proto: int, payload: bytes) -> bytearray:
    """An IPv4 TCP/UDP datagram in CHECKSUM_PARTIAL form: the checksum field holds the folded,
    uncomplemented pseudo-header sum (what tcp_v4_send_check / udp4_hwcsum leave)."""
    src, dst = 0x0A000001, 0xC0A80102
    if proto == 6:
        seg = bytearray(struct.pack("!HHIIBBHHH", 40000, 80, 1, 2, 5 << 4, 0x18, 65535, 0, 0)) + payload
        off = 16
    else:
        seg = bytearray(struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0)) + payload
        off = 6
    seed = ~csum_fold(pseudo_header_sum(src, dst, proto, len(seg))) & 0xFFFF
    struct.pack_into("!H", seg, off, seed)
    return build_ipv4(src, dst, proto, seg)


def _zero_summing(proto: int) -> bytearray:
    """A partial datagram whose completed checksum computes to 0 (the last payload word is chosen so
    the one's-complement sum of pseudo-header, header and payload is 0xFFFF)."""
    dg = _partial_datagram(proto, b"abcd\x00\x00")
    t = csum_partial(memoryview(dg)[20:]) % 0xFFFF
    return _partial_datagram(proto, b"abcd" + ((-t) % 0xFFFF).to_bytes(2, "big"))


def test_complete_partial_csum_zero_becomes_ffff_for_tcp_and_udp() -> None:
    # skb_checksum_help: *(__sum16 *)(skb->data + offset) = csum_fold(csum) ?: CSUM_MANGLED_0 -- for
    # every protocol, so TCP gets 0xFFFF as well as UDP (where 0 would mean "no checksum").
    for proto, off in ((6, 16), (17, 6)):
        dg = _zero_summing(proto)
        assert internet_checksum(memoryview(dg)[20:]) == 0  # the computed value really is 0
        assert complete_partial_csum(dg)
        assert dg[20 + off:22 + off] == b"\xff\xff"
        assert CSUM_MANGLED_0 == 0xFFFF
        # and the result verifies: header + payload + pseudo-header sum to 0xFFFF (fold 0)
        assert l4_checksum(0x0A000001, 0xC0A80102, proto, bytes(dg[20:])) == 0
        # the frame form (csum_start/csum_offset from a vnet header) does the same
        frame = bytearray(14) + _zero_summing(proto)
        assert complete_partial_csum(frame, 34, off)
        assert frame[34 + off:36 + off] == b"\xff\xff"


@given(st.sampled_from([6, 17]), st.binary(max_size=200))
def test_complete_partial_csum_equals_the_full_checksum(proto: int, payload: bytes) -> None:
    dg = _partial_datagram(proto, payload)
    off = 16 if proto == 6 else 6
    assert complete_partial_csum(dg)
    field = int.from_bytes(dg[20 + off:22 + off], "big")
    seg = bytearray(dg[20:])
    seg[off:off + 2] = b"\x00\x00"
    assert field == (l4_checksum(0x0A000001, 0xC0A80102, proto, bytes(seg)) or 0xFFFF)


def test_complete_partial_csum_refuses_fields_outside_the_buffer() -> None:
    dg = _partial_datagram(6, b"x")
    before = bytes(dg)
    assert not complete_partial_csum(dg, 20, len(dg))
    assert not complete_partial_csum(dg, -1, 16)
    assert not complete_partial_csum(bytearray(dg[:30]))  # TCP header cut short
    assert not complete_partial_csum(bytearray(build_ipv4(1, 2, 1, bytes(8))))  # ICMP: not TCP/UDP
    assert not complete_partial_csum(bytearray(10))
    assert bytes(dg) == before
