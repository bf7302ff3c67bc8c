"""TCP tracking (§3.2, Appendix A item 12): states, timeouts, window checks, overrides."""

from __future__ import annotations

import pytest

from natbox.conntrack.conn import (
    IP_CT_TCP_FLAG_BE_LIBERAL,
    IP_CT_TCP_FLAG_SACK_PERM,
    Conn,
)
from natbox.conntrack.proto.tcp import (
    TCP_CONNTRACK_NAMES,
    TCP_CONNTRACKS,
    TCP_VALID_FLAGS,
    get_conntrack_index,
    tcp_can_early_drop,
)
from natbox.conntrack.table import CtEventType
from natbox.netfilter import CtInfo, CtStatus, Hook, TcpState
from natbox.testing.conntrack import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, A, B, Box, Sent, t, tcp

T0 = 1000.0
ORIG = t(A, 40000, B, 80, 6)
ISN_A = 1000
ISN_B = 5000
# MSS 1460, SACK_PERM, NOP, WSCALE 7 (12 bytes)
SYN_OPTS = bytes([2, 4, 5, 0xB4, 4, 2, 1, 1, 1, 3, 3, 7])


def c2s(flags: int, seq: int, ack: int = 0, **kw: object) -> bytearray:
    return tcp(A, B, 40000, 80, flags, seq=seq, ack=ack, **kw)  # type: ignore[arg-type]


def s2c(flags: int, seq: int, ack: int = 0, **kw: object) -> bytearray:
    return tcp(B, A, 80, 40000, flags, seq=seq, ack=ack, **kw)  # type: ignore[arg-type]


def state(box: Box, now: float) -> TcpState | None:
    conn = box.find(ORIG, now)
    return None if conn is None or conn.tcp is None else conn.tcp.state


def st(conn: Conn) -> TcpState:
    """The ct's TCP state (a function, so that mypy does not narrow it between packets)."""
    assert conn.tcp is not None
    return conn.tcp.state


def handshake(box: Box, now: float = T0) -> Conn:
    box.send(c2s(SYN, ISN_A, options=SYN_OPTS), now)
    box.send(s2c(SYN | ACK, ISN_B, ISN_A + 1, win=65160, options=SYN_OPTS), now + 0.01)
    box.send(c2s(ACK, ISN_A + 1, ISN_B + 1, win=502), now + 0.02)
    conn = box.find(ORIG, now + 0.02)
    assert conn is not None
    return conn


# --- the tables are the reference's (§3.2) -----------------------------------------------------

_REF_ORIGINAL = """
syn    | SS | SS | IG | IG | IG | IG | IG | SS | SS | S2
synack | IV | IV | SR | IV | IV | IV | IV | IV | IV | SR
fin    | IV | IV | FW | FW | LA | LA | LA | TW | CL | IV
ack    | ES | IV | ES | ES | CW | CW | TW | TW | CL | IV
rst    | IV | CL | CL | CL | CL | CL | CL | CL | CL | CL
none   | IV | IV | IV | IV | IV | IV | IV | IV | IV | IV
"""
_REF_REPLY = """
syn    | IV | S2 | IV | IV | IV | IV | IV | SS | IV | S2
synack | IV | SR | IG | IG | IG | IG | IG | IG | IG | SR
fin    | IV | IV | FW | FW | LA | LA | LA | TW | CL | IV
ack    | IV | IG | SR | ES | CW | CW | TW | TW | CL | IG
rst    | IV | CL | CL | CL | CL | CL | CL | CL | CL | CL
none   | IV | IV | IV | IV | IV | IV | IV | IV | IV | IV
"""
_ABBR = {"NO": 0, "SS": 1, "SR": 2, "ES": 3, "FW": 4, "CW": 5, "LA": 6, "TW": 7, "CL": 8, "S2": 9, "IV": 10, "IG": 11}


@pytest.mark.parametrize(("direction", "text"), [(0, _REF_ORIGINAL), (1, _REF_REPLY)])
def test_state_table_matches_reference(direction: int, text: str) -> None:
    rows = [line.split("|") for line in text.strip().splitlines()]
    for index, row in enumerate(rows):
        expected = tuple(_ABBR[cell.strip()] for cell in row[1:])
        assert tuple(int(x) for x in TCP_CONNTRACKS[direction][index]) == expected, row[0]


