"""Lab files: a topology of network namespaces described in TOML, parsed and validated (pure).

```toml
name = "basic"                  # required, [a-z0-9]{1,8}: namespaces are nbx-<name>-<node>
ipv6 = false                    # default false: IPv6 disabled in every node (no RS/DAD noise); true:
                                # IPv6 on, addresses may be IPv6 (fd00::/8, 2001:db8::/32, added `nodad`),
                                # routes too ("default via fd00:1::1" runs `ip -6 route add`)

[[node]]
name = "client"                 # required, [a-z0-9]{1,10}
routes = ["default via 10.0.1.1"]            # `ip route add` arguments
sysctls = { "net.ipv4.ip_forward" = "0" }    # `sysctl -w` in the node

[[node]]
name = "gw"
gateway = true                  # natbox runs here (at most one node)
owned = ["lan0", "wan0"]        # interfaces natbox owns: no kernel addresses allowed on them
host = "basic-gw.toml"          # the natbox host file for this node (relative to the lab file)
gateway_args = []               # extra `natbox gateway` arguments; "{ns:NODE}" becomes NODE's namespace
                                # (e.g. ["--tap-netns", "tap0={ns:vm}/eth0"])

[[bridge]]                      # a Linux bridge inside a node
node = "gw"
name = "br0"
addresses = []

[[tap]]                         # a persistent TAP device (`ip tuntap add`) inside a node
node = "vm"
name = "eth0"
vnet_hdr = true
addresses = ["10.0.2.15/24"]

[[link]]                        # a veth pair between two nodes (or within one)
a = { node = "client", name = "eth0", addresses = ["10.0.1.2/24"] }
b = { node = "gw", name = "lan0", bridge = "br0", mtu = 1500, mac = "02:00:00:00:01:01" }
# an end may also carry offloads = { tso = "off", gso = "off" }   (`ethtool -K`)
```

Only private ranges (10/8, 172.16/12, 192.168/16) and 198.51.100.0/24 are accepted anywhere, so a lab
never routes documentation or public space. Errors are `LabError("file:line: ...")`.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from natbox.errors import ConfigError

__all__ = [
    "ALLOWED_NETS",
    "ALLOWED_NETS6",
    "Bridge",
    "Endpoint",
    "Lab",
    "LabError",
    "Link",
    "Node",
    "Tap",
    "parse_lab_toml",
]

ALLOWED_NETS = tuple(ipaddress.IPv4Network(n) for n in
                     ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "198.51.100.0/24"))
# IPv6 (with `ipv6 = true`): unique local addresses and the documentation prefix, as difftest's scenarios
ALLOWED_NETS6 = tuple(ipaddress.IPv6Network(n) for n in ("fd00::/8", "2001:db8::/32"))
IFNAMSIZ = 16  # interface names are at most 15 characters (IFNAMSIZ - 1)
MAX_NODES = 32  # bounds on one lab's size
MAX_LINKS = 64
_LAB_RE = re.compile(r"^[a-z0-9]{1,8}$")
_NODE_RE = re.compile(r"^[a-z0-9]{1,10}$")
_IF_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_NS_REF = re.compile(r"\{ns:([a-z0-9]{1,10})\}")
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_OFFLOADS = ("rx", "tx", "sg", "tso", "gso", "gro", "lro", "ufo", "tx-checksumming", "rx-checksumming",
             "generic-segmentation-offload", "generic-receive-offload", "tcp-segmentation-offload")
_TOP_KEYS = ("name", "ipv6", "node", "link", "bridge", "tap")
_NODE_KEYS = ("name", "routes", "sysctls", "gateway", "owned", "host", "gateway_args")
_END_KEYS = ("node", "name", "addresses", "mac", "mtu", "bridge", "offloads")
_BRIDGE_KEYS = ("node", "name", "addresses", "mtu")
_TAP_KEYS = ("node", "name", "addresses", "vnet_hdr", "mtu", "mac")


class LabError(ConfigError):
    """A lab file that cannot be used; the message starts with file:line where known."""


@dataclass
class Node:
    name: str
    routes: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    gateway: bool = False
    owned: list[str] = field(default_factory=list)
    host: str | None = None
    gateway_args: list[str] = field(default_factory=list)


@dataclass
class Endpoint:
    node: str
    name: str
    addresses: list[str] = field(default_factory=list)
    mac: str | None = None
    mtu: int | None = None
    bridge: str | None = None
    offloads: dict[str, str] = field(default_factory=dict)


@dataclass
class Link:
    a: Endpoint
    b: Endpoint


@dataclass
class Bridge:
    node: str
    name: str
    addresses: list[str] = field(default_factory=list)
    mtu: int | None = None


@dataclass
class Tap:
    node: str
    name: str
    addresses: list[str] = field(default_factory=list)
    vnet_hdr: bool = False
    mtu: int | None = None
    mac: str | None = None


@dataclass
class Lab:
    name: str
    nodes: dict[str, Node]
    links: list[Link] = field(default_factory=list)
    bridges: list[Bridge] = field(default_factory=list)
    taps: list[Tap] = field(default_factory=list)
    ipv6: bool = False
    filename: str = "<lab>"

    def netns(self, node: str) -> str:
        """The namespace name of `node`: nbx-<lab>-<node>."""
        return f"nbx-{self.name}-{node}"

    def expand(self, arg: str) -> str:
        """Replace each "{ns:NODE}" in `arg` by NODE's namespace name."""
        return _NS_REF.sub(lambda m: self.netns(m.group(1)), arg)

    def gateway_args(self) -> list[str]:
        gw = self.gateway
        return [self.expand(a) for a in gw.gateway_args] if gw is not None else []

    @property
    def gateway(self) -> Node | None:
        return next((n for n in self.nodes.values() if n.gateway), None)

    def interfaces(self, node: str) -> list[str]:
        names = [b.name for b in self.bridges if b.node == node]
        names += [t.name for t in self.taps if t.node == node]
        for link in self.links:
            names += [e.name for e in (link.a, link.b) if e.node == node]
        return names


