"""The TCP tracker: state machine, validation and timeouts (§3.2). Mirrors nf_conntrack_proto_tcp.c.

Functions mirror, one to one: `nf_tcp_handle_invalid`, `tcp_error`, `tcp_new`, `tcp_can_early_drop`,
`nf_ct_tcp_state_reset` and `nf_conntrack_tcp_packet` (here `tcp_packet`). The flag classes and the state
table are `natbox.conntrack.proto.tcp_states`; window tracking (`tcp_in_window`) and its commonest case
(`tcp_packet_established`, which the slow and the fast paths share) are `natbox.conntrack.proto.tcp_window`.

NAT sequence adjustment (seqadj, only with helpers) is not modelled: its offset is always 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

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
from natbox.conntrack.proto.tcp_states import (
    _INDEX_BY_BYTE,
    _INDEX_NAMES,
    _VALID_BY_BYTE,
    CL,
    CW,
    ES,
    FW,
    IG,
    IV,
    LA,
    NO,
    S2,
    SR,
    SS,
    TCP_ACK_SET,
    TCP_CONNTRACK_NAMES,
    TCP_CONNTRACKS,
    TCP_FIN_SET,
    TCP_NONE_SET,
    TCP_RST_SET,
    TCP_SYN_SET,
    TCP_SYNACK_SET,
    TCP_VALID_FLAGS,
    TH_CWR,
    TH_ECE,
    TH_PSH,
    TH_RST,
    TW,
    flag_names,
    get_conntrack_index,
)
from natbox.conntrack.proto.tcp_window import (
    NFCT_TCP_IGNORE,
    NFCT_TCP_INVALID,
    _before,
    segment_seq_plus_len,
    tcp_in_window,
    tcp_options,
    tcp_packet_established,
)
from natbox.conntrack.proto.udp import nf_checksum_ok
from natbox.netfilter import NF_ACCEPT, CtStatus, Hook, TcpState
from natbox.wire.layout import TCPH_ACK_SEQ, TCPH_DOFF, TCPH_FLAGS, TCPH_MIN_LEN, TCPH_SEQ, TCPH_WINDOW

if TYPE_CHECKING:
    from natbox.conntrack.config import ConntrackConfig
    from natbox.conntrack.conn import Conn
    from natbox.conntrack.ops import CtTableOps
    from natbox.skb import Skb

# enum members as module constants: `Enum.MEMBER` costs an attribute lookup through EnumType per use
_HOOK_PRE_ROUTING: Final = Hook.PRE_ROUTING

__all__ = [
    "TCP_ACK_SET",
    "TCP_CONNTRACKS",
    "TCP_CONNTRACK_NAMES",
    "TCP_VALID_FLAGS",
    "_INDEX_BY_BYTE",
    "_VALID_BY_BYTE",
    "get_conntrack_index",
    "nf_conntrack_tcp_set_closing",
    "tcp_can_early_drop",
    "tcp_close_init",
    "tcp_error",
    "tcp_packet",
    "tcp_packet_established",
]

_U32: Final = 0xFFFFFFFF
_SEEN_REPLY: Final = CtStatus.SEEN_REPLY
_ASSURED: Final = CtStatus.ASSURED
_CONFIRMED: Final = CtStatus.CONFIRMED
_DYING: Final = CtStatus.DYING
_FIXED_TIMEOUT: Final = CtStatus.FIXED_TIMEOUT
_STATES: Final = tuple(TcpState)
# the status of a ct whose in-window ACKs tcp_packet_established decides
# (SEQ_ADJUST in the mask: a ct with sequence adjustment takes the general path, whose tcp_in_window takes
# the offset out of acknowledgment numbers; tcp_packet_established, shared with the fast paths, does not)
_COMMON_MASK: Final = int(_CONFIRMED | _SEEN_REPLY | _ASSURED | _FIXED_TIMEOUT | CtStatus.SEQ_ADJUST)
_COMMON_BITS: Final = int(_CONFIRMED | _SEEN_REPLY | _ASSURED)
_SEQ_END, _ACK_SEQ_END = TCPH_SEQ + 4, TCPH_ACK_SEQ + 4  # the 32-bit fields' ends


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
    if tcplen < TCPH_MIN_LEN:
        return "tcp: short packet"
    doff = (data[dataoff + TCPH_DOFF] >> 4) * 4
    if doff < TCPH_MIN_LEN or tcplen < doff:
        return "tcp: truncated packet"
    # nf_ip_checksum: a CHECKSUM_PARTIAL packet (from a local or virtio sender) is not verified
    if (cfg.checksum and hook == _HOOK_PRE_ROUTING and not skb.csum_partial
            and not nf_checksum_ok(data, dataoff, 6, None, skb.family)):
        return "tcp: bad checksum"
    flags = data[dataoff + TCPH_FLAGS]
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


def nf_conntrack_tcp_set_closing(conn: Conn, now: float, cfg: ConntrackConfig) -> None:
    """Mirrors `nf_conntrack_tcp_set_closing()` (what `nf_ct_set_closing` runs for TCP): REJECT's RST
    (`nf_send_reset`, `nf_send_reset6`) moves a confirmed ct to CLOSE with the CLOSE timeout, unless it is
    CLOSE already or has a fixed timeout; an unconfirmed ct is left alone (the packet is dropped)."""
    tcp = conn.tcp
    if tcp is None or not conn.status & _CONFIRMED:
        return
    old_state = tcp.state
    tcp.state = TcpState.CLOSE
    if old_state == TcpState.CLOSE or conn.status & _FIXED_TIMEOUT:
        return
    conn.timeout = now + cfg.tcp_timeouts()[CL]


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


def tcp_close_init(tcp: TcpConntrack) -> bool:
    """Either side began the close with a FIN (IP_CT_TCP_FLAG_CLOSE_INIT in either direction's flags): a ct in
    TIME_WAIT or CLOSE so marked is one a SYN reopens (`tcp_packet`'s RFC 1122 reopen, whichever direction the
    SYN comes from; the other condition, the last packet an RST in the SYN's direction, can change with the
    next packet). gateway/newconn.py marks such cts' tuples for the datapath."""
    return bool((tcp.seen[0].flags | tcp.seen[1].flags) & IP_CT_TCP_FLAG_CLOSE_INIT)


def tcp_packet(
    conn: Conn, skb: Skb, dataoff: int, direction: int, hook: Hook, now: float, table: CtTableOps,
    cfg: ConntrackConfig, *, shortcut: bool = True,
) -> int:
    """Mirrors `nf_conntrack_tcp_packet()` (§3.2): validate, advance the state machine, choose the timeout.
    Longer than 150 lines because it mirrors the kernel function (about 250 lines), branch for branch.

    Returns NF_ACCEPT, NF_INVALID (-NF_ACCEPT) or NF_REPEAT_LOOKUP (-NF_REPEAT: the ct was killed for a
    reopen and the caller must look the packet up again).

    An ACK (no SYN, FIN or RST) on an ESTABLISHED, SEEN_REPLY and ASSURED ct without FIXED_TIMEOUT is first
    given to `tcp_packet_established`, the function the engine's fast paths run for it: for that case the
    state table maps ESTABLISHED to ESTABLISHED and no branch before the window check applies, so when it
    accepts, it has done all the general path below would. When it declines (a window check fails, the
    sender's window is unknown) it has changed nothing and the general path (`tcp_new`, the state table and
    its special cases, `tcp_in_window`, the timeout choice) decides and explains. `shortcut=False` runs the
    general path alone (tests/conntrack/test_tcp_established_fast.py compares the two).
    """
    reason = tcp_error(skb, dataoff, hook, cfg)
    if reason is not None:
        skb.note = reason
        return NF_INVALID
    data = skb.data
    doff = (data[dataoff + TCPH_DOFF] >> 4) * 4
    flags = data[dataoff + TCPH_FLAGS]
    seq = int.from_bytes(data[dataoff + TCPH_SEQ : dataoff + _SEQ_END], "big")
    ack_seq = int.from_bytes(data[dataoff + TCPH_ACK_SEQ : dataoff + _ACK_SEQ_END], "big")
    win = dataoff + TCPH_WINDOW
    win_raw = (data[win] << 8) | data[win + 1]
    tcp = conn.tcp
    index = _INDEX_BY_BYTE[flags]
    if (index == TCP_ACK_SET and tcp is not None and tcp.state == ES
            and conn.status & _COMMON_MASK == _COMMON_BITS and shortcut
            and tcp_packet_established(conn, tcp, direction, data, dataoff, doff, seq, ack_seq, win_raw,
                                       (seq + len(data) - dataoff - doff) & _U32, len(data), now, cfg)):
        return NF_ACCEPT

    # the general path
    if not conn.status & _CONFIRMED and not tcp_new(conn, skb, dataoff, doff, flags, seq, win_raw, cfg):
        return NF_INVALID
    tcp = conn.tcp
    if tcp is None:  # a confirmed ct created by someone else without TCP state: treat as picked up
        tcp = conn.tcp = TcpConntrack()

    old_state = tcp.state
    new_state = TCP_CONNTRACKS[direction][index][old_state]
    other = 1 - direction
    skip_window = False

    if new_state == SS and old_state >= TW:
        # RFC 1122 reopen from TIME_WAIT/CLOSE, or an aborted connection the client restarts.
        if tcp_close_init(tcp) or (
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
        # SYNPROXY: when the SYN to the server or its SYN/ACK is lost, the client may send a keep-alive
        # (SEG.SEQ = SND.NXT - 1) in SYN_SENT; it stays with the ct, so that a new SYN gets the right ISN
        if (conn.synproxy is not None and old_state == SS and index == TCP_ACK_SET and direction == 0
                and tcp.last_dir == 0 and (tcp.seen[0].td_end - 1) & _U32 == seq):
            return NF_ACCEPT
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

    timeouts = cfg.tcp_timeout_table or cfg.tcp_timeouts()
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
