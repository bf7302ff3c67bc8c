"""virtio_net_hdr for IPv6 frames (natbox.adapters.vnet, pure): the GSO header length comes from the IPv6
header's next header, not from where IPv4 keeps its protocol byte (inside the IPv6 source address)."""

from __future__ import annotations

import struct

from natbox.adapters.vnet import GSO_TCPV6, GSO_UDP_L4, VNET_HDR, to_partial_csum, tx_hdr_ready, tx_parts
from natbox.wire.ethernet import ETH_P_IPV6, build_ethernet
from natbox.wire.ipv6 import build_ipv6, parse_addr6
from natbox.wire.layout import ETH_HDR_LEN, IP6H_LEN, IP6H_SADDR

MACS = (b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02")
START = ETH_HDR_LEN + IP6H_LEN  # the transport header: straight after the fixed IPv6 header


def _frame(src: str, proto: int, payload: bytes) -> bytes:
    if proto == 6:  # TCP with 12 bytes of options (doff 8)
        l4 = struct.pack("!HHIIBBHHH", 40000, 443, 1, 0, 8 << 4, 0x18, 512, 0, 0) + b"\x01" * 12 + payload
    else:
        l4 = struct.pack("!HHHH", 40000, 5000, 8 + len(payload), 0xFFFF) + payload
    datagram = build_ipv6(parse_addr6(src), parse_addr6("2001:db8:100::10"), proto, l4, hop_limit=64)
    return bytes(build_ethernet(MACS[1], MACS[0], ETH_P_IPV6, datagram))


def test_gso_tcpv6_header_length_is_the_tcp_header_s() -> None:
    """A TCP source whose address byte at IPv4's protocol offset is not 6: the header covers TCP's 32 bytes."""
    f = _frame("fd00:77::2", 6, b"y" * 3000)
    assert f[ETH_HDR_LEN + IP6H_SADDR + 1] == 0x00  # what an IPv4 reading takes for the protocol
    hdr, head, split = tx_parts(f, GSO_TCPV6, 1428, True)
    flags, gso_type, hdr_len, gso_size, start, off = VNET_HDR.unpack(hdr)
    assert (flags, gso_type, gso_size, start, off) == (1, GSO_TCPV6, 1428, START, 16)
    assert hdr_len == START + 32
    part = bytearray(f)
    assert to_partial_csum(part) == (START, 16)
    assert head + f[split:] == bytes(part) and tx_hdr_ready(bytes(part), GSO_TCPV6, 1428) == hdr


def test_gso_udp_l4_over_ipv6_header_length_is_the_udp_header_s() -> None:
    """A UDP source whose address byte at IPv4's protocol offset is 6: still UDP's 8 bytes, not a TCP data
    offset read out of the UDP payload."""
    f = _frame("2006:db8::2", 17, b"\xf0" * 3000)
    assert f[ETH_HDR_LEN + IP6H_SADDR + 1] == 0x06
    hdr, head, split = tx_parts(f, GSO_UDP_L4, 1400, True)
    _flags, gso_type, hdr_len, gso_size, start, off = VNET_HDR.unpack(hdr)
    assert (gso_type, hdr_len, gso_size, start, off) == (GSO_UDP_L4, START + 8, 1400, START, 6)
    part = bytearray(f)
    assert to_partial_csum(part) == (START, 6)
    assert head + f[split:] == bytes(part) and tx_hdr_ready(bytes(part), GSO_UDP_L4, 1400) == hdr
