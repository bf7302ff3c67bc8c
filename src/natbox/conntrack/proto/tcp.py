"""The TCP tracker: state table, window tracking and timeouts (§3.2). Mirrors nf_conntrack_proto_tcp.c.

Functions mirror, one to one: `get_conntrack_index`, `segment_seq_plus_len`, `tcp_options`, `tcp_sack`,
`tcp_init_sender`, `tcp_in_window`, `nf_tcp_handle_invalid`, `tcp_error`, `tcp_new`, `tcp_can_early_drop`,
`nf_ct_tcp_state_reset` and `nf_conntrack_tcp_packet` (here `tcp_packet`). Sequence numbers are u32 and
compared with the kernel's `before()`/`after()` (signed 32-bit difference).

NAT sequence adjustment (seqadj, only with helpers) is not modelled: its offset is always 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from natbox.conntrack.config import TCP_CONNTRACK_RETRANS, TCP_CONNTRACK_UNACK
from natbox.conntrack.conn import (
    IP_CT_EXP_CHALLENGE_ACK,
    IP_CT_TCP_FLAG_BE_LIBERAL,
    IP_CT_TCP_FLAG_CLOSE_INIT,
    IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED,
    IP_CT_TCP_FLAG_MAXACK_SET,
    IP_CT_TCP_FLAG_SACK_PERM,
    IP_CT_TCP_FLAG_WINDOW_SCALE,
    IP_CT_TCP_SIMULTANEOUS_OPEN,
    TcpConntrack,
    TcpSeen,
)
from natbox.conntrack.proto.generic import NF_INVALID, NF_REPEAT_LOOKUP, nf_ct_kill_acct, nf_ct_refresh_acct
from natbox.conntrack.proto.udp import l4_checksum_ok
from natbox.netfilter import NF_ACCEPT, CtStatus, Hook, TcpState

if TYPE_CHECKING:
    from natbox.conntrack.config import ConntrackConfig
    from natbox.conntrack.conn import Conn
    from natbox.conntrack.table import ConntrackTable
    from natbox.skb import Skb

# enum members as module constants: `Enum.MEMBER` costs an attribute lookup through EnumType per use
_HOOK_PRE_ROUTING = Hook.PRE_ROUTING

__all__ = [
    "TCP_CONNTRACKS",
    "TCP_CONNTRACK_NAMES",
    "TCP_VALID_FLAGS",
    "get_conntrack_index",
    "tcp_can_early_drop",
    "tcp_error",
    "tcp_packet",
    "tcp_packet_established",
]

# `tcp_conntrack_names[]`: what `conntrack -L` and /proc print for each TcpState.
TCP_CONNTRACK_NAMES: tuple[str, ...] = (
    "NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE",
    "SYN_SENT2",
)

# --- TCP header flag bits (tcp_flag_byte) ------------------------------------------------------
TH_FIN = 0x01
TH_SYN = 0x02
TH_RST = 0x04
TH_PSH = 0x08
TH_ACK = 0x10
TH_URG = 0x20
TH_ECE = 0x40
TH_CWR = 0x80
_FLAG_NAMES = ((TH_SYN, "SYN"), (TH_RST, "RST"), (TH_FIN, "FIN"), (TH_PSH, "PSH"), (TH_ACK, "ACK"), (TH_URG, "URG"))

# `tcp_valid_flags[]`: after masking ECE, CWR and PSH only these combinations are valid (§3.2 tcp_error).
TCP_VALID_FLAGS = frozenset({
    TH_SYN,
    TH_SYN | TH_URG,
    TH_SYN | TH_ACK,
    TH_RST,
    TH_RST | TH_ACK,
    TH_FIN | TH_ACK,
    TH_FIN | TH_ACK | TH_URG,
    TH_ACK,
    TH_ACK | TH_URG,
})
_VALID_BY_BYTE = tuple((b & ~(TH_ECE | TH_CWR | TH_PSH)) in TCP_VALID_FLAGS for b in range(256))

# --- flag classes (`enum tcp_bit_set`) ---------------------------------------------------------
TCP_SYN_SET = 0
TCP_SYNACK_SET = 1
TCP_FIN_SET = 2
TCP_ACK_SET = 3
TCP_RST_SET = 4
TCP_NONE_SET = 5
_INDEX_NAMES = ("syn", "synack", "fin", "ack", "rst", "none")


def get_conntrack_index(flags: int) -> int:
    """Mirrors `get_conntrack_index()`: RST, then SYN(+ACK), then FIN, then ACK, else none."""
    if flags & TH_RST:
        return TCP_RST_SET
    if flags & TH_SYN:
        return TCP_SYNACK_SET if flags & TH_ACK else TCP_SYN_SET
    if flags & TH_FIN:
        return TCP_FIN_SET
    if flags & TH_ACK:
        return TCP_ACK_SET
    return TCP_NONE_SET


_INDEX_BY_BYTE = tuple(get_conntrack_index(b) for b in range(256))

# --- the state table (`tcp_conntracks[dir][index][state]`, Linux 6.x) --------------------------
NO = TcpState.NONE
SS = TcpState.SYN_SENT
SR = TcpState.SYN_RECV
ES = TcpState.ESTABLISHED
FW = TcpState.FIN_WAIT
CW = TcpState.CLOSE_WAIT
LA = TcpState.LAST_ACK
TW = TcpState.TIME_WAIT
CL = TcpState.CLOSE
S2 = TcpState.SYN_SENT2
IV = 10  # TCP_CONNTRACK_MAX: invalid, the packet is INVALID and the state is unchanged
IG = 11  # TCP_CONNTRACK_IGNORE: accepted, no state change and no refresh

TCP_CONNTRACKS: tuple[tuple[tuple[int, ...], ...], ...] = (
    (  # ORIGINAL
        #  NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        (SS, SS, IG, IG, IG, IG, IG, SS, SS, S2),  # syn: SS->SS retransmit; SR..LA ignored (we may be out of
        #        sync; the receiver answers with RST or SYN/ACK); TW/CL -> SS is a reopen (RFC 1122)
        (IV, IV, SR, IV, IV, IV, IV, IV, IV, SR),  # synack: SR->SR late retransmitted SYN/ACK in simultaneous
        #        open; S2->SR SYN/ACK sent to SYN2; a client never sends SYN then SYN/ACK (SS->IV)
        (IV, IV, FW, FW, LA, LA, LA, TW, CL, IV),  # fin: no FIN before the SYN/ACK reply (SS->IV)
        (ES, IV, ES, ES, CW, CW, TW, TW, CL, IV),  # ack: NO->ES is the loose pickup; SS->IV no SYN/ACK seen;
        #        LA->TW is the last ACK (unless a challenge ACK, see tcp_packet)
        (IV, CL, CL, CL, CL, CL, CL, CL, CL, CL),  # rst
        (IV, IV, IV, IV, IV, IV, IV, IV, IV, IV),  # none
    ),
    (  # REPLY
        #  NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        (IV, S2, IV, IV, IV, IV, IV, SS, IV, S2),  # syn: SS->S2 simultaneous open; TW->SS reopen by a server
        #        that switched role; NO is never reached in the reply direction
        (IV, SR, IG, IG, IG, IG, IG, IG, IG, SR),  # synack: SS->SR the normal open; later SYN/ACKs are ignored
        #        (may answer an ignored SYN: see the re-sync in tcp_packet)
        (IV, IV, FW, FW, LA, LA, LA, TW, CL, IV),  # fin
        (IV, IG, SR, ES, CW, CW, TW, TW, CL, IG),  # ack: SS->IG half-open or RFC 5961 challenge ACK;
        #        SR->SR may answer a late resent SYN (the client's ACK, not the server's, establishes)
        (IV, CL, CL, CL, CL, CL, CL, CL, CL, CL),  # rst
        (IV, IV, IV, IV, IV, IV, IV, IV, IV, IV),  # none
    ),
)

MAXACKWINCONST = 66000
TCP_MAX_WSCALE = 14
_U32 = 0xFFFFFFFF
_HALF = 0x80000000

# TCP option kinds / lengths
TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_WINDOW = 3
TCPOPT_SACK_PERM = 4
TCPOPT_SACK = 5
TCPOPT_TIMESTAMP = 8
TCPOLEN_WINDOW = 3
TCPOLEN_SACK_PERM = 2
TCPOLEN_SACK_BASE = 2
TCPOLEN_SACK_PERBLOCK = 8
TCPOLEN_TSTAMP_ALIGNED = 12
_TSTAMP_FASTPATH = bytes((TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, 10))

# tcp_in_window results (`enum nf_ct_tcp_action`)
NFCT_TCP_IGNORE = 0
NFCT_TCP_INVALID = 1
NFCT_TCP_ACCEPT = 2

_SEEN_REPLY = CtStatus.SEEN_REPLY
_ASSURED = CtStatus.ASSURED
_CONFIRMED = CtStatus.CONFIRMED
_DYING = CtStatus.DYING
_FIXED_TIMEOUT = CtStatus.FIXED_TIMEOUT
_STATES = tuple(TcpState)


def _before(a: int, b: int) -> bool:
    """`before(a, b)`: (s32)(a - b) < 0."""
    return ((a - b) & _U32) >= _HALF


def _after(a: int, b: int) -> bool:
    """`after(a, b)`: before(b, a)."""
    return ((b - a) & _U32) >= _HALF


def flag_names(flags: int) -> str:
    """`SYN+FIN` style names of the flags set (for notes)."""
    names = [name for bit, name in _FLAG_NAMES if flags & bit]
    return "+".join(names) if names else "none"


def segment_seq_plus_len(seq: int, skb_len: int, dataoff: int, doff: int, flags: int) -> int:
    """Mirrors `segment_seq_plus_len()`: seq + payload length (+1 for SYN, +1 for FIN), mod 2^32."""
    return (seq + skb_len - dataoff - doff + (1 if flags & TH_SYN else 0) + (1 if flags & TH_FIN else 0)) & _U32


def tcp_options(data: bytearray, dataoff: int, doff: int, state: TcpSeen) -> None:
    """Mirrors `tcp_options()`: read SACK_PERM and WSCALE (capped at 14) into `state`.

    Resets `td_scale` and every flag but BE_LIBERAL first, unless there are no options at all.
    """
    length = doff - 20
    if not length:
        return
    state.td_scale = 0
    state.flags &= IP_CT_TCP_FLAG_BE_LIBERAL
    ptr = dataoff + 20
    while length > 0:
        opcode = data[ptr]
        ptr += 1
        if opcode == TCPOPT_EOL:
            return
        if opcode == TCPOPT_NOP:
            length -= 1
            continue
        if length < 2:
            return
        opsize = data[ptr]
        ptr += 1
        if opsize < 2:  # "silly options"
            return
        if opsize > length:  # don't parse partial options
            return
        if opcode == TCPOPT_SACK_PERM and opsize == TCPOLEN_SACK_PERM:
            state.flags |= IP_CT_TCP_FLAG_SACK_PERM
        elif opcode == TCPOPT_WINDOW and opsize == TCPOLEN_WINDOW:
            state.td_scale = min(data[ptr], TCP_MAX_WSCALE)  # RFC 1323
            state.flags |= IP_CT_TCP_FLAG_WINDOW_SCALE
        ptr += opsize - 2
        length -= opsize


def tcp_sack(data: bytes | bytearray, dataoff: int, doff: int, sack: int) -> int:
    """Mirrors `tcp_sack()`: the highest right edge of the first SACK option's blocks, if after `sack`."""
    length = doff - 20
    if not length:
        return sack
    ptr = dataoff + 20
    if length == TCPOLEN_TSTAMP_ALIGNED and data[ptr : ptr + 4] == _TSTAMP_FASTPATH:
        return sack  # fast path for a timestamp-only option
    while length > 0:
        opcode = data[ptr]
        ptr += 1
        if opcode == TCPOPT_EOL:
            return sack
        if opcode == TCPOPT_NOP:
            length -= 1
            continue
        if length < 2:
            return sack
        opsize = data[ptr]
        ptr += 1
        if opsize < 2 or opsize > length:
            return sack
        if (
            opcode == TCPOPT_SACK
            and opsize >= TCPOLEN_SACK_BASE + TCPOLEN_SACK_PERBLOCK
            and not (opsize - TCPOLEN_SACK_BASE) % TCPOLEN_SACK_PERBLOCK
        ):
            for i in range(0, opsize - TCPOLEN_SACK_BASE, TCPOLEN_SACK_PERBLOCK):
                edge = int.from_bytes(data[ptr + i + 4 : ptr + i + 8], "big")
                if _after(edge, sack):
                    sack = edge
            return sack
        ptr += opsize - 2
        length -= opsize
    return sack


