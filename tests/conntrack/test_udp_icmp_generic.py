"""UDP (§3.3, Appendix A item 13), ICMP queries and errors (§3.4), generic and GRE (§3.5)."""

from __future__ import annotations

import struct

import pytest

from natbox.conntrack.format import format_conntrack
from natbox.conntrack.table import CtEventType
from natbox.netfilter import CtInfo, CtStatus, Hook
from natbox.testing.conntrack import A, B, Box, C, icmp, icmp_error, ip4, raw, t, udp

T0 = 2000.0
U = t(A, 40002, B, 5001, 17)


def req(now: float, box: Box, *, zero_csum: bool = False) -> CtInfo:
    return box.send(udp(A, B, 40002, 5001, zero_csum=zero_csum), now).ctinfo


def rep(now: float, box: Box) -> CtInfo:
    return box.send(udp(B, A, 5001, 40002), now).ctinfo


# --- UDP -----------------------------------------------------------------------------------------


def test_udp_first_packet_30s_unreplied() -> None:
    box = Box()
    assert req(T0, box) == CtInfo.NEW
    [conn] = box.entries(T0)
    assert conn.timeout == T0 + 30
    assert not conn.status & CtStatus.SEEN_REPLY
    assert req(T0 + 1, box) == CtInfo.NEW  # later packets before any reply are still NEW
    assert conn.timeout == T0 + 31


def test_udp_request_reply_stays_30s_without_assured() -> None:
    box = Box()
    req(T0, box)
    assert rep(T0 + 0.01, box) == CtInfo.ESTABLISHED_REPLY
    conn = box.find(U, T0 + 0.5)
    assert conn is not None
    assert conn.status & CtStatus.SEEN_REPLY and not conn.status & CtStatus.ASSURED
    assert box.timeout_of(U, T0 + 0.5) == 29  # [V] "After a request/reply: 29 s, no flag"
    # a second exchange within 2 s: still 29
    assert req(T0 + 1.0, box) == CtInfo.ESTABLISHED
    rep(T0 + 1.01, box)
    assert box.timeout_of(U, T0 + 1.5) == 29
    assert not conn.status & CtStatus.ASSURED


def test_udp_packet_after_2s_gives_120_and_assured() -> None:
    box = Box()
    req(T0, box)
    rep(T0 + 0.01, box)
    req(T0 + 2.2, box)  # [V] "A packet 2.2 s later: 119 and [ASSURED]"
    conn = box.find(U, T0 + 2.7)
    assert conn is not None and conn.status & CtStatus.ASSURED
    assert box.timeout_of(U, T0 + 2.7) == 119
    events = [(e.kind, bool(e.conn.status & CtStatus.ASSURED)) for e in box.table.drain_events()]
    assert events[0][0] == CtEventType.NEW
    assert events[-1] == (CtEventType.UPDATE, True)


def test_udp_without_reply_never_assured() -> None:
    box = Box()
    req(T0, box)
    req(T0 + 5, box)
    conn = box.find(U, T0 + 5)
    assert conn is not None and not conn.status & CtStatus.ASSURED
    assert conn.timeout == T0 + 35


def test_udp_zero_checksum_accepted_bad_checksum_invalid() -> None:
    box = Box()
    assert req(T0, box, zero_csum=True) == CtInfo.NEW
    box2 = Box()
    sent = box2.send(udp(A, B, 1, 2, bad_csum=True), T0)
    assert sent.invalid and sent.skb.note == "udp: bad checksum"
    assert box2.entries(T0) == []
    # locally generated packets are trusted
    assert box2.send(udp(A, B, 1, 2, bad_csum=True), T0, hook=Hook.LOCAL_OUT).ctinfo == CtInfo.NEW


def test_udp_length_field_checks() -> None:
    box = Box()
    pkt = udp(A, B, 1, 2, b"abcd")
    long_len = bytearray(pkt)
    struct.pack_into("!H", long_len, 24, 100)  # udp.len > remaining
    sent = box.send(long_len, T0, hook=Hook.LOCAL_OUT)
    assert sent.invalid and sent.skb.note == "udp: truncated/malformed packet"
    short_len = bytearray(pkt)
    struct.pack_into("!H", short_len, 24, 7)
    assert box.send(short_len, T0, hook=Hook.LOCAL_OUT).invalid
    tiny = ip4(A, B, 17, b"\x00\x01\x00\x02\x00")  # 5 bytes: ports present, header short
    sent = box.send(tiny, T0)
    assert sent.invalid and sent.skb.note == "udp: short packet"
    assert box.entries(T0) == []


