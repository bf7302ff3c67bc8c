"""The LOG target's line, as the kernel writes it to the log (net/netfilter/nf_log_syslog.c).

`format_log_line` mirrors `nf_log_ip_packet()`: `nf_log_dump_packet_common()` (prefix, `IN=`, `OUT=`),
`dump_mac_header()` when the packet has an input device, and `dump_ipv4_packet()` with its TCP, UDP
and ICMP parts, recursing once into the datagram an ICMP error quotes. Every field ends with a space,
as the kernel's do (the syslog line keeps the trailing space). Never raises: a short datagram gives
the kernel's `TRUNCATED` / `INCOMPLETE [N bytes]` text.
"""

from __future__ import annotations

from typing import Final

from natbox.conntrack.tuple import format_addr
from natbox.netfilter import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE
from natbox.wire.icmp import (
    ICMP_DEST_UNREACH,
    ICMP_ECHO,
    ICMP_ECHOREPLY,
    ICMP_FRAG_NEEDED,
    ICMP_PARAMETERPROB,
    ICMP_REDIRECT,
    ICMP_SOURCE_QUENCH,
    ICMP_TIME_EXCEEDED,
)
from natbox.wire.ipv4 import IP_CE, IP_DF, IP_MF, IP_OFFSET, IPTOS_TOS_MASK
from natbox.wire.layout import IPH_MIN_LEN, TCPH_MIN_LEN
from natbox.wire.views import EthernetView, IcmpView, Ipv4View, TcpView, UdpView

__all__ = ["XT_LOG_IPOPT", "XT_LOG_MACDECODE", "XT_LOG_TCPOPT", "XT_LOG_TCPSEQ", "XT_LOG_UID", "format_log_line"]

# XT_LOG_* flags (uapi xt_LOG.h)
XT_LOG_TCPSEQ: Final = 0x01
XT_LOG_TCPOPT: Final = 0x02
XT_LOG_IPOPT: Final = 0x04
XT_LOG_UID: Final = 0x08
XT_LOG_MACDECODE: Final = 0x20

_IPTOS_PREC_MASK: Final = 0xE0  # IPTOS_PREC() (uapi linux/ip.h)
_IPPROTO_ESP, _IPPROTO_AH = 50, 51  # uapi linux/in.h
# struct ip_auth_hdr (spi after nexthdr, hdrlen, reserved) and struct ip_esp_hdr (spi first): the kernel
# reads 12 and 8 bytes of them
_AH_SPI, _AH_MIN_LEN = 4, 12
_ESP_SPI, _ESP_MIN_LEN = 0, 8

# dump_ipv4_packet's required_len[]: bytes of ICMP needed before the type-specific fields
_ICMP_REQUIRED: Final = {0: 4, 3: 28, 4: 28, 5: 28, 8: 4, 11: 28, 12: 28, 13: 20, 14: 20, 17: 12, 18: 12}
_TCP_FLAGS: Final = ((0x100, "AE"), (0x80, "CWR"), (0x40, "ECE"), (0x20, "URG"), (0x10, "ACK"), (0x08, "PSH"),
              (0x04, "RST"), (0x02, "SYN"), (0x01, "FIN"))


def format_log_line(prefix: str, datagram: bytes | bytearray, *, iif: str, oif: str, mac: bytes | None,
                    mark: int = 0, flags: int = 0) -> str:
    """The text after the syslog timestamp: `PREFIX IN=.. OUT=.. MAC=.. SRC=.. DST=.. ...`.

    `mac` is the link-layer header the packet arrived with (14 bytes on Ethernet, b"" for a device
    without one) and None when there was no input device (locally generated packets).
    """
    parts = [f"{prefix}IN={iif} OUT={oif} "]
    if iif and mac is not None:
        eth = EthernetView.new_checked(mac) if flags & XT_LOG_MACDECODE else None
        if eth is not None:
            parts.append(f"MACSRC={_mac(eth.source)} MACDST={_mac(eth.dest)} MACPROTO={eth.proto:04x} ")
        else:
            parts.append("MAC=" + ":".join(f"{b:02x}" for b in mac) + " ")
    _dump_ipv4(parts, bytes(datagram), 0, flags)
    if mark:
        parts.append(f"MARK=0x{mark:x} ")
    return "".join(parts)


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _incomplete(parts: list[str], rest: int) -> None:
    parts.append(f"INCOMPLETE [{max(rest, 0)} bytes] ")


