"""Injected randomness: a small, seedable generator so that every replay is reproducible.

The kernel draws NAT port offsets with `get_random_u16()` and `-m statistic` with `get_random_u32()`.
natbox's core never touches a global RNG: it takes any object with `getrandbits(k)` (a `random.Random`
works too). `SplitMix64` is the default: tiny, fast and the same on every platform.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["RandomSource", "SplitMix64"]

_MASK64 = (1 << 64) - 1


class RandomSource(Protocol):
    """What natbox needs from a random number generator."""

    def getrandbits(self, k: int, /) -> int: ...


class SplitMix64:
    """SplitMix64 (Steele, Lea and Flood, 2014): 64 random bits per step from a 64-bit counter."""

    __slots__ = ("_state",)

    def __init__(self, seed: int = 0) -> None:
        self._state = seed & _MASK64

    def _next(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK64
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def getrandbits(self, k: int, /) -> int:
        """`k` random bits (k <= 64 uses one step; more are concatenated)."""
        if k <= 0:
            return 0
        out = 0
        bits = 0
        while bits < k:
            out = (out << 64) | self._next()
            bits += 64
        return out >> (bits - k)