def test_state_names_are_conntrack_names() -> None:
    assert TCP_CONNTRACK_NAMES == (
        "NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE",
        "SYN_SENT2",
    )
    assert [TCP_CONNTRACK_NAMES[s] for s in TcpState] == [s.name for s in TcpState]


def test_flag_class_order() -> None:
    # RST first, then SYN(+ACK), then FIN (so FIN+ACK is fin), then ACK
    assert get_conntrack_index(RST | SYN | ACK) == 4
    assert get_conntrack_index(SYN | ACK) == 1
    assert get_conntrack_index(SYN | FIN) == 0
    assert get_conntrack_index(FIN | ACK) == 2
    assert get_conntrack_index(ACK | PSH) == 3
    assert get_conntrack_index(URG) == 5


def test_valid_flag_table() -> None:
    valid = {SYN, SYN | URG, SYN | ACK, RST, RST | ACK, FIN | ACK, FIN | ACK | URG, ACK, ACK | URG}
    assert valid == TCP_VALID_FLAGS


@pytest.mark.parametrize(
    "flags", [0, FIN, SYN | FIN, SYN | RST, FIN | PSH | URG, SYN | ACK | URG, RST | FIN, FIN | URG]
)
def test_invalid_flag_combinations_make_no_entry(flags: int) -> None:
    box = Box()
    sent = box.send(c2s(flags, ISN_A), T0)
    assert sent.invalid and sent.verdict == 1 and sent.ct is None
    assert sent.skb.note.startswith("tcp: invalid flag combination")
    assert box.entries(T0) == []
    assert box.table.stats.invalid == 1


def test_psh_ece_cwr_are_ignored_in_flag_validation() -> None:
    box = Box()
    sent = box.send(c2s(SYN | ECE | CWR, ISN_A), T0)
    assert sent.ctinfo == CtInfo.NEW
    sent = Box().send(c2s(ACK | PSH, ISN_A, 1), T0)
    assert sent.ctinfo == CtInfo.NEW


# --- Appendix A item 12: SYN / ACK / FIN / SYN+FIN / RST to an unreachable host -------------------


def test_syn_creates_syn_sent_120_unreplied() -> None:
    box = Box()
    sent = box.send(c2s(SYN, ISN_A, options=SYN_OPTS), T0)
    assert sent.ctinfo == CtInfo.NEW
    [conn] = box.entries(T0)
    assert conn.tcp is not None and conn.tcp.state == TcpState.SYN_SENT
    assert conn.timeout == T0 + 120
    assert not conn.status & CtStatus.SEEN_REPLY
    assert conn.reply == t(B, 80, A, 40000, 6)


def test_ack_first_is_picked_up_established_300_unreplied() -> None:
    box = Box()
    sent = box.send(c2s(ACK, ISN_A, 777), T0)
    assert sent.ctinfo == CtInfo.NEW
    [conn] = box.entries(T0)
    assert conn.tcp is not None and conn.tcp.state == TcpState.ESTABLISHED
    assert conn.timeout == T0 + 300
    assert not conn.status & (CtStatus.SEEN_REPLY | CtStatus.ASSURED)
    # loose pickup: both directions SACK_PERM | BE_LIBERAL
    for seen in conn.tcp.seen:
        assert seen.flags & (IP_CT_TCP_FLAG_SACK_PERM | IP_CT_TCP_FLAG_BE_LIBERAL) == (
            IP_CT_TCP_FLAG_SACK_PERM | IP_CT_TCP_FLAG_BE_LIBERAL
        )


def test_ack_first_without_loose_is_invalid() -> None:
    box = Box()
    box.cfg.set_sysctl("net.netfilter.nf_conntrack_tcp_loose", "0")
    sent = box.send(c2s(ACK, ISN_A, 777), T0)
    assert sent.invalid
    assert box.entries(T0) == []


@pytest.mark.parametrize("flags", [FIN, RST, SYN | FIN, FIN | ACK, RST | ACK, SYN | ACK])
def test_non_syn_non_ack_first_packets_make_no_entry(flags: int) -> None:
    box = Box()
    sent = box.send(c2s(flags, ISN_A, 1), T0)
    assert sent.invalid
    assert box.entries(T0) == []


