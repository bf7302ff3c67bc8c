"""Internet checksums: full (RFC 1071) and incremental (RFC 1624), as the kernel computes them (§4.8).

All values are 16-bit ints as they appear on the wire (big-endian when read with
`int.from_bytes(b, "big")`). The incremental helpers mirror `csum_replace2`, `csum_replace4` and
`inet_proto_csum_replace4` from include/net/checksum.h and net/core/utils.c: they update a stored
checksum for a changed field without touching the rest of the packet, and are exact (equal to a full
recompute) for any input, which `tests/wire/test_checksum.py` checks against `internet_checksum`.
"""

from __future__ import annotations

from typing import Final

from natbox.netfilter import IPPROTO_TCP, IPPROTO_UDP
from natbox.wire.layout import IPH_MIN_LEN, IPH_PROTOCOL, IPH_VER_IHL, TCPH_CHECK, UDPH_CHECK

__all__ = [
    "CSUM_MANGLED_0",
    "complete_partial_csum",
    "crc32c",
    "csum_fold",
    "csum_partial",
    "csum_replace2",
    "csum_replace4",
    "internet_checksum",
    "l4_checksum",
    "pseudo_header_sum",
]


# include/net/checksum.h: what a checksum field holds instead of a computed 0 where 0 would mean
# "no checksum" (UDP, RFC 768) -- and, since skb_checksum_help() applies it to every protocol, TCP too
CSUM_MANGLED_0: Final = 0xFFFF



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


def complete_partial_csum(buf: bytearray, csum_start: int | None = None, csum_offset: int = 0) -> bool:
    """Finish a CHECKSUM_PARTIAL packet in place, as `skb_checksum_help()` (net/core/dev.c) does.

    The field at `csum_start + csum_offset` holds the (uncomplemented) pseudo-header sum, as
    `tcp_v4_send_check()` / `udp4_hwcsum()` leave it; the checksum is the folded complement of the sum
    of everything from `csum_start` to the end of `buf`, stored as the kernel stores it:

        *(__sum16 *)(skb->data + offset) = csum_fold(csum) ?: CSUM_MANGLED_0;

    so a computed 0 becomes 0xFFFF for *every* protocol, TCP included (for UDP a 0 would read as "no
    checksum"; for TCP 0x0000 and 0xFFFF are the same one's-complement value and the kernel still
    writes 0xFFFF). Byte for byte this is what a Linux host puts on the wire when it completes the
    checksum in software.

    Without `csum_start`, `buf` is an IPv4 datagram and the field is its TCP or UDP checksum (start
    at ihl * 4, offset 16 or 6). Returns False, changing nothing, when the field is not inside `buf`
    (or, for a datagram, the transport header is not all there or is neither TCP nor UDP).
    """
    if csum_start is None:
        if len(buf) < IPH_MIN_LEN:
            return False
        csum_start = (buf[IPH_VER_IHL] & 0x0F) * 4
        proto = buf[IPH_PROTOCOL]
        if proto == IPPROTO_TCP:
            csum_offset = TCPH_CHECK
        elif proto == IPPROTO_UDP:
            csum_offset = UDPH_CHECK
        else:
            return False
    pos = csum_start + csum_offset
    if csum_start < 0 or csum_offset < 0 or pos + 2 > len(buf):
        return False
    check = internet_checksum(memoryview(buf)[csum_start:]) or CSUM_MANGLED_0
    buf[pos] = check >> 8
    buf[pos + 1] = check & 0xFF
    return True


def _crc32c_table() -> list[int]:
    """The reflected CRC-32C (Castagnoli, polynomial 0x82F63B78) byte table, built once at import."""
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C: Final = _crc32c_table()


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C as SCTP uses it (RFC 9260 appendix A): init and final xor 0xFFFFFFFF."""
    crc = 0xFFFFFFFF
    table = _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
