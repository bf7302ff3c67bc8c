"""The LOG target's line for an IPv6 packet, as the kernel writes it (net/netfilter/nf_log_syslog.c).

`format_log_line6` mirrors `nf_log_ip6_packet()`: `nf_log_dump_packet_common()` (prefix, `IN=`, `OUT=`),
`dump_ipv6_mac_header()` when the packet has an input device, and `dump_ipv6_packet()`: the addresses in %pI6
form (eight 4-digit groups), `LEN` (payload length + 40), `TC`, `HOPLIMIT`, `FLOWLBL`, the extension headers
(`FRAG:offset [INCOMPLETE] ID:xxxxxxxx`; with --log-ip-options each header inside `OPT ( ... ) `, AH's and ESP's
SPI), then TCP/UDP as for IPv4 and ICMPv6 (`TYPE= CODE=`, echo `ID= SEQ=`, `POINTER=` of a parameter problem,
the quoted packet of an error in brackets once, `MTU=` of packet too big), `MARK=`. Never raises: short data
gives the kernel's `TRUNCATED` / `INCOMPLETE [N bytes]` text.
"""

from __future__ import annotations

from typing import Final

from natbox.engine.log import XT_LOG_IPOPT, XT_LOG_MACDECODE, _dump_tcp
from natbox.netfilter import IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE
from natbox.wire.ipv6 import (
    NEXTHDR_AUTH,
    NEXTHDR_DEST,
    NEXTHDR_ESP,
    NEXTHDR_FRAGMENT,
    NEXTHDR_HOP,
    NEXTHDR_ICMP,
    NEXTHDR_NONE,
    NEXTHDR_ROUTING,
    format_addr6_full,
)
from natbox.wire.layout import (
    AUTH_HDRLEN,
    AUTH_MIN_LEN,
    AUTH_SPI,
    FRAGH_ID,
    FRAGH_LEN,
    FRAGH_OFF,
    ICMP6H_CODE,
    ICMP6H_IDENTIFIER,
    ICMP6H_LEN,
    ICMP6H_MTU,
    ICMP6H_POINTER,
    ICMP6H_SEQUENCE,
    ICMP6H_TYPE,
    IP6H_DADDR,
    IP6H_HOP_LIMIT,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IP6H_PAYLOAD_LEN,
    IP6H_SADDR,
    IP6H_VER_TC_FL,
    IP6OPT_HDRLEN,
    IP6OPT_NEXTHDR,
    UDPH_DEST,
    UDPH_LEN,
    UDPH_LEN_BYTES,
    UDPH_SOURCE,
)
from natbox.wire.views import EthernetView

__all__ = ["format_log_line6"]

# nf_ip6_ext_hdr(): the headers dump_ipv6_packet walks (ESP ends the walk)
_EXT: Final = frozenset({NEXTHDR_HOP, NEXTHDR_ROUTING, NEXTHDR_FRAGMENT, NEXTHDR_ESP, NEXTHDR_AUTH, NEXTHDR_NONE,
                  NEXTHDR_DEST})
_ESP_SPI, _ESP_MIN_LEN = 0, 8  # struct ip_esp_hdr: the SPI first, 8 bytes read
# ICMPv6 types (uapi linux/icmpv6.h)
_DEST_UNREACH, _PKT_TOOBIG, _TIME_EXCEED, _PARAMPROB, _ECHO_REQUEST, _ECHO_REPLY = 1, 2, 3, 4, 128, 129


def _u16(d: bytes, off: int) -> int:
    return int.from_bytes(d[off:off + 2], "big")


def _u32(d: bytes, off: int) -> int:
    return int.from_bytes(d[off:off + 4], "big")


def format_log_line6(prefix: str, datagram: bytes | bytearray, *, iif: str, oif: str, mac: bytes | None,
                     mark: int = 0, flags: int = 0) -> str:
    """The text after the syslog timestamp: `PREFIX IN=.. OUT=.. MAC=.. SRC=.. DST=.. LEN=.. TC=.. ...`.

    `mac` is the link-layer header the packet arrived with (14 bytes on Ethernet, b"" for a device without
    one) and None when there was no input device (locally generated packets)."""
    parts = [f"{prefix}IN={iif} OUT={oif} "]
    if iif and mac is not None:
        eth = EthernetView.new_checked(mac) if flags & XT_LOG_MACDECODE else None
        if eth is not None:
            parts.append(f"MACSRC={_mac(eth.source)} MACDST={_mac(eth.dest)} MACPROTO={eth.proto:04x} ")
        else:
            parts.append("MAC=" + _mac(mac) + " ")
    # MARK= ends dump_ipv6_packet, so a line cut short (TRUNCATED, INCOMPLETE, ESP) has none
    if _dump_ipv6(parts, bytes(datagram), 0, flags, True) and mark:
        parts.append(f"MARK=0x{mark:x} ")
    return "".join(parts)


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _dump_ipv6(parts: list[str], d: bytes, off: int, flags: int, recurse: bool) -> bool:
    """`dump_ipv6_packet()` for the packet at `d[off:]`; False when it returned before its end."""
    if len(d) < off + IP6H_LEN:
        parts.append("TRUNCATED")
        return False
    first = _u32(d, off + IP6H_VER_TC_FL)
    parts.append(f"SRC={format_addr6_full(int.from_bytes(d[off + IP6H_SADDR:off + IP6H_DADDR], 'big'))} "
                 f"DST={format_addr6_full(int.from_bytes(d[off + IP6H_DADDR:off + IP6H_LEN], 'big'))} ")
    parts.append(f"LEN={_u16(d, off + IP6H_PAYLOAD_LEN) + IP6H_LEN} TC={(first & 0x0FF00000) >> 20} "
                 f"HOPLIMIT={d[off + IP6H_HOP_LIMIT]} FLOWLBL={first & 0x000FFFFF} ")
    walked = _walk_ext(parts, d, off + IP6H_LEN, d[off + IP6H_NEXTHDR], flags)
    if walked is None:
        return False
    ptr, current, fragment = walked
    rest = len(d) - ptr
    if current == IPPROTO_TCP:
        parts.append("PROTO=TCP ")
        if not fragment:
            _dump_tcp(parts, d, ptr, rest, flags)  # nf_log_dump_tcp_header: returns 1 after a cut header
            return not parts[-1].startswith(("INCOMPLETE", "OPT (TRUNCATED)"))
    elif current in (IPPROTO_UDP, IPPROTO_UDPLITE):
        parts.append("PROTO=UDP " if current == IPPROTO_UDP else "PROTO=UDPLITE ")
        if not fragment:
            if rest < UDPH_LEN_BYTES:
                parts.append(f"INCOMPLETE [{max(rest, 0)} bytes] ")
                return False
            parts.append(f"SPT={_u16(d, ptr + UDPH_SOURCE)} DPT={_u16(d, ptr + UDPH_DEST)} "
                         f"LEN={_u16(d, ptr + UDPH_LEN)} ")
    elif current == NEXTHDR_ICMP:
        return _dump_icmp6(parts, d, ptr, fragment, flags, recurse)
    else:
        parts.append(f"PROTO={current} ")
    return True


