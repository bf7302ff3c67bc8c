"""TCP segments for tests and scenarios: builder with a correct checksum, option encoders, parsers.

Flag values are `TCPHDR_*` from include/net/tcp.h (the 13th header byte); option kinds are the IANA
ones the kernel uses (`TCPOPT_*`). Parsers never raise on bad bytes: a truncated header parses to
None and a malformed option list stops where the kernel's `tcp_parse_options` would.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

from natbox.wire.checksum import l4_checksum

__all__ = [
    "ACK",
    "CWR",
    "ECE",
    "FIN",
    "PSH",
    "RST",
    "SYN",
    "TCPOPT_EOL",
    "TCPOPT_MSS",
    "TCPOPT_NOP",
    "TCPOPT_SACK",
    "TCPOPT_SACK_PERM",
    "TCPOPT_TIMESTAMP",
    "TCPOPT_WINDOW",
    "URG",
    "TcpHeader",
    "build_tcp",
    "encode_options",
    "parse_tcp",
    "parse_tcp_options",
    "tcp_flags_str",
    "tcp_opt_eol",
    "tcp_opt_mss",
    "tcp_opt_nop",
    "tcp_opt_sack",
    "tcp_opt_sack_perm",
    "tcp_opt_timestamps",
    "tcp_opt_wscale",
    "tcp_options_pad",
]

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80

# tcpdump's letters, in its print order ("[S.]" = SYN+ACK)
_FLAG_LETTERS: Final = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (URG, "U"), (ECE, "E"), (CWR, "W"))

TCPOPT_EOL: Final = 0
TCPOPT_NOP: Final = 1
TCPOPT_MSS: Final = 2
TCPOPT_WINDOW: Final = 3
TCPOPT_SACK_PERM: Final = 4
TCPOPT_SACK: Final = 5
TCPOPT_TIMESTAMP: Final = 8

_TCPOPT_NAMES: Final = {
    TCPOPT_MSS: "mss",
    TCPOPT_WINDOW: "wscale",
    TCPOPT_SACK_PERM: "sackOK",
    TCPOPT_SACK: "sack",
    TCPOPT_TIMESTAMP: "TS",
}

_IPPROTO_TCP: Final = 6


class TcpHeader(NamedTuple):
    sport: int
    dport: int
    seq: int
    ack: int
    doff: int  # header length in bytes
    flags: int
    window: int
    check: int
    urg_ptr: int


def tcp_opt_mss(mss: int) -> bytes:
    return bytes((TCPOPT_MSS, 4)) + (mss & 0xFFFF).to_bytes(2, "big")


def tcp_opt_wscale(shift: int) -> bytes:
    return bytes((TCPOPT_WINDOW, 3, shift & 0xFF))


def tcp_opt_sack_perm() -> bytes:
    return bytes((TCPOPT_SACK_PERM, 2))


def tcp_opt_sack(blocks: Iterable[tuple[int, int]]) -> bytes:
    """SACK blocks `(left, right)` (RFC 2018), at most 4 fit in 40 option bytes."""
    body = b"".join(
        (left & 0xFFFFFFFF).to_bytes(4, "big") + (right & 0xFFFFFFFF).to_bytes(4, "big") for left, right in blocks
    )
    return bytes((TCPOPT_SACK, 2 + len(body))) + body


def tcp_opt_timestamps(tsval: int, tsecr: int) -> bytes:
    return (
        bytes((TCPOPT_TIMESTAMP, 10))
        + (tsval & 0xFFFFFFFF).to_bytes(4, "big")
        + (tsecr & 0xFFFFFFFF).to_bytes(4, "big")
    )


def tcp_opt_nop() -> bytes:
    return bytes((TCPOPT_NOP,))


def tcp_opt_eol() -> bytes:
    return bytes((TCPOPT_EOL,))


def tcp_options_pad(options: bytes, *, with_nop: bool = False) -> bytes:
    """Pad an option list to a multiple of 4 bytes with EOL (or NOP) octets."""
    fill = TCPOPT_NOP if with_nop else TCPOPT_EOL
    rem = len(options) & 3
    return options + bytes((fill,)) * ((4 - rem) & 3)


def encode_options(
    *,
    mss: int | None = None,
    sack_perm: bool = False,
    timestamp: tuple[int, int] | None = None,
    wscale: int | None = None,
    sack: Iterable[tuple[int, int]] = (),
) -> bytes:
    """Options laid out as Linux's `tcp_options_write()` does (net/ipv4/tcp_output.c).

    MSS first; timestamps preceded by SACK-permitted when both are set (else by NOP NOP); SACK
    permitted alone as NOP NOP SACK_PERM; window scale as NOP WSCALE; SACK blocks as NOP NOP SACK.
    A Linux SYN therefore reads `mss 1460,sackOK,TS val … ecr 0,nop,wscale 7` in tcpdump.
    """
    out = b""
    if mss is not None:
        out += tcp_opt_mss(mss)
    if timestamp is not None:
        out += tcp_opt_sack_perm() if sack_perm else bytes((TCPOPT_NOP, TCPOPT_NOP))
        out += tcp_opt_timestamps(*timestamp)
    elif sack_perm:
        out += bytes((TCPOPT_NOP, TCPOPT_NOP)) + tcp_opt_sack_perm()
    if wscale is not None:
        out += tcp_opt_nop() + tcp_opt_wscale(wscale)
    blocks = list(sack)
    if blocks:
        out += bytes((TCPOPT_NOP, TCPOPT_NOP)) + tcp_opt_sack(blocks)
    return out


def build_tcp(
    src: int,
    dst: int,
    sport: int,
    dport: int,
    *,
    seq: int = 0,
    ack: int = 0,
    flags: int = ACK,
    window: int = 65535,
    options: bytes = b"",
    payload: bytes | bytearray | memoryview = b"",
    urg_ptr: int = 0,
) -> bytes:
    """A TCP segment (header + payload) whose checksum is correct for the `src`/`dst` pseudo-header.

    `options` is padded with EOL to a multiple of 4 bytes.
    """
    opts = tcp_options_pad(bytes(options))
    doff = 20 + len(opts)
    seg = bytearray(sport.to_bytes(2, "big"))
    seg += dport.to_bytes(2, "big")
    seg += (seq & 0xFFFFFFFF).to_bytes(4, "big")
    seg += (ack & 0xFFFFFFFF).to_bytes(4, "big")
    seg += bytes(((doff >> 2) << 4, flags & 0xFF))
    seg += (window & 0xFFFF).to_bytes(2, "big")
    seg += b"\x00\x00"
    seg += (urg_ptr & 0xFFFF).to_bytes(2, "big")
    seg += opts
    seg += payload
    check = l4_checksum(src, dst, _IPPROTO_TCP, seg)
    seg[16] = check >> 8
    seg[17] = check & 0xFF
    return bytes(seg)


def parse_tcp(segment: bytes | bytearray | memoryview) -> TcpHeader | None:
    """The fixed TCP header, or None if fewer than 20 bytes or a data offset below 5 words."""
    if len(segment) < 20:
        return None
    doff = (segment[12] >> 4) * 4
    if doff < 20:
        return None
    return TcpHeader(
        (segment[0] << 8) | segment[1],
        (segment[2] << 8) | segment[3],
        int.from_bytes(segment[4:8], "big"),
        int.from_bytes(segment[8:12], "big"),
        doff,
        segment[13],
        (segment[14] << 8) | segment[15],
        (segment[16] << 8) | segment[17],
        (segment[18] << 8) | segment[19],
    )


def parse_tcp_options(options: bytes | bytearray | memoryview) -> list[tuple[str, tuple[int, ...]]]:
    """Decode an option list for display: `[("mss", (1460,)), ("nop", ()), ("TS", (val, ecr)), ...]`.

    Follows `tcp_parse_options`: stops at EOL, at a length < 2, or at an option running past the
    end; an option of a known kind with the wrong length is shown as `("bad-<name>", raw bytes)`.
    Unknown kinds are `("opt-<kind>", raw bytes)`.
    """
    out: list[tuple[str, tuple[int, ...]]] = []
    pos = 0
    n = len(options)
    while pos < n:
        kind = options[pos]
        if kind == TCPOPT_EOL:
            out.append(("eol", ()))
            break
        if kind == TCPOPT_NOP:
            out.append(("nop", ()))
            pos += 1
            continue
        if pos + 1 >= n:
            break
        size = options[pos + 1]
        if size < 2 or pos + size > n:
            break
        body = bytes(options[pos + 2 : pos + size])
        name = _TCPOPT_NAMES.get(kind)
        if kind == TCPOPT_MSS and size == 4:
            out.append((name or "", (int.from_bytes(body, "big"),)))
        elif kind == TCPOPT_WINDOW and size == 3:
            out.append((name or "", (body[0],)))
        elif kind == TCPOPT_SACK_PERM and size == 2:
            out.append((name or "", ()))
        elif kind == TCPOPT_TIMESTAMP and size == 10:
            out.append((name or "", (int.from_bytes(body[:4], "big"), int.from_bytes(body[4:], "big"))))
        elif kind == TCPOPT_SACK and size >= 10 and (size - 2) % 8 == 0:
            out.append((name or "", tuple(int.from_bytes(body[i : i + 4], "big") for i in range(0, len(body), 4))))
        elif name is not None:
            out.append((f"bad-{name}", tuple(body)))
        else:
            out.append((f"opt-{kind}", tuple(body)))
        pos += size
    return out


def tcp_flags_str(flags: int) -> str:
    """tcpdump's flag text: `S`, `S.`, `F.`, `R`, `P.`, `.` for a bare ACK, `none` for no flags."""
    text = "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit)
    if flags & ACK:
        text += "."
    return text or "none"
