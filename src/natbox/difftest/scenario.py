"""Differential-test scenarios: a router, end hosts, a ruleset and timed traffic, written as TOML.

```toml
name = "masquerade-ping"                  # default: the file name
description = "one line shown in reports"
settle = 0.3                              # seconds to wait after the last step (default 0.3, max 5)

[router]
rules = '''*nat ... COMMIT'''             # iptables-save text, applied with iptables-restore
ipsets = '''create s hash:net ...'''     # optional `ipset save` text, restored (ipset restore) before the rules
nfacct = ["fwd", "cap packet 3"]          # optional nfacct objects, each the arguments of `nfacct add`
                                          # (NAME, or NAME byte|packet QUOTA), created before the rules
[router.sysctl]                           # applied in the router's namespace, before the rules
"net.ipv4.ip_forward" = 1

[[router.interface]]                      # one veth per interface; the peer end is in the host's netns
name = "lan0"                             # at most 10 characters
addresses = ["192.168.50.1/24"]           # first is primary; kernel rules decide secondary flags
mtu = 1500

[[router.bridge]]                         # optional: a bridge in the router (br_netfilter on); its ports are
name = "br0"                              # router interfaces (without addresses) whose hosts share its subnet
ports = ["lan1", "lan2"]
addresses = ["192.168.60.1/24"]

[[host]]                                  # an end host: its own namespace, attached to one router interface
                                          # (several hosts on one interface share a bridge)
name = "cli"
attach = "lan0"
addresses = ["192.168.50.2/24", "192.168.50.3/24"]
gateway = "192.168.50.1"                  # default route (optional)
rules = '''*filter ... COMMIT'''             # optional iptables-save text for the END HOST's own netns, e.g.
                                          # to keep its stack from answering crafted TCP with RSTs

[[step]]                                  # steps run in order; `at` is seconds from the start
at = 0.0
host = "cli"
send = "udp"                              # crafted: icmp_echo, udp, tcp, raw
src = "192.168.50.3"                      # default: the host's first address
dst = "198.51.100.2"
sport = 40010
dport = 5000
payload = "hello"                         # or payload_hex = "00ff", or payload_len = 1200
ttl = 64
ip_id = 4242                              # default: 1000 + step number
zero_checksum = false                     # udp only
fragment = 600                            # optional: split into fragments of this many payload bytes
order = "reverse"                         # fragment order: "forward" (default) or "reverse"

[[step]]                                  # a change on the router while connections live: run in the
at = 0.5                                  # router's netns on the kernel side; natbox's replay applies the
exec = "iptables -t nat -I POSTROUTING -j ACCEPT"   # same change between the same input frames (by time)

[[step]]
at = 0.2
host = "srv"
run = "udp_server"                        # programs: ping, udp_server, tcp_server, udp_client, tcp_client
port = 5000                               # servers echo what they receive, until the run ends
```

Crafted fields per kind: `icmp_echo` (icmp_id, seq, icmp_type=8, code=0), `udp` (sport, dport, zero_checksum),
`tcp` (sport, dport, flags like "S", "SA", "PA", "F", "R"; seq, ack, window, options: a list of
"mss=1460", "wscale=7", "sackok", "ts=VAL:ECR", "nop"), `raw` (proto). Common: src, dst, ttl, ip_id, tos, df.
Programs: `ping` (a Python raw-socket pinger: dst, count, interval, size, src, icmp_id), `*_server`
(port, bind), `*_client` (dst, dport, sport,
src, payload, count). `run = "sleep"` just waits `duration`.

`exec` steps (no `host`): `iptables ARGS` (applied to natbox's Ruleset), `ip addr add|del A/P dev D`,
`ip link set D down|up`, `conntrack -F` (applied to natbox's Engine). Leave ~0.1 s free of traffic around
an `exec` step: a frame the router receives while the command runs makes the replay order ambiguous and
is reported as a harness error.

`router.nfacct`: the accounting objects `-m nfacct --nfacct-name NAME` rules count into (a rule may only name
one that exists). The kernel side runs `nfacct add ARGS` for each before the rules; the router's snapshot
records `nfacct list`, from which natbox's replay creates the same objects; after the traffic both sides'
`nfacct list` are compared byte for byte (with the rule counters).

`known_failure = "reason"` (top level) marks a scenario whose difference is a known natbox bug: the
runner reports it as XFAIL with the reason (and XPASS once it agrees).

Addresses must be in 10/8, 172.16/12, 192.168/16 or 198.51.100.0/24 (never 192.0.2.0/24 or 203.0.113.0/24).

IPv6: addresses in fd00::/8 or 2001:db8::/32 (added `nodad`), `gateway6` for a host's IPv6 default route,
`[router] rules6` (ip6tables-save text), sysctls such as "net.ipv6.conf.all.forwarding" = 1. Crafted packets
to an IPv6 `dst` are IPv6: `ttl` is the hop limit, `icmp_echo` is ICMPv6 128, `fragment` makes Fragment
headers (id `ip_id`, any size), `atomic = true` one atomic fragment. `send = "icmp6_error"` (icmp_type,
code, info: the MTU or pointer) quotes a UDP datagram quote_src:sport > quote_dst:dport (quote_hlim,
payload). Programs pick the family from their addresses. Neighbour entries stay permanent both ways;
ND/MLD frames are left out of the comparison.
"""

