"""Checksums: RFC 1071 and RFC 1624 worked examples, and incremental == full recompute."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from natbox.wire.checksum import csum_partial, csum_replace2, internet_checksum
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