def _tcp_init_sender(
    sender: TcpSeen, receiver: TcpSeen, data: bytearray, dataoff: int, doff: int, end: int, win: int, direction: int
) -> None:
    """Mirrors `tcp_init_sender()`: a SYN/ACK (or a reply-direction SYN) initialises its sender."""
    sender.td_end = end
    sender.td_maxend = end
    sender.td_maxwin = win if win else 1
    tcp_options(data, dataoff, doff, sender)
    # RFC 1323: both sides must send the Window Scale option to enable scaling in either direction.
    if direction == 1 and not (
        sender.flags & IP_CT_TCP_FLAG_WINDOW_SCALE and receiver.flags & IP_CT_TCP_FLAG_WINDOW_SCALE
    ):
        sender.td_scale = 0
        receiver.td_scale = 0


def _log_invalid(skb: Skb, sender: TcpSeen, cfg: ConntrackConfig, result: int, note: str) -> int:
    """Mirrors `nf_tcp_log_invalid()`: with be_liberal (sysctl or the sender's flag) every failure accepts."""
    if sender.flags & IP_CT_TCP_FLAG_BE_LIBERAL or cfg.tcp_be_liberal:
        return NFCT_TCP_ACCEPT
    skb.note = ("tcp: " if result == NFCT_TCP_INVALID else "tcp: ignored: ") + note
    return result


