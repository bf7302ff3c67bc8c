"""Internet checksums: full (RFC 1071) and incremental (RFC 1624), as the kernel computes them (§4.8).

All values are 16-bit ints as they appear on the wire (big-endian when read with
`int.from_bytes(b, "big")`). The incremental helpers mirror `csum_replace2`, `csum_replace4` and
`inet_proto_csum_replace4` from include/net/checksum.h and net/core/utils.c: they update a stored
checksum for a changed field without touching the rest of the packet, and are exact (equal to a full
recompute) for any input, which `tests/wire/test_checksum.py` checks against `internet_checksum`.
"""

from __future__ import annotations

__all__ = [
    "csum_fold",
    "csum_partial",
    "csum_replace2",
    "csum_replace4",
    "internet_checksum",
    "l4_checksum",
    "pseudo_header_sum",
]


def csum_partial(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """One's-complement sum of `data` as big-endian 16-bit words (odd length padded), not folded.

    The 16-bit words of a buffer read as one big integer w satisfy sum(words) ≡ w (mod 0xFFFF),
    because 2**16 ≡ 1 (mod 0xFFFF) (RFC 1071 §2(B)); a non-zero sum is never ≡ 0 in one's
    complement, so it is 0xFFFF then. One `%` is linear in the buffer's length, where summing
    chunk by chunk with shifts is quadratic (47 ms for a 64 KiB GSO segment).
    """
    w = int.from_bytes(data, "big")
    if len(data) & 1:
        w <<= 8
    if not w:
        return initial
    return initial + ((w % 0xFFFF) or 0xFFFF)


def csum_fold(total: int) -> int:
    """Fold a partial sum to 16 bits and complement it (`csum_fold`)."""
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The RFC 1071 checksum of `data` (what goes in the header, given a zeroed checksum field)."""
    return csum_fold(csum_partial(data, initial))


def pseudo_header_sum(src: int, dst: int, proto: int, length: int) -> int:
    """Partial sum of the TCP/UDP pseudo-header (RFC 793 §3.1, RFC 768)."""
    return (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + length


def l4_checksum(src: int, dst: int, proto: int, segment: bytes | bytearray | memoryview) -> int:
    """Full TCP/UDP checksum of `segment` (its checksum field must be zero) with the pseudo-header."""
    return internet_checksum(segment, pseudo_header_sum(src, dst, proto, len(segment)))


def csum_replace2(check: int, old: int, new: int) -> int:
    """Update checksum `check` for a 16-bit field changing from `old` to `new` (RFC 1624 eqn. 3)."""
    total = ((~check) & 0xFFFF) + ((~old) & 0xFFFF) + new
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def csum_replace4(check: int, old: int, new: int) -> int:
    """Update checksum `check` for a 32-bit field (an IPv4 address) changing from `old` to `new`."""
    total = (
        ((~check) & 0xFFFF)
        + ((~old >> 16) & 0xFFFF)
        + ((~old) & 0xFFFF)
        + (new >> 16)
        + (new & 0xFFFF)
    )
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF
