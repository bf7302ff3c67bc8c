"""TCP resets the host sends: REJECT --reject-with tcp-reset and segments to closed local ports.

Mirrors `nf_send_reset()` / `nf_reject_ip_tcphdr_put()` / `nf_reject_iphdr_put()`
(net/ipv4/netfilter/nf_reject_ipv4.c): no reset answers a reset or a non-first fragment; the reset
goes back to the sender with the ports swapped; if the offending segment carried ACK the reset's seq
is that ack, otherwise the reset carries ACK for everything the segment occupied (seq + SYN + FIN +
payload). The IP header has ID 0, DF set, TOS 0 and TTL 64 (the default hop limit).
"""

from __future__ import annotations

from typing import Final

from natbox.netfilter import IPPROTO_TCP
from natbox.wire import ipv4, tcp
from natbox.wire.checksum import csum_fold, csum_partial
from natbox.wire.ipv6 import build_ipv6, pseudo6_sum
from natbox.wire.layout import IP6H_ADDRS_END, IP6H_DADDR, IP6H_SADDR, TCPH_CHECK, TCPH_MIN_LEN
from natbox.wire.views import Ipv4View, TcpView

__all__ = ["build_reset6_for", "build_reset_for"]

RESET_TTL: Final = 64


def build_reset_for(datagram: bytes) -> bytes | None:
    """The RST datagram answering the TCP segment in `datagram`, or None when none may be sent."""
    ih = Ipv4View.new_checked(datagram)
    if ih is None or ih.fragment_offset or ih.protocol != IPPROTO_TCP:
        return None
    ihl = ih.header_len
    th = TcpView.new_checked(datagram, ihl)
    if th is None:
        return None
    flags = th.flags
    if flags & tcp.RST:
        return None
    saddr, daddr = ih.saddr, ih.daddr
    sport, dport = th.source, th.dest
    if flags & tcp.ACK:
        seq, ack, rflags = th.ack_seq, 0, tcp.RST
    else:
        seg_len = len(datagram) - ihl - th.header_len
        syn_fin = (1 if flags & tcp.SYN else 0) + (1 if flags & tcp.FIN else 0)
        seq, ack, rflags = 0, (th.seq + syn_fin + seg_len) & 0xFFFFFFFF, tcp.RST | tcp.ACK
    seg = tcp.build_tcp(daddr, saddr, dport, sport, seq=seq, ack=ack, flags=rflags, window=0)
    return bytes(ipv4.build_ipv4(daddr, saddr, IPPROTO_TCP, seg, ttl=RESET_TTL, ident=0, df=True))


def build_reset6_for(datagram: bytes, thoff: int) -> bytes | None:
    """`nf_send_reset6()` / `tcp_v6_send_reset()`: the RST answering the TCP segment at `thoff` of an IPv6
    datagram (same rules as IPv4; the hop limit is the route's default, 64), or None."""
    if len(datagram) < thoff + TCPH_MIN_LEN:
        return None
    th = TcpView.new_checked(datagram, thoff)
    if th is None or th.flags & tcp.RST:
        return None
    saddr = int.from_bytes(datagram[IP6H_SADDR:IP6H_DADDR], "big")
    daddr = int.from_bytes(datagram[IP6H_DADDR:IP6H_ADDRS_END], "big")
    flags = th.flags
    if flags & tcp.ACK:
        seq, ack, rflags = th.ack_seq, 0, tcp.RST
    else:
        seg_len = len(datagram) - thoff - th.header_len
        syn_fin = (1 if flags & tcp.SYN else 0) + (1 if flags & tcp.FIN else 0)
        seq, ack, rflags = 0, (th.seq + syn_fin + seg_len) & 0xFFFFFFFF, tcp.RST | tcp.ACK
    seg = bytearray(tcp.build_tcp(0, 0, th.dest, th.source, seq=seq, ack=ack, flags=rflags, window=0))
    seg[TCPH_CHECK:TCPH_CHECK + 2] = b"\0\0"
    check = csum_fold(csum_partial(seg, pseudo6_sum(daddr, saddr, IPPROTO_TCP, len(seg))))
    seg[TCPH_CHECK:TCPH_CHECK + 2] = check.to_bytes(2, "big")
    return bytes(build_ipv6(daddr, saddr, IPPROTO_TCP, seg, hop_limit=RESET_TTL))