def tcp_in_window(
    conn: Conn, tcp: TcpConntrack, direction: int, index: int, skb: Skb, dataoff: int, doff: int, flags: int,
    seq: int, ack: int, win_raw: int, cfg: ConntrackConfig,
) -> int:
    """Mirrors `tcp_in_window()`: the four window checks of §3.2 and the window bookkeeping.

    Returns NFCT_TCP_ACCEPT, NFCT_TCP_IGNORE or NFCT_TCP_INVALID.
    """
    sender = tcp.seen[direction]
    receiver = tcp.seen[1 - direction]
    data = skb.data
    win = win_raw
    end = segment_seq_plus_len(seq, len(data), dataoff, doff, flags)
    sack = ack
    if receiver.flags & IP_CT_TCP_FLAG_SACK_PERM:
        sack = tcp_sack(data, dataoff, doff, sack)
    # (NAT sequence offsets would be subtracted from ack and sack here; natbox has no seqadj.)

    if sender.td_maxwin == 0:
        # Initialize sender data.
        if flags & TH_SYN:
            _tcp_init_sender(sender, receiver, data, dataoff, doff, end, win, direction)
            if not flags & TH_ACK:
                return NFCT_TCP_ACCEPT  # simultaneous open
        else:
            # We are in the middle of a connection; its history is lost for us.
            sender.td_end = end
            swin = (win << sender.td_scale) & _U32
            sender.td_maxwin = swin if swin else 1
            sender.td_maxend = (end + sender.td_maxwin) & _U32
            if receiver.td_maxwin == 0:
                # No traffic seen the other way yet: tweak tracking so III and IV pass until it happens.
                receiver.td_end = receiver.td_maxend = sack
            elif sack == ((receiver.td_end + 1) & _U32):
                receiver.td_end = (receiver.td_end + 1) & _U32  # likely a reply to a keepalive; for III
    elif flags & TH_SYN and (((sender.td_end - end) & _U32) >= _HALF) and tcp.state in (SS, SR):
        # RFC 793: a reinitialised TCP may reuse the connection with larger sequence numbers.
        _tcp_init_sender(sender, receiver, data, dataoff, doff, end, win, direction)
        if direction == 1 and not flags & TH_ACK:
            return NFCT_TCP_ACCEPT

    if not flags & TH_ACK:
        ack = sack = receiver.td_end  # no ACK: pretend it was set and OK
    elif flags & (TH_ACK | TH_RST) == (TH_ACK | TH_RST) and ack == 0:
        ack = sack = receiver.td_end  # broken stacks setting ACK in RST with a zero ack value

    if flags & TH_RST and seq == 0 and tcp.state == SS:
        seq = end = sender.td_end  # RST answering a SYN

    # the four checks read the window state into locals (nothing below writes it before they are done)
    s_end, s_maxend, s_maxwin = sender.td_end, sender.td_maxend, sender.td_maxwin
    r_end, r_maxwin = receiver.td_end, receiver.td_maxwin
    maxackwindow = s_maxwin if s_maxwin > MAXACKWINCONST else MAXACKWINCONST

    # I. seq <= sender.td_maxend
    if not (((seq - ((s_maxend + 1) & _U32)) & _U32) >= _HALF):
        overshot = (end - s_maxend + 1) & _U32
        ack_ok = (((((r_end - maxackwindow - 1) & _U32) - sack) & _U32) >= _HALF)
        in_recv_win = bool(r_maxwin) and (((((s_end - r_maxwin - 1) & _U32) - end) & _U32) >= _HALF)
        if (in_recv_win and ack_ok and overshot <= r_maxwin
                and (((sack - ((r_end + 1) & _U32)) & _U32) >= _HALF)):
            # TCPs that send more than the receive window allows: let td_end follow, so the peer's ACK of
            # this data does not trip "ACK is over upper bound" later.
            sender.td_end = end
            sender.flags |= IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED
            return _log_invalid(skb, sender, cfg, NFCT_TCP_IGNORE, f"{overshot} bytes more than expected")
        return _log_invalid(
            skb, sender, cfg, NFCT_TCP_INVALID,
            f"SEQ is over upper bound {(s_maxend + 1) & _U32} (over the window of the receiver)",
        )

    # III. sack <= receiver.td_end
    if not (((sack - ((r_end + 1) & _U32)) & _U32) >= _HALF):
        return _log_invalid(
            skb, sender, cfg, NFCT_TCP_INVALID,
            f"ACK is over upper bound {(r_end + 1) & _U32} (ACKed data not seen yet)",
        )

    # II. end >= sender.td_end - receiver.td_maxwin (when the receiver's window is known)
    lower = (s_end - r_maxwin - 1) & _U32
    if r_maxwin and not (((lower - end) & _U32) >= _HALF):
        return _log_invalid(
            skb, sender, cfg, NFCT_TCP_IGNORE,
            f"SEQ is under lower bound {lower} (already ACKed data retransmitted)",
        )
    # IV. sack >= receiver.td_end - MAXACKWINDOW(sender)
    lower = (r_end - maxackwindow - 1) & _U32
    if not (((lower - sack) & _U32) >= _HALF):
        return _log_invalid(
            skb, sender, cfg, NFCT_TCP_IGNORE, f"ignored ACK under lower bound {lower} (possible overly delayed)"
        )

    # Take into account window scaling (RFC 1323).
    if not flags & TH_SYN:
        win = (win << sender.td_scale) & _U32

    # Update sender data.
    swin = (win + sack - ack) & _U32
    sender.td_maxwin = max(sender.td_maxwin, swin)
    if (((sender.td_end - end) & _U32) >= _HALF):
        sender.td_end = end
        sender.flags |= IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED
    if flags & TH_ACK:
        if not sender.flags & IP_CT_TCP_FLAG_MAXACK_SET:
            sender.td_maxack = ack
            sender.flags |= IP_CT_TCP_FLAG_MAXACK_SET
        elif (((sender.td_maxack - ack) & _U32) >= _HALF):
            sender.td_maxack = ack

    # Update receiver data.
    if receiver.td_maxwin != 0 and (((sender.td_maxend - end) & _U32) >= _HALF):
        receiver.td_maxwin = (receiver.td_maxwin + end - sender.td_maxend) & _U32
    if (((((receiver.td_maxend - 1) & _U32) - ((sack + win) & _U32)) & _U32) >= _HALF):
        receiver.td_maxend = (sack + win) & _U32
        if win == 0:
            receiver.td_maxend = (receiver.td_maxend + 1) & _U32
    if ack == receiver.td_end:
        receiver.flags &= ~IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED

    # Check retransmissions.
    if index == TCP_ACK_SET:
        _check_retrans(tcp, direction, seq, ack, end, win_raw)
    return NFCT_TCP_ACCEPT


