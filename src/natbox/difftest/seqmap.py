"""SYNPROXY's cookies in a differential test: per-flow offsets between the kernel's and natbox's numbers.

A router running `-j SYNPROXY` answers the client's SYN itself with a SYN cookie as its ISN and a timestamp
cookie as its TSval (xt_SYNPROXY, nf_synproxy_core.c). Both are keyed by what natbox cannot know (the
kernel's boot-time SipHash secret, its jiffies and CLOCK_MONOTONIC; docs/differences.md), so natbox's
SYN-ACK carries other values, and the client's later segments carry the kernel's (it acknowledges the
kernel's cookie and echoes the kernel's TSval).

The replay learns, per flow, the two offsets when natbox's SYN-ACK is paired with the kernel's (same
interface, same position, same tuple, different sequence numbers): `d` = kernel ISN - natbox ISN and
`t` = kernel TSval - natbox TSval (mod 2^32). The client's input segments of that flow are rewritten into
natbox's numbering before natbox sees them (ack, SACK edges - d; TSecr - t; the TCP checksum follows), and
the comparison accepts, in that flow's segments only, a sequence or acknowledgment number that differs by
exactly ±d and a timestamp word that differs by exactly ±t (checksums are then judged by validity).
Everything else (flags, windows, option layout and kinds, the MSS and option bits the cookies encode,
addresses, payload) must agree exactly.
"""

from __future__ import annotations

from typing import NamedTuple

from natbox.wire.checksum import csum_replace4
from natbox.wire.ethernet import ETH_P_IP, ETH_P_IPV6
from natbox.wire.layout import (
    ETH_HDR_LEN,
    ETH_PROTO,
    IP6H_DADDR,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IP6H_SADDR,
    IPH_DADDR,
    IPH_MIN_LEN,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_VER_IHL,
    TCPH_ACK_SEQ,
    TCPH_CHECK,
    TCPH_DEST,
    TCPH_DOFF,
    TCPH_FLAGS,
    TCPH_MIN_LEN,
    TCPH_SEQ,
    TCPH_SOURCE,
)
from natbox.wire.tcp import ACK, FIN, RST, SYN, TCPOPT_EOL, TCPOPT_NOP, TCPOPT_SACK, TCPOPT_TIMESTAMP

__all__ = ["FlowKey", "SynproxyOffsets", "field_agrees", "options_agree", "seq_agrees"]

_M = 0xFFFFFFFF
FlowKey = tuple[int, int, int, int]  # (client address, client port, server address, server port)


class _Tcp(NamedTuple):
    src: int
    dst: int
    sport: int
    dport: int
    thoff: int  # in the frame
    flags: int
    seq: int
    ts: int | None  # offset of the timestamp option's TSval in the frame


def _u32(b: bytes | bytearray, off: int) -> int:
    return int.from_bytes(b[off:off + 4], "big")


def _options(frame: bytes | bytearray, thoff: int) -> list[tuple[int, int, int]]:
    """(kind, offset of the body, body length) of each TCP option (well-formed ones only)."""
    out = []
    off, end = thoff + TCPH_MIN_LEN, min(len(frame), thoff + (frame[thoff + TCPH_DOFF] >> 4) * 4)
    while off < end:
        kind = frame[off]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            off += 1
            continue
        if off + 1 >= end or frame[off + 1] < 2 or off + frame[off + 1] > end:
            break
        out.append((kind, off + 2, frame[off + 1] - 2))
        off += frame[off + 1]
    return out


def _tcp(frame: bytes | bytearray) -> _Tcp | None:
    """The TCP segment of an IPv4 frame, or of an IPv6 frame without extension headers."""
    ip = ETH_HDR_LEN
    proto = frame[ETH_PROTO:ETH_PROTO + 2]
    if proto == ETH_P_IPV6.to_bytes(2, "big") and len(frame) >= ip + IP6H_LEN and frame[ip + IP6H_NEXTHDR] == 6:
        thoff = ip + IP6H_LEN
        src = int.from_bytes(frame[ip + IP6H_SADDR:ip + IP6H_DADDR], "big")
        dst = int.from_bytes(frame[ip + IP6H_DADDR:ip + IP6H_LEN], "big")
    elif proto == ETH_P_IP.to_bytes(2, "big") and len(frame) >= ip + IPH_MIN_LEN and frame[ip + IPH_PROTOCOL] == 6:
        thoff = ip + (frame[ip + IPH_VER_IHL] & 0x0F) * 4
        src, dst = _u32(frame, ip + IPH_SADDR), _u32(frame, ip + IPH_DADDR)
    else:
        return None
    if len(frame) < thoff + TCPH_MIN_LEN:
        return None
    ts = next((body for kind, body, size in _options(frame, thoff) if kind == TCPOPT_TIMESTAMP and size == 8), None)
    return _Tcp(src, dst,
                (frame[thoff + TCPH_SOURCE] << 8) | frame[thoff + TCPH_SOURCE + 1],
                (frame[thoff + TCPH_DEST] << 8) | frame[thoff + TCPH_DEST + 1], thoff, frame[thoff + TCPH_FLAGS],
                _u32(frame, thoff + TCPH_SEQ), ts)


