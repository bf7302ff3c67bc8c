"""Sequence number adjustment, the conntrack extension `nf_conn_seqadj` (net/netfilter/nf_conntrack_seqadj.c).

A ct whose two ends see different sequence numbers for the same bytes carries one `NfCtSeqadj` per
direction: packets of that direction have `offset` added to their sequence number, and packets of the
other direction have it subtracted from their acknowledgment number (and SACK blocks). SYNPROXY is the one
user in natbox: the client was given a cookie as the server's ISN, the server chose its own, so the
reply direction's numbers are shifted by `cookie - server ISN` for the life of the connection
(`ipv4_synproxy_hook`, natbox.engine.synproxy).

Mirrors `nf_ct_seqadj_init`, `nf_ct_seq_offset`, `nf_ct_seq_adjust`, `nf_ct_sack_adjust` and
`nf_ct_sack_block_adjust`. Offsets are kept as u32 (the kernel's s32, modulo 2^32), compared with the
kernel's `after()`. The adjustment runs in `nf_confirm` (engine/hooks.py) for every packet of a ct with
IPS_SEQ_ADJUST, and the TCP tracker takes the offset out of acknowledgment numbers before its window
checks (`tcp_in_window`). The compiled flows and the flow offload never carry such a ct
(engine/fastpath.py, engine/offload.py: `nft_flow_offload_eval` refuses IPS_SEQ_ADJUST_BIT).
"""

from __future__ import annotations

from typing import Final, Protocol

from natbox.netfilter import CtStatus
from natbox.wire.checksum import csum_replace4
from natbox.wire.layout import TCPH_ACK_SEQ, TCPH_CHECK, TCPH_DOFF, TCPH_FLAGS, TCPH_MIN_LEN, TCPH_SEQ
from natbox.wire.tcp import ACK, TCPOPT_EOL, TCPOPT_NOP, TCPOPT_SACK

__all__ = ["NfConnSeqadj", "NfCtSeqadj", "nf_ct_seq_adjust", "nf_ct_seq_offset", "nf_ct_seqadj_init"]

_U32: Final = 0xFFFFFFFF
_HALF: Final = 0x80000000
TCPOLEN_SACK_PERBLOCK: Final = 8
_SEQ_ADJUST: Final = CtStatus.SEQ_ADJUST


def _after(a: int, b: int) -> bool:
    """`after(a, b)`: (s32)(b - a) < 0."""
    return ((b - a) & _U32) >= _HALF


class Conn(Protocol):
    """What seqadj needs of `struct nf_conn` (natbox.conntrack.conn.Conn; a Protocol, so conn.py, which
    names this module's extension, and this module do not import each other)."""

    status: int
    seqadj: NfConnSeqadj | None


class NfCtSeqadj:
    """`struct nf_ct_seqadj`: one direction's offsets, before and after `correction_pos`."""

    __slots__ = ("correction_pos", "offset_after", "offset_before")

    def __init__(self) -> None:
        self.correction_pos = 0
        self.offset_before = 0
        self.offset_after = 0

    def __repr__(self) -> str:
        return f"NfCtSeqadj(pos={self.correction_pos}, before={self.offset_before}, after={self.offset_after})"


class NfConnSeqadj:
    """`struct nf_conn_seqadj`: the extension, one `NfCtSeqadj` per direction (indexed by Direction)."""

    __slots__ = ("seq",)

    def __init__(self) -> None:
        self.seq = (NfCtSeqadj(), NfCtSeqadj())


def nf_ct_seqadj_init(ct: Conn, direction: int, off: int) -> None:
    """Mirrors `nf_ct_seqadj_init()`: direction `direction`'s offset becomes `off` (a zero offset changes
    nothing, not even the status bit)."""
    off &= _U32
    if off == 0 or ct.seqadj is None:
        return
    ct.status |= _SEQ_ADJUST
    this_way = ct.seqadj.seq[direction]
    this_way.offset_before = off
    this_way.offset_after = off


def nf_ct_seq_offset(ct: Conn, direction: int, seq: int) -> int:
    """Mirrors `nf_ct_seq_offset()`: the offset (u32) that applies to `seq` in `direction` (0 without the
    extension)."""
    seqadj = ct.seqadj
    if seqadj is None:
        return 0
    this_way = seqadj.seq[direction]
    return this_way.offset_after if _after(seq, this_way.correction_pos) else this_way.offset_before


