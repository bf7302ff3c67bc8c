"""IPv6: print-ip6.c (ip6_print: the extension header walk), print-frag6.c, print-rt6.c, the HBH/DSTOPT
headers of print-ip6opts.c and print-icmp6.c at default verbosity (-n, no -v), as tcpdump 4.99 prints them.

Addresses are printed as tcpdump's ip6addr_string does (inet_ntop: `::ffff:1.2.3.4`), the one printer
natbox.wire.ipv6.format_addr6. As in tcpdump, TCP and UDP print the addresses only when their header follows
the IPv6 header directly; after an extension header they print the ports alone (`frag (0|1448) 40000 > 5001:`).
"""

from __future__ import annotations

from natbox.render.dissect import Packet, Stop, Truncated, ip6_addr
from natbox.render.ip import ip_demux_print
from natbox.wire.ipv6 import (
    NEXTHDR_DEST,
    NEXTHDR_FRAGMENT,
    NEXTHDR_HOP,
    NEXTHDR_ICMP,
    NEXTHDR_ROUTING,
    NEXTHDR_TCP,
    NEXTHDR_UDP,
)
from natbox.wire.layout import (
    FRAGH_LEN,
    FRAGH_NEXTHDR,
    FRAGH_OFF,
    ICMP6H_CODE,
    ICMP6H_IDENTIFIER,
    ICMP6H_LEN,
    ICMP6H_MTU,
    ICMP6H_SEQUENCE,
    ICMP6H_TYPE,
    IP6H_DADDR,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IP6H_PAYLOAD_LEN,
    IP6H_SADDR,
    IP6H_VER_TC_FL,
    IP6OPT_HDRLEN,
    IP6OPT_NEXTHDR,
    IP6RT0_ADDR,
    L4_DPORT,
    ND_TARGET,
)

__all__ = ["icmp6_print", "ip6_print"]

NEXTHDR_IPV6, _NEXTHDR_SCTP, _NEXTHDR_DCCP, _NEXTHDR_MOBILITY = 41, 132, 33, 135
_RT_TYPE, _RT_SEGLEFT = 2, 3  # struct ipv6_rt_hdr: type, segments_left after nexthdr and hdrlen
_MH_TYPE = 2  # struct ip6_mh: ip6mh_type
_REDIRECT_DEST = 24  # struct rd_msg: the destination after the target
_MLD2_NGROUPS = 6  # struct mld2_report: mld2r_ngrec
_ICMP6_SIMPLE: dict[int, str] = {  # print-icmp6.c's icmp6_type_values (first match wins)
    130: "multicast listener query", 131: "multicast listener report", 132: "multicast listener done",
    133: "router solicitation", 134: "router advertisement", 138: "router renumbering",
    139: "who-are-you request", 140: "who-are-you reply", 141: "inverse neighbor solicitation",
    142: "inverse neighbor advertisement", 144: "ha discovery request", 145: "ha discovery reply",
    146: "mobile router solicitation", 147: "mobile router advertisement", 155: "RPL",
}
_ICMP6_OTHER: dict[int, str] = {200: "mtrace response", 201: "mtrace message"}  # icmp6_print's default case
_UNREACH6: dict[int, str] = {0: "unreachable route", 1: " unreachable prohibited", 2: "beyond scope",
                             3: "unreachable address", 4: "unreachable port"}
_PARAMPROB: dict[int, str] = {0: "erroneous", 1: "next header", 2: "option"}


