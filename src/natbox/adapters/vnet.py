"""The virtio_net_hdr (PACKET_VNET_HDR, IFF_VNET_HDR) and CHECKSUM_PARTIAL handling shared by the
AF_PACKET and TAP adapters: where a frame's TCP/UDP checksum lies, finishing a partial checksum as
`skb_checksum_help()` does, putting a full one back in partial form as `tcp_v4_send_check()` leaves it,
and the header to send a frame with, without copying its payload.

Frames handed to the loop are `RxFrame = (frame, gso_type, gso_size, csum_was_partial)` (see
natbox.adapters.packet_socket).
"""

from __future__ import annotations

import struct
from typing import Final

from natbox.netfilter import IPPROTO_TCP, IPPROTO_UDP
from natbox.wire.checksum import complete_partial_csum as _skb_checksum_help
from natbox.wire.layout import (
    ETH_HDR_LEN,
    ETH_PROTO,
    IP6H_ADDRS_END,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IP6H_PAYLOAD_LEN,
    IP6H_SADDR,
    IPH_ADDRS_END,
    IPH_FRAG_OFF,
    IPH_MIN_LEN,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_TOT_LEN,
    IPH_VER_IHL,
    TCPH_CHECK,
    TCPH_DOFF,
    TCPH_MIN_LEN,
    UDPH_CHECK,
    UDPH_LEN_BYTES,
)

__all__ = [
    "GSO_ECN",
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_TCPV6",
    "GSO_UDP_L4",
    "NO_VNET_HDR",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VNET_HDR",
    "VNET_HDR_LEN",
    "RxFrame",
    "build_vnet_hdr",
    "complete_notready",
    "complete_partial_csum",
    "l4_csum_location",
    "parse_vnet_rx",
    "to_partial_csum",
    "tx_hdr_ready",
    "tx_parts",
    "vnet_rx",
]

RxFrame = tuple[bytes | memoryview, int, int, bool]  # (frame, gso_type, gso_size, csum_was_partial)

# <linux/virtio_net.h>
VNET_HDR = struct.Struct("=BBHHHH")  # flags gso_type hdr_len gso_size csum_start csum_offset (legacy, native)
VNET_HDR_LEN: Final = VNET_HDR.size  # 10
VIRTIO_NET_HDR_F_NEEDS_CSUM: Final = 1
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_TCPV6: Final = 4
GSO_UDP_L4: Final = 5
GSO_ECN: Final = 0x80
NO_VNET_HDR = bytes(VNET_HDR_LEN)
IP = ETH_HDR_LEN  # the IPv4 header's start in an untagged Ethernet frame