def test_udp_acct_counts_packets_and_bytes_per_direction() -> None:
    box = Box()
    box.cfg.set_sysctl("nf_conntrack_acct", "1")
    p1 = udp(A, B, 53000, 5000, b"x" * 2)  # 30 bytes, as §7.3's example
    box.send(p1, T0)
    conn = box.find(t(A, 53000, B, 5000, 17), T0)
    assert conn is not None
    assert (conn.acct_packets, conn.acct_bytes) == ([1, 0], [30, 0])
    box.send(udp(B, A, 5000, 53000, b"yy"), T0 + 0.1)
    assert (conn.acct_packets, conn.acct_bytes) == ([1, 1], [30, 30])


# --- ICMP --------------------------------------------------------------------------------------------


def test_icmp_echo_30s_not_deleted_on_reply_never_assured() -> None:
    box = Box()
    sent = box.send(icmp(A, B, 8, ident=23719, seq=1), T0)
    assert sent.ctinfo == CtInfo.NEW
    [conn] = box.entries(T0)
    assert conn.timeout == T0 + 30
    assert conn.original == t(A, 23719, B, 8 << 8, 1)
    assert conn.reply == t(B, 23719, A, 0, 1)
    sent = box.send(icmp(B, A, 0, ident=23719, seq=1), T0 + 0.01)
    assert sent.ctinfo == CtInfo.ESTABLISHED_REPLY
    assert box.entries(T0 + 0.5) == [conn]
    assert conn.status & CtStatus.SEEN_REPLY and not conn.status & CtStatus.ASSURED
    assert box.timeout_of(conn.original, T0 + 0.5) == 29
    line = format_conntrack(conn, T0 + 0.5)
    assert line == (
        "icmp     1 29 src=10.0.0.2 dst=10.0.1.2 type=8 code=0 id=23719 "
        "src=10.0.1.2 dst=10.0.0.2 type=0 code=0 id=23719 mark=0 use=1"
    )


def test_echo_reply_without_request_is_invalid() -> None:
    box = Box()
    sent = box.send(icmp(B, A, 0, ident=5), T0)
    assert sent.invalid and sent.skb.note == "icmp: can't create new conn with type 0"
    assert box.entries(T0) == []
    assert box.table.stats.invalid == 1


@pytest.mark.parametrize("itype", [9, 10, 14, 16, 18])
def test_icmp_types_that_cannot_create_a_ct(itype: int) -> None:
    box = Box()
    assert box.send(icmp(A, B, itype), T0).invalid
    assert box.entries(T0) == []


def test_icmp_type_above_18_is_an_error_stat() -> None:
    box = Box()
    sent = box.send(icmp(A, B, 19), T0)
    assert sent.invalid and sent.skb.note == "icmp: invalid icmp type 19"
    assert box.table.stats.error == 1 and box.table.stats.invalid == 0


def test_icmp_bad_checksum_at_prerouting() -> None:
    box = Box()
    sent = box.send(icmp(A, B, 8, ident=1, bad_csum=True), T0)
    assert sent.invalid and sent.skb.note == "icmp: bad checksum"
    assert box.send(icmp(A, B, 8, ident=1, bad_csum=True), T0, hook=Hook.LOCAL_OUT).ctinfo == CtInfo.NEW


def test_port_unreachable_is_related_reply_and_ct_stays_unreplied() -> None:
    box = Box()
    offending = udp(A, B, 40002, 5001)
    box.send(offending, T0)
    conn = box.find(U, T0)
    assert conn is not None
    deadline = conn.timeout
    err = icmp_error(B, A, 3, 3, offending)
    sent = box.send(err, T0 + 0.01)
    assert sent.ctinfo == CtInfo.RELATED_REPLY and sent.ct is conn
    assert not conn.status & CtStatus.SEEN_REPLY  # [V] the UDP ct stayed [UNREPLIED]
    assert conn.timeout == deadline  # errors do not refresh
    assert len(box.entries(T0 + 0.01)) == 1  # no ct for the error itself


