"""What a replay writes: output captures, `conntrack -L/-E/-S` text, counters, JSON lines, explanations.

Sans-IO: every writer here is handed an open text stream or a capture writer object by the caller (the
CLI opens the files). The sinks implement `natbox.replay.driver.PacketSink` and stream: nothing grows
with the input except `SummarySink`, whose lines are bounded by `SUMMARY_MAX_LINES`.

Files of `natbox replay --out DIR` (written by `natbox.cli.replay`):

| file             | content                                                                           |
|------------------|-----------------------------------------------------------------------------------|
| IFACE.out.pcap   | every frame the host sent on IFACE (`--pcapng FILE`: one pcapng instead, with a     |
|                  | comment per packet naming the input packet and the conntrack id)                  |
| conntrack.txt    | the final table as `conntrack -L` prints it on stdout                              |
| conntrack.stderr | what `conntrack -L` prints on stderr: the "N flow entries have been shown." line   |
| events.txt       | `conntrack -E` lines, in order                                                     |
| counters.txt     | `iptables -t TABLE -nvL`, then `-nvxL`, for every table of the ruleset, each       |
|                  | preceded by a `# iptables -t TABLE -nvL` comment line                               |
| stats.txt        | `conntrack -S`, then natbox's drop reasons and the inputs not replayed, counted   |
| packets.jsonl    | one JSON object per input packet (`packet_record`)                                 |
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TextIO

from natbox.conntrack.format import format_conntrack, format_event, format_stats, summary_line
from natbox.engine.engine import Engine, Output
from natbox.render.tcpdump import TcpdumpPrinter, format_timestamp, tcpdump_line
from natbox.replay.driver import InputPacket, Replayer, ct_of, verdict_of
from natbox.rules.evaluate import Ruleset
from natbox.rules.listing import list_table

__all__ = [
    "SUMMARY_MAX_LINES",
    "EventsSink",
    "ExplainSink",
    "JsonlSink",
    "PcapOutSink",
    "PcapngOutSink",
    "SummarySink",
    "explain_text",
    "packet_record",
    "write_conntrack",
    "write_counters",
    "write_stats",
    "write_summary",
]

SUMMARY_MAX_LINES = 20_000  # tcpdump lines the human summary keeps (all interfaces); the rest are counted

# ANSI styles of explanation lines (SGR codes)
STYLE_HEAD = "1"
STYLE_DROP = "1;31"
STYLE_SENT = "32"
STYLE_DELIVERED = "36"
STYLE_RULE = "33"
STYLE_NAT = "35"
STYLE_SKIP = "2"
_TABLE_PREFIXES = ("raw ", "mangle ", "nat ", "filter ")
_NAT_WORDS = ("DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP", " nat:", "null binding")


def _style(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


class FrameWriter(Protocol):
    """`natbox.adapters.pcap.PcapWriter`'s write()."""

    def write(self, data: bytes | bytearray | memoryview, *, ts: float | None = None, ts_ns: int | None = None,
              wirelen: int | None = None) -> None: ...


class CommentedFrameWriter(Protocol):
    """`natbox.adapters.pcap.PcapngWriter`'s write()."""

    def write(self, data: bytes | bytearray | memoryview, *, interface: int | str = 0, ts: float | None = None,
              ts_ns: int | None = None, wirelen: int | None = None, comment: str | None = None) -> None: ...


# --- per-packet data --------------------------------------------------------------------------------

def _fate(out: Output) -> list[dict[str, Any]]:
    fate: list[dict[str, Any]] = [{"sent": em.iface, "ct": em.ct_id, "packet": tcpdump_line(em.frame)}
                                  for em in out.emitted]
    fate.extend({"delivered": d.action} for d in out.delivered)
    fate.extend({"dropped": d.reason, "where": d.where, "detail": d.detail} for d in out.dropped)
    return fate


