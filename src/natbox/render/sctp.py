"""print-sctp.c (tcpdump 4.99) at default verbosity: the common header and one bracketed summary per chunk.

`sctp_print` writes `src.port > dst.port: sctp`, then for each chunk ` (N) [NAME] ` (later chunks
`, (N) `) with the fields tcpdump shows without -v: DATA's flags, TSN, stream id and sequence, PPID;
INIT / INIT ACK's tag, window, stream counts and initial TSN; SACK's cumulative ack, window, gap
blocks and duplicate TSNs (each on its own `\\n\\t\\t` line, as tcpdump prints them). Other chunks
print their name only. tcpdump's texts for malformed chunks are kept (`bogus chunk length N]`,
`[Bad chunk length …]`, `[chunk descriptor cut off at end of packet]`, `truncated-sctp - N bytes
missing!`). Not reproduced: the ForCES decoding tcpdump does for ports 6704-6706 or PPIDs 21-23
(the `[ForCES HP]` tag is printed, the ForCES message is not).
"""

from __future__ import annotations

from natbox.render.dissect import Packet, Stop, ip6_addr
from natbox.wire.layout import (
    IP6H_DADDR,
    IP6H_SADDR,
    IPH_DADDR,
    IPH_SADDR,
    SCTP_CHUNK_FLAGS,
    SCTP_CHUNK_HDR_LEN,
    SCTP_CHUNK_LENGTH,
    SCTP_CHUNK_TYPE,
    SCTPH_DEST,
    SCTPH_LEN,
    SCTPH_SOURCE,
)

# sctp_chunkid_str (4.99: no I-DATA, RE-CONFIG or ASCONF names yet)
_CHUNK_NAMES: dict[int, str] = {
    0x00: "DATA", 0x01: "INIT", 0x02: "INIT ACK", 0x03: "SACK", 0x04: "HB REQ", 0x05: "HB ACK",
    0x06: "ABORT", 0x07: "SHUTDOWN", 0x08: "SHUTDOWN ACK", 0x09: "OP ERR", 0x0A: "COOKIE ECHO",
    0x0B: "COOKIE ACK", 0x0C: "ECN ECHO", 0x0D: "ECN CWR", 0x0E: "SHUTDOWN COMPLETE", 0xC0: "FOR CUM TSN",
    0xC1: "REL CTRL", 0xC2: "REL CTRL ACK",
}
_SCTP_DATA, _SCTP_INIT, _SCTP_INIT_ACK, _SCTP_SACK = 0x00, 0x01, 0x02, 0x03
# DATA chunk flags
_DATA_LAST_FRAG, _DATA_FIRST_FRAG, _DATA_UNORDERED = 0x01, 0x02, 0x04
# PayloadProto_idents
_PPIDS: dict[int, str] = {
    1: "ISDN Q.921", 2: "M2UA", 3: "M3UA", 4: "SUA", 5: "M2PA", 6: "V5.2", 7: "H.248", 8: "BICC", 9: "TALI",
    10: "DUA", 11: "ASAP", 12: "ENRP", 13: "H.323", 14: "Q.IPC", 15: "SIMCO", 16: "DDPSC", 17: "DDPSSC",
    18: "S1AP", 19: "RUA", 20: "HNBAP", 21: "ForCES HP", 22: "ForCES MP", 23: "ForCES LP", 24: "SBc-AP",
    25: "NBAP", 27: "X2AP",
}
_FORCES_CHANNELS: dict[int, str] = {6704: "ForCES HP", 6705: "ForCES MP", 6706: "ForCES LP"}
_DATA_PART_LEN = 12  # struct sctpDataPart: TSN, stream id, stream sequence, payload protocol id
_INIT_LEN = 16  # struct sctpInitiation: init tag, rwnd, OS, MIS, initial TSN
_SACK_LEN = 12  # struct sctpSelectiveAck: cumulative TSN ack, a_rwnd, #gap blocks, #dup TSNs