def _put(buf: bytearray, thoff: int, off: int, value: int) -> None:
    old = _u32(buf, off)
    chk = thoff + TCPH_CHECK
    check = csum_replace4((buf[chk] << 8) | buf[chk + 1], old, value & _M)
    buf[chk:chk + 2] = check.to_bytes(2, "big")
    buf[off:off + 4] = (value & _M).to_bytes(4, "big")


class SynproxyOffsets:
    """The per-flow (d, t) offsets of SYNPROXY flows (see the module docstring)."""

    def __init__(self, flows: dict[FlowKey, tuple[int, int]] | None = None) -> None:
        self.flows: dict[FlowKey, tuple[int, int]] = dict(flows or {})

    def learn(self, kernel_frame: bytes, natbox_frame: bytes) -> None:
        """Record a flow's offsets from the kernel's and natbox's SYN-ACK at the same position."""
        k, n = _tcp(kernel_frame), _tcp(natbox_frame)
        if k is None or n is None or (k.src, k.dst, k.sport, k.dport) != (n.src, n.dst, n.sport, n.dport):
            return
        if k.flags & (SYN | ACK | RST | FIN) != SYN | ACK or n.flags != k.flags or k.seq == n.seq:
            return
        t = 0
        if k.ts is not None and n.ts is not None:
            t = (_u32(kernel_frame, k.ts) - _u32(natbox_frame, n.ts)) & _M
        self.flows[(k.dst, k.dport, k.src, k.sport)] = ((k.seq - n.seq) & _M, t)

    def of(self, frame: bytes | bytearray) -> tuple[int, int] | None:
        """The offsets of the flow `frame` belongs to (either direction), or None."""
        v = _tcp(frame)
        if v is None or not self.flows:
            return None
        return self.flows.get((v.src, v.sport, v.dst, v.dport)) or self.flows.get((v.dst, v.dport, v.src, v.sport))

    def rewrite_input(self, frame: bytes) -> bytes:
        """A client's segment of a learned flow in natbox's numbering: ack and SACK edges - d, TSecr - t."""
        v = _tcp(frame)
        if v is None or not self.flows:
            return frame
        off = self.flows.get((v.src, v.sport, v.dst, v.dport))
        if off is None:
            return frame
        d, t = off
        buf = bytearray(frame)
        if v.flags & ACK:
            _put(buf, v.thoff, v.thoff + TCPH_ACK_SEQ, _u32(buf, v.thoff + TCPH_ACK_SEQ) - d)
        for kind, body, size in _options(buf, v.thoff):
            if kind == TCPOPT_SACK:
                for edge in range(body, body + size - size % 4, 4):
                    _put(buf, v.thoff, edge, _u32(buf, edge) - d)
            elif kind == TCPOPT_TIMESTAMP and size == 8 and t:
                _put(buf, v.thoff, body + 4, _u32(buf, body + 4) - t)
        return bytes(buf)


def _within(a: int, b: int, off: int) -> bool:
    return a == b or (a - b) & _M in (off, -off & _M)


def seq_agrees(kernel: int, natbox: int, offsets: tuple[int, int]) -> bool:
    """A sequence or acknowledgment number equal, or off by exactly ±d."""
    return _within(kernel, natbox, offsets[0])


def options_agree(kernel_hex: str, natbox_hex: str, offsets: tuple[int, int]) -> bool:
    """The same options, except that timestamp words may differ by exactly ±t and SACK edges by ±d."""
    k, n = bytes.fromhex(kernel_hex), bytes.fromhex(natbox_hex)
    if len(k) != len(n):
        return False
    d, t = offsets
    i = 0
    while i < len(k):
        if k[i] != n[i]:
            return False
        kind = k[i]
        if kind in (TCPOPT_EOL, TCPOPT_NOP) or i + 1 >= len(k):
            i += 1
            continue
        size = k[i + 1]
        if size < 2 or k[i + 1] != n[i + 1]:
            return False
        body_k, body_n = k[i + 2:i + size], n[i + 2:i + size]
        if kind in (TCPOPT_TIMESTAMP, TCPOPT_SACK) and len(body_k) % 4 == 0:
            off = t if kind == TCPOPT_TIMESTAMP else d
            if not all(_within(_u32(body_k, j), _u32(body_n, j), off) for j in range(0, len(body_k), 4)):
                return False
        elif body_k != body_n:
            return False
        i += size
    return True


def field_agrees(name: str, kernel: object, natbox: object, offsets: tuple[int, int]) -> bool:
    """Whether a decoded field (natbox.difftest.packets) of a SYNPROXY flow's segment agrees up to the offsets."""
    if name in ("tcp.seq", "tcp.ack") and isinstance(kernel, int) and isinstance(natbox, int):
        return seq_agrees(kernel, natbox, offsets)
    if name == "tcp.options" and isinstance(kernel, str) and isinstance(natbox, str):
        return options_agree(kernel, natbox, offsets)
    return False
