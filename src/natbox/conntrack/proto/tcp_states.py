"""TCP flag classes and the connection tracking state table (§3.2). Mirrors nf_conntrack_proto_tcp.c:
`tcp_conntrack_names[]`, `tcp_valid_flags[]`, `enum tcp_bit_set`, `get_conntrack_index()` and
`tcp_conntracks[2][6][TCP_CONNTRACK_MAX]` (Linux 6.x)."""

from __future__ import annotations

from typing import Final

from natbox.netfilter import TcpState

__all__ = [
    "TCP_ACK_SET",
    "TCP_CONNTRACKS",
    "TCP_CONNTRACK_NAMES",
    "TCP_FIN_SET",
    "TCP_NONE_SET",
    "TCP_RST_SET",
    "TCP_SYNACK_SET",
    "TCP_SYN_SET",
    "TCP_VALID_FLAGS",
    "flag_names",
    "get_conntrack_index",
]

# `tcp_conntrack_names[]`: what `conntrack -L` and /proc print for each TcpState.
TCP_CONNTRACK_NAMES: tuple[str, ...] = (
    "NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE",
    "SYN_SENT2",
)

# --- TCP header flag bits (tcp_flag_byte) ------------------------------------------------------
TH_FIN: Final = 0x01
TH_SYN: Final = 0x02
TH_RST: Final = 0x04
TH_PSH: Final = 0x08
TH_ACK: Final = 0x10
TH_URG: Final = 0x20
TH_ECE: Final = 0x40
TH_CWR: Final = 0x80
_FLAG_NAMES: Final = ((TH_SYN, "SYN"), (TH_RST, "RST"), (TH_FIN, "FIN"), (TH_PSH, "PSH"), (TH_ACK, "ACK"),
    (TH_URG, "URG"))

# `tcp_valid_flags[]`: after masking ECE, CWR and PSH only these combinations are valid (§3.2 tcp_error).
TCP_VALID_FLAGS: Final = frozenset({
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
_VALID_BY_BYTE: Final = tuple((b & ~(TH_ECE | TH_CWR | TH_PSH)) in TCP_VALID_FLAGS for b in range(256))

# --- flag classes (`enum tcp_bit_set`) ---------------------------------------------------------
TCP_SYN_SET: Final = 0
TCP_SYNACK_SET: Final = 1
TCP_FIN_SET: Final = 2
TCP_ACK_SET: Final = 3
TCP_RST_SET: Final = 4
TCP_NONE_SET: Final = 5
_INDEX_NAMES: Final = ("syn", "synack", "fin", "ack", "rst", "none")


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


_INDEX_BY_BYTE: Final = tuple(get_conntrack_index(b) for b in range(256))

# --- the state table (`tcp_conntracks[dir][index][state]`, Linux 6.x) --------------------------
NO: Final = TcpState.NONE
SS: Final = TcpState.SYN_SENT
SR: Final = TcpState.SYN_RECV
ES: Final = TcpState.ESTABLISHED
FW: Final = TcpState.FIN_WAIT
CW: Final = TcpState.CLOSE_WAIT
LA: Final = TcpState.LAST_ACK
TW: Final = TcpState.TIME_WAIT
CL: Final = TcpState.CLOSE
S2: Final = TcpState.SYN_SENT2
IV: Final = 10  # TCP_CONNTRACK_MAX: invalid, the packet is INVALID and the state is unchanged
IG: Final = 11  # TCP_CONNTRACK_IGNORE: accepted, no state change and no refresh

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


def flag_names(flags: int) -> str:
    """`SYN+FIN` style names of the flags set (for notes)."""
    names = [name for bit, name in _FLAG_NAMES if flags & bit]
    return "+".join(names) if names else "none"
