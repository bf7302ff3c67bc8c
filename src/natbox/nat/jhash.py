"""Bob Jenkins' lookup3 hash as the kernel has it (include/linux/jhash.h), used to pick NAT addresses (§4.5).

`find_best_ips_proto()` hashes the tuple's source address with `jhash2()` and scales the result into the
address range, so the choice is deterministic: no boot-time seed is involved. The kernel loads the words
of `union nf_inet_addr` as host-endian u32 from network-order bytes; on the little-endian hosts the
reference was verified on (x86-64) that is the byte-swapped address. `addr_word()` does that conversion.

All arithmetic is modulo 2**32 (the kernel's u32).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = ["JHASH_INITVAL", "addr_word", "jhash2", "reciprocal_scale"]

JHASH_INITVAL: Final = 0xDEADBEEF  # "an arbitrary initial parameter" (jhash.h)
_M32: Final = 0xFFFFFFFF


def _rol32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    """`__jhash_mix(a, b, c)`: rotates 4, 6, 8, 16, 19, 4."""
    a = (a - c) & _M32
    a ^= _rol32(c, 4)
    c = (c + b) & _M32
    b = (b - a) & _M32
    b ^= _rol32(a, 6)
    a = (a + c) & _M32
    c = (c - b) & _M32
    c ^= _rol32(b, 8)
    b = (b + a) & _M32
    a = (a - c) & _M32
    a ^= _rol32(c, 16)
    c = (c + b) & _M32
    b = (b - a) & _M32
    b ^= _rol32(a, 19)
    a = (a + c) & _M32
    c = (c - b) & _M32
    c ^= _rol32(b, 4)
    b = (b + a) & _M32
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    """`__jhash_final(a, b, c)`: rotates 14, 11, 25, 16, 4, 14, 24; returns c."""
    c ^= b
    c = (c - _rol32(b, 14)) & _M32
    a ^= c
    a = (a - _rol32(c, 11)) & _M32
    b ^= a
    b = (b - _rol32(a, 25)) & _M32
    c ^= b
    c = (c - _rol32(b, 16)) & _M32
    a ^= c
    a = (a - _rol32(c, 4)) & _M32
    b ^= a
    b = (b - _rol32(a, 14)) & _M32
    c ^= b
    c = (c - _rol32(b, 24)) & _M32
    return c


def jhash2(words: Sequence[int], initval: int) -> int:
    """Mirrors `jhash2(const u32 *k, u32 length, u32 initval)` from include/linux/jhash.h.

    `words` are u32 values (already loaded in host byte order); `length` is `len(words)`.
    """
    length = len(words)
    a = b = c = (JHASH_INITVAL + (length << 2) + initval) & _M32
    i = 0
    while length > 3:
        a = (a + words[i]) & _M32
        b = (b + words[i + 1]) & _M32
        c = (c + words[i + 2]) & _M32
        a, b, c = _mix(a, b, c)
        length -= 3
        i += 3
    if length == 0:
        return c
    if length == 3:
        c = (c + words[i + 2]) & _M32
    if length >= 2:
        b = (b + words[i + 1]) & _M32
    a = (a + words[i]) & _M32
    return _final(a, b, c)


def addr_word(addr: int) -> int:
    """The u32 a little-endian kernel reads from the network-order bytes of host-order IPv4 `addr`."""
    return int.from_bytes(addr.to_bytes(4, "big"), "little")


def reciprocal_scale(val: int, ep_ro: int) -> int:
    """`reciprocal_scale()` (include/linux/math.h): `(u32)(((u64)val * ep_ro) >> 32)`."""
    return ((val * (ep_ro & _M32)) >> 32) & _M32
