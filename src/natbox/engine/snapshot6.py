"""The IPv6 side of a host snapshot (pure): addresses from `addr.json`, and the optional files

| file              | command                                              | gives                                   |
|-------------------|------------------------------------------------------|-----------------------------------------|
| `route6.json`     | `ip -6 -j route show table main`                     | IPv6 routes (connected ones re-derived) |
| `neigh6.json`     | `ip -6 -j neigh`                                     | IPv6 neighbours with a link-layer address |
| `sysctl6.txt`     | `sysctl net.ipv6.conf.all.forwarding`                 | `Host.ipv6_forward`                      |
| `ip6tables.rules` | `ip6tables-save -c`                                  | `Host.rules6_text`                       |

Addresses keep the order `ip -j addr` lists them in, which is the kernel's `addr_list` order (newest global
first, ipv6-semantics.md §3.5); `tentative` and a zero preferred lifetime (deprecated) are kept.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Final

from natbox.engine.host import Address6, Host, Neighbour, Route6
from natbox.errors import ConfigError

__all__ = ["NEIGH_STATIC", "NEIGH_UNUSABLE", "apply_ipv6", "neigh_states"]

_ROUTE6_TYPES: Final = ("unicast", "blackhole", "unreachable", "prohibit")
# neighbour states without a usable link-layer address
NEIGH_UNUSABLE: Final = frozenset({"FAILED", "INCOMPLETE"})
# the states of entries the kernel never ages (`ip neigh ... nud permanent|noarp`); every other one with an
# address (REACHABLE, STALE, DELAY, PROBE) was learned, and natbox learns it too (Neighbour.permanent False)
NEIGH_STATIC: Final = frozenset({"PERMANENT", "NOARP"})


def neigh_states(entry: dict[str, Any]) -> frozenset[str]:
    """The NUD state names of an `ip -j neigh` entry (its `state` list; none when absent or malformed)."""
    states = entry.get("state", [])
    return frozenset(x for x in states if isinstance(x, str)) if isinstance(states, list) else frozenset()


def _addr6(text: Any, where: str) -> int:
    try:
        return int(ipaddress.IPv6Address(str(text).split("%")[0]))
    except ValueError:
        raise ConfigError(f"{where}: bad IPv6 address {text!r}") from None


def _json(files: dict[str, str], name: str, origin: str) -> list[dict[str, Any]]:
    text = files.get(name, "").strip()
    if not text:
        return []
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{origin}/{name}: not JSON: {exc}") from None
    if not isinstance(doc, list):
        raise ConfigError(f"{origin}/{name}: must be a JSON list")
    return [d for d in doc if isinstance(d, dict)]


def apply_ipv6(host: Host, files: dict[str, str], origin: str) -> None:
    """Add the snapshot's IPv6 addresses, routes, forwarding sysctl and ip6tables rules to `host`."""
    for link in _json(files, "addr.json", origin):
        iface = host.interfaces.get(str(link.get("ifname")))
        if iface is None:
            continue
        for info in link.get("addr_info", []) or []:
            if not isinstance(info, dict) or info.get("family") != "inet6":
                continue
            where = f"{origin}/addr.json: {iface.name}"
            plen = info.get("prefixlen")
            if not isinstance(plen, int) or isinstance(plen, bool) or not 0 <= plen <= 128:
                raise ConfigError(f"{where}: bad prefixlen {plen!r}")
            iface.addresses6.append(Address6(_addr6(info.get("local"), where), plen,
                                             tentative=bool(info.get("tentative", False)),
                                             deprecated=info.get("preferred_life_time") == 0))
    for i, r in enumerate(_json(files, "route6.json", origin)):
        where = f"{origin}/route6.json: route {i} ({r.get('dst', '?')})"
        if str(r.get("protocol", "boot")) == "kernel" or str(r.get("type", "unicast")) not in _ROUTE6_TYPES:
            continue  # connected prefixes and fe80::/64 are derived from the addresses (route6.Fib6)
        dst = r.get("dst")
        try:
            net = ipaddress.IPv6Network("::/0" if dst == "default" else str(dst), strict=True)
        except ValueError:
            raise ConfigError(f"{where}: bad dst {dst!r}") from None
        dev = r.get("dev")
        if dev is not None and dev not in host.interfaces:
            raise ConfigError(f"{where}: no such interface {dev!r}")
        metric = r.get("metric", 1024)
        host.routes6.append(Route6(int(net.network_address), net.prefixlen, dev,
                                   _addr6(r["gateway"], where) if "gateway" in r else None,
                                   metric if isinstance(metric, int) else 1024, str(r.get("type", "unicast"))))
    for n in _json(files, "neigh6.json", origin):  # as neigh.json: learned entries stay learned ones
        mac, dev, states = n.get("lladdr"), n.get("dev"), neigh_states(n)
        if isinstance(mac, str) and isinstance(dev, str) and dev in host.interfaces and not NEIGH_UNUSABLE & states:
            try:
                host.neighbours.append(Neighbour(dev, _addr6(n.get("dst"), f"{origin}/neigh6.json"),
                                                 bytes.fromhex(mac.replace(":", "")),
                                                 permanent=bool(NEIGH_STATIC & states)))
            except ValueError:
                raise ConfigError(f"{origin}/neigh6.json: bad lladdr {mac!r}") from None
    for line in files.get("sysctl6.txt", "").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "net.ipv6.conf.all.forwarding":
            host.ipv6_forward = value.strip() not in ("", "0")
    host.rules6_text = files.get("ip6tables.rules", "")
