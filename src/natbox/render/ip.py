"""IPv4: print-ip.c (ip_print), print-ip-demux.c and print-icmp.c at default verbosity."""

from __future__ import annotations

from natbox.netfilter import IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP
from natbox.render.dissect import Packet, Truncated
from natbox.render.ipsec import esp_print
from natbox.render.sctp import sctp_print
from natbox.render.tcp import tcp_print
from natbox.render.udp import udp_print
from natbox.wire.layout import (
    ICMPH_CODE,
    ICMPH_GATEWAY,
    ICMPH_ID,
    ICMPH_LEN,
    ICMPH_MTU,
    ICMPH_SEQUENCE,
    ICMPH_TYPE,
    IPH_DADDR,
    IPH_FRAG_OFF,
    IPH_MIN_LEN,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_TOT_LEN,
    IPH_VER_IHL,
    L4_DPORT,
)

_ICMP_SIMPLE: dict[int, str] = {0: "echo reply", 4: "source quench", 8: "echo request",
                                10: "router solicitation", 13: "time stamp request", 14: "time stamp reply",
                                15: "information request", 16: "information reply", 17: "address mask request"}
# ICMP_UNREACH codes other than port (3) and needfrag (4): (format, code) with {} for the inner dst.
_UNREACH_TEXT: dict[int, str] = {
    0: "net {} unreachable", 1: "host {} unreachable", 5: "{} unreachable - source route failed",
    6: "net {} unreachable - unknown", 7: "host {} unreachable - unknown",
    8: "{} unreachable - source host isolated", 9: "net {} unreachable - admin prohibited",
    10: "host {} unreachable - admin prohibited", 11: "net {} unreachable - tos prohibited",
    12: "host {} unreachable - tos prohibited", 13: "host {} unreachable - admin prohibited filter",
    14: "host {} unreachable - host precedence violation", 15: "host {} unreachable - precedence cutoff",
}
_REDIRECT_TEXT: dict[int, str] = {0: "redirect {} to net {}", 1: "redirect {} to host {}",
                                  2: "redirect-tos {} to net {}", 3: "redirect-tos {} to host {}"}


def ip_print(p: Packet, off: int, length: int) -> None:
    """ip_print(): header sanity, snaplen push to the total length, demux or fragment text."""
    p.proto = "ip"
    v = p.u8(off + IPH_VER_IHL) >> 4
    if v != 4:
        p.w("IP6, wrong link-layer encapsulation (invalid)" if v == 6 else f"IP{v} (invalid)")
        return
    if not p.eflag:
        p.w("IP ")
    p.need(off, IPH_MIN_LEN)
    if length < IPH_MIN_LEN:
        p.w(f"truncated-ip {length}")
        return
    hlen = (p.b[off + IPH_VER_IHL] & 0x0F) * 4
    if hlen < IPH_MIN_LEN:
        p.w(f"bad-hlen {hlen}")
        return
    tot = p.u16(off + IPH_TOT_LEN)
    if length < tot:
        p.w(f"truncated-ip - {tot - length} bytes missing! ")
    if tot < hlen:
        p.w(f"bad-len {tot}")
        return
    saved_end = p.end
    p.end = min(p.end, off + tot)
    plen = tot - hlen
    frag = p.u16(off + IPH_FRAG_OFF)
    nh = p.u8(off + IPH_PROTOCOL)
    src, dst = p.ip(off + IPH_SADDR), p.ip(off + IPH_DADDR)
    if frag & 0x1FFF == 0:
        if nh not in (6, 17, 132, 33):
            p.w(f"{src} > {dst}: ")
        if not p.has(off, hlen):
            p.w(f" [remaining caplen({max(0, p.end - off)}) < header length({hlen})]")
            raise Truncated
        ip_demux_print(p, off + hlen, plen, bool(frag & 0x2000), nh, off)
    else:
        p.w(f"{src} > {dst}: ip-proto-{nh}")
    p.end = saved_end


def ip_demux_print(p: Packet, off: int, length: int, fragmented: bool, nh: int, iph: int) -> None:
    """ip_demux_print() for the protocols decoded here; others get tcpdump's generic text."""
    if nh == IPPROTO_TCP:
        tcp_print(p, off, length, iph)
    elif nh == IPPROTO_UDP:
        udp_print(p, off, length, iph, fragmented)
    elif nh == IPPROTO_ICMP:
        icmp_print(p, off, length)
    elif nh == 4:
        ip_print(p, off, length)
    elif nh == 50:
        esp_print(p, off, length)
    elif nh == IPPROTO_SCTP:
        sctp_print(p, off, length, iph)
    elif nh in (58, 143):
        p.w(f"[{'ICMPv6' if nh == 58 else 'Ethernet'} requires IPv6] (invalid)")
    elif nh == 59:
        p.w("no next header")
    elif nh == 77:
        p.w(f" nd {length}")
    else:
        p.w(f" ip-proto-{nh} {length}")