def packet_record(pkt: InputPacket, *, trace: bool = False) -> dict[str, Any]:
    """The JSON object of one input packet (a line of packets.jsonl, and `--json` output).

    Keys: n, source, index, time (seconds), iface, packet (`tcpdump -nne` text), verdict (skipped,
    delivered, dropped, forwarded, held), ct (the conntrack id, or null), emitted (list of {iface, packet,
    ct}), delivered (list of actions), dropped (list of {reason, where, detail}), logs (LOG lines),
    skipped (why the engine was not given the packet; only when it was not), trace (steps; with trace).
    """
    rec: dict[str, Any] = {
        "n": pkt.n, "source": pkt.source, "index": pkt.number, "time": pkt.ts_ns / 1e9, "iface": pkt.iface,
        "packet": tcpdump_line(pkt.data, link=pkt.link), "verdict": verdict_of(pkt.out),
    }
    out = pkt.out
    if out is None:
        rec["skipped"] = pkt.skipped
        rec["ct"] = None
        return rec
    rec["ct"] = ct_of(out)
    rec["emitted"] = [{"iface": em.iface, "packet": tcpdump_line(em.frame), "ct": em.ct_id} for em in out.emitted]
    rec["delivered"] = [d.action for d in out.delivered]
    rec["dropped"] = [{"reason": d.reason, "where": d.where, "detail": d.detail, "ct": d.ct_id or None}
                      for d in out.dropped]
    rec["logs"] = [log.text for log in out.logs]
    if trace:
        rec["trace"] = [step for _pid, step in out.trace]
    return rec


def _step_style(step: str) -> str | None:
    if step.startswith("DROP"):
        return STYLE_DROP
    if step.startswith(_TABLE_PREFIXES):  # a rule or a policy: highlighted when it matched
        return STYLE_RULE if ": match ->" in step else None
    if any(w in step for w in _NAT_WORDS):
        return STYLE_NAT
    return None


def explain_text(pkt: InputPacket, *, color: bool = False) -> str:
    """One packet's explanation: a header line, the engine's steps in order, then its fate lines
    (`=> sent on IFACE`, `=> delivered locally`, `=> dropped at WHERE`, `=> LOG`, `=> skipped`, `=> held`)."""
    head = (f"#{pkt.n} {format_timestamp(ts_ns=pkt.ts_ns)} in {pkt.iface or '?'} "
            f"({pkt.source} #{pkt.number}): {tcpdump_line(pkt.data, link=pkt.link, eflag=False)}")
    lines = [_style(head, STYLE_HEAD, color)]
    out = pkt.out
    if out is None:
        lines.append(_style(f"  => skipped: {pkt.skipped}", STYLE_SKIP, color))
        return "\n".join(lines)
    for _pid, step in out.trace:
        style = _step_style(step)
        lines.append("    " + (_style(step, style, color) if style else step))
    for em in out.emitted:
        ct = f" (ct #{em.ct_id})" if em.ct_id else ""
        lines.append(_style(f"  => sent on {em.iface}{ct}: {tcpdump_line(em.frame, eflag=False)}", STYLE_SENT,
                            color))
    lines.extend(_style(f"  => delivered locally: {d.action}", STYLE_DELIVERED, color) for d in out.delivered)
    lines.extend(f"  => LOG: {log.text}" for log in out.logs)
    for dr in out.dropped:
        detail = f" ({dr.detail})" if dr.detail else ""
        lines.append(_style(f"  => dropped at {dr.where}: {dr.reason}{detail}", STYLE_DROP, color))
    if not (out.emitted or out.delivered or out.dropped):
        lines.append(_style("  => held (nothing sent: e.g. a fragment kept for reassembly)", STYLE_SKIP, color))
    return "\n".join(lines)


# --- sinks ------------------------------------------------------------------------------------------