def test_refused_connect_leaves_no_entry() -> None:
    box = Box()
    box.send(c2s(SYN, ISN_A), T0)
    sent = box.send(s2c(RST | ACK, 0, ISN_A + 1, win=0), T0 + 0.001)
    assert sent.ctinfo == CtInfo.ESTABLISHED_REPLY  # the RST still carries the ct (un-NAT needs it)
    assert sent.ct is not None
    assert box.entries(T0 + 0.001) == []
    kinds = [ev.kind for ev in box.table.drain_events()]
    assert kinds == [CtEventType.NEW, CtEventType.DESTROY]


def test_syn_retransmit_does_not_refresh() -> None:
    box = Box()
    box.send(c2s(SYN, ISN_A), T0)
    sent = box.send(c2s(SYN, ISN_A), T0 + 3)
    assert sent.ctinfo == CtInfo.NEW
    assert box.timeout_of(ORIG, T0 + 3) == 117  # still the first SYN's deadline


# --- handshake, ASSURED, teardown ---------------------------------------------------------------


def test_full_handshake_assured_on_final_ack() -> None:
    box = Box()
    box.send(c2s(SYN, ISN_A, options=SYN_OPTS), T0)
    sent = box.send(s2c(SYN | ACK, ISN_B, ISN_A + 1, win=65160, options=SYN_OPTS), T0 + 0.01)
    assert sent.ctinfo == CtInfo.ESTABLISHED_REPLY
    conn = sent.ct
    assert conn is not None and conn.tcp is not None
    assert st(conn) == TcpState.SYN_RECV
    assert conn.timeout == pytest.approx(T0 + 0.01 + 60)
    assert conn.status & CtStatus.SEEN_REPLY and not conn.status & CtStatus.ASSURED
    sent = box.send(c2s(ACK, ISN_A + 1, ISN_B + 1, win=502), T0 + 0.02)
    assert sent.ctinfo == CtInfo.ESTABLISHED
    assert st(conn) == TcpState.ESTABLISHED
    assert conn.status & CtStatus.ASSURED
    assert conn.timeout == pytest.approx(T0 + 0.02 + 432000)
    # window scaling: both SYNs carried WSCALE 7
    assert conn.tcp.seen[0].td_scale == 7 and conn.tcp.seen[1].td_scale == 7


def test_window_scale_only_if_both_sides_send_it() -> None:
    box = Box()
    box.send(c2s(SYN, ISN_A, options=SYN_OPTS), T0)
    sent = box.send(s2c(SYN | ACK, ISN_B, ISN_A + 1, options=bytes([2, 4, 5, 0xB4])), T0 + 0.01)
    conn = sent.ct
    assert conn is not None and conn.tcp is not None
    assert conn.tcp.seen[0].td_scale == 0 and conn.tcp.seen[1].td_scale == 0


def test_window_scale_capped_at_14() -> None:
    box = Box()
    opts = bytes([1, 3, 3, 20])
    box.send(c2s(SYN, ISN_A, options=opts), T0)
    sent = box.send(s2c(SYN | ACK, ISN_B, ISN_A + 1, options=opts), T0 + 0.01)
    conn = sent.ct
    assert conn is not None and conn.tcp is not None
    assert conn.tcp.seen[0].td_scale == 14 and conn.tcp.seen[1].td_scale == 14


def test_fin_teardown_through_all_closing_states() -> None:
    box = Box()
    conn = handshake(box)
    assert conn.tcp is not None
    now = T0 + 10
    steps: list[tuple[bytearray, TcpState, int]] = [
        (c2s(FIN | ACK, ISN_A + 1, ISN_B + 1, win=502), TcpState.FIN_WAIT, 120),
        (s2c(ACK, ISN_B + 1, ISN_A + 2, win=509), TcpState.CLOSE_WAIT, 60),
        (s2c(FIN | ACK, ISN_B + 1, ISN_A + 2, win=509), TcpState.LAST_ACK, 30),
        (c2s(ACK, ISN_A + 2, ISN_B + 2, win=502), TcpState.TIME_WAIT, 120),
    ]
    for pkt, expect, timeout in steps:
        sent = box.send(pkt, now)
        assert not sent.invalid, sent.skb.note
        assert conn.tcp.state == expect
        assert conn.timeout == pytest.approx(now + timeout)
        now += 0.5
    assert box.timeout_of(ORIG, now) == 119


