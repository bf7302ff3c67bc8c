"""TCP window tracking (§3.2): `tcp_in_window()` and what it uses, and its commonest case as one function.

Mirrors, in nf_conntrack_proto_tcp.c: `segment_seq_plus_len`, `tcp_options`, `tcp_sack`, `tcp_init_sender`,
`nf_tcp_log_invalid` and `tcp_in_window`. Sequence numbers are u32 and compared with the kernel's
`before()`/`after()` (signed 32-bit difference).

`tcp_packet_established` is `nf_conntrack_tcp_packet()` → `tcp_in_window()` for an in-window ACK on an
ESTABLISHED, ASSURED ct: the slow path's `tcp_packet` (natbox.conntrack.proto.tcp) and the engine's fast
paths run this same function for that case, so a kernel fix to it is made once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from natbox.conntrack.config import TCP_CONNTRACK_RETRANS, TCP_CONNTRACK_UNACK
from natbox.conntrack.conn import (
    IP_CT_TCP_FLAG_BE_LIBERAL,
    IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED,
    IP_CT_TCP_FLAG_MAXACK_SET,
    IP_CT_TCP_FLAG_SACK_PERM,
    IP_CT_TCP_FLAG_WINDOW_SCALE,
    TcpConntrack,
    TcpSeen,
)
from natbox.conntrack.proto.tcp_states import SR, SS, TCP_ACK_SET, TH_ACK, TH_FIN, TH_RST, TH_SYN
from natbox.conntrack.seqadj import nf_ct_seq_offset
from natbox.netfilter import TcpState
from natbox.wire.layout import TCPH_MIN_LEN
from natbox.wire.tcp import TCPOPT_EOL, TCPOPT_NOP, TCPOPT_SACK, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP, TCPOPT_WINDOW

if TYPE_CHECKING:
    from natbox.conntrack.config import ConntrackConfig
    from natbox.conntrack.conn import Conn
    from natbox.skb import Skb

__all__ = [
    "NFCT_TCP_ACCEPT",
    "NFCT_TCP_IGNORE",
    "NFCT_TCP_INVALID",
    "segment_seq_plus_len",
    "tcp_in_window",
    "tcp_options",
    "tcp_packet_established",
    "tcp_sack",
]

MAXACKWINCONST: Final = 66000
TCP_MAX_WSCALE: Final = 14
_U32: Final = 0xFFFFFFFF
_HALF: Final = 0x80000000

# TCP option kinds / lengths
TCPOLEN_WINDOW: Final = 3
TCPOLEN_SACK_PERM: Final = 2
TCPOLEN_SACK_BASE: Final = 2
TCPOLEN_SACK_PERBLOCK: Final = 8
_SACK_RIGHT: Final = 4  # a SACK block is (left edge, right edge), 4 bytes each
TCPOLEN_TSTAMP_ALIGNED: Final = 12
_TSTAMP_FASTPATH: Final = bytes((TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, 10))

# tcp_in_window results (`enum nf_ct_tcp_action`)
NFCT_TCP_IGNORE: Final = 0
NFCT_TCP_INVALID: Final = 1
NFCT_TCP_ACCEPT: Final = 2


def _before(a: int, b: int) -> bool:
    """`before(a, b)`: (s32)(a - b) < 0."""
    return ((a - b) & _U32) >= _HALF


def _after(a: int, b: int) -> bool:
    """`after(a, b)`: before(b, a)."""
    return ((b - a) & _U32) >= _HALF


def segment_seq_plus_len(seq: int, skb_len: int, dataoff: int, doff: int, flags: int) -> int:
    """Mirrors `segment_seq_plus_len()`: seq + payload length (+1 for SYN, +1 for FIN), mod 2^32."""
    return (seq + skb_len - dataoff - doff + (1 if flags & TH_SYN else 0) + (1 if flags & TH_FIN else 0)) & _U32


def tcp_options(data: bytearray, dataoff: int, doff: int, state: TcpSeen) -> None:
    """Mirrors `tcp_options()`: read SACK_PERM and WSCALE (capped at 14) into `state`.

    Resets `td_scale` and every flag but BE_LIBERAL first, unless there are no options at all.
    """
    length = doff - TCPH_MIN_LEN  # the options
    if not length:
        return
    state.td_scale = 0
    state.flags &= IP_CT_TCP_FLAG_BE_LIBERAL
    ptr = dataoff + TCPH_MIN_LEN
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
    length = doff - TCPH_MIN_LEN  # the options
    if not length:
        return sack
    ptr = dataoff + TCPH_MIN_LEN
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
                edge = int.from_bytes(data[ptr + i + _SACK_RIGHT : ptr + i + TCPOLEN_SACK_PERBLOCK], "big")
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
    if conn.seqadj is not None:  # Take into account NAT sequence number mangling (SYNPROXY's seqadj)
        receiver_offset = nf_ct_seq_offset(conn, 1 - direction, (ack - 1) & _U32)
        ack = (ack - receiver_offset) & _U32
        sack = (sack - receiver_offset) & _U32

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


_ES: Final = int(TcpState.ESTABLISHED)  # an int: indexes the timeouts tuple at the tuple-index fast path


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
    # (u32 arithmetic with literal masks: this runs for every established ACK, and a literal costs less than
    # a module constant's lookup)
    sender = tcp.seen[direction]
    receiver = tcp.seen[1 - direction]
    s_maxwin = sender.td_maxwin
    if not s_maxwin:
        return False
    sack = ack
    if doff > TCPH_MIN_LEN and receiver.flags & IP_CT_TCP_FLAG_SACK_PERM:
        sack = tcp_sack(data, dataoff, doff, ack)
    s_end = sender.td_end
    s_maxend = sender.td_maxend
    r_end = receiver.td_end
    r_maxwin = receiver.td_maxwin
    maxackwindow = s_maxwin if s_maxwin > MAXACKWINCONST else MAXACKWINCONST
    if (((seq - s_maxend - 1) & 0xFFFFFFFF) < 0x80000000                      # I.   before(seq, maxend + 1) fails
            or ((sack - r_end - 1) & 0xFFFFFFFF) < 0x80000000                  # III. before(sack, r_end + 1) fails
            or (r_maxwin and ((s_end - r_maxwin - 1 - end) & 0xFFFFFFFF) < 0x80000000)  # II. after(end, lower) fails
            or ((r_end - maxackwindow - 1 - sack) & 0xFFFFFFFF) < 0x80000000):  # IV.  after(sack, lower) fails
        return False
    # Update sender data (window scaling applies: no SYN).
    win = (win_raw << sender.td_scale) & 0xFFFFFFFF
    swin = (win + sack - ack) & 0xFFFFFFFF
    if swin > s_maxwin:
        sender.td_maxwin = swin
    sflags = sender.flags
    if ((s_end - end) & 0xFFFFFFFF) >= 0x80000000:  # after(end, td_end)
        sender.td_end = end
        sflags |= IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED
    if not sflags & IP_CT_TCP_FLAG_MAXACK_SET:
        sender.td_maxack = ack
        sflags |= IP_CT_TCP_FLAG_MAXACK_SET
    elif ((sender.td_maxack - ack) & 0xFFFFFFFF) >= 0x80000000:  # after(ack, td_maxack)
        sender.td_maxack = ack
    sender.flags = sflags
    # Update receiver data.
    if r_maxwin and ((s_maxend - end) & 0xFFFFFFFF) >= 0x80000000:  # after(end, sender.td_maxend)
        receiver.td_maxwin = (r_maxwin + end - s_maxend) & 0xFFFFFFFF
    edge = (sack + win) & 0xFFFFFFFF
    if ((receiver.td_maxend - 1 - edge) & 0xFFFFFFFF) >= 0x80000000:  # after(sack + win, td_maxend - 1)
        receiver.td_maxend = (edge + 1) & 0xFFFFFFFF if win == 0 else edge
    if ack == r_end:
        receiver.flags &= ~IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED
    _check_retrans(tcp, direction, seq, ack, end, win_raw)  # index == TCP_ACK_SET
    tcp.last_index = TCP_ACK_SET
    # the timeout, as tcp_packet chooses it for new_state ESTABLISHED
    timeouts = cfg.tcp_timeout_table or cfg.tcp_timeouts()
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
