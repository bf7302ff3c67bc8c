"""TCP resets the host sends: REJECT --reject-with tcp-reset and segments to closed local ports.

Mirrors `nf_send_reset()` / `nf_reject_ip_tcphdr_put()` / `nf_reject_iphdr_put()`
(net/ipv4/netfilter/nf_reject_ipv4.c): no reset answers a reset or a non-first fragment; the reset
goes back to the sender with the ports swapped; if the offending segment carried ACK the reset's seq
is that ack, otherwise the reset carries ACK for everything the segment occupied (seq + SYN + FIN +
payload). The IP header has ID 0, DF set, TOS 0 and TTL 64 (the default hop limit).
"""

from __future__ import annotations

from natbox.netfilter import IPPROTO_TCP
from natbox.wire import ipv4, tcp
from natbox.wire.views import Ipv4View, TcpView

__all__ = ["build_reset_for"]

RESET_TTL = 64


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
