"""IPv6 addresses as ip6tables 1.8.9 reads and prints them (libxtables `xtables_ip6parse_any`,
`xtables_ip6addr_to_numeric`, `xtables_ip6mask_to_numeric`, `xtables_ip6mask_to_cidr`; glibc `inet_pton6` and
`inet_ntop6`). Addresses are 128-bit host-order ints, as IPv4 ones are 32-bit ints.

ip6tables resolves host names with getaddrinfo; natbox's core does no lookups, so a name is refused as
ip6tables refuses a name it cannot resolve ("host/network `NAME' not found"): this is also what ip6tables
1.8.9 prints for `localhost` on Debian 12 (recorded), where /etc/hosts maps it to 127.0.0.1 only.
"""

from __future__ import annotations

from typing import Final

from natbox.rules.model import NFPROTO_IPV4, RulesError, mask_to_prefix
from natbox.wire.ipv6 import format_addr6

__all__ = ["ALL_ONES6", "format_addr6", "format_addr6_mask", "mask6_to_prefix", "parse_hostmask", "parse_hostmask6",
           "parse_ipv6",
           "parse_ipv6_mask", "prefix6_to_mask"]

ALL_ONES6: Final = (1 << 128) - 1
_HEX: Final = frozenset("0123456789abcdefABCDEF")


def _parse_ipv4_dotted(text: str) -> int | None:
    """glibc `inet_pton4`: exactly four decimal bytes without leading zeros."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    val = 0
    for p in parts:
        if not p.isdigit() or not p.isascii() or (len(p) > 1 and p[0] == "0") or int(p) > 255:
            return None
        val = (val << 8) | int(p)
    return val


def parse_ipv6(text: str) -> int | None:
    """glibc `inet_pton6`: 8 groups of 1-4 hex digits, one `::`, an IPv4 dotted quad as the last 32 bits."""
    if not text or not text.isascii():
        return None
    if text.count("::") > 1 or ":::" in text:
        return None
    head, dcolon, tail = text.partition("::")
    groups = [part.split(":") if part else [] for part in ((head, tail) if dcolon else (head,))]
    words: list[list[int]] = []
    for gi, g in enumerate(groups):
        ws: list[int] = []
        for i, w in enumerate(g):
            if "." in w and gi == len(groups) - 1 and i == len(g) - 1:
                v4 = _parse_ipv4_dotted(w)
                if v4 is None:
                    return None
                ws += [v4 >> 16, v4 & 0xFFFF]
                continue
            if not w or len(w) > 4 or not set(w) <= _HEX:
                return None
            ws.append(int(w, 16))
        words.append(ws)
    if dcolon:
        n = len(words[0]) + len(words[1])
        if n > 7:
            return None
        allw = words[0] + [0] * (8 - n) + words[1]
    else:
        allw = words[0]
        if len(allw) != 8:
            return None
    val = 0
    for word in allw:
        val = (val << 16) | word
    return val


def prefix6_to_mask(bits: int) -> int:
    return (ALL_ONES6 << (128 - bits)) & ALL_ONES6 if bits else 0


def mask6_to_prefix(mask: int) -> int:
    """`xtables_ip6mask_to_cidr`: the prefix length of a contiguous mask, or -1."""
    if mask == 0:
        return 0
    inv = ~mask & ALL_ONES6
    if inv & (inv + 1):
        return -1
    return 128 - inv.bit_length()


def parse_ipv6_mask(text: str) -> tuple[int, int]:
    """`xtables_ip6parse_any` for one address: `addr[/len|/mask]` -> (addr & mask, mask). Exit 2 on error."""
    a, slash, m = text.partition("/")
    if slash:
        if ":" in m:
            pm = parse_ipv6(m)
            if pm is None:
                raise RulesError(f"invalid mask `{m}' specified")
            mask = pm
        else:
            if not m.isdigit() or not m.isascii() or int(m) > 128:
                raise RulesError(f"invalid mask `{m}' specified")
            mask = prefix6_to_mask(int(m))
    else:
        mask = ALL_ONES6
    addr = parse_ipv6(a)
    if addr is None:
        raise RulesError(f"host/network `{a}' not found")
    return addr & mask, mask


def format_addr6_mask(addr: int, mask: int, *, always_prefix: bool = True) -> str:
    """`addr/len` (`addr/mask` when the mask is not contiguous); `always_prefix=False` omits `/128` (-L)."""
    p = mask6_to_prefix(mask)
    name = format_addr6(addr)
    if p == 128 and not always_prefix:
        return name
    return f"{name}/{p}" if p >= 0 else f"{name}/{format_addr6(mask)}"


def _inet_aton(text: str) -> int | None:
    """glibc `inet_aton` (what getaddrinfo accepts as a numeric IPv4 host): 1 to 4 parts, each strtoul base 0
    (0x hex, 0 octal), the last part filling the remaining bytes (`10.1.2` is 10.1.0.2)."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    vals: list[int] = []
    for p in parts:
        if not p.isascii() or not p.isalnum():
            return None
        try:
            vals.append(int(p, 16) if p[:2].lower() == "0x" and len(p) > 2 else int(p, 8) if p[0] == "0" else int(p))
        except ValueError:
            return None
    last_bits = 8 * (5 - len(vals))
    if any(v > 255 for v in vals[:-1]) or vals[-1] >= 1 << last_bits:
        return None
    val = 0
    for v in vals[:-1]:
        val = (val << 8) | v
    return (val << last_bits) | vals[-1]


