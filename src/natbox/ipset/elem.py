"""ipset's element syntax: parsing userspace text into kernel elements and printing them back.

Mirrors ipset 7.x `lib/parse.c` (ipset_parse_ip, ipset_parse_proto_port, ipset_parse_iface …),
`lib/print.c` (ipset_print_ip, ipset_print_proto_port …) and `lib/icmp.c`, and the kernel's uadt range
handling (`ip_set_range_to_cidr`, hash:net splitting a range into the fewest CIDR blocks).

An element is a tuple whose fields depend on the set type's dimensions (see `natbox.ipset.settype`):
`ip` and `ip2` are host-order ints, `cidr` ints, `port` a port (for ICMP: type << 8 | code), `proto`
an IP protocol number, `iface` a name, `physdev` 0/1, `mac` 6 bytes, `set` a set name.
"""

from __future__ import annotations

from typing import Final

from natbox.ipset.errors import IpsetError, ProtoFamilyError

__all__ = [
    "ICMPV6_NAMES",
    "ICMP_NAMES",
    "format_icmpv6",
    "format_ip",
    "format_net",
    "format_proto_port",
    "parse_icmp",
    "parse_icmpv6",
    "parse_ip",
    "parse_ip_range",
    "parse_proto_port",
    "parse_uint",
    "range_to_cidrs",
]

# lib/icmp.c `icmp_typecodes`: the first name of a (type, code) is the one printed.
ICMP_NAMES: tuple[tuple[str, int, int], ...] = (
    ("echo-reply", 0, 0), ("pong", 0, 0), ("network-unreachable", 3, 0), ("host-unreachable", 3, 1),
    ("protocol-unreachable", 3, 2), ("port-unreachable", 3, 3), ("fragmentation-needed", 3, 4),
    ("source-route-failed", 3, 5), ("network-unknown", 3, 6), ("host-unknown", 3, 7),
    ("network-prohibited", 3, 9), ("host-prohibited", 3, 10), ("TOS-network-unreachable", 3, 11),
    ("TOS-host-unreachable", 3, 12), ("communication-prohibited", 3, 13), ("host-precedence-violation", 3, 14),
    ("precedence-cutoff", 3, 15), ("source-quench", 4, 0), ("network-redirect", 5, 0), ("host-redirect", 5, 1),
    ("TOS-network-redirect", 5, 2), ("TOS-host-redirect", 5, 3), ("echo-request", 8, 0), ("ping", 8, 0),
    ("router-advertisement", 9, 0), ("router-solicitation", 10, 0), ("ttl-zero-during-transit", 11, 0),
    ("ttl-zero-during-reassembly", 11, 1), ("ip-header-bad", 12, 0), ("required-option-missing", 12, 1),
    ("timestamp-request", 13, 0), ("timestamp-reply", 14, 0), ("address-mask-request", 17, 0),
    ("address-mask-reply", 18, 0),
)
# lib/icmpv6.c `icmpv6_typecodes`: the first name of a (type, code) is the one printed; the misspelt
# "neigbour" names are ipset's own aliases.
ICMPV6_NAMES: tuple[tuple[str, int, int], ...] = (
    ("no-route", 1, 0), ("communication-prohibited", 1, 1), ("address-unreachable", 1, 3),
    ("port-unreachable", 1, 4), ("packet-too-big", 2, 0), ("ttl-zero-during-transit", 3, 0),
    ("ttl-zero-during-reassembly", 3, 1), ("bad-header", 4, 0), ("unknown-header-type", 4, 1),
    ("unknown-option", 4, 2), ("echo-request", 128, 0), ("ping", 128, 0), ("echo-reply", 129, 0),
    ("pong", 129, 0), ("router-solicitation", 133, 0), ("router-advertisement", 134, 0),
    ("neighbour-solicitation", 135, 0), ("neigbour-solicitation", 135, 0), ("neighbour-advertisement", 136, 0),
    ("neigbour-advertisement", 136, 0), ("redirect", 137, 0),
)
_ICMPV6_BY_NAME: Final = {n.lower(): (t, c) for n, t, c in ICMPV6_NAMES}
_ICMPV6_BY_CODE: dict[tuple[int, int], str] = {}
for _n, _t, _c in ICMPV6_NAMES:
    _ICMPV6_BY_CODE.setdefault((_t, _c), _n)
