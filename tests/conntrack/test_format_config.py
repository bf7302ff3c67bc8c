"""`conntrack -L/-E/-S` text (§7.3) and the sysctl config (§3.1)."""

from __future__ import annotations

import pytest

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.conn import Conn, TcpConntrack
from natbox.conntrack.format import (
    format_conntrack,
    format_event,
    format_proc,
    format_stats,
    parse_conntrack_line,
    summary_line,
)
from natbox.conntrack.table import ConntrackStats, CtEvent, CtEventType
from natbox.netfilter import CtStatus, TcpState
from natbox.testing.conntrack import t

NOW = 500.0
REPLIED = CtStatus.CONFIRMED | CtStatus.SEEN_REPLY
ASSURED = REPLIED | CtStatus.ASSURED


def mk(orig: tuple[str, int, str, int, int], reply: tuple[str, int, str, int, int], remaining: float,
       status: int, state: TcpState | None = None) -> Conn:
    conn = Conn(t(*orig[:2], *orig[2:4], orig[4]), t(*reply[:2], *reply[2:4], reply[4]), now=NOW, ct_id=1)
    conn.timeout = NOW + remaining
    conn.status = status
    if state is not None:
        conn.tcp = TcpConntrack()
        conn.tcp.state = state
    return conn


# The [V] example lines of §7.3, and conns that match them.
EXAMPLES: list[tuple[str, Conn, dict[str, object]]] = [
    (
        "tcp      6 117 TIME_WAIT src=192.168.50.2 dst=203.0.113.2 sport=40000 dport=8080 src=203.0.113.2 "
        "dst=203.0.113.1 sport=8080 dport=40000 [ASSURED] mark=0 use=1",
        mk(("192.168.50.2", 40000, "203.0.113.2", 8080, 6), ("203.0.113.2", 8080, "203.0.113.1", 40000, 6),
           117.6, ASSURED, TcpState.TIME_WAIT),
        {},
    ),
    (
        "tcp      6 431998 ESTABLISHED src=192.168.50.3 dst=203.0.113.2 sport=100 dport=8080 src=203.0.113.2 "
        "dst=203.0.113.1 sport=8080 dport=410 [ASSURED] mark=0 use=1",
        mk(("192.168.50.3", 100, "203.0.113.2", 8080, 6), ("203.0.113.2", 8080, "203.0.113.1", 410, 6),
           431998.9, ASSURED, TcpState.ESTABLISHED),
        {},
    ),
    (
        "tcp      6 119 SYN_SENT src=192.168.50.2 dst=203.0.113.77 sport=47000 dport=80 [UNREPLIED] "
        "src=203.0.113.77 dst=203.0.113.1 sport=80 dport=47000 mark=0 use=2",
        mk(("192.168.50.2", 47000, "203.0.113.77", 80, 6), ("203.0.113.77", 80, "203.0.113.1", 47000, 6),
           119.2, CtStatus.CONFIRMED, TcpState.SYN_SENT),
        {"use": 2},
    ),
    (
        "udp      17 27 src=192.168.50.2 dst=203.0.113.2 sport=40002 dport=5001 [UNREPLIED] src=203.0.113.2 "
        "dst=203.0.113.1 sport=5001 dport=40002 mark=0 use=1",
        mk(("192.168.50.2", 40002, "203.0.113.2", 5001, 17), ("203.0.113.2", 5001, "203.0.113.1", 40002, 17),
           27.99, CtStatus.CONFIRMED),
        {},
    ),
    (
        "udp      17 119 src=192.168.50.2 dst=203.0.113.2 sport=48000 dport=5000 src=203.0.113.2 dst=203.0.113.1 "
        "sport=5000 dport=48000 [ASSURED] mark=0 use=1",
        mk(("192.168.50.2", 48000, "203.0.113.2", 5000, 17), ("203.0.113.2", 5000, "203.0.113.1", 48000, 17),
           119.5, ASSURED),
        {},
    ),
    (
        "icmp     1 28 src=192.168.50.3 dst=203.0.113.2 type=8 code=0 id=4242 src=203.0.113.2 dst=203.0.113.1 "
        "type=0 code=0 id=64432 mark=0 use=1",
        mk(("192.168.50.3", 4242, "203.0.113.2", 8 << 8, 1), ("203.0.113.2", 64432, "203.0.113.1", 0, 1),
           28.01, REPLIED),
        {},
    ),
    (
        "unknown  253 599 src=192.168.50.2 dst=203.0.113.2 [UNREPLIED] src=203.0.113.2 dst=203.0.113.1 mark=0 use=1",
        mk(("192.168.50.2", 0, "203.0.113.2", 0, 253), ("203.0.113.2", 0, "203.0.113.1", 0, 253), 599.9,
           CtStatus.CONFIRMED),
        {},
    ),
]


