"""The injected clock in the kernel's units: jiffies of HZ=250."""

from __future__ import annotations

from typing import Final

__all__ = ["HZ", "jiffies", "msecs_to_jiffies"]

HZ: Final = 250  # the reference box's CONFIG_HZ; the same tick `-m limit` uses (natbox.rules.matches.limit.HZ)


def jiffies(now: float) -> int:
    """The kernel's `jiffies` at `now` seconds of the injected clock."""
    return int(now * HZ)


def msecs_to_jiffies(m: int) -> int:
    """`msecs_to_jiffies()` for HZ=250: milliseconds rounded up to whole 4 ms ticks."""
    return -(-m * HZ // 1000)