class _Ctx:
    def __init__(self, text: str, filename: str) -> None:
        self.lines = text.splitlines()
        self.filename = filename

    def error(self, section: str | None, index: int, message: str, key: str | None = None) -> LabError:
        """A LabError at the line of `[[section]]` number `index` (or of `key` inside it)."""
        line = 0
        if section is not None:
            seen = -1
            for i, raw in enumerate(self.lines, start=1):
                if raw.strip().replace(" ", "") == f"[[{section}]]":
                    seen += 1
                    if seen == index:
                        line = i
                        break
        if key is not None:
            for i in range(line, len(self.lines)):
                text = self.lines[i].strip()
                if i > line and text.startswith("["):
                    break
                if re.match(rf"^\"?{re.escape(key)}\"?\s*=", text):
                    line = i + 1
                    break
        where = f"{self.filename}:{line}" if line else self.filename
        what = f"[[{section}]] #{index + 1}: " if section is not None else ""
        return LabError(f"{where}: {what}{message}")


def _check_keys(d: dict[str, Any], known: tuple[str, ...], ctx: _Ctx, section: str | None, i: int) -> None:
    for key in d:
        if key not in known:
            raise ctx.error(section, i, f"unknown key {key!r} (known: {', '.join(known)})", key)


def check_address(text: str) -> str:
    """An `ADDR/PREFIX` inside the allowed ranges, returned normalised; raises ValueError otherwise."""
    if ":" in text:
        iface6 = ipaddress.IPv6Interface(text)
        if "/" not in text:
            raise ValueError(f"{text}: give a prefix length (e.g. {text}/64)")
        if not any(iface6.network.subnet_of(n) for n in ALLOWED_NETS6):
            raise ValueError(f"{text}: only fd00::/8 and 2001:db8::/32 are allowed for IPv6 in a lab")
        return str(iface6)
    iface = ipaddress.IPv4Interface(text)
    if "/" not in text:
        raise ValueError(f"{text}: give a prefix length (e.g. {text}/24)")
    if not any(iface.network.subnet_of(n) for n in ALLOWED_NETS):
        raise ValueError(f"{text}: only private ranges and 198.51.100.0/24 are allowed in a lab")
    return str(iface)


def check_route(text: str) -> str:
    """`ip route add` arguments; every address or prefix in them must be in the allowed ranges."""
    words = text.split()
    if not words:
        raise ValueError("empty route")
    for w in words:
        if ":" in w and re.match(r"^[0-9a-fA-F:.]+(/\d+)?$", w):
            net6 = ipaddress.IPv6Network(w, strict=False)
            if not net6.is_link_local and not any(net6.subnet_of(n) for n in ALLOWED_NETS6):
                raise ValueError(f"{w}: only fd00::/8, 2001:db8::/32 and link-local addresses are allowed for "
                                 "IPv6 in a lab")
            continue
        if w == "default" or not re.match(r"^\d+\.\d+\.\d+\.\d+(/\d+)?$", w):
            continue
        net = ipaddress.IPv4Network(w, strict=False)
        if not any(net.subnet_of(n) for n in ALLOWED_NETS):
            raise ValueError(f"{w}: only private ranges and 198.51.100.0/24 are allowed in a lab")
    return text


