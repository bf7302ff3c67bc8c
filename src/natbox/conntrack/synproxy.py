"""SYNPROXY's pure parts (net/netfilter/nf_synproxy_core.c): TCP options, timestamp cookies, the conntrack
extension `nf_conn_synproxy`, the statistics and the segments SYNPROXY sends.

What SYNPROXY does with them (the target, `synproxy_tg4`: rules/targets/synproxy.py; the hook
`ipv4_synproxy_hook` and the sending: engine/synproxy.py):

1. client SYN → a SYN-ACK with a SYN cookie as ISN (natbox.conntrack.syncookies), window 0, the options
   the rule allows; with timestamps, the client's window scale, SACK-permitted and ECN are kept in the low
   bits of our timestamp (`synproxy_init_timestamp_cookie`), since nothing else is kept;
2. client ACK → the cookie is checked, the options come back from the echoed timestamp
   (`synproxy_check_timestamp_cookie`), and a SYN goes to the server with the client's ISN, relaying
   the cookie in its ack field to the hook, which keeps it in `NfConnSynproxy.isn`;
3. server SYN-ACK → an ACK to the server, the window update to the client, and sequence adjustment
   (natbox.conntrack.seqadj) by `isn - server ISN` in the reply direction; with timestamps the server's
   clock offset to ours (`tsoff`) is taken out of every reply's TSval and put into every original
   TSecr (`synproxy_tstamp_adjust`).
"""

from __future__ import annotations

from typing import Final

from natbox.netfilter import IPPROTO_TCP
from natbox.wire import ipv4
from natbox.wire.checksum import csum_fold, csum_partial, csum_replace4, l4_checksum
from natbox.wire.ipv6 import build_ipv6, pseudo6_sum
from natbox.wire.layout import TCPH_CHECK, TCPH_DOFF, TCPH_MIN_LEN
from natbox.wire.tcp import (
    TCPOPT_EOL,
    TCPOPT_MSS,
    TCPOPT_NOP,
    TCPOPT_SACK_PERM,
    TCPOPT_TIMESTAMP,
    TCPOPT_WINDOW,
)

__all__ = [
    "NF_SYNPROXY_OPT_ECN",
    "NF_SYNPROXY_OPT_MSS",
    "NF_SYNPROXY_OPT_SACK_PERM",
    "NF_SYNPROXY_OPT_TIMESTAMP",
    "NF_SYNPROXY_OPT_WSCALE",
    "NfConnSynproxy",
    "SynproxyOptions",
    "SynproxyStats",
    "build_segment",
    "build_segment6",
    "synproxy_build_options",
    "synproxy_check_timestamp_cookie",
    "synproxy_init_timestamp_cookie",
    "synproxy_parse_options",
    "synproxy_tstamp_adjust",
]

NF_SYNPROXY_OPT_MSS: Final = 0x01
NF_SYNPROXY_OPT_WSCALE: Final = 0x02
NF_SYNPROXY_OPT_SACK_PERM: Final = 0x04
NF_SYNPROXY_OPT_TIMESTAMP: Final = 0x08
NF_SYNPROXY_OPT_ECN: Final = 0x10
TCP_MAX_WSCALE: Final = 14
TCPOLEN_MSS, TCPOLEN_WINDOW, TCPOLEN_SACK_PERM, TCPOLEN_TIMESTAMP = 4, 3, 2, 10
TS_TSECR: Final = 4  # the timestamp option's body: TSval (4 bytes), TSecr (4 bytes)
_U32: Final = 0xFFFFFFFF


class SynproxyOptions:
    """`struct synproxy_options`."""

    __slots__ = ("mss_encode", "mss_option", "options", "tsecr", "tsval", "wscale")

    def __init__(self) -> None:
        self.options = 0  # NF_SYNPROXY_OPT_* bits
        self.wscale = 0
        self.mss_option = 0  # the MSS option's value (received, or to send)
        self.mss_encode = 0  # the client's MSS, which the cookie encodes
        self.tsval = 0
        self.tsecr = 0


class NfConnSynproxy:
    """`struct nf_conn_synproxy`: the ct extension (our ISN, our timestamp, the server's clock offset)."""

    __slots__ = ("isn", "its", "tsoff")

    def __init__(self) -> None:
        self.isn = 0
        self.its = 0
        self.tsoff = 0

    def __repr__(self) -> str:
        return f"NfConnSynproxy(isn={self.isn}, its={self.its}, tsoff={self.tsoff})"