def _icmp_tstamp(ms: int) -> str:
    msec, sec = ms % 1000, ms // 1000
    mins, sec = divmod(sec, 60)
    hrs, mins = divmod(mins, 60)
    return f"{hrs:02d}:{mins:02d}:{sec:02d}.{msec:03d}"


def icmp_print(p: Packet, off: int, plen: int) -> None:
    """icmp_print() at default verbosity (no embedded-datagram dump: that needs -v)."""
    p.proto = "icmp"
    t, code = p.u8(off + ICMPH_TYPE), p.u8(off + ICMPH_CODE)
    inner = off + ICMPH_LEN  # the quoted IP header of an error
    inner_dst = inner + IPH_DADDR
    if t in (0, 8):
        s = f"echo {'request' if t == 8 else 'reply'}, id {p.u16(off + ICMPH_ID)}, seq {p.u16(off + ICMPH_SEQUENCE)}"
    elif t == 3:
        if code == 2:
            s = f"{p.ip(inner_dst)} protocol {p.u8(inner + IPH_PROTOCOL)} unreachable"
        elif code == 3:
            p.need(inner + IPH_PROTOCOL, 1)
            ihl = (p.u8(inner + IPH_VER_IHL) & 0x0F) * 4
            dport = p.u16(inner + ihl + L4_DPORT)
            proto = p.u8(inner + IPH_PROTOCOL)
            if proto == IPPROTO_TCP:
                s = f"{p.ip(inner_dst)} tcp port {dport} unreachable"
            elif proto == IPPROTO_UDP:
                s = f"{p.ip(inner_dst)} udp port {dport} unreachable"
            else:
                s = f"{p.ip(inner_dst)} protocol {proto} port {dport} unreachable"
        elif code == 4:
            mtu = p.u16(off + ICMPH_MTU)
            if mtu:
                s = f"{p.ip(inner_dst)} unreachable - need to frag (mtu {mtu})"
            else:
                s = f"{p.ip(inner_dst)} unreachable - need to frag"
        elif code in _UNREACH_TEXT:
            s = _UNREACH_TEXT[code].format(p.ip(inner_dst))
        else:
            s = f"{p.ip(inner_dst)} unreachable - #{code}"
    elif t == 5:
        if code in _REDIRECT_TEXT:
            s = _REDIRECT_TEXT[code].format(p.ip(inner_dst), p.ip(off + ICMPH_GATEWAY))
        else:
            s = f"redirect-#{code} {p.ip(inner_dst)} to {p.ip(off + ICMPH_GATEWAY)}"
    elif t == 9:
        p.need(off + 4, 4)
        num, size, lifetime = p.b[off + 4], p.b[off + 5], p.u16(off + 6)
        if lifetime < 60:
            lt = f"{lifetime}"
        elif lifetime < 3600:
            lt = f"{lifetime // 60}:{lifetime % 60:02d}"
        else:
            lt = f"{lifetime // 3600}:{lifetime % 3600 // 60:02d}:{lifetime % 60:02d}"
        parts = [f"router advertisement lifetime {lt} {num}:"]
        if size != 2:
            parts.append(f" [size {size}]")
        else:
            at = off + 8
            for _ in range(num):
                p.need(at, 8)
                parts.append(f" {{{p.ip(at)} {p.u32(at + 4)}}}")
                at += 8
        s = "".join(parts)
    elif t == 11:
        p.need(inner_dst, 4)
        if code == 0:
            s = "time exceeded in-transit"
        elif code == 1:
            s = "ip reassembly time exceeded"
        else:
            s = f"time exceeded-#{code}"
    elif t == 12:
        s = f"parameter problem - code {code}" if code else f"parameter problem - octet {p.u8(off + ICMPH_GATEWAY)}"
    elif t == 18:
        s = f"address mask is 0x{p.u32(off + 8):08x}"
    elif t == 13:
        s = f"time stamp query id {p.u16(off + ICMPH_ID)} seq {p.u16(off + ICMPH_SEQUENCE)}"
    elif t == 14:
        p.need(off + 16, 4)
        ts = off + ICMPH_LEN  # icmp_otime, icmp_rtime, icmp_ttime (struct icmp in tcpdump's netinet)
        s = (f"time stamp reply id {p.u16(off + ICMPH_ID)} seq {p.u16(off + ICMPH_SEQUENCE)}: "
             f"org {_icmp_tstamp(p.u32(ts))}, recv {_icmp_tstamp(p.u32(ts + 4))}, xmit {_icmp_tstamp(p.u32(ts + 8))}")
    else:
        s = _ICMP_SIMPLE.get(t, f"type-#{t}")
    p.w(f"ICMP {s}, length {plen}")

