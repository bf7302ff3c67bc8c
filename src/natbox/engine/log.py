"""The LOG target's line, as the kernel writes it to the log (net/netfilter/nf_log_syslog.c).

`format_log_line` mirrors `nf_log_ip_packet()`: `nf_log_dump_packet_common()` (prefix, `IN=`, `OUT=`),
`dump_mac_header()` when the packet has an input device, and `dump_ipv4_packet()` with its TCP, UDP
and ICMP parts, recursing once into the datagram an ICMP error quotes. Every field ends with a space,
as the kernel's do (the syslog line keeps the trailing space). Never raises: a short datagram gives
the kernel's `TRUNCATED` / `INCOMPLETE [N bytes]` text.
"""

from __future__ import annotations

from natbox.conntrack.tuple import format_addr

__all__ = ["XT_LOG_IPOPT", "XT_LOG_MACDECODE", "XT_LOG_TCPOPT", "XT_LOG_TCPSEQ", "XT_LOG_UID", "format_log_line"]

# XT_LOG_* flags (uapi xt_LOG.h)
XT_LOG_TCPSEQ = 0x01
XT_LOG_TCPOPT = 0x02
XT_LOG_IPOPT = 0x04
XT_LOG_UID = 0x08
XT_LOG_MACDECODE = 0x20

# dump_ipv4_packet's required_len[]: bytes of ICMP needed before the type-specific fields
_ICMP_REQUIRED = {0: 4, 3: 28, 4: 28, 5: 28, 8: 4, 11: 28, 12: 28, 13: 20, 14: 20, 17: 12, 18: 12}
_TCP_FLAGS = ((0x100, "AE"), (0x80, "CWR"), (0x40, "ECE"), (0x20, "URG"), (0x10, "ACK"), (0x08, "PSH"),
              (0x04, "RST"), (0x02, "SYN"), (0x01, "FIN"))


