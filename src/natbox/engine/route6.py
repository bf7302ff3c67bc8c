"""IPv6 routing for the host model: the fib6 lookup, own-address tests, multicast membership and
`ipv6_dev_get_saddr` (net/ipv6/route.c, addrconf.c; ipv6-semantics.md §1.2, §3.5, §4.1).

Routes come from the host model: a local route per own address, a connected route (metric 256) per
address prefix of an up interface, fe80::/64 on every up interface with an IPv6 address, and the
`Host.routes6` (default metric 1024). Longest prefix wins, then the lowest metric, then the earliest.
A unicast route out a loopback device for a prefix other than ::1 is a reject route (`fib6_is_reject`).
Rebuilt with `rebuild()` whenever the model changes (generation bumped, as the IPv4 Fib does).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from natbox.engine.host import Address6, Host, Interface, Route6
from natbox.wire.ipv6 import (
    SCOPE_LINKLOCAL,
    addr_scope,
    is_link_local,
    is_multicast,
    is_v4mapped,
    solicited_node,
)

__all__ = ["ALL_NODES", "ALL_ROUTERS", "RTF_REJECT", "Fib6", "Fib6Result", "ipv6_addr_label"]

ALL_NODES: Final = 0xFF02_0000_0000_0000_0000_0000_0000_0001  # ff02::1
ALL_ROUTERS: Final = 0xFF02_0000_0000_0000_0000_0000_0000_0002  # ff02::2
_M128: Final = (1 << 128) - 1
LINK_LOCAL_PREFIX: Final = 0xFE80 << 112
RTN_UNICAST, RTN_LOCAL, RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT = 1, 2, 6, 7, 8
RTF_REJECT: Final = 0x0200  # include/uapi/linux/ipv6_route.h
LOOPBACK6: Final = 1  # ::1
_TYPES: Final = {"unicast": RTN_UNICAST, "local": RTN_LOCAL, "blackhole": RTN_BLACKHOLE, "unreachable": RTN_UNREACHABLE,
          "prohibit": RTN_PROHIBIT}

# the default `ip addrlabel` table (IPv6 §3.5 rule 6): (prefix, length, label), longest prefix first
_LABELS: Final = sorted([
    (1, 128, 0), (0, 0, 1), (0x2002 << 112, 16, 2), (0, 96, 3), (0xFFFF << 32, 96, 4), (0xFC << 120, 7, 5),
    (0x2001 << 112, 32, 6), (0x2001_0010 << 96, 28, 7), (0xFEC0 << 112, 10, 11), (0x3FFE << 112, 16, 12),
], key=lambda e: -e[1])


def _mask(plen: int) -> int:
    return _M128 ^ ((1 << (128 - plen)) - 1)


def ipv6_addr_label(addr: int) -> int:
    """`ipv6_addr_label()` with the default table."""
    for prefix, plen, label in _LABELS:
        if not (addr ^ prefix) & _mask(plen):
            return label
    return 1


def _common_prefix(a: int, b: int) -> int:
    x = a ^ b
    return 128 - x.bit_length()


class Fib6Result(NamedTuple):
    """A routing decision: type (RTN_*), device, next hop (the gateway, or the destination), the route, and
    whether it is a unicast route Linux made a reject route (`fib6_is_reject`: RTF_REJECT on a route of type
    RTN_UNICAST, whose dst has no error and whose dst.input / dst.output are `ip6_pkt_discard` /
    `ip6_pkt_discard_out`: ICMPv6 no-route for what meets it, after LOCAL_OUT for a packet the host sends)."""

    type: int
    dev: str | None
    nexthop: int
    route: Route6 | None
    reject: bool


class Fib6:
    """The IPv6 tables of a host (see the module docstring)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.generation = 0
        # (plen, network, mask, metric, route, reject: fib6_is_reject's answer)
        self._routes: list[tuple[int, int, int, int, Route6, bool]] = []
        self._local: dict[int, str] = {}
        self.rebuild()

    def rebuild(self) -> None:
        """Recompute the tables from the host's interfaces, addresses and routes."""
        self.generation += 1
        routes: list[Route6] = []
        self._local = {}
        for iface in self.host.interfaces.values():
            if not iface.up:
                continue
            for a in iface.addresses6:
                self._local.setdefault(a.addr, iface.name)
                if iface.kind != "loopback" and a.prefixlen < 128:
                    routes.append(Route6(a.addr & _mask(a.prefixlen), a.prefixlen, iface.name, metric=256))
            if iface.addresses6 and iface.kind != "loopback":
                routes.append(Route6(LINK_LOCAL_PREFIX, 64, iface.name, metric=256))
        for r in self.host.routes6:
            dev = self.host.interfaces.get(r.dev) if r.dev else None
            if r.dev is not None and (dev is None or not dev.up):
                continue
            routes.append(r)
        self._routes = sorted(((r.prefixlen, r.dst & _mask(r.prefixlen), _mask(r.prefixlen), r.metric, r,
                                self._is_reject(r)) for r in routes), key=lambda e: (-e[0], e[3]))

    def _is_reject(self, r: Route6) -> bool:
        """Mirrors `fib6_is_reject()` (net/ipv6/route.c, as `ip6_route_info_create` and `fib6_nh_init` apply
        it): a route out a loopback device to anything but ::1 (its prefix's `ipv6_addr_type` is not
        IPV6_ADDR_LOOPBACK), not local, becomes a reject route through lo (measured on 6.18: `ip -6 route add
        fd00:99::/64 dev lo`; a datagram sent to fd00:99::5 passes OUTPUT, not POSTROUTING, and an ICMPv6
        destination unreachable, code 0 (no route), comes back; Ip6OutNoRoutes 1)."""
        dev = self.host.interfaces.get(r.dev) if r.dev else None
        return (r.type == "unicast" and dev is not None and dev.kind == "loopback"
                and not (r.dst == LOOPBACK6 and r.prefixlen == 128))

    def lookup_via(self, daddr: int, dev: str) -> Fib6Result | None:
        """`ip6_route_output` with `flowi6_oif` and no source (RT6_LOOKUP_F_IFACE): the longest route through
        `dev` only (nf_dup_ipv6's `--oif`)."""
        for _plen, net, mask, _metric, r, reject in self._routes:
            if (daddr & mask) == net and r.dev == dev:
                rtype = _TYPES.get(r.type, RTN_UNICAST)
                return Fib6Result(rtype, r.dev, r.gateway if r.gateway is not None else daddr, r, reject)
        return None

    def is_local(self, addr: int) -> bool:
        """`ipv6_chk_addr(net, addr, NULL, 0)`: one of the host's addresses (tentative ones too)."""
        return addr in self._local

    def local_device(self, addr: int) -> str | None:
        return self._local.get(addr)

    def joined(self, dev: Interface, addr: int) -> bool:
        """Multicast groups the device listens to: ff02::1 (and ff01::1), ff02::2 on a router, and the
        solicited-node group of each of its addresses."""
        if addr in (ALL_NODES, 0xFF01 << 112 | 1):
            return True
        if addr == ALL_ROUTERS and self.host.ipv6_forward:
            return True
        return any(solicited_node(a.addr) == addr for a in dev.addresses6)

    def lookup(self, daddr: int, dev: str | None = None) -> Fib6Result | None:
        """`fib6_lookup`: the local route of an own address, else the longest matching prefix (a link-local
        destination only on `dev` when one is given). None: no route."""
        local = self._local.get(daddr)
        if local is not None:
            return Fib6Result(RTN_LOCAL, local, daddr, None, False)
        for _plen, net, mask, _metric, r, reject in self._routes:
            if (daddr & mask) != net:
                continue
            if dev is not None and is_link_local(daddr) and r.dev != dev:
                continue
            rtype = _TYPES.get(r.type, RTN_UNICAST)
            nexthop = r.gateway if r.gateway is not None else daddr
            return Fib6Result(rtype, r.dev, nexthop, r, reject)
        return None

    def addr_type(self, addr: int, dev: str | None = None) -> int:
        """`match_lookup_rt6`'s RTN_* answer for -m addrtype (IPv6 §6): LOCAL, MULTICAST, UNREACHABLE (no
        route, an unreachable or prohibit route, or a reject route out lo: RTF_REJECT), else UNICAST."""
        if is_multicast(addr):
            return 5
        if addr in self._local and (dev is None or self._local[addr] == dev):
            return RTN_LOCAL
        res = self.lookup(addr)
        if res is None or res.type in (RTN_UNREACHABLE, RTN_PROHIBIT) or res.reject:
            return RTN_UNREACHABLE
        return RTN_UNICAST

    def ipv6_dev_get_saddr(self, dst_dev: str | None, daddr: int) -> int | None:
        """Mirrors `ipv6_dev_get_saddr()` (IPv6 §3.5, RFC 6724): the source address for `daddr` leaving by
        `dst_dev`. Candidates are every device's addresses (ifindex order, lo first; per device in addr_list
        order) unless `daddr` is multicast or link-local (then only `dst_dev`'s); tentative addresses are
        skipped. The rules compare in order and a tie keeps the earlier candidate."""
        dscope = addr_scope(daddr)
        dlabel = ipv6_addr_label(daddr)
        only_dev = is_multicast(daddr) or dscope <= SCOPE_LINKLOCAL
        best: tuple[int, ...] | None = None
        best_addr: int | None = None
        for iface in sorted(self.host.interfaces.values(), key=lambda i: i.index):
            if not iface.up or (only_dev and iface.name != dst_dev):
                continue
            for a in iface.addresses6:
                if a.tentative or a.addr == 0 or is_multicast(a.addr) or is_v4mapped(a.addr):
                    continue
                score = self._score(a, iface.name == dst_dev, daddr, dscope, dlabel)
                if best is None or score > best:
                    best, best_addr = score, a.addr
        return best_addr

    @staticmethod
    def _score(a: Address6, on_dev: bool, daddr: int, dscope: int, dlabel: int) -> tuple[int, ...]:
        """The candidate's standing under rules 1-8 of `ipv6_get_saddr_eval` (bigger is better)."""
        scope = addr_scope(a.addr)
        # rule 2: the smallest scope >= daddr's; below it, the larger one
        rule2 = (1, -scope) if scope >= dscope else (0, scope)
        prefix = min(_common_prefix(a.addr, daddr), a.prefixlen)
        return (int(a.addr == daddr), *rule2, int(not a.deprecated), int(on_dev),
                int(ipv6_addr_label(a.addr) == dlabel), prefix)

    def first_addr(self, dev: Interface, scope: int | None = None) -> int | None:
        """`nf_nat_redirect_ipv6`'s choice (IPv6 §3.5): the first address of `dev`'s addr_list that is not
        v4-mapped or tentative, of `scope` when given."""
        for a in dev.addresses6:
            if a.tentative or is_v4mapped(a.addr):
                continue
            if scope is not None and addr_scope(a.addr) != scope:
                continue
            return a.addr
        return None

    @staticmethod
    def link_local(dev: Interface) -> int | None:
        """The device's link-local address (ND and beyond-scope errors leave from it)."""
        return next((a.addr for a in dev.addresses6 if is_link_local(a.addr) and not a.tentative), None)

