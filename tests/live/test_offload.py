"""Partial checksums and virtio_net_hdr handling (pure: no root needed).

The reference is RFC 1071 (one's-complement sum of 16-bit words) and the kernel's CHECKSUM_PARTIAL
convention: the L4 checksum field holds the *uncomplemented* folded pseudo-header sum
(`~tcp_v4_check(len, saddr, daddr, 0)` in `tcp_v4_send_check`), and whoever finishes the checksum sums
from csum_start to the end and stores the complement at csum_start + csum_offset (`skb_checksum_help`).
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from natbox.adapters.vnet import (
    GSO_TCPV4,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VNET_HDR,
    build_vnet_hdr,
    complete_partial_csum,
    l4_csum_location,
    parse_vnet_rx,
    to_partial_csum,
    tx_hdr_ready,
    tx_parts,
)


def rfc1071_sum(data: bytes) -> int:
    """Textbook RFC 1071 §4.1: add 16-bit words, fold carries; not complemented."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


SRC = bytes([10, 0, 1, 2])
DST = bytes([198, 51, 100, 2])


def pseudo(proto: int, l4len: int) -> bytes:
    return SRC + DST + bytes([0, proto]) + struct.pack("!H", l4len)


def frame(proto: int, payload: bytes, *, doff_words: int = 5) -> bytearray:
    """Ethernet + IPv4 (DF, no options) + TCP or UDP with a correct full checksum."""
    if proto == 6:
        l4 = bytearray(struct.pack("!HHIIBBHHH", 40000, 80, 1, 2, doff_words << 4, 0x18, 65535, 0, 0))
        l4 += bytes((doff_words - 5) * 4) + payload
        off = 16
    else:
        l4 = bytearray(struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0)) + payload
        off = 6
    csum = ~rfc1071_sum(pseudo(proto, len(l4)) + bytes(l4)) & 0xFFFF
    if csum == 0:  # as skb_checksum_help stores it (CSUM_MANGLED_0), for TCP as for UDP
        csum = 0xFFFF
    l4[off:off + 2] = struct.pack("!H", csum)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0, SRC, DST))
    ip[10:12] = struct.pack("!H", ~rfc1071_sum(bytes(ip)) & 0xFFFF)
    return bytearray(b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00") + ip + l4


@given(st.sampled_from([6, 17]), st.binary(max_size=3000))
def test_partial_then_complete_is_the_full_checksum(proto: int, payload: bytes) -> None:
    full = frame(proto, payload)
    loc = to_partial_csum(work := bytearray(full))
    assert loc is not None
    start, off = loc
    assert (start, off) == (34, 16 if proto == 6 else 6)
    # the partial field is the folded, uncomplemented pseudo-header sum
    field = struct.unpack_from("!H", work, start + off)[0]
    assert field == rfc1071_sum(pseudo(proto, len(full) - 34))
    assert complete_partial_csum(work, start, off)
    assert work == full


def test_complete_leaves_bad_offsets_alone() -> None:
    f = frame(6, b"x" * 10)
    before = bytes(f)
    assert not complete_partial_csum(f, 10, 16)  # csum_start inside the Ethernet header
    assert not complete_partial_csum(f, 34, len(f))  # field beyond the end
    assert bytes(f) == before


def test_no_partial_form_for_fragments_and_zero_udp() -> None:
    f = frame(6, b"abc")
    f[20] |= 0x20  # MF: a fragment
    assert l4_csum_location(f) is None and to_partial_csum(f) is None
    u = frame(17, b"abc")
    u[40:42] = b"\0\0"  # UDP without a checksum (RFC 768): stays that way
    assert to_partial_csum(u) is None


def test_gso_vnet_header_fields() -> None:
    f = frame(6, b"y" * 60000, doff_words=8)  # a 64 KiB-class TCP super-packet with 12 bytes of options
    hdr = build_vnet_hdr(f, GSO_TCPV4, 1448, True)
    flags, gso_type, hdr_len, gso_size, start, off = VNET_HDR.unpack(hdr)
    assert flags == VIRTIO_NET_HDR_F_NEEDS_CSUM
    assert (gso_type, gso_size) == (GSO_TCPV4, 1448)
    assert hdr_len == 14 + 20 + 32  # Ethernet + IPv4 + TCP with options: what segmentation copies
    assert (start, off) == (34, 16)


def test_plain_frame_gets_an_empty_header() -> None:
    f = frame(6, b"z")
    assert build_vnet_hdr(bytearray(f), 0, 0, False) == bytes(10)


@given(st.binary(min_size=1, max_size=2000))
def test_parse_vnet_rx_completes_partial(payload: bytes) -> None:
    full = frame(6, payload)
    part = bytearray(full)
    to_partial_csum(part)
    hdr = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16)
    got, gso_type, gso_size, partial = parse_vnet_rx(hdr, bytes(part))
    assert (got, gso_type, gso_size, partial) == (bytes(full), GSO_TCPV4, 1448, False)
    kept = parse_vnet_rx(hdr, bytes(part), complete=False)
    assert kept[0] == bytes(part) and kept[3]
    # a partial checksum somewhere else than the IPv4 TCP/UDP one (a tunnel's inner header): finished
    odd = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 6)
    assert not parse_vnet_rx(odd, bytes(part), complete=False)[3]


