"""The UDP (and UDP-Lite) tracker (§3.3). Mirrors nf_conntrack_proto_udp.c.

| situation                                   | refresh to              | ASSURED |
|---------------------------------------------|-------------------------|---------|
| no reply seen yet                           | udp_timeout (30 s)      | no      |
| reply seen, now <= stream_ts (start + 2 s)  | udp_timeout (30 s)      | no      |
| reply seen, now > stream_ts                 | udp_timeout_stream (120)| yes (never for NAT_CLASH) |

INVALID (`udp_error`): fewer than 8 bytes of header, `udp.len` larger than the rest of the datagram or
smaller than 8, or a non-zero checksum that is wrong (checked at PRE_ROUTING only, with
`nf_conntrack_checksum=1`; the sum covers everything from the UDP header to the end of the IP datagram,
as `nf_ip_checksum` does). A zero checksum is accepted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from natbox.conntrack.proto.generic import NF_INVALID, nf_ct_refresh_acct
from natbox.netfilter import NF_ACCEPT, NFPROTO_IPV4, NFPROTO_IPV6, CtStatus, Hook
from natbox.wire.checksum import csum_fold, csum_partial
from natbox.wire.ipv6 import pseudo6_sum
from natbox.wire.layout import (
    IP6H_ADDRS_END,
    IP6H_DADDR,
    IP6H_SADDR,
    IPH_ADDRS_END,
    IPH_SADDR,
    UDPH_CHECK,
    UDPH_LEN,
    UDPH_LEN_BYTES,
)

if TYPE_CHECKING:
    from natbox.conntrack.config import ConntrackConfig
    from natbox.conntrack.conn import Conn
    from natbox.skb import Skb

# enum members as module constants: `Enum.MEMBER` costs an attribute lookup through EnumType per use
_HOOK_PRE_ROUTING: Final = Hook.PRE_ROUTING

__all__ = [
    "STREAM_DELAY", "l4_checksum_ok", "nf_checksum_ok", "udp_error", "udp_packet", "udp_packet_seen_reply",
    "udplite_packet",
]

STREAM_DELAY: Final = 2.0  # stream_ts = creation + 2 * HZ

_ADDRS, _ADDRS_END = IPH_SADDR, IPH_ADDRS_END  # saddr and daddr, adjacent: the pseudo-header's addresses
_SEEN_REPLY: Final = CtStatus.SEEN_REPLY
_ASSURED: Final = CtStatus.ASSURED
_NAT_CLASH: Final = CtStatus.NAT_CLASH
_CLASH_OR_FIXED: Final = int(CtStatus.NAT_CLASH | CtStatus.FIXED_TIMEOUT)


def nf_checksum_ok(data: bytearray, dataoff: int, proto: int, end: int | None = None,
                   family: int = NFPROTO_IPV4) -> bool:
    """`nf_checksum()` for TCP/UDP: `nf_ip_checksum()` / `nf_ip_checksum_partial()` (the pseudo-header and the
    segment sum to 0xFFFF) or, for an IPv6 packet (`family`, the skb's), `nf_ip6_checksum` (IPv6 §2.1).

    The pseudo-header length is always `skb->len - dataoff`; `end` limits the summed bytes (UDP-Lite
    coverage), as `__skb_checksum_complete_head` does.

    IPv4, in one sum: every part (the addresses' four 16-bit words taken as one integer, the protocol, the
    length, the segment as one integer, a last odd byte as the high half of a word) is congruent mod 0xFFFF
    to its 16-bit one's-complement sum (RFC 1071), and the folded total of a positive sum (the protocol is
    never 0) is 0xFFFF exactly when the sum is a multiple of 0xFFFF.
    """
    if family == NFPROTO_IPV6:
        return _l4_checksum6_ok(data, dataoff, proto, len(data) if end is None else end)
    n = len(data)
    stop = n if end is None else end
    seg = data[dataoff:stop] if stop - dataoff <= 1024 else memoryview(data)[dataoff:stop]
    w = int.from_bytes(seg, "big")
    if len(seg) & 1:
        w <<= 8
    return not (int.from_bytes(data[_ADDRS:_ADDRS_END], "big") + proto + n - dataoff + w) % 0xFFFF


l4_checksum_ok = nf_checksum_ok  # the IPv4 form (`nf_ip_checksum`): family is IPv4 unless given


def _l4_checksum6_ok(data: bytearray, dataoff: int, proto: int, end: int) -> bool:
    """`nf_ip6_checksum()`: the IPv6 pseudo-header (addresses, the upper-layer length `len - dataoff`, the
    protocol) plus the segment up to `end` sums to 0xFFFF."""
    total = pseudo6_sum(int.from_bytes(data[IP6H_SADDR:IP6H_DADDR], "big"),
                        int.from_bytes(data[IP6H_DADDR:IP6H_ADDRS_END], "big"), proto, len(data) - dataoff)
    return csum_fold(csum_partial(memoryview(data)[dataoff:end], total)) == 0


def udp_error(skb: Skb, dataoff: int, hook: Hook, checksum: bool) -> str | None:
    """Mirrors `udp_error()`: the reason the datagram is INVALID, or None."""
    data = skb.data
    udplen = len(data) - dataoff
    if udplen < UDPH_LEN_BYTES:
        return "udp: short packet"
    ulen = (data[dataoff + UDPH_LEN] << 8) | data[dataoff + UDPH_LEN + 1]
    if ulen > udplen or ulen < UDPH_LEN_BYTES:
        return "udp: truncated/malformed packet"
    if not (data[dataoff + UDPH_CHECK] | data[dataoff + UDPH_CHECK + 1]):
        return None  # no checksum
    # nf_ip_checksum: a CHECKSUM_PARTIAL packet (from a local or virtio sender) is not verified
    if (hook == _HOOK_PRE_ROUTING and checksum and not skb.csum_partial
            and not nf_checksum_ok(data, dataoff, 17, None, skb.family)):
        return "udp: bad checksum"
    return None


def udp_packet(
    conn: Conn, skb: Skb, dataoff: int, direction: int, hook: Hook, now: float, cfg: ConntrackConfig
) -> int:
    """Mirrors `nf_conntrack_udp_packet()` (§3.3). The refresh of a SEEN_REPLY ct is `udp_packet_seen_reply`,
    the function the engine's fast paths run for such a ct."""
    reason = udp_error(skb, dataoff, hook, cfg.checksum)
    if reason is not None:
        skb.note = reason
        return NF_INVALID
    status = conn.status
    nbytes = len(skb.data)
    if status & _SEEN_REPLY:
        if not status & _CLASH_OR_FIXED:
            udp_packet_seen_reply(conn, direction, nbytes, now, cfg)
            # stream_ts is set while the ct is unconfirmed, i.e. at creation: conn.start + 2 s.
            if not status & _ASSURED and now > conn.start + STREAM_DELAY:
                conn.status |= _ASSURED
            return NF_ACCEPT
        # FIXED_TIMEOUT (a NAT_CLASH entry is one): the accounting, no refresh; NAT_CLASH never ASSURED
        extra = cfg.udp_timeout_stream if now > conn.start + STREAM_DELAY else cfg.udp_timeout
        nf_ct_refresh_acct(conn, direction, nbytes, extra, now, cfg.acct)
        if not status & (_NAT_CLASH | _ASSURED) and now > conn.start + STREAM_DELAY:
            conn.status |= _ASSURED
    else:
        nf_ct_refresh_acct(conn, direction, nbytes, cfg.udp_timeout, now, cfg.acct)
    return NF_ACCEPT


