"""The SCTP tracker (nf_conntrack_proto_sctp.c): states, timeouts, verification tags, `conntrack -L` text."""

from __future__ import annotations

from natbox.conntrack.format import format_conntrack, format_proc
from natbox.conntrack.proto.sctp import SCTP_CONNTRACK_NAMES
from natbox.netfilter import CtInfo, CtStatus
from natbox.testing.conntrack import A, B, Box, ip4, t
from natbox.wire import sctp as w

TAG_A, TAG_B = 0x11111111, 0x22222222
TUPLE = t(A, 5000, B, 38412, 132)


def _out(vtag: int, chunks: bytes, *, sport: int = 5000) -> bytearray:
    return ip4(A, B, 132, w.build_sctp(sport, 38412, vtag, chunks))


def _back(vtag: int, chunks: bytes) -> bytearray:
    return ip4(B, A, 132, w.build_sctp(38412, 5000, vtag, chunks))


def _state(box: Box, now: float) -> str:
    conn = box.find(TUPLE, now)
    assert conn is not None and conn.sctp is not None
    return SCTP_CONNTRACK_NAMES[conn.sctp.state]


def _handshake(box: Box, now: float = 1.0) -> None:
    assert not box.send(_out(0, w.build_init(w.INIT, TAG_A)), now).invalid
    assert _state(box, now) == "CLOSED" and box.timeout_of(TUPLE, now) == 10
    assert not box.send(_back(TAG_A, w.build_init(w.INIT_ACK, TAG_B)), now).invalid
    assert _state(box, now) == "COOKIE_WAIT" and box.timeout_of(TUPLE, now) == 3
    assert not box.send(_out(TAG_B, w.build_chunk(w.COOKIE_ECHO, b"cookie!!")), now).invalid
    assert _state(box, now) == "COOKIE_ECHOED" and box.timeout_of(TUPLE, now) == 3
    assert not box.send(_back(TAG_A, w.build_chunk(w.COOKIE_ACK)), now).invalid
    assert _state(box, now) == "ESTABLISHED" and box.timeout_of(TUPLE, now) == 210


def test_handshake_data_and_shutdown() -> None:
    box = Box()
    _handshake(box)
    conn = box.find(TUPLE, 1.0)
    assert conn is not None and conn.status & CtStatus.ASSURED
    sent = box.send(_out(TAG_B, w.build_chunk(w.DATA, b"\0" * 12 + b"hello")), 2.0)
    assert sent.ctinfo == CtInfo.ESTABLISHED and _state(box, 2.0) == "ESTABLISHED"
    # a wrong verification tag makes a packet INVALID and leaves the entry as it was
    assert box.send(_out(TAG_A, w.build_chunk(w.DATA, b"\0" * 12 + b"x")), 3.0).invalid
    assert box.timeout_of(TUPLE, 3.0) == 209
    # SHUTDOWN, SHUTDOWN_ACK, SHUTDOWN_COMPLETE
    box.send(_out(TAG_B, w.build_chunk(w.SHUTDOWN, b"\0\0\0\1")), 4.0)
    assert _state(box, 4.0) == "SHUTDOWN_SENT" and box.timeout_of(TUPLE, 4.0) == 3
    box.send(_back(TAG_A, w.build_chunk(w.SHUTDOWN_ACK)), 4.0)
    assert _state(box, 4.0) == "SHUTDOWN_ACK_SENT"
    box.send(_out(TAG_B, w.build_chunk(w.SHUTDOWN_COMPLETE)), 4.0)
    assert _state(box, 4.0) == "CLOSED" and box.timeout_of(TUPLE, 4.0) == 10


def test_conntrack_list_line() -> None:
    box = Box()
    _handshake(box)
    conn = box.find(TUPLE, 1.0)
    assert conn is not None
    assert format_conntrack(conn, 1.0) == (
        "sctp     132 210 ESTABLISHED src=10.0.0.2 dst=10.0.1.2 sport=5000 dport=38412 src=10.0.1.2 "
        "dst=10.0.0.2 sport=38412 dport=5000 [ASSURED] mark=0 use=1")
    assert format_proc(conn, 1.0).startswith("ipv4     2 sctp     132 210 ESTABLISHED src=10.0.0.2 ")


def test_invalid_new_flows() -> None:
    box = Box()
    # DATA cannot open a flow; neither can ABORT or COOKIE_ACK; an INIT needs a zero tag
    assert box.send(_out(TAG_B, w.build_chunk(w.DATA, b"\0" * 16)), 1.0).invalid
    assert box.send(_out(TAG_B, w.build_chunk(w.ABORT)), 1.0).invalid
    assert box.send(_out(TAG_B, w.build_chunk(w.COOKIE_ACK)), 1.0).invalid
    assert box.send(_out(5, w.build_init(w.INIT, TAG_A)), 1.0).invalid
    # INIT bundled with another chunk, and a chunk of length 0, fail the basic checks
    assert box.send(_out(0, w.build_init(w.INIT, TAG_A) + w.build_chunk(w.DATA, b"\0" * 12)), 1.0).invalid
    assert box.send(_out(0, b"\0\0\0\0"), 1.0).invalid
    # a bad CRC at PRE_ROUTING
    bad = _out(0, w.build_init(w.INIT, TAG_A))
    bad[-1] ^= 1
    assert box.send(bad, 1.0).invalid
    assert box.entries(1.0) == []
    assert box.table.stats.invalid == 7


