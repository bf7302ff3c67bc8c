"""ARP for Ethernet/IPv4 (RFC 826): parse, build requests and replies.

Only the Ethernet/IPv4 form is understood (hardware type 1, protocol 0x0800, lengths 6 and 4), as
`arp_rcv()` (net/ipv4/arp.c) requires for an Ethernet device: anything else parses to None and is
counted and dropped by the caller. Addresses are host-order ints, MACs 6-byte `bytes`.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from natbox.wire.ethernet import ETH_P_IP

__all__ = [
    "ARPHRD_ETHER",
    "ARPOP_REPLY",
    "ARPOP_REQUEST",
    "ARP_LEN",
    "ArpPacket",
    "build_arp",
    "build_arp_reply",
    "build_arp_request",
    "parse_arp",
]

ARPHRD_ETHER: Final = 1
ARPOP_REQUEST: Final = 1
ARPOP_REPLY: Final = 2
ARP_LEN: Final = 28  # 8-byte fixed header + 2 * (6 + 4) addresses

_ZERO_MAC: Final = bytes(6)


class ArpPacket(NamedTuple):
    """One Ethernet/IPv4 ARP message (`struct arphdr` plus its four addresses)."""

    op: int
    sender_mac: bytes  # sha
    sender_ip: int  # spa
    target_mac: bytes  # tha
    target_ip: int  # tpa


def parse_arp(payload: bytes | bytearray | memoryview) -> ArpPacket | None:
    """Parse an ARP message; None if short or not Ethernet/IPv4 (trailing padding is ignored)."""
    if len(payload) < ARP_LEN:
        return None
    b = bytes(payload[:ARP_LEN])
    if (b[0] << 8 | b[1]) != ARPHRD_ETHER or (b[2] << 8 | b[3]) != ETH_P_IP or b[4] != 6 or b[5] != 4:
        return None
    return ArpPacket(
        b[6] << 8 | b[7],
        b[8:14],
        int.from_bytes(b[14:18], "big"),
        b[18:24],
        int.from_bytes(b[24:28], "big"),
    )


def build_arp(op: int, sha: bytes, spa: int, tha: bytes, tpa: int) -> bytes:
    """The 28-byte ARP message (without the Ethernet header)."""
    return (
        b"\x00\x01\x08\x00\x06\x04"
        + op.to_bytes(2, "big")
        + bytes(sha[:6])
        + spa.to_bytes(4, "big")
        + bytes(tha[:6])
        + tpa.to_bytes(4, "big")
    )


def build_arp_request(sha: bytes, spa: int, tpa: int) -> bytes:
    """Who-has `tpa`, tell `spa` (target MAC zero, as `arp_send` does for a request)."""
    return build_arp(ARPOP_REQUEST, sha, spa, _ZERO_MAC, tpa)


def build_arp_reply(sha: bytes, spa: int, tha: bytes, tpa: int) -> bytes:
    """`spa` is-at `sha`, sent to the requester (`tha`, `tpa`)."""
    return build_arp(ARPOP_REPLY, sha, spa, tha, tpa)