def _str_list(v: Any, what: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{what} must be a list of strings")
    return list(v)


def _opt_int(v: Any, what: str, lo: int, hi: int) -> int | None:
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError(f"{what} must be an integer {lo}..{hi}")
    return v


def _ifname(v: Any) -> str:
    if not isinstance(v, str) or not _IF_RE.match(v):
        raise ValueError(f"bad interface name {v!r} (1-15 of A-Z a-z 0-9 _ . -)")
    return v


def _mac(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or not _MAC_RE.match(v):
        raise ValueError(f"bad MAC {v!r}")
    return v.lower()


def _endpoint(d: Any, nodes: dict[str, Node]) -> Endpoint:
    if not isinstance(d, dict):
        raise ValueError("a link end must be a table {node = ..., name = ...}")
    for key in d:
        if key not in _END_KEYS:
            raise ValueError(f"unknown key {key!r} in a link end (known: {', '.join(_END_KEYS)})")
    node = d.get("node")
    if not isinstance(node, str):
        raise ValueError(f"link end: node = {node!r}: must be a node's name (a string)")
    if node not in nodes:
        raise ValueError(f"link end: no such node {node!r}")
    offloads = d.get("offloads", {})
    if not isinstance(offloads, dict):
        raise ValueError("offloads must be a table")
    for k, v in offloads.items():
        if k not in _OFFLOADS or v not in ("on", "off"):
            raise ValueError(f"offload {k} = {v!r}: known offloads {', '.join(_OFFLOADS)}, values on/off")
    bridge = d.get("bridge")
    if bridge is not None:
        bridge = _ifname(bridge)
    return Endpoint(str(node), _ifname(d.get("name")),
                    [check_address(a) for a in _str_list(d.get("addresses", []), "addresses")],
                    _mac(d.get("mac")), _opt_int(d.get("mtu"), "mtu", 68, 65535), bridge, dict(offloads))


def _tables(doc: dict[str, Any], key: str, ctx: _Ctx) -> list[dict[str, Any]]:
    """`[[key]]` entries: a list of tables, or a LabError naming the key."""
    items = doc.get(key, [])
    if not isinstance(items, list) or not all(isinstance(d, dict) for d in items):
        raise ctx.error(None, 0, f"{key} must be written as [[{key}]] tables", key)
    return items


def _node_ref(v: Any, nodes: dict[str, Node]) -> str:
    """A `node = "NAME"` reference to a defined node."""
    if not isinstance(v, str):
        raise ValueError(f"node = {v!r}: must be a node's name (a string)")
    if v not in nodes:
        raise ValueError(f"no such node {v!r}")
    return v


def parse_lab_toml(text: str, filename: str = "<lab>") -> Lab:
    """Parse and validate a lab file. Raises LabError naming file:line on any problem."""
    ctx = _Ctx(text, filename)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LabError(f"{filename}: TOML syntax error: {exc}") from None
    _check_keys(doc, _TOP_KEYS, ctx, None, 0)
    name = doc.get("name")
    if not isinstance(name, str) or not _LAB_RE.match(name):
        raise ctx.error(None, 0, "name must be 1-8 of a-z 0-9 (namespaces are nbx-<name>-<node>)")
    ipv6 = doc.get("ipv6", False)
    if not isinstance(ipv6, bool):
        raise ctx.error(None, 0, "ipv6 must be true or false")
    nodes: dict[str, Node] = {}
    raw_nodes = _tables(doc, "node", ctx)
    if len(raw_nodes) > MAX_NODES:
        raise ctx.error(None, 0, f"[[node]] must be a list of at most {MAX_NODES} tables")
    for i, d in enumerate(raw_nodes):
        _check_keys(d, _NODE_KEYS, ctx, "node", i)
        try:
            nname = d.get("name")
            if not isinstance(nname, str) or not _NODE_RE.match(nname):
                raise ValueError("name must be 1-10 of a-z 0-9")
            if nname in nodes:
                raise ValueError(f"node {nname!r} defined twice")
            sysctls = d.get("sysctls", {})
            if not isinstance(sysctls, dict):
                raise ValueError("sysctls must be a table")
            host = d.get("host")
            if host is not None and not isinstance(host, str):
                raise ValueError("host must be a file name")
            gw = d.get("gateway", False)
            if not isinstance(gw, bool):
                raise ValueError("gateway must be true or false")
            try:
                routes = [check_route(r) for r in _str_list(d.get("routes", []), "routes")]
            except ValueError as exc:
                raise ctx.error("node", i, str(exc), "routes") from None
            nodes[nname] = Node(nname, routes,
                                {str(k): str(v) for k, v in sysctls.items()}, gw,
                                [_ifname(o) for o in _str_list(d.get("owned", []), "owned")], host,
                                _str_list(d.get("gateway_args", []), "gateway_args"))
        except LabError:
            raise
        except ValueError as exc:
            raise ctx.error("node", i, str(exc)) from None
    if not nodes:
        raise ctx.error(None, 0, "a lab needs at least one [[node]]")
    if sum(n.gateway for n in nodes.values()) > 1:
        raise ctx.error(None, 0, "at most one node may be the gateway")
    lab = Lab(name, nodes, ipv6=ipv6, filename=filename)
    for i, d in enumerate(_tables(doc, "bridge", ctx)):
        _check_keys(d, _BRIDGE_KEYS, ctx, "bridge", i)
        try:
            _node_ref(d.get("node"), nodes)
        except ValueError as exc:
            raise ctx.error("bridge", i, str(exc), "node") from None
        try:
            lab.bridges.append(Bridge(d["node"], _ifname(d.get("name")),
                                      [check_address(a) for a in _str_list(d.get("addresses", []), "addresses")],
                                      _opt_int(d.get("mtu"), "mtu", 68, 65535)))
        except ValueError as exc:
            raise ctx.error("bridge", i, str(exc)) from None
    for i, d in enumerate(_tables(doc, "tap", ctx)):
        _check_keys(d, _TAP_KEYS, ctx, "tap", i)
        try:
            _node_ref(d.get("node"), nodes)
        except ValueError as exc:
            raise ctx.error("tap", i, str(exc), "node") from None
        try:
            vnet = d.get("vnet_hdr", False)
            if not isinstance(vnet, bool):
                raise ValueError("vnet_hdr must be true or false")
            lab.taps.append(Tap(d["node"], _ifname(d.get("name")),
                                [check_address(a) for a in _str_list(d.get("addresses", []), "addresses")],
                                vnet, _opt_int(d.get("mtu"), "mtu", 68, 65535), _mac(d.get("mac"))))
        except ValueError as exc:
            raise ctx.error("tap", i, str(exc)) from None
    raw_links = _tables(doc, "link", ctx)
    if len(raw_links) > MAX_LINKS:
        raise ctx.error(None, 0, f"[[link]] must be a list of at most {MAX_LINKS} tables")
    for i, d in enumerate(raw_links):
        _check_keys(d, ("a", "b"), ctx, "link", i)
        try:
            lab.links.append(Link(_endpoint(d.get("a"), nodes), _endpoint(d.get("b"), nodes)))
        except ValueError as exc:
            raise ctx.error("link", i, str(exc)) from None
    _validate(lab, ctx)
    return lab


def _validate(lab: Lab, ctx: _Ctx) -> None:
    if not lab.ipv6:
        v6 = [a for b in lab.bridges for a in b.addresses] + [a for t in lab.taps for a in t.addresses]
        v6 += [a for lk in lab.links for e in (lk.a, lk.b) for a in e.addresses]
        v6 += [r for nd in lab.nodes.values() for r in nd.routes]
        bad = next((a for a in v6 if ":" in a), None)
        if bad is not None:
            raise ctx.error(None, 0, f"{bad}: IPv6 needs ipv6 = true (IPv6 is disabled in every node otherwise)")
    for node in lab.nodes:
        names = lab.interfaces(node)
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ctx.error(None, 0, f"node {node}: interface {sorted(dup)[0]!r} defined twice")
    for link in lab.links:
        for end in (link.a, link.b):
            if end.bridge is not None and not any(b.node == end.node and b.name == end.bridge
                                                  for b in lab.bridges):
                raise ctx.error(None, 0, f"{end.node}:{end.name}: no bridge {end.bridge!r} in node {end.node}")
    gw = lab.gateway
    for nd in lab.nodes.values():
        if nd.owned and not nd.gateway:
            raise ctx.error(None, 0, f"node {nd.name}: owned interfaces need gateway = true")
    if gw is None:
        return
    for arg in gw.gateway_args:
        for ref in _NS_REF.findall(arg):
            if ref not in lab.nodes:
                raise ctx.error(None, 0, f"gateway_args: {{ns:{ref}}} names no node")
    names = lab.interfaces(gw.name)
    for owned in gw.owned:
        if owned not in names:
            raise ctx.error(None, 0, f"gateway {gw.name}: owned interface {owned!r} is not in the lab")
        addressed = [b.addresses for b in lab.bridges if b.node == gw.name and b.name == owned]
        addressed += [e.addresses for lk in lab.links for e in (lk.a, lk.b) if e.node == gw.name and e.name == owned]
        addressed += [t.addresses for t in lab.taps if t.node == gw.name and t.name == owned]
        if any(addressed):
            raise ctx.error(None, 0, f"gateway {gw.name}: owned interface {owned!r} must carry no kernel "
                            "addresses (natbox answers for it)")
