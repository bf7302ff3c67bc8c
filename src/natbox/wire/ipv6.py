"""IPv6 headers: the extension-header walkers, `ip6_rcv_core`'s checks, builders and address text.

Addresses are 128-bit host-order ints (`int.from_bytes(addr16, "big")`). The walkers mirror
net/ipv6/exthdrs_core.c (ipv6-semantics.md §1.6): `ipv6_skip_exthdr` is conntrack's and NAT's view of a
packet (it stops at a non-first fragment), `ipv6_find_hdr` is ip6tables' (a non-first fragment reports the
protocol its Fragment header names). Neither raises: a truncated chain is a failure result.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from natbox.netfilter import DropReason
from natbox.wire.layout import (
    FRAGH_ID,
    FRAGH_LEN,
    FRAGH_NEXTHDR,
    FRAGH_OFF,
    IP6H_DADDR,
    IP6H_HOP_LIMIT,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IP6H_PAYLOAD_LEN,
    IP6H_SADDR,
    IP6H_VER_TC_FL,
    IP6OPT_HDRLEN,
    IP6OPT_NEXTHDR,
    IP6RT_SEGMENTS_LEFT,
)

__all__ = [
    "HOPOPTS_DROP",
    "HOPOPTS_OK",
    "IP6_FH_F_AUTH",
    "IP6_FH_F_FRAG",
    "IP6_FH_F_SKIP_RH",
    "IPV6_MIN_MTU",
    "NEXTHDR_AUTH",
    "NEXTHDR_DEST",
    "NEXTHDR_ESP",
    "NEXTHDR_FRAGMENT",
    "NEXTHDR_HOP",
    "NEXTHDR_ICMP",
    "NEXTHDR_NONE",
    "NEXTHDR_ROUTING",
    "NEXTHDR_TCP",
    "NEXTHDR_UDP",
    "build_ipv6",
    "format_addr6",
    "format_addr6_full",
    "ip6_rcv_core",
    "ipv6_ext_hdr",
    "ipv6_find_hdr",
    "ipv6_skip_exthdr",
    "parse_addr6",
    "parse_hopopts",
    "pseudo6_sum",
]

# include/net/ipv6.h
NEXTHDR_HOP: Final = 0
NEXTHDR_TCP: Final = 6
NEXTHDR_UDP: Final = 17
NEXTHDR_IPV6: Final = 41
NEXTHDR_ROUTING: Final = 43
NEXTHDR_FRAGMENT: Final = 44
NEXTHDR_GRE: Final = 47
NEXTHDR_ESP: Final = 50
NEXTHDR_AUTH: Final = 51
NEXTHDR_ICMP: Final = 58
NEXTHDR_NONE: Final = 59
NEXTHDR_DEST: Final = 60
NEXTHDR_MOBILITY: Final = 135

IPV6_MIN_MTU: Final = 1280  # RFC 8200 §5: every link carries 1280-byte packets; errors are truncated to it
IP6_MF: Final = 0x0001  # the M flag in frag_off
IP6_OFFSET: Final = 0xFFF8  # the offset bits of frag_off (the byte offset, already multiplied by 8)

# ipv6_find_hdr's flags (include/net/ipv6.h)
IP6_FH_F_FRAG: Final = 1 << 0
IP6_FH_F_AUTH: Final = 1 << 1
IP6_FH_F_SKIP_RH: Final = 1 << 2

_EXT_HDRS: Final = frozenset({NEXTHDR_HOP, NEXTHDR_ROUTING, NEXTHDR_FRAGMENT, NEXTHDR_AUTH, NEXTHDR_NONE, NEXTHDR_DEST})

ALL128: Final = (1 << 128) - 1
LOOPBACK: Final = 1  # ::1


def ipv6_ext_hdr(nexthdr: int) -> bool:
    """Mirrors `ipv6_ext_hdr()`: HOP, ROUTING, FRAGMENT, AUTH, NONE and DEST are extension headers (ESP and
    Mobility count as upper-layer protocols)."""
    return nexthdr in _EXT_HDRS


def ipv6_skip_exthdr(data: bytes | bytearray, start: int, nexthdr: int) -> tuple[int, int, int]:
    """Mirrors `ipv6_skip_exthdr()` (§1.6): (offset, nexthdr, frag_off).

    Skips Hop-by-Hop, Routing, Destination options, AH (`(hdrlen + 2) * 4` bytes) and a *first* Fragment
    header; stops at a non-first Fragment header (offset = that header, nexthdr 44, frag_off its raw 16-bit
    field). The offset is -1 when the chain ends in NEXTHDR_NONE or is truncated."""
    frag_off = 0
    n = len(data)
    while nexthdr in _EXT_HDRS:
        if nexthdr == NEXTHDR_NONE or start + 2 > n:
            return -1, nexthdr, frag_off
        if nexthdr == NEXTHDR_FRAGMENT:
            if start + FRAGH_OFF + 2 > n:
                return -1, nexthdr, frag_off
            frag_off = (data[start + FRAGH_OFF] << 8) | data[start + FRAGH_OFF + 1]
            if frag_off & ~0x7:
                break
            hdrlen = FRAGH_LEN
        elif nexthdr == NEXTHDR_AUTH:
            hdrlen = (data[start + IP6OPT_HDRLEN] + 2) << 2
        else:
            hdrlen = (data[start + IP6OPT_HDRLEN] + 1) << 3
        nexthdr = data[start + IP6OPT_NEXTHDR]
        start += hdrlen
    return start, nexthdr, frag_off


def ipv6_find_hdr(data: bytes | bytearray, target: int = -1, flags: int = 0,
                  offset: int = 0) -> tuple[int, int, int, int] | None:
    """Mirrors `ipv6_find_hdr()` (§1.6): (offset, protocol, fragoff, flags) or None (-ENOENT, -EBADMSG).

    `target` -1 finds the upper-layer protocol (NEXTHDR_NONE is returned as 59; a non-first fragment
    returns its Fragment header's nexthdr with `fragoff` set, which is why `ip6tables -p udp` matches
    non-first fragments); a header number finds that header. `flags` IP6_FH_F_AUTH stops at AH,
    IP6_FH_F_SKIP_RH skips routing headers with segments_left 0; IP6_FH_F_FRAG is set in the result
    when a Fragment header was crossed. `offset` non-zero: the walk starts at an inner IPv6 header there."""
    n = len(data)
    if offset:
        if offset + IP6H_LEN > n or data[offset] >> 4 != 6:
            return None
    elif n < IP6H_LEN:
        return None
    start = offset + IP6H_LEN
    nexthdr = data[offset + IP6H_NEXTHDR]
    fragoff = 0
    while True:
        found = nexthdr == target
        if nexthdr not in _EXT_HDRS or nexthdr == NEXTHDR_NONE:
            if target < 0 or found:
                break
            return None
        if start + 2 > n:
            return None
        hnext = data[start + IP6OPT_NEXTHDR]
        if nexthdr == NEXTHDR_ROUTING:
            if start + IP6RT_SEGMENTS_LEFT + 1 > n:
                return None
            if flags & IP6_FH_F_SKIP_RH and data[start + IP6RT_SEGMENTS_LEFT] == 0:
                found = False
        if nexthdr == NEXTHDR_FRAGMENT:
            flags |= IP6_FH_F_FRAG
            if start + FRAGH_OFF + 2 > n:
                return None
            off = ((data[start + FRAGH_OFF] << 8) | data[start + FRAGH_OFF + 1]) & ~0x7
            if off:
                if target < 0 and (hnext not in _EXT_HDRS or hnext == NEXTHDR_NONE):
                    return start, hnext, off, flags
                if not found:
                    return None
                fragoff = off
                break
            hdrlen = FRAGH_LEN
        elif nexthdr == NEXTHDR_AUTH:
            if flags & IP6_FH_F_AUTH and target < 0:
                break
            hdrlen = (data[start + IP6OPT_HDRLEN] + 2) << 2
        else:
            hdrlen = (data[start + IP6OPT_HDRLEN] + 1) << 3
        if found:
            break
        nexthdr = hnext
        start += hdrlen
    return start, nexthdr, fragoff, flags


# --- addresses (include/net/ipv6.h, net/ipv6/addrconf_core.c) -----------------------------------------

def is_multicast(a: int) -> bool:
    """ff00::/8."""
    return a >> 120 == 0xFF


def mc_scope(a: int) -> int:
    """`IPV6_ADDR_MC_SCOPE`: the scope nibble of a multicast address."""
    return (a >> 112) & 0x0F


def is_link_local(a: int) -> bool:
    """fe80::/10 (`IPV6_ADDR_LINKLOCAL` unicast)."""
    return a >> 118 == 0x3FA


def is_v4mapped(a: int) -> bool:
    """::ffff:0:0/96."""
    return a >> 32 == 0xFFFF


# `ipv6_addr_scope` values (IPV6_ADDR_SCOPE_*): the RFC 4291 scope nibble, unicast mapped onto it
SCOPE_NODELOCAL: Final = 0x01
SCOPE_LINKLOCAL: Final = 0x02
SCOPE_SITELOCAL: Final = 0x05
SCOPE_GLOBAL: Final = 0x0E


def addr_scope(a: int) -> int:
    """`__ipv6_addr_src_scope(ipv6_addr_type(a))`: multicast scope nibble, ::1 node-local, fe80::/10
    link-local, fec0::/10 site-local, everything else (and ::) global."""
    if is_multicast(a):
        return mc_scope(a)
    if a == LOOPBACK:
        return SCOPE_NODELOCAL
    if is_link_local(a):
        return SCOPE_LINKLOCAL
    if a >> 118 == 0x3FB:
        return SCOPE_SITELOCAL
    return SCOPE_GLOBAL


def solicited_node(a: int) -> int:
    """`addrconf_addr_solict_mult`: ff02::1:ffXX:XXXX for address `a`."""
    return 0xFF02_0000_0000_0000_0000_0001_FF00_0000 | (a & 0xFFFFFF)


def format_addr6(addr: int) -> str:
    """glibc `inet_ntop6` (what conntrack -L, ip6tables -n and ip -6 print; one function for all of
    natbox): the longest run (first of equals) of two or more zero words becomes `::`; an address whose first
    96 bits are zero (`::a.b.c.d`, not `::` or `::1`-like) or that is IPv4-mapped (`::ffff:a.b.c.d`) ends in
    dotted decimal."""
    words = [(addr >> (112 - 16 * i)) & 0xFFFF for i in range(8)]
    best_base, best_len = -1, 0
    cur_base, cur_len = -1, 0
    for i, w in enumerate(words):
        if w == 0:
            if cur_base == -1:
                cur_base, cur_len = i, 1
            else:
                cur_len += 1
        elif cur_base != -1:
            if best_base == -1 or cur_len > best_len:
                best_base, best_len = cur_base, cur_len
            cur_base = -1
    if cur_base != -1 and (best_base == -1 or cur_len > best_len):
        best_base, best_len = cur_base, cur_len
    if best_base != -1 and best_len < 2:
        best_base = -1
    out: list[str] = []
    for i, w in enumerate(words):
        if best_base != -1 and best_base <= i < best_base + best_len:
            if i == best_base:
                out.append(":")
            continue
        if i:
            out.append(":")
        if i == 6 and best_base == 0 and (best_len == 6 or (best_len == 5 and words[5] == 0xFFFF)):
            out.append(f"{words[6] >> 8}.{words[6] & 0xFF}.{words[7] >> 8}.{words[7] & 0xFF}")
            break
        out.append(f"{w:x}")
    if best_base != -1 and best_base + best_len == 8:
        out.append(":")
    return "".join(out)


def format_addr6_full(a: int) -> str:
    """Eight 4-digit groups (%pI6, /proc/net/nf_conntrack)."""
    return ":".join(f"{(a >> s) & 0xFFFF:04x}" for s in range(112, -1, -16))


def parse_addr6(text: str) -> int:
    """The 128-bit int of an IPv6 address in text (ValueError on bad input, scope ids refused)."""
    if "%" in text:
        raise ValueError(f"{text!r}: scope ids are not supported")
    return int(ipaddress.IPv6Address(text))


def pseudo6_sum(src: int, dst: int, proto: int, length: int) -> int:
    """Partial one's-complement sum of the IPv6 pseudo-header (RFC 8200 §8.1: both addresses, the 32-bit
    upper-layer length, the next header), to fold with `csum_fold` (the sum of an address's 16-bit words
    is congruent to the address modulo 0xFFFF)."""
    return (src % 0xFFFF) + (dst % 0xFFFF) + (length >> 16) + (length & 0xFFFF) + proto


# --- receive and build --------------------------------------------------------------------------------

def ip6_rcv_core(payload: bytes | bytearray, *, loopback: bool = False) -> tuple[bytearray | None, DropReason | None]:
    """Mirrors the header checks of `ip6_rcv_core()` (§1.2), in the kernel's order: header present, version
    6, ::1 only on loopback, no interface-local (scope 1) multicast destination from the wire, no scope-0
    multicast destination, no multicast source, `40 + payload_len` present (the rest trimmed), a Hop-by-Hop
    header that parses. There is no header checksum. Returns (datagram, None) or (None, reason)."""
    n = len(payload)
    if n < IP6H_LEN:
        return None, DropReason.IP6_HDR_TRUNCATED
    if payload[IP6H_VER_TC_FL] >> 4 != 6:
        return None, DropReason.IP6_BAD_VERSION
    saddr = int.from_bytes(payload[IP6H_SADDR:IP6H_DADDR], "big")
    daddr = int.from_bytes(payload[IP6H_DADDR:IP6H_DADDR + 16], "big")
    if not loopback:
        if saddr == LOOPBACK:
            return None, DropReason.IP6_BAD_SADDR
        if daddr == LOOPBACK or (is_multicast(daddr) and mc_scope(daddr) == 1):
            return None, DropReason.IP6_BAD_DADDR
    if is_multicast(daddr) and mc_scope(daddr) == 0:
        return None, DropReason.IP6_BAD_DADDR
    if is_multicast(saddr):
        return None, DropReason.IP6_BAD_SADDR
    plen = (payload[IP6H_PAYLOAD_LEN] << 8) | payload[IP6H_PAYLOAD_LEN + 1]
    nexthdr = payload[IP6H_NEXTHDR]
    if plen == 0 and nexthdr == NEXTHDR_HOP:
        return None, DropReason.IP6_BAD_EXTHDR  # a jumbogram: natbox's links never carry one
    if IP6H_LEN + plen > n:
        return None, DropReason.IP6_BAD_PAYLOAD_LEN
    data = bytearray(payload[:IP6H_LEN + plen])
    if nexthdr == NEXTHDR_HOP and parse_hopopts(data) != HOPOPTS_OK:
        return None, DropReason.IP6_BAD_EXTHDR
    return data, None


HOPOPTS_OK: Final = -1  # parse_hopopts: the header may pass
HOPOPTS_DROP: Final = -2  # parse_hopopts: dropped without an error
IPV6_TLV_PAD1, IPV6_TLV_PADN, IPV6_TLV_ROUTERALERT = 0, 1, 5
MAX_HBH_OPTS_CNT: Final = 8  # net.ipv6.max_hbh_opts_number (IP6_DEFAULT_MAX_HBH_OPTS_CNT)


def parse_hopopts(data: bytes | bytearray) -> int:
    """`ipv6_parse_hopopts` → `ip6_parse_tlv(true, skb, max_hbh_opts_cnt)`: HOPOPTS_OK, HOPOPTS_DROP, or the
    offset of an unrecognised option that earns the sender ICMPv6 Parameter Problem code 2 (its type's top
    bits 10, or 11 with a unicast destination: `ip6_tlvopt_unknown`). Malformed: the header shorter than 8
    bytes or past the packet, an option past the header, more than 7 bytes of padding in a row, PadN with
    non-zero bytes, a Router Alert not 2 bytes long, more than 8 non-padding options. Unknown options with
    top bits 00 are skipped, with 01 dropped silently. Jumbo, CALIPSO and IOAM options are not modelled
    (natbox's links carry no jumbograms; the others are skipped as unknown, as with their features off)."""
    start = IP6H_LEN
    if start + 8 > len(data):
        return HOPOPTS_DROP
    end = start + ((data[start + IP6OPT_HDRLEN] + 1) << 3)
    if end > len(data):
        return HOPOPTS_DROP
    off, padlen, count = start + 2, 0, 0
    while off < end:
        opt = data[off]
        if opt == IPV6_TLV_PAD1:
            padlen += 1
            if padlen > 7:
                return HOPOPTS_DROP
            off += 1
            continue
        if off + 2 > end:
            return HOPOPTS_DROP
        olen = data[off + 1] + 2
        if off + olen > end:
            return HOPOPTS_DROP
        if opt == IPV6_TLV_PADN:
            padlen += olen
            if padlen > 7 or any(data[off + 2:off + olen]):
                return HOPOPTS_DROP
        else:
            count += 1
            if count > MAX_HBH_OPTS_CNT:
                return HOPOPTS_DROP
            if opt == IPV6_TLV_ROUTERALERT:
                if olen != 4:
                    return HOPOPTS_DROP
            elif opt >> 6 == 1 or (opt >> 6 == 3 and data[IP6H_DADDR] == 0xFF):
                return HOPOPTS_DROP
            elif opt >> 6:
                return off
            padlen = 0
        off += olen
    return HOPOPTS_OK


def build_ipv6(saddr: int, daddr: int, nexthdr: int, payload: bytes | bytearray, *, hop_limit: int = 64,
               tclass: int = 0, flowlabel: int = 0) -> bytearray:
    """An IPv6 datagram: the fixed header and `payload` (extension headers, if any, are part of it)."""
    head = bytearray(IP6H_LEN)
    first = (6 << 28) | ((tclass & 0xFF) << 20) | (flowlabel & 0xFFFFF)
    head[IP6H_VER_TC_FL:IP6H_VER_TC_FL + 4] = first.to_bytes(4, "big")
    head[IP6H_PAYLOAD_LEN:IP6H_PAYLOAD_LEN + 2] = len(payload).to_bytes(2, "big")
    head[IP6H_NEXTHDR] = nexthdr
    head[IP6H_HOP_LIMIT] = hop_limit
    head[IP6H_SADDR:IP6H_DADDR] = saddr.to_bytes(16, "big")
    head[IP6H_DADDR:IP6H_DADDR + 16] = daddr.to_bytes(16, "big")
    return head + payload


def build_frag_hdr(nexthdr: int, offset: int, more: bool, ident: int) -> bytes:
    """A Fragment header (`struct frag_hdr`): `offset` in bytes (a multiple of 8)."""
    hdr = bytearray(FRAGH_LEN)
    hdr[FRAGH_NEXTHDR] = nexthdr
    hdr[FRAGH_OFF:FRAGH_OFF + 2] = ((offset & IP6_OFFSET) | (IP6_MF if more else 0)).to_bytes(2, "big")
    hdr[FRAGH_ID:FRAGH_ID + 4] = (ident & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(hdr)