_ICMP_BY_NAME: Final = {n.lower(): (t, c) for n, t, c in ICMP_NAMES}
_ICMP_BY_CODE: dict[tuple[int, int], str] = {}
for _n, _t, _c in ICMP_NAMES:
    _ICMP_BY_CODE.setdefault((_t, _c), _n)

# getprotobyname/getprotobynumber (netbase /etc/protocols), the names ipset prints and accepts.
PROTO_BY_NUM: dict[int, str] = {
    0: "ip", 1: "icmp", 2: "igmp", 4: "ipencap", 6: "tcp", 8: "egp", 12: "pup", 17: "udp", 22: "xns-idp",
    27: "rdp", 29: "iso-tp4", 33: "dccp", 36: "xtp", 37: "ddp", 41: "ipv6", 43: "ipv6-route", 44: "ipv6-frag",
    46: "rsvp", 47: "gre", 50: "esp", 51: "ah", 58: "ipv6-icmp", 59: "ipv6-nonxt", 60: "ipv6-opts", 89: "ospf",
    94: "ipip", 103: "pim", 108: "ipcomp", 112: "vrrp", 115: "l2tp", 132: "sctp", 136: "udplite",
}
_PROTO_BY_NAME: Final = {v: k for k, v in PROTO_BY_NUM.items()}
PORT_PROTOS: Final = (6, 17, 132, 136)  # protocols with ports (ipset's `ipset_proto_with_ports`)


def parse_uint(text: str, lo: int, hi: int, what: str = "") -> int:
    """`string_to_number_ll` (strtoull with base 0: hex `0x..`, octal `0..`, decimal) in [lo, hi], else
    ipset's syntax error."""
    try:
        if text.lower().startswith("0x"):
            v = int(text, 16)
        elif len(text) > 1 and text.startswith("0"):
            v = int(text[1:], 8)
        else:
            v = int(text, 10)
    except ValueError:
        raise IpsetError(f"Syntax error: '{text}' is invalid as number") from None
    if not lo <= v <= hi:
        raise IpsetError(f"Syntax error: '{text}' is out of range {lo}-{hi}")
    return v


def _dotted(text: str) -> int | None:
    parts = text.split(".")
    if len(parts) != 4:
        return None
    val = 0
    for p in parts:
        if not p.isdigit() or len(p) > 3 or int(p) > 255:
            return None
        val = (val << 8) | int(p)
    return val


def parse_ip(text: str) -> int:
    """One IPv4 address (`ipset_parse_ip` without ranges); names are not resolved (sans-IO)."""
    v = _dotted(text)
    if v is None:
        raise IpsetError(f"Syntax error: cannot parse {text}: resolving to IPv4 address failed")
    return v


def format_ip(ip: int) -> str:
    return f"{ip >> 24 & 255}.{ip >> 16 & 255}.{ip >> 8 & 255}.{ip & 255}"


def format_net(ip: int, cidr: int) -> str:
    """`ipset_print_ip` with a cidr: the prefix length is left out for a host (/32)."""
    return format_ip(ip) if cidr == 32 else f"{format_ip(ip)}/{cidr}"


def hostmask(cidr: int) -> int:
    return (0xFFFFFFFF << (32 - cidr)) & 0xFFFFFFFF if cidr else 0


def parse_ip_range(text: str) -> tuple[int, int, int | None]:
    """`ipset_parse_ip` with ranges: `a`, `a/cidr` or `a-b` → (first, last, cidr or None)."""
    if "/" in text:
        a, c = text.split("/", 1)
        cidr = parse_uint(c, 0, 32)
        ip = parse_ip(a)
        m = hostmask(cidr)
        return ip & m, (ip & m) | (~m & 0xFFFFFFFF), cidr
    if "-" in text:
        a, b = text.split("-", 1)
        lo, hi = parse_ip(a), parse_ip(b)
        return min(lo, hi), max(lo, hi), None
    ip = parse_ip(text)
    return ip, ip, None


