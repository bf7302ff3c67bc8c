"""IPv4 routing as the kernel does it: the local and main tables, input and output decisions (§1.2, §5.2, §5.3).

The FIB is derived from the host model the way `fib_add_ifaddr()` (net/ipv4/fib_frontend.c) fills it
when addresses are configured, plus the host's own routes:

- table local: `local <addr>` for every address, `broadcast <subnet broadcast>` and `broadcast <network>`
  for prefixes shorter than /31, and `local 127.0.0.0/8 dev lo`;
- table main: a connected route (scope link, `proto kernel`) for each primary address's prefix, then the
  configured routes.

Lookups follow `fib_lookup()` with the default rules (local, then main): longest prefix, then lowest
metric, and skip routes whose device is down. Results are `FibResult`s naming the route type (RTN_*),
the device and the next hop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

from natbox.engine.host import Host, Route

__all__ = [
    "RTCF_LOCAL",
    "RTN_BLACKHOLE",
    "RTN_BROADCAST",
    "RTN_LOCAL",
    "RTN_MULTICAST",
    "RTN_PROHIBIT",
    "RTN_UNICAST",
    "RTN_UNREACHABLE",
    "Fib",
    "FibResult",
]

# `enum rtn_type` (uapi rtnetlink.h), the values -m addrtype uses as bit numbers (§5.3).
RTN_UNSPEC: Final = 0
RTN_UNICAST: Final = 1
RTN_LOCAL: Final = 2
RTN_BROADCAST: Final = 3
RTN_ANYCAST: Final = 4
RTN_MULTICAST: Final = 5
RTN_BLACKHOLE: Final = 6
RTN_UNREACHABLE: Final = 7
RTN_PROHIBIT: Final = 8
RTN_THROW: Final = 9

_TYPES: Final = {
    "unicast": RTN_UNICAST,
    "local": RTN_LOCAL,
    "broadcast": RTN_BROADCAST,
    "multicast": RTN_MULTICAST,
    "blackhole": RTN_BLACKHOLE,
    "unreachable": RTN_UNREACHABLE,
    "prohibit": RTN_PROHIBIT,
    "throw": RTN_THROW,
}


# include/uapi/linux/in_route.h: an output route out lo (`__mkroute_output` sets it when the device is a
# loopback one), whose dst.input is then `ip_local_deliver`
RTCF_LOCAL: Final = 0x80000000

FIB_CACHE_MAX: Final = 4096  # destinations whose routing decision Fib.lookup keeps (emptied when full)


class FibResult(NamedTuple):
    """A routing decision: the route's type, device, next hop (gateway or the destination), and the route.

    Immutable; a NamedTuple rather than a frozen dataclass because one is made per routed packet."""

    type: int
    dev: str | None
    nexthop: int
    route: Route


@dataclass(frozen=True, slots=True)
class _Entry:
    prefixlen: int
    network: int
    mask: int
    metric: int
    type: int
    route: Route


class Fib:
    """The local and main routing tables of a host, rebuilt whenever the host model changes."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.local: list[_Entry] = []
        self.main: list[_Entry] = []
        self.default: list[_Entry] = []
        self._local_addrs: dict[int, str] = {}
        self.generation = 0  # bumped by every rebuild: cached routing decisions compare it
        # lookup's answers since the last rebuild, by destination (see `lookup`), at most FIB_CACHE_MAX
        self._answers: dict[int, FibResult] = {}
        self.rebuild()

    # --- construction --------------------------------------------------------------------------

    def rebuild(self) -> None:
        """Recompute both tables from the host's interfaces, addresses and routes."""
        self.generation += 1
        self._answers = {}
        local: list[Route] = []
        main: list[Route] = []
        self._local_addrs = {}
        for iface in self.host.interfaces.values():
            for a in iface.addresses:
                self._local_addrs.setdefault(a.addr, iface.name)
                if iface.kind == "loopback" and a.prefixlen < 32:
                    # `local 127.0.0.0/8 dev lo`: the whole prefix is local on lo
                    local.append(Route(a.network, a.prefixlen, iface.name, table="local", type="local",
                                       scope="host", proto="kernel", prefsrc=a.addr))
                local.append(Route(a.addr, 32, iface.name, table="local", type="local", scope="host",
                                   proto="kernel", prefsrc=a.addr))
                if a.prefixlen < 31 and iface.kind != "loopback":
                    local.append(Route(a.broadcast, 32, iface.name, table="local", type="broadcast",
                                       scope="link", proto="kernel", prefsrc=a.addr))
                    if not a.secondary:
                        main.append(Route(a.network, a.prefixlen, iface.name, scope="link", proto="kernel",
                                          prefsrc=a.addr))
                elif not a.secondary and iface.kind != "loopback" and a.prefixlen < 32:
                    main.append(Route(a.network, a.prefixlen, iface.name, scope="link", proto="kernel",
                                      prefsrc=a.addr))
        default: list[Route] = []
        for r in self.host.routes:
            # the default rules look up local, main, then default; other tables need `ip rule`s (not
            # modelled), so their routes are kept in the host model but never consulted
            {"local": local, "main": main, "default": default}.get(r.table, []).append(r)
        self.local = [self._entry(r) for r in local]
        self.main = [self._entry(r) for r in main]
        # longest prefix first, then lowest metric (fib_table_lookup's order)
        self.local.sort(key=lambda e: (-e.prefixlen, e.metric))
        self.main.sort(key=lambda e: (-e.prefixlen, e.metric))
        self.default = sorted((self._entry(r) for r in default), key=lambda e: (-e.prefixlen, e.metric))

    @staticmethod
    def _entry(r: Route) -> _Entry:
        return _Entry(r.prefixlen, r.dst & r.mask, r.mask, r.metric, _TYPES.get(r.type, RTN_UNICAST), r)

    # --- lookups -------------------------------------------------------------------------------

    def is_local(self, addr: int) -> bool:
        """True if `addr` is one of the host's addresses or in 127/8 (a `local` route)."""
        e = self._lookup(self.local, addr)
        return e is not None and e.type == RTN_LOCAL

    def local_device(self, addr: int) -> str | None:
        """The device an exact local address is configured on."""
        return self._local_addrs.get(addr)

    def _lookup(self, table: list[_Entry], addr: int) -> _Entry | None:
        ifaces = self.host.interfaces
        for e in table:
            if (addr & e.mask) == e.network:
                dev = e.route.dev
                if dev is not None and not ifaces[dev].up:
                    continue
                return e
        return None

    def lookup(self, daddr: int) -> FibResult | None:
        """`fib_lookup()` with the default rules: local, main, default. None means no route (ENETUNREACH).

        Every packet the slow path routes asks this, so an answer is kept (until the next rebuild) when no
        route was passed over for its device being down: it stays the first route that matches as long as
        its own device is up, which is checked on each use (a device's `up` may change without a rebuild).
        """
        ifaces = self.host.interfaces
        hit = self._answers.get(daddr)
        if hit is not None:
            name = hit.dev
            if name is None:
                return hit
            dev = ifaces.get(name)
            if dev is not None and dev.up:
                return hit
        skipped = False
        for table in (self.local, self.main, self.default):
            for e in table:
                if (daddr & e.mask) == e.network:
                    route = e.route
                    if route.dev is not None and not ifaces[route.dev].up:
                        skipped = True
                        continue
                    gw = route.gateway
                    res = FibResult(e.type, route.dev, gw if gw is not None else daddr, route)
                    if not skipped:
                        answers = self._answers
                        if len(answers) >= FIB_CACHE_MAX:
                            answers.clear()
                        answers[daddr] = res
                    return res
        return None

    def addr_type(self, addr: int, dev: str | None = None) -> int:
        """`inet_dev_addr_type()` (§5.3): BROADCAST for 0.0.0.0 and 255.255.255.255, MULTICAST for 224/4,
        otherwise the local table's type (LOCAL, BROADCAST), else UNICAST. With `dev`, a local-table
        answer counts only if its route is on that device. `ipv4_is_zeronet` is 0.0.0.0 alone since Linux
        5.3 (§5.3 says 0/8): [V] 6.18, `-m addrtype` calls 0.1.2.3 UNICAST, 0.0.0.0 BROADCAST."""
        if addr in (0, 0xFFFFFFFF):
            return RTN_BROADCAST
        if addr >> 28 == 0xE:
            return RTN_MULTICAST
        e = self._lookup(self.local, addr)
        if e is None:
            return RTN_UNICAST
        if dev is not None and e.route.dev != dev:
            return RTN_UNICAST
        return e.type

    def select_addr(self, dev: str, dst: int) -> int | None:
        """`inet_select_addr(dev, dst, RT_SCOPE_UNIVERSE)` (§5.2): the first primary address of `dev`
        whose subnet holds `dst`, else its first primary address, else an address of another device
        (lo first). Host-scoped addresses (127/8) are skipped."""
        iface = self.host.interfaces.get(dev)
        if iface is not None:
            first = None  # the first primary address that is not host-scoped
            for a in iface.addresses:
                if a.secondary or a.scope == "host":
                    continue
                if dst and a.contains(dst):
                    return a.addr
                if first is None:
                    first = a.addr
            if first is not None:
                return first
        for other in self.host.interfaces.values():
            if other.name == dev:
                continue
            for a in other.primary_addresses:
                if a.scope != "host":
                    return a.addr
        return None