def _l4_csum_location6(frame: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """`l4_csum_location` for IPv6: TCP/UDP straight after the fixed header (an extension header: None)."""
    if len(frame) < IP + IP6H_LEN or frame[IP] >> 4 != 6:
        return None
    proto = frame[IP + IP6H_NEXTHDR]
    start = IP + IP6H_LEN
    if proto == IPPROTO_TCP and len(frame) >= start + TCPH_MIN_LEN:
        return start, TCPH_CHECK, IPPROTO_TCP
    if proto == IPPROTO_UDP and len(frame) >= start + UDPH_LEN_BYTES:
        return start, UDPH_CHECK, IPPROTO_UDP
    return None


def l4_csum_location(frame: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """(csum_start, csum_offset, protocol) of an untagged IPv4 TCP/UDP frame's checksum, or an IPv6 one's
    whose TCP/UDP header follows the fixed header, else None (fragments, extension headers, other
    protocols, truncated headers)."""
    if len(frame) >= ETH_HDR_LEN and frame[ETH_PROTO] == 0x86 and frame[ETH_PROTO + 1] == 0xDD:
        return _l4_csum_location6(frame)
    if len(frame) < IP + IPH_MIN_LEN or frame[ETH_PROTO] != 0x08 or frame[ETH_PROTO + 1] != 0x00:
        return None
    ihl = (frame[IP + IPH_VER_IHL] & 0x0F) * 4
    frag = IP + IPH_FRAG_OFF
    if ihl < IPH_MIN_LEN or frame[IP + IPH_VER_IHL] >> 4 != 4 or (frame[frag] & 0x3F) or frame[frag + 1]:
        return None  # MF or an offset: a fragment
    proto = frame[IP + IPH_PROTOCOL]
    start = IP + ihl
    if proto == IPPROTO_TCP and len(frame) >= start + TCPH_MIN_LEN:
        return start, TCPH_CHECK, IPPROTO_TCP
    if proto == IPPROTO_UDP and len(frame) >= start + UDPH_LEN_BYTES:
        return start, UDPH_CHECK, IPPROTO_UDP
    return None


def _fold_sum(data: bytes | bytearray | memoryview) -> int:
    """The RFC 1071 one's-complement sum of `data` (not complemented), in 1..0xFFFF (0 for all zeros).
    A 16-bit one's-complement sum is the big-endian value modulo 0xFFFF, computed in C by int()."""
    n = len(data)
    value = int.from_bytes(data, "big")
    if n & 1:
        value <<= 8
    if value == 0:
        return 0
    s = value % 0xFFFF
    return s or 0xFFFF


def complete_partial_csum(frame: bytearray, csum_start: int, csum_offset: int) -> bool:
    """`wire.checksum.complete_partial_csum` (skb_checksum_help) on a frame whose csum_start must lie
    past the Ethernet header (natbox carries IPv4 datagrams). False, frame untouched, otherwise."""
    return csum_start >= ETH_HDR_LEN and _skb_checksum_help(frame, csum_start, csum_offset)


def _partial_head(frame: bytes | bytearray | memoryview) -> tuple[bytes, int, int, int] | None:
    """The start of a TCP/UDP frame up to and including its checksum field, with the field holding the
    (uncomplemented) pseudo-header sum of the frame's own header, as `tcp_v4_send_check()` (IPv6:
    `tcp_v6_send_check()`) leaves it; and (csum_start, csum_offset, protocol). None when it is not TCP/UDP
    (`l4_csum_location`), UDP without a checksum, or the lengths are inconsistent. Reads only the headers:
    the payload is never touched."""
    loc = l4_csum_location(frame)
    if loc is None:
        return None
    start, off, proto = loc
    if proto == IPPROTO_UDP and frame[start + UDPH_CHECK] == 0 and frame[start + UDPH_CHECK + 1] == 0:
        return None
    if frame[IP] >> 4 == 6:  # tcp_v6_send_check: the IPv6 pseudo-header (addresses, length, next header)
        total = IP6H_LEN + ((frame[IP + IP6H_PAYLOAD_LEN] << 8) | frame[IP + IP6H_PAYLOAD_LEN + 1])
        addrs = frame[IP + IP6H_SADDR:IP + IP6H_ADDRS_END]
    else:
        total = (frame[IP + IPH_TOT_LEN] << 8) | frame[IP + IPH_TOT_LEN + 1]
        addrs = frame[IP + IPH_SADDR:IP + IPH_ADDRS_END]
    l4len = total - (start - IP)
    if l4len <= 0 or IP + total > len(frame):
        return None
    s = _fold_sum(addrs) + proto + l4len
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    pos = start + off
    return bytes(frame[:pos]) + bytes((s >> 8, s & 0xFF)), start, off, proto


def to_partial_csum(frame: bytearray) -> tuple[int, int] | None:
    """Turn a TCP/UDP frame with a full checksum into CHECKSUM_PARTIAL form: the field gets the
    (uncomplemented) pseudo-header sum, as `tcp_v4_send_check()` leaves it. Returns (csum_start,
    csum_offset), or None (frame untouched) when it is not IPv4 TCP/UDP or UDP without a checksum."""
    part = _partial_head(frame)
    if part is None:
        return None
    head, start, off, _proto = part
    frame[start + off:start + off + 2] = head[-2:]
    return start, off


def tx_parts(frame: bytes | bytearray, gso_type: int, gso_size: int, partial: bool) -> tuple[bytes, bytes, int]:
    """What to transmit `frame` with on a vnet-header socket, without copying it: (virtio_net_hdr, head,
    split), to be sent as hdr + head + frame[split:]. For a partial-checksum or GSO frame, `head` is
    the frame's start up to its checksum field in partial form (see `_partial_head`) and the header
    says NEEDS_CSUM (the kernel requires it for TCPV4 GSO); otherwise the header is empty and
    `head` is b"" (split 0)."""
    if not partial and not gso_type:
        return NO_VNET_HDR, b"", 0
    part = _partial_head(frame)
    if part is None:
        return NO_VNET_HDR, b"", 0
    head, start, off, proto = part  # the protocol of either family (IPv6: the fixed header's next header)
    hdr_len = 0
    if gso_type:
        hdr_len = start + ((frame[start + TCPH_DOFF] >> 4) * 4) if proto == IPPROTO_TCP else start + UDPH_LEN_BYTES
    return (VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type if gso_size else 0, hdr_len,
                          gso_size if gso_type else 0, start, off), head, len(head))


def tx_hdr_ready(frame: bytes | bytearray, gso_type: int, gso_size: int) -> bytes | None:
    """The NEEDS_CSUM virtio_net_hdr for a TCP/UDP frame whose checksum field already holds the
    pseudo-header sum of its final header (the engine NATs CHECKSUM_PARTIAL packets in that form, as
    `inet_proto_csum_replace4(..., pseudohdr=true)` does): nothing of the frame is read past its
    headers, nor copied. None when it is not an unfragmented IPv4 TCP/UDP frame (then `tx_parts`)."""
    loc = l4_csum_location(frame)
    if loc is None:
        return None
    start, off, proto = loc
    hdr_len = 0
    if gso_type:
        hdr_len = start + ((frame[start + TCPH_DOFF] >> 4) * 4) if proto == IPPROTO_TCP else start + UDPH_LEN_BYTES
    return VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type if gso_size else 0, hdr_len,
                         gso_size if gso_type else 0, start, off)