def range_to_cidrs(lo: int, hi: int) -> list[tuple[int, int]]:
    """`ip_set_range_to_cidr` repeated: the blocks covering [lo, hi], largest first from lo."""
    out: list[tuple[int, int]] = []
    ip = lo
    while ip <= hi:
        for cidr in range(33):
            size = 1 << (32 - cidr)
            if ip & (size - 1) == 0 and ip + size - 1 <= hi:
                break
        out.append((ip, cidr))
        ip += 1 << (32 - cidr)
    return out


def parse_icmp(text: str) -> int:
    """`ipset_parse_icmp`: a name or `type/code` → type << 8 | code."""
    tc = _ICMP_BY_NAME.get(text.lower())
    if tc is not None:
        return tc[0] << 8 | tc[1]
    if "/" in text:
        t, c = text.split("/", 1)
        return parse_uint(t, 0, 255) << 8 | parse_uint(c, 0, 255)
    raise IpsetError(f"Cannot parse {text} as an ICMP type/code.")


def parse_icmpv6(text: str) -> int:
    """`ipset_parse_icmpv6`: a name or `type/code` → type << 8 | code."""
    tc = _ICMPV6_BY_NAME.get(text.lower())
    if tc is not None:
        return tc[0] << 8 | tc[1]
    if "/" in text:
        t, c = text.split("/", 1)
        return parse_uint(t, 0, 255) << 8 | parse_uint(c, 0, 255)
    raise IpsetError(f"Cannot parse {text} as an ICMPv6 type/code.")


def format_icmpv6(port: int) -> str:
    name = _ICMPV6_BY_CODE.get((port >> 8, port & 0xFF))
    return f"ipv6-icmp:{name}" if name else f"ipv6-icmp:{port >> 8}/{port & 0xFF}"


def _parse_port(text: str, proto_name: str) -> int:
    try:
        return parse_uint(text, 0, 65535)
    except IpsetError as e:
        from natbox.rules.services import service_port

        p = service_port(text, proto_name)
        if p is not None:
            return p
        raise IpsetError(f"{e.message}\nSyntax error: '{proto_name}' is invalid as number\n"
                         f"cannot parse '{text}' as a {proto_name} port") from None


def parse_proto_port(text: str, family: int = 2) -> tuple[int, int, int]:
    """`ipset_parse_proto_port`: `[proto:]port[-port]` → (proto, first port, last port). ICMP only in a set
    of family inet (2), ICMPv6 (`icmpv6:` or `ipv6-icmp:`) only in one of family inet6 (10)."""
    proto, colon, port = text.partition(":")
    if not colon or not port:
        proto, port = "tcp", text
    pnum = _PROTO_BY_NAME.get(proto.lower()) if proto != "icmpv6" else 58
    if pnum is None:
        if not proto.isdigit():
            raise IpsetError(f"Syntax error: cannot parse '{proto}' as a protocol")
        pnum = parse_uint(proto, 0, 255)
    if pnum == 1:
        if family != 2:
            raise ProtoFamilyError("Syntax error: Protocol ICMP can be used with family inet only")
        v = parse_icmp(port)
        return 1, v, v
    if pnum == 58:
        if family != 10:
            raise ProtoFamilyError("Syntax error: Protocol ICMPv6 can be used with family inet6 only")
        v = parse_icmpv6(port)
        return 58, v, v
    if pnum not in PORT_PROTOS:
        if port and port != "0" and colon:
            raise IpsetError(f"Syntax error: Protocol {proto} can be used with pseudo port value 0 only.")
        return pnum, 0, 0
    name = PROTO_BY_NUM[pnum]
    if "-" in port:
        a, b = port.split("-", 1)
        lo, hi = _parse_port(a, name), _parse_port(b, name)
        return pnum, min(lo, hi), max(lo, hi)
    p = _parse_port(port, name)
    return pnum, p, p


def format_proto_port(proto: int, port: int) -> str:
    """`ipset_print_proto_port`: `tcp:80`, `icmp:echo-request`, `gre:0`."""
    name = PROTO_BY_NUM.get(proto, str(proto))
    if proto == 1:
        icmp = _ICMP_BY_CODE.get((port >> 8, port & 0xFF))
        return f"icmp:{icmp}" if icmp else f"icmp:{port >> 8}/{port & 0xFF}"
    if proto == 58:
        return format_icmpv6(port)
    return f"{name}:{port}"
