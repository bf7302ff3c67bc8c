"""The checksum arithmetic the difftest's packet builders and comparisons share (IPv4 and IPv6).

The difftest builds frames and, to compare natbox's output with the kernel's where both chose ports
independently, maps ports and echo ids in captured frames; each edit keeps the checksums right with the
same incremental update the kernel uses (`csum_replace2`, RFC 1624), from natbox.wire.checksum.
"""

from __future__ import annotations

import struct

from natbox.wire.checksum import csum_partial, csum_replace2

__all__ = ["adjust", "map16", "sum16"]


def sum16(data: bytes) -> int:
    """The folded (not complemented) one's-complement sum of `data`: 0xFFFF for a buffer whose checksum
    verifies, 0 only for all-zero data."""
    total = csum_partial(data)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def adjust(csum: int, old: bytes, new: bytes) -> int:
    """`csum` updated for the 16-bit-aligned words of `old` that changed to `new` (csum_replace2 per word)."""
    for i in range(0, len(old) - len(old) % 2, 2):
        o, n = (old[i] << 8) | old[i + 1], (new[i] << 8) | new[i + 1]
        if o != n:
            csum = csum_replace2(csum, o, n)
    return csum


def map16(buf: bytearray, off: int, mapping: dict[int, int]) -> None:
    """Replace the 16-bit big-endian value at buf[off] by mapping[value] when it is mapped (checksum untouched)."""
    if off + 2 <= len(buf):
        v = (buf[off] << 8) | buf[off + 1]
        if v in mapping:
            buf[off:off + 2] = struct.pack("!H", mapping[v])
