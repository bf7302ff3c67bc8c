"""`conntrack -L` / `-E` / `-S` text and `/proc/net/nf_conntrack` lines (§7.3), and a parser for them.

Mirrors libnetfilter_conntrack's `__snprintf_conntrack_default()` (conntrack-tools 1.4.7) fed with what
ctnetlink puts in a dump (`ctnetlink_fill_info`) or an event (`ctnetlink_conntrack_event`), and the kernel's
`ct_seq_show()` for /proc.

Field order of one line (single spaces, trailing space removed):

| # | field | dump (-L) | event (-E) |
|---|---|---|---|
| 1 | `%9s ` [NEW] / [UPDATE] / [DESTROY] | – | always |
| 2 | `ipv4     2 ` | with -o extended | with -o extended |
| 3 | `%-8s %u ` protocol name, number | always | always |
| 4 | timeout `(deadline - now)` truncated | unless OFFLOAD | NEW/UPDATE; DESTROY only when non-zero |
| 5 | TCP or SCTP state | unless OFFLOAD | NEW, DESTROY, and UPDATE when the state changed |
| 6 | original tuple, `packets= bytes=` | counters if acct | counters on DESTROY if acct |
| 7 | `[UNREPLIED]` when SEEN_REPLY is clear | | |
| 8 | reply tuple, counters | | |
| 9 | `[HW_OFFLOAD]` / `[OFFLOAD]` / `[ASSURED]`, the first that applies | | |
| 10 | `mark=%u` | always | only when non-zero |
| 11 | `zone=%u` (`zone-orig=`/`zone-reply=` after that tuple for a one-way zone) | only when non-zero | same |
| 12 | `use=%u` | always (1) | – |
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from natbox.conntrack.proto.sctp import SCTP_CONNTRACK_NAMES
from natbox.conntrack.proto.tcp import TCP_CONNTRACK_NAMES
from natbox.conntrack.tuple import ConnTuple, format_addr, tuple_l3num
from natbox.netfilter import NFPROTO_IPV4, CtStatus
from natbox.wire.ipv6 import format_addr6, format_addr6_full

if TYPE_CHECKING:
    from natbox.conntrack.conn import Conn
    from natbox.conntrack.table import ConntrackStats, CtEvent, CtEventType

__all__ = [
    "CONNTRACK_VERSION",
    "PROTO_NAMES",
    "format_conntrack",
    "format_event",
    "format_proc",
    "format_stats",
    "parse_conntrack_line",
    "summary_line",
]

CONNTRACK_VERSION: Final = "1.4.7"
# libnetfilter_conntrack `proto2str[]` (and the kernel's l4proto_name() for /proc); others are "unknown".
PROTO_NAMES: dict[int, str] = {
    1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 47: "gre", 58: "icmpv6", 132: "sctp", 136: "udplite",
}
_PORT_PROTOS: Final = frozenset({6, 17, 33, 132, 136})
_ZONE_DIR_ORIG, _ZONE_DIR_REPL = 1, 2  # NF_CT_ZONE_DIR_ORIG / _REPL: a zone for one direction only
_EVENT_TAGS: Final = {"NEW": "    [NEW] ", "UPDATE": " [UPDATE] ", "DESTROY": "[DESTROY] "}  # "%9s "
_STATS_ORDER: Final = (
    "found", "invalid", "insert", "insert_failed", "drop", "early_drop", "error", "search_restart",
    "clash_resolve", "chaintoolong",
)


def _proto_head(proto: int) -> str:
    return f"{PROTO_NAMES.get(proto, 'unknown'):<8} {proto} "


def _l3_head(conn: Conn) -> str:
    """`%-8s %u ` of the layer-3 protocol (`-o extended`, /proc)."""
    return "ipv4     2 " if conn.l3num == NFPROTO_IPV4 else "ipv6     10 "


def _tuple_text(t: ConnTuple, full6: bool = False) -> str:
    """`__snprintf_address` + `__snprintf_proto` of one direction (IPv6 addresses RFC 5952-short, or in full
    for /proc with `full6`: IPv6 §7.1)."""
    if tuple_l3num(t) == NFPROTO_IPV4:
        text = f"src={format_addr(t.src)} dst={format_addr(t.dst)} "
    elif full6:
        text = f"src={format_addr6_full(t.src)} dst={format_addr6_full(t.dst)} "
    else:
        text = f"src={format_addr6(t.src)} dst={format_addr6(t.dst)} "
    proto = t.proto
    if proto in _PORT_PROTOS:
        return text + f"sport={t.sport} dport={t.dport} "
    if proto in (1, 58):
        return text + f"type={t.dport >> 8} code={t.dport & 0xFF} id={t.sport} "
    if proto == 47:
        return text + f"srckey=0x{t.sport:x} dstkey=0x{t.dport:x} "
    return text


def _state_text(conn: Conn) -> str:
    """`__snprintf_protoinfo` (TCP) / `__snprintf_protoinfo_sctp`: the state name and a space."""
    tcp = conn.tcp
    if conn.tuples[0].proto != 6:
        sc = conn.sctp
        if conn.tuples[0].proto == 132 and sc is not None:
            return SCTP_CONNTRACK_NAMES[sc.state] + " "
        return ""
    state = int(tcp.state) if tcp is not None else 0
    return (TCP_CONNTRACK_NAMES[state] if state < len(TCP_CONNTRACK_NAMES) else "NONE") + " "


def _status_flag(status: int) -> str:
    if status & CtStatus.HW_OFFLOAD:
        return "[HW_OFFLOAD] "
    if status & CtStatus.OFFLOAD:
        return "[OFFLOAD] "
    if status & CtStatus.ASSURED:
        return "[ASSURED] "
    return ""


def format_conntrack(
    conn: Conn,
    now: float,
    *,
    event: CtEventType | None = None,
    extended: bool = False,
    acct: bool = False,
    protoinfo: bool = True,
    use: int = 1,
) -> str:
    """One line as `conntrack -L` (event None), `conntrack -E` (event given) or `-o extended` prints it.

    `acct`: the ct has accounting (`nf_conntrack_acct=1` when it was created) — dumps then show
    `packets= bytes=` per direction; events show them only on DESTROY. `protoinfo`: for an UPDATE event,
    whether the TCP state changed (ctnetlink only includes the state then; see `format_event`). `use`: the
    refcount a dump shows (1 unless skbs in flight hold the ct).
    """
    status = conn.status
    kind = str(event) if event is not None else ""
    remaining = int(max(conn.timeout - now, 0.0))  # nf_ct_expires(ct) / HZ, truncated
    parts: list[str] = []
    if kind:
        parts.append(_EVENT_TAGS[kind])
    if extended:
        parts.append(_l3_head(conn))
    orig, repl = conn.tuples[0], conn.tuples[1]
    parts.append(_proto_head(orig.proto))
    if kind == "DESTROY":
        if remaining:
            parts.append(f"{remaining} ")
        parts.append(_state_text(conn))
    elif not kind and status & CtStatus.OFFLOAD:
        # ctnetlink_dump_info: an offloaded entry's dump has no timeout and no protoinfo (the flowtable owns
        # both), and the flow entry holds a reference (flow_offload_alloc), so use is one higher
        use += 1
    else:
        parts.append(f"{remaining} ")
        if kind != "UPDATE" or protoinfo:
            parts.append(_state_text(conn))
    counters = acct and kind in ("", "DESTROY")
    zone, zone_dirs = conn.zone & 0xFFFF, conn.zone >> 16
    parts.append(_tuple_text(orig))
    if zone_dirs == _ZONE_DIR_ORIG and zone:
        parts.append(f"zone-orig={zone} ")
    if counters:
        parts.append(f"packets={conn.acct_packets[0]} bytes={conn.acct_bytes[0]} ")
    if not status & CtStatus.SEEN_REPLY:
        parts.append("[UNREPLIED] ")
    parts.append(_tuple_text(repl))
    if zone_dirs == _ZONE_DIR_REPL and zone:
        parts.append(f"zone-reply={zone} ")
    if counters:
        parts.append(f"packets={conn.acct_packets[1]} bytes={conn.acct_bytes[1]} ")
    parts.append(_status_flag(status))
    if not kind or conn.mark:
        parts.append(f"mark={conn.mark} ")
    if zone and not zone_dirs:
        parts.append(f"zone={zone} ")
    if not kind:
        parts.append(f"use={use} ")
    return "".join(parts).rstrip(" ")


def format_event(ev: CtEvent, *, extended: bool = False, acct: bool = False) -> str:
    """The `conntrack -E` line of a table event, as the ct was when the event fired (`ev.snapshot`).

    The TCP state of an UPDATE is shown only when the event's reason is `core.EVENT_PROTOINFO`.
    """
    conn = ev.snapshot if ev.snapshot is not None else ev.conn
    return format_conntrack(
        conn, ev.now, event=ev.kind, extended=extended, acct=acct, protoinfo=ev.reason == "protoinfo"
    )


def format_proc(
    conn: Conn, now: float, *, acct: bool = False, use: int = 2, gre_timeouts: tuple[int, int] = (30, 180)
) -> str:
    """One line of /proc/net/nf_conntrack (`ct_seq_show`): the `ipv4     2 ` prefix, `zone=0` always, and use
    one higher than a dump shows (the reader holds a reference). GRE adds `timeout=, stream_timeout=`."""
    status = conn.status
    orig, repl = conn.tuples[0], conn.tuples[1]
    remaining = int(max(conn.timeout - now, 0.0))
    parts = [_l3_head(conn), _proto_head(orig.proto)]
    if status & CtStatus.OFFLOAD:
        use += 1  # the flowtable's reference (flow_offload_alloc)
    else:
        parts.append(f"{remaining} ")
    if orig.proto in (6, 132) and not status & CtStatus.OFFLOAD:  # print_conntrack: tcp and sctp
        parts.append(_state_text(conn))
    elif orig.proto == 47:
        parts.append(f"timeout={gre_timeouts[0]}, stream_timeout={gre_timeouts[1]} ")
    zone, zone_dirs = conn.zone & 0xFFFF, conn.zone >> 16
    parts.append(_tuple_text(orig, True))
    if zone_dirs == _ZONE_DIR_ORIG:  # ct_show_zone(s, ct, NF_CT_ZONE_DIR_ORIG)
        parts.append(f"zone-orig={zone} ")
    if acct:
        parts.append(f"packets={conn.acct_packets[0]} bytes={conn.acct_bytes[0]} ")
    if not status & CtStatus.SEEN_REPLY:
        parts.append("[UNREPLIED] ")
    parts.append(_tuple_text(repl, True))
    if zone_dirs == _ZONE_DIR_REPL:
        parts.append(f"zone-reply={zone} ")
    if acct:
        parts.append(f"packets={conn.acct_packets[1]} bytes={conn.acct_bytes[1]} ")
    parts.append(_status_flag(status))
    parts.append(f"mark={conn.mark} " + ("" if zone_dirs else f"zone={zone} ") + f"use={use}")
    return "".join(parts)


def format_stats(stats: ConntrackStats, cpu: int = 0) -> str:
    """The per-CPU line of `conntrack -S` (`printf("cpu=%-4u\\t")` then `name=value ` per counter).

    The trailing space is kept: conntrack prints it before the newline.
    """
    values = stats.as_dict()
    return f"cpu={cpu:<4}\t" + "".join(f"{name}={values[name]} " for name in _STATS_ORDER)


def summary_line(n: int) -> str:
    """What conntrack prints on stderr after a listing."""
    return f"conntrack v{CONNTRACK_VERSION} (conntrack-tools): {n} flow entries have been shown."


# --- parsing ----------------------------------------------------------------------------------

_ADDR_KEYS: Final = frozenset({"src", "dst"})
_TUPLE_KEYS_BY_PROTO: dict[str, frozenset[str]] = {
    "icmp": _ADDR_KEYS | {"type", "code", "id"},
    "icmpv6": _ADDR_KEYS | {"type", "code", "id"},
    "gre": _ADDR_KEYS | {"srckey", "dstkey"},
    "unknown": _ADDR_KEYS,
}
_PORT_TUPLE_KEYS: Final = _ADDR_KEYS | {"sport", "dport"}


def _value(text: str) -> int | str:
    if text.isdigit():
        return int(text)
    if text.startswith("0x"):
        try:
            return int(text, 16)
        except ValueError:
            return text
    return text


def parse_conntrack_line(line: str) -> dict[str, Any]:
    """Parse one `conntrack -L` / `-E` / `-o extended` / /proc line into a dict, for comparisons.

    Keys: `event` (NEW/UPDATE/DESTROY or None), `l3` ("ipv4" or None), `proto` (name), `protonum`,
    `timeout` (int or None), `state` (TCP state or None), `orig` and `reply` (dicts of the tuple fields:
    `src`, `dst` as text; ports, icmp type/code/id, gre keys as ints), `orig_counters` / `reply_counters`
    (`{"packets": n, "bytes": n}` or None), `flags` (the bracketed words other than the event, e.g.
    `["UNREPLIED", "ASSURED"]`), `unreplied`, `assured`, and any other `key=value` (`mark`, `zone`, `use`,
    `id`, `zone-orig`, GRE's `timeout`/`stream_timeout` in /proc...). Unknown words go to `extra`.
    Raises ValueError if the line has no protocol number.
    """
    tokens = line.strip().split()
    out: dict[str, Any] = {
        "event": None, "l3": None, "proto": None, "protonum": None, "timeout": None, "state": None,
        "orig": {}, "reply": {}, "orig_counters": None, "reply_counters": None, "flags": [], "extra": [],
    }
    i = 0
    if i < len(tokens) and tokens[i] in ("[NEW]", "[UPDATE]", "[DESTROY]"):
        out["event"] = tokens[i][1:-1]
        i += 1
    if i + 1 < len(tokens) and tokens[i] in ("ipv4", "ipv6") and tokens[i + 1].isdigit():
        out["l3"] = tokens[i]
        i += 2
    if i + 1 >= len(tokens) or not tokens[i + 1].isdigit():
        raise ValueError(f"not a conntrack line: {line!r}")
    out["proto"] = tokens[i]
    out["protonum"] = int(tokens[i + 1])
    i += 2
    if i < len(tokens) and tokens[i].isdigit():
        out["timeout"] = int(tokens[i])
        i += 1
    if i < len(tokens) and "=" not in tokens[i] and not tokens[i].startswith("["):
        out["state"] = tokens[i]
        i += 1
    tuple_keys = _TUPLE_KEYS_BY_PROTO.get(out["proto"], _PORT_TUPLE_KEYS)
    side = "orig"
    pending_packets: int | None = None
    for tok in tokens[i:]:
        if tok.startswith("[") and tok.endswith("]"):
            out["flags"].append(tok[1:-1])
            continue
        if "=" not in tok:
            out["extra"].append(tok)
            continue
        key, _, raw = tok.partition("=")
        raw = raw.rstrip(",")
        if key == "src" and out[side].get("src") is not None:
            side = "reply"
        if key in tuple_keys and key not in out[side]:
            out[side][key] = raw if key in _ADDR_KEYS else _value(raw)
        elif key == "packets":
            pending_packets = int(raw)
        elif key == "bytes" and pending_packets is not None:
            out[f"{side}_counters"] = {"packets": pending_packets, "bytes": int(raw)}
            pending_packets = None
        else:
            out[key] = _value(raw)
    out["unreplied"] = "UNREPLIED" in out["flags"]
    out["assured"] = "ASSURED" in out["flags"]
    return out