def _check_retrans(tcp: TcpConntrack, direction: int, seq: int, ack: int, end: int, win_raw: int) -> None:
    """`tcp_in_window()`'s "Check retransmissions" for an ACK: the same segment again counts one more."""
    if (tcp.last_dir == direction and tcp.last_seq == seq and tcp.last_ack == ack and tcp.last_end == end
            and tcp.last_win == win_raw):
        tcp.retrans += 1
    else:
        tcp.last_dir = direction
        tcp.last_seq = seq
        tcp.last_ack = ack
        tcp.last_end = end
        tcp.last_win = win_raw
        tcp.retrans = 0


def nf_tcp_handle_invalid(
    conn: Conn, tcp: TcpConntrack, direction: int, index: int, now: float, cfg: ConntrackConfig
) -> None:
    """Mirrors `nf_tcp_handle_invalid()`: an out-of-window FIN/RST answering the peer's FIN/RST on an
    ASSURED ct lowers its timeout to `unacknowledged` (300 s) when more than 120 s remain."""
    if not conn.status & _ASSURED or conn.status & _FIXED_TIMEOUT:
        return
    if index not in (TCP_RST_SET, TCP_FIN_SET):
        return
    if tcp.last_dir != direction and tcp.last_index in (TCP_FIN_SET, TCP_RST_SET):
        expires = max(conn.timeout - now, 0.0)
        if expires < 120:
            return
        timeout = cfg.tcp_timeout_unacknowledged
        if expires > timeout:
            conn.timeout = now + timeout
    else:
        tcp.last_index = index
        tcp.last_dir = direction


