"""The SCTP tracker. Mirrors nf_conntrack_proto_sctp.c (Linux 6.x, with HEARTBEAT_SENT and without the
HEARTBEAT_ACKED state later kernels removed).

A connection's state follows the chunks it carries through `sctp_conntracks[dir][chunk][state]` (the
kernel's table, below): INIT moves NONE to CLOSED, INIT_ACK (reply) to COOKIE_WAIT, COOKIE_ECHO to
COOKIE_ECHOED, COOKIE_ACK (reply) to ESTABLISHED (ASSURED), SHUTDOWN / SHUTDOWN_ACK / SHUTDOWN_COMPLETE
through SHUTDOWN_SENT or SHUTDOWN_RECD and SHUTDOWN_ACK_SENT back to CLOSED, ABORT to CLOSED at once; a
HEARTBEAT in a new flow is HEARTBEAT_SENT (a secondary path of a multi-homed association). Chunks the table
does not name (DATA, SACK...) keep the state. The timeout is the new state's
(`nf_conntrack_sctp_timeout_*`: CLOSED 10 s, COOKIE_WAIT / COOKIE_ECHOED / SHUTDOWN_* 3 s, ESTABLISHED
210 s, HEARTBEAT_SENT 30 s).

INVALID (the packet is accepted, without a ct): a header shorter than 12 bytes; a bad CRC32c (checked at
PRE_ROUTING with `nf_conntrack_checksum=1`, `sctp_error`); no chunk, a chunk of length 0, COOKIE_ECHO /
COOKIE_ACK not first or INIT / INIT_ACK / SHUTDOWN_COMPLETE not alone (`do_basic_checks`); a new flow
that starts with ABORT, SHUTDOWN_COMPLETE, COOKIE_ACK or a chunk that cannot open one (`sctp_new`); a
verification tag that is not the one the direction must carry (RFC 9260 §8.5, with the §8.5.1 special
cases of INIT, ABORT, SHUTDOWN_COMPLETE, COOKIE_ECHO and the heartbeat tags); a transition the table
marks invalid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from natbox.conntrack.conn import SctpConntrack
from natbox.conntrack.proto.generic import NF_INVALID, nf_ct_refresh_acct
from natbox.netfilter import NF_ACCEPT, CtStatus, Hook
from natbox.wire.checksum import crc32c
from natbox.wire.layout import (
    SCTP_CHUNK_FLAGS,
    SCTP_CHUNK_HDR_LEN,
    SCTP_CHUNK_LENGTH,
    SCTP_CHUNK_TYPE,
    SCTPH_CHECKSUM,
    SCTPH_LEN,
    SCTPH_VTAG,
)

if TYPE_CHECKING:
    from natbox.conntrack.config import ConntrackConfig
    from natbox.conntrack.conn import Conn
    from natbox.skb import Skb

__all__ = [
    "SCTP_CONNTRACK_NAMES",
    "sctp_can_early_drop",
    "sctp_error",
    "sctp_packet",
]

# enum sctp_conntrack
(S_NONE, S_CLOSED, S_COOKIE_WAIT, S_COOKIE_ECHOED, S_ESTABLISHED, S_SHUTDOWN_SENT, S_SHUTDOWN_RECD,
 S_SHUTDOWN_ACK_SENT, S_HEARTBEAT_SENT, S_MAX) = range(10)
SCTP_CONNTRACK_NAMES: Final = ("NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
                        "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT")

# chunk types (enum sctp_cid)
CID_DATA, CID_INIT, CID_INIT_ACK, CID_HEARTBEAT, CID_HEARTBEAT_ACK, CID_ABORT = 0, 1, 2, 4, 5, 6
CID_SHUTDOWN, CID_SHUTDOWN_ACK, CID_ERROR, CID_COOKIE_ECHO, CID_COOKIE_ACK, CID_SHUTDOWN_COMPLETE = (
    7, 8, 9, 10, 11, 14)
SCTP_CHUNK_FLAG_T: Final = 0x01
SCTP_FLAG_HEARTBEAT_VTAG_FAILED: Final = 1
_INITHDR_LEN: Final = 4  # struct sctp_inithdr.init_tag, all the tracker reads of it (after the chunk header)

# sctp_new_state's chunk → row
_ROW: Final = {CID_INIT: 0, CID_INIT_ACK: 1, CID_ABORT: 2, CID_SHUTDOWN: 3, CID_SHUTDOWN_ACK: 4, CID_ERROR: 5,
        CID_COOKIE_ECHO: 6, CID_COOKIE_ACK: 7, CID_SHUTDOWN_COMPLETE: 8, CID_HEARTBEAT: 9, CID_HEARTBEAT_ACK: 10}

NO_, CL_, CW_, CE_, ES_, SS_, SR_, SA_, HS_, IV_ = range(10)
# sctp_conntracks[dir][row][state], the kernel's table verbatim (its sNO, sCL... written NO_, CL_...)
SCTP_CONNTRACKS: tuple[tuple[tuple[int, ...], ...], ...] = (
    (  # ORIGINAL
        (CL_, CL_, CW_, CE_, ES_, CL_, CL_, SA_, CW_),  # init
        (CL_, CL_, CW_, CE_, ES_, SS_, SR_, SA_, CL_),  # init_ack
        (CL_, CL_, CL_, CL_, CL_, CL_, CL_, CL_, CL_),  # abort
        (CL_, CL_, CW_, CE_, SS_, SS_, SR_, SA_, CL_),  # shutdown
        (SA_, CL_, CW_, CE_, ES_, SA_, SA_, SA_, SA_),  # shutdown_ack
        (CL_, CL_, CW_, CE_, ES_, SS_, SR_, SA_, CL_),  # error
        (CL_, CL_, CE_, CE_, ES_, SS_, SR_, SA_, CL_),  # cookie_echo
        (CL_, CL_, CW_, ES_, ES_, SS_, SR_, SA_, CL_),  # cookie_ack
        (CL_, CL_, CW_, CE_, ES_, SS_, SR_, CL_, CL_),  # shutdown_comp
        (HS_, CL_, CW_, CE_, ES_, SS_, SR_, SA_, HS_),  # heartbeat
        (CL_, CL_, CW_, CE_, ES_, SS_, SR_, SA_, HS_),  # heartbeat_ack
    ),
    (  # REPLY
        (IV_, CL_, CW_, CE_, ES_, SS_, SR_, SA_, IV_),  # init
        (IV_, CW_, CW_, CE_, ES_, SS_, SR_, SA_, IV_),  # init_ack
        (IV_, CL_, CL_, CL_, CL_, CL_, CL_, CL_, IV_),  # abort
        (IV_, CL_, CW_, CE_, SR_, SS_, SR_, SA_, IV_),  # shutdown
        (IV_, CL_, CW_, CE_, ES_, SA_, SA_, SA_, IV_),  # shutdown_ack
        (IV_, CL_, CW_, CL_, ES_, SS_, SR_, SA_, IV_),  # error
        (IV_, CL_, CE_, CE_, ES_, SS_, SR_, SA_, IV_),  # cookie_echo
        (IV_, CL_, CW_, ES_, ES_, SS_, SR_, SA_, IV_),  # cookie_ack
        (IV_, CL_, CW_, CE_, ES_, SS_, SR_, CL_, IV_),  # shutdown_comp
        (IV_, CL_, CW_, CE_, ES_, SS_, SR_, SA_, HS_),  # heartbeat
        (IV_, CL_, CW_, CE_, ES_, SS_, SR_, SA_, ES_),  # heartbeat_ack
    ),
)
# bits of the chunk map that exempt a packet from the plain verification-tag check
_VTAG_EXEMPT: Final = sum(1 << c for c in (CID_INIT, CID_SHUTDOWN_COMPLETE, CID_COOKIE_ECHO, CID_ABORT,
    CID_SHUTDOWN_ACK,
                                    CID_HEARTBEAT, CID_HEARTBEAT_ACK))
_OOTB_DISCARD: Final = (1 << CID_ABORT) | (1 << CID_SHUTDOWN_COMPLETE) | (1 << CID_COOKIE_ACK)
_HOOK_PRE_ROUTING: Final = Hook.PRE_ROUTING


def _u32(data: bytes | bytearray, pos: int) -> int:
    return int.from_bytes(data[pos:pos + 4], "big")


def sctp_chunks(data: bytes | bytearray, dataoff: int) -> list[tuple[int, int, int]]:
    """`for_each_sctp_chunk`: (offset, type, flags) of each chunk whose header is whole; a chunk of length 0
    ends the walk (after it is listed, as the kernel's loop body sees it before the length is added)."""
    out = []
    offset = dataoff + SCTPH_LEN
    n = len(data)
    while offset < n and offset + SCTP_CHUNK_HDR_LEN <= n:
        length = (data[offset + SCTP_CHUNK_LENGTH] << 8) | data[offset + SCTP_CHUNK_LENGTH + 1]
        out.append((offset, data[offset + SCTP_CHUNK_TYPE], data[offset + SCTP_CHUNK_FLAGS]))
        if not length:
            break
        offset += (length + 3) & ~3
    return out


def do_basic_checks(data: bytes | bytearray, chunks: list[tuple[int, int, int]]) -> int | None:
    """Mirrors `do_basic_checks()`: the chunk map (one bit per chunk type seen), or None when the chunks are
    malformed (none, one of length 0, COOKIE_ECHO/COOKIE_ACK not first, INIT/INIT_ACK/SHUTDOWN_COMPLETE not
    alone)."""
    if not chunks:
        return None
    chunkmap = 0
    flag = False
    for count, (offset, ctype, _flags) in enumerate(chunks):
        if ctype in (CID_INIT, CID_INIT_ACK, CID_SHUTDOWN_COMPLETE):
            flag = True
        length = (data[offset + SCTP_CHUNK_LENGTH] << 8) | data[offset + SCTP_CHUNK_LENGTH + 1]
        if ((ctype in (CID_COOKIE_ACK, CID_COOKIE_ECHO) or flag) and count) or not length:
            return None
        chunkmap |= 1 << ctype
    return chunkmap


def sctp_new_state(direction: int, cur_state: int, chunk_type: int) -> int:
    """Mirrors `sctp_new_state()`: chunks without a row keep the state."""
    row = _ROW.get(chunk_type)
    if row is None:
        return cur_state
    return SCTP_CONNTRACKS[direction][row][cur_state]


def sctp_error(skb: Skb, dataoff: int, hook: Hook, checksum: bool) -> str | None:
    """Mirrors `sctp_error()`: the INVALID reason (the kernel's log text), or None. The CRC32c is checked at
    PRE_ROUTING only, and not on a CHECKSUM_PARTIAL packet."""
    data = skb.data
    if len(data) < dataoff + SCTPH_LEN:
        return "nf_ct_sctp: short packet"
    if hook == _HOOK_PRE_ROUTING and checksum and not skb.csum_partial:
        seg = bytearray(data[dataoff:])
        seg[SCTPH_CHECKSUM:SCTPH_CHECKSUM + 4] = b"\0\0\0\0"
        if crc32c(seg).to_bytes(4, "little") != data[dataoff + SCTPH_CHECKSUM:dataoff + SCTPH_CHECKSUM + 4]:
            return "nf_ct_sctp: bad CRC"
    return None


def sctp_new(sc: SctpConntrack, data: bytes | bytearray, vtag: int, chunks: list[tuple[int, int, int]]) -> bool:
    """Mirrors `sctp_new()`: a new flow's chunks must each be able to open one; note the tags to expect."""
    for offset, ctype, _flags in chunks:
        new_state = sctp_new_state(0, S_NONE, ctype)
        if new_state in (S_NONE, S_MAX):
            return False
        if ctype == CID_INIT:
            if vtag:  # §8.5.1 (A)
                return False
            if len(data) < offset + SCTP_CHUNK_HDR_LEN + _INITHDR_LEN:
                return False
            sc.vtag[1] = _u32(data, offset + SCTP_CHUNK_HDR_LEN)
        elif ctype == CID_HEARTBEAT:
            sc.vtag[0] = vtag
        else:  # an OOTB SHUTDOWN_ACK expects a SHUTDOWN_COMPLETE back, others an ABORT (§8.4 (5), (8))
            sc.vtag[1] = vtag
        sc.state = S_NONE
    return True


def _vtag_special(sc: SctpConntrack, ctype: int, cflags: int, vtag: int, d: int) -> bool:
    """The §8.5.1 checks of INIT, ABORT, SHUTDOWN_COMPLETE and COOKIE_ECHO in `nf_conntrack_sctp_packet`."""
    if ctype == CID_INIT:
        return vtag == 0  # (A)
    if ctype in (CID_ABORT, CID_SHUTDOWN_COMPLETE):  # (B), (C): own tag, or the peer's with the T flag
        return vtag == sc.vtag[1 - d if cflags & SCTP_CHUNK_FLAG_T else d]
    if ctype == CID_COOKIE_ECHO:
        return vtag == sc.vtag[d]  # (D)
    return True


def sctp_packet(conn: Conn, skb: Skb, dataoff: int, direction: int, hook: Hook, now: float,
                cfg: ConntrackConfig) -> int:
    """Mirrors `nf_conntrack_sctp_packet()`: NF_ACCEPT, or NF_INVALID with `skb.note` saying why."""
    reason = sctp_error(skb, dataoff, hook, cfg.checksum)
    if reason is not None:
        skb.note = reason
        return NF_INVALID
    data = skb.data
    chunks = sctp_chunks(data, dataoff)
    chunkmap = do_basic_checks(data, chunks)
    if chunkmap is None:
        skb.note = "nf_ct_sctp: basic checks failed"
        return NF_INVALID
    vtag = _u32(data, dataoff + SCTPH_VTAG)
    confirmed = bool(conn.status & CtStatus.CONFIRMED)
    sc = conn.sctp
    if sc is None or not confirmed:
        if chunkmap & _OOTB_DISCARD:  # §8.4: an out-of-the-blue packet with these is discarded
            skb.note = "nf_ct_sctp: new flow starting with ABORT, SHUTDOWN_COMPLETE or COOKIE_ACK"
            return NF_INVALID
        sc = SctpConntrack()
        if not sctp_new(sc, data, vtag, chunks):
            skb.note = "nf_ct_sctp: invalid new flow"
            return NF_INVALID
        conn.sctp = sc
    d = direction
    if not chunkmap & _VTAG_EXEMPT and vtag != sc.vtag[d]:
        skb.note = "nf_ct_sctp: verification tag check failed"
        return NF_INVALID
    new_state = S_NONE
    ignore = False
    for offset, ctype, cflags in chunks:
        if not _vtag_special(sc, ctype, cflags, vtag, d):
            skb.note = "nf_ct_sctp: verification tag check failed"
            return NF_INVALID
        if ctype == CID_COOKIE_ACK:
            sc.init[d] = sc.init[1 - d] = False
        elif ctype in (CID_HEARTBEAT, CID_HEARTBEAT_ACK):
            if sc.vtag[d] == 0:
                sc.vtag[d] = vtag
            elif vtag != sc.vtag[d]:
                if chunkmap & (1 << CID_DATA) or ignore:
                    skb.note = "nf_ct_sctp: heartbeat with another verification tag"
                    return NF_INVALID
                if ctype == CID_HEARTBEAT:  # a path of another association: let it pass, unrefreshed
                    sc.flags |= SCTP_FLAG_HEARTBEAT_VTAG_FAILED
                    sc.last_dir = d
                    ignore = True
                    continue
                if not sc.flags & SCTP_FLAG_HEARTBEAT_VTAG_FAILED or sc.last_dir == d:
                    skb.note = "nf_ct_sctp: heartbeat ack with another verification tag"
                    return NF_INVALID
                sc.flags &= ~SCTP_FLAG_HEARTBEAT_VTAG_FAILED  # the peer restarted: take its new tags
                sc.vtag[d] = vtag
                sc.vtag[1 - d] = 0
            elif sc.flags & SCTP_FLAG_HEARTBEAT_VTAG_FAILED:
                sc.flags &= ~SCTP_FLAG_HEARTBEAT_VTAG_FAILED
        old_state = sc.state
        new_state = sctp_new_state(d, old_state, ctype)
        if new_state == S_MAX:
            skb.note = f"nf_ct_sctp: invalid chunk {ctype} in state {SCTP_CONNTRACK_NAMES[old_state]}"
            return NF_INVALID
        if ctype in (CID_INIT, CID_INIT_ACK):
            if len(data) < offset + SCTP_CHUNK_HDR_LEN + _INITHDR_LEN:
                skb.note = "nf_ct_sctp: short INIT chunk"
                return NF_INVALID
            init_tag = _u32(data, offset + SCTP_CHUNK_HDR_LEN)
            if ctype == CID_INIT:
                if sc.init[d] and sc.init[1 - d]:
                    sc.init[1 - d] = False
                sc.init[d] = True
                sc.vtag[1 - d] = init_tag
                # an INIT retransmitted in CLOSED does not renew the timeout (port reuse cannot keep the
                # entry, and its NAT binding, alive for ever)
                if new_state == S_CLOSED and old_state == S_CLOSED and confirmed:
                    ignore = True
            else:
                peer = sc.vtag[1 - d]
                if (not sc.init[1 - d] and peer and peer != init_tag) or (
                        sc.init[d] and sc.init[1 - d] and peer != init_tag):  # collision
                    skb.note = "nf_ct_sctp: INIT_ACK with an unexpected tag"
                    return NF_INVALID
                sc.vtag[1 - d] = init_tag
        sc.state = new_state
        if old_state != new_state and new_state == S_ESTABLISHED:
            conn.status |= CtStatus.ASSURED
    if ignore:
        return NF_ACCEPT  # allowed, not refreshed
    nf_ct_refresh_acct(conn, direction, len(data), cfg.sctp_timeouts()[new_state], now, cfg.acct)
    return NF_ACCEPT


def sctp_can_early_drop(conn: Conn) -> bool:
    """Mirrors `sctp_can_early_drop()`: an association shutting down may be dropped when the table is full."""
    sc = conn.sctp
    return sc is not None and sc.state in (S_SHUTDOWN_SENT, S_SHUTDOWN_RECD, S_SHUTDOWN_ACK_SENT)