@given(st.binary(min_size=10, max_size=10), st.binary(max_size=200), st.booleans())
def test_untrusted_vnet_input_never_raises(hdr: bytes, data: bytes, complete: bool) -> None:
    frame, _gt, _gs, _partial = parse_vnet_rx(hdr, data, complete)
    assert len(frame) == len(data)


@given(st.binary(max_size=200), st.integers(0, 255), st.integers(0, 65535), st.booleans())
def test_transmit_helpers_never_raise(data: bytes, gso_type: int, gso_size: int, partial: bool) -> None:
    buf = bytearray(data)
    hdr = build_vnet_hdr(buf, gso_type, gso_size, partial)
    assert len(hdr) == 10 and len(buf) == len(data)


@given(st.sampled_from([6, 17]), st.binary(max_size=3000), st.sampled_from([0, GSO_TCPV4]), st.booleans())
def test_tx_parts_is_build_vnet_hdr_without_copying(proto: int, payload: bytes, gso_type: int, partial: bool) -> None:
    """hdr + head + frame[split:] is exactly what build_vnet_hdr sends after rewriting the frame."""
    full = bytes(frame(proto, payload))
    work = bytearray(full)
    hdr = build_vnet_hdr(work, gso_type, 1448, partial)
    got_hdr, head, split = tx_parts(full, gso_type, 1448, partial)
    assert got_hdr == hdr
    assert head + full[split:] == bytes(work)
    if partial or gso_type:
        assert split == 34 + (16 if proto == 6 else 6) + 2  # only the headers up to the checksum field


@given(st.sampled_from([6, 17]), st.binary(max_size=2000), st.sampled_from([0, GSO_TCPV4]))
def test_tx_hdr_ready_matches_the_rewriting_path(proto: int, payload: bytes, gso_type: int) -> None:
    """For a frame already in partial form (the engine's output), the header alone is what the
    rewriting path would send, and the frame needs no change."""
    part = frame(proto, payload, doff_words=7)
    to_partial_csum(part)
    hdr = tx_hdr_ready(bytes(part), gso_type, 1448)
    again = bytearray(part)
    assert hdr == build_vnet_hdr(again, gso_type, 1448, True)
    assert again == part
    f = frame(6, b"abc")
    f[20] |= 0x20  # a fragment: not for this path
    assert tx_hdr_ready(bytes(f), 0, 0) is None


SRC6 = bytes.fromhex("fd000001000000000000000000000002")
DST6 = bytes.fromhex("20010db8000100000000000000000002")


def frame6(proto: int, payload: bytes, nexthdr: int | None = None) -> bytearray:
    """Ethernet + IPv6 + TCP or UDP with a correct full checksum (tcp_v6_check's pseudo-header); `nexthdr`
    puts an empty Destination Options header in front of the transport header."""
    if proto == 6:
        l4 = bytearray(struct.pack("!HHIIBBHHH", 40000, 80, 1, 2, 5 << 4, 0x18, 65535, 0, 0)) + payload
        off = 16
    else:
        l4 = bytearray(struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0)) + payload
        off = 6
    csum = ~rfc1071_sum(SRC6 + DST6 + struct.pack("!IxxxB", len(l4), proto) + bytes(l4)) & 0xFFFF
    l4[off:off + 2] = struct.pack("!H", csum or 0xFFFF)
    ext = b"" if nexthdr is None else bytes([proto, 0, 1, 4, 0, 0, 0, 0])
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(ext) + len(l4), proto if nexthdr is None else nexthdr, 64,
                      SRC6, DST6)
    return bytearray(b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd") + ip6 + ext + l4


@given(st.sampled_from([6, 17]), st.binary(max_size=3000))
def test_ipv6_partial_then_complete_is_the_full_checksum(proto: int, payload: bytes) -> None:
    """IPv6 TCP/UDP: the partial form holds tcp_v6_send_check's pseudo-header sum, completing it gives the
    full checksum back, and the GSO header for it says where (so the gateway forwards IPv6 GSO packets)."""
    full = frame6(proto, payload)
    assert l4_csum_location(full) == (54, 16 if proto == 6 else 6, proto)
    loc = to_partial_csum(work := bytearray(full))
    assert loc == (54, 16 if proto == 6 else 6)
    field = struct.unpack_from("!H", work, 54 + loc[1])[0]
    assert field == rfc1071_sum(SRC6 + DST6 + struct.pack("!IxxxB", len(full) - 54, proto))
    hdr = tx_hdr_ready(work, 4 if proto == 6 else 0, 1400)
    assert hdr is not None and VNET_HDR.unpack(hdr)[4:] == (54, loc[1])
    assert complete_partial_csum(work, *loc)
    assert work == full


def test_ipv6_extension_headers_have_no_partial_form() -> None:
    assert l4_csum_location(frame6(6, b"x" * 10, nexthdr=60)) is None
    assert to_partial_csum(frame6(17, b"x" * 10, nexthdr=60)) is None