def test_reopen_over_time_wait_makes_a_new_ct() -> None:
    box = Box()
    old = handshake(box)
    for pkt in (
        c2s(FIN | ACK, ISN_A + 1, ISN_B + 1, win=502),
        s2c(FIN | ACK, ISN_B + 1, ISN_A + 2, win=509),
        c2s(ACK, ISN_A + 2, ISN_B + 2, win=502),
    ):
        box.send(pkt, T0 + 1)
    assert old.tcp is not None and old.tcp.state == TcpState.TIME_WAIT
    box.table.drain_events()
    sent = box.send(c2s(SYN, ISN_A + 100000, options=SYN_OPTS), T0 + 5)
    assert sent.ctinfo == CtInfo.NEW
    new = sent.ct
    assert new is not None and new is not old and new.ct_id != old.ct_id
    assert new.tcp is not None and new.tcp.state == TcpState.SYN_SENT
    assert [c.ct_id for c in box.entries(T0 + 5)] == [new.ct_id]
    kinds = [ev.kind for ev in box.table.drain_events()]
    assert kinds == [CtEventType.DESTROY, CtEventType.NEW]


def test_syn_in_established_is_ignored_no_refresh() -> None:
    box = Box()
    conn = handshake(box)
    deadline = conn.timeout
    sent = box.send(c2s(SYN, ISN_A + 7777), T0 + 50)
    assert sent.ctinfo == CtInfo.ESTABLISHED and not sent.invalid
    assert conn.tcp is not None and conn.tcp.state == TcpState.ESTABLISHED
    assert conn.timeout == deadline


def test_synack_resyncs_an_ignored_syn() -> None:
    """A SYN/ACK acking exactly an ignored SYN's end re-syncs conntrack: old := SS, new := SR (§3.2)."""
    box = Box()
    conn = handshake(box)
    box.send(c2s(SYN, 900000, options=SYN_OPTS), T0 + 1)  # ignored (IG)
    sent = box.send(s2c(SYN | ACK, 700000, 900001, options=SYN_OPTS), T0 + 1.01)
    assert not sent.invalid
    assert conn.tcp is not None and conn.tcp.state == TcpState.SYN_RECV
    assert conn.tcp.seen[0].td_end == 900001


# --- window tracking ---------------------------------------------------------------------------


def test_out_of_window_segment_is_invalid() -> None:
    box = Box()
    conn = handshake(box)
    sent = box.send(c2s(ACK | PSH, ISN_A + 1 + 10_000_000, ISN_B + 1, payload=b"x" * 100), T0 + 1)
    assert sent.invalid and sent.ct is None
    assert "SEQ is over upper bound" in sent.skb.note
    assert conn.tcp is not None and conn.tcp.state == TcpState.ESTABLISHED


def test_out_of_window_accepted_with_be_liberal() -> None:
    box = Box()
    box.cfg.set_sysctl("nf_conntrack_tcp_be_liberal", "1")
    handshake(box)
    sent = box.send(c2s(ACK | PSH, ISN_A + 1 + 10_000_000, ISN_B + 1, payload=b"x" * 100), T0 + 1)
    assert sent.ctinfo == CtInfo.ESTABLISHED


def test_ack_over_upper_bound_is_invalid() -> None:
    box = Box()
    handshake(box)
    sent = box.send(s2c(ACK, ISN_B + 1, ISN_A + 1 + 5000), T0 + 1)
    assert sent.invalid
    assert "ACK is over upper bound" in sent.skb.note


def test_old_retransmission_is_ignored_not_invalid() -> None:
    box = Box()
    conn = handshake(box)
    box.send(c2s(ACK | PSH, ISN_A + 1, ISN_B + 1, payload=b"y" * 1000), T0 + 1)
    box.send(s2c(ACK, ISN_B + 1, ISN_A + 1001), T0 + 1.01)
    before = conn.timeout
    # II. end < sender.td_end - receiver.td_maxwin: a segment far below the window
    sent = box.send(c2s(ACK, (ISN_A - 20_000_000) & 0xFFFFFFFF, ISN_B + 1), T0 + 2)
    assert sent.ctinfo == CtInfo.ESTABLISHED  # accepted (IGNORE), ct attached
    assert conn.timeout == before  # ignored: no refresh


