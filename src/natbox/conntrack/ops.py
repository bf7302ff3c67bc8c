"""What a protocol tracker may ask of the conntrack table, as a Protocol (no import of the table itself).

The kernel's trackers reach the table through two calls: `nf_conntrack_find_get` (ICMP errors look up the
connection their quoted packet belongs to) and `nf_ct_kill` (TCP kills a ct it reopens, or one a RST ends).
`ConntrackTable` implements both; the trackers and the l4proto records type their `table` argument with
this Protocol, so `conntrack.table` (which finds a protocol's record) and the trackers do not import each
other.
"""

from __future__ import annotations

from typing import Protocol

from natbox.conntrack.conn import Conn
from natbox.netfilter import Direction

__all__ = ["CtTableOps"]


class CtTableOps(Protocol):
    """The table as a tracker sees it (`ConntrackTable` is one)."""

    def lookup(self, t: tuple[int, ...], now: float) -> tuple[Conn, Direction] | None:
        """`__nf_conntrack_find_get`: the live entry holding tuple `t` (or its zone key) in either direction."""
        ...

    def find_in_zone(self, t: tuple[int, int, int, int, int], zone: int, now: float,
                     first: int = 0, *, fallback: bool = True) -> tuple[Conn, Direction] | None:
        """`nf_conntrack_find_get`: the live entry holding `t` in the template zone `zone`."""
        ...

    def delete(self, conn: Conn, now: float, *, reason: str = "") -> None:
        """`nf_ct_kill`: remove `conn` under both tuples."""
        ...