def _walk_ext(parts: list[str], d: bytes, ptr: int, current: int, flags: int) -> tuple[int, int, bool] | None:
    """The extension header loop of `dump_ipv6_packet()`: (offset, protocol, fragment) of what follows, or
    None when the line ends inside the chain."""
    fragment = False
    opt = bool(flags & XT_LOG_IPOPT)
    while current != NEXTHDR_NONE and current in _EXT:
        if len(d) < ptr + 2:
            parts.append("TRUNCATED")
            return None
        if opt:
            parts.append("OPT ( ")
        if current == NEXTHDR_FRAGMENT:
            parts.append("FRAG:")
            if len(d) < ptr + FRAGH_LEN:
                parts.append("TRUNCATED ")
                return None
            frag_off = _u16(d, ptr + FRAGH_OFF)
            parts.append(f"{frag_off & 0xFFF8} ")
            if frag_off & 1:
                parts.append("INCOMPLETE ")
            parts.append(f"ID:{_u32(d, ptr + FRAGH_ID):08x} ")
            fragment = fragment or bool(frag_off & 0xFFF8)
            hdrlen = FRAGH_LEN
        elif current in (NEXTHDR_DEST, NEXTHDR_ROUTING, NEXTHDR_HOP):
            if fragment:
                if opt:
                    parts.append(")")
                return None
            hdrlen = (d[ptr + IP6OPT_HDRLEN] + 1) << 3
        elif current == NEXTHDR_AUTH:
            if opt:
                parts.append("AH ")
                if fragment:
                    parts.append(")")
                    return None
                if len(d) < ptr + AUTH_MIN_LEN:
                    parts.append(f"INCOMPLETE [{len(d) - ptr} bytes] )")
                    return None
                parts.append(f"SPI=0x{_u32(d, ptr + AUTH_SPI):x} ")
            hdrlen = (d[ptr + AUTH_HDRLEN] + 2) << 2
        else:  # ESP ends the line
            if opt:
                parts.append("ESP ")
                if fragment:
                    parts.append(")")
                elif len(d) < ptr + _ESP_MIN_LEN:
                    parts.append(f"INCOMPLETE [{len(d) - ptr} bytes] )")
                else:
                    parts.append(f"SPI=0x{_u32(d, ptr + _ESP_SPI):x} )")
            return None
        if opt:
            parts.append(") ")
        current = d[ptr + IP6OPT_NEXTHDR]
        ptr += hdrlen
    return ptr, current, fragment


def _dump_icmp6(parts: list[str], d: bytes, ptr: int, fragment: bool, flags: int, recurse: bool) -> bool:
    parts.append("PROTO=ICMPv6 ")
    if fragment:
        return True
    if len(d) < ptr + ICMP6H_LEN:
        parts.append(f"INCOMPLETE [{max(len(d) - ptr, 0)} bytes] ")
        return False
    t, code = d[ptr + ICMP6H_TYPE], d[ptr + ICMP6H_CODE]
    parts.append(f"TYPE={t} CODE={code} ")
    if t in (_ECHO_REQUEST, _ECHO_REPLY):
        parts.append(f"ID={_u16(d, ptr + ICMP6H_IDENTIFIER)} SEQ={_u16(d, ptr + ICMP6H_SEQUENCE)} ")
    elif t in (_PARAMPROB, _DEST_UNREACH, _PKT_TOOBIG, _TIME_EXCEED):
        if t == _PARAMPROB:
            parts.append(f"POINTER={_u32(d, ptr + ICMP6H_POINTER):08x} ")
        if recurse:
            parts.append("[")
            _dump_ipv6(parts, d, ptr + ICMP6H_LEN, flags, False)
            parts.append("] ")
        if t == _PKT_TOOBIG:
            parts.append(f"MTU={_u32(d, ptr + ICMP6H_MTU)} ")
    return True