def ip6_print(p: Packet, off: int, length: int) -> None:
    """ip6_print(): header checks, the snap end cut to the payload length, then the extension header walk
    (HBH, DSTOPT, fragment, routing) and the upper-layer demux."""
    p.proto = "ip6"
    p.need(off, IP6H_LEN)
    if length < IP6H_LEN:
        p.w(f"truncated-ip6 {length}")
        return
    if not p.eflag:
        p.w("IP6 ")
    v = p.u8(off + IP6H_VER_TC_FL) >> 4
    if v != 6:
        p.w(f"version error: {v} != 6")
        return
    plen = p.u16(off + IP6H_PAYLOAD_LEN)
    total = plen + IP6H_LEN if plen else length
    if total > length:
        p.w(f"truncated-ip6 - {total - length} bytes missing!")
        total = length
    saved_end = p.end
    p.end = min(p.end, off + total)
    nh = p.u8(off + IP6H_NEXTHDR)
    cp, left, advance, fragmented = off, total, IP6H_LEN, False
    while cp < p.end and advance > 0:
        if left < advance:
            raise Truncated
        cp += advance
        left -= advance
        if cp == off + IP6H_LEN and nh not in (NEXTHDR_TCP, NEXTHDR_UDP, _NEXTHDR_DCCP, _NEXTHDR_SCTP):
            p.w(f"{ip6_addr(p, off + IP6H_SADDR)} > {ip6_addr(p, off + IP6H_DADDR)}: ")
        if nh in (NEXTHDR_HOP, NEXTHDR_DEST):
            p.w("HBH " if nh == NEXTHDR_HOP else "DSTOPT ")
            advance = (p.u8(cp + IP6OPT_HDRLEN) + 1) * 8
            p.need(cp, advance)
            nh = p.u8(cp + IP6OPT_NEXTHDR)
        elif nh == NEXTHDR_FRAGMENT:
            offlg = p.u16(cp + FRAGH_OFF)
            p.w(f"frag ({offlg & 0xFFF8}|{IP6H_LEN + plen - (cp - off) - FRAGH_LEN})")
            if offlg & 0xFFF8 or p.end <= cp + FRAGH_LEN:
                break  # "it is meaningless to decode non-first fragment"
            p.w(" ")
            advance, fragmented = FRAGH_LEN, True
            nh = p.u8(cp + FRAGH_NEXTHDR)
        elif nh == NEXTHDR_ROUTING:
            advance = _rt6_print(p, cp, off)
            nh = p.u8(cp + IP6OPT_NEXTHDR)
        elif nh == _NEXTHDR_MOBILITY:
            p.w(f"mobility: type-#{p.u8(cp + _MH_TYPE)}")
            break
        elif nh == NEXTHDR_ICMP:
            icmp6_print(p, cp, left)
            break
        elif nh == NEXTHDR_IPV6:
            ip6_print(p, cp, left)
            break
        else:
            ip_demux_print(p, cp, left, fragmented, nh, off)
            break
        p.proto = "ip6"
    p.end = saved_end


def _rt6_print(p: Packet, cp: int, iph: int) -> int:
    """rt6_print() at default verbosity: `RT6 (len=N, type=T, segleft=S, [i]addr...) ` (type 0 is marked
    ` [Deprecated]`); only types 0 and 2 are decoded here."""
    p.proto = "rt6"
    hlen, rtype, segleft = p.u8(cp + IP6OPT_HDRLEN), p.u8(cp + _RT_TYPE), p.u8(cp + _RT_SEGLEFT)
    p.w(f"RT6 (len={hlen}, type={rtype}{' [Deprecated]' if rtype == 0 else ''}, segleft={segleft}")
    if rtype in (0, 2):
        p.need(cp, IP6RT0_ADDR)
        n = hlen // 2
        for i in range(n):
            p.w(f", [{i}]{ip6_addr(p, cp + IP6RT0_ADDR + 16 * i)}")
        p.w(") ")
        return (hlen + 1) * 8
    p.w(")")  # other types: tcpdump decodes segment routing with more text; the walk stops here
    raise Stop