class PcapOutSink:
    """Writes each emitted frame to its interface's writer (`open_writer(iface)` makes one on first use)."""

    def __init__(self, open_writer: Callable[[str], FrameWriter], close: Callable[[], None] | None = None) -> None:
        self._open = open_writer
        self._close = close
        self.writers: dict[str, FrameWriter] = {}

    def _emit(self, out: Output, ts_ns: int) -> None:
        for em in out.emitted:
            w = self.writers.get(em.iface)
            if w is None:
                w = self.writers[em.iface] = self._open(em.iface)
            w.write(em.frame, ts_ns=ts_ns)

    def packet(self, pkt: InputPacket) -> None:
        if pkt.out is not None and pkt.out.emitted:
            self._emit(pkt.out, pkt.ts_ns)

    def timer(self, out: Output, ts_ns: int) -> None:
        self._emit(out, ts_ns)

    def close(self) -> None:
        if self._close is not None:
            self._close()


class PcapngOutSink:
    """Writes every emitted frame to one pcapng (an interface block per host interface), each with a
    comment `from SOURCE #INDEX (input N) at T s; ct ID` naming the input packet that caused it."""

    def __init__(self, writer: CommentedFrameWriter) -> None:
        self.writer = writer

    def packet(self, pkt: InputPacket) -> None:
        out = pkt.out
        if out is None or not out.emitted:
            return
        where = f"from {pkt.source} #{pkt.number} (input {pkt.n}) at {pkt.ts_ns / 1e9:.6f} s"
        for em in out.emitted:
            ct = f"ct {em.ct_id}" if em.ct_id else "no ct"
            self.writer.write(em.frame, interface=em.iface, ts_ns=pkt.ts_ns, comment=f"{where}; {ct}")

    def timer(self, out: Output, ts_ns: int) -> None:
        for em in out.emitted:
            ct = f"ct {em.ct_id}" if em.ct_id else "no ct"
            self.writer.write(em.frame, interface=em.iface, ts_ns=ts_ns,
                              comment=f"from the host's timers at {ts_ns / 1e9:.6f} s; {ct}")

    def close(self) -> None:
        pass


class EventsSink:
    """Streams the engine's conntrack events as `conntrack -E` lines (the engine needs events=True)."""

    def __init__(self, engine: Engine, out: TextIO) -> None:
        self.engine = engine
        self.out = out
        self.count = 0

    def _drain(self) -> None:
        events = self.engine.table.drain_events()
        if events:
            self.count += len(events)
            self.out.write("".join(format_event(ev) + "\n" for ev in events))

    def packet(self, pkt: InputPacket) -> None:
        self._drain()

    def timer(self, out: Output, ts_ns: int) -> None:
        self._drain()

    def close(self) -> None:
        self._drain()


class JsonlSink:
    """One `packet_record` JSON object per line."""

    def __init__(self, out: TextIO, *, trace: bool = False) -> None:
        self.out = out
        self.trace = trace

    def packet(self, pkt: InputPacket) -> None:
        self.out.write(json.dumps(packet_record(pkt, trace=self.trace), separators=(",", ":")) + "\n")

    def timer(self, out: Output, ts_ns: int) -> None:
        pass

    def close(self) -> None:
        pass


class ExplainSink:
    """Writes each packet's explanation (text, or its JSON record with the trace), all or only packet `only`."""

    def __init__(self, out: TextIO, *, color: bool = False, as_json: bool = False, only: int | None = None) -> None:
        self.out = out
        self.color = color
        self.as_json = as_json
        self.only = only
        self.shown = 0

    def packet(self, pkt: InputPacket) -> None:
        if self.only is not None and pkt.n != self.only:
            return
        self.shown += 1
        if self.as_json:
            self.out.write(json.dumps(packet_record(pkt, trace=True)) + "\n")
        else:
            self.out.write(explain_text(pkt, color=self.color) + "\n")

    def timer(self, out: Output, ts_ns: int) -> None:
        pass

    def close(self) -> None:
        pass