@pytest.mark.parametrize(("line", "conn", "kw"), EXAMPLES)
def test_reference_example_lines(line: str, conn: Conn, kw: dict[str, int]) -> None:
    assert format_conntrack(conn, NOW, **kw) == line  # type: ignore[arg-type]


def test_acct_mark_zone_example() -> None:
    conn = mk(("192.168.50.2", 53000, "203.0.113.2", 5000, 17), ("203.0.113.2", 5000, "203.0.113.1", 53000, 17),
              27.5, CtStatus.CONFIRMED)
    conn.acct_packets = [1, 0]
    conn.acct_bytes = [30, 0]
    conn.mark = 7
    conn.zone = 5
    assert format_conntrack(conn, NOW, acct=True) == (
        "udp      17 27 src=192.168.50.2 dst=203.0.113.2 sport=53000 dport=5000 packets=1 bytes=30 [UNREPLIED] "
        "src=203.0.113.2 dst=203.0.113.1 sport=5000 dport=53000 packets=0 bytes=0 mark=7 zone=5 use=1"
    )


def test_extended_and_proc_forms() -> None:
    _, conn, _ = EXAMPLES[0]
    assert format_conntrack(conn, NOW, extended=True).startswith("ipv4     2 tcp      6 117 TIME_WAIT src=")
    proc = format_proc(conn, NOW)
    assert proc.startswith("ipv4     2 tcp      6 117 TIME_WAIT src=192.168.50.2 ")
    assert proc.endswith("[ASSURED] mark=0 zone=0 use=2")


def test_timeout_truncates_and_never_negative() -> None:
    _, conn, _ = EXAMPLES[3]
    assert format_conntrack(conn, NOW + 27.99 - 0.001).split()[2] == "0"
    assert format_conntrack(conn, NOW + 100).split()[2] == "0"


def test_event_lines() -> None:
    conn = mk(("10.0.0.2", 40000, "10.0.1.2", 80, 6), ("10.0.1.2", 80, "10.0.0.2", 40000, 6), 120,
              CtStatus.CONFIRMED, TcpState.SYN_SENT)
    new = format_event(CtEvent(CtEventType.NEW, conn, NOW))
    assert new == (
        "    [NEW] tcp      6 120 SYN_SENT src=10.0.0.2 dst=10.0.1.2 sport=40000 dport=80 [UNREPLIED] "
        "src=10.0.1.2 dst=10.0.0.2 sport=80 dport=40000"
    )
    conn.status |= CtStatus.SEEN_REPLY | CtStatus.ASSURED
    assert format_event(CtEvent(CtEventType.UPDATE, conn, NOW, "")) == (
        " [UPDATE] tcp      6 120 src=10.0.0.2 dst=10.0.1.2 sport=40000 dport=80 "
        "src=10.0.1.2 dst=10.0.0.2 sport=80 dport=40000 [ASSURED]"
    )
    conn.mark = 3
    destroy = format_event(CtEvent(CtEventType.DESTROY, conn, NOW + 120))
    assert destroy == (
        "[DESTROY] tcp      6 SYN_SENT src=10.0.0.2 dst=10.0.1.2 sport=40000 dport=80 "
        "src=10.0.1.2 dst=10.0.0.2 sport=80 dport=40000 [ASSURED] mark=3"
    )


def test_stats_and_summary() -> None:
    stats = ConntrackStats(invalid=2, insert_failed=3, drop=3)
    assert format_stats(stats) == (
        "cpu=0   \tfound=0 invalid=2 insert=0 insert_failed=3 drop=3 early_drop=0 error=0 search_restart=0 "
        "clash_resolve=0 chaintoolong=0 "
    )
    assert summary_line(3) == "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown."


@pytest.mark.parametrize(("line", "conn", "kw"), EXAMPLES)
def test_parse_round_trip(line: str, conn: Conn, kw: dict[str, int]) -> None:
    parsed = parse_conntrack_line(line)
    assert parsed["protonum"] == conn.original.proto
    assert parsed["timeout"] == int(conn.timeout - NOW)
    assert parsed["unreplied"] == (not conn.status & CtStatus.SEEN_REPLY)
    assert parsed["assured"] == bool(conn.status & CtStatus.ASSURED)
    assert parsed["orig"]["src"] == line.split("src=")[1].split(maxsplit=1)[0]
    assert parsed["mark"] == 0 and parsed["use"] == kw.get("use", 1)
    assert parsed["state"] == (TcpState(conn.tcp.state).name if conn.tcp else None)


