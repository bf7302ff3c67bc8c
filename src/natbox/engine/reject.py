"""TCP resets the host sends: REJECT --reject-with tcp-reset and segments to closed local ports.

Mirrors `nf_send_reset()` / `nf_reject_ip_tcphdr_put()` / `nf_reject_iphdr_put()`
(net/ipv4/netfilter/nf_reject_ipv4.c): no reset answers a reset or a non-first fragment; the reset
goes back to the sender with the ports swapped; if the offending segment carried ACK the reset's seq
is that ack, otherwise the reset carries ACK for everything the segment occupied (seq + SYN + FIN +
payload). The IP header has ID 0, DF set, TOS 0 and TTL 64 (the default hop limit).
"""

from __future__ import annotations

from natbox.wire import ipv4, tcp

__all__ = ["build_reset_for"]

RESET_TTL = 64


def build_reset_for(datagram: bytes) -> bytes | None:
    """The RST datagram answering the TCP segment in `datagram`, or None when none may be sent."""
    if len(datagram) < 20:
        return None
    ihl = (datagram[0] & 0x0F) * 4
    frag = (datagram[6] << 8) | datagram[7]
    if frag & 0x1FFF or datagram[9] != 6 or len(datagram) < ihl + 20:
        return None
    th = datagram[ihl:]
    flags = th[13]
    if flags & tcp.RST:
        return None
    saddr = int.from_bytes(datagram[12:16], "big")
    daddr = int.from_bytes(datagram[16:20], "big")
    sport, dport = (th[0] << 8) | th[1], (th[2] << 8) | th[3]
    doff = (th[12] >> 4) * 4
    if flags & tcp.ACK:
        seq, ack, rflags = int.from_bytes(th[8:12], "big"), 0, tcp.RST
    else:
        seg_len = len(datagram) - ihl - doff
        oseq = int.from_bytes(th[4:8], "big")
        syn_fin = (1 if flags & tcp.SYN else 0) + (1 if flags & tcp.FIN else 0)
        seq, ack, rflags = 0, (oseq + syn_fin + seg_len) & 0xFFFFFFFF, tcp.RST | tcp.ACK
    seg = tcp.build_tcp(daddr, saddr, dport, sport, seq=seq, ack=ack, flags=rflags, window=0)
    return bytes(ipv4.build_ipv4(daddr, saddr, 6, seg, ttl=RESET_TTL, ident=0, df=True))
