"""ipset's element syntax for sets of family inet6 (ipset 7.17 lib/parse.c, lib/print.c, lib/icmpv6.c).

IPv6 elements are the IPv4 tuples with 128-bit host-order ints for addresses. What differs from inet:
- no address ranges: the first address of hash:ip, hash:ip,port and hash:ip,port,ip is a plain address
  (`ipset_parse_ip4_single6` → `ipset_parse_single_ip`: a `/128` suffix is tolerated), networks are
  `addr[/cidr]` (`ipset_parse_ip4_net6` → `ipset_parse_ipnet`: "IP address or IP/cidr must be specified");
- ports may name ICMPv6 (`icmpv6:` or `ipv6-icmp:` with lib/icmpv6.c's names, printed `ipv6-icmp:NAME`) and
  ICMP is refused (`ipset_parse_proto_port`: "Protocol ICMP can be used with family inet only");
- addresses print as glibc's inet_ntop (natbox.wire.ipv6.format_addr6: `::ffff:1.2.3.4`).
"""

from __future__ import annotations

from typing import Final

from natbox.ipset.elem import parse_uint
from natbox.ipset.errors import IpsetError
from natbox.wire.ipv6 import format_addr6, parse_addr6

__all__ = ["E_NULL_ELEM", "HOST_MASK6", "format_addr6", "format_net6", "hostmask6", "null_elem", "parse_ip2_plain6",
           "parse_ip6", "parse_net6", "parse_plain_ip6"]

HOST_MASK6: Final = (1 << 128) - 1
E_BUG_OPTIONS = "There are not allowed options (28) but can't resolve them. It's a bug, please report the problem."
E_NULL_ELEM: Final = "Null-valued element, cannot be stored in a hash type of set"


def hostmask6(cidr: int) -> int:
    return HOST_MASK6 ^ ((1 << (128 - cidr)) - 1)


def parse_ip6(text: str) -> int:
    """One IPv6 address (`get_addrinfo` with AF_INET6; names are not resolved: sans-IO)."""
    try:
        return parse_addr6(text)
    except ValueError:
        raise IpsetError(f"Syntax error: cannot parse {text}: resolving to IPv6 address failed") from None


def parse_plain_ip6(text: str) -> int:
    """`ipset_parse_single_ip` (IPADDR_PLAIN): an address, or one with `/128` (`cidr_hostaddr`)."""
    addr, slash, cidr = text.partition("/")
    if "-" in text or (slash and cidr != "128"):
        raise IpsetError(f"Syntax error: plain IP address must be supplied: {text}")
    return parse_ip6(addr)


def parse_ip2_plain6(text: str) -> int:
    """The second address of hash:ip,port,ip: with `/128` ipset sets a CIDR2 option the type does not take,
    and reports it as its own bug."""
    ip = parse_plain_ip6(text)
    if "/" in text:
        raise IpsetError(E_BUG_OPTIONS)
    return ip


def parse_net6(text: str, net0: bool) -> tuple[int, int]:
    """`ipset_parse_ipnet`: `addr[/cidr]` → (masked address, cidr); a host is /128. A /0 only where the type
    stores one (hash:net,iface); the kernel's uadt refuses it otherwise."""
    if "-" in text:
        raise IpsetError(f"Syntax error: IP address or IP/cidr must be specified: {text}")
    addr, slash, c = text.partition("/")
    cidr = parse_uint(c, 0, 128) if slash else 128
    ip = parse_ip6(addr)
    if cidr == 0 and not net0:
        raise IpsetError("The value of the CIDR parameter of the IP address is invalid")
    return ip & hostmask6(cidr), cidr


def null_elem(ip: int) -> None:
    """hash:ip6's uadt: an address that is all zeros once masked is -IPSET_ERR_HASH_ELEM."""
    if not ip:
        raise IpsetError(E_NULL_ELEM)


def format_net6(ip: int, cidr: int) -> str:
    """`ipset_print_ip` with a cidr: left out for a host (/128)."""
    return format_addr6(ip) if cidr == 128 else f"{format_addr6(ip)}/{cidr}"

