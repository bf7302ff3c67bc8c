"""The neighbour layer's vocabulary: NUD states, parameters, entries, and ARP requests on the wire.

What engine/neigh.py's `NeighTable` is made of (include/net/neighbour.h, include/uapi/linux/neighbour.h,
net/ipv4/arp.c's `arp_solicit`).

The NUD state machine, with the default parameters (`NeighParms`):

===========  =====================================================  =======================================
state        left by                                                to
===========  =====================================================  =======================================
(none)       a packet (`__neigh_event_send`)                        INCOMPLETE, broadcast request now
INCOMPLETE   reply (`neigh_update`)                                 REACHABLE, queued items released
INCOMPLETE   request from it / broadcast reply                      STALE → DELAY (the released items use it)
INCOMPLETE   timer, 3 broadcast requests 1 s apart sent             FAILED at 3 s, queued items returned
REACHABLE    timer at confirmed + reachable_time (30 s)             STALE (DELAY if used in the last 5 s)
STALE        a packet uses it (`__neigh_event_send`)                DELAY, timer 5 s
DELAY        reply (`neigh_update`)                                 REACHABLE
DELAY        timer at 5 s, not confirmed                            PROBE, 3 unicast requests 1 s apart
PROBE        reply                                                  REACHABLE
PROBE        timer, 3 unicast requests sent                         FAILED (its queue is empty)
FAILED       a packet                                               INCOMPLETE again (resolution restarts)
PERMANENT    nothing (static entries from the host model)           -
===========  =====================================================  =======================================

"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, NamedTuple, TypeVar

from natbox.conntrack.tuple import format_addr
from natbox.engine.routing import RTN_LOCAL
from natbox.wire import arp, ethernet

if TYPE_CHECKING:
    from natbox.engine.host import Interface
    from natbox.engine.routing import Fib

__all__ = [
    "GC_FORCED_MIN_AGE",
    "NUD_CONNECTED",
    "NUD_IN_TIMER",
    "NUD_VALID",
    "REACH_RERANDOM_INTERVAL",
    "SKB_TRUESIZE_MIN",
    "STATE_NAMES",
    "TIMER_MIN",
    "ArpRequest",
    "NeighEntry",
    "NeighParms",
    "NeighView",
    "Nud",
    "arp_solicit_saddr",
    "build_arp_solicit",
    "format_ip_neigh",
    "skb_truesize",
]

T = TypeVar("T")


class Nud(enum.IntFlag):
    """`NUD_*` (include/uapi/linux/neighbour.h): the values are the kernel's."""

    NONE = 0x00
    INCOMPLETE = 0x01
    REACHABLE = 0x02
    STALE = 0x04
    DELAY = 0x08
    PROBE = 0x10
    FAILED = 0x20
    NOARP = 0x40
    PERMANENT = 0x80


# plain ints for the per-packet paths (include/net/neighbour.h)
_INCOMPLETE: Final = int(Nud.INCOMPLETE)
_REACHABLE: Final = int(Nud.REACHABLE)
_STALE: Final = int(Nud.STALE)
_DELAY: Final = int(Nud.DELAY)
_PROBE: Final = int(Nud.PROBE)
_FAILED: Final = int(Nud.FAILED)
_NOARP: Final = int(Nud.NOARP)
_PERMANENT: Final = int(Nud.PERMANENT)
NUD_IN_TIMER: Final = _INCOMPLETE | _REACHABLE | _DELAY | _PROBE
NUD_VALID: Final = _PERMANENT | _NOARP | _REACHABLE | _PROBE | _STALE | _DELAY
NUD_CONNECTED: Final = _PERMANENT | _NOARP | _REACHABLE

STATE_NAMES: Final = {int(s): s.name or "NONE" for s in Nud}

TIMER_MIN: Final = 0.01  # HZ/100: the shortest re-arm of a neighbour timer (neigh_timer_handler, __neigh_event_send)
GC_FORCED_MIN_AGE: Final = 5.0  # neigh_forced_gc keeps entries updated within the last 5 s; and runs at most every 5 s
REACH_RERANDOM_INTERVAL: Final = 300.0  # neigh_periodic_work re-draws reachable_time every 300 s
# SKB_TRUESIZE(0) on x86_64 6.x: SKB_DATA_ALIGN(sizeof(struct sk_buff)) 256 + SKB_DATA_ALIGN(sizeof(struct
# skb_shared_info)) 320. SK_WMEM_MAX = SKB_TRUESIZE(256) * 256 = 212992 is where unres_qlen_bytes comes from.
SKB_TRUESIZE_MIN: Final = 576


def skb_truesize(length: int) -> int:
    """`SKB_TRUESIZE(length)`: what an skb of `length` bytes is charged against `unres_qlen_bytes`.

    The kernel charges `skb->truesize`, which depends on how the driver allocated the buffer (a page
    fragment of 2 KiB or more for most NICs); this is the lower bound the default limit is derived from.
    """
    return max(length, 0) + SKB_TRUESIZE_MIN