from __future__ import annotations

import ipaddress
import shlex
import tomllib
from dataclasses import dataclass, field
from typing import Any

from natbox.errors import ScenarioError

__all__ = ["EXEC_FORMS", "BridgeSpec", "HostSpec", "IfaceSpec", "Scenario", "ScenarioError", "Step", "parse_exec",
           "parse_scenario"]

MAX_STEPS = 200  # steps per scenario
MAX_HOSTS = 8  # end hosts (namespaces) per scenario
MAX_AT = 30.0  # seconds: the latest a step may start
MAX_SETTLE = 5.0  # seconds waited after the last step
IFNAME_MAX = 10  # router interface names (the harness prefixes nothing, but peers get suffixes)

ALLOWED_NETS = [ipaddress.IPv4Network(n) for n in
                ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "198.51.100.0/24")]
ALLOWED_NETS6 = [ipaddress.IPv6Network(n) for n in ("fd00::/8", "2001:db8::/32", "fe80::/10")]
CRAFTED = ("icmp_echo", "udp", "tcp", "raw", "icmp6_error")
PROGRAMS = ("ping", "udp_server", "tcp_server", "udp_client", "tcp_client", "sleep")
# step key -> type, per family of steps (validated at load time)
_COMMON_KEYS = {"at": float, "host": str, "send": str, "run": str, "exec": str}
# the router commands an `exec` step may run (argv prefixes), each mirrored on natbox's side
EXEC_FORMS = ("iptables", "ip6tables", "ip addr add", "ip addr del", "ip link set", "conntrack -F")
ROUTER = "router"  # the `host` of an exec step
_CRAFT_KEYS: dict[str, type] = {
    "src": str, "dst": str, "ttl": int, "ip_id": int, "tos": int, "df": bool, "payload": str,
    "payload_hex": str, "payload_len": int, "fragment": int, "order": str, "icmp_id": int, "seq": int,
    "icmp_type": int, "code": int, "sport": int, "dport": int, "zero_checksum": bool, "flags": str,
    "ack": int, "window": int, "options": list, "proto": int, "atomic": bool, "info": int, "quote_src": str,
    "quote_dst": str, "quote_hlim": int,
}
_RUN_KEYS: dict[str, type] = {
    "dst": str, "count": int, "interval": float, "size": int, "src": str, "port": int, "bind": str,
    "dport": int, "sport": int, "payload": str, "duration": float, "timeout": float, "icmp_id": int,
}


@dataclass
class IfaceSpec:
    name: str
    addresses: list[str]
    mtu: int = 1500


