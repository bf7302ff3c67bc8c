"""The kernel<->natbox bijection of ports and ICMP ids the kernel chose at random (§10)."""

from __future__ import annotations

import math

from natbox.difftest.kernel import KernelRun
from natbox.difftest.packets import decode_frame

__all__ = ["PortMap", "first_seen"]


class PortMap:
    """The kernel<->natbox bijection of randomly chosen ports and ICMP ids (§10)."""

    def __init__(self, first_seen: dict[int, float]) -> None:
        self.first_seen = first_seen  # value -> earliest time an input frame carried it
        self.k2n: dict[int, int] = {}
        self.n2k: dict[int, int] = {}

    def accept(self, k: int, n: int, ts: float) -> bool:
        """Whether kernel value k and natbox value n may stand for each other at time ts (records the pair)."""
        if self.k2n.get(k) == n:
            return True
        if k in self.k2n or n in self.n2k:
            return False
        if self.first_seen.get(k, math.inf) <= ts:
            return False  # a value the inputs already had is not the kernel's random choice
        if self.first_seen.get(n, math.inf) <= ts and n not in self.k2n:
            return False  # ... nor natbox's (unless the inputs carried it as another kernel choice)
        self.k2n[k] = n
        self.n2k[n] = k
        return True

    def identity(self, v: int, ts: float) -> None:
        """Both sides chose the same value v: record v<->v when it was a random choice (not yet carried by
        an input), so that neither side's v can later pair with something else."""
        if v not in self.k2n and v not in self.n2k and self.first_seen.get(v, math.inf) > ts:
            self.k2n[v] = v
            self.n2k[v] = v

    def map_kernel(self, k: int) -> int:
        return self.k2n.get(k, k)


def first_seen(kernel: KernelRun) -> tuple[dict[int, float], set[int]]:
    """When each port/id first appeared in an input frame, and the IP IDs of all input frames."""
    seen: dict[int, float] = {}
    ids: set[int] = set()
    for c in kernel.received():
        fields = decode_frame(c.frame)
        for _, v, kind in fields:
            if kind == "port" and isinstance(v, int):
                seen.setdefault(v, c.ts)
        for name, v, kind in fields:
            if kind == "ipid" and not name.startswith("inner.") and isinstance(v, int):
                ids.add(v)
    return seen, ids
