"""The model of a Linux host: interfaces, addresses, routes, neighbours and sysctls.

This is the data `ip -j addr`, `ip -j route show table all`, `ip neigh` and `sysctl` show. It is plain
data with validation; `natbox.engine.routing` derives the kernel's local and main routing tables from
it exactly as the kernel does when addresses are added (`fib_add_ifaddr`): a local route per address,
broadcast routes for the subnet's broadcast address, and a connected route for the prefix.

Loading from TOML files or snapshot directories lives in `natbox.hostfile` (I/O is not done here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.tuple import format_addr
from natbox.errors import ConfigError

__all__ = ["Address", "Address6", "Host", "HostError", "Interface", "Neighbour", "Route", "Route6"]

LOOPBACK_NET: Final = 0x7F000000  # 127.0.0.0/8


def _scope6(addr: int) -> int:
    """The order of `addr_list` (`ipv6_addr_src_scope`, larger first): global 0, link-local 1, host 2."""
    if addr == 1:
        return 2
    return 1 if addr >> 118 == 0x3FA else 0
DEFAULT_MTU: Final = 1500


class HostError(ConfigError):
    """A host model that is inconsistent (an unknown device in a route, a duplicate interface...)."""


@dataclass(slots=True)
class Address:
    """One IPv4 address on an interface (`struct in_ifaddr`)."""

    addr: int
    prefixlen: int
    secondary: bool = False  # IFA_F_SECONDARY: a second address in an already-covered subnet
    scope: str = "global"  # global, link, host

    @property
    def mask(self) -> int:
        return (0xFFFFFFFF << (32 - self.prefixlen)) & 0xFFFFFFFF if self.prefixlen else 0

    @property
    def network(self) -> int:
        return self.addr & self.mask

    @property
    def broadcast(self) -> int:
        return self.network | (~self.mask & 0xFFFFFFFF)

    def contains(self, addr: int) -> bool:
        return (addr & self.mask) == self.network

    def __str__(self) -> str:
        return f"{format_addr(self.addr)}/{self.prefixlen}"


@dataclass(slots=True)
class Address6:
    """One IPv6 address on an interface (`struct inet6_ifaddr`, ipv6-semantics.md §3.5)."""

    addr: int
    prefixlen: int
    tentative: bool = False  # IFA_F_TENTATIVE (DAD not done; unusable as a source); `nodad` addresses never are
    deprecated: bool = False  # preferred_lft 0

    @property
    def mask(self) -> int:
        return ((1 << 128) - 1) ^ ((1 << (128 - self.prefixlen)) - 1)

    def contains(self, addr: int) -> bool:
        return not (addr ^ self.addr) & self.mask

    def __str__(self) -> str:
        return f"{format_addr(self.addr)}/{self.prefixlen}"


@dataclass(slots=True)
class Interface:
    """A network device (`struct net_device` + `struct in_device`)."""

    name: str
    mac: bytes = b"\x00" * 6
    mtu: int = DEFAULT_MTU
    kind: str = "ether"  # ether, loopback, tap, veth, bridge
    up: bool = True
    addresses: list[Address] = field(default_factory=list)
    route_localnet: bool = False  # net.ipv4.conf.<dev>.route_localnet
    forwarding: bool | None = None  # net.ipv4.conf.<dev>.forwarding; None = follow ip_forward
    index: int = 0
    # IPv6 addresses in the kernel's `addr_list` order: by scope, global first, a new address before the
    # existing ones of its scope (Host.add_address6), so the newest global address is first (IPv6 §3.5)
    addresses6: list[Address6] = field(default_factory=list)
    # `ip link set DEV master BR`: the bridge this device is a port of (its frames go to the bridge,
    # net/bridge/br_input.c `br_handle_frame`); None for a device that is no bridge port
    master: str | None = None

    @property
    def primary_addresses(self) -> list[Address]:
        return [a for a in self.addresses if not a.secondary]


@dataclass(slots=True)
class Route:
    """One route (`ip route`), in table "main" unless said otherwise."""

    dst: int
    prefixlen: int
    dev: str | None = None
    gateway: int | None = None
    metric: int = 0
    prefsrc: int | None = None
    table: str = "main"
    type: str = "unicast"  # unicast, local, broadcast, blackhole, unreachable, prohibit, throw
    scope: str = "global"
    proto: str = "static"

    @property
    def mask(self) -> int:
        return (0xFFFFFFFF << (32 - self.prefixlen)) & 0xFFFFFFFF if self.prefixlen else 0

    def __str__(self) -> str:
        dst = "default" if self.prefixlen == 0 else f"{format_addr(self.dst)}/{self.prefixlen}"
        via = f" via {format_addr(self.gateway)}" if self.gateway is not None else ""
        dev = f" dev {self.dev}" if self.dev else ""
        return f"{self.type} {dst}{via}{dev} table {self.table}"


@dataclass(slots=True)
class Route6:
    """One IPv6 route (`ip -6 route`): the kernel's default metric is 1024 (256 for connected prefixes)."""

    dst: int
    prefixlen: int
    dev: str | None = None
    gateway: int | None = None
    metric: int = 1024
    type: str = "unicast"  # unicast, blackhole, unreachable, prohibit
    prefsrc: int | None = None

    @property
    def mask(self) -> int:
        return ((1 << 128) - 1) ^ ((1 << (128 - self.prefixlen)) - 1)

    def __str__(self) -> str:
        dst = "default" if self.prefixlen == 0 else f"{format_addr(self.dst)}/{self.prefixlen}"
        via = f" via {format_addr(self.gateway)}" if self.gateway is not None else ""
        dev = f" dev {self.dev}" if self.dev else ""
        return f"{self.type} {dst}{via}{dev}"