@dataclass
class BridgeSpec:
    """A bridge in the router namespace: `ports` are router interfaces (veths to end hosts) enslaved to it."""

    name: str
    ports: list[str]
    addresses: list[str]


@dataclass
class HostSpec:
    name: str
    attach: str
    addresses: list[str]
    gateway: str | None = None
    rules: str = ""  # iptables-save text applied in the end host's netns (not the router's; natbox ignores it)
    gateway6: str | None = None  # IPv6 default route (optional)


@dataclass
class Step:
    """One traffic step: a crafted packet (`send`), a program (`run`), at `at` seconds."""

    at: float
    host: str
    send: str | None = None
    run: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    index: int = 0
    exec: list[str] | None = None  # argv of a router command (host is "router")


@dataclass
class Scenario:
    name: str
    description: str
    interfaces: list[IfaceSpec]
    hosts: list[HostSpec]
    steps: list[Step]
    sysctls: dict[str, str] = field(default_factory=dict)
    rules: str = ""
    settle: float = 0.3
    ipsets: str = ""  # `ipset save` text restored in the router before its rules
    origin: str = "<scenario>"
    known_failure: str | None = None  # why natbox differs here (a known bug): reported as XFAIL
    rules6: str = ""  # ip6tables-save text, applied with ip6tables-restore
    bridges: list[BridgeSpec] = field(default_factory=list)  # bridges in the router, over some of its interfaces
    nfacct: list[list[str]] = field(default_factory=list)  # the argv of `nfacct add` per object, in order

    def bridge_of(self, iface: str) -> BridgeSpec | None:
        """The bridge whose port `iface` is, if any."""
        return next((b for b in self.bridges if iface in b.ports), None)

    @property
    def uses_ipv6(self) -> bool:
        """Whether any address is IPv6: the lab then keeps IPv6 on (without DAD, RAs or solicitations)."""
        return bool(self.rules6.strip()) or any(":" in a for i in self.interfaces for a in i.addresses) or any(
            ":" in a for h in self.hosts for a in h.addresses)

    def host(self, name: str) -> HostSpec:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)


def _check_addr(text: str, where: str, *, prefix: bool) -> None:
    if ":" in text:
        _check_addr6(text, where, prefix=prefix)
        return
    try:
        ip = ipaddress.IPv4Interface(text).ip if prefix else ipaddress.IPv4Address(text)
    except ValueError:
        raise ScenarioError(f"{where}: bad IPv4 {'prefix' if prefix else 'address'} {text!r}") from None
    if prefix and "/" not in text:
        raise ScenarioError(f"{where}: {text!r} needs a prefix length")
    if not any(ip in n for n in ALLOWED_NETS):
        raise ScenarioError(f"{where}: {text} is outside 10/8, 172.16/12, 192.168/16 and 198.51.100.0/24")


def _check_addr6(text: str, where: str, *, prefix: bool) -> None:
    """IPv6 scenario addresses: unique local fd00::/8 or documentation 2001:db8::/32 (and link-local)."""
    try:
        ip = ipaddress.IPv6Interface(text).ip if prefix else ipaddress.IPv6Address(text)
    except ValueError:
        raise ScenarioError(f"{where}: bad IPv6 {'prefix' if prefix else 'address'} {text!r}") from None
    if prefix and "/" not in text:
        raise ScenarioError(f"{where}: {text!r} needs a prefix length")
    if not any(ip in n for n in ALLOWED_NETS6):
        raise ScenarioError(f"{where}: {text} is outside fd00::/8, 2001:db8::/32 and fe80::/10")


