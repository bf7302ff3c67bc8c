"""SYN cookies as net/ipv4/syncookies.c makes and checks them (what SYNPROXY answers a SYN with).

The cookie is the server's initial sequence number:

    cookie = H(0) + client ISN + (count << 24) + ((H(count, 1) + mssind) & 0xFFFFFF)

where `H` is `cookie_hash()`: SipHash-2-4 (`siphash_4u32`) of saddr, daddr, sport << 16 | dport and the
count, keyed by one of two random 128-bit secrets (`syncookie_secret[2]`, drawn once:
`net_get_random_once`). `count` is `tcp_cookie_time()`: the minutes since boot (jiffies / (60 * HZ)); a
cookie checks for MAX_SYNCOOKIE_AGE (2) counts, the minute it was made and the next. The low bits carry the
index of the client's MSS in `msstab` (536, 1300, 1440, 1460).

Mirrors `cookie_hash`, `secure_tcp_syn_cookie`, `check_tcp_syn_cookie`, `__cookie_v4_init_sequence` and
`__cookie_v4_check`. The words are hashed as the kernel reads them on a little-endian machine (a __be32 in
a u32), so with the kernel's secret the values would be the kernel's; natbox draws its secrets from the
engine's random source and counts minutes on the injected clock, so its cookies differ from any given
kernel's (docs/differences.md). IPv6's cookies (net/ipv6/syncookies.c) hash the addresses, count and ports
as one 40-byte struct with their own secret and MSS table.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MSSTAB", "MSSTAB6", "SyncookieSecret", "cookie_v4_check", "cookie_v4_init_sequence", "cookie_v6_check",
           "cookie_v6_init_sequence", "siphash", "siphash_4u32", "tcp_cookie_time"]

_M64: Final = (1 << 64) - 1
_U32: Final = 0xFFFFFFFF
COOKIEBITS: Final = 24
COOKIEMASK: Final = (1 << COOKIEBITS) - 1
MAX_SYNCOOKIE_AGE: Final = 2
TCP_SYNCOOKIE_PERIOD: Final = 60.0  # seconds (60 * HZ jiffies)
MSSTAB: Final = (536, 1300, 1440, 1460)  # msstab[]: 1440, 1452 are PPPoE's


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def _sipround(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _M64
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _M64
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _M64
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _M64
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def siphash(data: bytes, key: tuple[int, int]) -> int:
    """`siphash()` (lib/siphash.c): SipHash-2-4 of `data` with the 128-bit `key` (k0, k1), 64 bits."""
    k0, k1 = key
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1
    full = len(data) - len(data) % 8
    for i in range(0, full, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v3 ^= m
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0 ^= m
    m = ((len(data) & 0xFF) << 56) | int.from_bytes(data[full:], "little")
    v3 ^= m
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0 ^= m
    v2 ^= 0xFF
    for _ in range(4):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


def siphash_4u32(a: int, b: int, c: int, d: int, key: tuple[int, int]) -> int:
    """`siphash_4u32()`: SipHash-2-4 of the four u32 words as they lie in memory (little-endian); the low 32
    bits of the result, as `cookie_hash` keeps them."""
    words = b"".join((w & _U32).to_bytes(4, "little") for w in (a, b, c, d))
    return siphash(words, key) & _U32


class SyncookieSecret:
    """`syncookie_secret[2]`: two SipHash keys, drawn from `draw` (a 64-bit random source) on first use."""

    __slots__ = ("keys",)

    def __init__(self, words: tuple[int, int, int, int]) -> None:
        self.keys = ((words[0] & _M64, words[1] & _M64), (words[2] & _M64, words[3] & _M64))


def _le32(addr: int) -> int:
    """A __be32 address (host-order int here) read as a u32 on a little-endian CPU."""
    return int.from_bytes((addr & _U32).to_bytes(4, "big"), "little")


def _le16(port: int) -> int:
    return ((port & 0xFF) << 8) | ((port >> 8) & 0xFF)


def _cookie_hash(secret: SyncookieSecret, saddr: int, daddr: int, sport: int, dport: int, count: int,
                 c: int) -> int:
    """Mirrors `cookie_hash()`."""
    return siphash_4u32(_le32(saddr), _le32(daddr), ((_le16(sport) << 16) | _le16(dport)) & _U32, count & _U32,
                        secret.keys[c])


def tcp_cookie_time(now: float) -> int:
    """`tcp_cookie_time()`: minutes on the clock (the kernel's jiffies / (60 * HZ)), as a u32."""
    return int(now // TCP_SYNCOOKIE_PERIOD) & _U32


def cookie_v4_init_sequence(secret: SyncookieSecret, saddr: int, daddr: int, sport: int, dport: int, seq: int,
                            mss: int, now: float) -> tuple[int, int]:
    """Mirrors `__cookie_v4_init_sequence()` with `secure_tcp_syn_cookie()`: the cookie for a SYN from
    saddr:sport to daddr:dport with sequence number `seq` and MSS option `mss` (0: none), and the MSS the
    cookie encodes (the largest `msstab` entry not above `mss`, else 536)."""
    mssind = len(MSSTAB) - 1
    while mssind and mss < MSSTAB[mssind]:
        mssind -= 1
    count = tcp_cookie_time(now)
    cookie = (_cookie_hash(secret, saddr, daddr, sport, dport, 0, 0) + seq + (count << COOKIEBITS)
              + ((_cookie_hash(secret, saddr, daddr, sport, dport, count, 1) + mssind) & COOKIEMASK))
    return cookie & _U32, MSSTAB[mssind]


def cookie_v4_check(secret: SyncookieSecret, saddr: int, daddr: int, sport: int, dport: int, seq: int,
                    ack_seq: int, now: float) -> int:
    """Mirrors `__cookie_v4_check()` with `check_tcp_syn_cookie()`: the MSS the cookie in the ACK's
    `ack_seq` - 1 encodes for the SYN of sequence number `seq` - 1, or 0 when it does not check (made by
    another secret or tuple, or more than MAX_SYNCOOKIE_AGE - 1 minutes ago)."""
    cookie = (ack_seq - 1) & _U32
    sseq = (seq - 1) & _U32
    count = tcp_cookie_time(now)
    cookie = (cookie - _cookie_hash(secret, saddr, daddr, sport, dport, 0, 0) - sseq) & _U32
    diff = (count - (cookie >> COOKIEBITS)) & (_U32 >> COOKIEBITS)
    if diff >= MAX_SYNCOOKIE_AGE:
        return 0
    mssind = (cookie - _cookie_hash(secret, saddr, daddr, sport, dport, count - diff, 1)) & COOKIEMASK
    return MSSTAB[mssind] if mssind < len(MSSTAB) else 0


# --- IPv6 (net/ipv6/syncookies.c) -----------------------------------------------------------------

MSSTAB6: Final = (1280 - 60, 1480 - 60, 1500 - 60, 9000 - 60)  # msstab[]: IPV6_MIN_MTU - 60 ... jumbo


def _cookie_hash6(secret: SyncookieSecret, saddr: int, daddr: int, sport: int, dport: int, count: int,
                  c: int) -> int:
    """Mirrors IPv6's `cookie_hash()`: SipHash of {saddr, daddr, count (u32), sport, dport (__be16)}, 40 bytes."""
    combined = (saddr.to_bytes(16, "big") + daddr.to_bytes(16, "big") + (count & _U32).to_bytes(4, "little")
                + (sport & 0xFFFF).to_bytes(2, "big") + (dport & 0xFFFF).to_bytes(2, "big"))
    return siphash(combined, secret.keys[c]) & _U32


def cookie_v6_init_sequence(secret: SyncookieSecret, saddr: int, daddr: int, sport: int, dport: int, seq: int,
                            mss: int, now: float) -> tuple[int, int]:
    """Mirrors `__cookie_v6_init_sequence()` (its own secret, `syncookie6_secret`, and msstab)."""
    mssind = len(MSSTAB6) - 1
    while mssind and mss < MSSTAB6[mssind]:
        mssind -= 1
    count = tcp_cookie_time(now)
    cookie = (_cookie_hash6(secret, saddr, daddr, sport, dport, 0, 0) + seq + (count << COOKIEBITS)
              + ((_cookie_hash6(secret, saddr, daddr, sport, dport, count, 1) + mssind) & COOKIEMASK))
    return cookie & _U32, MSSTAB6[mssind]


def cookie_v6_check(secret: SyncookieSecret, saddr: int, daddr: int, sport: int, dport: int, seq: int,
                    ack_seq: int, now: float) -> int:
    """Mirrors `__cookie_v6_check()`: the MSS the ACK's cookie encodes, or 0."""
    cookie = (ack_seq - 1) & _U32
    sseq = (seq - 1) & _U32
    count = tcp_cookie_time(now)
    cookie = (cookie - _cookie_hash6(secret, saddr, daddr, sport, dport, 0, 0) - sseq) & _U32
    diff = (count - (cookie >> COOKIEBITS)) & (_U32 >> COOKIEBITS)
    if diff >= MAX_SYNCOOKIE_AGE:
        return 0
    mssind = (cookie - _cookie_hash6(secret, saddr, daddr, sport, dport, count - diff, 1)) & COOKIEMASK
    return MSSTAB6[mssind] if mssind < len(MSSTAB6) else 0