def parse_hostmask(text: str, family: int, ext: str, opt: str) -> tuple[int, int]:
    """`xtopt_parse_hostmask` of iptables 1.8.9, either family (XTTYPE_HOSTMASK options: conntrack's
    addresses, policy's tunnel ends, srh's segment ids, NPT prefixes): the address is kept as given, not
    masked. IPv4: the host as getaddrinfo reads a number (`inet_aton`; a name is refused as by a host that
    cannot resolve it, an IPv6 address with EAI_ADDRFAMILY), the part after `/` a prefix length 0-32 (strtoul
    base 0) or else an `inet_aton` mask whose prefix is taken (32 when it is not contiguous)."""
    if family != NFPROTO_IPV4:
        return parse_hostmask6(text, ext, opt)
    host, sep, plen = text.partition("/")
    addr = _inet_aton(host)
    if addr is None:
        if ":" in host and parse_ipv6(host) is not None:
            raise RulesError("getaddrinfo: Address family for hostname not supported\n")
        raise RulesError("getaddrinfo: Temporary failure in name resolution\n")
    if not sep:
        return addr, 0xFFFFFFFF
    bits = int(plen) if plen.isascii() and plen.isdigit() and (plen == "0" or plen[0] != "0") \
        and int(plen) <= 32 else None
    if bits is None:
        m = _inet_aton(plen)
        if m is None:
            raise RulesError(f'{ext}: bad value for option "--{opt}", neither a valid network mask nor valid CIDR '
                             "(0-32).\n")
        p = mask_to_prefix(m)
        bits = p if p >= 0 else 32
    return addr, (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF


def parse_hostmask6(text: str, ext: str, opt: str) -> tuple[int, int]:
    """`xtopt_parse_hostmask` for IPv6 (XTTYPE_HOSTMASK options: conntrack's addresses, policy's tunnel ends,
    srh's segment ids, NPT prefixes): the address as given, not masked, and the mask after `/` (an IPv6 mask
    or a prefix length, 128 without `/`). A dotted quad is getaddrinfo's EAI_ADDRFAMILY; any other name is
    refused as by a host that cannot resolve it (recorded in a namespace without DNS)."""
    host, slash, plen = text.partition("/")
    addr = parse_ipv6(host)
    if addr is None:
        v4 = host.split(".")
        if len(v4) == 4 and all(p.isdigit() and p.isascii() and int(p) <= 255 for p in v4):
            raise RulesError("getaddrinfo: Address family for hostname not supported\n")
        raise RulesError("getaddrinfo: Temporary failure in name resolution\n")
    if not slash:
        return addr, ALL_ONES6
    mask = parse_ipv6(plen)
    if mask is not None:
        return addr, mask
    if not plen.isdigit() or not plen.isascii() or int(plen) > 128:
        raise RulesError(f'{ext}: bad value for option "--{opt}", neither a valid network mask nor valid CIDR '
                         "(0-128).\n")
    return addr, prefix6_to_mask(int(plen))