class SummarySink:
    """Keeps what `tcpdump -nne -i IFACE` would print on each interface (inputs and the host's output),
    bounded by `max_lines`; later lines are only counted."""

    def __init__(self, *, max_lines: int = SUMMARY_MAX_LINES) -> None:
        self.max_lines = max_lines
        self.lines: dict[str, list[str]] = {}
        self.kept = 0
        self.omitted: Counter[str] = Counter()
        self._printers: dict[str, TcpdumpPrinter] = {}

    def _add(self, iface: str, data: bytes, link: str, ts_ns: int) -> None:
        if self.kept >= self.max_lines:
            self.omitted[iface] += 1
            return
        printer = self._printers.get(iface)
        if printer is None:
            printer = self._printers[iface] = TcpdumpPrinter()
        self.lines.setdefault(iface, []).append(printer.line(data, ts_ns=ts_ns, link=link))
        self.kept += 1

    def packet(self, pkt: InputPacket) -> None:
        if pkt.out is None:
            return
        self._add(pkt.iface, pkt.data, pkt.link, pkt.ts_ns)
        for em in pkt.out.emitted:
            self._add(em.iface, em.frame, "ether", pkt.ts_ns)

    def timer(self, out: Output, ts_ns: int) -> None:
        for em in out.emitted:
            self._add(em.iface, em.frame, "ether", ts_ns)

    def close(self) -> None:
        pass


# --- final reports ----------------------------------------------------------------------------------

def write_conntrack(engine: Engine, now: float, out: TextIO, err: TextIO) -> int:
    """`conntrack -L`: the live entries (oldest first) on `out`, the summary line on `err`."""
    conns = sorted(engine.table.live(now), key=lambda c: c.ct_id)
    out.write("".join(format_conntrack(c, now) + "\n" for c in conns))
    err.write(summary_line(len(conns)) + "\n")
    return len(conns)


def write_counters(ruleset: Ruleset, out: TextIO, *, tables: Iterable[str] | None = None) -> None:
    """`iptables -t TABLE -nvL` then `-nvxL` for every table the ruleset has (iptables-save's order)."""
    names = list(tables) if tables is not None else list(ruleset.present)
    for exact in (False, True):
        for name in names:
            flags = "-nvxL" if exact else "-nvL"
            out.write(f"# iptables -t {name} {flags}\n")
            out.write(list_table(ruleset.tables[name], numeric=True, verbose=True, exact=exact) + "\n\n")


def write_stats(engine: Engine, replayer: Replayer, out: TextIO) -> None:
    """`conntrack -S`, then natbox's own counters: drop reasons, inputs not replayed, totals."""
    out.write(format_stats(engine.table.stats) + "\n")
    out.write("# natbox counters (packets): drop reasons and other events\n")
    for reason, n in sorted(engine.stats.items()):
        if n:
            out.write(f"{reason} {n}\n")
    out.write("# inputs not replayed (records)\n")
    for reason, n in sorted(replayer.skipped.items()):
        out.write(f"{reason}: {n}\n")
    out.write(f"# totals\ninputs {replayer.packets}\nreplayed {replayer.fed}\n"
              f"timestamps_backwards {replayer.backwards}\nevents_lost {engine.table.events_lost}\n")


def write_summary(out: TextIO, summary: SummarySink, engine: Engine, ruleset: Ruleset, replayer: Replayer, *,
                  color: bool = False) -> None:
    """The human report of a replay without --out: tcpdump lines per interface, drops, conntrack, counters."""
    def heading(text: str) -> None:
        out.write("\n" + _style(text, "1;36", color) + "\n")

    for iface in sorted(summary.lines.keys() | summary.omitted.keys()):
        heading(f"# tcpdump -nne -i {iface}")
        out.write("".join(line + "\n" for line in summary.lines.get(iface, [])))
        if summary.omitted[iface]:
            out.write(f"  ... {summary.omitted[iface]} more lines not shown\n")
    drops = {r: n for r, n in engine.stats.items() if n}
    if drops:
        heading("# natbox drop reasons")
        out.write("".join(f"  {r}: {n}\n" for r, n in sorted(drops.items())))
    if replayer.skipped:
        heading("# inputs not replayed")
        out.write("".join(f"  {r}: {n}\n" for r, n in sorted(replayer.skipped.items())))
    heading("# conntrack -L")
    write_conntrack(engine, replayer.now, out, out)
    for name in ruleset.present:
        heading(f"# iptables -t {name} -nvL")
        out.write(list_table(ruleset.tables[name], numeric=True, verbose=True) + "\n")