def test_init_retransmit_does_not_refresh() -> None:
    box = Box()
    box.send(_out(0, w.build_init(w.INIT, TAG_A)), 1.0)
    sent = box.send(_out(0, w.build_init(w.INIT, TAG_A)), 6.0)
    assert not sent.invalid and box.timeout_of(TUPLE, 6.0) == 5


def test_abort_closes_with_own_tag_or_peer_tag_and_t_flag() -> None:
    box = Box()
    _handshake(box)
    # ABORT with the T flag carries the sender's own tag (the peer's vtag[dir] is the other one)
    assert box.send(_back(TAG_B, w.build_chunk(w.ABORT)), 2.0).invalid
    assert box.send(_back(TAG_B, w.build_chunk(w.ABORT, flags=1)), 2.0).ctinfo == CtInfo.ESTABLISHED_REPLY
    assert _state(box, 2.0) == "CLOSED"


def test_heartbeat_opens_a_secondary_path_and_early_drop() -> None:
    box = Box()
    sent = box.send(_out(TAG_B, w.build_chunk(w.HEARTBEAT, b"\0\1\0\x08hbhb")), 1.0)
    assert not sent.invalid and _state(box, 1.0) == "HEARTBEAT_SENT" and box.timeout_of(TUPLE, 1.0) == 30
    box.send(_back(TAG_A, w.build_chunk(w.HEARTBEAT_ACK, b"\0\1\0\x08hbhb")), 1.0)
    assert _state(box, 1.0) == "ESTABLISHED"
    conn = box.find(TUPLE, 1.0)
    assert conn is not None and conn.sctp is not None and conn.sctp.vtag == [TAG_B, TAG_A]


def test_events_report_state_changes() -> None:
    box = Box()
    _handshake(box)
    assert [str(ev.kind) for ev in box.table.drain_events()] == ["NEW", "UPDATE", "UPDATE", "UPDATE"]


def test_timeouts_follow_the_sysctls() -> None:
    box = Box()
    box.cfg.set_sysctl("net.netfilter.nf_conntrack_sctp_timeout_established", "60")
    _handshake_60(box)


def _handshake_60(box: Box) -> None:
    box.send(_out(0, w.build_init(w.INIT, TAG_A)), 1.0)
    box.send(_back(TAG_A, w.build_init(w.INIT_ACK, TAG_B)), 1.0)
    box.send(_out(TAG_B, w.build_chunk(w.COOKIE_ECHO, b"c")), 1.0)
    box.send(_back(TAG_A, w.build_chunk(w.COOKIE_ACK)), 1.0)
    assert box.timeout_of(TUPLE, 1.0) == 60


def test_event_lines_show_the_state_at_the_time() -> None:
    from natbox.conntrack.format import format_event

    box = Box()
    _handshake(box)
    lines = [format_event(ev) for ev in box.table.drain_events()]
    assert [line.split()[4] for line in lines] == ["CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED"]


def test_a_saved_association_is_restored_with_its_tags() -> None:
    import json

    from natbox.conntrack.persist import dump_conns, load_conns

    box = Box()
    _handshake(box)
    doc = json.loads(json.dumps(dump_conns(box.entries(1.0), 1.0)))
    other = Box()
    load_conns(doc, other.table, 5.0, elapsed=1.0)
    # the restored entry accepts the association's DATA (its tags came back), and refreshes to 210 s
    assert not other.send(_out(TAG_B, w.build_chunk(w.DATA, b"\0" * 12 + b"x")), 5.0).invalid
    assert other.timeout_of(TUPLE, 5.0) == 210


def test_conntrack_state_filter_knows_sctp_states() -> None:
    import pytest

    from natbox.gateway.ctcommand import CtUsageError, parse_conntrack_args

    box = Box()
    _handshake(box)
    conn = box.find(TUPLE, 1.0)
    assert conn is not None
    assert parse_conntrack_args(["-L", "-p", "sctp", "--state", "ESTABLISHED"]).keep(conn)
    assert not parse_conntrack_args(["-L", "-p", "sctp", "--state", "CLOSED"]).keep(conn)
    with pytest.raises(CtUsageError, match="unknown SCTP state `SYN_SENT'"):
        parse_conntrack_args(["-L", "-p", "sctp", "--state", "SYN_SENT"])
