"""xt_RATEEST's estimators (net/netfilter/xt_RATEEST.c) and their rate estimation (net/core/gen_estimator.c).

An estimator counts the bytes and packets `-j RATEEST` gives it and, every `(HZ/4) << intvl_log` jiffies
(`est_timer`), folds the last period's rate into an exponentially weighted moving average scaled by 2^8
(`avbps`, `avpps`, u64 as in the kernel). natbox runs the timer's ticks lazily, in order, before each
update or read (sans-IO: time comes with the call); a long idle stretch that can no longer change the
averages is skipped in one step. `read()` is `gen_estimator_read`: bytes and packets per second.
"""

from __future__ import annotations

from typing import Final

from natbox.rules.xtstate.clock import HZ

__all__ = ["RateEstimator"]

U64: Final = (1 << 64) - 1


class RateEstimator:
    """`struct xt_rateest` with its `net_rate_estimator`."""

    __slots__ = ("avbps", "avpps", "bytes", "ewma_log", "interval", "intvl_log", "last_bytes", "last_packets",
                 "name", "next_jiffies", "packets")

    def __init__(self, name: str, interval: int, ewma_log: int, now: int) -> None:
        self.name, self.interval, self.ewma_log = name, interval, ewma_log
        self.intvl_log = interval + 2  # gen_new_estimator
        self.bytes = self.packets = 0
        self.last_bytes = self.last_packets = 0
        self.avbps = self.avpps = 0
        self.next_jiffies = now + ((HZ // 4) << self.intvl_log)

    def _tick(self) -> None:
        """`est_timer()`."""
        shift, ewma = 10 - self.intvl_log, self.ewma_log
        brate = ((((self.bytes - self.last_bytes) << shift) & U64) >> ewma) - (self.avbps >> ewma)
        rate = ((((self.packets - self.last_packets) << shift) & U64) >> ewma) - (self.avpps >> ewma)
        self.avbps = (self.avbps + brate) & U64
        self.avpps = (self.avpps + rate) & U64
        self.last_bytes, self.last_packets = self.bytes, self.packets
        self.next_jiffies += (HZ // 4) << self.intvl_log

    def advance(self, now: int) -> None:
        """Run the ticks due by `now` (jiffies)."""
        step = (HZ // 4) << self.intvl_log
        while self.next_jiffies <= now:
            if (self.bytes == self.last_bytes and self.packets == self.last_packets
                    and not self.avbps >> self.ewma_log and not self.avpps >> self.ewma_log):
                # nothing left to change: the remaining ticks are no-ops
                self.next_jiffies += (now - self.next_jiffies) // step * step + step
                return
            self._tick()

    def add(self, nbytes: int, now: int) -> None:
        """`xt_rateest_tg()`: one packet of `nbytes` counted."""
        self.advance(now)
        self.bytes += nbytes
        self.packets += 1

    def read(self, now: int) -> tuple[int, int]:
        """`gen_estimator_read()`: (bytes/s, packets/s)."""
        self.advance(now)
        return (self.avbps + 0xF) >> 8, (self.avpps + 0xF) >> 8
