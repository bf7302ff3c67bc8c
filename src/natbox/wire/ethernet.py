"""Ethernet II frames: parse, build, MAC address text.

Mirrors what `eth_type_trans()` (net/ethernet/eth.c) reads from a received frame: destination,
source and the 16-bit type. An 802.1Q tag (0x8100) or an 802.1ad tag (0x88A8) is *reported*, not
stripped: natbox models untagged links only, so the caller counts and drops such frames as the
kernel does when no VLAN device is configured on the link. A type below 0x0600 is an 802.3 length
field (LLC/SNAP); it is reported as is and is never IPv4 or ARP.

Untrusted bytes never raise: `parse_ethernet` returns None for a frame shorter than 14 bytes.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "BROADCAST",
    "ETH_HLEN",
    "ETH_P_8021AD",
    "ETH_P_8021Q",
    "ETH_P_ALL",
    "ETH_P_ARP",
    "ETH_P_IP",
    "ETH_P_IPV6",
    "ETH_ZLEN",
    "build_ethernet",
    "format_mac",
    "is_broadcast_mac",
    "is_multicast_mac",
    "mac_from_str",
    "mac_to_str",
    "parse_ethernet",
]

# uapi linux/if_ether.h
ETH_ALEN: Final = 6
ETH_HLEN: Final = 14  # dst(6) + src(6) + type(2)
ETH_ZLEN: Final = 60  # minimum frame length without FCS; shorter frames are padded by the sender
ETH_P_ALL: Final = 0x0003  # every protocol (packet sockets)
ETH_P_IP: Final = 0x0800
ETH_P_ARP: Final = 0x0806
ETH_P_8021Q: Final = 0x8100
ETH_P_8021AD: Final = 0x88A8
ETH_P_IPV6: Final = 0x86DD

BROADCAST: Final = b"\xff" * ETH_ALEN

_HEX: Final = frozenset("0123456789abcdefABCDEF")


def parse_ethernet(frame: bytes | bytearray | memoryview) -> tuple[bytes, bytes, int, int] | None:
    """Split an Ethernet II frame: `(dst_mac, src_mac, ethertype, payload_offset)`, or None if short.

    For a VLAN-tagged frame the ethertype is the tag's TPID (ETH_P_8021Q or ETH_P_8021AD) and the
    payload offset points at the TCI, so a caller that does not model VLANs drops it.
    """
    if len(frame) < ETH_HLEN:
        return None
    return bytes(frame[0:6]), bytes(frame[6:12]), (frame[12] << 8) | frame[13], ETH_HLEN


def build_ethernet(
    dst: bytes, src: bytes, ethertype: int, payload: bytes | bytearray | memoryview, *, pad: bool = False
) -> bytearray:
    """An Ethernet II frame (no FCS). With `pad`, short frames are zero-padded to ETH_ZLEN as a NIC does."""
    frame = bytearray(dst[:6])
    frame += src[:6]
    frame += (ethertype & 0xFFFF).to_bytes(2, "big")
    frame += payload
    if pad and len(frame) < ETH_ZLEN:
        frame += bytes(ETH_ZLEN - len(frame))
    return frame


def mac_to_str(mac: bytes | bytearray) -> str:
    """`aa:bb:cc:dd:ee:ff` (lower case, as `ip link` prints it)."""
    return ":".join(f"{b:02x}" for b in mac)


def mac_from_str(text: str) -> bytes:
    """Parse `aa:bb:cc:dd:ee:ff` (also `-` separated). Raises ValueError: this is configuration, not packets."""
    parts = text.strip().replace("-", ":").split(":")
    if len(parts) != ETH_ALEN or not all(1 <= len(p) <= 2 and set(p) <= _HEX for p in parts):
        raise ValueError(f"invalid MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def is_multicast_mac(mac: bytes | bytearray) -> bool:
    """The group bit (I/G) of the first octet; broadcast is a multicast address too (`is_multicast_ether_addr`)."""
    return bool(mac) and bool(mac[0] & 0x01)


def is_broadcast_mac(mac: bytes | bytearray) -> bool:
    return bytes(mac) == BROADCAST


format_mac = mac_to_str  # alias used by the engine's traces


def is_ipv4_frame(frame: bytes | bytearray | memoryview) -> bool:
    """An Ethernet II frame carrying IPv4 with room for at least a minimal IPv4 header."""
    return len(frame) >= ETH_HLEN + 20 and (frame[ETH_HLEN - 2] << 8 | frame[ETH_HLEN - 1]) == ETH_P_IP
