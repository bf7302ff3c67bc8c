"""tcpdump-style one-line rendering of frames, as `tcpdump -nne -r file` (4.99.x) prints them.

`tcpdump_line(frame)` renders one Ethernet frame (or, with `link="raw"`, a bare IP datagram as tcpdump
prints LINKTYPE_RAW / LINKTYPE_IPV4 with -e: `ip: …`; `link="sll"` a Linux cooked v1 frame);
`eflag=False` gives the `tcpdump -n` form without the link-layer part (`IP a > b: …`, `ARP, …`).
The timestamp column (`HH:MM:SS.ffffff `) is printed in **UTC** — tcpdump prints local time, so the
comparison tests run tcpdump with `TZ=UTC`. As with libpcap's default microsecond precision, nanosecond
timestamps are truncated to microseconds. `wirelen` is the original length (pcap `len`); it defaults to
`len(frame)` (nothing cut by the snap length).

Time is not the local zone: the column is computed arithmetically (no `time` import, sans-IO).

The printers mirror tcpdump 4.99's print-ether.c, print-arp.c, print-ip.c, print-ip-demux.c,
print-icmp.c, print-tcp.c, print-udp.c, print-domain.c (DNS and mDNS), print-tftp.c, print-esp.c
(ESP and ESP-in-UDP, RFC 3948), print-ssh.c and util-print.c (txtproto_print for HTTP/WHOIS/SMTP/FTP/SIP,
hex_and_ascii_print for unknown payloads) at default verbosity with -n, including
tcpdump's own texts for malformed input (`truncated-ip - N bytes missing!`, `bad-len N`,
`[bad hdr length …]`, ` [|tcp]` when the capture ends inside a header…). A protocol tcpdump decodes
further but this module does not (IPv6, LLC/STP, MPLS, IGMP, GRE, AH, IKE, SCTP, AFS/RX, NTP, telnet,
PPTP…) gets the generic text (`UDP, length N`, ` ip-proto-N LEN`, a hex dump), so such lines differ
from tcpdump's; the tests in tests/adapters/ report per-file match rates against the real tcpdump.
Port-based UDP/TCP printers are chosen by port as in print-udp.c/print-tcp.c, but only among the ones
implemented here (a packet between, say, ports 5060 and 123 is SIP here and NTP for tcpdump).

IPv4 fragments: at default verbosity tcpdump 4.99 prints no `(frag id:len@off+)` annotation (that form
belongs to old releases; 4.99 shows fragment fields only with -v). A first fragment is decoded like an
unfragmented datagram; a later fragment prints `a > b: ip-proto-17`. This module does the same.

TCP sequence numbers: tcpdump (without -S) keeps, per conversation, the seq/ack of the first packet
with ACK set that it sees (a SYN-carrying packet with ACK re-records them) and prints later numbers
relative to those; packets without ACK are printed absolute and do not touch the table.
`TcpdumpPrinter` reproduces this with a table bounded to `MAX_TCP_CONVERSATIONS` conversations (the
oldest is forgotten beyond that; tcpdump's own table is unbounded), and `tcpdump_line` is the stateless
`-S` (absolute) mode.

Sans-IO and pure: reads only the given bytes; never raises on any input (a bug-guard turns an
unexpected internal error into a trailing ` [|pretty]`).
"""

from __future__ import annotations

__all__ = ["MAX_TCP_CONVERSATIONS", "TcpdumpPrinter", "format_timestamp", "tcpdump_line"]

# Conversations remembered by TcpdumpPrinter for relative sequence numbers (oldest evicted first).
MAX_TCP_CONVERSATIONS = 65536
# tcpdump's MAXIMUM_SNAPLEN: larger caplen/len make pretty_print_packet print "[Invalid header: …]".
_MAXIMUM_SNAPLEN = 262144

# --- tables (from tcpdump's ethertype.h / print-ether.c, print-icmp.c, print-domain.c, print-tcp.c) ----
_ETHERTYPE_NAMES: dict[int, str] = {
    0x0800: "IPv4", 0x0806: "ARP", 0x86DD: "IPv6", 0x8100: "802.1Q", 0x88A8: "802.1Q-QinQ",
    0x9100: "802.1Q-9100", 0x9200: "802.1Q-9200", 0x8847: "MPLS unicast", 0x8848: "MPLS multicast",
    0x9000: "Loopback", 0x88CC: "LLDP", 0x8863: "PPPoE D", 0x8864: "PPPoE S", 0x8035: "Reverse ARP",
    0x809B: "Appletalk", 0x80F3: "Appletalk ARP", 0x8137: "IPX", 0x888E: "EAPOL", 0x8809: "Slow Protocols",
    0x88E5: "802.1AE MACsec", 0x8902: "CFM", 0x22F0: "AVTP", 0x88F7: "PTP", 0x6002: "DEC MOP Remote Console",
    0x6003: "DN", 0x6004: "LAT", 0x0200: "PUP", 0x0500: "Sprite", 0x8808: "MAC control", 0x876B: "TCP/IP compression",
    0x880B: "PPP", 0x9001: "3Com XNS", 0x8914: "FCoE Initialization", 0x8906: "FCoE", 0x88A2: "AoE",
    0x8915: "RoCE",
}
_ARPOP: dict[int, str] = {1: "Request", 2: "Reply", 3: "Reverse Request", 4: "Reverse Reply",
                          8: "InArp Request", 9: "InArp Reply"}
