"""Per-host ICMP rate limiting and redirect pacing: the kernel's `inet_peer` state (net/ipv4/inetpeer.c).

`icmpv4_xrlim_allow()` (net/ipv4/icmp.c) limits the ICMP errors sent to one host: types in
`icmp_ratemask` (default 6168: destination unreachable, source quench, time exceeded, parameter
problem), except fragmentation needed, and never on loopback, pass `inet_peer_xrlim_allow(peer,
icmp_ratelimit)`: a token bucket that gains one token per jiffy, holds at most 6 × `icmp_ratelimit`
(XRLIM_BURST_FACTOR) and spends `icmp_ratelimit` (1000 ms) per message, so a host gets a burst of 6
and then one error per second. A new peer starts with `rate_last` 60 s in the past (`inet_getpeer`).

`ip_rt_send_redirect()` (net/ipv4/route.c) shares that state: sending a redirect sets `rate_last` to
now, so an error to the same host right after a redirect is refused (nstat IcmpOutRateLimitHost).

Times are seconds on the injected clock. Bound: at most MAX_PEERS hosts are remembered; the one used
longest ago is forgotten first (the kernel's inet_peer GC is age-based too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["IcmpRateLimiter"]

XRLIM_BURST_FACTOR: Final = 6
ICMP_RATELIMIT: Final = 1.0  # net.ipv4.icmp_ratelimit, 1000 ms
ICMP_RATEMASK: Final = 6168  # net.ipv4.icmp_ratemask: 1<<3 | 1<<4 | 1<<11 | 1<<12
NEW_PEER_AGE: Final = 60.0  # inet_getpeer: rate_last = jiffies - 60 * HZ
REDIRECT_NUMBER: Final = 9  # ip_rt_redirect_number
REDIRECT_LOAD: Final = 0.02  # ip_rt_redirect_load: HZ / 50
REDIRECT_SILENCE: Final = REDIRECT_LOAD * (1 << (REDIRECT_NUMBER + 1))  # ip_rt_redirect_silence, 20.48 s
MAX_PEERS: Final = 65536  # hosts remembered


@dataclass(slots=True)
class _Peer:
    rate_tokens: float
    rate_last: float
    n_redirects: int = 0


class IcmpRateLimiter:
    """The inet_peer rate state of one network namespace."""

    def __init__(self, ratelimit: float = ICMP_RATELIMIT, ratemask: int = ICMP_RATEMASK) -> None:
        self.ratelimit = ratelimit
        self.ratemask = ratemask
        self._peers: dict[int, _Peer] = {}
        self.limited = 0  # IcmpOutRateLimitHost

    def _peer(self, addr: int, now: float) -> _Peer:
        peer = self._peers.pop(addr, None)
        if peer is None:
            if len(self._peers) >= MAX_PEERS:
                del self._peers[next(iter(self._peers))]
            peer = _Peer(0.0, now - NEW_PEER_AGE)
        self._peers[addr] = peer  # most recently used last
        return peer

    def allow_error(self, dst: int, icmp_type: int, code: int, now: float, *, loopback: bool = False) -> bool:
        """`icmpv4_xrlim_allow()`: may an ICMP message of this type go to `dst` now?"""
        if not (1 << icmp_type) & self.ratemask or (icmp_type == 3 and code == 4) or loopback:
            return True
        peer = self._peer(dst, now)
        token = peer.rate_tokens + (now - peer.rate_last)
        peer.rate_last = now
        token = min(token, XRLIM_BURST_FACTOR * self.ratelimit)
        ok = token >= self.ratelimit
        if ok:
            token -= self.ratelimit
        else:
            self.limited += 1
        peer.rate_tokens = token
        return ok

    def peer_allow(self, addr: int, timeout: float, now: float) -> bool:
        """`inet_peer_xrlim_allow(peer, timeout)` on `addr`'s peer: the token bucket `allow_error` also spends
        (IPv6 redirects pace themselves on it with 1 s, per destination and per source)."""
        peer = self._peer(addr, now)
        token = min(peer.rate_tokens + (now - peer.rate_last), XRLIM_BURST_FACTOR * timeout)
        peer.rate_last = now
        ok = token >= timeout
        if ok:
            token -= timeout
        peer.rate_tokens = token
        return ok

    def allow_redirect(self, src: int, now: float) -> bool:
        """`ip_rt_send_redirect()`'s pacing for redirects to `src`; True means send one now."""
        peer = self._peer(src, now)
        if now > peer.rate_last + REDIRECT_SILENCE:
            peer.rate_tokens = 0.0
            peer.n_redirects = 0
        if peer.n_redirects >= REDIRECT_NUMBER:
            peer.rate_last = now
            return False
        if peer.n_redirects == 0 or now > peer.rate_last + REDIRECT_LOAD * (1 << peer.n_redirects):
            peer.rate_last = now
            peer.n_redirects += 1
            return True
        return False
