"""Replay packets captured at a real Linux 6.18 router and compare with what its conntrack printed.

The fixtures (data/*.json) were recorded in throwaway namespaces: a client 10.99.0.2, a router
10.99.0.1/10.99.1.1 (ip_forward=1, an xt_conntrack rule so conntrack runs, no NAT) and a server
10.99.1.2 with a UDP echo on :5000 and a TCP listener on :8080. `tcpdump -i any -Q in` in the router
captured every packet conntrack saw at PRE_ROUTING. Traffic: an ICMP echo, UDP to a closed port (ICMP port
unreachable back), a UDP exchange repeated after 2.2 s, one repeated after 0.5 s, a refused TCP connect, a
TCP connect + close (TIME_WAIT), a held TCP connection, and raw SYN / ACK / FIN / SYN+FIN / RST / proto 253 /
an unsolicited echo reply / a bad-checksum UDP datagram to an unreachable host.

Comparison rules (§10): `use=` is ignored (packets queued for ARP hold references); the timeout may differ by
the sub-second part of the elapsed time (kernel − 1 ≤ natbox ≤ kernel); the flush's DESTROY events come in
hash order, so they are compared as a set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.format import (
    format_conntrack,
    format_event,
    format_proc,
    format_stats,
)
from natbox.conntrack.table import ConntrackTable
from natbox.testing.conntrack import replay_capture as replay
from natbox.testing.conntrack import timeouts_close, without_timeout

DATA = Path(__file__).resolve().parent / "data"


def load(name: str) -> dict[str, Any]:
    with (DATA / name).open() as fh:
        result: dict[str, Any] = json.load(fh)
    return result


def test_conntrack_list_and_stats_match_the_kernel() -> None:
    fx = load("kernel_list_6.18.json")
    table = ConntrackTable()
    cfg = ConntrackConfig()
    now = fx["snapshot_time"]
    replay(fx["packets"], table, cfg, now)
    mine = sorted(format_conntrack(c, now) for c in table.live(now))
    theirs = sorted(fx["conntrack_L"])
    assert len(mine) == len(theirs) == 9
    for a, b in zip(mine, theirs, strict=True):
        assert without_timeout(a) == without_timeout(b)
        assert timeouts_close(a, b), (a, b)
    assert format_stats(table.stats) == fx["conntrack_S_cpu0"]


def test_proc_lines_match_the_kernel() -> None:
    fx = load("kernel_list_6.18.json")
    table = ConntrackTable()
    now = fx["snapshot_time"]
    replay(fx["packets"], table, ConntrackConfig(), now)
    mine = sorted(without_timeout(format_proc(c, now).removeprefix("ipv4     2 ")) for c in table.live(now))
    theirs = sorted(without_timeout(line.removeprefix("ipv4     2 ")) for line in fx["proc"])
    assert mine == theirs


def test_conntrack_events_match_the_kernel() -> None:
    fx = load("kernel_events_6.18.json")
    table = ConntrackTable(events_enabled=True)
    mine = replay(fx["packets"], table, ConntrackConfig(), fx["t_flush"])
    table.flush(fx["t_flush"])
    mine.extend(format_event(ev) for ev in table.drain_events())
    theirs: list[str] = fx["events"]
    assert len(mine) == len(theirs)
    flush = sum(1 for line in theirs if line.startswith("[DESTROY]") and "CLOSE" not in line)
    ordered = len(theirs) - flush
    for a, b in zip(mine[:ordered], theirs[:ordered], strict=True):
        assert without_timeout(a) == without_timeout(b)
        assert timeouts_close(a, b), (a, b)
    assert sorted(map(without_timeout, mine[ordered:])) == sorted(map(without_timeout, theirs[ordered:]))


@pytest.mark.parametrize("name", ["kernel_tcp_scenarios_6.18.json", "kernel_tcp_scenarios2_6.18.json"])
def test_crafted_scenarios_match_the_kernel(name: str) -> None:
    """Crafted conversations between two fake hosts through a 6.18 router, recorded by their senders (the
    generating scripts are the matching data/*_script.py.txt).

    Batch 1: handshake + data + FIN teardown + reopen over TIME_WAIT, an out-of-window segment and an ACK
    over the upper bound (INVALID), an inexact RST in ESTABLISHED (state kept, 10 s), a SYN retransmit (no
    refresh), unacknowledged data and a zero window (300 s caps), simultaneous open, a loose pickup answered
    by the peer (SEEN_REPLY but not yet ASSURED), a UDP port unreachable (RELATED_REPLY) plus one sent to the
    wrong host (error), a refused connect, an ignored SYN + challenge ACK in LAST_ACK.

    Batch 2: a client RST in SYN_SENT, a server-initiated close then the server's SYN reopening over
    TIME_WAIT (the new ct is oriented server -> client), out-of-window FINs on an ASSURED ct (timeout
    lowered to 300 s), an ICMP error quoting a truncated header (error), SACK edges beyond / inside the
    data, repeated ACKs (retransmission cap), an RST with seq 0 below max ack (invalid rst), a retransmitted
    SYN/ACK in SYN_RECV, a pickup from the server side, ICMP echo/timestamp, unknown protocol and GRE both
    ways, a bad TCP checksum and a truncated TCP header.
    """
    fx = load(name)
    table = ConntrackTable(events_enabled=True)
    now = fx["snapshot_time"]
    events = replay(fx["packets"], table, ConntrackConfig(), now)
    mine = sorted(format_conntrack(c, now) for c in table.live(now))
    theirs: list[str] = fx["conntrack_L"]
    assert [without_timeout(x) for x in mine] == [without_timeout(x) for x in theirs]
    for a, b in zip(mine, theirs, strict=True):
        assert timeouts_close(a, b), (a, b)
    assert len(events) == len(fx["events"])
    for a, b in zip(events, fx["events"], strict=True):
        assert without_timeout(a) == without_timeout(b)
        assert timeouts_close(a, b), (a, b)
    totals = dict.fromkeys(("invalid", "error", "drop", "insert_failed", "early_drop", "clash_resolve"), 0)
    for line in fx["conntrack_S"]:
        for part in line.split():
            key, _, value = part.partition("=")
            if key in totals:
                totals[key] += int(value)
    assert totals["invalid"] > 0 and totals["error"] == 1
    assert totals == {k: getattr(table.stats, k) for k in totals}