def test_parse_event_and_counters() -> None:
    parsed = parse_conntrack_line(
        "[DESTROY] udp      17 src=10.0.0.2 dst=10.0.1.2 sport=1 dport=2 packets=3 bytes=90 [UNREPLIED] "
        "src=10.0.1.2 dst=10.0.0.2 sport=2 dport=1 packets=0 bytes=0 mark=7 zone=5"
    )
    assert parsed["event"] == "DESTROY" and parsed["timeout"] is None and parsed["state"] is None
    assert parsed["orig"] == {"src": "10.0.0.2", "dst": "10.0.1.2", "sport": 1, "dport": 2}
    assert parsed["reply"]["dport"] == 1
    assert parsed["orig_counters"] == {"packets": 3, "bytes": 90}
    assert parsed["reply_counters"] == {"packets": 0, "bytes": 0}
    assert parsed["zone"] == 5 and parsed["mark"] == 7
    with pytest.raises(ValueError, match="not a conntrack line"):
        parse_conntrack_line("conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.")


# --- config ------------------------------------------------------------------------------------------


def test_defaults_are_the_kernels() -> None:
    cfg = ConntrackConfig()
    expected = {
        "tcp_timeout_syn_sent": "120", "tcp_timeout_syn_recv": "60", "tcp_timeout_established": "432000",
        "tcp_timeout_fin_wait": "120", "tcp_timeout_close_wait": "60", "tcp_timeout_last_ack": "30",
        "tcp_timeout_time_wait": "120", "tcp_timeout_close": "10", "tcp_timeout_max_retrans": "300",
        "tcp_timeout_unacknowledged": "300", "udp_timeout": "30", "udp_timeout_stream": "120",
        "icmp_timeout": "30", "generic_timeout": "600", "gre_timeout": "30", "gre_timeout_stream": "180",
        "tcp_loose": "1", "tcp_be_liberal": "0", "tcp_ignore_invalid_rst": "0", "tcp_max_retrans": "3",
        "checksum": "1", "acct": "0", "timestamp": "0", "log_invalid": "0", "events": "2", "max": "262144",
        "expect_max": "4096",
    }
    for short, value in expected.items():
        assert cfg.get_sysctl("net.netfilter.nf_conntrack_" + short) == value, short
    assert cfg.get_sysctl("nf_conntrack_buckets") == "262144"


def test_set_sysctl_names_and_values() -> None:
    cfg = ConntrackConfig()
    cfg.set_sysctl("net.netfilter.nf_conntrack_tcp_timeout_established", "600")
    assert cfg.tcp_timeout_established == 600
    assert cfg.tcp_timeouts()[TcpState.ESTABLISHED] == 600
    cfg.set_sysctl("nf_conntrack_tcp_be_liberal", " 1\n")
    assert cfg.tcp_be_liberal is True
    cfg.set_sysctl("/proc/sys/net/netfilter/nf_conntrack_udp_timeout", "10")
    assert cfg.udp_timeout == 10
    cfg.set_sysctl("nf_conntrack_max", "1000")
    assert cfg.max_entries == 1000
    cfg.tcp_timeout_syn_sent = 5  # direct writes invalidate the cache too
    assert cfg.tcp_timeouts()[TcpState.SYN_SENT] == 5 and cfg.tcp_timeouts()[TcpState.NONE] == 5


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("nf_conntrack_tcp_timeout_bogus", "1", "unknown conntrack sysctl"),
        ("net.ipv4.ip_forward", "1", "unknown conntrack sysctl"),
        ("nf_conntrack_tcp_loose", "2", "must be between 0 and 1"),
        ("nf_conntrack_tcp_loose", "yes", "not an integer"),
        ("nf_conntrack_udp_timeout", "-5", "must be between"),
        ("nf_conntrack_buckets", "1024", "read-only"),
        ("nf_conntrack_count", "1", "read-only"),
    ],
)
def test_set_sysctl_errors(name: str, value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ConntrackConfig().set_sysctl(name, value)


def test_sysctl_listing() -> None:
    names = ConntrackConfig.sysctl_names()
    assert "net.netfilter.nf_conntrack_tcp_timeout_unacknowledged" in names
    assert names == sorted(names)
    assert ConntrackConfig().as_sysctls()["net.netfilter.nf_conntrack_generic_timeout"] == "600"
