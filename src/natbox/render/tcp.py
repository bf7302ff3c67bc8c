"""print-tcp.c at default verbosity: flags, relative or absolute seq/ack, window, options, and the
payload printers chosen by port (DNS, HTTP, WHOIS, SSH, SMTP, FTP)."""

from __future__ import annotations

from natbox.render.dissect import Packet, Stop, Truncated, ip_pair
from natbox.render.dns import domain_print
from natbox.render.text import HTTP_CMDS, ssh_print, txtproto_print
from natbox.wire.layout import (
    IP6H_ADDRS_END,
    IP6H_DADDR,
    IP6H_SADDR,
    IPH_ADDRS_END,
    IPH_DADDR,
    IPH_SADDR,
    TCPH_ACK_SEQ,
    TCPH_DEST,
    TCPH_DOFF,
    TCPH_FLAGS,
    TCPH_MIN_LEN,
    TCPH_SEQ,
    TCPH_SOURCE,
    TCPH_URG_PTR,
    TCPH_WINDOW,
)

_TCP_FLAGS: tuple[tuple[int, str], ...] = ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x10, "."),
                                           (0x20, "U"), (0x40, "E"), (0x80, "W"))
_TCPOPT_NAMES: dict[int, str] = {0: "eol", 1: "nop", 2: "mss", 3: "wscale", 4: "sackOK", 5: "sack", 6: "echo",
                                 7: "echoreply", 8: "TS", 11: "cc", 12: "ccnew", 13: "", 19: "md5", 20: "scps",
                                 28: "uto", 29: "tcp-ao", 30: "mptcp", 34: "tfo", 254: "exp"}

def tcp_print(p: Packet, off: int, length: int, iph: int) -> None:
    """tcp_print() at default verbosity (flags, seq/ack, win, urg, options, length, a few payloads)."""
    p.proto = "tcp"
    b = p.b
    pair = ip_pair(p, iph, 6)
    if not p.has(off + TCPH_DEST, 2):
        if pair is not None:
            p.w(f"{pair[0]} > {pair[1]}:")
        raise Truncated
    sport, dport = p.u16(off + TCPH_SOURCE), p.u16(off + TCPH_DEST)
    p.w(f"{pair[0]}.{sport} > {pair[1]}.{dport}: " if pair is not None else f"{sport} > {dport}: ")
    p.need(off, TCPH_MIN_LEN)
    hlen = (b[off + TCPH_DOFF] >> 4) * 4
    if hlen < TCPH_MIN_LEN:
        p.w(f" tcp {(length - hlen) & 0xFFFFFFFF} [bad hdr length {hlen} - too short, < 20]")
        return
    seq, ack = p.u32(off + TCPH_SEQ), p.u32(off + TCPH_ACK_SEQ)
    win, urp = p.u16(off + TCPH_WINDOW), p.u16(off + TCPH_URG_PTR)
    flags = b[off + TCPH_FLAGS]
    p.w("Flags [" + ("".join(c for bit, c in _TCP_FLAGS if flags & bit) or "none") + "]")
    rev = False
    thseq = thack = 0
    seqs = p.seqs
    if seqs is not None and flags & 0x10:
        if b[iph] >> 4 == 6:  # tcp_seq_hash6
            sip, dip = b[iph + IP6H_SADDR:iph + IP6H_DADDR], b[iph + IP6H_DADDR:iph + IP6H_ADDRS_END]
        else:
            sip, dip = b[iph + IPH_SADDR:iph + IPH_DADDR], b[iph + IPH_DADDR:iph + IPH_ADDRS_END]
        if sport > dport or (sport == dport and sip > dip):
            rev = True
        key = (dip, sip, (dport << 16) | sport) if rev else (sip, dip, (sport << 16) | dport)
        base = seqs.d.get(key)
        if base is None or flags & 0x02:
            # tha stored as (seq base of the "src" side, ack base): see tcp_print.
            base = (((ack - 1) & 0xFFFFFFFF), seq) if rev else (seq, (ack - 1) & 0xFFFFFFFF)
            seqs.put(key, base)
        elif rev:
            seq, ack = (seq - base[1]) & 0xFFFFFFFF, (ack - base[0]) & 0xFFFFFFFF
        else:
            seq, ack = (seq - base[0]) & 0xFFFFFFFF, (ack - base[1]) & 0xFFFFFFFF
        thseq, thack = base
    if hlen > length:
        p.w(f" [bad hdr length {hlen} - too long, > {length}]")
        return
    length -= hlen
    if length > 0 or flags & 0x07:
        p.w(f", seq {seq}")
        if length > 0:
            p.w(f":{(seq + length) & 0xFFFFFFFF}")
    if flags & 0x10:
        p.w(f", ack {ack}")
    p.w(f", win {win}")
    if flags & 0x20:
        p.w(f", urg {urp}")
    if hlen > TCPH_MIN_LEN:
        _tcp_options(p, off + TCPH_MIN_LEN, hlen - TCPH_MIN_LEN, rev, thseq, thack)
    p.w(f", length {length}")
    if length == 0:
        return
    if not p.has(off, hlen):
        p.w(f" [remaining caplen({max(0, p.end - off)}) < header length({hlen})]")
        raise Truncated
    data = off + hlen
    if 53 in (sport, dport):
        domain_print(p, data, length, over_tcp=True)
    elif 80 in (sport, dport) or 8080 in (sport, dport):
        p.w(": ")
        txtproto_print(p, data, length, "http", HTTP_CMDS)
    elif 43 in (sport, dport):
        p.w(": ")
        txtproto_print(p, data, length, "whois", None)
    elif 22 in (sport, dport):
        ssh_print(p, data, length)
    elif 25 in (sport, dport):
        p.w(": ")
        txtproto_print(p, data, length, "smtp", None)
    elif 21 in (sport, dport):
        p.w(": ")
        txtproto_print(p, data, length, "ftp", None)


