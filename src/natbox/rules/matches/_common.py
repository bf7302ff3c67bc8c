"""Helpers shared by match and target extensions: ports, numbers, protocol names (libxtables)."""

from __future__ import annotations

import re
from typing import Final

from natbox.rules.model import PARAMETER_PROBLEM, RulesError
from natbox.rules.services import service_name, service_port

__all__ = [
    "PROTO_NAMES",
    "parse_port",
    "parse_port_range",
    "parse_uint",
    "print_port",
    "proto_name",
    "quote_string",
]

# `xtables_chain_protos` then /etc/protocols (getprotobynumber), for names iptables prints.
PROTO_NAMES: dict[int, str] = {
    6: "tcp", 132: "sctp", 17: "udp", 136: "udplite", 1: "icmp", 58: "ipv6-icmp", 50: "esp", 51: "ah",
    135: "mobility-header", 0: "all",
}
# Extra /etc/protocols names (netbase), used when names are allowed (save and non-numeric -L).
ETC_PROTOCOLS: dict[int, str] = {
    2: "igmp", 3: "ggp", 4: "ipencap", 5: "st", 8: "egp", 9: "igp", 12: "pup", 20: "hmp", 22: "xns-idp",
    27: "rdp", 29: "iso-tp4", 33: "dccp", 36: "xtp", 37: "ddp", 38: "idpr-cmtp", 41: "ipv6", 43: "ipv6-route",
    44: "ipv6-frag", 45: "idrp", 46: "rsvp", 47: "gre", 57: "skip", 59: "ipv6-nonxt", 60: "ipv6-opts",
    73: "rspf", 81: "vmtp", 88: "eigrp", 89: "ospf", 93: "ax.25", 94: "ipip", 97: "etherip", 98: "encap",
    103: "pim", 108: "ipcomp", 112: "vrrp", 115: "l2tp", 124: "isis", 137: "mpls-in-ip", 138: "manet",
    139: "hip", 140: "shim6", 141: "wesp", 142: "rohc", 143: "ethernet", 262: "mptcp",
}
_NAME_TO_PROTO: dict[str, int] = {_v: _n for _n, _v in (*ETC_PROTOCOLS.items(), *PROTO_NAMES.items())}
_NAME_TO_PROTO.update({"ipv6-mh": 135, "mh": 135, "icmpv6": 58, "ip": 0, "hopopt": 0})


def proto_name(proto: int, numeric: bool) -> str | None:
    """`proto_to_name()` in xshared.c: chain protos first, /etc/protocols unless `numeric`."""
    name = PROTO_NAMES.get(proto)
    if name is not None:
        return name
    if proto and not numeric:
        return ETC_PROTOCOLS.get(proto)
    return None


def parse_protocol(text: str) -> int:
    """`xtables_parse_protocol`: a number 0-255 or a name (case-insensitive)."""
    if text.isdigit():
        n = int(text)
        if n <= 255:
            return n
    else:
        p = _NAME_TO_PROTO.get(text.lower())
        if p is not None and p <= 255:
            return p
    raise RulesError(f"unknown protocol \"{text}\" specified")


def parse_uint(text: str, lo: int, hi: int) -> int | None:
    """`xtables_strtoui`: decimal, 0x-hex or 0-octal, within [lo, hi]; None on error."""
    t = text.strip()
    if not t or t[0] in "+-":
        return None
    try:
        v = int(t, 0) if not (t.startswith("0") and len(t) > 1 and t[1].isdigit()) else int(t, 8)
    except ValueError:
        return None
    if v < lo or v > hi:
        return None
    return v


def parse_port(text: str, proto: str | None, *, xtopt: bool = False) -> int:
    """`xtables_parse_port`: a number 0-65535 or a service name. `xtopt`: the extension's option is
    XTTYPE_PORTRC (udp, dccp), whose refusal is `xtopt_parse_mport`'s text."""
    v = parse_uint(text, 0, 65535)
    if v is not None:
        return v
    p = service_port(text, proto)
    if p is not None:
        return p
    if xtopt:
        raise RulesError(f'Port "{text}" does not resolve to anything.\n', PARAMETER_PROBLEM)
    raise RulesError(f"invalid port/service `{text}' specified", PARAMETER_PROBLEM)


def parse_port_range(text: str, proto: str | None, *, xtopt: bool = False) -> tuple[int, int]:
    """`parse_ports` (tcp/udp): `a`, `a:b`, `a:`, `:b` (`xtopt` as for `parse_port`)."""
    if ":" not in text:
        p = parse_port(text, proto, xtopt=xtopt)
        return p, p
    a, b = text.split(":", 1)
    lo = parse_port(a, proto, xtopt=xtopt) if a else 0
    hi = parse_port(b, proto, xtopt=xtopt) if b else 65535
    if lo > hi:
        raise RulesError("invalid portrange (min > max)")
    return lo, hi


def print_port(port: int, numeric: bool, proto: str) -> str:
    if not numeric:
        name = service_name(port, proto)
        if name is not None:
            return name
    return str(port)


_NO_QUOTE: Final = re.compile("[_0-9a-zA-Z-]+")  # the characters xtables_save_string prints as they are
_ESCAPED: Final = str.maketrans({'"': '\\"', "\\": "\\\\", "'": "\\'"})


def quote_string(s: str) -> str:
    """`xtables_save_string`: " value", or " \"value\"" with `"`, `\\` and `'` escaped (leading space)."""
    if _NO_QUOTE.fullmatch(s):
        return " " + s
    return ' "' + s.translate(_ESCAPED) + '"'