_ICMP_SIMPLE: dict[int, str] = {0: "echo reply", 4: "source quench", 8: "echo request",
                                10: "router solicitation", 13: "time stamp request", 14: "time stamp reply",
                                15: "information request", 16: "information reply", 17: "address mask request"}
# ICMP_UNREACH codes other than port (3) and needfrag (4): (format, code) with {} for the inner dst.
_UNREACH_TEXT: dict[int, str] = {
    0: "net {} unreachable", 1: "host {} unreachable", 5: "{} unreachable - source route failed",
    6: "net {} unreachable - unknown", 7: "host {} unreachable - unknown",
    8: "{} unreachable - source host isolated", 9: "net {} unreachable - admin prohibited",
    10: "host {} unreachable - admin prohibited", 11: "net {} unreachable - tos prohibited",
    12: "host {} unreachable - tos prohibited", 13: "host {} unreachable - admin prohibited filter",
    14: "host {} unreachable - host precedence violation", 15: "host {} unreachable - precedence cutoff",
}
_REDIRECT_TEXT: dict[int, str] = {0: "redirect {} to net {}", 1: "redirect {} to host {}",
                                  2: "redirect-tos {} to net {}", 3: "redirect-tos {} to host {}"}
_TCP_FLAGS: tuple[tuple[int, str], ...] = ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x10, "."),
                                           (0x20, "U"), (0x40, "E"), (0x80, "W"))
_TCPOPT_NAMES: dict[int, str] = {0: "eol", 1: "nop", 2: "mss", 3: "wscale", 4: "sackOK", 5: "sack", 6: "echo",
                                 7: "echoreply", 8: "TS", 11: "cc", 12: "ccnew", 13: "", 19: "md5", 20: "scps",
                                 28: "uto", 29: "tcp-ao", 30: "mptcp", 34: "tfo", 254: "exp"}
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
_HTTP_CMDS = frozenset({
    "GET", "PUT", "COPY", "HEAD", "LOCK", "MOVE", "POLL", "POST", "BCOPY", "BMOVE", "MKCOL", "TRACE", "LABEL",
    "MERGE", "DELETE", "SEARCH", "UNLOCK", "REPORT", "UPDATE", "NOTIFY", "BDELETE", "CONNECT", "OPTIONS",
    "CHECKIN", "PROPFIND", "CHECKOUT", "CCM_POST", "SUBSCRIBE", "PROPPATCH", "BPROPFIND", "BPROPPATCH",
    "UNCHECKOUT", "MKACTIVITY", "MKWORKSPACE", "UNSUBSCRIBE", "RPC_CONNECT", "VERSION-CONTROL",
    "BASELINE-CONTROL",
})
_SIP_CMDS = frozenset({"ACK", "BYE", "CANCEL", "DO", "INFO", "INVITE", "MESSAGE", "NOTIFY", "OPTIONS", "PRACK",
                       "QAUTH", "REFER", "REGISTER", "SPRACK", "SUBSCRIBE", "UPDATE", "PUBLISH"})
_TFTP_OPS: dict[int, str] = {1: "RRQ", 2: "WRQ", 3: "DATA", 4: "ACK", 5: "ERROR", 6: "OACK"}
_TFTP_ERRS: dict[int, str] = {0: "EUNDEF", 1: "ENOTFOUND", 2: "EACCESS", 3: "ENOSPACE", 4: "EBADOP", 5: "EBADID",
                              6: "EEXISTS", 7: "ENOUSER"}
_IPPROTO_TCP, _IPPROTO_UDP, _IPPROTO_ICMP = 6, 17, 1
_PORT_DOMAIN = 53
_MAXCDNAME = 255


class _Trunc(Exception):
    """The capture ends inside a field (tcpdump's nd_trunc_longjmp)."""


class _P:
    """Per-packet dissection state: buffer, snap end, output pieces and current protocol name."""

    __slots__ = ("b", "eflag", "end", "out", "proto", "seqs")

    def __init__(self, b: bytes, eflag: bool, seqs: _SeqTable | None) -> None:
        self.b = b
        self.end = len(b)
        self.out: list[str] = []
        self.proto = ""
        self.eflag = eflag
        self.seqs = seqs

    def has(self, off: int, n: int) -> bool:
        return off >= 0 and off + n <= self.end

    def need(self, off: int, n: int) -> None:
        if off < 0 or off + n > self.end:
            raise _Trunc

    def u8(self, off: int) -> int:
        if off < 0 or off >= self.end:
            raise _Trunc
        return self.b[off]

    def u16(self, off: int) -> int:
        if off < 0 or off + 2 > self.end:
            raise _Trunc
        return (self.b[off] << 8) | self.b[off + 1]

    def u32(self, off: int) -> int:
        if off < 0 or off + 4 > self.end:
            raise _Trunc
        return int.from_bytes(self.b[off:off + 4], "big")

    def ip(self, off: int) -> str:
        self.need(off, 4)
        b = self.b
        return f"{b[off]}.{b[off + 1]}.{b[off + 2]}.{b[off + 3]}"

    def mac(self, off: int) -> str:
        self.need(off, 6)
        return self.b[off:off + 6].hex(":")

    def w(self, s: str) -> None:
        self.out.append(s)


