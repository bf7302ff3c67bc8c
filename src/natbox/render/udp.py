"""print-udp.c at default verbosity and the UDP payload printers chosen by port (DNS, mDNS, TFTP,
ESP-in-UDP, SIP)."""

from __future__ import annotations

from natbox.render.dissect import Packet, Truncated, ip_pair
from natbox.render.dns import domain_print
from natbox.render.ipsec import isakmp_rfc3948_print
from natbox.render.text import SIP_CMDS, txtproto_print
from natbox.wire.layout import UDPH_DEST, UDPH_LEN, UDPH_LEN_BYTES, UDPH_SOURCE

_TFTP_OPS: dict[int, str] = {1: "RRQ", 2: "WRQ", 3: "DATA", 4: "ACK", 5: "ERROR", 6: "OACK"}
_TFTP_ERRS: dict[int, str] = {0: "EUNDEF", 1: "ENOTFOUND", 2: "EACCESS", 3: "ENOSPACE", 4: "EBADOP", 5: "EBADID",
                              6: "EEXISTS", 7: "ENOUSER"}
_PORT_DOMAIN = 53


def _printztn(p: Packet, cp: int, n: int) -> int:
    """nd_printztn(): a NUL-terminated string of at most n bytes; 0 if unterminated/truncated."""
    parts: list[str] = []
    count = 0
    while True:
        if n == 0 or cp >= p.end:
            count = 0
            break
        c = p.u8(cp)
        cp += 1
        count += 1
        n -= 1
        if c == 0:
            break
        if c >= 0x80:
            c &= 0x7F
            parts.append("M-")
        if not 0x20 <= c <= 0x7E:
            c ^= 0x40
            parts.append("^")
        parts.append(chr(c))
    p.w("".join(parts))
    return count


def tftp_print(p: Packet, bp: int, length: int) -> None:
    """tftp_print() (RFC 1350 / 2347)."""
    p.proto = "tftp"
    p.w(f"TFTP, length {length}")
    if length < 2:
        raise Truncated
    opcode = p.u16(bp)
    name = _TFTP_OPS.get(opcode)
    if name is None:
        p.w(f", tftp-#{opcode}")
        return
    p.w(f", {name}")
    bp += 2
    length -= 2
    if opcode in (1, 2):
        if length == 0:
            raise Truncated
        p.w(' "')
        ui = _printztn(p, bp, length)
        p.w('"')
        if ui == 0:
            raise Truncated
        bp += ui
        length -= ui
        if length == 0:
            raise Truncated
        p.w(" ")
        ui = _printztn(p, bp, length)
        if ui == 0:
            raise Truncated
        bp += ui
        length -= ui
    if opcode in (1, 2, 6):
        while length != 0:
            if p.u8(bp) != 0:
                p.w(" ")
            ui = _printztn(p, bp, length)
            if ui == 0:
                raise Truncated
            bp += ui
            length -= ui
    elif opcode in (3, 4):
        if length < 2:
            raise Truncated
        p.w(f" block {p.u16(bp)}")
    elif opcode == 5:
        if length < 2:
            raise Truncated
        code = p.u16(bp)
        err = _TFTP_ERRS.get(code)
        p.w(" " + (err if err is not None else f"tftp-err-#{code} \""))
        bp += 2
        length -= 2
        if length == 0:
            raise Truncated
        p.w(' "')
        ui = _printztn(p, bp, length)
        p.w('"')
        if ui == 0:
            raise Truncated


def udp_print(p: Packet, off: int, length: int, iph: int, fragmented: bool) -> None:
    """udp_print() at default verbosity: DNS on port 53, else `UDP, length N`."""
    p.proto = "udp"
    pair = ip_pair(p, iph, 17)
    if not p.has(off + UDPH_DEST, 2):
        if pair is not None:
            p.w(f"{pair[0]} > {pair[1]}: ")
        raise Truncated
    sport, dport = p.u16(off + UDPH_SOURCE), p.u16(off + UDPH_DEST)
    addrs = f"{pair[0]}.{sport} > {pair[1]}.{dport}: " if pair is not None else f"{sport} > {dport}: "
    if length < UDPH_LEN_BYTES:
        p.w(f"{addrs}truncated-udp {length}")
        return
    if not p.has(off + UDPH_LEN, 2):
        p.w(addrs)
        raise Truncated
    ulen = p.u16(off + UDPH_LEN)
    if ulen < UDPH_LEN_BYTES:
        p.w(f"{addrs}truncated-udplength {ulen}")
        return
    ulen -= UDPH_LEN_BYTES
    length -= UDPH_LEN_BYTES
    length = min(length, ulen)
    data = off + UDPH_LEN_BYTES
    if data > p.end:
        p.w(addrs)
        raise Truncated
    p.w(addrs)
    ports = (sport, dport)
    if _PORT_DOMAIN in ports:
        domain_print(p, data, length, over_tcp=False)
    elif 5353 in ports:
        domain_print(p, data, length, over_tcp=False, is_mdns=True)
    elif 69 in ports:
        tftp_print(p, data, length)
    elif 4500 in ports:
        isakmp_rfc3948_print(p, data, length)
    elif 5060 in ports:
        txtproto_print(p, data, length, "sip", SIP_CMDS)
    elif ulen > length and not fragmented:
        p.w(f"UDP, bad length {ulen} > {length}")
    else:
        p.w(f"UDP, length {ulen}")


