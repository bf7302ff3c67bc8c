"""Generic segmentation offload: a GSO super-packet's segment size, and its segmentation in software.

A packet from a device with vnet headers (TAP IFF_VNET_HDR, AF_PACKET PACKET_VNET_HDR) may be a GSO
super-packet: one IPv4 header and one TCP (or UDP) header in front of up to 64 KiB of payload, which stand
for segments of `gso_size` payload bytes each. The kernel forwards it whole as long as each segment would
fit the out device's MTU (`skb_gso_validate_network_len`), and segments it in software otherwise
(`ip_finish_output_gso` → `skb_gso_segment` → `inet_gso_segment` → `tcp4_gso_segment` /
`udp4_ufo_fragment`), after which each segment may still be fragmented (`ip_fragment`).

Segments are built as `inet_gso_segment` and `tcp_gso_segment` build them: the headers copied, tot_len
set, the IP ID incremented per segment (no SKB_GSO_TCP_FIXEDID from virtio), the sequence number advanced,
FIN and PSH only on the last segment, CWR only on the first; each segment's IP checksum and TCP/UDP
checksum computed in full (natbox completes checksums rather than leave them to a device).
"""

from __future__ import annotations

from typing import Final

from natbox.wire.checksum import CSUM_MANGLED_0, internet_checksum, l4_checksum

__all__ = ["GSO_TCPV4", "GSO_TCPV6", "GSO_UDP_L4", "gso_network_seglen", "gso_segment"]

GSO_TCPV4: Final = 1  # VIRTIO_NET_HDR_GSO_TCPV4 (SKB_GSO_TCPV4)
GSO_TCPV6: Final = 4  # VIRTIO_NET_HDR_GSO_TCPV6 (SKB_GSO_TCPV6): forwarded whole only (no IPv6 software segmentation)
GSO_UDP_L4: Final = 5  # VIRTIO_NET_HDR_GSO_UDP_L4 (SKB_GSO_UDP_L4)
GSO_SEGS_MAX: Final = 65535  # segments per super-packet (gso_max_segs); a smaller gso_size is refused
_TCP_FIN_PSH: Final = 0x01 | 0x08
_TCP_CWR: Final = 0x80


def _l4_hdr_len(data: bytes | bytearray, ihl: int) -> int | None:
    """The transport header's length for a TCP or UDP GSO packet, or None if it is truncated."""
    proto = data[9]
    if proto == 6 and len(data) >= ihl + 20:
        return (data[ihl + 12] >> 4) * 4
    if proto == 17 and len(data) >= ihl + 8:
        return 8
    return None


def gso_network_seglen(data: bytes | bytearray, gso_size: int) -> int:
    """`skb_gso_network_seglen()`: the IP length of one segment (IP + transport headers + gso_size)."""
    ihl = (data[0] & 0x0F) * 4
    l4 = _l4_hdr_len(data, ihl)
    return ihl + (l4 if l4 is not None else 8) + gso_size


def gso_segment(data: bytes | bytearray, gso_type: int, gso_size: int) -> list[bytearray] | None:
    """Segment the GSO IPv4 datagram `data` into datagrams of at most `gso_size` payload bytes.

    Returns None when it cannot be segmented (an unknown GSO type, a header that does not match it,
    a gso_size of 0 or one giving more than GSO_SEGS_MAX segments): the kernel drops such a packet.
    """
    if gso_size <= 0 or len(data) < 20:
        return None
    ihl = (data[0] & 0x0F) * 4
    proto = data[9]
    if (gso_type == GSO_TCPV4 and proto != 6) or (gso_type == GSO_UDP_L4 and proto != 17) or \
            gso_type not in (GSO_TCPV4, GSO_UDP_L4):
        return None
    l4 = _l4_hdr_len(data, ihl)
    if l4 is None or len(data) < ihl + l4:
        return None
    hdr_end = ihl + l4
    payload = memoryview(data)[hdr_end:]
    if not len(payload) or (len(payload) + gso_size - 1) // gso_size > GSO_SEGS_MAX:
        return None
    src = int.from_bytes(data[12:16], "big")
    dst = int.from_bytes(data[16:20], "big")
    ip_id = (data[4] << 8) | data[5]
    seq = int.from_bytes(data[ihl + 4 : ihl + 8], "big") if proto == 6 else 0
    flags = data[ihl + 13] if proto == 6 else 0
    header = bytes(data[:hdr_end])
    out: list[bytearray] = []
    offsets = range(0, len(payload), gso_size)
    last = len(offsets) - 1
    for i, off in enumerate(offsets):
        seg = bytearray(header)
        seg += payload[off : off + gso_size]
        n = len(seg)
        seg[2] = n >> 8
        seg[3] = n & 0xFF
        seg_id = (ip_id + i) & 0xFFFF
        seg[4] = seg_id >> 8
        seg[5] = seg_id & 0xFF
        seg[10] = seg[11] = 0
        check = internet_checksum(memoryview(seg)[:ihl])
        seg[10] = check >> 8
        seg[11] = check & 0xFF
        if proto == 6:
            seg[ihl + 4 : ihl + 8] = ((seq + off) & 0xFFFFFFFF).to_bytes(4, "big")
            f = flags
            if i != last:
                f &= ~_TCP_FIN_PSH
            if i:
                f &= ~_TCP_CWR
            seg[ihl + 13] = f
            cpos = ihl + 16
        else:
            ulen = n - ihl
            seg[ihl + 4] = ulen >> 8
            seg[ihl + 5] = ulen & 0xFF
            cpos = ihl + 6
        seg[cpos] = seg[cpos + 1] = 0
        l4sum = l4_checksum(src, dst, proto, memoryview(seg)[ihl:])
        if proto == 17 and not l4sum:
            l4sum = CSUM_MANGLED_0
        seg[cpos] = l4sum >> 8
        seg[cpos + 1] = l4sum & 0xFF
        out.append(seg)
    return out