def test_icmp_error_about_reply_direction_is_related() -> None:
    box = Box()
    box.send(udp(A, B, 40002, 5001), T0)
    reply_pkt = udp(B, A, 5001, 40002)
    box.send(reply_pkt, T0 + 0.01)
    sent = box.send(icmp_error(A, B, 3, 3, reply_pkt), T0 + 0.02)  # A complains about B's packet
    assert sent.ctinfo == CtInfo.RELATED


def test_icmp_error_outer_daddr_mismatch_is_invalid() -> None:
    box = Box()
    offending = udp(A, B, 40002, 5001)
    box.send(offending, T0)
    sent = box.send(icmp_error(B, C, 3, 3, offending), T0 + 0.01)  # sent to C, about A's flow
    assert sent.invalid and sent.skb.note == "icmp: outer daddr != inner ct daddr"
    assert box.table.stats.error == 1


def test_icmp_error_without_ct_is_invalid() -> None:
    box = Box()
    sent = box.send(icmp_error(B, A, 3, 3, udp(A, B, 40002, 5001)), T0)
    assert sent.invalid and sent.skb.note == "icmp: no ct for inner tuple"
    assert box.entries(T0) == []


def test_icmp_error_quoting_a_fragment_is_invalid() -> None:
    box = Box()
    offending = udp(A, B, 40002, 5001)
    box.send(offending, T0)
    quoted = bytearray(offending)
    quoted[6:8] = b"\x00\x10"  # fragment offset 16
    assert box.send(icmp_error(B, A, 3, 3, quoted), T0).invalid


def test_icmp_error_about_icmp_echo() -> None:
    box = Box()
    echo = icmp(A, B, 8, ident=77)
    box.send(echo, T0)
    sent = box.send(icmp_error(B, A, 11, 0, echo), T0 + 0.01)
    assert sent.ctinfo == CtInfo.RELATED_REPLY


# --- generic and GRE --------------------------------------------------------------------------------


def test_unknown_protocol_600s() -> None:
    box = Box()
    box.send(raw(A, B, 253), T0)
    [conn] = box.entries(T0)
    assert conn.original == t(A, 0, B, 0, 253) and conn.reply == t(B, 0, A, 0, 253)
    assert box.timeout_of(conn.original, T0 + 0.5) == 599
    assert format_conntrack(conn, T0 + 0.5) == (
        "unknown  253 599 src=10.0.0.2 dst=10.0.1.2 [UNREPLIED] src=10.0.1.2 dst=10.0.0.2 mark=0 use=1"
    )


def test_gre_keys_zero_30s_then_180s_assured() -> None:
    box = Box()
    gre = b"\x00\x00\x08\x00" + b"\x45" * 20  # GRE version 0 carrying IPv4
    box.send(raw(A, B, 47, gre), T0)
    [conn] = box.entries(T0)
    assert conn.original == t(A, 0, B, 0, 47)
    assert conn.timeout == T0 + 30
    assert format_conntrack(conn, T0 + 0.5) == (
        "gre      47 29 src=10.0.0.2 dst=10.0.1.2 srckey=0x0 dstkey=0x0 [UNREPLIED] "
        "src=10.0.1.2 dst=10.0.0.2 srckey=0x0 dstkey=0x0 mark=0 use=1"
    )
    box.send(raw(B, A, 47, gre), T0 + 1)
    box.send(raw(A, B, 47, gre), T0 + 2)
    assert conn.status & CtStatus.ASSURED
    assert conn.timeout == T0 + 2 + 180


def test_pptp_gre_uses_call_id_as_dst_key() -> None:
    box = Box()
    pptp = b"\x30\x01\x88\x0b\x00\x00\x12\x34" + b"\x00" * 8  # K + version 1, PPP, call id 0x1234
    box.send(raw(A, B, 47, pptp), T0)
    [conn] = box.entries(T0)
    assert conn.original == t(A, 0, B, 0x1234, 47)
    bad = b"\x30\x01\x08\x00\x00\x00\x12\x34"  # version 1 but not PPP: no tuple
    assert Box().send(raw(A, B, 47, bad), T0).invalid