def tcp_error(skb: Skb, dataoff: int, hook: Hook, cfg: ConntrackConfig) -> str | None:
    """Mirrors `tcp_error()` (plus the header-pointer check before it): the INVALID reason, or None."""
    data = skb.data
    tcplen = len(data) - dataoff
    if tcplen < 20:
        return "tcp: short packet"
    doff = (data[dataoff + 12] >> 4) * 4
    if doff < 20 or tcplen < doff:
        return "tcp: truncated packet"
    # nf_ip_checksum: a CHECKSUM_PARTIAL packet (from a local or virtio sender) is not verified
    if cfg.checksum and hook == _HOOK_PRE_ROUTING and not skb.csum_partial and not l4_checksum_ok(data, dataoff, 6):
        return "tcp: bad checksum"
    flags = data[dataoff + 13]
    if not _VALID_BY_BYTE[flags]:
        return "tcp: invalid flag combination " + flag_names(flags & ~(TH_ECE | TH_CWR | TH_PSH))
    return None


def tcp_new(
    conn: Conn, skb: Skb, dataoff: int, doff: int, flags: int, seq: int, win: int, cfg: ConntrackConfig
) -> bool:
    """Mirrors `tcp_new()`: only a SYN (SYN_SENT) or, with `tcp_loose`, an ACK (picked up) creates a ct."""
    index = _INDEX_BY_BYTE[flags]
    new_state = TCP_CONNTRACKS[0][index][NO]
    if new_state >= IV:
        skb.note = f"tcp: invalid new ({flag_names(flags)} cannot start a connection)"
        return False
    tcp = TcpConntrack()
    s0 = tcp.seen[0]
    s0.td_end = segment_seq_plus_len(seq, len(skb.data), dataoff, doff, flags)
    s0.td_maxwin = win if win else 1
    if new_state == SS:
        s0.td_maxend = s0.td_end
        tcp_options(skb.data, dataoff, doff, s0)
    elif not cfg.tcp_loose:
        skb.note = "tcp: not picking up a connection mid-stream (nf_conntrack_tcp_loose=0)"
        return False
    else:
        s0.td_maxend = (s0.td_end + s0.td_maxwin) & _U32
        # We assume SACK and liberal window checking to handle window scaling.
        s0.flags = tcp.seen[1].flags = IP_CT_TCP_FLAG_SACK_PERM | IP_CT_TCP_FLAG_BE_LIBERAL
    tcp.last_index = TCP_NONE_SET  # tcp_packet sets them
    conn.tcp = tcp
    return True


def tcp_can_early_drop(conn: Conn) -> bool:
    """Mirrors `tcp_can_early_drop()`: closing states may be evicted even when ASSURED (§2.7)."""
    tcp = conn.tcp
    return tcp is not None and tcp.state in (
        FW, LA, TW, CL, CW
    )


