"""print-domain.c (DNS over UDP and TCP, mDNS) at default verbosity."""

from __future__ import annotations

from natbox.render.dissect import Packet, Truncated

_DNS_TYPES: dict[int, str] = {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR", 10: "NULL", 11: "WKS",
    12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT", 17: "RP", 18: "AFSDB", 19: "X25", 20: "ISDN",
    21: "RT", 22: "NSAP", 23: "NSAP_PTR", 24: "SIG", 25: "KEY", 26: "PX", 27: "GPOS", 28: "AAAA", 29: "LOC",
    30: "NXT", 31: "EID", 32: "NIMLOC", 33: "SRV", 34: "ATMA", 35: "NAPTR", 36: "KX", 37: "CERT", 38: "A6",
    39: "DNAME", 40: "SINK", 41: "OPT", 42: "APL", 43: "DS", 44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG",
    47: "NSEC", 48: "DNSKEY", 99: "SPF", 100: "UINFO", 101: "UID", 102: "GID", 103: "UNSPEC", 104: "UNSPECA",
    249: "TKEY", 250: "TSIG", 251: "IXFR", 252: "AXFR", 253: "MAILB", 254: "MAILA", 255: "ANY", 256: "URI",
}
_DNS_CLASSES: dict[int, str] = {1: "IN", 3: "CHAOS", 4: "HS", 255: "ANY"}
_DNS_OPS: tuple[str, ...] = ("", " inv_q", " stat", " op3", " notify", " update", " op6", " op7", " op8",
                             " updateA", " updateD", " updateDA", " updateM", " updateMA", " zoneInit",
                             " zoneRef")
_DNS_RCODES: tuple[str, ...] = ("", " FormErr", " ServFail", " NXDomain", " NotImp", " Refused", " YXDomain",
                                " YXRRSet", " NXRRSet", " NotAuth", " NotZone", " Resp11", " Resp12",
                                " Resp13", " Resp14", " NoChange", " BadVers", "Resp17", " Resp18", " Resp19",
                                " Resp20", "Resp21", " Resp22", " BadCookie")
_MAXCDNAME = 255


def _ns_nskip(p: Packet, cp: int) -> int | None:
    if not p.has(cp, 1):
        return None
    i = p.b[cp]
    cp += 1
    while i:
        kind = i & 0xC0
        if kind == 0xC0:
            return cp + 1
        if kind == 0x40:
            if (i & 0x3F) != 0x01 or not p.has(cp, 1):
                return None
            bitlen = p.b[cp] or 256
            cp += 1 + (bitlen + 7) // 8
        elif kind == 0x80:
            return None
        else:
            cp += i
        if not p.has(cp, 1):
            return None
        i = p.b[cp]
        cp += 1
    return cp


def _labellen(p: Packet, cp: int) -> int | None:
    if not p.has(cp, 1):
        return None
    i = p.b[cp]
    kind = i & 0xC0
    if kind == 0x40:
        if (i & 0x3F) != 0x01:
            p.w(f"<ELT {i & 0x3F}>")
            return None
        if not p.has(cp + 1, 1):
            return None
        return ((p.b[cp + 1] or 256) + 7) // 8 + 1
    if kind == 0x80:
        p.w("<BAD LABEL TYPE>")
        return None
    return i


def _printn(p: Packet, cp: int, n: int) -> None:
    """nd_printn(): printable ASCII, others as M-x / ^x (tcpdump's fn_print_char)."""
    parts: list[str] = []
    for k in range(n):
        if not p.has(cp + k, 1):
            p.w("".join(parts))
            raise Truncated
        c = p.b[cp + k]
        if c >= 0x80:
            c &= 0x7F
            parts.append("M-")
        if not 0x20 <= c <= 0x7E:
            c ^= 0x40
            parts.append("^")
        parts.append(chr(c))
    p.w("".join(parts))


