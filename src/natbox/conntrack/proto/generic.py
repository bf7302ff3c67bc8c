"""The generic tracker and GRE (§3.5), plus the refresh/accounting helper every tracker uses (§2.8).

Mirrors `generic_packet()` in nf_conntrack_core.c, `nf_conntrack_gre_packet()` in
nf_conntrack_proto_gre.c and `__nf_ct_refresh_acct()` / `nf_ct_kill_acct()` in nf_conntrack_core.c.

Verdict convention of every `*_packet()` here and in the sibling modules (the kernel's): a positive value is
the verdict (NF_ACCEPT); `-NF_ACCEPT` (-1) means "invalid: detach the ct, accept the packet"; `-NF_REPEAT`
(-4) means "the ct was killed, look up again" (TCP reopen); `NF_DROP` (0) drops.

Timeouts: `Conn.timeout` is always an absolute deadline on the caller's clock. The kernel keeps a relative
value in an unconfirmed ct and adds `now` at confirm; the engine runs a packet from `nf_conntrack_in` to
confirm at one `now`, so both give the same deadline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from natbox.netfilter import NF_ACCEPT, CtStatus

if TYPE_CHECKING:
    from natbox.conntrack.config import ConntrackConfig
    from natbox.conntrack.conn import Conn
    from natbox.conntrack.ops import CtTableOps

__all__ = [
    "NF_INVALID",
    "NF_REPEAT_LOOKUP",
    "generic_packet",
    "gre_packet",
    "nf_ct_kill_acct",
    "nf_ct_refresh_acct",
]

NF_INVALID: Final = -1  # -NF_ACCEPT
NF_REPEAT_LOOKUP: Final = -4  # -NF_REPEAT

_FIXED_TIMEOUT: Final = CtStatus.FIXED_TIMEOUT
_SEEN_REPLY: Final = CtStatus.SEEN_REPLY
_ASSURED: Final = CtStatus.ASSURED
_NAT_CLASH: Final = CtStatus.NAT_CLASH


def nf_ct_refresh_acct(
    conn: Conn, direction: int, nbytes: int, extra: float, now: float, acct: bool) -> None:
    """Mirrors `__nf_ct_refresh_acct()`: timeout = now + extra unless FIXED_TIMEOUT; count the packet.

    `acct` is `nf_conntrack_acct` (the kernel decides at ct creation whether the acct extension exists; a
    sysctl change mid-flow is the only case where natbox differs).
    """
    if not conn.status & _FIXED_TIMEOUT:
        conn.timeout = now + extra
    if acct:
        conn.acct_packets[direction] += 1
        conn.acct_bytes[direction] += nbytes


def nf_ct_kill_acct(
    conn: Conn, direction: int, nbytes: int, now: float, table: CtTableOps, acct: bool, reason: str
) -> None:
    """Mirrors `nf_ct_kill_acct()`: account the packet, then delete the ct (DESTROY event)."""
    if acct:
        conn.acct_packets[direction] += 1
        conn.acct_bytes[direction] += nbytes
    conn.status |= CtStatus.DYING
    table.delete(conn, now, reason=reason)


def generic_packet(conn: Conn, direction: int, nbytes: int, now: float, cfg: ConntrackConfig) -> int:
    """Mirrors `generic_packet()`: every packet refreshes to `nf_conntrack_generic_timeout` (600 s)."""
    nf_ct_refresh_acct(conn, direction, nbytes, cfg.generic_timeout, now, cfg.acct)
    return NF_ACCEPT


def gre_packet(conn: Conn, direction: int, nbytes: int, now: float, cfg: ConntrackConfig) -> int:
    """Mirrors `nf_conntrack_gre_packet()`: 30 s until a reply, then 180 s and ASSURED (never for NAT_CLASH).

    The kernel copies the two timeouts into the ct when it is created; natbox reads the sysctls per packet.
    """
    status = conn.status
    if status & _SEEN_REPLY:
        nf_ct_refresh_acct(conn, direction, nbytes, cfg.gre_timeout_stream, now, cfg.acct)
        if status & _NAT_CLASH:
            return NF_ACCEPT
        conn.status |= _ASSURED
    else:
        nf_ct_refresh_acct(conn, direction, nbytes, cfg.gre_timeout, now, cfg.acct)
    return NF_ACCEPT
