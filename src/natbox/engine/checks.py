"""The per-packet checks of forwarding, written once for the slow path and the compiled-flow executor.

| check            | kernel                                                    | slow path                 | executor |
|------------------|-----------------------------------------------------------|---------------------------|----------|
| (inline)         | `ip_rcv_core`: `ip_fast_csum(iph, ihl) == 0`, tot_len      | (wire.ipv4.ip_rcv_core)   | inline   |
|                  | within the skb and >= ihl; `ip_forward`: TTL > 1          | (Forwarder.ip_forward)    |          |
| `exceeds_mtu`    | `ip_exceeds_mtu`                                           | Forwarder.ip_forward      | -        |
| `gso_fits`       | `skb_gso_validate_network_len`                             | exceeds_mtu, output's GSO | yes      |
| `ip6_forward_ok` | `ip6_rcv_core`: 40 + payload_len within the skb (no        | (wire.ipv6.ip6_rcv_core)  | yes      |
|                  | jumbogram); `ip6_forward`: hop limit > 1                   | Ip6Input.ip6_forward      |          |

(`ip_rcv_core` in wire/ipv4.py also names the reason of a failure, which the executor does not need: a
packet that fails any check here leaves the executor unchanged and the slow path drops it with its reason.
The IPv4 executor's header test, only its own, is written in `FlowCache.forward` itself, where it costs no
call per packet; `ip_forward`'s TTL test (`ip_hdr(skb)->ttl <= 1`) is one comparison, written where it is made.
The TCP and UDP trackers' common cases are conntrack/proto's `tcp_packet_established` and
`udp_packet_seen_reply`, which both paths call.)
"""

from __future__ import annotations

from natbox.skb import Skb
from natbox.wire.gso import gso_network_seglen
from natbox.wire.ipv4 import IP_DF
from natbox.wire.layout import IP6H_HOP_LIMIT, IP6H_LEN, IP6H_PAYLOAD_LEN

__all__ = ["exceeds_mtu", "gso_fits", "ip6_forward_ok"]



def ip6_forward_ok(header: bytes, available: int) -> int:
    """`ip6_rcv_core`'s length check and `ip6_forward`'s hop-limit check, for a 40-byte IPv6 header whose next
    header is TCP, UDP or ICMPv6 (the only kind the executor takes, so no jumbogram): 40 + payload_len lies
    within the `available` bytes (the rest is trimmed) and the hop limit is > 1. Returns 40 + payload_len,
    or 0 when a check fails. (The address checks of both functions depend only on the addresses, which a
    compiled flow's key fixes.)"""
    tot_len = IP6H_LEN + ((header[IP6H_PAYLOAD_LEN] << 8) | header[IP6H_PAYLOAD_LEN + 1])
    return tot_len if tot_len <= available and header[IP6H_HOP_LIMIT] > 1 else 0


def gso_fits(network_seglen: int, mtu: int) -> bool:
    """`skb_gso_validate_network_len`: a GSO packet's segments (IP + transport header + gso_size) fit."""
    return network_seglen <= mtu


def exceeds_mtu(skb: Skb, mtu: int) -> bool:
    """`ip_exceeds_mtu`: too big, DF set (or reassembled from fragments larger than the MTU); a GSO
    packet whose segments fit is not too big (`skb_gso_validate_network_len`)."""
    if len(skb.data) <= mtu:
        return False
    if not skb.frag_off & IP_DF:
        return False
    if skb.frag_max_size:
        return skb.frag_max_size > mtu
    return not (skb.gso_size and gso_fits(gso_network_seglen(skb.data, skb.gso_size), mtu))
