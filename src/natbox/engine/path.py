"""What the stages of the packet path share while the engine handles one call (one frame, one timer run).

`PathState` is the per-call state: the `Output` being filled, the packet being processed (a drop is
attributed to its ct), the packet counter, the offload metadata of the received frame, the clock and
the stats. Every stage (engine/ip_input.py, route_input.py, forward.py, local.py, ip_output.py,
icmp_send.py) gets the one `PathState` of its engine and nothing else of the coordinator's.

`Drop` is how a stage abandons a packet (the kernel's `kfree_skb_reason`): raised, it unwinds to the
entry point, which records it in `Output.dropped` with its `DropReason`; it never escapes the engine.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from natbox.engine.output import Dropped, Output
from natbox.netfilter import DropReason
from natbox.skb import Skb

__all__ = ["NF_STOLEN", "NO_META", "Drop", "Held", "PathState", "piece_of"]

NF_STOLEN: Final = 2  # a hook function kept the packet (defrag holds a fragment)
NO_META: Final = (0, 0, False)  # (gso_type, gso_size, partial) of an ordinary frame

# a packet waiting for its next hop's MAC: (skb, datagram to send, gso_type, gso_size, partial)
Held = tuple[Skb, bytes, int, int, bool]


class Drop(Exception):
    """Raised inside the engine to abandon a packet; never escapes `Engine.receive`."""

    def __init__(self, reason: DropReason, where: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.where = where
        self.detail = detail


def piece_of(skb: Skb, data: bytearray) -> Skb:
    """An skb for one piece of `skb` (a GSO segment, a queued fragment): the piece's bytes with the
    original's ct and route, as skb_segment and the fragment code copy them, so an ICMP error about the
    piece is attributed and NAT-translated like one about the whole."""
    piece = Skb(data, iif=skb.iif, pkt_id=skb.pkt_id)
    piece.ct, piece.ctinfo, piece.oif, piece.nexthop = skb.ct, skb.ctinfo, skb.oif, skb.nexthop
    return piece


class PathState:
    """The state one call into the engine shares between its stages (see the module docstring)."""

    __slots__ = ("next_pkt_id", "out", "rx_meta", "skb", "stats")

    def __init__(self) -> None:
        self.out = Output()
        self.skb: Skb | None = None  # the packet being processed (drops are attributed to its ct)
        self.next_pkt_id = 1
        self.rx_meta = NO_META  # the offload metadata of the frame receive() is handling
        self.stats: Counter[str] = Counter()

    def new_pkt_id(self) -> int:
        pkt_id = self.next_pkt_id
        self.next_pkt_id = pkt_id + 1
        return pkt_id

    def current_pkt_id(self) -> int:
        return self.next_pkt_id - 1

    def record_drop(self, pkt_id: int, d: Drop) -> None:
        self.stats[str(d.reason)] += 1
        skb = self.skb
        ct_id = skb.ct.ct_id if skb is not None and skb.pkt_id == pkt_id and skb.ct is not None else 0
        self.out.dropped.append(Dropped(pkt_id, d.reason, d.where, d.detail, ct_id))
        self.out.trace.append((pkt_id, f"DROP at {d.where}: {d.reason}{': ' + d.detail if d.detail else ''}"))

    def record_held_drop(self, held: Held, reason: DropReason, where: str, detail: str) -> None:
        """A packet that waited for its next hop's MAC is dropped (queue full, resolution failed)."""
        skb = held[0]
        self.stats[str(reason)] += 1
        self.out.dropped.append(Dropped(skb.pkt_id, reason, where, detail,
                                        skb.ct.ct_id if skb.ct is not None else 0))

    def flush_trace(self, skb: Skb) -> None:
        if skb.trace:
            self.out.trace.extend((skb.pkt_id, step) for step in skb.trace)
            skb.trace.clear()