def udp_packet_seen_reply(conn: Conn, direction: int, nbytes: int, now: float, cfg: ConntrackConfig) -> None:
    """`nf_conntrack_udp_packet()`'s refresh of a SEEN_REPLY ct without NAT_CLASH or FIXED_TIMEOUT, once
    `udp_error` has passed the datagram: 120 s once the stream timestamp has passed, else 30 s (§3.3), and
    the accounting. `udp_packet` runs it, then sets ASSURED once the stream timestamp has passed; the fast
    paths run it alone for a ct whose status does not change (ASSURED already, or the timestamp not yet
    passed)."""
    conn.timeout = now + (cfg.udp_timeout_stream if now > conn.start + STREAM_DELAY else cfg.udp_timeout)
    if cfg.acct:
        conn.acct_packets[direction] += 1
        conn.acct_bytes[direction] += nbytes


def udplite_error(skb: Skb, dataoff: int, hook: Hook, checksum: bool) -> str | None:
    """Mirrors `udplite_error()`: coverage 0 means the whole datagram; a checksum is mandatory."""
    data = skb.data
    udplen = len(data) - dataoff
    if udplen < UDPH_LEN_BYTES:
        return "udplite: short packet"
    cscov = (data[dataoff + UDPH_LEN] << 8) | data[dataoff + UDPH_LEN + 1]  # UDP-Lite: checksum coverage
    if cscov == 0:
        cscov = udplen
    elif cscov < UDPH_LEN_BYTES or cscov > udplen:
        return "udplite: invalid checksum coverage"
    if not (data[dataoff + UDPH_CHECK] | data[dataoff + UDPH_CHECK + 1]):
        return "udplite: checksum missing"
    # The kernel passes IPPROTO_UDP (17), not IPPROTO_UDPLITE, to nf_checksum_partial(); mirrored.
    if hook == _HOOK_PRE_ROUTING and checksum and not nf_checksum_ok(data, dataoff, 17, dataoff + cscov, skb.family):
        return "udplite: bad checksum"
    return None


def udplite_packet(
    conn: Conn, skb: Skb, dataoff: int, direction: int, hook: Hook, now: float, cfg: ConntrackConfig
) -> int:
    """Mirrors `nf_conntrack_udplite_packet()`: like UDP but without the 2 s stream delay."""
    reason = udplite_error(skb, dataoff, hook, cfg.checksum)
    if reason is not None:
        skb.note = reason
        return NF_INVALID
    nbytes = len(skb.data)
    if conn.status & _SEEN_REPLY:
        nf_ct_refresh_acct(conn, direction, nbytes, cfg.udp_timeout_stream, now, cfg.acct)
        if conn.status & _NAT_CLASH:
            return NF_ACCEPT
        conn.status |= _ASSURED
    else:
        nf_ct_refresh_acct(conn, direction, nbytes, cfg.udp_timeout, now, cfg.acct)
    return NF_ACCEPT
