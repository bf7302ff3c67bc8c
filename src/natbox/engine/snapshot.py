"""Host snapshots: the files `natbox snapshot` saves, parsed into the host model (pure: no file I/O).

A snapshot directory holds what a real Linux host reports about itself (the adapter
`natbox.adapters.snapshot.take_snapshot` writes it; the caller reads the files and passes their text):

| file               | command                                   | gives                                          |
|--------------------|-------------------------------------------|------------------------------------------------|
| `link.json`        | `ip -d -j link`                           | interfaces: name, index, MAC, MTU, kind, up    |
| `addr.json`        | `ip -j addr`                              | IPv4 addresses, secondary flags, scopes        |
| `route.json`       | `ip -4 -j route show table all`           | routes (kernel-made ones are re-derived)       |
| `neigh.json`       | `ip -4 -j neigh`                          | neighbours with a link-layer address           |
| `sysctl.txt`       | `sysctl -a -r PATTERN` (`name = value`)   | ip_forward, per-device knobs, nf_conntrack_*   |
| `iptables.rules`   | `iptables-save -c`                        | the ruleset text (`Host.rules_text`)           |
| `ipset.save`       | `ipset save` (absent without ipset)       | the sets (`HostFile.ipsets_text`)              |
| `route6.json`      | `ip -6 -j route show table main`          | IPv6 routes (connected ones re-derived)        |
| `neigh6.json`      | `ip -6 -j neigh`                          | IPv6 neighbours with a link-layer address      |
| `sysctl6.txt`      | `sysctl -a -r PATTERN6`                   | net.ipv6.conf.all.forwarding                   |
| `ip6tables.rules`  | `ip6tables-save -c` (absent without it)   | the IPv6 ruleset (`Host.rules6_text`)          |
| `br_netfilter.txt` | `sysctl -a -r PATTERN_BR`                 | bridge-nf-call-iptables (empty: no br_netfilter)|
| `nfacct.list`      | `nfacct list` (absent without it)         | nfacct objects (`HostFile.nfacct_text`)        |

br_netfilter: without the module there is no net.bridge sysctl and bridged frames never reach the IPv4 hooks,
so a snapshot with an empty `br_netfilter.txt` has bridge-nf-call-iptables 0. Snapshots older than that file
have no record of it: for them a `net.bridge.bridge-nf-call-iptables` line in `sysctl.txt` counts, and without
one natbox assumes the module's default, 1 (as before).

Routes with `protocol kernel` in tables local and main are the ones `fib_add_ifaddr()` creates for each
address; `natbox.engine.routing.Fib` derives exactly those from the addresses, so they are not copied
(copying them would duplicate them). Every other route is kept with its table.

Errors are `SnapshotError`s whose message starts with the file name (as `origin/file`) and says what is wrong.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, Final

from natbox.engine.host import Address, Host, HostError, Interface, Neighbour, Route
from natbox.engine.hostfile import HostFile, apply_sysctl
from natbox.engine.snapshot6 import NEIGH_STATIC, NEIGH_UNUSABLE, apply_ipv6, neigh_states
from natbox.errors import ConfigError

__all__ = ["OPTIONAL_FILES", "REQUIRED_FILES", "SNAPSHOT_FILES", "SnapshotError", "host_from_snapshot",
           "parse_sysctl_text"]

# file name -> what produced it (kept in this order by the adapter; `iptables.rules` may be empty)
SNAPSHOT_FILES: dict[str, str] = {
    "link.json": "ip -d -j link",
    "addr.json": "ip -j addr",
    "route.json": "ip -4 -j route show table all",
    "neigh.json": "ip -4 -j neigh",
    "sysctl.txt": "sysctl -a -r PATTERN",
    "iptables.rules": "iptables-save -c",
    "ipset.save": "ipset save",
    "route6.json": "ip -6 -j route show table main",
    "neigh6.json": "ip -6 -j neigh",
    "sysctl6.txt": "sysctl -a -r PATTERN6",
    "ip6tables.rules": "ip6tables-save -c",
    "br_netfilter.txt": "sysctl -a -r PATTERN_BR",
    "nfacct.list": "nfacct list",
}
# written only when the host has the program (a host without ipset has no sets, one without ip6tables no
# IPv6 ruleset, one without nfacct (or whose kernel has no nfnetlink_acct) no accounting objects)
OPTIONAL_FILES: Final = ("ipset.save", "ip6tables.rules", "nfacct.list")
BRIDGE_NF_CALL_IPTABLES: Final = "net.bridge.bridge-nf-call-iptables"
REQUIRED_FILES: Final = ("link.json", "addr.json", "route.json")

# `info_kind` of `ip -d link` -> Interface.kind (natbox models every other Ethernet-like device as ether)
_KIND_OF: dict[str, str] = {"veth": "veth", "bridge": "bridge", "tun": "tap"}
# tun devices: `info_data.type` tells tun from tap
_TUN_TYPES: dict[str, str] = {"tun": "tun", "tap": "tap"}
# route `type` values the host model knows (others, e.g. multicast/nat/anycast, are refused)
_ROUTE_TYPES: Final = ("unicast", "local", "broadcast", "blackhole", "unreachable", "prohibit", "throw")
_MAC_RE: Final = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_CONF_RE: Final = re.compile(r"net\.ipv4\.conf\.([^.]+)\.(forwarding|route_localnet)")


class SnapshotError(ConfigError):
    """A snapshot file that cannot be used; the message starts with the file and says what is wrong."""


def _mac(text: Any, where: str) -> bytes:
    if not isinstance(text, str) or not _MAC_RE.fullmatch(text):
        raise SnapshotError(f"{where}: bad MAC address {text!r}")
    return bytes(int(x, 16) for x in text.split(":"))


def _ipv4(text: Any, where: str) -> int:
    try:
        return int(ipaddress.IPv4Address(text))
    except (ValueError, TypeError):
        raise SnapshotError(f"{where}: bad IPv4 address {text!r}") from None


def _json_list(files: dict[str, str], name: str, origin: str) -> list[dict[str, Any]]:
    text = files.get(name)
    where = f"{origin}/{name}"
    if text is None:
        if name in REQUIRED_FILES:
            raise SnapshotError(f"{where}: missing (written by `{SNAPSHOT_FILES[name]}`)")
        return []
    if not text.strip():
        return []
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{where}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
    if not isinstance(doc, list) or not all(isinstance(x, dict) for x in doc):
        raise SnapshotError(f"{where}: expected a JSON array of objects, as `{SNAPSHOT_FILES[name]}` prints")
    return doc


def _link_kind(link: dict[str, Any]) -> str:
    if link.get("link_type") == "loopback":
        return "loopback"
    info = link.get("linkinfo")
    if isinstance(info, dict):
        kind = info.get("info_kind")
        if kind == "tun":
            data = info.get("info_data")
            ttype = data.get("type") if isinstance(data, dict) else None
            return _TUN_TYPES.get(str(ttype), "tap")
        if isinstance(kind, str):
            return _KIND_OF.get(kind, "ether")
    return "ether"


def _parse_links(host: Host, links: list[dict[str, Any]], origin: str) -> None:
    where = f"{origin}/link.json"
    for i, link in enumerate(links):
        name = link.get("ifname")
        if not isinstance(name, str) or not name:
            raise SnapshotError(f"{where}: entry {i}: no ifname")
        mtu = link.get("mtu", 1500)
        if not isinstance(mtu, int) or isinstance(mtu, bool) or not 0 <= mtu <= 65536:
            raise SnapshotError(f"{where}: {name}: bad mtu {mtu!r}")
        flags = link.get("flags", [])
        if not isinstance(flags, list):
            raise SnapshotError(f"{where}: {name}: flags must be a list")
        kind = _link_kind(link)
        mac = _mac(link.get("address", "00:00:00:00:00:00"), f"{where}: {name}") if kind != "tun" else b"\0" * 6
        index = link.get("ifindex", 0)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise SnapshotError(f"{where}: {name}: bad ifindex {index!r}")
        master = link.get("master")  # a bridge port (`ip link set DEV master BR`)
        if master is not None and not isinstance(master, str):
            raise SnapshotError(f"{where}: {name}: bad master {master!r}")
        try:
            host.add_interface(Interface(name, mac=mac, mtu=mtu, kind=kind, up="UP" in flags, index=index,
                                         master=master))
        except HostError as exc:
            raise SnapshotError(f"{where}: {exc}") from None


def _parse_addrs(host: Host, links: list[dict[str, Any]], origin: str) -> None:
    """IPv4 addresses in the kernel's order; `secondary` exactly as the kernel flagged it (IFA_F_SECONDARY)."""
    where = f"{origin}/addr.json"
    for link in links:
        name = link.get("ifname")
        if not isinstance(name, str):
            raise SnapshotError(f"{where}: entry without ifname")
        iface = host.interfaces.get(name)
        if iface is None:
            raise SnapshotError(f"{where}: {name}: not in link.json")
        infos = link.get("addr_info", [])
        if not isinstance(infos, list):
            raise SnapshotError(f"{where}: {name}: addr_info must be a list")
        for info in infos:
            if not isinstance(info, dict) or info.get("family") != "inet":
                continue
            addr = _ipv4(info.get("local"), f"{where}: {name}")
            plen = info.get("prefixlen")
            if not isinstance(plen, int) or isinstance(plen, bool) or not 0 <= plen <= 32:
                raise SnapshotError(f"{where}: {name}: bad prefixlen {plen!r}")
            scope = info.get("scope", "global")
            iface.addresses.append(Address(addr, plen, secondary=bool(info.get("secondary", False)),
                                           scope=str(scope)))