class SynproxyStats:
    """`struct synproxy_stats`, one netns's sum over CPUs (/proc/net/stat/synproxy)."""

    __slots__ = ("conn_reopened", "cookie_invalid", "cookie_retrans", "cookie_valid", "syn_received")

    def __init__(self) -> None:
        self.syn_received = self.cookie_invalid = self.cookie_valid = 0
        self.cookie_retrans = self.conn_reopened = 0

    def as_dict(self) -> dict[str, int]:
        """The counters in /proc/net/stat/synproxy's column order."""
        return {"syn_received": self.syn_received, "cookie_invalid": self.cookie_invalid,
                "cookie_valid": self.cookie_valid, "cookie_retrans": self.cookie_retrans,
                "conn_reopened": self.conn_reopened}

    def proc_text(self) -> str:
        """`synproxy_cpu_seq_show()`: the header and one line (natbox has one CPU); `entries` is always 0."""
        values = "\t".join(f"{v & _U32:08x}" for v in self.as_dict().values())
        return ("entries\t\tsyn_received\tcookie_invalid\tcookie_valid\tcookie_retrans\tconn_reopened\n"
                f"{0:08x}\t{values}\n")


def synproxy_parse_options(data: bytes | bytearray, thoff: int) -> SynproxyOptions | None:
    """Mirrors `synproxy_parse_options()`: the MSS, window scale (at most 14), timestamps and
    SACK-permitted options of the segment at `thoff`; None when the header or its options are cut short
    (the caller drops the packet). A malformed option ends the walk, keeping what was found."""
    opts = SynproxyOptions()
    if len(data) < thoff + TCPH_MIN_LEN:
        return None
    length = (data[thoff + TCPH_DOFF] >> 4) * 4 - TCPH_MIN_LEN
    if length < 0:
        return None
    ptr = thoff + TCPH_MIN_LEN
    if len(data) < ptr + length:
        return None  # skb_header_pointer fails
    while length > 0:
        opcode = data[ptr]
        ptr += 1
        if opcode == TCPOPT_EOL:
            return opts
        if opcode == TCPOPT_NOP:
            length -= 1
            continue
        if length < 2:
            return opts
        opsize = data[ptr]
        ptr += 1
        if opsize < 2 or opsize > length:
            return opts
        if opcode == TCPOPT_MSS and opsize == TCPOLEN_MSS:
            opts.mss_option = (data[ptr] << 8) | data[ptr + 1]
            opts.options |= NF_SYNPROXY_OPT_MSS
        elif opcode == TCPOPT_WINDOW and opsize == TCPOLEN_WINDOW:
            opts.wscale = min(data[ptr], TCP_MAX_WSCALE)
            opts.options |= NF_SYNPROXY_OPT_WSCALE
        elif opcode == TCPOPT_TIMESTAMP and opsize == TCPOLEN_TIMESTAMP:
            tsecr = ptr + TS_TSECR
            opts.tsval = int.from_bytes(data[ptr:tsecr], "big")
            opts.tsecr = int.from_bytes(data[tsecr:tsecr + TS_TSECR], "big")
            opts.options |= NF_SYNPROXY_OPT_TIMESTAMP
        elif opcode == TCPOPT_SACK_PERM and opsize == TCPOLEN_SACK_PERM:
            opts.options |= NF_SYNPROXY_OPT_SACK_PERM
        ptr += opsize - 2
        length -= opsize
    return opts


def synproxy_build_options(opts: SynproxyOptions) -> bytes:
    """Mirrors `synproxy_build_options()` (its size is `synproxy_options_size()`): MSS; SACK-permitted and
    timestamps packed in 12 bytes, or either with two NOPs; NOP + window scale."""
    o = opts.options
    out = bytearray()
    if o & NF_SYNPROXY_OPT_MSS:
        out += bytes((TCPOPT_MSS, TCPOLEN_MSS)) + (opts.mss_option & 0xFFFF).to_bytes(2, "big")
    if o & NF_SYNPROXY_OPT_TIMESTAMP:
        if o & NF_SYNPROXY_OPT_SACK_PERM:
            out += bytes((TCPOPT_SACK_PERM, TCPOLEN_SACK_PERM, TCPOPT_TIMESTAMP, TCPOLEN_TIMESTAMP))
        else:
            out += bytes((TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, TCPOLEN_TIMESTAMP))
        out += (opts.tsval & _U32).to_bytes(4, "big") + (opts.tsecr & _U32).to_bytes(4, "big")
    elif o & NF_SYNPROXY_OPT_SACK_PERM:
        out += bytes((TCPOPT_NOP, TCPOPT_NOP, TCPOPT_SACK_PERM, TCPOLEN_SACK_PERM))
    if o & NF_SYNPROXY_OPT_WSCALE:
        out += bytes((TCPOPT_NOP, TCPOPT_WINDOW, TCPOLEN_WINDOW, opts.wscale & 0xFF))
    return bytes(out)


def tcp_clock_ms(now: float) -> int:
    """`tcp_clock_ms()`: the clock in milliseconds (the kernel's is CLOCK_MONOTONIC; natbox's injected one)."""
    return int(now * 1000)