def _typed(value: Any, kind: type, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ScenarioError(f"{where}: must be {kind.__name__}, not {value!r}")
    return value


def _known(table: dict[str, Any], keys: set[str], where: str) -> None:
    unknown = sorted(set(table) - keys)
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {unknown} (known: {', '.join(sorted(keys))})")


def parse_scenario(text: str, origin: str = "<scenario>") -> Scenario:
    """Parse and validate a scenario (pure). Raises ScenarioError naming `origin` and the key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{origin}: TOML syntax error: {exc}") from None
    unknown = set(doc) - {"name", "description", "settle", "router", "host", "step", "known_failure"}
    if unknown:
        raise ScenarioError(f"{origin}: unknown keys {sorted(unknown)}")
    stem = origin.rsplit("/", 1)[-1].removesuffix(".toml")
    router = _typed(doc.get("router", {}), dict, f"{origin}: router")
    _known(router, {"rules", "rules6", "sysctl", "interface", "ipsets", "bridge", "nfacct"}, f"{origin}: router")
    ifaces: list[IfaceSpec] = []
    for i, spec in enumerate(_typed(router.get("interface", []), list, f"{origin}: router.interface")):
        where = f"{origin}: router.interface[{i}]"
        _known(_typed(spec, dict, where), {"name", "addresses", "mtu"}, where)
        name = _typed(spec.get("name"), str, f"{where}.name")
        if not 0 < len(name) <= IFNAME_MAX or not name.replace("_", "").isalnum():
            raise ScenarioError(f"{where}.name: {name!r} must be 1..{IFNAME_MAX} letters/digits")
        addrs = [_typed(a, str, f"{where}.addresses") for a in _typed(spec.get("addresses", []), list, where)]
        for a in addrs:
            _check_addr(a, f"{where}.addresses", prefix=True)
        ifaces.append(IfaceSpec(name, addrs, _typed(spec.get("mtu", 1500), int, f"{where}.mtu")))
    if not ifaces:
        raise ScenarioError(f"{origin}: router needs at least one [[router.interface]]")
    if len({i.name for i in ifaces}) != len(ifaces):
        raise ScenarioError(f"{origin}: router interface names repeat")
    bridges = _parse_bridges(router, ifaces, origin)
    sysctls = {str(k): str(int(v)) if isinstance(v, bool) else str(v)
               for k, v in _typed(router.get("sysctl", {}), dict, f"{origin}: router.sysctl").items()}
    rules = _typed(router.get("rules", ""), str, f"{origin}: router.rules")
    ipsets = _typed(router.get("ipsets", ""), str, f"{origin}: router.ipsets")
    hosts: list[HostSpec] = []
    for i, spec in enumerate(_typed(doc.get("host", []), list, f"{origin}: host")):
        where = f"{origin}: host[{i}]"
        _known(_typed(spec, dict, where), {"name", "attach", "addresses", "gateway", "gateway6", "rules"}, where)
        name = _typed(spec.get("name"), str, f"{where}.name")
        if not 0 < len(name) <= 8 or not name.isalnum():
            raise ScenarioError(f"{where}.name: {name!r} must be 1..8 letters/digits")
        attach = _typed(spec.get("attach"), str, f"{where}.attach")
        if attach not in {i.name for i in ifaces}:
            raise ScenarioError(f"{where}.attach: no router interface {attach!r}")
        addrs = [_typed(a, str, f"{where}.addresses") for a in _typed(spec.get("addresses", []), list, where)]
        if not addrs:
            raise ScenarioError(f"{where}.addresses: at least one address")
        for a in addrs:
            _check_addr(a, f"{where}.addresses", prefix=True)
        gw = spec.get("gateway")
        if gw is not None:
            _check_addr(_typed(gw, str, f"{where}.gateway"), f"{where}.gateway", prefix=False)
        gw6 = spec.get("gateway6")
        if gw6 is not None:
            _check_addr6(_typed(gw6, str, f"{where}.gateway6"), f"{where}.gateway6", prefix=False)
        hosts.append(HostSpec(name, attach, addrs, gw, _typed(spec.get("rules", ""), str, f"{where}.rules"), gw6))
    if len(hosts) > MAX_HOSTS or len({h.name for h in hosts}) != len(hosts):
        raise ScenarioError(f"{origin}: at most {MAX_HOSTS} hosts with distinct names")
    steps = _parse_steps(doc, origin, {h.name for h in hosts})
    settle = _typed(doc.get("settle", 0.3), float, f"{origin}: settle")
    if not 0 <= settle <= MAX_SETTLE:
        raise ScenarioError(f"{origin}: settle must be 0..{MAX_SETTLE}")
    known = doc.get("known_failure")
    if known is not None:
        known = _typed(known, str, f"{origin}: known_failure")
    rules6 = _typed(router.get("rules6", ""), str, f"{origin}: router.rules6")
    return Scenario(str(doc.get("name", stem)), str(doc.get("description", "")), ifaces, hosts, steps,
                    sysctls, rules, settle, ipsets, origin, known, rules6, bridges, _parse_nfacct(router, origin))


NFACCT_NAME_MAX = 31  # characters of an object's name (NFACCT_NAME_MAX - 1: nfacct cuts longer names)


def _parse_nfacct(router: dict[str, Any], origin: str) -> list[list[str]]:
    """`router.nfacct`: each entry the arguments of `nfacct add` (NAME, or NAME byte|packet QUOTA), names
    distinct, printable and at most 31 characters (nfacct would cut a longer one)."""
    objects: list[list[str]] = []
    for i, spec in enumerate(_typed(router.get("nfacct", []), list, f"{origin}: router.nfacct")):
        where = f"{origin}: router.nfacct[{i}]"
        words = _typed(spec, str, where).split()
        quota_ok = len(words) == 3 and words[1] in ("byte", "packet") and words[2].isdigit() \
            and int(words[2]) < 1 << 64
        if len(words) not in (1, 3) or (len(words) == 3 and not quota_ok):
            raise ScenarioError(f"{where}: {spec!r}: write NAME or NAME byte|packet QUOTA (QUOTA a number)")
        if not 0 < len(words[0]) <= NFACCT_NAME_MAX or not words[0].isprintable():
            raise ScenarioError(f"{where}: name {words[0]!r} must be 1..{NFACCT_NAME_MAX} printable characters")
        if any(o[0] == words[0] for o in objects):
            raise ScenarioError(f"{where}: object {words[0]!r} declared twice")
        objects.append(words)
    return objects


def _parse_bridges(router: dict[str, Any], ifaces: list[IfaceSpec], origin: str) -> list[BridgeSpec]:
    """`[[router.bridge]]`: name, ports (router interfaces without addresses, in no other bridge), addresses."""
    bridges: list[BridgeSpec] = []
    names = {i.name for i in ifaces}
    taken: set[str] = set()
    for i, spec in enumerate(_typed(router.get("bridge", []), list, f"{origin}: router.bridge")):
        where = f"{origin}: router.bridge[{i}]"
        _known(_typed(spec, dict, where), {"name", "ports", "addresses"}, where)
        name = _typed(spec.get("name"), str, f"{where}.name")
        if not 0 < len(name) <= IFNAME_MAX or not name.isalnum() or name in names:
            raise ScenarioError(f"{where}.name: {name!r} must be 1..{IFNAME_MAX} letters/digits, not an interface's")
        names.add(name)
        ports = [_typed(p, str, f"{where}.ports") for p in _typed(spec.get("ports", []), list, f"{where}.ports")]
        for p in ports:
            iface = next((f for f in ifaces if f.name == p), None)
            if iface is None or p in taken or iface.addresses:
                raise ScenarioError(f"{where}.ports: {p!r} must be a router interface without addresses, "
                                    "in one bridge only")
            taken.add(p)
        if not ports:
            raise ScenarioError(f"{where}.ports: at least one port")
        addrs = [_typed(a, str, f"{where}.addresses") for a in _typed(spec.get("addresses", []), list, where)]
        for a in addrs:
            _check_addr(a, f"{where}.addresses", prefix=True)
        bridges.append(BridgeSpec(name, ports, addrs))
    return bridges


def parse_exec(text: str, where: str) -> list[str]:
    """The argv of an `exec` step, validated against EXEC_FORMS (pure)."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    if not argv:
        raise ScenarioError(f"{where}: empty command")
    joined = " ".join(argv)
    if not any(joined == form or joined.startswith(form + " ") for form in EXEC_FORMS):
        raise ScenarioError(f"{where}: {text!r} is not one of: {', '.join(EXEC_FORMS)} ...")
    if argv[:2] == ["ip", "addr"] and (len(argv) != 6 or argv[4] != "dev" or "/" not in argv[3]):
        raise ScenarioError(f"{where}: write `ip addr add|del A/P dev D`")
    if argv[:3] == ["ip", "link", "set"] and (len(argv) != 5 or argv[4] not in ("up", "down")):
        raise ScenarioError(f"{where}: write `ip link set D up|down`")
    if argv[0] == "ip" and argv[1] == "addr":
        _check_addr(argv[3], where, prefix=True)
    return argv


def _parse_steps(doc: dict[str, Any], origin: str, hosts: set[str]) -> list[Step]:
    steps: list[Step] = []
    raw = _typed(doc.get("step", []), list, f"{origin}: step")
    if len(raw) > MAX_STEPS:
        raise ScenarioError(f"{origin}: at most {MAX_STEPS} steps")
    last = 0.0
    for i, spec in enumerate(raw):
        where = f"{origin}: step[{i}]"
        at = _typed(spec.get("at", last), float, f"{where}.at")
        if not last <= at <= MAX_AT:
            raise ScenarioError(f"{where}.at: {at} must be >= the previous step's and <= {MAX_AT}")
        last = at
        if "exec" in spec:
            unknown = sorted(set(spec) - {"at", "exec", "host"})
            if unknown or spec.get("host", ROUTER) != ROUTER:
                raise ScenarioError(f"{where}: an exec step takes only at and exec (host is the router)")
            argv = parse_exec(_typed(spec["exec"], str, f"{where}.exec"), f"{where}.exec")
            steps.append(Step(at, ROUTER, index=i, exec=argv))
            continue
        host = _typed(spec.get("host"), str, f"{where}.host")
        if host not in hosts:
            raise ScenarioError(f"{where}.host: no host {host!r}")
        send, run = spec.get("send"), spec.get("run")
        if (send is None) == (run is None):
            raise ScenarioError(f"{where}: give exactly one of send or run")
        keys = _CRAFT_KEYS if send is not None else _RUN_KEYS
        if send is not None and send not in CRAFTED:
            raise ScenarioError(f"{where}.send: {send!r} not one of {', '.join(CRAFTED)}")
        if run is not None and run not in PROGRAMS:
            raise ScenarioError(f"{where}.run: {run!r} not one of {', '.join(PROGRAMS)}")
        args: dict[str, Any] = {}
        for key, value in spec.items():
            if key in _COMMON_KEYS:
                continue
            if key not in keys:
                raise ScenarioError(f"{where}.{key}: unknown key for this step")
            args[key] = _typed(value, keys[key], f"{where}.{key}")
            if key in ("src", "dst", "bind"):
                _check_addr(value, f"{where}.{key}", prefix=False)
        if send is not None and "dst" not in args:
            raise ScenarioError(f"{where}: a crafted packet needs dst")
        if run in ("ping", "udp_client", "tcp_client") and "dst" not in args:
            raise ScenarioError(f"{where}: {run} needs dst")
        if args.get("order", "forward") not in ("forward", "reverse"):
            raise ScenarioError(f"{where}.order: forward or reverse")
        frag = args.get("fragment")
        if frag is not None and (frag <= 0 or (frag % 8 and ":" not in str(args.get("dst", "")))):
            raise ScenarioError(f"{where}.fragment: a positive multiple of 8 (any size for IPv6)")
        steps.append(Step(at, host, send, run, args, i))
    return steps
