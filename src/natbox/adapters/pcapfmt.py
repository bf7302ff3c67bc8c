"""The capture-file formats' constants and link-layer normalisation shared by the pcap reader and writers.

Bounds, LINKTYPE_* numbers (https://www.tcpdump.org/linktypes.html), the pcap/pcapng magic numbers,
block types and option codes, and `normalise()`: the IPv4 datagram, ethertype and MACs of one captured
packet, read through `wire.layout`'s offsets of the link headers (Ethernet with up to two VLAN tags,
Linux cooked v1/v2, BSD/OpenBSD loopback, raw IP).
"""

from __future__ import annotations

from natbox.wire.ethernet import ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6
from natbox.wire.layout import (
    ETH_DEST,
    ETH_HDR_LEN,
    ETH_PROTO,
    ETH_SOURCE,
    IPH_VER_IHL,
    LOOP_FAMILY,
    LOOP_HDR_LEN,
    SLL2_ADDR,
    SLL2_HALEN,
    SLL2_HDR_LEN,
    SLL2_PROTOCOL,
    SLL_ADDR,
    SLL_HALEN,
    SLL_HDR_LEN,
    SLL_PROTOCOL,
    VLAN_ENCAP_PROTO,
    VLAN_HLEN,
)

# --- bounds --------------------------------------------------------------------------------------------
# Largest caplen accepted in a record: libpcap's MAXIMUM_SNAPLEN (262144 = 256 KiB). A larger caplen is
# treated as file corruption ("absurd caplen") and ends iteration, as libpcap does.
MAX_CAPLEN = 262144
# Largest pcapng block we read into memory (EPB/SPB/OPB/IDB/SHB): the packet plus 64 KiB of options.
# Blocks we skip (unknown types) may be any size up to 2**32 - 4: they are skipped in chunks.
MAX_BLOCK_LEN = MAX_CAPLEN + 65536
# Interfaces per pcapng section (IDBs beyond this end iteration as malformed).
MAX_INTERFACES = 65536
# Chunk size used when skipping an unknown block.
_SKIP_CHUNK = 65536

# --- link types ----------------------------------------------------------------------------------------
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_VLAN_TPIDS = frozenset({ETH_P_8021Q, ETH_P_8021AD, 0x9100})  # 0x9100: old QinQ
# Link types whose payload is a bare IP datagram; the value is the single IP version it may carry
# (None: decide by the version nibble). DLT 12 and 14 are the historical raw-IP DLTs (OpenBSD/BSD/OS).
_RAW_LINKTYPES: dict[int, int | None] = {LINKTYPE_RAW: None, 12: None, 14: None, LINKTYPE_IPV4: 4,
                                         LINKTYPE_IPV6: 6}
# BSD loopback address families meaning IPv4 / IPv6 (AF_INET is 2 everywhere; AF_INET6 varies by OS).
_AF_INET = 2
_AF_INET6 = frozenset({10, 24, 28, 30})

# --- file format constants -----------------------------------------------------------------------------
PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
BT_IDB = 0x00000001
BT_OPB = 0x00000002
BT_SPB = 0x00000003
BT_EPB = 0x00000006
OPT_ENDOFOPT = 0
OPT_COMMENT = 1
IF_NAME = 2
IF_TSRESOL = 9
IF_TSOFFSET = 14
LT_LINKTYPE_MASK = 0x03FFFFFF  # libpcap LT_LINKTYPE(): the rest of the field is FCS information
EPB_DATA = 20  # interface id, timestamp high/low, caplen, wirelen, then the packet (also OPB's layout)
SPB_DATA = 4  # original length, then the packet

NS = 1_000_000_000
_PROTO_LEN = 2  # a __be16 protocol field

Normalised = tuple[bytes | None, int | None, bytes | None, bytes | None, str | None]


def _u16(data: bytes, at: int) -> int:
    return (data[at] << 8) | data[at + 1]


def normalise(linktype: int, data: bytes) -> Normalised:
    """(ipv4, ethertype, src_mac, dst_mac, foreign) for one packet; never raises."""
    n = len(data)
    if linktype == LINKTYPE_ETHERNET:
        if n < ETH_HDR_LEN:
            return None, None, None, None, None
        dst, src = data[ETH_DEST:ETH_SOURCE], data[ETH_SOURCE:ETH_PROTO]
        proto_at = ETH_PROTO
        etype = _u16(data, proto_at)
        for _ in range(2):
            if etype in _VLAN_TPIDS and proto_at + VLAN_HLEN + _PROTO_LEN <= n:
                proto_at += _PROTO_LEN + VLAN_ENCAP_PROTO
                etype = _u16(data, proto_at)
        off = proto_at + _PROTO_LEN
        return (data[off:] if etype == ETH_P_IP else None), etype, src, dst, None
    if linktype in _RAW_LINKTYPES:
        want = _RAW_LINKTYPES[linktype]
        ver = data[IPH_VER_IHL] >> 4 if n else want
        if want == 4 or (want is None and ver == 4):
            return data, ETH_P_IP, None, None, None
        if want == 6 or ver == 6:
            return None, ETH_P_IPV6, None, None, None
        return None, None, None, None, None
    if linktype == LINKTYPE_LINUX_SLL:
        if n < SLL_HDR_LEN:
            return None, None, None, None, None
        alen = _u16(data, SLL_HALEN)
        sll_src = data[SLL_ADDR:SLL_ADDR + 6] if alen == 6 else None
        etype = _u16(data, SLL_PROTOCOL)
        return (data[SLL_HDR_LEN:] if etype == ETH_P_IP else None), etype, sll_src, None, None
    if linktype == LINKTYPE_LINUX_SLL2:
        if n < SLL2_HDR_LEN:
            return None, None, None, None, None
        etype = _u16(data, SLL2_PROTOCOL)
        sll2_src = data[SLL2_ADDR:SLL2_ADDR + 6] if data[SLL2_HALEN] == 6 else None
        return (data[SLL2_HDR_LEN:] if etype == ETH_P_IP else None), etype, sll2_src, None, None
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if n < LOOP_HDR_LEN:
            return None, None, None, None, None
        family = data[LOOP_FAMILY:LOOP_FAMILY + 4]
        if linktype == LINKTYPE_LOOP:
            af = int.from_bytes(family, "big")
        else:
            # Host byte order of the writer: the family is small, so whichever order gives a small value.
            af = int.from_bytes(family, "little")
            if af > 0xFFFF:
                af = int.from_bytes(family, "big")
        if af == _AF_INET:
            return data[LOOP_HDR_LEN:], ETH_P_IP, None, None, None
        if af in _AF_INET6:
            return None, ETH_P_IPV6, None, None, None
        return None, None, None, None, None
    return None, None, None, None, f"foreign link type {linktype}"