def synproxy_init_timestamp_cookie(info_wscale: int, opts: SynproxyOptions, now: float) -> None:
    """Mirrors `synproxy_init_timestamp_cookie()`: our TSval is the clock in ms with its 6 low bits carrying
    the client's window scale (0xf: none), SACK-permitted (bit 4) and ECN (bit 5); the client's TSval is
    echoed; the window scale we announce is the rule's."""
    opts.tsecr = opts.tsval
    tsval = tcp_clock_ms(now) & ~0x3F
    if opts.options & NF_SYNPROXY_OPT_WSCALE:
        tsval |= opts.wscale
        opts.wscale = info_wscale
    else:
        tsval |= 0xF
    if opts.options & NF_SYNPROXY_OPT_SACK_PERM:
        tsval |= 1 << 4
    if opts.options & NF_SYNPROXY_OPT_ECN:
        tsval |= 1 << 5
    opts.tsval = tsval & _U32


def synproxy_check_timestamp_cookie(opts: SynproxyOptions) -> None:
    """Mirrors `synproxy_check_timestamp_cookie()`: the client's options back from its TSecr."""
    opts.wscale = opts.tsecr & 0xF
    if opts.wscale != 0xF:
        opts.options |= NF_SYNPROXY_OPT_WSCALE
    if opts.tsecr & (1 << 4):
        opts.options |= NF_SYNPROXY_OPT_SACK_PERM
    if opts.tsecr & (1 << 5):
        opts.options |= NF_SYNPROXY_OPT_ECN


def synproxy_tstamp_adjust(data: bytearray, thoff: int, reply: bool, synproxy: NfConnSynproxy,
                           partial: bool = False) -> bool:
    """Mirrors `synproxy_tstamp_adjust()`: in the reply direction TSval loses `tsoff`, in the original
    direction TSecr gains it (the first timestamp option only); the checksum follows. False on a partial
    option (the kernel's return value, which its caller ignores)."""
    if synproxy.tsoff == 0:
        return True
    optoff = thoff + TCPH_MIN_LEN
    optend = thoff + (data[thoff + TCPH_DOFF] >> 4) * 4
    if optend > len(data):
        return False
    while optoff < optend:
        kind = data[optoff]
        if kind == TCPOPT_EOL:
            return True
        if kind == TCPOPT_NOP:
            optoff += 1
            continue
        if optoff + 1 == optend or optoff + data[optoff + 1] > optend or data[optoff + 1] < 2:
            return False
        if kind == TCPOPT_TIMESTAMP and data[optoff + 1] == TCPOLEN_TIMESTAMP:
            ptr = optoff + 2 if reply else optoff + 6
            old = int.from_bytes(data[ptr:ptr + 4], "big")
            new = (old - synproxy.tsoff if reply else old + synproxy.tsoff) & _U32
            if not partial:
                chk = thoff + TCPH_CHECK
                check = csum_replace4((data[chk] << 8) | data[chk + 1], old, new)
                data[chk:chk + 2] = check.to_bytes(2, "big")
            data[ptr:ptr + 4] = new.to_bytes(4, "big")
            return True
        optoff += data[optoff + 1]
    return True


def build_segment(saddr: int, daddr: int, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
                  opts: SynproxyOptions, ttl: int) -> bytearray:
    """`synproxy_build_ip()` + the TCP header the `synproxy_send_*` functions fill in: an IPv4 datagram with
    TOS 0, ID 0, DF and the default TTL, a TCP header of doff 5 + the options' words, urgent pointer 0, and a
    complete checksum (the kernel sends it CHECKSUM_PARTIAL; the wire sees it complete)."""
    options = synproxy_build_options(opts)
    doff = TCPH_MIN_LEN + len(options)
    seg = bytearray(sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + (seq & _U32).to_bytes(4, "big")
                    + (ack & _U32).to_bytes(4, "big") + bytes(((doff >> 2) << 4, flags & 0xFF))
                    + (window & 0xFFFF).to_bytes(2, "big") + bytes(4) + options)
    seg[TCPH_CHECK:TCPH_CHECK + 2] = l4_checksum(saddr, daddr, IPPROTO_TCP, seg).to_bytes(2, "big")
    return ipv4.build_ipv4(saddr, daddr, IPPROTO_TCP, seg, ttl=ttl, ident=0, df=True)


def build_segment6(saddr: int, daddr: int, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
                   opts: SynproxyOptions, hop_limit: int) -> bytearray:
    """`synproxy_build_ip_ipv6()` + the TCP header: an IPv6 datagram with flow label and traffic class 0 and
    the default hop limit, the same TCP header as `build_segment`, its checksum complete."""
    options = synproxy_build_options(opts)
    doff = TCPH_MIN_LEN + len(options)
    seg = bytearray(sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + (seq & _U32).to_bytes(4, "big")
                    + (ack & _U32).to_bytes(4, "big") + bytes(((doff >> 2) << 4, flags & 0xFF))
                    + (window & 0xFFFF).to_bytes(2, "big") + bytes(4) + options)
    check = csum_fold(csum_partial(seg, pseudo6_sum(saddr, daddr, IPPROTO_TCP, len(seg))))
    seg[TCPH_CHECK:TCPH_CHECK + 2] = check.to_bytes(2, "big")
    return build_ipv6(saddr, daddr, IPPROTO_TCP, seg, hop_limit=hop_limit)