def _route_prefix(dst: Any, where: str) -> tuple[int, int]:
    if dst == "default":
        return 0, 0
    if not isinstance(dst, str):
        raise SnapshotError(f"{where}: bad dst {dst!r}")
    try:
        net = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=True)
    except ValueError:
        raise SnapshotError(f"{where}: bad dst {dst!r}") from None
    return int(net.network_address), net.prefixlen


def _parse_routes(host: Host, routes: list[dict[str, Any]], origin: str) -> None:
    where = f"{origin}/route.json"
    for i, r in enumerate(routes):
        rwhere = f"{where}: route {i} ({r.get('dst', '?')})"
        table = str(r.get("table", "main"))
        proto = str(r.get("protocol", "boot"))
        rtype = str(r.get("type", "unicast"))
        if proto == "kernel" and table in ("local", "main"):
            continue  # made by fib_add_ifaddr(); natbox's Fib derives these from the addresses
        if rtype not in _ROUTE_TYPES:
            raise SnapshotError(f"{rwhere}: route type {rtype!r} is not modelled")
        dst, plen = _route_prefix(r.get("dst"), rwhere)
        dev = r.get("dev")
        if dev is not None and (not isinstance(dev, str) or dev not in host.interfaces):
            raise SnapshotError(f"{rwhere}: no such interface {dev!r}")
        gateway = _ipv4(r["gateway"], rwhere) if "gateway" in r else None
        prefsrc = _ipv4(r["prefsrc"], rwhere) if "prefsrc" in r else None
        metric = r.get("metric", 0)
        if not isinstance(metric, int) or isinstance(metric, bool) or metric < 0:
            raise SnapshotError(f"{rwhere}: bad metric {metric!r}")
        if "nexthops" in r:
            raise SnapshotError(f"{rwhere}: multipath routes are not modelled")
        host.routes.append(Route(dst, plen, dev, gateway, metric, prefsrc, table, rtype,
                                 scope=str(r.get("scope", "global")), proto=proto))