def build_vnet_hdr(frame: bytearray, gso_type: int, gso_size: int, partial: bool) -> bytes:
    """The virtio_net_hdr to send `frame` with (possibly rewriting its checksum field to partial form).
    A GSO frame is always sent with NEEDS_CSUM (the kernel requires it for TCPV4)."""
    hdr, head, split = tx_parts(frame, gso_type, gso_size, partial)
    if split:
        frame[split - 2:split] = head[-2:]
    return hdr


def parse_vnet_rx(hdr: bytes | memoryview, frame: bytes, complete: bool = True) -> RxFrame:
    """Apply a received virtio_net_hdr to `frame`: finish a partial checksum when `complete` (see
    `complete_partial_csum`). Returns the `RxFrame`."""
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(hdr)
    return vnet_rx(frame, flags, gso_type, gso_size, csum_start, csum_offset, complete)


def vnet_rx(frame: bytes | memoryview, flags: int, gso_type: int, gso_size: int, csum_start: int, csum_offset: int,
            complete: bool) -> RxFrame:
    """`parse_vnet_rx` on the header's fields, already unpacked. A view comes back as it came unless a checksum
    had to be finished (then bytes)."""
    if not flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        return frame, gso_type & ~GSO_ECN, gso_size if gso_type else 0, False
    if not complete:
        # Left partial only where the transmit side can restore it: the IPv4 TCP/UDP checksum itself
        # (a tunnel's inner checksum, say, is finished here instead).
        loc = l4_csum_location(frame)
        if loc is not None and loc[0] == csum_start and loc[1] == csum_offset:
            return frame, gso_type & ~GSO_ECN, gso_size if gso_type else 0, True
    buf = bytearray(frame)
    if complete_partial_csum(buf, csum_start, csum_offset):
        return bytes(buf), gso_type & ~GSO_ECN, gso_size if gso_type else 0, False
    return frame, gso_type & ~GSO_ECN, gso_size if gso_type else 0, True


def complete_notready(frame: bytearray) -> bool:
    """TP_STATUS_CSUMNOTREADY without a vnet header: find the TCP/UDP checksum and finish it."""
    loc = l4_csum_location(frame)
    if loc is None:
        return False
    return complete_partial_csum(frame, loc[0], loc[1])