def _put32(data: bytearray, off: int, value: int) -> None:
    data[off:off + 4] = value.to_bytes(4, "big")


def _replace4(data: bytearray, thoff: int, off: int, new: int, partial: bool) -> None:
    """Write the u32 at `off` and update the TCP checksum (`inet_proto_csum_replace4(..., false)`: nothing
    to update for a CHECKSUM_PARTIAL packet, whose checksum field holds the pseudo-header sum only)."""
    old = int.from_bytes(data[off:off + 4], "big")
    if not partial:
        chk = thoff + TCPH_CHECK
        check = csum_replace4((data[chk] << 8) | data[chk + 1], old, new)
        data[chk] = check >> 8
        data[chk + 1] = check & 0xFF
    _put32(data, off, new)


def _sack_block_adjust(data: bytearray, thoff: int, sackoff: int, sackend: int, seq: NfCtSeqadj,
                       partial: bool) -> None:
    """Mirrors `nf_ct_sack_block_adjust()`: each block's edges lose the other direction's offset."""
    while sackoff < sackend:
        for edge in (sackoff, sackoff + 4):
            value = int.from_bytes(data[edge:edge + 4], "big")
            off = seq.offset_after if _after((value - seq.offset_before) & _U32, seq.correction_pos) \
                else seq.offset_before
            _replace4(data, thoff, edge, (value - off) & _U32, partial)
        sackoff += TCPOLEN_SACK_PERBLOCK


def _sack_adjust(data: bytearray, thoff: int, other_way: NfCtSeqadj, partial: bool) -> bool:
    """Mirrors `nf_ct_sack_adjust()`: walk the options, adjust every well-formed SACK option; False on a
    partial option (the packet is then dropped)."""
    optoff = thoff + TCPH_MIN_LEN
    optend = thoff + (data[thoff + TCPH_DOFF] >> 4) * 4
    if optend > len(data):
        return False  # skb_ensure_writable fails
    while optoff < optend:
        kind = data[optoff]
        if kind == TCPOPT_EOL:
            return True
        if kind == TCPOPT_NOP:
            optoff += 1
            continue
        if optoff + 1 == optend or optoff + data[optoff + 1] > optend or data[optoff + 1] < 2:
            return False  # no partial options
        size = data[optoff + 1]
        if kind == TCPOPT_SACK and size >= 2 + TCPOLEN_SACK_PERBLOCK and (size - 2) % TCPOLEN_SACK_PERBLOCK == 0:
            _sack_block_adjust(data, thoff, optoff + 2, optoff + size, other_way, partial)
        optoff += size
    return True


def nf_ct_seq_adjust(data: bytearray, thoff: int, ct: Conn, direction: int, partial: bool = False) -> bool:
    """Mirrors `nf_ct_seq_adjust()`: the TCP segment at `data[thoff:]` of `ct`'s `direction` gets this
    direction's offset added to its sequence number and, with ACK, the other direction's offset taken from
    its acknowledgment number and SACK blocks; the checksum follows (RFC 1624). Returns False when the
    packet must be dropped (a truncated header or a partial option)."""
    seqadj = ct.seqadj
    if seqadj is None or len(data) < thoff + TCPH_MIN_LEN:
        return seqadj is None
    this_way = seqadj.seq[direction]
    other_way = seqadj.seq[1 - direction]
    seq = int.from_bytes(data[thoff + TCPH_SEQ:thoff + TCPH_SEQ + 4], "big")
    seqoff = this_way.offset_after if _after(seq, this_way.correction_pos) else this_way.offset_before
    _replace4(data, thoff, thoff + TCPH_SEQ, (seq + seqoff) & _U32, partial)
    if not data[thoff + TCPH_FLAGS] & ACK:
        return True
    ack = int.from_bytes(data[thoff + TCPH_ACK_SEQ:thoff + TCPH_ACK_SEQ + 4], "big")
    ackoff = other_way.offset_after if _after((ack - other_way.offset_before) & _U32, other_way.correction_pos) \
        else other_way.offset_before
    _replace4(data, thoff, thoff + TCPH_ACK_SEQ, (ack - ackoff) & _U32, partial)
    return _sack_adjust(data, thoff, other_way, partial)