def _parse_neighbours(host: Host, neighs: list[dict[str, Any]], origin: str) -> None:
    """`ip -4 -j neigh`: entries with a link-layer address, PERMANENT/NOARP ones as permanent, those the kernel
    learned as learned ones (the engine ages and re-resolves them)."""
    where = f"{origin}/neigh.json"
    for n in neighs:
        dst = n.get("dst")
        if not isinstance(dst, str) or ":" in dst:
            continue  # IPv6 neighbours, if the file has them
        states = neigh_states(n)
        if "lladdr" not in n or NEIGH_UNUSABLE & states:
            continue
        dev = n.get("dev")
        if not isinstance(dev, str) or dev not in host.interfaces:
            raise SnapshotError(f"{where}: {dst}: no such interface {dev!r}")
        host.neighbours.append(Neighbour(dev, _ipv4(dst, f"{where}: {dst}"), _mac(n["lladdr"], f"{where}: {dst}"),
                                         permanent=bool(NEIGH_STATIC & states)))


def parse_sysctl_text(text: str, origin: str = "sysctl.txt") -> list[tuple[str, str]]:
    """`name = value` lines, as `sysctl -a` prints them, in order. Blank and `#` lines are skipped."""
    out: list[tuple[str, str]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise SnapshotError(f"{origin}:{lineno}: expected `name = value`, got {line!r}")
        out.append((name.strip(), value.strip()))
    return out


def _apply_sysctls(host: Host, text: str, origin: str) -> None:
    where = f"{origin}/sysctl.txt"
    items = parse_sysctl_text(text, where)
    # net.ipv4.ip_forward first: in the kernel, writing it copies the value to every device's forwarding,
    # and the per-device values listed afterwards are the ones in force.
    items.sort(key=lambda kv: kv[0] != "net.ipv4.ip_forward")
    for name, value in items:
        try:
            m = _CONF_RE.fullmatch(name)
            if m and m.group(1) not in ("all", "default"):
                dev = m.group(1).replace("/", ".")  # sysctl writes a dot in a device name as '/'
                iface = host.interfaces.get(dev)
                if iface is None:
                    raise ValueError(f"no such interface {dev!r}")
                flag = value == "1"
                if value not in ("0", "1"):
                    raise ValueError(f"{name} must be 0 or 1, not {value!r}")
                host.sysctls[name] = value
                if m.group(2) == "forwarding":
                    iface.forwarding = flag
                else:
                    iface.route_localnet = flag
                continue
            if name == "net.netfilter.nf_conntrack_buckets":
                host.sysctls[name] = value
                host.conntrack.buckets = int(value)
                continue
            apply_sysctl(host, name, value)
        except ValueError as exc:
            msg = str(exc)
            if name.startswith("net.netfilter.") and ("unknown" in msg or "read-only" in msg):
                host.sysctls[name] = value  # a knob natbox does not model (sctp, frag6, count...): kept
                continue
            raise SnapshotError(f"{where}: {name}: {msg}") from None


def _apply_br_netfilter(host: Host, text: str | None, origin: str) -> None:
    """`br_netfilter.txt`, when the snapshot recorded it: br_netfilter's bridge-nf-call-iptables, 0 when the
    module was not loaded (no such sysctl: `br_nf_pre_routing` is not registered, bridged frames skip the IPv4
    hooks). Absent (an older snapshot): nothing changes (sysctl.txt's line, else the default 1)."""
    if text is None:
        return
    where = f"{origin}/br_netfilter.txt"
    host.bridge_nf_call_iptables = False
    for name, value in parse_sysctl_text(text, where):
        if name == BRIDGE_NF_CALL_IPTABLES:
            try:
                apply_sysctl(host, name, value)
            except ValueError as exc:
                raise SnapshotError(f"{where}: {name}: {exc}") from None


def host_from_snapshot(files: dict[str, str], origin: str) -> HostFile:
    """Build a host from a snapshot's files (name -> text, see SNAPSHOT_FILES). Pure: no I/O.

    `origin` names the snapshot (its directory) in error messages and in `Host.rules_origin`.
    """
    host = Host(name=files.get("hostname", "").strip() or origin.rstrip("/").rsplit("/", 1)[-1] or "host")
    _parse_links(host, _json_list(files, "link.json", origin), origin)
    _parse_addrs(host, _json_list(files, "addr.json", origin), origin)
    _parse_routes(host, _json_list(files, "route.json", origin), origin)
    _parse_neighbours(host, _json_list(files, "neigh.json", origin), origin)
    _apply_sysctls(host, files.get("sysctl.txt", ""), origin)
    _apply_br_netfilter(host, files.get("br_netfilter.txt"), origin)
    host.rules_text = files.get("iptables.rules", "")
    host.rules_origin = f"{origin}/iptables.rules"
    apply_ipv6(host, files, origin)
    hf = HostFile(host, ipsets_text=files.get("ipset.save", ""), ipsets_origin=f"{origin}/ipset.save",
                  nfacct_text=files.get("nfacct.list", ""), nfacct_origin=f"{origin}/nfacct.list")
    try:
        host.ensure_loopback()
        host.validate()
    except HostError as exc:
        raise SnapshotError(f"{origin}: {exc}") from None
    return hf
