"""Scenario files: traffic through a host without a capture, as a small TOML file run in a `Lab`.

```toml
duration = 10.0                 # seconds of virtual time (default: the last action + 5)
seed = 1                        # the end hosts' random choices (TCP initial sequence numbers)

[[host]]                        # an end host on one of the natbox host's segments
name = "client"                 # required, unique
interface = "eth0"              # required: the natbox host's interface it is attached to
address = "192.168.50.2/24"     # required
gateway = "192.168.50.1"        # its default route (omit for a host that only talks on-link)
mac = "02:00:00:00:50:02"       # default 02:42 + the address
extra_addresses = ["8.8.8.8"]   # more addresses it answers for (a whole "internet" behind one host)
tcp = { 80 = "HTTP/1.0 200 OK\r\n\r\nhi" }   # listening TCP ports: the response sent to each request
udp = { 5000 = "pong", 7 = true }           # listening UDP ports: a reply, or true to echo the request
dns = { "example.com" = "93.184.216.34" }    # answers DNS A queries on UDP/53 (unknown names: NXDOMAIN)

[[action]]                      # something an end host does at a time; exactly one of ping/tcp/udp/dns
at = 0.0                        # required, seconds
from = "client"                 # required: an end host's name
ping = "198.51.100.2"           # count = 1, interval = 1.0, id (default: per host), ttl = 64
tcp = "198.51.100.2:80"         # connect, send `request` once established; the server answers with its
                                # response and closes; both sides close (FIN/ACK). A port nobody listens
                                # on gets a reset. sport = 40000, ttl = 64, src (one of its addresses)
udp = "198.51.100.2:5000"       # payload = "", sport = 40000, ttl = 64; a closed port: port unreachable
dns = "example.com"             # server = "a.b.c.d" (required), sport = 53000, id = 0x1234, ttl = 64
```

A `ttl` of 1 on a packet the host must forward runs out there: the host answers ICMP time exceeded.

`parse_scenario(text, filename)` raises `ScenarioError` whose message starts with `file:line:` and names
the key (the approach of `natbox.engine.hostfile`). `Scenario.install(lab)` attaches the end hosts and
schedules the actions (interfaces are checked against the lab's host then, with the same messages).
Sans-IO: the caller reads the file.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from natbox.errors import ScenarioError
from natbox.sim.lab import EndHost, Lab
from natbox.tomlfile import Locator, load_toml
from natbox.wire import ipv4, udp

__all__ = [
    "MAX_ACTIONS",
    "MAX_PING_COUNT",
    "Action",
    "EndHostSpec",
    "Scenario",
    "ScenarioError",
    "build_dns_query",
    "dns_answer",
    "parse_scenario",
]

MAX_PING_COUNT = 10_000  # pings one action may send
MAX_ACTIONS = 10_000  # [[action]] entries one file may hold
MAX_DNS_NAME = 255  # octets of a DNS name (RFC 1035 §2.3.4)
DNS_TTL = 300  # seconds, the TTL of the A records a scenario's DNS server answers with
DNS_PORT = 53
TAIL = 5.0  # seconds the lab runs after the last action when the file gives no duration

_TOP_KEYS = {"duration", "seed", "host", "action"}
_HOST_KEYS = {"name", "interface", "address", "gateway", "mac", "extra_addresses", "tcp", "udp", "dns"}
_KINDS = ("ping", "tcp", "udp", "dns")
# per action kind: its optional keys (besides at, from and the kind itself)
_ACTION_KEYS: dict[str, set[str]] = {
    "ping": {"count", "interval", "id", "ttl"},
    "tcp": {"request", "sport", "ttl", "src"},
    "udp": {"payload", "sport", "ttl"},
    "dns": {"server", "sport", "id", "ttl"},
}


@dataclass
class EndHostSpec:
    """One [[host]] entry."""

    name: str
    interface: str
    address: str  # "a.b.c.d/len"
    gateway: str | None = None
    mac: str | None = None
    extra_addresses: tuple[str, ...] = ()
    tcp: dict[int, bytes] = field(default_factory=dict)
    udp: dict[int, bytes | None] = field(default_factory=dict)  # None: echo
    dns: dict[str, int] = field(default_factory=dict)  # lower-case name -> address
    line: int = 1
    index: int = 0


@dataclass
class Action:
    """One [[action]] entry; `kind` is ping, tcp, udp or dns and `target` its value."""

    at: float
    host: str
    kind: str
    target: str
    opts: dict[str, Any] = field(default_factory=dict)
    line: int = 1
    index: int = 0


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{what} must be an integer {lo}..{hi}, not {value!r}")
    return value


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{what} must be a number >= 0, not {value!r}")
    return float(value)


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {value!r}")
    return value


def _ip(value: Any, what: str) -> str:
    text = _str(value, what)
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"{what}: bad IPv4 address {text!r}") from None
    return text


def _endpoint(value: Any, what: str) -> tuple[str, int]:
    text = _str(value, what)
    addr, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{what} must be \"a.b.c.d:port\", not {text!r}")
    return _ip(addr, what), _int(int(port), f"{what} port", 1, 65535)


def _port_key(key: str, what: str) -> int:
    if not key.isdigit():
        raise ValueError(f"{what}: {key!r} is not a port number")
    return _int(int(key), f"{what} port", 1, 65535)


def _dns_name(text: str, what: str) -> str:
    name = text.rstrip(".").lower()
    labels = name.split(".")
    if not name or len(name) > MAX_DNS_NAME - 2 or any(not 0 < len(lab) < 64 for lab in labels):
        raise ValueError(f"{what}: bad DNS name {text!r}")
    return name


def parse_scenario(text: str, filename: str = "<scenario>") -> Scenario:
    """Parse a scenario file. Raises ScenarioError naming file:line and the key."""
    loc = Locator(text, filename, ScenarioError)
    doc = load_toml(text, filename, ScenarioError)
    for key in doc:
        if key not in _TOP_KEYS:
            raise loc.error(None, 0, key, f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    sc = Scenario(filename=filename)
    try:
        if "duration" in doc:
            sc.duration = _num(doc["duration"], "duration")
    except ValueError as exc:
        raise loc.error(None, 0, "duration", str(exc)) from None
    try:
        sc.seed = _int(doc.get("seed", 1), "seed", 0, 2**64 - 1)
    except ValueError as exc:
        raise loc.error(None, 0, "seed", str(exc)) from None
    for section in ("host", "action"):
        items = doc.get(section, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise loc.error(None, 0, section, f"must be an array of tables ([[{section}]])")
    hosts: list[dict[str, Any]] = doc.get("host", [])
    actions: list[dict[str, Any]] = doc.get("action", [])
    if len(actions) > MAX_ACTIONS:
        raise loc.error("action", MAX_ACTIONS, None, f"more than {MAX_ACTIONS} actions")
    for i, h in enumerate(hosts):
        spec = _parse_host(h, i, loc)
        if any(s.name == spec.name for s in sc.hosts):
            raise loc.error("host", i, "name", f"duplicate host name {spec.name!r}")
        sc.hosts.append(spec)
    names = {s.name for s in sc.hosts}
    for i, a in enumerate(actions):
        act = _parse_action(a, i, loc)
        if act.host not in names:
            known = ", ".join(sorted(names)) or "none"
            raise loc.error("action", i, "from", f"no host named {act.host!r} (hosts: {known})")
        sc.actions.append(act)
    return sc


def _parse_host(h: dict[str, Any], i: int, loc: Locator) -> EndHostSpec:
    for key in h:
        if key not in _HOST_KEYS:
            raise loc.error("host", i, key, f"unknown key (known: {', '.join(sorted(_HOST_KEYS))})")
    for key in ("name", "interface", "address"):
        if key not in h:
            raise loc.error("host", i, None, f"missing required key {key!r}")
    key = "name"
    try:
        spec = EndHostSpec(_str(h["name"], "name"), "", "", line=loc.line_of("host", i, None), index=i)
        key = "interface"
        spec.interface = _str(h["interface"], "interface")
        key = "address"
        addr = _str(h["address"], "address")
        try:
            iface = ipaddress.IPv4Interface(addr)
        except ValueError:
            raise ValueError(f"bad address {addr!r} (want a.b.c.d/len)") from None
        spec.address = f"{iface.ip}/{iface.network.prefixlen}"
        key = "gateway"
        if "gateway" in h:
            spec.gateway = _ip(h["gateway"], "gateway")
        key = "mac"
        if "mac" in h:
            mac = _str(h["mac"], "mac")
            if not re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", mac):
                raise ValueError(f"bad MAC address {mac!r} (want aa:bb:cc:dd:ee:ff)")
            spec.mac = mac
        key = "extra_addresses"
        extra = h.get("extra_addresses", [])
        if not isinstance(extra, list):
            raise ValueError("must be a list of addresses")
        spec.extra_addresses = tuple(_ip(a, "extra_addresses") for a in extra)
        key = "tcp"
        tcp = h.get("tcp", {})
        if not isinstance(tcp, dict):
            raise ValueError("must be a table { port = \"response\" }")
        spec.tcp = {_port_key(k, "tcp"): _str(v, f"tcp.{k}").encode() for k, v in tcp.items()}
        key = "udp"
        udp_ports = h.get("udp", {})
        if not isinstance(udp_ports, dict):
            raise ValueError("must be a table { port = \"reply\" or true }")
        for k, v in udp_ports.items():
            if v is True:
                spec.udp[_port_key(k, "udp")] = None
            else:
                spec.udp[_port_key(k, "udp")] = _str(v, f"udp.{k} (a reply, or true to echo)").encode()
        key = "dns"
        dns = h.get("dns", {})
        if not isinstance(dns, dict):
            raise ValueError("must be a table { \"name\" = \"a.b.c.d\" }")
        spec.dns = {_dns_name(k, "dns"): int(ipaddress.IPv4Address(_ip(v, f"dns.{k}"))) for k, v in dns.items()}
    except ValueError as exc:
        raise loc.error("host", i, key, str(exc)) from None
    return spec


def _parse_action(a: dict[str, Any], i: int, loc: Locator) -> Action:
    kinds = [k for k in _KINDS if k in a]
    if len(kinds) != 1:
        raise loc.error("action", i, None, f"give exactly one of {', '.join(_KINDS)}"
                        + (f" (found {', '.join(kinds)})" if kinds else ""))
    kind = kinds[0]
    allowed = {"at", "from", kind} | _ACTION_KEYS[kind]
    for key in a:
        if key not in allowed:
            raise loc.error("action", i, key, f"unknown key for a {kind} action (known: {', '.join(sorted(allowed))})")
    for key in ("at", "from"):
        if key not in a:
            raise loc.error("action", i, None, f"missing required key {key!r}")
    key = "at"
    try:
        act = Action(_num(a["at"], "at"), "", kind, "", line=loc.line_of("action", i, None), index=i)
        key = "from"
        act.host = _str(a["from"], "from")
        key = kind
        opts = act.opts
        if kind == "ping":
            act.target = _ip(a["ping"], "ping")
            key = "count"
            opts["count"] = _int(a.get("count", 1), "count", 1, MAX_PING_COUNT)
            key = "interval"
            opts["interval"] = _num(a.get("interval", 1.0), "interval")
            key = "id"
            opts["id"] = _int(a["id"], "id", 0, 0xFFFF) if "id" in a else None
        elif kind in ("tcp", "udp"):
            addr, port = _endpoint(a[kind], kind)
            act.target = addr
            opts["port"] = port
            key = "sport"
            opts["sport"] = _int(a.get("sport", 40000), "sport", 1, 65535)
            if kind == "tcp":
                key = "request"
                opts["request"] = _str(a.get("request", ""), "request").encode()
                key = "src"
                opts["src"] = _ip(a["src"], "src") if "src" in a else None
            else:
                key = "payload"
                opts["payload"] = _str(a.get("payload", ""), "payload").encode()
        else:
            act.target = _dns_name(_str(a["dns"], "dns"), "dns")
            key = "server"
            if "server" not in a:
                raise ValueError("a dns action needs server = \"a.b.c.d\"")
            opts["server"] = _ip(a["server"], "server")
            key = "sport"
            opts["sport"] = _int(a.get("sport", 53000), "sport", 1, 65535)
            key = "id"
            opts["id"] = _int(a.get("id", 0x1234), "id", 0, 0xFFFF)
        key = "ttl"
        opts["ttl"] = _int(a.get("ttl", 64), "ttl", 1, 255)
    except ValueError as exc:
        raise loc.error("action", i, key, str(exc)) from None
    return act


# --- DNS (RFC 1035 §4.1) -------------------------------------------------------------------------------

def _encode_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode("ascii", "replace") for label in name.split(".")) + b"\0"


def build_dns_query(ident: int, name: str) -> bytes:
    """A recursive query for the A record of `name` (as `dig` or a stub resolver sends it)."""
    header = ident.to_bytes(2, "big") + b"\x01\x00" + b"\x00\x01\x00\x00\x00\x00\x00\x00"  # RD, QDCOUNT 1
    return header + _encode_name(name) + b"\x00\x01\x00\x01"  # QTYPE A, QCLASS IN


def dns_answer(query: bytes, zone: Mapping[str, int]) -> bytes | None:
    """The answer of an authoritative server holding `zone` to `query`: an A record (TTL `DNS_TTL`, the
    name compressed as a pointer to the question), NXDOMAIN for other names, or None when `query` is not a
    one-question standard query (then it is ignored). Never raises."""
    if len(query) < 17 or query[2] & 0xF8 or query[4:6] != b"\x00\x01":  # QR=0, OPCODE=0, QDCOUNT=1
        return None
    off = 12
    labels: list[str] = []
    while True:
        if off >= len(query) or off - 12 > MAX_DNS_NAME:
            return None
        n = query[off]
        if n == 0:
            off += 1
            break
        if n >= 64 or off + 1 + n > len(query):
            return None
        labels.append(query[off + 1:off + 1 + n].decode("ascii", "replace").lower())
        off += 1 + n
    if off + 4 > len(query):
        return None
    question = query[12:off + 4]
    qtype = (query[off] << 8) | query[off + 1]
    addr = zone.get(".".join(labels))
    rd = query[2] & 0x01
    flags_hi = 0x84 | rd  # QR, AA, RD copied
    if addr is None:
        return query[0:2] + bytes([flags_hi, 0x03]) + b"\x00\x01\x00\x00\x00\x00\x00\x00" + question
    if qtype != 1:  # the name exists but has no record of that type: NOERROR, no answer
        return query[0:2] + bytes([flags_hi, 0x00]) + b"\x00\x01\x00\x00\x00\x00\x00\x00" + question
    answer = b"\xc0\x0c\x00\x01\x00\x01" + DNS_TTL.to_bytes(4, "big") + b"\x00\x04" + addr.to_bytes(4, "big")
    return query[0:2] + bytes([flags_hi, 0x00]) + b"\x00\x01\x00\x01\x00\x00\x00\x00" + question + answer


def _serve_dns(end: EndHost, zone: dict[str, int]) -> None:
    """Make `end` answer DNS queries on UDP/53 from `zone` (other datagrams as before)."""
    plain: Callable[[int, int, bytes, bytes], None] = end._udp_in

    def udp_in(src: int, dst: int, l4: bytes, datagram: bytes) -> None:
        if ((l4[2] << 8) | l4[3]) == DNS_PORT:
            reply = dns_answer(l4[8:], zone)
            if reply is not None:
                sport = (l4[0] << 8) | l4[1]
                seg = udp.build_udp(dst, src, DNS_PORT, sport, reply)
                end.send_ip(ipv4.build_ipv4(dst, src, 17, seg, ttl=64, ident=end._ip_id(), df=True))
            return
        plain(src, dst, l4, datagram)

    setattr(end, "_udp_in", udp_in)  # noqa: B010 - replaces the bound method on this instance only


@dataclass
class Scenario:
    """A parsed scenario file."""

    filename: str = "<scenario>"
    duration: float | None = None
    seed: int = 1
    hosts: list[EndHostSpec] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)

    @property
    def end_time(self) -> float:
        """When the lab stops: `duration`, else the last action (its last ping) plus `TAIL` seconds."""
        if self.duration is not None:
            return self.duration
        last = 0.0
        for a in self.actions:
            t = a.at
            if a.kind == "ping":
                t += (a.opts["count"] - 1) * a.opts["interval"]
            last = max(last, t)
        return last + TAIL

    def _error(self, section: str, index: int, line: int, key: str, message: str) -> ScenarioError:
        return ScenarioError(f"{self.filename}:{line}: {section}[{index}].{key}: {message}")

    def install(self, lab: Lab) -> None:
        """Attach the end hosts to `lab` and schedule the actions. Raises ScenarioError for an interface
        the lab's host does not have."""
        for spec in self.hosts:
            if spec.interface not in lab.host.interfaces:
                have = ", ".join(n for n, i in lab.host.interfaces.items() if i.kind != "loopback")
                raise self._error("host", spec.index, spec.line, "interface",
                                  f"the host has no interface {spec.interface!r} (it has: {have})")
            end = lab.add_host(spec.name, spec.interface, spec.address, gateway=spec.gateway, mac=spec.mac,
                               extra_addrs=spec.extra_addresses)
            end.listen_tcp.update(spec.tcp)
            end.listen_udp.update(spec.udp)
            if spec.dns:
                _serve_dns(end, dict(spec.dns))
        for act in self.actions:
            self._schedule(lab, act)

    @staticmethod
    def _schedule(lab: Lab, act: Action) -> None:
        end = lab.hosts[act.host]
        o = act.opts
        ttl: int = o["ttl"]
        if act.kind == "ping":
            ident: int | None = o["id"]
            if ident is None:
                end.ident += 1
                ident = 0x1000 + end.ident
            for seq in range(1, o["count"] + 1):
                lab.at(act.at + (seq - 1) * o["interval"],
                       functools.partial(end.ping, act.target, ident=ident, seq=seq, ttl=ttl))
        elif act.kind == "tcp":
            lab.at(act.at, lambda: end.tcp_connect(act.target, o["port"], sport=o["sport"], request=o["request"],
                                                   ttl=ttl, src=o["src"]))
        elif act.kind == "udp":
            lab.at(act.at, lambda: end.udp_send(act.target, o["port"], o["payload"], sport=o["sport"], ttl=ttl))
        else:
            query = build_dns_query(o["id"], act.target)
            lab.at(act.at, lambda: end.udp_send(o["server"], DNS_PORT, query, sport=o["sport"], ttl=ttl))