def icmp6_print(p: Packet, off: int, length: int) -> None:
    """icmp6_print() at default verbosity: the message's words, then `, length N`."""
    p.proto = "icmp6"
    t, code = p.u8(off + ICMP6H_TYPE), p.u8(off + ICMP6H_CODE)
    inner = off + ICMP6H_LEN  # the quoted IPv6 header of an error
    p.w("ICMP6, ")
    if t == 1:
        p.w("destination unreachable")
        if code in (0, 1, 3):
            p.w(f", {_UNREACH6[code]} {ip6_addr(p, inner + IP6H_DADDR)}")
        elif code == 2:
            p.w(f", {_UNREACH6[code]} {ip6_addr(p, inner + IP6H_DADDR)}, source address "
                f"{ip6_addr(p, inner + IP6H_SADDR)}")
        elif code == 4:
            _unreach_port(p, inner)
        else:
            p.w(f", unknown unreach code ({code})")
            _hex_print(p, off, length)
            return
    elif t == 2:
        p.w(f"packet too big, mtu {p.u32(off + ICMP6H_MTU)}")
    elif t == 3:
        if code == 0:
            p.w(f"time exceeded in-transit for {ip6_addr(p, inner + IP6H_DADDR)}")
        elif code == 1:
            p.w("time exceeded in-transit (reassembly)")
        else:
            p.w(f"time exceeded, unknown code ({code})")
    elif t == 4:
        p.need(inner + IP6H_DADDR, 16)
        if code in _PARAMPROB:
            p.w(f"parameter problem, {_PARAMPROB[code]} - octet {p.u32(off + ICMP6H_MTU)}")
        else:
            p.w(f"parameter problem, code-#{code}")
    elif t in (128, 129):
        p.w(f"echo {'request' if t == 128 else 'reply'}, id {p.u16(off + ICMP6H_IDENTIFIER)}, "
            f"seq {p.u16(off + ICMP6H_SEQUENCE)}")
    elif t == 135:
        p.w(f"neighbor solicitation, who has {ip6_addr(p, off + ND_TARGET)}")
    elif t == 136:
        p.w(f"neighbor advertisement, tgt is {ip6_addr(p, off + ND_TARGET)}")
    elif t == 137:
        p.w(f"redirect, {ip6_addr(p, off + _REDIRECT_DEST)} to {ip6_addr(p, off + ND_TARGET)}")
    elif t == 143:
        p.w(f"multicast listener report v2, {p.u16(off + _MLD2_NGROUPS)} group record(s)")
    elif t in _ICMP6_SIMPLE:
        p.w(_ICMP6_SIMPLE[t])
    else:  # the default case: the name, the length and the message in hex
        p.w(f"{_ICMP6_OTHER.get(t, f'unknown icmp6 type ({t})')}, length {length}")
        _hex_print(p, off, length)
        return
    p.w(f", length {length}")


def _unreach_port(p: Packet, inner: int) -> None:
    """The port unreachable text: get_upperlayer() walks the quoted packet's extension headers to TCP/UDP."""
    nh = p.u8(inner + IP6H_NEXTHDR)
    cp = inner + IP6H_LEN
    while nh in (NEXTHDR_HOP, NEXTHDR_DEST, NEXTHDR_ROUTING, NEXTHDR_FRAGMENT):
        nxt = p.u8(cp)
        cp += FRAGH_LEN if nh == NEXTHDR_FRAGMENT else (p.u8(cp + IP6OPT_HDRLEN) + 1) * 8
        nh = nxt
    if nh not in (NEXTHDR_TCP, NEXTHDR_UDP):
        p.w(", unreachable port")
        raise Truncated
    dport = p.u16(cp + L4_DPORT)
    dst = ip6_addr(p, inner + IP6H_DADDR)
    p.w(f", unreachable port, {dst} {'tcp' if nh == NEXTHDR_TCP else 'udp'} port {dport}")


def _hex_print(p: Packet, off: int, length: int) -> None:
    """hex_print(ndo, "\\n\\t", ...): the hex words alone, 16 bytes a line."""
    n = min(length, max(0, p.end - off))
    b = p.b
    for base in range(0, n, 16):
        chunk = b[off + base:off + min(base + 16, n)]
        words = " ".join(chunk[i:i + 2].hex() for i in range(0, len(chunk), 2))
        p.w(f"\n\t0x{base:04x}:  {words}")
    if n < length:
        raise Truncated