def _tcp_options(p: Packet, at: int, hlen: int, rev: bool, thseq: int, thack: int) -> None:
    """The option loop of tcp_print(); writes `, options [...]` or tcpdump's `[bad opt]` forms."""
    p.w(", options [")
    ch = ""
    try:
        while hlen > 0:
            p.w(ch)
            opt = p.u8(at)
            at += 1
            if opt in (0, 1):
                ln = 1
            else:
                ln = p.u8(at)
                at += 1
                if ln < 2 or ln > hlen:
                    raise _BadOpt
                hlen -= 1
            hlen -= 1
            p.w(_TCPOPT_NAMES.get(opt, f"unknown-{opt}"))
            datalen = 0

            if opt == 2:
                datalen = 2
                _lencheck(p, at, 2, hlen)
                p.w(f" {p.u16(at)}")
            elif opt == 3:
                datalen = 1
                _lencheck(p, at, 1, hlen)
                p.w(f" {p.u8(at)}")
            elif opt == 5:
                datalen = ln - 2
                if datalen % 8:
                    p.w(" invalid sack")
                else:
                    p.w(f" {datalen // 8} ")
                    for i in range(0, datalen, 8):
                        _lencheck(p, at, i + 4, hlen)
                        s = p.u32(at + i)
                        _lencheck(p, at, i + 8, hlen)
                        e = p.u32(at + i + 4)
                        base = thseq if rev else thack
                        p.w(f"{{{(s - base) & 0xFFFFFFFF}:{(e - base) & 0xFFFFFFFF}}}")
            elif opt in (6, 7, 11, 12, 13):
                datalen = 4
                _lencheck(p, at, 4, hlen)
                p.w(f" {p.u32(at)}")
            elif opt == 8:
                datalen = 8
                _lencheck(p, at, 8, hlen)
                p.w(f" val {p.u32(at)} ecr {p.u32(at + 4)}")
            elif opt == 19:
                datalen = 16
                _lencheck(p, at, 16, hlen)
                p.w(" " + p.b[at:at + 16].hex())
            elif opt == 20:
                datalen = 2
                _lencheck(p, at, 2, hlen)
                p.w(f" cap {p.u8(at):02x} id {p.u8(at + 1)}")
            elif opt in (0, 1, 4):
                pass
            elif opt == 28:
                datalen = 2
                _lencheck(p, at, 2, hlen)
                uto = p.u16(at)
                p.w(f" 0x{uto:x}")
                p.w(f" {(uto >> 1) * 60 if uto & 1 else uto >> 1}")
            elif opt in (29, 30, 34, 254):
                # tcp-ao / mptcp / tfo / exp: decoded by tcpdump, only hex here.
                datalen = ln - 2
                _lencheck(p, at, datalen, hlen)
                if datalen:
                    p.w(" 0x" + p.b[at:at + datalen].hex())
            else:
                datalen = ln - 2
                if datalen:
                    p.w(" 0x")
                for i in range(datalen):
                    _lencheck(p, at, i + 1, hlen)
                    p.w(f"{p.u8(at + i):02x}")
            at += datalen
            hlen -= datalen
            total = datalen + 1 + (0 if opt in (0, 1) else 1)
            if total != ln:
                p.w(f"[len {ln}]")
            ch = ","
            if opt == 0:
                break
        p.w("]")
    except _BadOpt:
        p.w("[bad opt]")
        if ch:
            p.w("]")
        raise Stop from None
    except _OptTrunc:
        # ND_TCHECK failure: tcp_print's `trunc:` label (GET_* failures longjmp instead: plain [|tcp]).
        p.w(f" [|{p.proto}]")
        if ch:
            p.w(">")
        raise Stop from None


def _lencheck(p: Packet, at: int, n: int, hlen: int) -> None:
    """tcp_print's LENCHECK: `n` option bytes must be within the option and captured."""
    if n > hlen:
        raise _BadOpt
    if not p.has(at, n):
        raise _OptTrunc


class _BadOpt(Exception):
    """LENCHECK failed against the option length: tcpdump's `[bad opt]`."""


class _OptTrunc(Exception):
    """LENCHECK failed against the captured bytes."""