def test_sack_edge_counts_for_ack_check() -> None:
    box = Box()
    handshake(box)
    box.send(c2s(ACK | PSH, ISN_A + 1, ISN_B + 1, payload=b"y" * 100), T0 + 1)
    # a SACK block whose right edge is beyond what A sent: III fails on the SACK edge
    sack = bytes([1, 1, 5, 10]) + (ISN_A + 50).to_bytes(4, "big") + (ISN_A + 5000).to_bytes(4, "big")
    sent = box.send(s2c(ACK, ISN_B + 1, ISN_A + 1, options=sack), T0 + 1.1)
    assert sent.invalid and "ACK is over upper bound" in sent.skb.note
    # a SACK block inside the data is fine
    sack = bytes([1, 1, 5, 10]) + (ISN_A + 50).to_bytes(4, "big") + (ISN_A + 101).to_bytes(4, "big")
    sent = box.send(s2c(ACK, ISN_B + 1, ISN_A + 1, options=sack), T0 + 1.2)
    assert not sent.invalid


# --- the timeout choice (four caps) ---------------------------------------------------------------


def test_unacknowledged_data_caps_established_at_300() -> None:
    box = Box()
    conn = handshake(box)
    box.send(c2s(ACK | PSH, ISN_A + 1, ISN_B + 1, payload=b"d" * 100), T0 + 1)
    assert conn.timeout == pytest.approx(T0 + 1 + 300)
    box.send(s2c(ACK, ISN_B + 1, ISN_A + 101), T0 + 2)  # acked: back to 5 days
    assert conn.timeout == pytest.approx(T0 + 2 + 432000)


def test_retransmissions_cap_at_300() -> None:
    box = Box()
    conn = handshake(box)
    box.send(s2c(ACK, ISN_B + 1, ISN_A + 1, win=600), T0 + 1)
    for i in range(3):
        box.send(s2c(ACK, ISN_B + 1, ISN_A + 1, win=600), T0 + 2 + i)
    assert conn.tcp is not None and conn.tcp.retrans == 3
    assert conn.timeout == pytest.approx(T0 + 4 + 300)


def test_zero_window_caps_at_300() -> None:
    box = Box()
    conn = handshake(box)
    box.send(s2c(ACK, ISN_B + 1, ISN_A + 1, win=0), T0 + 1)
    assert conn.timeout == pytest.approx(T0 + 1 + 300)


def test_rst_in_established_closes_with_10s() -> None:
    box = Box()
    conn = handshake(box)
    sent = box.send(s2c(RST | ACK, ISN_B + 1, ISN_A + 1), T0 + 1)
    assert not sent.invalid
    assert conn.tcp is not None and conn.tcp.state == TcpState.CLOSE
    assert conn.timeout == pytest.approx(T0 + 1 + 10)


def test_rst_below_maxack_is_invalid_unless_ignore_invalid_rst() -> None:
    for ignore in (False, True):
        box = Box()
        box.cfg.tcp_ignore_invalid_rst = ignore
        conn = handshake(box)
        box.send(c2s(ACK | PSH, ISN_A + 1, ISN_B + 1, payload=b"d" * 100), T0 + 1)
        box.send(s2c(ACK, ISN_B + 1, ISN_A + 101), T0 + 1.1)
        # A RST from A whose seq is below what B has acked
        sent = box.send(c2s(RST, ISN_A + 50), T0 + 2)
        assert conn.tcp is not None
        if ignore:
            assert not sent.invalid
        else:
            assert sent.invalid and sent.skb.note == "tcp: invalid rst"
            assert conn.tcp.state == TcpState.ESTABLISHED


def test_inexact_rst_in_established_keeps_state() -> None:
    box = Box()
    conn = handshake(box)
    box.send(c2s(ACK | PSH, ISN_A + 1, ISN_B + 1, payload=b"d" * 100), T0 + 1)
    box.send(s2c(ACK, ISN_B + 1, ISN_A + 101), T0 + 1.1)
    sent = box.send(c2s(RST, ISN_A + 105), T0 + 2)  # in window but not exactly td_maxack (101)
    assert not sent.invalid
    assert conn.tcp is not None and conn.tcp.state == TcpState.ESTABLISHED  # waits for a challenge ACK


def test_handle_invalid_lowers_timeout_of_assured_ct() -> None:
    """An out-of-window FIN answering the peer's FIN on an ASSURED ct lowers the timeout to 300 s."""
    box = Box()
    conn = handshake(box)
    assert conn.timeout > T0 + 1000
    box.send(c2s(FIN | ACK, ISN_A + 1, ISN_B + 1), T0 + 1)  # FW, 120 s
    conn.timeout = T0 + 100000.0  # as if the deadline were still far away
    sent = box.send(s2c(FIN | ACK, ISN_B + 1 + 50_000_000, ISN_A + 2), T0 + 2)
    assert sent.invalid
    assert conn.timeout == pytest.approx(T0 + 2 + 300)