def _fqdn(p: Packet, cp: int, bp: int) -> int | None:
    """fqdn_print(): returns the offset after the name (in the original position) or None."""
    ln = _labellen(p, cp)
    if ln is None or not p.has(cp, 1):
        return None
    max_offset = cp - bp
    i = p.b[cp]
    cp += 1
    compress = False
    rp = cp + ln if (i & 0xC0) != 0xC0 else 0
    if i == 0:
        p.w(".")
        return rp
    name_chars = 0
    while i and cp < p.end:
        kind = i & 0xC0
        if kind == 0xC0:
            if not compress:
                rp = cp + 1
                compress = True
            if not p.has(cp, 1):
                return None
            offset = ((i << 8) | p.b[cp]) & 0x3FFF
            if offset >= max_offset:
                p.w("<BAD PTR>")
                return None
            max_offset = offset
            cp = bp + offset
            if not p.has(cp, 1):
                return None
            i = p.b[cp]
            ln2 = _labellen(p, cp)
            if ln2 is None:
                return None
            ln = ln2
            cp += 1
            continue
        if kind == 0x40:
            p.w(f"<ELT {i & 0x3F}>")
            return None
        if kind == 0x80:
            p.w("<BAD LABEL TYPE>")
            return None
        if name_chars + ln <= _MAXCDNAME:
            _printn(p, cp, ln)
        elif name_chars < _MAXCDNAME:
            _printn(p, cp, _MAXCDNAME - name_chars)
        name_chars += ln
        cp += ln
        if name_chars <= _MAXCDNAME:
            p.w(".")
        name_chars += 1
        if not p.has(cp, 1):
            return None
        i = p.b[cp]
        ln2 = _labellen(p, cp)
        if ln2 is None:
            return None
        ln = ln2
        cp += 1
        if not compress:
            rp += ln + 1
    if name_chars > _MAXCDNAME:
        p.w("<DOMAIN NAME TOO LONG>")
    return rp


def _ns_qprint(p: Packet, cp: int, bp: int, is_mdns: bool) -> int | None:
    np_ = cp
    c2 = _ns_nskip(p, cp)
    if c2 is None or not p.has(c2, 4):
        return None
    qtype, raw_class = p.u16(c2), p.u16(c2 + 2)
    qclass = raw_class & 0x7FFF if is_mdns else raw_class
    p.w(f" {_DNS_TYPES.get(qtype, f'Type{qtype}')}")
    if qclass != 1:
        p.w(f" {_DNS_CLASSES.get(qclass, f'(Class {qclass})')}")
    if is_mdns:
        p.w(" (QU)" if raw_class & 0x8000 else " (QM)")
    p.w("? ")
    r = _fqdn(p, np_, bp)
    return None if r is None else r + 4


def _ns_rprint(p: Packet, cp: int, bp: int, is_mdns: bool) -> int | None:
    c2 = _ns_nskip(p, cp)
    if c2 is None or not p.has(c2, 10):
        return p.end
    typ, raw_class = p.u16(c2), p.u16(c2 + 2)
    cls = raw_class & 0x7FFF if is_mdns else raw_class
    if cls != 1 and typ != 41:
        p.w(f" {_DNS_CLASSES.get(cls, f'(Class {cls})')}")
    if is_mdns and raw_class & 0x8000:
        p.w(" (Cache flush)")
    opt_flags = p.u16(c2 + 6) if typ == 41 else 0
    ln = p.u16(c2 + 8)
    cp = c2 + 10
    rp = cp + ln
    p.w(f" {_DNS_TYPES.get(typ, f'Type{typ}')}")
    if rp > p.end:
        return None
    if typ == 1:
        if not p.has(cp, 4):
            return None
        p.w(f" {p.ip(cp)}")
    elif typ in (2, 5, 12, 39):
        p.w(" ")
        if _fqdn(p, cp, bp) is None:
            return None
    elif typ == 15:
        p.w(" ")
        if not p.has(cp, 2):
            return None
        if _fqdn(p, cp + 2, bp) is None:
            return None
        p.w(f" {p.u16(cp)}")
    elif typ == 16:
        while cp < rp:
            p.w(' "')
            if not p.has(cp, 1):
                return None
            n = p.b[cp]
            _printn(p, cp + 1, n)
            cp += 1 + n
            p.w('"')
    elif typ == 33:
        p.w(" ")
        if not p.has(cp, 6):
            return None
        if _fqdn(p, cp + 6, bp) is None:
            return None
        p.w(f":{p.u16(cp + 4)} {p.u16(cp)} {p.u16(cp + 2)}")
    elif typ == 28:
        if not p.has(cp, 16):
            return None
        p.w(f" {_ip6str(p.b[cp:cp + 16])}")
    elif typ == 41:
        p.w(f" UDPsize={cls}")
        if opt_flags & 0x8000:
            p.w(" DO")
        if cp < rp:
            # EDNS options: tcpdump decodes them (eopt_print); here only their count is not attempted.
            p.w(" [...]")
    return rp


def _ip6str(a: bytes) -> str:
    """inet_ntop for IPv6 (RFC 5952 shortening, as addrtostr6)."""
    words = [(a[i] << 8) | a[i + 1] for i in range(0, 16, 2)]
    best_start, best_len = -1, 0
    i = 0
    while i < 8:
        if words[i] == 0:
            j = i
            while j < 8 and words[j] == 0:
                j += 1
            if j - i > best_len:
                best_start, best_len = i, j - i
            i = j
        else:
            i += 1
    if best_len < 2:
        best_start = -1
    if best_start == 0 and (best_len == 6 or (best_len == 5 and words[5] == 0xFFFF)):
        return "::" + ("ffff:" if best_len == 5 else "") + f"{a[12]}.{a[13]}.{a[14]}.{a[15]}"
    out: list[str] = []
    i = 0
    while i < 8:
        if i == best_start:
            out.append("")
            if i == 0:
                out.append("")
            i += best_len
            if i == 8:
                out.append("")
            continue
        out.append(f"{words[i]:x}")
        i += 1
    return ":".join(out)


