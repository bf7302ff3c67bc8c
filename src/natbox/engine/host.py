"""The model of a Linux host: interfaces, addresses, routes, neighbours and sysctls.

This is the data `ip -j addr`, `ip -j route show table all`, `ip neigh` and `sysctl` show. It is plain
data with validation; `natbox.engine.routing` derives the kernel's local and main routing tables from
it exactly as the kernel does when addresses are added (`fib_add_ifaddr`): a local route per address,
broadcast routes for the subnet's broadcast address, and a connected route for the prefix.

Loading from TOML files or snapshot directories lives in `natbox.hostfile` (I/O is not done here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.tuple import format_addr
from natbox.errors import ConfigError

__all__ = ["Address", "Host", "HostError", "Interface", "Neighbour", "Route"]

LOOPBACK_NET = 0x7F000000  # 127.0.0.0/8
DEFAULT_MTU = 1500


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
class Neighbour:
    """A static or learned neighbour entry (`ip neigh`)."""

    dev: str
    addr: int
    mac: bytes


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

    def interface(self, name: str) -> Interface:
        try:
            return self.interfaces[name]
        except KeyError:
            raise HostError(f"no such interface {name!r}") from None

    def ensure_loopback(self) -> Interface:
        """Every host has `lo` with 127.0.0.1/8."""
        lo = self.interfaces.get("lo")
        if lo is None:
            lo = Interface("lo", kind="loopback", mtu=65536, addresses=[Address(0x7F000001, 8, scope="host")])
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
        for n in self.neighbours:
            if n.dev not in self.interfaces:
                raise HostError(f"neighbour {format_addr(n.addr)}: no such interface {n.dev!r}")