def format_log_line(prefix: str, datagram: bytes | bytearray, *, iif: str, oif: str, mac: bytes | None,
                    mark: int = 0, flags: int = 0) -> str:
    """The text after the syslog timestamp: `PREFIX IN=.. OUT=.. MAC=.. SRC=.. DST=.. ...`.

    `mac` is the link-layer header the packet arrived with (14 bytes on Ethernet, b"" for a device
    without one) and None when there was no input device (locally generated packets).
    """
    parts = [f"{prefix}IN={iif} OUT={oif} "]
    if iif and mac is not None:
        if flags & XT_LOG_MACDECODE and len(mac) >= 14:
            parts.append(f"MACSRC={_mac(mac[6:12])} MACDST={_mac(mac[:6])} MACPROTO={mac[12]:02x}{mac[13]:02x} ")
        else:
            parts.append("MAC=" + ":".join(f"{b:02x}" for b in mac) + " ")
    _dump_ipv4(parts, bytes(datagram), 0, flags)
    if mark:
        parts.append(f"MARK=0x{mark:x} ")
    return "".join(parts)


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _dump_ipv4(parts: list[str], d: bytes, off: int, flags: int) -> None:
    """`dump_ipv4_packet()` for the datagram at `d[off:]` (off > 0: the one an ICMP error quotes)."""
    if len(d) < off + 20:
        parts.append("TRUNCATED")
        return
    ihl = (d[off] & 0x0F) * 4
    tos = d[off + 1]
    tot_len = int.from_bytes(d[off + 2:off + 4], "big")
    frag = int.from_bytes(d[off + 6:off + 8], "big")
    parts.append(f"SRC={format_addr(int.from_bytes(d[off + 12:off + 16], 'big'))} "
                 f"DST={format_addr(int.from_bytes(d[off + 16:off + 20], 'big'))} ")
    parts.append(f"LEN={tot_len} TOS=0x{tos & 0x1E:02X} PREC=0x{tos & 0xE0:02X} TTL={d[off + 8]} "
                 f"ID={int.from_bytes(d[off + 4:off + 6], 'big')} ")
    if frag & 0x8000:
        parts.append("CE ")
    if frag & 0x4000:
        parts.append("DF ")
    if frag & 0x2000:
        parts.append("MF ")
    fragment = frag & 0x1FFF
    if fragment:
        parts.append(f"FRAG:{fragment} ")
    if flags & XT_LOG_IPOPT and ihl > 20:
        if len(d) < off + ihl:
            parts.append("TRUNCATED")
            return
        parts.append("OPT (" + d[off + 20:off + ihl].hex().upper() + ") ")
    proto = d[off + 9]
    l4 = off + ihl
    rest = len(d) - l4
    if proto == 6:
        parts.append("PROTO=TCP ")
        if fragment:
            return
        if rest < 20:
            parts.append(f"INCOMPLETE [{max(rest, 0)} bytes] ")
            return
        parts.append(f"SPT={int.from_bytes(d[l4:l4 + 2], 'big')} DPT={int.from_bytes(d[l4 + 2:l4 + 4], 'big')} ")
        if flags & XT_LOG_TCPSEQ:
            seq, ack = int.from_bytes(d[l4 + 4:l4 + 8], "big"), int.from_bytes(d[l4 + 8:l4 + 12], "big")
            parts.append(f"SEQ={seq} ACK={ack} ")
        word = int.from_bytes(d[l4 + 12:l4 + 14], "big")
        parts.append(f"WINDOW={int.from_bytes(d[l4 + 14:l4 + 16], 'big')} RES=0x{(word & 0x0E00) >> 6:02x} ")
        parts.extend(f"{name} " for bit, name in _TCP_FLAGS if word & bit)
        parts.append(f"URGP={int.from_bytes(d[l4 + 18:l4 + 20], 'big')} ")
        doff = (d[l4 + 12] >> 4) * 4
        if flags & XT_LOG_TCPOPT and doff > 20:
            if rest < doff:
                parts.append("OPT (TRUNCATED)")
                return
            parts.append("OPT (" + d[l4 + 20:l4 + doff].hex().upper() + ") ")
    elif proto in (17, 136):
        parts.append("PROTO=UDP " if proto == 17 else "PROTO=UDPLITE ")
        if fragment:
            return
        if rest < 8:
            parts.append(f"INCOMPLETE [{max(rest, 0)} bytes] ")
            return
        parts.append(f"SPT={int.from_bytes(d[l4:l4 + 2], 'big')} DPT={int.from_bytes(d[l4 + 2:l4 + 4], 'big')} "
                     f"LEN={int.from_bytes(d[l4 + 4:l4 + 6], 'big')} ")
    elif proto == 1:
        _dump_icmp(parts, d, off, l4, rest, fragment, flags)
    elif proto == 51:
        if fragment:
            return
        parts.append("PROTO=AH ")
        if rest < 12:
            parts.append(f"INCOMPLETE [{max(rest, 0)} bytes] ")
            return
        parts.append(f"SPI=0x{int.from_bytes(d[l4 + 4:l4 + 8], 'big'):x} ")
    elif proto == 50:
        parts.append("PROTO=ESP ")
        if fragment:
            return
        if rest < 8:
            parts.append(f"INCOMPLETE [{max(rest, 0)} bytes] ")
            return
        parts.append(f"SPI=0x{int.from_bytes(d[l4:l4 + 4], 'big'):x} ")
    else:
        parts.append(f"PROTO={proto} ")


def _dump_icmp(parts: list[str], d: bytes, off: int, l4: int, rest: int, fragment: int, flags: int) -> None:
    parts.append("PROTO=ICMP ")
    if fragment:
        return
    if rest < 8:
        parts.append(f"INCOMPLETE [{max(rest, 0)} bytes] ")
        return
    icmp_type, code = d[l4], d[l4 + 1]
    parts.append(f"TYPE={icmp_type} CODE={code} ")
    need = _ICMP_REQUIRED.get(icmp_type, 0)
    if need and rest < need:
        parts.append(f"INCOMPLETE [{rest} bytes] ")
        return
    if icmp_type in (0, 8):
        parts.append(f"ID={int.from_bytes(d[l4 + 4:l4 + 6], 'big')} SEQ={int.from_bytes(d[l4 + 6:l4 + 8], 'big')} ")
    elif icmp_type == 12:
        parts.append(f"PARAMETER={d[l4 + 4]} ")
    elif icmp_type in (3, 4, 5, 11):
        if icmp_type == 5:
            parts.append(f"GATEWAY={format_addr(int.from_bytes(d[l4 + 4:l4 + 8], 'big'))} ")
        if off == 0:  # only one level of recursion
            parts.append("[")
            _dump_ipv4(parts, d, l4 + 8, flags)
            parts.append("] ")
        if icmp_type == 3 and code == 4:
            parts.append(f"MTU={int.from_bytes(d[l4 + 6:l4 + 8], 'big')} ")
