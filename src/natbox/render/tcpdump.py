"""tcpdump-style one-line rendering of frames, as `tcpdump -nne -r file` (4.99.x) prints them: the entry
points (one printer module per protocol family sits beside this one in natbox.render).

`tcpdump_line(frame)` renders one Ethernet frame (or, with `link="raw"`, a bare IP datagram as tcpdump
prints LINKTYPE_RAW / LINKTYPE_IPV4 with -e: `ip: …`; `link="sll"` a Linux cooked v1 frame);
`eflag=False` gives the `tcpdump -n` form without the link-layer part (`IP a > b: …`, `ARP, …`).
The timestamp column (`HH:MM:SS.ffffff `) is printed in **UTC** — tcpdump prints local time, so the
comparison tests run tcpdump with `TZ=UTC`. As with libpcap's default microsecond precision, nanosecond
timestamps are truncated to microseconds. `wirelen` is the original length (pcap `len`); it defaults to
`len(frame)` (nothing cut by the snap length).

Time is not the local zone: the column is computed arithmetically (no `time` import, sans-IO).

The printers mirror tcpdump 4.99's print-ether.c, print-arp.c, print-ip.c, print-ip-demux.c,
print-icmp.c, print-tcp.c, print-udp.c, print-sctp.c (common chunks), print-domain.c (DNS and mDNS),
print-ip6.c, print-frag6.c, print-rt6.c (types 0 and 2), print-icmp6.c (ip6.py), print-tftp.c, print-esp.c
(ESP and ESP-in-UDP, RFC 3948), print-ssh.c and util-print.c (txtproto_print for HTTP/WHOIS/SMTP/FTP/SIP,
hex_and_ascii_print for unknown payloads) at default verbosity with -n,
including tcpdump's own texts for malformed input (`truncated-ip - N bytes missing!`, `bad-len N`,
`[bad hdr length …]`, ` [|tcp]` when the capture ends inside a header…). A protocol tcpdump decodes
further but this package does not (LLC/STP, MPLS, IGMP, GRE, AH, IKE, ForCES over SCTP, AFS/RX,
NTP, telnet, PPTP…) gets the generic text (`UDP, length N`, ` ip-proto-N LEN`, a hex dump), so such lines
differ from tcpdump's; the tests in tests/adapters/ report per-file match rates against the real tcpdump.
Port-based UDP/TCP printers are chosen by port as in print-udp.c/print-tcp.c, but only among the ones
implemented here (a packet between, say, ports 5060 and 123 is SIP here and NTP for tcpdump).

IPv4 fragments: at default verbosity tcpdump 4.99 prints no `(frag id:len@off+)` annotation (that form
belongs to old releases; 4.99 shows fragment fields only with -v). A first fragment is decoded like an
unfragmented datagram; a later fragment prints `a > b: ip-proto-17`. This package does the same.

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

from natbox.render.dissect import Packet, SeqTable, Stop, Truncated, format_timestamp
from natbox.render.ip import ip_print
from natbox.render.ip6 import ip6_print
from natbox.render.link import ether_print, sll_print

__all__ = ["MAX_TCP_CONVERSATIONS", "TcpdumpPrinter", "format_timestamp", "tcpdump_line"]

# Conversations remembered by TcpdumpPrinter for relative sequence numbers (oldest evicted first).
MAX_TCP_CONVERSATIONS = 65536
# tcpdump's MAXIMUM_SNAPLEN: larger caplen/len make pretty_print_packet print "[Invalid header: …]".
_MAXIMUM_SNAPLEN = 262144


def _render(frame: bytes, link: str, ts: float | None, ts_ns: int | None, wirelen: int | None,
            eflag: bool, seqs: SeqTable | None) -> str:
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
    p = Packet(b, eflag, seqs)
    try:
        if link == "ether":
            ether_print(p, length)
        elif link == "sll":
            sll_print(p, length)
        else:
            p.proto = "raw"
            if p.eflag:
                p.w("ip: ")
            p.proto = "ipn"
            v = p.u8(0) & 0xF0
            if v == 0x40:
                ip_print(p, 0, length)
            elif v == 0x60:
                ip6_print(p, 0, length)
            else:
                p.w(f"unknown ip {v >> 4}")
    except Truncated:
        p.w(f" [|{p.proto}]")
    except Stop:
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
        self._seqs = None if absolute else SeqTable(max_conversations)

    def line(self, frame: bytes | bytearray | memoryview, *, ts: float | None = None,
             ts_ns: int | None = None, wirelen: int | None = None, link: str | None = None) -> str:
        """The next packet's line (same arguments as `tcpdump_line`)."""
        return _render(bytes(frame), link or self.link, ts, ts_ns, wirelen, self.eflag, self._seqs)
