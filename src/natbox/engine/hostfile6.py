"""The IPv6 parts of a host file (pure; engine/hostfile.py calls them, errors become file:line there).

```toml
ipv6_forward = true                # net.ipv6.conf.all.forwarding (the sysctl of that name sets it too)

[[interface]]
name = "eth0"
addresses = ["192.168.0.1/24", "fd00::1/64"]   # IPv6 addresses as `ip -6 addr add ... nodad` adds them

[[route]]
dst = "::/0"                       # an IPv6 prefix, or "default" with an IPv6 `via`
via = "2001:db8::1"                # a link-local gateway needs `dev`
dev = "eth1"
metric = 1024                      # the kernel's default for IPv6 routes

[[neighbour]]
dev = "eth0"
addr = "fd00::2"
mac = "52:54:00:00:00:02"

[rules6]
file = "rules.v6"                  # ip6tables-save text, relative to the host file
text = "*nat\n...COMMIT\n"         # or inline
```

A route is IPv6 when its `dst` or `via` is an IPv6 address; IPv6 routes live in table main (`ip -6 route`
without `table`), with the kernel's default metric 1024 (connected prefixes get 256 from the addresses,
engine/route6.py). `host_rules6(hf)` builds the ip6tables `Ruleset` the engine runs (`Engine(ruleset6=...)`).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Final

from natbox.engine.host import Host, Route6
from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore

__all__ = ["is_ipv6_text", "parse_addr6_text", "parse_prefix6", "route6_from_spec", "rules6_ruleset"]

_ROUTE6_TYPES: Final = ("unicast", "blackhole", "unreachable", "prohibit")
_LINK_LOCAL: Final = 0xFE80 << 112
_LINK_LOCAL_MASK: Final = ((1 << 10) - 1) << 118


def is_ipv6_text(text: Any) -> bool:
    """Whether a host file's address or prefix text is IPv6 (it has a colon)."""
    return isinstance(text, str) and ":" in text


def parse_addr6_text(text: Any) -> int:
    if not isinstance(text, str) or "%" in text:
        raise ValueError(f"bad IPv6 address {text!r}")
    try:
        return int(ipaddress.IPv6Address(text))
    except ValueError:
        raise ValueError(f"bad IPv6 address {text!r}") from None


def parse_prefix6(text: Any, *, strict: bool = False) -> tuple[int, int]:
    """`addr/len` (len 128 when omitted); `strict`: host bits must be clear (a route's destination)."""
    if not isinstance(text, str) or "%" in text:
        raise ValueError(f"bad IPv6 prefix {text!r}")
    try:
        iface = ipaddress.IPv6Interface(text)
    except ValueError:
        raise ValueError(f"bad IPv6 prefix {text!r} (want addr/len)") from None
    addr, plen = int(iface.ip), iface.network.prefixlen
    if strict and addr != int(iface.network.network_address):
        raise ValueError(f"{text!r} has host bits set")
    return addr, plen


def route6_from_spec(host: Host, spec: dict[str, Any]) -> tuple[str, Route6 | str]:
    """One `[[route]]` table that is IPv6, as `ip -6 route add` takes it. Returns ("", route), or
    (key, message) naming the key at fault (the caller turns it into file:line)."""
    dst_text = spec.get("dst")
    if dst_text == "default":
        dst, plen = 0, 0
    else:
        try:
            dst, plen = parse_prefix6(dst_text, strict=True)
        except ValueError as exc:
            return "dst", str(exc)
    via = None
    if "via" in spec:
        try:
            via = parse_addr6_text(spec["via"])
        except ValueError as exc:
            return "via", str(exc)
    dev = spec.get("dev")
    if dev is not None and (not isinstance(dev, str) or dev not in host.interfaces):
        return "dev", f"no such interface {dev!r}"
    src = None
    if "src" in spec:
        try:
            src = parse_addr6_text(spec["src"])
        except ValueError as exc:
            return "src", str(exc)
    metric = spec.get("metric", 1024)
    if not isinstance(metric, int) or isinstance(metric, bool) or not 0 <= metric < 1 << 32:
        return "metric", f"metric must be an integer 0..4294967295, not {metric!r}"
    rtype = spec.get("type", "unicast")
    if rtype not in _ROUTE6_TYPES:
        return "type", f"unknown IPv6 route type {rtype!r} (known: {', '.join(_ROUTE6_TYPES)})"
    if spec.get("table", "main") != "main":
        return "table", "IPv6 routes are in table main only"
    if dev is None and via is not None:
        if via & _LINK_LOCAL_MASK == _LINK_LOCAL:
            return "via", f"a link-local gateway {spec['via']} needs dev"
        dev = next((i.name for i in host.interfaces.values() if any(a.contains(via) for a in i.addresses6)), None)
        if dev is None:
            return "via", f"gateway {spec['via']} is not on any interface's IPv6 prefix (No route to host)"
    if dev is None and rtype == "unicast":
        return "dev", "a unicast route needs dev or via"
    return "", Route6(dst, plen, dev, via, metric, rtype, src)


def rules6_ruleset(text: str, origin: str, *, with_counters: bool = False) -> Ruleset:
    """The ip6tables ruleset of `text` (ip6tables-save, as `ip6tables-restore` reads it; `with_counters`:
    `-c`). Raises RulesError naming the line."""
    ruleset = Ruleset(NFPROTO_IPV6)
    if text.strip():
        ruleset.restore(parse_restore(text, file=origin, with_counters=with_counters, family=NFPROTO_IPV6))
    return ruleset