def _state_reset(state: TcpSeen) -> None:
    """Mirrors `nf_ct_tcp_state_reset()`."""
    state.td_end = 0
    state.td_maxend = 0
    state.td_maxwin = 0
    state.td_maxack = 0
    state.td_scale = 0
    state.flags &= IP_CT_TCP_FLAG_BE_LIBERAL


def _established(conn: Conn, tcp: TcpConntrack) -> bool:
    """`nf_conntrack_tcp_established()`: ESTABLISHED and ASSURED."""
    return tcp.state == ES and bool(conn.status & _ASSURED)


def tcp_packet(
    conn: Conn, skb: Skb, dataoff: int, direction: int, hook: Hook, now: float, table: ConntrackTable,
    cfg: ConntrackConfig,
) -> int:
    """Mirrors `nf_conntrack_tcp_packet()` (§3.2): validate, advance the state machine, choose the timeout.

    Returns NF_ACCEPT, NF_INVALID (-NF_ACCEPT) or NF_REPEAT_LOOKUP (-NF_REPEAT: the ct was killed for a
    reopen and the caller must look the packet up again).
    """
    reason = tcp_error(skb, dataoff, hook, cfg)
    if reason is not None:
        skb.note = reason
        return NF_INVALID
    data = skb.data
    doff = (data[dataoff + 12] >> 4) * 4
    flags = data[dataoff + 13]
    seq = int.from_bytes(data[dataoff + 4 : dataoff + 8], "big")
    ack_seq = int.from_bytes(data[dataoff + 8 : dataoff + 12], "big")
    win_raw = (data[dataoff + 14] << 8) | data[dataoff + 15]

    if not conn.status & _CONFIRMED and not tcp_new(conn, skb, dataoff, doff, flags, seq, win_raw, cfg):
        return NF_INVALID
    tcp = conn.tcp
    if tcp is None:  # a confirmed ct created by someone else without TCP state: treat as picked up
        tcp = conn.tcp = TcpConntrack()

    old_state = tcp.state
    index = _INDEX_BY_BYTE[flags]
    new_state = TCP_CONNTRACKS[direction][index][old_state]
    other = 1 - direction
    skip_window = False

    if new_state == SS and old_state >= TW:
        # RFC 1122 reopen from TIME_WAIT/CLOSE, or an aborted connection the client restarts.
        if (tcp.seen[direction].flags | tcp.seen[other].flags) & IP_CT_TCP_FLAG_CLOSE_INIT or (
            tcp.last_dir == direction and tcp.last_index == TCP_RST_SET
        ):
            conn.status |= _DYING
            table.delete(conn, now, reason="tcp reopen")
            return NF_REPEAT_LOOKUP
        new_state = IG  # fall through to the ignore handling
    if new_state == IG:
        if (
            index == TCP_SYNACK_SET
            and tcp.last_index == TCP_SYN_SET
            and tcp.last_dir != direction
            and ack_seq == tcp.last_end
        ):
            # This SYN/ACK acknowledges a SYN we ignored: client and server are in sync, we are not.
            # Get in sync from the annotated values.
            old_state = SS
            new_state = SR
            peer = tcp.seen[tcp.last_dir]
            peer.td_end = tcp.last_end
            peer.td_maxend = tcp.last_end
            peer.td_maxwin = tcp.last_win if tcp.last_win else 1
            peer.td_scale = tcp.last_wscale
            tcp.last_flags &= ~IP_CT_EXP_CHALLENGE_ACK
            peer.flags = tcp.last_flags
            _state_reset(tcp.seen[direction])
        else:
            tcp.last_index = index
            tcp.last_dir = direction
            tcp.last_seq = seq
            tcp.last_end = segment_seq_plus_len(seq, len(data), dataoff, doff, flags)
            tcp.last_win = win_raw
            if index == TCP_SYN_SET and direction == 0:
                # A SYN in ORIGINAL: note its options; a valid one gets a SYN/ACK and we re-sync above.
                seen = TcpSeen()
                tcp.last_flags = 0
                tcp.last_wscale = 0
                tcp_options(data, dataoff, doff, seen)
                if seen.flags & IP_CT_TCP_FLAG_WINDOW_SCALE:
                    tcp.last_flags |= IP_CT_TCP_FLAG_WINDOW_SCALE
                    tcp.last_wscale = seen.td_scale
                if seen.flags & IP_CT_TCP_FLAG_SACK_PERM:
                    tcp.last_flags |= IP_CT_TCP_FLAG_SACK_PERM
                # RFC 5961 challenge ACK potential: in LAST_ACK an ACK would look like the last ACK.
                if old_state == LA:
                    tcp.last_flags |= IP_CT_EXP_CHALLENGE_ACK
            if old_state == SS and index == TCP_ACK_SET and direction == 1:
                tcp.last_ack = ack_seq  # possible challenge ACK reply to the SYN
            return NF_ACCEPT  # ignored: no state change, no refresh
    elif new_state == IV:
        skb.note = (
            f"tcp: invalid {_INDEX_NAMES[index]} in dir {'reply' if direction else 'original'}, "
            f"state {TCP_CONNTRACK_NAMES[old_state]}"
        )
        return NF_INVALID
    elif new_state == TW:
        # RFC 5961: a challenge ACK to a spurious SYN must not be taken as the ACK of the last FIN.
        if (
            old_state == LA
            and index == TCP_ACK_SET
            and tcp.last_dir != direction
            and tcp.last_index == TCP_SYN_SET
            and tcp.last_flags & IP_CT_EXP_CHALLENGE_ACK
        ):
            tcp.last_flags &= ~IP_CT_EXP_CHALLENGE_ACK
            return NF_ACCEPT  # challenge ACK: don't change state
    elif new_state == S2:
        tcp.last_flags |= IP_CT_TCP_SIMULTANEOUS_OPEN  # the table cannot express simultaneous open
    elif new_state == SR:
        if direction == 1 and index == TCP_ACK_SET and tcp.last_flags & IP_CT_TCP_SIMULTANEOUS_OPEN:
            new_state = ES
    elif new_state == CL and index == TCP_RST_SET:
        if tcp_can_early_drop(conn):
            # Closing: the tuple may already be reused; window data is stale. Skip validation.
            skip_window = True
        else:
            checked = False
            # td_maxack might be outdated if we let a SYN through earlier
            if tcp.seen[other].flags & IP_CT_TCP_FLAG_MAXACK_SET and tcp.last_index != TCP_SYN_SET:
                established = _established(conn, tcp)
                maxack = tcp.seen[other].td_maxack
                if seq == 0 and not established:
                    checked = True  # most likely the answer to a SYN we let through
                elif _before(seq, maxack) and not cfg.tcp_ignore_invalid_rst:
                    skb.note = "tcp: invalid rst"
                    return NF_INVALID
                elif not established or seq == maxack:
                    checked = True
                elif tcp.last_index == TCP_ACK_SET and tcp.last_dir == direction and seq == tcp.last_end:
                    checked = True  # RST part of a data+RST train
                else:
                    new_state = old_state  # keep ESTABLISHED to allow a challenge ACK
            if not checked:
                if (
                    (conn.status & _SEEN_REPLY and tcp.last_index == TCP_SYN_SET)
                    or (not conn.status & _ASSURED and tcp.last_index == TCP_ACK_SET)
                ) and ack_seq == tcp.last_end:
                    skip_window = True  # RST to an invalid SYN or ACK we let through: no window check
                elif (
                    old_state == SS
                    and tcp.last_index == TCP_ACK_SET
                    and tcp.last_dir == 1
                    and seq == tcp.last_ack
                ):
                    skip_window = True  # reset in response to a challenge ACK we let through

    if not skip_window:
        res = tcp_in_window(conn, tcp, direction, index, skb, dataoff, doff, flags, seq, ack_seq, win_raw, cfg)
        if res == NFCT_TCP_IGNORE:
            return NF_ACCEPT
        if res == NFCT_TCP_INVALID:
            nf_tcp_handle_invalid(conn, tcp, direction, index, now, cfg)
            return NF_INVALID

    # in_window: from now on we have an in-window packet
    tcp.last_index = index
    tcp.last_dir = direction
    tcp.state = _STATES[new_state]
    if old_state != new_state and new_state == FW:
        tcp.seen[direction].flags |= IP_CT_TCP_FLAG_CLOSE_INIT

    timeouts = cfg.tcp_timeouts()
    t_new = timeouts[new_state]
    if tcp.retrans >= cfg.tcp_max_retrans and t_new > timeouts[TCP_CONNTRACK_RETRANS]:
        timeout = timeouts[TCP_CONNTRACK_RETRANS]
    elif index == TCP_RST_SET:
        timeout = timeouts[CL]
    elif (
        (tcp.seen[0].flags | tcp.seen[1].flags) & IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED
        and t_new > timeouts[TCP_CONNTRACK_UNACK]
    ):
        timeout = timeouts[TCP_CONNTRACK_UNACK]
    elif tcp.last_win == 0 and t_new > timeouts[TCP_CONNTRACK_RETRANS]:
        timeout = timeouts[TCP_CONNTRACK_RETRANS]
    else:
        timeout = t_new

    nbytes = len(data)
    if not conn.status & _SEEN_REPLY:
        if flags & TH_RST:
            # If the only reply is a RST, there is no connection: delete the ct now (port closed).
            nf_ct_kill_acct(conn, direction, nbytes, now, table, cfg.acct, reason="tcp rst before reply")
            return NF_ACCEPT
        if index == TCP_SYN_SET and old_state == SS:
            return NF_ACCEPT  # do not renew the timeout on a SYN retransmit
        if new_state == ES and timeout > timeouts[TCP_CONNTRACK_UNACK]:
            timeout = timeouts[TCP_CONNTRACK_UNACK]  # mid-connection pickup: avoid the 5-day timeout
    elif (
        not conn.status & _ASSURED
        and old_state in (SR, ES)
        and new_state == ES
    ):
        conn.status |= _ASSURED  # valid ACK in ESTABLISHED after SYN_RECV, or an answer to a pickup
    nf_ct_refresh_acct(conn, direction, nbytes, timeout, now, cfg.acct)
    return NF_ACCEPT