class _SeqTable:
    """tcpdump's tcp_seq_hash4: conversation → (seq, ack) bases, bounded (insertion order eviction)."""

    __slots__ = ("d", "limit")

    def __init__(self, limit: int) -> None:
        self.d: dict[tuple[bytes, bytes, int], tuple[int, int]] = {}
        self.limit = limit

    def put(self, key: tuple[bytes, bytes, int], val: tuple[int, int]) -> None:
        d = self.d
        if key in d:
            d[key] = val
            return
        if len(d) >= self.limit:
            del d[next(iter(d))]
        d[key] = val


def format_timestamp(ts: float | None = None, *, ts_ns: int | None = None) -> str:
    """`HH:MM:SS.ffffff` in UTC of `ts_ns` (exact; sub-microseconds truncated, as libpcap's default
    microsecond precision does) or of the float `ts` (rounded to the nearest microsecond: a float of
    ~1.7e9 seconds only carries ~0.2 µs of precision)."""
    if ts_ns is not None:
        sec, usec = divmod(ts_ns // 1000, 1_000_000)
    else:
        usec_total = round((ts or 0.0) * 1e6)
        sec, usec = divmod(usec_total, 1_000_000)
    day = sec % 86400
    return f"{day // 3600:02d}:{day % 3600 // 60:02d}:{day % 60:02d}.{usec:06d}"


# --- link layer ------------------------------------------------------------------------------------------

def _hexdump(p: _P, off: int, length: int) -> None:
    """hex_and_ascii_print(ndo, "\\n\\t", …): 16 bytes a line, then a truncation marker if cut."""
    avail = max(0, p.end - off)
    truncated = length > avail
    if truncated:
        length = avail
    b = p.b
    for base in range(0, length, 16):
        chunk = b[off + base:off + min(base + 16, length)]
        hexpart = "".join(
            f" {chunk[i]:02x}{chunk[i + 1]:02x}" if i + 1 < len(chunk) else f" {chunk[i]:02x}"
            for i in range(0, len(chunk), 2))
        asc = "".join(chr(c) if 0x21 <= c <= 0x7E else "." for c in chunk)
        p.w(f"\n\t0x{base:04x}: {hexpart:<40s}  {asc}")
    if truncated:
        raise _Trunc


def _ether(p: _P, length: int) -> None:
    """ether_common_print() for plain Ethernet II (with 802.1Q tags)."""
    p.proto = "ether"
    caplen = p.end
    if length < caplen:
        p.w(f"[length {length} < caplen {caplen}] (invalid)")
        return
    if caplen < 14:
        raise _Trunc
    orig_length = length
    if p.eflag:
        p.w(f"{p.mac(6)} > {p.mac(0)}, ")
    off = 12
    length -= 14
    etype = p.u16(off)
    off += 2
    printed_length = False
    while etype in (0x8100, 0x88A8, 0x9100, 0x9200):
        if p.end - off < 4 or length < 4:
            p.proto = "vlan"
            raise _Trunc
        if p.eflag:
            tci = p.u16(off)
            p.w(f"ethertype {_ETHERTYPE_NAMES.get(etype, 'Unknown')} (0x{etype:04x})")
            if not printed_length:
                p.w(f", length {orig_length}: ")
                printed_length = True
            else:
                p.w(", ")
            dei = ", DEI" if tci & 0x1000 else ""
            p.w(f"vlan {tci & 0xFFF}, p {tci >> 13}{dei}, ")
        etype = p.u16(off + 2)
        off += 4
        length -= 4
    if etype <= 1500:
        # 802.3 + LLC: not decoded here (tcpdump prints LLC/SNAP/STP…).
        length = min(length, etype)
        if p.eflag:
            p.w("802.3")
            if not printed_length:
                p.w(f", length {length}: ")
        p.end = min(p.end, off + length)
        _hexdump(p, off, length)
        return
    if p.eflag:
        p.w(f"ethertype {_ETHERTYPE_NAMES.get(etype, 'Unknown')} (0x{etype:04x})")
        p.w(f", length {orig_length}: " if not printed_length else ", ")
    if etype == 0x0800:
        _ip(p, off, length)
    elif etype == 0x0806:
        _arp(p, off, length)
    else:
        if not p.eflag:
            p.w(f"{p.mac(6)} > {p.mac(0)}, ethertype {_ETHERTYPE_NAMES.get(etype, 'Unknown')} "
                f"(0x{etype:04x}), length {orig_length}: ")
        _hexdump(p, off, p.end - off)


def _sll(p: _P, length: int) -> None:
    """sll_print() (Linux cooked v1) for the common unicast/outgoing cases, with -e."""
    p.proto = "sll"
    if p.end < 16:
        raise _Trunc
    pkttype = p.u16(0)
    names = {0: "In", 1: "B", 2: "M", 3: "P", 4: "Out"}
    alen = p.u16(4)
    etype = p.u16(14)
    if p.eflag:
        p.w(names.get(pkttype, f"Unknown ({pkttype})"))
        if alen == 6:
            p.w(f" {p.mac(6)}")
        p.w(f" ethertype {_ETHERTYPE_NAMES.get(etype, 'Unknown')} (0x{etype:04x}), length {length}: ")
    if etype == 0x0800:
        _ip(p, 16, length - 16)
    elif etype == 0x0806:
        _arp(p, 16, length - 16)
    else:
        _hexdump(p, 16, p.end - 16)


def _arp(p: _P, off: int, length: int) -> None:
    """arp_print() for Ethernet/IPv4 ARP at default verbosity."""
    p.proto = "arp"
    p.need(off, 8)
    hrd, pro = p.u16(off), p.u16(off + 2)
    hln, pln = p.b[off + 4], p.b[off + 5]
    op = p.u16(off + 6)
    sha = off + 8
    spa = sha + hln
    tha = spa + pln
    tpa = tha + hln
    p.need(tpa, pln)
    if not p.eflag:
        p.w("ARP, ")
    if (pro not in (0x0800, 0x1000)) or pln != 4 or hln == 0:
        hrdname = {1: "Ethernet", 6: "IEEE 802", 7: "ARCNET", 15: "Frame Relay", 16: "ATM", 19: "ATM",
                   23: "Strip", 24: "IEEE 1394", 32: "InfiniBand", 513: "Tunnel"}.get(hrd,
                                                                                   f"Unknown Hardware ({hrd})")
        proname = _ETHERTYPE_NAMES.get(pro, f"Unknown Protocol (0x{pro:04x})")
        p.w(f"{hrdname} (len {hln}), {proname} (len {pln}), length {length}")
        return

    def lladdr(at: int) -> str:
        p.need(at, hln)
        return p.b[at:at + hln].hex(":")

    p.w(f"{_ARPOP.get(op, f'Unknown ({op})')} ")
    if op == 1:
        p.w(f"who-has {p.ip(tpa)}")
        p.need(tha, hln)
        if any(p.b[tha:tha + hln]):
            p.w(f" ({lladdr(tha)})")
        p.w(f" tell {p.ip(spa)}")
    elif op == 2:
        p.w(f"{p.ip(spa)} is-at {lladdr(sha)}")
    elif op in (3, 8):
        p.w(f"who-is {lladdr(tha)} tell {lladdr(sha)}")
    elif op == 4:
        p.w(f"{lladdr(tha)} at {p.ip(tpa)}")
    elif op == 9:
        p.w(f"{lladdr(sha)} at {p.ip(spa)}")
    else:
        _hexdump(p, off, p.end - off)
        return
    p.w(f", length {length}")


# --- IPv4 ----------------------------------------------------------------------------------------------

def _ip(p: _P, off: int, length: int) -> None:
    """ip_print(): header sanity, snaplen push to the total length, demux or fragment text."""
    p.proto = "ip"
    v = p.u8(off) >> 4
    if v != 4:
        p.w("IP6, wrong link-layer encapsulation (invalid)" if v == 6 else f"IP{v} (invalid)")
        return
    if not p.eflag:
        p.w("IP ")
    p.need(off, 20)
    if length < 20:
        p.w(f"truncated-ip {length}")
        return
    hlen = (p.b[off] & 0x0F) * 4
    if hlen < 20:
        p.w(f"bad-hlen {hlen}")
        return
    tot = p.u16(off + 2)
    if length < tot:
        p.w(f"truncated-ip - {tot - length} bytes missing! ")
    if tot < hlen:
        p.w(f"bad-len {tot}")
        return
    saved_end = p.end
    p.end = min(p.end, off + tot)
    plen = tot - hlen
    frag = p.u16(off + 6)
    nh = p.u8(off + 9)
    src, dst = p.ip(off + 12), p.ip(off + 16)
    if frag & 0x1FFF == 0:
        if nh not in (6, 17, 132, 33):
            p.w(f"{src} > {dst}: ")
        if not p.has(off, hlen):
            p.w(f" [remaining caplen({max(0, p.end - off)}) < header length({hlen})]")
            raise _Trunc
        _demux(p, off + hlen, plen, bool(frag & 0x2000), nh, off)
    else:
        p.w(f"{src} > {dst}: ip-proto-{nh}")
    p.end = saved_end


def _demux(p: _P, off: int, length: int, fragmented: bool, nh: int, iph: int) -> None:
    """ip_demux_print() for the protocols decoded here; others get tcpdump's generic text."""
    if nh == _IPPROTO_TCP:
        _tcp(p, off, length, iph)
    elif nh == _IPPROTO_UDP:
        _udp(p, off, length, iph, fragmented)
    elif nh == _IPPROTO_ICMP:
        _icmp(p, off, length)
    elif nh == 4:
        _ip(p, off, length)
    elif nh == 50:
        _esp(p, off, length)
    elif nh in (58, 143):
        p.w(f"[{'ICMPv6' if nh == 58 else 'Ethernet'} requires IPv6] (invalid)")
    elif nh == 59:
        p.w("no next header")
    elif nh == 77:
        p.w(f" nd {length}")
    else:
        p.w(f" ip-proto-{nh} {length}")


def _icmp_tstamp(ms: int) -> str:
    msec, sec = ms % 1000, ms // 1000
    mins, sec = divmod(sec, 60)
    hrs, mins = divmod(mins, 60)
    return f"{hrs:02d}:{mins:02d}:{sec:02d}.{msec:03d}"


def _icmp(p: _P, off: int, plen: int) -> None:
    """icmp_print() at default verbosity (no embedded-datagram dump: that needs -v)."""
    p.proto = "icmp"
    t, code = p.u8(off), p.u8(off + 1)
    inner_dst = off + 8 + 16
    if t in (0, 8):
        s = f"echo {'request' if t == 8 else 'reply'}, id {p.u16(off + 4)}, seq {p.u16(off + 6)}"
    elif t == 3:
        if code == 2:
            s = f"{p.ip(inner_dst)} protocol {p.u8(off + 8 + 9)} unreachable"
        elif code == 3:
            p.need(off + 8 + 9, 1)
            ihl = (p.u8(off + 8) & 0x0F) * 4
            dport = p.u16(off + 8 + ihl + 2)
            proto = p.u8(off + 8 + 9)
            if proto == _IPPROTO_TCP:
                s = f"{p.ip(inner_dst)} tcp port {dport} unreachable"
            elif proto == _IPPROTO_UDP:
                s = f"{p.ip(inner_dst)} udp port {dport} unreachable"
            else:
                s = f"{p.ip(inner_dst)} protocol {proto} port {dport} unreachable"
        elif code == 4:
            mtu = p.u16(off + 6)
            if mtu:
                s = f"{p.ip(inner_dst)} unreachable - need to frag (mtu {mtu})"
            else:
                s = f"{p.ip(inner_dst)} unreachable - need to frag"
        elif code in _UNREACH_TEXT:
            s = _UNREACH_TEXT[code].format(p.ip(inner_dst))
        else:
            s = f"{p.ip(inner_dst)} unreachable - #{code}"
    elif t == 5:
        if code in _REDIRECT_TEXT:
            s = _REDIRECT_TEXT[code].format(p.ip(inner_dst), p.ip(off + 4))
        else:
            s = f"redirect-#{code} {p.ip(inner_dst)} to {p.ip(off + 4)}"
    elif t == 9:
        p.need(off + 4, 4)
        num, size, lifetime = p.b[off + 4], p.b[off + 5], p.u16(off + 6)
        if lifetime < 60:
            lt = f"{lifetime}"
        elif lifetime < 3600:
            lt = f"{lifetime // 60}:{lifetime % 60:02d}"
        else:
            lt = f"{lifetime // 3600}:{lifetime % 3600 // 60:02d}:{lifetime % 60:02d}"
        parts = [f"router advertisement lifetime {lt} {num}:"]
        if size != 2:
            parts.append(f" [size {size}]")
        else:
            at = off + 8
            for _ in range(num):
                p.need(at, 8)
                parts.append(f" {{{p.ip(at)} {p.u32(at + 4)}}}")
                at += 8
        s = "".join(parts)
    elif t == 11:
        p.need(inner_dst, 4)
        if code == 0:
            s = "time exceeded in-transit"
        elif code == 1:
            s = "ip reassembly time exceeded"
        else:
            s = f"time exceeded-#{code}"
    elif t == 12:
        s = f"parameter problem - code {code}" if code else f"parameter problem - octet {p.u8(off + 4)}"
    elif t == 18:
        s = f"address mask is 0x{p.u32(off + 8):08x}"
    elif t == 13:
        s = f"time stamp query id {p.u16(off + 4)} seq {p.u16(off + 6)}"
    elif t == 14:
        p.need(off + 16, 4)
        s = (f"time stamp reply id {p.u16(off + 4)} seq {p.u16(off + 6)}: org {_icmp_tstamp(p.u32(off + 8))}"
             f", recv {_icmp_tstamp(p.u32(off + 12))}, xmit {_icmp_tstamp(p.u32(off + 16))}")
    else:
        s = _ICMP_SIMPLE.get(t, f"type-#{t}")
    p.w(f"ICMP {s}, length {plen}")


def _tcp(p: _P, off: int, length: int, iph: int) -> None:
    """tcp_print() at default verbosity (flags, seq/ack, win, urg, options, length, a few payloads)."""
    p.proto = "tcp"
    b = p.b
    src, dst = p.ip(iph + 12), p.ip(iph + 16)
    if not p.has(off + 2, 2):
        p.w(f"{src} > {dst}:")
        raise _Trunc
    sport, dport = p.u16(off), p.u16(off + 2)
    p.w(f"{src}.{sport} > {dst}.{dport}: ")
    p.need(off, 20)
    hlen = (b[off + 12] >> 4) * 4
    if hlen < 20:
        p.w(f" tcp {(length - hlen) & 0xFFFFFFFF} [bad hdr length {hlen} - too short, < 20]")
        return
    seq, ack = p.u32(off + 4), p.u32(off + 8)
    win, urp = p.u16(off + 14), p.u16(off + 18)
    flags = b[off + 13]
    p.w("Flags [" + ("".join(c for bit, c in _TCP_FLAGS if flags & bit) or "none") + "]")
    rev = False
    thseq = thack = 0
    seqs = p.seqs
    if seqs is not None and flags & 0x10:
        sip, dip = b[iph + 12:iph + 16], b[iph + 16:iph + 20]
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
    if hlen > 20:
        _tcp_options(p, off + 20, hlen - 20, rev, thseq, thack)
    p.w(f", length {length}")
    if length == 0:
        return
    if not p.has(off, hlen):
        p.w(f" [remaining caplen({max(0, p.end - off)}) < header length({hlen})]")
        raise _Trunc
    data = off + hlen
    if 53 in (sport, dport):
        _domain(p, data, length, over_tcp=True)
    elif 80 in (sport, dport) or 8080 in (sport, dport):
        p.w(": ")
        _txtproto(p, data, length, "http", _HTTP_CMDS)
    elif 43 in (sport, dport):
        p.w(": ")
        _txtproto(p, data, length, "whois", None)
    elif 22 in (sport, dport):
        _ssh(p, data, length)
    elif 25 in (sport, dport):
        p.w(": ")
        _txtproto(p, data, length, "smtp", None)
    elif 21 in (sport, dport):
        p.w(": ")
        _txtproto(p, data, length, "ftp", None)


def _tcp_options(p: _P, at: int, hlen: int, rev: bool, thseq: int, thack: int) -> None:
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
        raise _Stop from None
    except _OptTrunc:
        # ND_TCHECK failure: tcp_print's `trunc:` label (GET_* failures longjmp instead: plain [|tcp]).
        p.w(f" [|{p.proto}]")
        if ch:
            p.w(">")
        raise _Stop from None


def _lencheck(p: _P, at: int, n: int, hlen: int) -> None:
    """tcp_print's LENCHECK: `n` option bytes must be within the option and captured."""
    if n > hlen:
        raise _BadOpt
    if not p.has(at, n):
        raise _OptTrunc


class _BadOpt(Exception):
    """LENCHECK failed against the option length: tcpdump's `[bad opt]`."""


class _OptTrunc(Exception):
    """LENCHECK failed against the captured bytes."""


class _Stop(Exception):
    """The printer returned early with its own text already written."""


def _txtproto(p: _P, off: int, length: int, proto: str, cmds: frozenset[str] | None) -> None:
    """txtproto_print() at default verbosity: PROTO, then `: first line` if it is a request/response."""
    p.proto = proto
    b = p.b
    print_this = cmds is None
    if cmds is not None:
        idx, tok = _fetch_token(p, off, 0, length)
        if idx:
            if tok.upper() in cmds:
                print_this = True
            idx, tok = _fetch_token(p, off, idx, length)
            if idx and len(tok) == 3 and tok.isdigit():
                print_this = True
    p.w(proto.upper())
    if not print_this:
        return
    idx = 0
    while idx < length:
        c = p.u8(off + idx)
        if c == 0x0A:
            break
        if c == 0x0D:
            if idx + 1 >= length:
                return
            if p.u8(off + idx + 1) == 0x0A:
                break
            return
        if not (0x20 <= c <= 0x7E) and c != 0x09:
            return
        idx += 1
    else:
        p.w(": " + b[off:off + idx].decode("ascii"))
        raise _Trunc
    p.w(": " + b[off:off + idx].decode("ascii"))


def _fetch_token(p: _P, off: int, idx: int, length: int) -> tuple[int, str]:
    """fetch_token(): (index after the token and following blanks, token) or (0, "")."""
    start = idx
    while idx < length:
        if not p.has(off + idx, 1):
            return 0, ""
        c = p.b[off + idx]
        if c >= 0x80:
            return 0, ""
        if c in (0x20, 0x09, 0x0D, 0x0A):
            break
        if not 0x20 <= c <= 0x7E:
            return 0, ""
        if idx - start + 2 > 129:
            return 0, ""
        idx += 1
    if idx == start:
        return 0, ""
    tok = p.b[off + start:off + idx].decode("ascii")
    while idx < length and p.has(off + idx, 1):
        c = p.b[off + idx]
        if c in (0x0D, 0x0A) or not 0x20 <= c <= 0x7E or c not in (0x20, 0x09):
            break
        idx += 1
    return idx, tok


def _esp(p: _P, off: int, length: int) -> None:
    """esp_print() without decryption: SPI, sequence number, length."""
    p.proto = "esp"
    if off + 8 >= p.end:
        raise _Trunc
    p.w(f"ESP(spi=0x{p.u32(off):08x},seq=0x{p.u32(off + 4):x}), length {length}")


def _rfc3948(p: _P, off: int, length: int) -> None:
    """isakmp_rfc3948_print(): NAT-T keepalive, ESP-in-UDP; IKE (non-ESP marker) is not decoded."""
    p.proto = "isakmp_rfc3948"
    if length == 1 and p.u8(off) == 0xFF:
        p.w("isakmp-nat-keep-alive")
        return
    if length < 4:
        raise _Trunc
    if p.u32(off) == 0:
        # An IKE message behind the non-ESP marker: tcpdump goes on with isakmp_print(), not done here.
        p.w("NONESP-encap: ")
        return
    p.w("UDP-encap: ")
    _esp(p, off, length)


def _printztn(p: _P, cp: int, n: int) -> int:
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


def _tftp(p: _P, bp: int, length: int) -> None:
    """tftp_print() (RFC 1350 / 2347)."""
    p.proto = "tftp"
    p.w(f"TFTP, length {length}")
    if length < 2:
        raise _Trunc
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
            raise _Trunc
        p.w(' "')
        ui = _printztn(p, bp, length)
        p.w('"')
        if ui == 0:
            raise _Trunc
        bp += ui
        length -= ui
        if length == 0:
            raise _Trunc
        p.w(" ")
        ui = _printztn(p, bp, length)
        if ui == 0:
            raise _Trunc
        bp += ui
        length -= ui
    if opcode in (1, 2, 6):
        while length != 0:
            if p.u8(bp) != 0:
                p.w(" ")
            ui = _printztn(p, bp, length)
            if ui == 0:
                raise _Trunc
            bp += ui
            length -= ui
    elif opcode in (3, 4):
        if length < 2:
            raise _Trunc
        p.w(f" block {p.u16(bp)}")
    elif opcode == 5:
        if length < 2:
            raise _Trunc
        code = p.u16(bp)
        err = _TFTP_ERRS.get(code)
        p.w(" " + (err if err is not None else f"tftp-err-#{code} \""))
        bp += 2
        length -= 2
        if length == 0:
            raise _Trunc
        p.w(' "')
        ui = _printztn(p, bp, length)
        p.w('"')
        if ui == 0:
            raise _Trunc


def _ssh(p: _P, off: int, length: int) -> None:
    """ssh_print(): the identification line (`SSH-…`) only."""
    p.proto = "ssh"
    for i, ch in enumerate(b"SSH-"):
        if p.u8(off + i) != ch:
            return
    idx = 4
    while idx < length:
        c = p.u8(off + idx)
        if c == 0x0A:
            break
        if c == 0x0D:
            if idx + 1 >= length or p.u8(off + idx + 1) != 0x0A:
                return
            break
        if not 0x20 <= c <= 0x7E:
            return
        idx += 1
    else:
        return
    p.w(": SSH: " + p.b[off:off + idx].decode("ascii"))


def _udp(p: _P, off: int, length: int, iph: int, fragmented: bool) -> None:
    """udp_print() at default verbosity: DNS on port 53, else `UDP, length N`."""
    p.proto = "udp"
    src, dst = p.ip(iph + 12), p.ip(iph + 16)
    if not p.has(off + 2, 2):
        p.w(f"{src} > {dst}: ")
        raise _Trunc
    sport, dport = p.u16(off), p.u16(off + 2)
    addrs = f"{src}.{sport} > {dst}.{dport}: "
    if length < 8:
        p.w(f"{addrs}truncated-udp {length}")
        return
    if not p.has(off + 4, 2):
        p.w(addrs)
        raise _Trunc
    ulen = p.u16(off + 4)
    if ulen < 8:
        p.w(f"{addrs}truncated-udplength {ulen}")
        return
    ulen -= 8
    length -= 8
    length = min(length, ulen)
    if off + 8 > p.end:
        p.w(addrs)
        raise _Trunc
    p.w(addrs)
    ports = (sport, dport)
    if _PORT_DOMAIN in ports:
        _domain(p, off + 8, length, over_tcp=False)
    elif 5353 in ports:
        _domain(p, off + 8, length, over_tcp=False, is_mdns=True)
    elif 69 in ports:
        _tftp(p, off + 8, length)
    elif 4500 in ports:
        _rfc3948(p, off + 8, length)
    elif 5060 in ports:
        _txtproto(p, off + 8, length, "sip", _SIP_CMDS)
    elif ulen > length and not fragmented:
        p.w(f"UDP, bad length {ulen} > {length}")
    else:
        p.w(f"UDP, length {ulen}")


# --- DNS -----------------------------------------------------------------------------------------------

def _ns_nskip(p: _P, cp: int) -> int | None:
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


def _labellen(p: _P, cp: int) -> int | None:
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


def _printn(p: _P, cp: int, n: int) -> None:
    """nd_printn(): printable ASCII, others as M-x / ^x (tcpdump's fn_print_char)."""
    parts: list[str] = []
    for k in range(n):
        if not p.has(cp + k, 1):
            p.w("".join(parts))
            raise _Trunc
        c = p.b[cp + k]
        if c >= 0x80:
            c &= 0x7F
            parts.append("M-")
        if not 0x20 <= c <= 0x7E:
            c ^= 0x40
            parts.append("^")
        parts.append(chr(c))
    p.w("".join(parts))


def _fqdn(p: _P, cp: int, bp: int) -> int | None:
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


def _ns_qprint(p: _P, cp: int, bp: int, is_mdns: bool) -> int | None:
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


def _ns_rprint(p: _P, cp: int, bp: int, is_mdns: bool) -> int | None:
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


def _domain(p: _P, bp: int, length: int, *, over_tcp: bool, is_mdns: bool = False) -> None:
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
                raise _Trunc
            cp += 4
        p.w(f" {an}/{ns}/{ar}")
        if an:
            cp = _ns_rprint(p, cp, bp, is_mdns)
            if cp is None:
                raise _Trunc
            an -= 1
            while cp < p.end and an:
                p.w(",")
                cp = _ns_rprint(p, cp, bp, is_mdns)
                if cp is None:
                    raise _Trunc
                an -= 1
        if an:
            raise _Trunc
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
                raise _Trunc
            qd -= 1
            while cp < p.end and qd:
                cp = _ns_qprint(p, cp, bp, is_mdns)
                if cp is None:
                    raise _Trunc
                qd -= 1
        if qd:
            raise _Trunc
    p.w(f" ({length})")


# --- entry points ----------------------------------------------------------------------------------------

def _render(frame: bytes, link: str, ts: float | None, ts_ns: int | None, wirelen: int | None,
            eflag: bool, seqs: _SeqTable | None) -> str:
    b = bytes(frame)
    caplen = len(b)
    length = caplen if wirelen is None else wirelen
    head = "" if ts is None and ts_ns is None else format_timestamp(ts, ts_ns=ts_ns) + " "
    bad: list[str] = []
    if caplen == 0:
        bad.append(" caplen==0")
    if length == 0:
        bad.append(" len==0")
    elif length < caplen:
        bad.append(f" len({length}) < caplen({caplen})")
    if caplen > _MAXIMUM_SNAPLEN:
        bad.append(f" caplen({caplen}) > {_MAXIMUM_SNAPLEN}")
    if length > _MAXIMUM_SNAPLEN:
        bad.append(f" len({length}) > {_MAXIMUM_SNAPLEN}")
    if bad:
        return "[Invalid header:" + ",".join(bad) + "]"
    p = _P(b, eflag, seqs)
    try:
        if link == "ether":
            _ether(p, length)
        elif link == "sll":
            _sll(p, length)
        else:
            p.proto = "raw"
            if p.eflag:
                p.w("ip: ")
            p.proto = "ipn"
            v = p.u8(0) & 0xF0
            if v == 0x40:
                _ip(p, 0, length)
            elif v == 0x60:
                p.w("IP6 ")  # ip6_print is not implemented
                _hexdump(p, 0, caplen)
            else:
                p.w(f"unknown ip {v >> 4}")
    except _Trunc:
        p.w(f" [|{p.proto}]")
    except _Stop:
        pass
    except Exception:  # bug guard: never raise on untrusted bytes
        p.w(" [|pretty]")
    return head + "".join(p.out)


def tcpdump_line(frame: bytes | bytearray | memoryview, *, link: str = "ether", ts: float | None = None,
                 ts_ns: int | None = None, wirelen: int | None = None, eflag: bool = True) -> str:
    """One packet as `tcpdump -nne -S` prints it (absolute sequence numbers; see module doc).

    `link` is "ether" (Ethernet II), "raw" (a bare IP datagram: LINKTYPE_RAW / LINKTYPE_IPV4) or "sll"
    (Linux cooked v1). With `ts` (float seconds) or `ts_ns` (exact integer nanoseconds, preferred) the
    line starts with the UTC `HH:MM:SS.ffffff ` column. `wirelen` is the original length (default: all
    of `frame` was captured).
    """
    return _render(bytes(frame), link, ts, ts_ns, wirelen, eflag, None)


class TcpdumpPrinter:
    """Stateful `tcpdump -nne` printer: relative TCP sequence numbers per conversation, like tcpdump.

    Use one printer per capture, feeding packets in order. `absolute=True` behaves like -S.
    """

    def __init__(self, *, link: str = "ether", eflag: bool = True, absolute: bool = False,
                 max_conversations: int = MAX_TCP_CONVERSATIONS) -> None:
        self.link = link
        self.eflag = eflag
        self._seqs = None if absolute else _SeqTable(max_conversations)

    def line(self, frame: bytes | bytearray | memoryview, *, ts: float | None = None,
             ts_ns: int | None = None, wirelen: int | None = None, link: str | None = None) -> str:
        """The next packet's line (same arguments as `tcpdump_line`)."""
        return _render(bytes(frame), link or self.link, ts, ts_ns, wirelen, self.eflag, self._seqs)
