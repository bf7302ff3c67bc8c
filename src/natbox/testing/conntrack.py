"""Tiny packet builders and a two-hook harness for the conntrack tests.

Packets are struct-packed IPv4 + TCP/UDP/ICMP with correct checksums (natbox.wire.checksum), so the tests do
not depend on the wire builders being written concurrently. `Box.send()` runs a packet through
`nf_conntrack_in` at PRE_ROUTING and `nf_conntrack_confirm` at POST_ROUTING, as a forwarded packet would go.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.conn import Conn
from natbox.conntrack.core import nf_conntrack_confirm, nf_conntrack_in
from natbox.conntrack.format import format_event, parse_conntrack_line
from natbox.conntrack.table import ConntrackTable
from natbox.conntrack.tuple import ConnTuple, parse_addr
from natbox.netfilter import CtInfo, Hook
from natbox.skb import Skb
from natbox.wire.checksum import internet_checksum, l4_checksum

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

A = "10.0.0.2"  # client
B = "10.0.1.2"  # server
C = "10.0.0.3"  # second client


def ip4(src: str, dst: str, proto: int, payload: bytes, *, ttl: int = 64, ident: int = 1, frag: int = 0) -> bytearray:
    """An IPv4 datagram (20-byte header, correct header checksum) carrying `payload`."""
    hdr = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, ttl, proto, 0,
            parse_addr(src).to_bytes(4, "big"), parse_addr(dst).to_bytes(4, "big"),
        )
    )
    struct.pack_into("!H", hdr, 10, internet_checksum(hdr))
    return hdr + payload


def tcp(
    src: str, dst: str, sport: int, dport: int, flags: int, *, seq: int = 1000, ack: int = 0, win: int = 64240,
    options: bytes = b"", payload: bytes = b"", bad_csum: bool = False,
) -> bytearray:
    """A TCP segment in an IPv4 datagram with a correct checksum (or a wrong one with `bad_csum`)."""
    assert len(options) % 4 == 0
    doff = (20 + len(options)) // 4
    seg = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, win, 0, 0))
    seg += options + payload
    csum = l4_checksum(parse_addr(src), parse_addr(dst), 6, seg) ^ (0x5555 if bad_csum else 0)
    struct.pack_into("!H", seg, 16, csum)
    return ip4(src, dst, 6, bytes(seg))


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"x", *, zero_csum: bool = False,
        bad_csum: bool = False) -> bytearray:
    """A UDP datagram with a correct checksum (or zero / wrong)."""
    seg = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)) + payload
    if not zero_csum:
        csum = l4_checksum(parse_addr(src), parse_addr(dst), 17, seg) or 0xFFFF
        if bad_csum:
            csum ^= 0x5555
        struct.pack_into("!H", seg, 6, csum)
    return ip4(src, dst, 17, bytes(seg))


def icmp(src: str, dst: str, itype: int, code: int = 0, *, ident: int = 0, seq: int = 0, body: bytes = b"",
         bad_csum: bool = False) -> bytearray:
    """An ICMP message: type, code, checksum, then id/seq (or the rest-of-header word), then `body`."""
    msg = bytearray(struct.pack("!BBHHH", itype, code, 0, ident, seq)) + body
    struct.pack_into("!H", msg, 2, internet_checksum(msg) ^ (0x5555 if bad_csum else 0))
    return ip4(src, dst, 1, bytes(msg))


def icmp_error(
    src: str, dst: str, itype: int, code: int, offending: bytes | bytearray, *, inner_len: int = 28
) -> bytearray:
    """An ICMP error quoting the first `inner_len` bytes of `offending` (RFC 792: IP header + 8 bytes)."""
    return icmp(src, dst, itype, code, body=bytes(offending[:inner_len]))


def raw(src: str, dst: str, proto: int, payload: bytes = b"\x00" * 8) -> bytearray:
    return ip4(src, dst, proto, payload)


def t(src: str, sport: int, dst: str, dport: int, proto: int) -> ConnTuple:
    return ConnTuple(parse_addr(src), sport, parse_addr(dst), dport, proto)


@dataclass
class Sent:
    """What happened to one packet: the skb (ct attached), the final verdict, and ctinfo after conntrack."""

    skb: Skb
    verdict: int
    ctinfo: CtInfo

    @property
    def ct(self) -> Conn | None:
        return self.skb.ct

    @property
    def invalid(self) -> bool:
        return self.ctinfo == CtInfo.INVALID


@dataclass
class Box:
    """A forwarding host's conntrack: one table, one config, an injected clock."""

    cfg: ConntrackConfig = field(default_factory=ConntrackConfig)
    table: ConntrackTable = field(default_factory=ConntrackTable)

    def __post_init__(self) -> None:
        self.table.events_enabled = True

    def send(self, data: bytearray, now: float, *, hook: Hook = Hook.PRE_ROUTING, confirm: bool = True) -> Sent:
        """Conntrack at `hook`, then confirm (as POST_ROUTING would) if the packet was accepted."""
        skb = Skb(bytearray(data))
        skb.hook = hook
        result = nf_conntrack_in(skb, hook, now, self.table, self.cfg)
        ctinfo = skb.ctinfo
        if result == 1 and confirm:
            result = nf_conntrack_confirm(skb, now, self.table)
        return Sent(skb, result, ctinfo)

    def entries(self, now: float) -> list[Conn]:
        return self.table.live(now)

    def find(self, tup: ConnTuple, now: float) -> Conn | None:
        hit = self.table.lookup(tup, now)
        return hit[0] if hit else None

    def timeout_of(self, tup: ConnTuple, now: float) -> int | None:
        """What `conntrack -L` shows in the timeout column for the entry holding `tup`."""
        conn = self.find(tup, now)
        return None if conn is None else int(conn.timeout - now)


__all__ = [
    "ACK",
    "CWR",
    "ECE",
    "FIN",
    "PSH",
    "RST",
    "SYN",
    "URG",
    "A",
    "B",
    "Box",
    "C",
    "CtInfo",
    "Sent",
    "icmp",
    "icmp_error",
    "ip4",
    "raw",
    "t",
    "tcp",
    "udp",
]


# --- comparing with the kernel's conntrack listings (tests/conntrack/test_kernel_capture.py, test_live_kernel.py)

def replay_capture(packets: list[list[Any]], table: ConntrackTable, cfg: ConntrackConfig, until: float) -> list[str]:
    lines: list[str] = []
    for when, hexdata in packets:
        if when > until:
            break
        skb = Skb(bytearray(bytes.fromhex(hexdata)))
        if nf_conntrack_in(skb, Hook.PRE_ROUTING, when, table, cfg) == 1:
            nf_conntrack_confirm(skb, when, table)
        lines.extend(format_event(ev) for ev in table.drain_events())
    return lines


def without_timeout(line: str) -> str:
    return re.sub(r"use=\d+", "use=N", re.sub(r"^(\s*(?:\[\w+\]\s+)?\S+\s+\d+ )\d+ ", r"\1T ", line))


def timeouts_close(mine: str, theirs: str) -> bool:
    a, b = parse_conntrack_line(mine)["timeout"], parse_conntrack_line(theirs)["timeout"]
    if a is None or b is None:
        return bool(a == b)
    return bool(b - 1 <= a <= b)