_ES = TcpState.ESTABLISHED


def tcp_packet_established(
    conn: Conn, tcp: TcpConntrack, direction: int, data: bytes | bytearray, dataoff: int, doff: int, seq: int,
    ack: int, win_raw: int, end: int, nbytes: int, now: float, cfg: ConntrackConfig,
) -> bool:
    """`nf_conntrack_tcp_packet()` → `tcp_in_window()` for their commonest case, in one function.

    The case: a segment whose flags are ACK (PSH, URG, ECE, CWR allowed; no SYN, FIN or RST) on a ct that
    is ESTABLISHED, SEEN_REPLY and ASSURED without FIXED_TIMEOUT, whose sender's window is known
    (td_maxwin != 0), and which passes all four window checks of §3.2. The caller has checked the header
    (`tcp_error`: length, data offset, checksum, flags) and everything about the ct but the window. `end` is
    `segment_seq_plus_len()`, `nbytes` the datagram's length (for accounting).

    For that case the state table maps ESTABLISHED to ESTABLISHED and no branch of `tcp_packet` before the
    window check applies, so this does exactly what `tcp_packet` does: the window bookkeeping, the
    retransmission count, last_index/last_dir, the timeout choice and the refresh. In any other case, a
    failed window check included, it returns False having changed nothing, and the caller runs
    `tcp_packet`, which decides (and explains) the same packet from the same state.
    """
    sender = tcp.seen[direction]
    receiver = tcp.seen[1 - direction]
    s_maxwin = sender.td_maxwin
    if not s_maxwin:
        return False
    sack = ack
    if doff > 20 and receiver.flags & IP_CT_TCP_FLAG_SACK_PERM:
        sack = tcp_sack(data, dataoff, doff, ack)
    s_end = sender.td_end
    s_maxend = sender.td_maxend
    r_end = receiver.td_end
    r_maxwin = receiver.td_maxwin
    maxackwindow = s_maxwin if s_maxwin > MAXACKWINCONST else MAXACKWINCONST
    if (((seq - s_maxend - 1) & _U32) < _HALF                      # I.   before(seq, maxend + 1) fails
            or ((sack - r_end - 1) & _U32) < _HALF                  # III. before(sack, r_end + 1) fails
            or (r_maxwin and ((s_end - r_maxwin - 1 - end) & _U32) < _HALF)  # II. after(end, lower) fails
            or ((r_end - maxackwindow - 1 - sack) & _U32) < _HALF):  # IV.  after(sack, lower) fails
        return False
    # Update sender data (window scaling applies: no SYN).
    win = (win_raw << sender.td_scale) & _U32
    swin = (win + sack - ack) & _U32
    if swin > s_maxwin:
        sender.td_maxwin = swin
    sflags = sender.flags
    if ((s_end - end) & _U32) >= _HALF:  # after(end, td_end)
        sender.td_end = end
        sflags |= IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED
    if not sflags & IP_CT_TCP_FLAG_MAXACK_SET:
        sender.td_maxack = ack
        sflags |= IP_CT_TCP_FLAG_MAXACK_SET
    elif ((sender.td_maxack - ack) & _U32) >= _HALF:  # after(ack, td_maxack)
        sender.td_maxack = ack
    sender.flags = sflags
    # Update receiver data.
    if r_maxwin and ((s_maxend - end) & _U32) >= _HALF:  # after(end, sender.td_maxend)
        receiver.td_maxwin = (r_maxwin + end - s_maxend) & _U32
    edge = (sack + win) & _U32
    if ((receiver.td_maxend - 1 - edge) & _U32) >= _HALF:  # after(sack + win, td_maxend - 1)
        receiver.td_maxend = (edge + 1) & _U32 if win == 0 else edge
    if ack == r_end:
        receiver.flags &= ~IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED
    _check_retrans(tcp, direction, seq, ack, end, win_raw)  # index == TCP_ACK_SET
    tcp.last_index = TCP_ACK_SET
    # the timeout, as tcp_packet chooses it for new_state ESTABLISHED
    timeouts = cfg.tcp_timeouts()
    timeout = timeouts[_ES]
    if tcp.retrans >= cfg.tcp_max_retrans and timeout > timeouts[TCP_CONNTRACK_RETRANS]:
        timeout = timeouts[TCP_CONNTRACK_RETRANS]
    elif (sflags | receiver.flags) & IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED and timeout > timeouts[TCP_CONNTRACK_UNACK]:
        timeout = timeouts[TCP_CONNTRACK_UNACK]
    elif win_raw == 0 and timeout > timeouts[TCP_CONNTRACK_RETRANS]:  # tcp.last_win is win_raw now
        timeout = timeouts[TCP_CONNTRACK_RETRANS]
    conn.timeout = now + timeout  # nf_ct_refresh_acct (the caller excluded FIXED_TIMEOUT)
    if cfg.acct:
        conn.acct_packets[direction] += 1
        conn.acct_bytes[direction] += nbytes
    return True