@dataclass(frozen=True, slots=True)
class NeighParms:
    """`struct neigh_parms` for ARP: the `net.ipv4.neigh.default.*` sysctls (arp_tbl in net/ipv4/arp.c).

    Times are seconds. The table-wide gc thresholds are `net.ipv4.neigh.default.gc_thresh1..3`.
    """

    base_reachable_time: float = 30.0  # base_reachable_time_ms 30000
    retrans_time: float = 1.0  # retrans_time_ms 1000
    delay_first_probe_time: float = 5.0  # delay_first_probe_time 5
    gc_stale_time: float = 60.0  # gc_stale_time 60
    locktime: float = 1.0  # locktime (1 s): a second, different reply within it is ignored
    mcast_solicit: int = 3  # broadcast requests while INCOMPLETE
    ucast_solicit: int = 3  # unicast requests in PROBE
    app_solicit: int = 0  # requests to a user-space daemon (netlink); not sent by natbox
    mcast_resolicit: int = 0  # broadcast requests in PROBE after the unicast ones
    unres_qlen_bytes: int = 212992  # SK_WMEM_MAX: bytes (truesize) queued per INCOMPLETE entry
    gc_thresh1: int = 128  # below this many entries the periodic gc removes nothing
    gc_thresh2: int = 512  # above this, creation runs a forced gc at most every 5 s
    gc_thresh3: int = 1024  # hard bound on dynamic entries: creation fails when a forced gc frees nothing

    @property
    def gc_interval(self) -> float:
        """neigh_periodic_work runs every BASE_REACHABLE_TIME/2."""
        return self.base_reachable_time / 2


class ArpRequest(NamedTuple):
    """One ARP request to send (what `neigh_probe` → `arp_solicit` would transmit).

    `dst_mac` None means broadcast (INCOMPLETE, or PROBE's multicast re-solicits); a MAC means a unicast
    probe to the cached address (PROBE). `saddr` is the IPv4 source of the newest queued packet
    (`skb_peek_tail(&neigh->arp_queue)`), 0 when none: `arp_solicit_saddr` turns it into the sender IP.
    """

    dev: str
    target: int
    dst_mac: bytes | None
    saddr: int


class NeighView(NamedTuple):
    """One line of `ip neigh show`."""

    dev: str
    addr: int
    mac: bytes | None  # None unless the state is NUD_VALID (neigh_fill_info puts NDA_LLADDR only then)
    state: str


class NeighEntry(Generic[T]):
    """`struct neighbour` (the fields the state machine uses)."""

    __slots__ = ("addr", "confirmed", "dev", "ha", "probes", "qbytes", "queue", "state", "timer", "updated",
                 "used")

    def __init__(self, dev: str, addr: int, now: float, base_reachable: float) -> None:
        self.dev = dev
        self.addr = addr
        self.state = 0  # NUD_NONE
        self.ha = b""  # neigh->ha; meaningful only in NUD_VALID states
        self.updated = now
        self.used = now
        self.confirmed = now - 2 * base_reachable  # ___neigh_create: long ago
        self.probes = 0
        self.timer: float | None = None
        # arp_queue: (item, charged size, IPv4 source of the item), bounded by unres_qlen_bytes
        self.queue: deque[tuple[T, int, int]] = deque()
        self.qbytes = 0



def format_ip_neigh(views: Iterable[NeighView]) -> list[str]:
    """`ip neigh show` lines: `10.0.0.2 dev eth0 lladdr 02:00:0a:00:00:02 REACHABLE`, `… dev eth0 FAILED`."""
    out: list[str] = []
    for v in views:
        ll = f" lladdr {ethernet.mac_to_str(v.mac)}" if v.mac is not None else ""
        out.append(f"{format_addr(v.addr)} dev {v.dev}{ll} {v.state}")
    return out


# --- the ARP request on the wire ----------------------------------------------------------------------

def arp_solicit_saddr(req: ArpRequest, dev: Interface, fib: Fib, *, arp_announce: int = 0) -> int:
    """The sender IP of the request: `arp_solicit()`'s choice under `arp_announce`
    (IN_DEV_ARP_ANNOUNCE = max(conf.all, conf.DEV)).

    0: the queued packet's source if it is a local address of this host (`inet_addr_type_dev_table` is
    RTN_LOCAL; any device); 1: the same, only if some subnet of `dev` holds both it and the target
    (`inet_addr_onlink`); 2 and otherwise: `inet_select_addr(dev, target, RT_SCOPE_LINK)`, the primary
    address of `dev` in the target's subnet, else its first primary, else one from another device.
    0.0.0.0 if the host has no address at all (the kernel then sends the request from 0.0.0.0).
    """
    saddr = req.saddr
    if saddr and arp_announce <= 1 and fib.addr_type(saddr) == RTN_LOCAL:
        if arp_announce == 0 or any(a.contains(req.target) and a.contains(saddr) for a in dev.addresses):
            return saddr
    chosen = fib.select_addr(dev.name, req.target)
    return chosen or 0


def build_arp_solicit(req: ArpRequest, src_mac: bytes, sender_ip: int) -> bytes:
    """The Ethernet frame of an ARP request (`arp_send_dst(ARPOP_REQUEST, ...)` → `arp_create`):
    to broadcast or to the cached MAC (`req.dst_mac`), target MAC zero, who-has `req.target` tell
    `sender_ip`. Not padded (the NIC pads to 60 bytes; veth and TAP do not)."""
    dst = req.dst_mac if req.dst_mac is not None else ethernet.BROADCAST
    payload = arp.build_arp_request(src_mac, sender_ip, req.target)
    return bytes(ethernet.build_ethernet(dst, src_mac, ethernet.ETH_P_ARP, payload))
