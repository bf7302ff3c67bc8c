"""UDP datagrams (RFC 768) for tests and scenarios: builder with a correct checksum and a parser.

A computed checksum of 0 is sent as 0xFFFF (RFC 768; `udp4_hwcsum`/`CSUM_MANGLED_0` in the kernel);
a checksum field of 0 means "no checksum" and NAT leaves it 0 (§4.8).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from natbox.wire.checksum import l4_checksum

__all__ = ["UDP_HLEN", "UdpHeader", "build_udp", "parse_udp"]

UDP_HLEN: Final = 8
_IPPROTO_UDP: Final = 17


class UdpHeader(NamedTuple):
    sport: int
    dport: int
    length: int
    check: int


def build_udp(
    src: int,
    dst: int,
    sport: int,
    dport: int,
    payload: bytes | bytearray | memoryview,
    *,
    zero_checksum: bool = False,
) -> bytes:
    """A UDP datagram (header + payload); with `zero_checksum` the checksum field is 0 (none)."""
    length = UDP_HLEN + len(payload)
    seg = bytearray(sport.to_bytes(2, "big"))
    seg += dport.to_bytes(2, "big")
    seg += (length & 0xFFFF).to_bytes(2, "big")
    seg += b"\x00\x00"
    seg += payload
    if not zero_checksum:
        check = l4_checksum(src, dst, _IPPROTO_UDP, seg) or 0xFFFF
        seg[6] = check >> 8
        seg[7] = check & 0xFF
    return bytes(seg)


def parse_udp(segment: bytes | bytearray | memoryview) -> UdpHeader | None:
    """The UDP header, or None if fewer than 8 bytes."""
    if len(segment) < UDP_HLEN:
        return None
    return UdpHeader(
        (segment[0] << 8) | segment[1],
        (segment[2] << 8) | segment[3],
        (segment[4] << 8) | segment[5],
        (segment[6] << 8) | segment[7],
    )
