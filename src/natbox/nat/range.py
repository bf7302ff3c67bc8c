"""`struct nf_nat_range2` and its flags (uapi nf_nat.h, §4.3).

A range says which addresses and ports a manip may pick from. Addresses are host-order ints;
ports (or ICMP ids) are plain ints. A range is immutable: rule targets build one at load time (or
per packet for MASQUERADE and REDIRECT, whose address depends on the interface).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = ["NatRange", "RangeFlags"]


class RangeFlags(enum.IntFlag):
    """`NF_NAT_RANGE_*` (§4.3)."""

    MAP_IPS = 0x01
    PROTO_SPECIFIED = 0x02
    PROTO_RANDOM = 0x04
    PERSISTENT = 0x08
    PROTO_RANDOM_FULLY = 0x10
    PROTO_OFFSET = 0x20
    NETMAP = 0x40

    PROTO_RANDOM_ALL = 0x14  # PROTO_RANDOM | PROTO_RANDOM_FULLY (written out: mypyc miscompiles the expression)


_NO_FLAGS: Final = RangeFlags(0)


@dataclass(frozen=True, slots=True)
class NatRange:
    """`struct nf_nat_range2`: min/max address, min/max proto (port or ICMP id), base for /base offsets."""

    flags: RangeFlags = _NO_FLAGS
    min_addr: int = 0
    max_addr: int = 0
    min_proto: int = 0
    max_proto: int = 0
    base_proto: int = 0

    def __copy__(self) -> NatRange:
        return self  # immutable: a copy is the same range

    def __deepcopy__(self, memo: dict[int, object]) -> NatRange:
        """The range itself (immutable). Spelled out: copy.deepcopy's generic reconstruction assigns fields
        one by one, which a frozen dataclass compiled by mypyc refuses."""
        return self

    @staticmethod
    def null_binding(addr: int) -> NatRange:
        """`nf_nat_alloc_null_binding`: MAP_IPS with min = max = the current address (§4.1).

        Ranges are immutable, so the ones made lately are shared (one is needed per new ct)."""
        rng = _NULL_BINDINGS.get(addr)
        if rng is None:
            if len(_NULL_BINDINGS) >= NULL_BINDING_CACHE_MAX:
                _NULL_BINDINGS.clear()
            rng = _NULL_BINDINGS[addr] = NatRange(RangeFlags.MAP_IPS, addr, addr)
        return rng


NULL_BINDING_CACHE_MAX: Final = 4096  # null-binding ranges kept for reuse; the cache is emptied when full
_NULL_BINDINGS: dict[int, NatRange] = {}