def _dump_ipv4(parts: list[str], d: bytes, off: int, flags: int) -> None:
    """`dump_ipv4_packet()` for the datagram at `d[off:]` (off > 0: the one an ICMP error quotes)."""
    ih = Ipv4View.new_checked(d, off)
    if ih is None:
        parts.append("TRUNCATED")
        return
    ihl = ih.header_len
    tos = ih.tos
    frag = ih.frag_off
    parts.append(f"SRC={format_addr(ih.saddr)} DST={format_addr(ih.daddr)} ")
    parts.append(f"LEN={ih.tot_len} TOS=0x{tos & IPTOS_TOS_MASK:02X} PREC=0x{tos & _IPTOS_PREC_MASK:02X} "
                 f"TTL={ih.ttl} ID={ih.id} ")
    if frag & IP_CE:
        parts.append("CE ")
    if frag & IP_DF:
        parts.append("DF ")
    if frag & IP_MF:
        parts.append("MF ")
    fragment = frag & IP_OFFSET
    if fragment:
        parts.append(f"FRAG:{fragment} ")
    if flags & XT_LOG_IPOPT and ihl > IPH_MIN_LEN:
        if len(d) < off + ihl:
            parts.append("TRUNCATED")
            return
        parts.append("OPT (" + ih.options.hex().upper() + ") ")
    proto = ih.protocol
    l4 = ih.payload_offset
    rest = len(d) - l4
    if proto == IPPROTO_TCP:
        parts.append("PROTO=TCP ")
        if not fragment:
            _dump_tcp(parts, d, l4, rest, flags)
    elif proto in (IPPROTO_UDP, IPPROTO_UDPLITE):
        parts.append("PROTO=UDP " if proto == IPPROTO_UDP else "PROTO=UDPLITE ")
        if fragment:
            return
        uh = UdpView.new_checked(d, l4)
        if uh is None:
            _incomplete(parts, rest)
            return
        parts.append(f"SPT={uh.source} DPT={uh.dest} LEN={uh.len} ")
    elif proto == IPPROTO_ICMP:
        _dump_icmp(parts, d, off, l4, rest, fragment, flags)
    elif proto == _IPPROTO_AH:
        if fragment:
            return
        parts.append("PROTO=AH ")
        if rest < _AH_MIN_LEN:
            _incomplete(parts, rest)
            return
        parts.append(f"SPI=0x{int.from_bytes(d[l4 + _AH_SPI:l4 + _AH_SPI + 4], 'big'):x} ")
    elif proto == _IPPROTO_ESP:
        parts.append("PROTO=ESP ")
        if fragment:
            return
        if rest < _ESP_MIN_LEN:
            _incomplete(parts, rest)
            return
        parts.append(f"SPI=0x{int.from_bytes(d[l4 + _ESP_SPI:l4 + _ESP_SPI + 4], 'big'):x} ")
    else:
        parts.append(f"PROTO={proto} ")


def _dump_tcp(parts: list[str], d: bytes, l4: int, rest: int, flags: int) -> None:
    """`nf_log_dump_tcp_header()`: ports, optional SEQ/ACK, window, reserved bits, flags, URGP, options."""
    th = TcpView.new_checked(d, l4)
    if th is None:
        _incomplete(parts, rest)
        return
    parts.append(f"SPT={th.source} DPT={th.dest} ")
    if flags & XT_LOG_TCPSEQ:
        parts.append(f"SEQ={th.seq} ACK={th.ack_seq} ")
    word = th.flag_word
    parts.append(f"WINDOW={th.window} RES=0x{(word & 0x0E00) >> 6:02x} ")
    parts.extend(f"{name} " for bit, name in _TCP_FLAGS if word & bit)
    parts.append(f"URGP={th.urg_ptr} ")
    doff = th.header_len
    if flags & XT_LOG_TCPOPT and doff > TCPH_MIN_LEN:
        if rest < doff:
            parts.append("OPT (TRUNCATED)")
            return
        parts.append("OPT (" + th.options.hex().upper() + ") ")


def _dump_icmp(parts: list[str], d: bytes, off: int, l4: int, rest: int, fragment: int, flags: int) -> None:
    parts.append("PROTO=ICMP ")
    if fragment:
        return
    ic = IcmpView.new_checked(d, l4)
    if ic is None:
        _incomplete(parts, rest)
        return
    icmp_type, code = ic.type, ic.code
    parts.append(f"TYPE={icmp_type} CODE={code} ")
    need = _ICMP_REQUIRED.get(icmp_type, 0)
    if need and rest < need:
        parts.append(f"INCOMPLETE [{rest} bytes] ")
        return
    if icmp_type in (ICMP_ECHOREPLY, ICMP_ECHO):
        parts.append(f"ID={ic.id} SEQ={ic.sequence} ")
    elif icmp_type == ICMP_PARAMETERPROB:
        parts.append(f"PARAMETER={ic.gateway >> 24} ")
    elif icmp_type in (ICMP_DEST_UNREACH, ICMP_SOURCE_QUENCH, ICMP_REDIRECT, ICMP_TIME_EXCEEDED):
        if icmp_type == ICMP_REDIRECT:
            parts.append(f"GATEWAY={format_addr(ic.gateway)} ")
        if off == 0:  # only one level of recursion
            parts.append("[")
            _dump_ipv4(parts, d, ic.payload_offset, flags)
            parts.append("] ")
        if icmp_type == ICMP_DEST_UNREACH and code == ICMP_FRAG_NEEDED:
            parts.append(f"MTU={ic.mtu} ")
