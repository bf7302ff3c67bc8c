"""`conntrack` on the live table of a running gateway (conntrack-tools 1.4.7's commands and output)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TextIO

from natbox.conntrack.conn import Conn
from natbox.conntrack.format import format_conntrack, format_stats, summary_line
from natbox.engine.engine import Engine

__all__ = ["conntrack_command", "conntrack_filter"]

PROG = "conntrack v1.4.7 (conntrack-tools)"
_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "udplite": 136, "sctp": 132, "dccp": 33, "gre": 47}
# conntrack's filter options: (tuple direction, field)
_CT_FILTERS = {
    "-s": (0, "src"), "--orig-src": (0, "src"), "--src": (0, "src"),
    "-d": (0, "dst"), "--orig-dst": (0, "dst"), "--dst": (0, "dst"),
    "-r": (1, "src"), "--reply-src": (1, "src"), "-q": (1, "dst"), "--reply-dst": (1, "dst"),
    "--sport": (0, "sport"), "--orig-port-src": (0, "sport"), "--dport": (0, "dport"), "--orig-port-dst": (0, "dport"),
    "--reply-port-src": (1, "sport"), "--reply-port-dst": (1, "dport"),
}


def conntrack_filter(args: list[str]) -> Callable[[Conn], bool]:
    """conntrack's -D filters (-s -d -r -q, -p, ports) as a predicate on a ct; ValueError on bad options."""
    want: list[tuple[int, str, int]] = []
    proto: int | None = None
    i = 0
    while i < len(args):
        opt = args[i]
        if i + 1 >= len(args):
            raise ValueError(f"option `{opt}' requires an argument")
        val = args[i + 1]
        i += 2
        if opt in ("-p", "--proto", "--protonum"):
            proto = _PROTOS.get(val.lower()) if not val.isdigit() else int(val)
            if proto is None:
                raise ValueError(f"unknown protocol `{val}'")
        elif opt in _CT_FILTERS:
            direction, field_name = _CT_FILTERS[opt]
            try:
                value = int(val) if field_name.endswith("port") else int(ipaddress.IPv4Address(val))
            except ValueError:
                raise ValueError(f"bad value `{val}' for {opt}") from None
            want.append((direction, field_name, value))
        else:
            raise ValueError(f"unknown option `{opt}'")

    def keep(ct: Conn) -> bool:
        if proto is not None and ct.tuples[0].proto != proto:
            return False
        return all(getattr(ct.tuples[d], f) == v for d, f, v in want)

    return keep


def conntrack_command(engine: Engine, argv: list[str], now: float, out: TextIO, err: TextIO) -> int:
    """`conntrack -L | -S | -F | -C | -D` on the live table (conntrack-tools 1.4.7 output, §7.3)."""
    table = engine.table
    op = argv[0] if argv else "-L"
    if op in ("-L", "--dump"):
        conns = table.live(now)
        out.write("".join(format_conntrack(c, now) + "\n" for c in conns))
        err.write(summary_line(len(conns)) + "\n")
        return 0
    if op in ("-S", "--stats"):
        out.write(format_stats(table.stats) + "\n")
        return 0
    if op in ("-C", "--count"):
        out.write(f"{len(table.live(now))}\n")
        return 0
    if op in ("-D", "--delete"):
        try:
            keep = conntrack_filter(argv[1:])
        except ValueError as exc:
            err.write(f"{PROG}: {exc}\n")
            return 2
        victims = [c for c in table.live(now) if keep(c)]
        for ct in victims:
            out.write(format_conntrack(ct, now) + "\n")
            table.delete(ct, now, reason="conntrack -D")
            engine.nat.forget(ct)
        err.write(f"{PROG}: {len(victims)} flow entries have been deleted.\n")
        return 0 if victims else 1
    if op in ("-F", "--flush"):
        table.flush(now)
        err.write(f"{PROG}: connection tracking table has been emptied.\n")
        return 0
    err.write(f"{PROG}: natbox gateway supports -L, -S, -C, -D and -F, not {op}\n")
    return 2
