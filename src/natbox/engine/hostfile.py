"""Host models written as TOML: parsing and validation (pure: the caller reads the file).

Format (every key optional unless marked):

```toml
name = "gateway"
ip_forward = true

[[interface]]
name = "eth0"                      # required
mac = "52:54:00:12:34:56"          # omitted or all zeros: accept every unicast frame (replay mode)
mtu = 1500
kind = "ether"                     # ether, tap, veth, bridge, loopback
addresses = ["192.168.0.108/24"]   # the first in a subnet is primary, later ones secondary
route_localnet = false
forwarding = true                  # net.ipv4.conf.<dev>.forwarding (default: ip_forward)
up = true
master = "br0"                     # a bridge port: frames go to the bridge (kind = "bridge") named here

[[route]]
dst = "default"                    # or "10.0.0.0/8"; required
via = "192.168.0.1"
dev = "eth0"
metric = 0
src = "192.168.0.108"
type = "unicast"                   # unicast, blackhole, unreachable, prohibit
table = "main"

[[neighbour]]
dev = "eth0"
addr = "192.168.0.1"
mac = "52:54:00:00:00:01"

[sysctl]                           # kernel names, with or without the net.netfilter. prefix
"net.netfilter.nf_conntrack_udp_timeout" = 30
"net.bridge.bridge-nf-call-iptables" = 1   # bridged IPv4 through the IPv4 hooks (default 1)

[rules]
file = "rules.v4"                  # iptables-save text, relative to the host file
text = "*nat\n...COMMIT\n"         # or inline

[listen]                           # the host's own open sockets
tcp = [22]
udp = [53]

[ipsets]                           # the namespace's ipsets, as `ipset save` prints them (the rules may
file = "sets.ipset"                # name them with -m set / -j SET); relative to the host file
text = "create s hash:ip ...\n"     # or inline
```

IPv6 (engine/hostfile6.py): `ipv6_forward`, IPv6 entries in `addresses`, `[[route]]` and `[[neighbour]]`,
the `net.ipv6.conf.all.forwarding` sysctl, and `[rules6]` (file or text: ip6tables-save text).

`host_ipsets(hf)` restores the sets into an `IpsetRegistry` (as `ipset restore` would, before the ruleset is
loaded: a rule may only name a set that exists) and counts the rules' references to them. `host_nfacct(hf)`
gives the accounting objects a snapshot's `nfacct list` recorded (`-m nfacct` rules may only name those).

Errors are `HostFileError`s whose message starts with `file:line:` and names the key.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Final

from natbox.engine.host import Address, Host, HostError, Interface, Neighbour, Route
from natbox.engine.hostfile6 import is_ipv6_text, parse_addr6_text, parse_prefix6, route6_from_spec
from natbox.errors import ConfigError
from natbox.ipset.command import IpsetSession
from natbox.ipset.core import IpsetRegistry
from natbox.ipset.scope import rule_set_refs
from natbox.rand import SplitMix64
from natbox.rules.evaluate import Ruleset
from natbox.rules.xtstate.nfacct import NfAcct, load_objects
from natbox.tomlfile import Locator, load_toml

__all__ = ["HostFile", "HostFileError", "host_ipsets", "host_nfacct", "parse_host_toml"]

_KINDS: Final = ("ether", "tap", "veth", "bridge", "loopback", "tun")
_ROUTE_TYPES: Final = ("unicast", "blackhole", "unreachable", "prohibit", "local", "broadcast", "throw")


class HostFileError(ConfigError):
    """A host file that cannot be used; the message names file:line and the key."""


@dataclass
class HostFile:
    """A parsed host file: the host, the rules file it names (if any), and the sockets it listens on."""

    host: Host
    rules_file: str | None = None
    rules6_file: str | None = None  # [rules6] file, relative to the host file (the caller reads it)
    rules6_origin: str = "<rules6>"  # where host.rules6_text came from, for error messages
    listen: set[tuple[int, int]] = field(default_factory=set)
    ipsets_file: str | None = None  # [ipsets] file, relative to the host file (the caller reads it)
    ipsets_text: str = ""  # `ipset save` text: [ipsets] text, the file once read, or a snapshot's ipset.save
    ipsets_origin: str = "<ipsets>"  # where ipsets_text came from, for error messages
    sets: IpsetRegistry | None = None  # the restored sets, where a caller keeps `host_ipsets(self)`
    ruleset6: Ruleset | None = None  # the ip6tables ruleset built from host.rules6_text, where a caller keeps it
    nfacct_text: str = ""  # `nfacct list` text: a snapshot's nfacct.list (nfnetlink_acct's objects, with counters)
    nfacct_origin: str = "<nfacct>"  # where nfacct_text came from, for error messages
    nfacct: dict[str, NfAcct] = field(default_factory=dict)  # the objects, where a caller keeps `host_nfacct(self)`


def _mac(text: Any) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", text):
        raise ValueError(f"bad MAC address {text!r} (want aa:bb:cc:dd:ee:ff)")
    return bytes(int(x, 16) for x in text.split(":"))


def _addr(text: Any) -> int:
    if not isinstance(text, str):
        raise ValueError(f"bad IPv4 address {text!r}")
    try:
        return int(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"bad IPv4 address {text!r}") from None


def _prefix(text: Any) -> tuple[int, int]:
    if not isinstance(text, str):
        raise ValueError(f"bad prefix {text!r}")
    if text == "default":
        return 0, 0
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        raise ValueError(f"bad IPv4 prefix {text!r} (want a.b.c.d/len)") from None
    return int(iface.ip), iface.network.prefixlen


def _expect(value: Any, kind: type, what: str) -> Any:
    if kind is int and isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, not {value!r}")
    if not isinstance(value, kind):
        raise ValueError(f"{what} must be {kind.__name__}, not {value!r}")
    return value


_TOP_KEYS: Final = {"name", "ip_forward", "ipv6_forward", "interface", "route", "neighbour", "sysctl", "rules",
    "rules6",
             "listen", "ipsets"}
_IFACE_KEYS: Final = {"name", "mac", "mtu", "kind", "addresses", "route_localnet", "forwarding", "up", "master"}
_ROUTE_KEYS: Final = {"dst", "via", "dev", "metric", "src", "type", "table"}
_NEIGH_KEYS: Final = {"dev", "addr", "mac"}


def parse_host_toml(text: str, filename: str = "<host>") -> HostFile:
    """Parse a host file. Raises HostFileError naming file:line and key on any problem."""
    loc = Locator(text, filename, HostFileError)
    doc = load_toml(text, filename, HostFileError)
    for key in doc:
        if key not in _TOP_KEYS:
            raise loc.error(None, 0, key, f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    try:
        host = Host(name=_expect(doc.get("name", "host"), str, "name"))
    except ValueError as exc:
        raise loc.error(None, 0, "name", str(exc)) from None
    try:
        host.ip_forward = bool(_expect(doc.get("ip_forward", False), bool, "ip_forward"))
    except ValueError as exc:
        raise loc.error(None, 0, "ip_forward", str(exc)) from None
    try:
        host.ipv6_forward = bool(_expect(doc.get("ipv6_forward", False), bool, "ipv6_forward"))
    except ValueError as exc:
        raise loc.error(None, 0, "ipv6_forward", str(exc)) from None
    hf = HostFile(host)
    _parse_interfaces(doc, host, loc)
    _parse_routes(doc, host, loc)
    _parse_neighbours(doc, host, loc)
    _parse_sysctls(doc, host, loc)
    _parse_rules(doc, hf, loc)
    _parse_rules6(doc, hf, loc)
    _parse_ipsets(doc, hf, loc)
    _parse_listen(doc, hf, loc)
    try:
        host.ensure_loopback()
        host.validate()
    except HostError as exc:
        raise HostFileError(f"{filename}: {exc}") from None
    return hf


def _table_list(doc: dict[str, Any], key: str, loc: Locator) -> list[dict[str, Any]]:
    items = doc.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise loc.error(None, 0, key, f"must be an array of tables ([[{key}]])")
    return items


def _parse_interfaces(doc: dict[str, Any], host: Host, loc: Locator) -> None:
    for i, spec in enumerate(_table_list(doc, "interface", loc)):
        for key in spec:
            if key not in _IFACE_KEYS:
                raise loc.error("interface", i, key, f"unknown key (known: {', '.join(sorted(_IFACE_KEYS))})")
        key = "name"
        try:
            name = _expect(spec.get("name"), str, "name")
            key = "kind"
            kind = _expect(spec.get("kind", "loopback" if name == "lo" else "ether"), str, "kind")
            if kind not in _KINDS:
                raise ValueError(f"unknown kind {kind!r} (known: {', '.join(_KINDS)})")
            key = "mac"
            mac = _mac(spec["mac"]) if "mac" in spec else b"\x00" * 6
            key = "mtu"
            mtu = _expect(spec.get("mtu", 65536 if kind == "loopback" else 1500), int, "mtu")
            if not 68 <= mtu <= 65536:
                raise ValueError(f"mtu {mtu} out of range 68..65536")
            key = "route_localnet"
            rl = bool(_expect(spec.get("route_localnet", False), bool, "route_localnet"))
            key = "forwarding"
            fwd = spec.get("forwarding")
            if fwd is not None:
                fwd = bool(_expect(fwd, bool, "forwarding"))
            key = "up"
            up = bool(_expect(spec.get("up", True), bool, "up"))
            key = "master"
            master = spec.get("master")
            if master is not None:
                master = _expect(master, str, "master")
            iface = host.add_interface(Interface(name, mac=mac, mtu=mtu, kind=kind, up=up, route_localnet=rl,
                                                 forwarding=fwd, master=master))
            key = "addresses"
            for text in _expect(spec.get("addresses", []), list, "addresses"):
                if is_ipv6_text(text):
                    addr, plen = parse_prefix6(text)
                    if not any(a.addr == addr for a in iface.addresses6):
                        host.add_address6(name, addr, plen)
                    continue
                addr, plen = _prefix(text)
                if kind == "loopback" and addr >> 24 == 127:
                    iface.addresses.append(Address(addr, plen, scope="host"))
                else:
                    host.add_address(name, addr, plen)
        except (ValueError, HostError) as exc:
            raise loc.error("interface", i, key if key in spec else None, str(exc)) from None


def _parse_routes(doc: dict[str, Any], host: Host, loc: Locator) -> None:
    for i, spec in enumerate(_table_list(doc, "route", loc)):
        for key in spec:
            if key not in _ROUTE_KEYS:
                raise loc.error("route", i, key, f"unknown key (known: {', '.join(sorted(_ROUTE_KEYS))})")
        key = "dst"
        if is_ipv6_text(spec.get("dst")) or is_ipv6_text(spec.get("via")):
            bad, r6 = route6_from_spec(host, spec)
            if isinstance(r6, str):
                raise loc.error("route", i, bad if bad in spec else None, r6)
            host.routes6.append(r6)
            continue
        try:
            if "dst" not in spec:
                raise ValueError("missing (a prefix or \"default\")")
            dst, plen = _prefix(spec["dst"])
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0
            if dst & ~mask & 0xFFFFFFFF:
                raise ValueError(f"{spec['dst']!r} has host bits set")
            key = "via"
            via = _addr(spec["via"]) if "via" in spec else None
            key = "dev"
            dev = spec.get("dev")
            if dev is not None and _expect(dev, str, "dev") not in host.interfaces:
                raise ValueError(f"no such interface {dev!r}")
            key = "src"
            src = _addr(spec["src"]) if "src" in spec else None
            key = "metric"
            metric = _expect(spec.get("metric", 0), int, "metric")
            key = "type"
            rtype = _expect(spec.get("type", "unicast"), str, "type")
            if rtype not in _ROUTE_TYPES:
                raise ValueError(f"unknown route type {rtype!r}")
            key = "table"
            table = _expect(spec.get("table", "main"), str, "table")
            if dev is None and via is not None:
                dev = _device_for_gateway(host, via)
                if dev is None:
                    key = "via"
                    raise ValueError(f"gateway {spec['via']} is not on any interface's subnet (Nexthop has "
                                     "invalid gateway)")
            if dev is None and rtype == "unicast":
                key = "dev"
                raise ValueError("a unicast route needs dev or via")
            host.routes.append(Route(dst, plen, dev, via, metric, src, table, rtype))
        except ValueError as exc:
            raise loc.error("route", i, key if key in spec else None, str(exc)) from None


def _device_for_gateway(host: Host, gw: int) -> str | None:
    for iface in host.interfaces.values():
        if any(a.contains(gw) for a in iface.addresses):
            return iface.name
    return None


def _parse_neighbours(doc: dict[str, Any], host: Host, loc: Locator) -> None:
    for i, spec in enumerate(_table_list(doc, "neighbour", loc)):
        key = "dev"
        try:
            for key in spec:
                if key not in _NEIGH_KEYS:
                    raise ValueError(f"unknown key (known: {', '.join(sorted(_NEIGH_KEYS))})")
            key = "dev"
            dev = _expect(spec.get("dev"), str, "dev")
            if dev not in host.interfaces:
                raise ValueError(f"no such interface {dev!r}")
            key = "addr"
            text = spec.get("addr")
            addr = parse_addr6_text(text) if is_ipv6_text(text) else _addr(text)
            key = "mac"
            host.neighbours.append(Neighbour(dev, addr, _mac(spec.get("mac"))))
        except ValueError as exc:
            raise loc.error("neighbour", i, key, str(exc)) from None


def _parse_sysctls(doc: dict[str, Any], host: Host, loc: Locator) -> None:
    sysctls = doc.get("sysctl", {})
    if not isinstance(sysctls, dict):
        raise loc.error(None, 0, "sysctl", "must be a table")
    for name, value in sysctls.items():
        if not isinstance(value, str | int | float):
            raise loc.error("sysctl", 0, name, f"must be a string or a number, not {value!r}")
        text = str(int(value)) if isinstance(value, bool) else str(value)
        try:
            apply_sysctl(host, name, text)
        except ValueError as exc:
            raise loc.error("sysctl", 0, name, str(exc)) from None


def apply_sysctl(host: Host, name: str, value: str) -> None:
    """Apply one sysctl by its kernel name (net.ipv4.*, net.netfilter.*)."""
    host.sysctls[name] = value
    if name in ("net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding"):
        host.ip_forward = _bool(value, name)
        return
    if name == "net.ipv6.conf.all.forwarding":  # what ip6_forward reads (IPv6 §1.3)
        host.ipv6_forward = _bool(value, name)
        return
    m = re.fullmatch(r"net\.ipv4\.conf\.([^.]+)\.(route_localnet|forwarding)", name)
    if m:
        dev, knob = m.groups()
        if dev in ("all", "default"):
            if knob == "forwarding":
                host.ip_forward = _bool(value, name)
            else:
                for iface in host.interfaces.values():
                    iface.route_localnet = iface.route_localnet or _bool(value, name)
            return
        if dev not in host.interfaces:
            raise ValueError(f"no such interface {dev!r}")
        if knob == "route_localnet":
            host.interfaces[dev].route_localnet = _bool(value, name)
        else:
            host.interfaces[dev].forwarding = _bool(value, name)
        return
    if name == "net.bridge.bridge-nf-call-iptables":  # brnf_sysctl_call_tables: any non-zero value is 1
        host.bridge_nf_call_iptables = int(value) != 0
        return
    if name.startswith(("net.netfilter.", "nf_conntrack_")):
        host.conntrack.set_sysctl(name, value)
        return
    if name.startswith("net."):
        return  # other kernel knobs are kept (for snapshots) but do not change natbox's behaviour
    raise ValueError(f"unknown sysctl {name!r}")


def _bool(value: str, name: str) -> bool:
    if value.strip() in ("0", "1"):
        return value.strip() == "1"
    raise ValueError(f"{name} must be 0 or 1, not {value!r}")


def _parse_rules(doc: dict[str, Any], hf: HostFile, loc: Locator, section: str = "rules") -> None:
    """[rules] (iptables-save) or [rules6] (ip6tables-save): a file name or inline text."""
    rules = doc.get(section)
    if rules is None:
        return
    if not isinstance(rules, dict):
        raise loc.error(None, 0, section, "must be a table with file or text")
    for key in rules:
        if key not in ("file", "text"):
            raise loc.error(section, 0, key, "unknown key (known: file, text)")
    if "file" in rules and "text" in rules:
        raise loc.error(section, 0, "text", "give either file or text, not both")
    if "file" in rules:
        if not isinstance(rules["file"], str):
            raise loc.error(section, 0, "file", "must be a string")
        if not rules["file"] or "\0" in rules["file"]:
            raise loc.error(section, 0, "file", f"not a file name: {rules['file']!r}")
        if section == "rules6":
            hf.rules6_file = rules["file"]
        else:
            hf.rules_file = rules["file"]
    elif "text" in rules:
        if not isinstance(rules["text"], str):
            raise loc.error(section, 0, "text", "must be a string")
        if section == "rules6":
            hf.host.rules6_text = rules["text"]
            hf.rules6_origin = f"{loc.filename}[rules6.text]"
        else:
            hf.host.rules_text = rules["text"]
            hf.host.rules_origin = f"{loc.filename}[rules.text]"


def _parse_rules6(doc: dict[str, Any], hf: HostFile, loc: Locator) -> None:
    _parse_rules(doc, hf, loc, "rules6")


def _parse_ipsets(doc: dict[str, Any], hf: HostFile, loc: Locator) -> None:
    sets = doc.get("ipsets")
    if sets is None:
        return
    if not isinstance(sets, dict):
        raise loc.error(None, 0, "ipsets", "must be a table with file or text")
    for key in sets:
        if key not in ("file", "text"):
            raise loc.error("ipsets", 0, key, "unknown key (known: file, text)")
    if "file" in sets and "text" in sets:
        raise loc.error("ipsets", 0, "text", "give either file or text, not both")
    if "file" in sets:
        if not isinstance(sets["file"], str) or not sets["file"] or "\0" in sets["file"]:
            raise loc.error("ipsets", 0, "file", f"not a file name: {sets['file']!r}")
        hf.ipsets_file = sets["file"]
    elif "text" in sets:
        if not isinstance(sets["text"], str):
            raise loc.error("ipsets", 0, "text", "must be a string")
        hf.ipsets_text = sets["text"]
        hf.ipsets_origin = f"{loc.filename}[ipsets.text]"


def host_ipsets(hf: HostFile, now: float = 0.0, seed: int = 0, rule_refs: bool = True) -> IpsetRegistry | None:
    """The host's ipsets (None when it has none): `ipset restore` of `hf.ipsets_text` at `now`, then one
    reference per rule of `hf.host.rules_text` that names a set (as the kernel's `ip_set_nfnl_get_byindex`
    holds one per rule), so that `ipset destroy` refuses a set in use (not with `rule_refs` False: a running
    gateway counts its rules' references from the rules it runs, natbox.cli.ipset.ipset_live). A text ipset
    refuses raises a HostFileError naming its origin and ipset's message. Hash sets restored without
    `initval` get one from SplitMix64(seed) (the kernel draws it at random; `ipset save` always prints it, so
    a snapshot restores exactly)."""
    if not hf.ipsets_text.strip():
        return None
    reg = IpsetRegistry()
    rnd = SplitMix64(seed)
    rc, _, err = IpsetSession(reg, now, lambda: rnd.getrandbits(32)).run(["restore"], hf.ipsets_text)
    if rc:
        raise HostFileError(f"{hf.ipsets_origin}: {err.strip()}")
    for text in (hf.host.rules_text, hf.host.rules6_text) if rule_refs else ():  # ip6tables rules hold some too
        for name, n in rule_set_refs(text).items():
            s = reg.get(name)
            if s is not None:
                s.ref += n
    return reg


def host_nfacct(hf: HostFile) -> dict[str, NfAcct]:
    """The host's nfacct objects, from `hf.nfacct_text` (`nfacct list` lines, quotas and counters kept), in
    their order; a line that is not one raises a HostFileError naming the origin and the line."""
    try:
        return load_objects(hf.nfacct_text)
    except ValueError as exc:
        raise HostFileError(f"{hf.nfacct_origin}: {exc}") from None


def _parse_listen(doc: dict[str, Any], hf: HostFile, loc: Locator) -> None:
    listen = doc.get("listen", {})
    if not isinstance(listen, dict):
        raise loc.error(None, 0, "listen", "must be a table with tcp and udp port lists")
    for key, proto in (("tcp", 6), ("udp", 17)):
        ports = listen.get(key, [])
        if not isinstance(ports, list) or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
            raise loc.error("listen", 0, key, "must be a list of ports 1..65535")
        hf.listen.update((proto, p) for p in ports)
    for key in listen:
        if key not in ("tcp", "udp"):
            raise loc.error("listen", 0, key, "unknown key (known: tcp, udp)")