def domain_print(p: Packet, bp: int, length: int, *, over_tcp: bool, is_mdns: bool = False) -> None:
    """domain_print() at default verbosity."""
    p.proto = "domain"
    if over_tcp:
        if length < 2:
            p.w(f" [DNS over TCP: length {length} < 2] (invalid)")
            return
        length -= 2
        pref = p.u16(bp)
        if pref != length:
            p.w(f" [prefix length({pref}) != length({length})] (invalid)")
            return
        bp += 2
        p.w(" ")
    if length < 12:
        p.w(f"domain [length {length} < 12] (invalid)")
        return
    p.need(bp, 12)
    flags = p.u16(bp + 2)
    qd, an, ns, ar = p.u16(bp + 4), p.u16(bp + 6), p.u16(bp + 8), p.u16(bp + 10)
    rcode = flags & 0x000F
    cp: int | None = bp + 12
    # Find the OPT record for the extended rcode (best effort, as tcpdump).
    ok = True
    for _ in range(qd):
        cp = _ns_nskip(p, cp) if cp is not None else None
        if cp is None:
            ok = False
            break
        cp += 4
        if cp >= p.end:
            ok = False
            break
    if ok:
        for _ in range(an + ns):
            cp = _ns_nskip(p, cp) if cp is not None else None
            if cp is None:
                ok = False
                break
            cp += 8
            if cp + 2 > p.end:
                ok = False
                break
            cp += 2 + p.u16(cp)
            if cp >= p.end:
                ok = False
                break
    if ok:
        for _ in range(ar):
            cp = _ns_nskip(p, cp) if cp is not None else None
            if cp is None or cp + 2 > p.end:
                break
            typ = p.u16(cp)
            cp += 4
            if cp + 1 > p.end:
                break
            if typ == 41:
                rcode |= p.u8(cp) << 4
                break
            cp += 4
            if cp + 2 > p.end:
                break
            cp += 2 + p.u16(cp)
            if cp >= p.end:
                break
    dns_id = p.u16(bp)
    opcode = (flags >> 11) & 0xF
    if flags & 0x8000:
        rc = _DNS_RCODES[rcode] if rcode < len(_DNS_RCODES) else f" Resp{rcode & 0xFFF}"
        p.w(f"{dns_id}{_DNS_OPS[opcode]}{rc}{'*' if flags & 0x0400 else ''}{'' if flags & 0x0080 else '-'}"
            f"{'|' if flags & 0x0200 else ''}{'$' if flags & 0x0020 else ''}")
        if qd != 1:
            p.w(f" [{qd}q]")
        cp = bp + 12
        for k in range(qd):
            if k:
                p.w(",")
            cp = _ns_nskip(p, cp)
            if cp is None:
                raise Truncated
            cp += 4
        p.w(f" {an}/{ns}/{ar}")
        if an:
            cp = _ns_rprint(p, cp, bp, is_mdns)
            if cp is None:
                raise Truncated
            an -= 1
            while cp < p.end and an:
                p.w(",")
                cp = _ns_rprint(p, cp, bp, is_mdns)
                if cp is None:
                    raise Truncated
                an -= 1
        if an:
            raise Truncated
    else:
        p.w(f"{dns_id}{_DNS_OPS[opcode]}{'+' if flags & 0x0100 else ''}{'%' if flags & 0x0010 else ''}")
        if flags & 0x6CF:
            p.w(f" [b2&3=0x{flags:x}]")
        if opcode == 1:
            if qd:
                p.w(f" [{qd}q]")
            if an != 1:
                p.w(f" [{an}a]")
        else:
            if an:
                p.w(f" [{an}a]")
            if qd != 1:
                p.w(f" [{qd}q]")
        if ns:
            p.w(f" [{ns}n]")
        if ar:
            p.w(f" [{ar}au]")
        cp = bp + 12
        if qd:
            cp = _ns_qprint(p, cp, bp, is_mdns)
            if cp is None:
                raise Truncated
            qd -= 1
            while cp < p.end and qd:
                cp = _ns_qprint(p, cp, bp, is_mdns)
                if cp is None:
                    raise Truncated
                qd -= 1
        if qd:
            raise Truncated
    p.w(f" ({length})")


