"""`struct nf_conn` and the per-protocol state it carries (`struct ip_ct_tcp`, §2, §3.2).

A `Conn` holds both tuples (`tuples[Direction.ORIGINAL]`, `tuples[Direction.REPLY]`), the status bits,
an absolute deadline (`timeout`, seconds on the injected clock), and protocol state. The logic that
changes TCP state lives in `natbox.conntrack.proto.tcp`; this module only declares the data, as the
kernel's headers do.

Times are floats in seconds on the caller's clock. A confirmed entry is dead once `now >= timeout`
(§2.8: expiry is exact).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from natbox.conntrack.tuple import ConnTuple, tuple_l3num
from natbox.netfilter import CtStatus, Direction, TcpState

if TYPE_CHECKING:
    from natbox.conntrack.seqadj import NfConnSeqadj
    from natbox.conntrack.synproxy import NfConnSynproxy

__all__ = ["Conn", "SctpConntrack", "TcpConntrack", "TcpSeen"]

# `ip_ct_tcp_state.flags` bits (nf_conntrack_tcp.h)
IP_CT_TCP_FLAG_WINDOW_SCALE: Final = 0x01
IP_CT_TCP_FLAG_SACK_PERM: Final = 0x02
IP_CT_TCP_FLAG_CLOSE_INIT: Final = 0x04
IP_CT_TCP_FLAG_BE_LIBERAL: Final = 0x08
IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED: Final = 0x10
IP_CT_TCP_FLAG_MAXACK_SET: Final = 0x20
IP_CT_EXP_CHALLENGE_ACK: Final = 0x40
IP_CT_TCP_SIMULTANEOUS_OPEN: Final = 0x80


class TcpSeen:
    """`struct ip_ct_tcp_state`: what one direction has sent (§3.2 window tracking)."""

    __slots__ = ("flags", "td_end", "td_maxack", "td_maxend", "td_maxwin", "td_scale")

    def __init__(self) -> None:
        self.td_end = 0  # max of seq + len
        self.td_maxend = 0  # max of ack + max(win, 1)
        self.td_maxwin = 0  # max(win)
        self.td_maxack = 0  # max of ack
        self.td_scale = 0  # window scale factor
        self.flags = 0  # IP_CT_TCP_FLAG_*

    def copy_from(self, other: TcpSeen) -> None:
        self.td_end = other.td_end
        self.td_maxend = other.td_maxend
        self.td_maxwin = other.td_maxwin
        self.td_maxack = other.td_maxack
        self.td_scale = other.td_scale
        self.flags = other.flags


class TcpConntrack:
    """`struct ip_ct_tcp`: the TCP tracker's state for one connection."""

    __slots__ = (
        "last_ack", "last_dir", "last_end", "last_flags", "last_index", "last_seq", "last_win",
        "last_wscale", "retrans", "seen", "state",
    )

    def __init__(self) -> None:
        self.seen = (TcpSeen(), TcpSeen())  # indexed by Direction
        self.state = TcpState.NONE
        self.last_dir = 0
        self.retrans = 0
        self.last_index = 0  # TCP_*_SET flag class of the last packet
        self.last_seq = 0
        self.last_ack = 0
        self.last_end = 0
        self.last_win = 0
        self.last_wscale = 0
        self.last_flags = 0


class SctpConntrack:
    """`struct ip_ct_sctp`: the SCTP tracker's state (natbox.conntrack.proto.sctp) for one connection."""

    __slots__ = ("flags", "init", "last_dir", "state", "vtag")

    def __init__(self) -> None:
        self.state = 0  # enum sctp_conntrack (SCTP_CONNTRACK_NONE)
        self.vtag = [0, 0]  # the verification tag each direction must carry, by Direction
        self.init = [False, False]  # an INIT was seen in that direction (collision handling)
        self.flags = 0  # SCTP_FLAG_HEARTBEAT_VTAG_FAILED
        self.last_dir = 0


class Conn:
    """`struct nf_conn`: one tracked connection, inserted under both of its tuples once confirmed."""

    __slots__ = (
        "_acct_bytes", "_acct_packets", "ct_id", "labels", "mark", "masq_index", "sctp", "secmark", "seqadj", "start",
        "status", "synproxy", "tcp", "timeout", "tuples", "zone",
    )

    def __init__(self, original: ConnTuple, reply: ConnTuple, *, now: float, ct_id: int, zone: int = 0) -> None:
        self.tuples: list[ConnTuple] = [original, reply]
        self.status = 0  # CtStatus bits
        self.timeout = now  # absolute deadline (seconds); set by the tracker's refresh
        self.start = now  # creation time: UDP's stream_ts is start + 2 s (§3.3)
        self.mark = 0
        self.secmark = 0  # ct->secmark (CONNSECMARK --save)
        self.labels = 0  # nf_conn_labels: bit N set by `-m connlabel --label N --set`
        self.zone = zone
        self.ct_id = ct_id
        self.tcp: TcpConntrack | None = None
        self.sctp: SctpConntrack | None = None
        self.masq_index: str | None = None  # MASQUERADE's out interface (nf_conn_nat.masq_index)
        # the seqadj and synproxy extensions, given by SYNPROXY's template (init_conntrack)
        self.seqadj: NfConnSeqadj | None = None
        self.synproxy: NfConnSynproxy | None = None
        # nf_conn_acct, allocated on first use (nf_conntrack_acct is off by default; saves ~140 bytes/entry)
        self._acct_packets: list[int] | None = None
        self._acct_bytes: list[int] | None = None

    @property
    def accounted(self) -> bool:
        """Whether accounting counters were ever kept for this entry."""
        return self._acct_packets is not None

    @property
    def acct_packets(self) -> list[int]:
        """Packets seen per direction (`nf_conn_counter.packets`), when accounting is on."""
        if self._acct_packets is None:
            self._acct_packets = [0, 0]
        return self._acct_packets

    @acct_packets.setter
    def acct_packets(self, value: list[int]) -> None:
        self._acct_packets = value

    @property
    def acct_bytes(self) -> list[int]:
        """Bytes seen per direction (`nf_conn_counter.bytes`), when accounting is on."""
        if self._acct_bytes is None:
            self._acct_bytes = [0, 0]
        return self._acct_bytes

    @acct_bytes.setter
    def acct_bytes(self, value: list[int]) -> None:
        self._acct_bytes = value

    @property
    def original(self) -> ConnTuple:
        return self.tuples[Direction.ORIGINAL]

    @property
    def reply(self) -> ConnTuple:
        return self.tuples[Direction.REPLY]

    @property
    def l3num(self) -> int:
        """`tuplehash[ORIGINAL].tuple.src.l3num`: NFPROTO_IPV4 or NFPROTO_IPV6."""
        return tuple_l3num(self.tuples[0])


    def has(self, bits: int) -> bool:
        """Whether any of the CtStatus `bits` is set."""
        return bool(self.status & bits)

    @property
    def confirmed(self) -> bool:
        return bool(self.status & CtStatus.CONFIRMED)

    def __repr__(self) -> str:
        return f"Conn(#{self.ct_id} {self.original} / {self.reply} status={int(self.status):#x})"