@dataclass(slots=True)
class Neighbour:
    """A static or learned neighbour entry (`ip neigh`), of either family: an IPv6 address does not fit 32 bits
    (IPv6 neighbours are link-local or global unicast, never in ::/96).

    `permanent`: the kernel's PERMANENT or NOARP entry (host files list only these); False for one the kernel
    had learned (REACHABLE, STALE, DELAY, PROBE in a snapshot), which the engine starts as a learned STALE entry
    that ages and re-resolves as the kernel's would."""

    dev: str
    addr: int
    mac: bytes
    permanent: bool = True

    @property
    def ipv6(self) -> bool:
        return self.addr > 0xFFFFFFFF


@dataclass
class Host:
    """A Linux host: what natbox needs to route and NAT like it."""

    name: str = "host"
    interfaces: dict[str, Interface] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    neighbours: list[Neighbour] = field(default_factory=list)
    ip_forward: bool = False  # net.ipv4.ip_forward (Linux default 0)
    conntrack: ConntrackConfig = field(default_factory=ConntrackConfig)
    rules_text: str = ""  # the ruleset, as iptables-save text
    rules_origin: str = "<rules>"  # where rules_text came from, for error messages
    sysctls: dict[str, str] = field(default_factory=dict)  # every sysctl as given, for snapshots
    routes6: list[Route6] = field(default_factory=list)
    ipv6_forward: bool = False  # net.ipv6.conf.all.forwarding (IPv6 §1.3)
    rules6_text: str = ""  # the ip6tables ruleset, as ip6tables-save text
    # net.bridge.bridge-nf-call-iptables: bridged IPv4 frames traverse the IPv4 hooks (br_netfilter); the
    # kernel's default is 1 (brnf_init_net), and it is 1 in a fresh namespace once br_netfilter is loaded
    bridge_nf_call_iptables: bool = True

    def add_interface(self, iface: Interface) -> Interface:
        if iface.name in self.interfaces:
            raise HostError(f"interface {iface.name!r} defined twice")
        if not iface.index:
            iface.index = len(self.interfaces) + 1
        self.interfaces[iface.name] = iface
        return iface

    def add_address(self, dev: str, addr: int, prefixlen: int) -> Address:
        """`ip addr add`: a second address in a subnet the device already has becomes secondary."""
        iface = self.interface(dev)
        if not 0 <= prefixlen <= 32:
            raise HostError(f"{dev}: bad prefix length {prefixlen}")
        new = Address(addr, prefixlen)
        new.secondary = any(a.prefixlen == prefixlen and a.contains(addr) for a in iface.addresses)
        iface.addresses.append(new)
        return new

    def add_address6(self, dev: str, addr: int, prefixlen: int, *, tentative: bool = False,
                     deprecated: bool = False) -> Address6:
        """`ip -6 addr add ... nodad`: the address goes before the existing ones of its scope
        (`ipv6_link_dev_addr`: addr_list is sorted by scope, global first, newest first within it)."""
        iface = self.interface(dev)
        if not 0 <= prefixlen <= 128 or not 0 <= addr < 1 << 128:
            raise HostError(f"{dev}: bad IPv6 address or prefix length {prefixlen}")
        new = Address6(addr, prefixlen, tentative=tentative, deprecated=deprecated)
        scope = _scope6(addr)
        pos = next((i for i, a in enumerate(iface.addresses6) if _scope6(a.addr) >= scope), len(iface.addresses6))
        iface.addresses6.insert(pos, new)
        return new

    def bridge_ports(self, bridge: str) -> list[Interface]:
        """The ports of `bridge` (`ip link show master BR`), in interface order."""
        return [i for i in self.interfaces.values() if i.master == bridge]

    def interface(self, name: str) -> Interface:
        try:
            return self.interfaces[name]
        except KeyError:
            raise HostError(f"no such interface {name!r}") from None

    def ensure_loopback(self) -> Interface:
        """Every host has `lo` with 127.0.0.1/8."""
        lo = self.interfaces.get("lo")
        if lo is None:
            lo = Interface("lo", kind="loopback", mtu=65536, addresses=[Address(0x7F000001, 8, scope="host")],
                           addresses6=[Address6(1, 128)])
            self.interfaces = {"lo": lo, **self.interfaces}
            for i, iface in enumerate(self.interfaces.values(), start=1):
                iface.index = i
        return lo

    def validate(self) -> None:
        for route in self.routes:
            if route.dev is not None and route.dev not in self.interfaces:
                raise HostError(f"route {route}: no such interface {route.dev!r}")
            if route.dst & ~route.mask & 0xFFFFFFFF:
                raise HostError(f"route {route}: destination has host bits set")
        for iface in self.interfaces.values():
            if iface.master is not None:
                br = self.interfaces.get(iface.master)
                if br is None or br.kind != "bridge":
                    raise HostError(f"interface {iface.name!r}: master {iface.master!r} is not a bridge")
                if iface.kind in ("bridge", "loopback"):
                    raise HostError(f"interface {iface.name!r}: a {iface.kind} cannot be a bridge port")
        for n in self.neighbours:
            if n.dev not in self.interfaces:
                raise HostError(f"neighbour {format_addr(n.addr)}: no such interface {n.dev!r}")