def sctp_print(p: Packet, off: int, length: int, iph: int) -> None:
    """sctp_print(): `off` is the SCTP common header, `length` the IP payload length."""
    p.proto = "sctp"
    if length < SCTPH_LEN:
        p.w(f"truncated-sctp - {SCTPH_LEN - length} bytes missing!")
        return
    p.need(off, SCTPH_LEN)
    sport, dport = p.u16(off + SCTPH_SOURCE), p.u16(off + SCTPH_DEST)
    if p.u8(iph) >> 4 == 6:
        src, dst = ip6_addr(p, iph + IP6H_SADDR), ip6_addr(p, iph + IP6H_DADDR)
    else:
        src, dst = p.ip(iph + IPH_SADDR), p.ip(iph + IPH_DADDR)
    p.w(f"{src}.{sport} > {dst}.{dport}: sctp")
    for port in (sport, dport):
        if port in _FORCES_CHANNELS:
            p.w(f"[{_FORCES_CHANNELS[port]}]")
    bp = off + SCTPH_LEN
    remaining = length - SCTPH_LEN
    sep = " ("
    count = 0
    while remaining:
        count += 1
        if remaining < SCTP_CHUNK_HDR_LEN:
            p.w(f"{sep}{count}) [chunk descriptor cut off at end of packet]")
            return
        p.need(bp, SCTP_CHUNK_HDR_LEN)
        clen = p.u16(bp + SCTP_CHUNK_LENGTH)
        if clen < SCTP_CHUNK_HDR_LEN:
            p.w(f"{sep}{count}) [Bad chunk length {clen}, < size of chunk descriptor]")
            return
        align = -clen % 4
        if remaining < align:
            p.w(f"{sep}{count}) [Bad chunk length {clen}, > remaining data in packet]")
            return
        p.need(bp, clen)
        ctype, flags = p.u8(bp + SCTP_CHUNK_TYPE), p.u8(bp + SCTP_CHUNK_FLAGS)
        p.w(f"{sep}{count}) [{_CHUNK_NAMES.get(ctype, f'Unknown chunk type: 0x{ctype:x}')}] ")
        body, blen = bp + SCTP_CHUNK_HDR_LEN, clen - SCTP_CHUNK_HDR_LEN
        if ctype == _SCTP_DATA:
            _data(p, body, blen, flags, clen)
        elif ctype in (_SCTP_INIT, _SCTP_INIT_ACK):
            _init(p, body, blen, clen)
        elif ctype == _SCTP_SACK:
            _sack(p, body, blen, clen)
        bp += clen
        remaining -= clen
        sep = ", ("
        if align:
            p.need(bp, align)
            bp += align
            remaining -= align


def _bogus(p: Packet, clen: int) -> None:
    """`bogus chunk length N]` and sctp_print returns."""
    p.w(f"bogus chunk length {clen}]")
    raise Stop


def _data(p: Packet, at: int, blen: int, flags: int, clen: int) -> None:
    marks = ("(U)" if flags & _DATA_UNORDERED else "") + ("(B)" if flags & _DATA_FIRST_FRAG else "") + (
        "(E)" if flags & _DATA_LAST_FRAG else "")
    if marks:
        p.w(marks + " ")
    if blen < _DATA_PART_LEN:
        _bogus(p, clen)
    ppid = p.u32(at + 8)
    p.w(f"[TSN: {p.u32(at)}] [SID: {p.u16(at + 4)}] [SSEQ {p.u16(at + 6)}] [PPID {_PPIDS.get(ppid, f'0x{ppid:x}')}] ")
    if blen == _DATA_PART_LEN:
        _bogus(p, clen)


def _init(p: Packet, at: int, blen: int, clen: int) -> None:
    if blen < _INIT_LEN:
        _bogus(p, clen)
    p.w(f"[init tag: {p.u32(at)}] [rwnd: {p.u32(at + 4)}] [OS: {p.u16(at + 8)}] [MIS: {p.u16(at + 10)}] "
        f"[init TSN: {p.u32(at + 12)}] ")


def _sack(p: Packet, at: int, blen: int, clen: int) -> None:
    if blen < _SACK_LEN:
        _bogus(p, clen)
    cum = p.u32(at)
    ngaps, ndups = p.u16(at + 8), p.u16(at + 10)
    p.w(f"[cum ack {cum}] [a_rwnd {p.u32(at + 4)}] [#gap acks {ngaps}] [#dup tsns {ndups}] ")
    at += _SACK_LEN
    blen -= _SACK_LEN
    n = 0
    while blen and n < ngaps:
        if blen < 4:
            _bogus(p, clen)
        start, end = (cum + p.u16(at)) & 0xFFFFFFFF, (cum + p.u16(at + 2)) & 0xFFFFFFFF
        n += 1
        p.w(f"\n\t\t[gap ack block #{n}: start = {start}, end = {end}] ")
        at += 4
        blen -= 4
    n = 0
    while blen and n < ndups:
        if blen < 4:
            _bogus(p, clen)
        n += 1
        p.w(f"\n\t\t[dup TSN #{n}: {p.u32(at)}] ")
        at += 4
        blen -= 4