def test_challenge_ack_in_last_ack_does_not_close() -> None:
    box = Box()
    conn = handshake(box)
    box.send(s2c(FIN | ACK, ISN_B + 1, ISN_A + 1), T0 + 1)
    box.send(c2s(FIN | ACK, ISN_A + 1, ISN_B + 2), T0 + 1.1)
    assert conn.tcp is not None and conn.tcp.state == TcpState.LAST_ACK
    box.send(c2s(SYN, ISN_A + 500000), T0 + 2)  # ignored SYN in LAST_ACK: possible challenge ACK next
    sent = box.send(s2c(ACK, ISN_B + 2, ISN_A + 2), T0 + 2.1)
    assert not sent.invalid
    assert conn.tcp.state == TcpState.LAST_ACK


def test_simultaneous_open() -> None:
    box = Box()
    box.send(c2s(SYN, ISN_A, options=SYN_OPTS), T0)
    conn = box.find(ORIG, T0)
    assert conn is not None and conn.tcp is not None
    sent = box.send(s2c(SYN, ISN_B, options=SYN_OPTS), T0 + 0.01)
    assert sent.ctinfo == CtInfo.ESTABLISHED_REPLY
    assert st(conn) == TcpState.SYN_SENT2
    box.send(c2s(SYN | ACK, ISN_A, ISN_B + 1, options=SYN_OPTS), T0 + 0.02)
    assert st(conn) == TcpState.SYN_RECV
    box.send(s2c(ACK, ISN_B + 1, ISN_A + 1), T0 + 0.03)
    assert conn.tcp.state == TcpState.ESTABLISHED  # reply ACK in SR with simultaneous open


# --- checksums (§9) ---------------------------------------------------------------------------------


def test_bad_checksum_invalid_only_at_prerouting() -> None:
    box = Box()
    sent = box.send(c2s(SYN, ISN_A, bad_csum=True), T0)
    assert sent.invalid and sent.skb.note == "tcp: bad checksum"
    sent = box.send(c2s(SYN, ISN_A, bad_csum=True), T0, hook=Hook.LOCAL_OUT)
    assert sent.ctinfo == CtInfo.NEW
    box2 = Box()
    box2.cfg.set_sysctl("net.netfilter.nf_conntrack_checksum", "0")
    assert box2.send(c2s(SYN, ISN_A, bad_csum=True), T0).ctinfo == CtInfo.NEW


def test_truncated_header_is_invalid() -> None:
    box = Box()
    pkt = c2s(SYN, ISN_A, options=SYN_OPTS)
    short = pkt[:-4]
    short[2:4] = len(short).to_bytes(2, "big")
    sent: Sent = box.send(short, T0, hook=Hook.LOCAL_OUT)
    assert sent.invalid and sent.skb.note == "tcp: truncated packet"
    assert box.entries(T0) == []


def test_can_early_drop_closing_states() -> None:
    box = Box()
    conn = handshake(box)
    assert conn.tcp is not None
    assert not tcp_can_early_drop(conn)
    for st in (TcpState.FIN_WAIT, TcpState.CLOSE_WAIT, TcpState.LAST_ACK, TcpState.TIME_WAIT, TcpState.CLOSE):
        conn.tcp.state = st
        assert tcp_can_early_drop(conn)
    conn.tcp.state = TcpState.SYN_RECV
    assert not tcp_can_early_drop(conn)


def test_update_events_for_reply_and_state_changes() -> None:
    box = Box()
    handshake(box)
    events = box.table.drain_events()
    assert [(e.kind, e.reason) for e in events] == [
        (CtEventType.NEW, ""),
        (CtEventType.UPDATE, "protoinfo"),  # SYN_RECV + SEEN_REPLY
        (CtEventType.UPDATE, "protoinfo"),  # ESTABLISHED + ASSURED
    ]
    box.send(c2s(ACK | PSH, ISN_A + 1, ISN_B + 1, payload=b"d"), T0 + 1)  # nothing changes
    assert box.table.drain_events() == []
