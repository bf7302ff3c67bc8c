"""`natbox replay`: captures (or a scenario file) through a host model, with what leaves each interface.

```
natbox replay --host HOST --in IFACE=FILE [--in ...] [--out DIR] [--pcapng FILE] [--explain] [--json]
natbox replay --host HOST --in FILE            # a pcapng whose interface names are the host's
natbox replay --host HOST --scenario FILE ...  # traffic from a scenario file (natbox.sim.scenario)
```

HOST is a TOML host file (`natbox.engine.hostfile`) or a snapshot directory (`natbox snapshot`). Inputs
are merged by timestamp and streamed (memory does not grow with the captures). With `--out DIR` the
files listed in `natbox.replay.report` are written (plus `explain.txt` with `--explain`); without it a
human summary is printed: tcpdump lines per interface, drops, `conntrack -L`, `iptables -nvL`.
`--explain` prints each packet's path (to stdout, or DIR/explain.txt); `--json` prints one JSON object
per packet on stdout. On a terminal, progress goes to stderr; the packet rate is printed at the end.

Exit codes: 0 done; 2 bad usage, a host/rules/scenario file that cannot be used, or an input that is not
a capture (one line on stderr naming the file).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import ExitStack, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from natbox.errors import UsageError

if TYPE_CHECKING:
    from natbox.adapters.pcap import PcapRecord
    from natbox.engine.engine import Engine
    from natbox.engine.hostfile import HostFile
    from natbox.replay.driver import PacketSink, Replayer
    from natbox.rules.evaluate import Ruleset

__all__ = ["ReplayOptions", "UsageError", "load_host_file", "parse_in_spec", "replay_main", "run"]

PROGRESS_INTERVAL = 0.25  # seconds between progress updates on a terminal


@dataclass
class ReplayOptions:
    host: str
    inputs: list[tuple[str | None, str]]  # (IFACE or None, FILE)
    scenario: str | None = None
    out: str | None = None
    pcapng: str | None = None
    explain: bool = False
    json: bool = False
    color: str = "auto"
    seed: int = 1
    packet: int | None = None
    summary: bool = True  # print the human summary when there is no --out (replay; not explain)


def parse_in_spec(spec: str) -> tuple[str | None, str]:
    """`IFACE=FILE` or `FILE` (a pcapng whose interfaces are named). A left side containing `/` is part
    of a path, not an interface name."""
    left, sep, right = spec.partition("=")
    if not sep or "/" in left:
        if not spec:
            raise UsageError("--in: empty argument (want IFACE=FILE or FILE)")
        return None, spec
    if not left or not right:
        raise UsageError(f"--in {spec!r}: want IFACE=FILE (e.g. --in eth0=capture.pcap) or FILE")
    return left, right


def load_host_file(path: str) -> HostFile:
    """A host from a TOML file (its rules file read relative to it) or a snapshot directory.
    Raises UsageError with the loader's one-line message."""
    from natbox.engine.hostfile import HostFileError, parse_host_toml

    if os.path.isdir(path):
        try:
            from natbox.adapters.snapshot import load_host
        except ImportError:
            raise UsageError(f"{path}: is a directory, and this natbox cannot read snapshot directories "
                             "(natbox.adapters.snapshot.load_host is missing); give a TOML host file") from None
        try:
            return load_host(path)
        except (ValueError, OSError) as exc:
            raise UsageError(str(exc)) from None
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        hf = parse_host_toml(text, path)
    except HostFileError as exc:
        raise UsageError(str(exc)) from None
    if hf.rules_file is not None:
        rules_path = os.path.join(os.path.dirname(os.path.abspath(path)), hf.rules_file)
        try:
            with open(rules_path, encoding="utf-8") as f:
                hf.host.rules_text = f.read()
        except OSError as exc:
            raise UsageError(f"{path}: rules.file {rules_path}: {exc.strerror or exc}") from None
        hf.host.rules_origin = rules_path
    return hf


def _build_engine(opts: ReplayOptions, *, events: bool) -> tuple[Engine, Ruleset, HostFile]:
    from natbox.engine.engine import Engine
    from natbox.engine.host import HostError
    from natbox.rules.evaluate import Ruleset
    from natbox.rules.model import RulesError
    from natbox.rules.parser import parse_restore

    hf = load_host_file(opts.host)
    host = hf.host
    ruleset = Ruleset()
    if host.rules_text.strip():
        try:
            ruleset.restore(parse_restore(host.rules_text, file=host.rules_origin))
        except RulesError as exc:
            raise UsageError(f"{host.rules_origin}: {exc}") from None
    try:
        engine = Engine(host, ruleset=ruleset, seed=opts.seed, events=events)
    except HostError as exc:
        raise UsageError(f"{opts.host}: {exc}") from None
    engine.listeners = set(hf.listen)
    return engine, ruleset, hf


class _Progress:
    """`\\r` progress on a terminal, at most every PROGRESS_INTERVAL seconds."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.start = time.monotonic()
        self.last = self.start
        self.shown = False

    def __call__(self, rep: Replayer) -> None:
        t = time.monotonic()
        if t - self.last < PROGRESS_INTERVAL:
            return
        self.last = t
        rate = rep.packets / max(t - self.start, 1e-9)
        self.stream.write(f"\rreplaying: {rep.packets} packets, {rate:,.0f} packets/s ")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def run(opts: ReplayOptions, *, stdout: TextIO, stderr: TextIO, prog: str = "natbox replay") -> int:
    """Run a replay (or scenario) as `opts` says. Raises UsageError for bad input (exit code 2)."""
    from natbox.adapters.pcap import CaptureError, CaptureReader, PcapngWriter, PcapWriter
    from natbox.replay.driver import Replayer, Source
    from natbox.replay.report import (
        EventsSink,
        ExplainSink,
        JsonlSink,
        PcapngOutSink,
        PcapOutSink,
        SummarySink,
        write_conntrack,
        write_counters,
        write_stats,
        write_summary,
    )

    color = opts.color == "always" or (opts.color == "auto" and stdout.isatty())
    engine, ruleset, hf = _build_engine(opts, events=opts.out is not None)
    host = hf.host
    ifaces = [n for n, i in host.interfaces.items() if i.kind != "loopback"]
    for iface, _path in opts.inputs:
        if iface is not None and iface not in host.interfaces:
            raise UsageError(f"--in {iface}=...: the host has no interface {iface!r} (it has: {', '.join(ifaces)})")
    if opts.packet is not None and opts.packet < 1:
        raise UsageError("--packet: packet numbers start at 1")

    scenario = None
    if opts.scenario is not None:
        from natbox.sim.scenario import ScenarioError, parse_scenario

        try:
            with open(opts.scenario, encoding="utf-8") as f:
                scenario = parse_scenario(f.read(), opts.scenario)
        except OSError as exc:
            raise UsageError(f"{opts.scenario}: {exc.strerror or exc}") from None
        except (ScenarioError, UnicodeDecodeError) as exc:
            raise UsageError(str(exc)) from None

    with ExitStack() as stack:
        readers: list[CaptureReader] = []
        sources: list[Source] = []
        for iface, path in opts.inputs:
            try:
                reader = stack.enter_context(CaptureReader(path))
            except CaptureError as exc:
                raise UsageError(str(exc)) from None
            if iface is None and reader.format != "pcapng":
                raise UsageError(f"--in {path}: a classic pcap names no interfaces; say where its packets "
                                 f"arrive with --in IFACE={path}")
            readers.append(reader)
            sources.append(Source(path, iface))

        sinks: list[PacketSink] = []
        out_dir = opts.out
        text_files: dict[str, TextIO] = {}

        def text(name: str) -> TextIO:
            assert out_dir is not None
            f: TextIO = stack.enter_context(open(os.path.join(out_dir, name), "w", encoding="utf-8"))
            text_files[name] = f
            return f

        if opts.pcapng is not None:
            try:
                ng = stack.enter_context(PcapngWriter(opts.pcapng))
            except OSError as exc:
                raise UsageError(f"--pcapng {opts.pcapng}: {exc.strerror or exc}") from None
            for name in ifaces:
                ng.add_interface(name)
            sinks.append(PcapngOutSink(ng))
        if out_dir is not None:
            try:
                os.makedirs(out_dir, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"--out {out_dir}: {exc.strerror or exc}") from None
            if opts.pcapng is None:
                def open_pcap(iface: str) -> PcapWriter:
                    assert out_dir is not None
                    return stack.enter_context(PcapWriter(os.path.join(out_dir, f"{iface}.out.pcap")))

                pcaps = PcapOutSink(open_pcap)
                for name in ifaces:  # every interface gets its file, even if nothing leaves it
                    pcaps.writers[name] = open_pcap(name)
                sinks.append(pcaps)
            sinks.append(EventsSink(engine, text("events.txt")))
            sinks.append(JsonlSink(text("packets.jsonl"), trace=opts.explain))
            if opts.explain:
                sinks.append(ExplainSink(text("explain.txt"), only=opts.packet))
        if opts.explain and out_dir is None:
            sinks.append(ExplainSink(stdout, color=color, as_json=opts.json, only=opts.packet))
        elif opts.json and not opts.explain:
            sinks.append(JsonlSink(stdout))
        summary: SummarySink | None = None
        if out_dir is None and not opts.json and opts.summary:
            summary = SummarySink()
            sinks.append(summary)

        trace_all = opts.explain and opts.packet is None
        replayer = Replayer(engine, sources, sinks, trace=trace_all, trace_packet=opts.packet if opts.explain else None)
        started = time.monotonic()
        if scenario is not None:
            from natbox.sim.lab import Lab
            from natbox.sim.scenario import ScenarioError

            lab = Lab(host, engine, seed=scenario.seed)
            engine.trace_all = opts.explain
            try:
                scenario.install(lab)
            except (ScenarioError, ValueError) as exc:
                raise UsageError(str(exc)) from None
            lab.run(until=scenario.end_time)
            inputs = [c for c in lab.captures if c.direction == "in"]
            name = os.path.basename(opts.scenario or "scenario")
            for n, (cap, out) in enumerate(zip(inputs, lab.outputs, strict=False), start=1):
                replayer.feed_output(n, name, cap.iface, round(cap.time * 1e9), cap.frame, "ether", out)
            replayer.finish(now_ns=round(lab.now * 1e9))
        else:
            progress = _Progress(stderr) if stderr.isatty() else None
            streams: list[Iterable[PcapRecord]] = list(readers)
            replayer.run(streams, progress=progress)
            if progress is not None:
                progress.clear()
            for reader in readers:
                if reader.error:
                    stderr.write(f"{prog}: warning: {reader.error}\n")
                    replayer.skipped[f"capture ends early: {reader.error}"] += 1
        elapsed = time.monotonic() - started

        now = replayer.now
        if out_dir is not None:
            write_conntrack(engine, now, text("conntrack.txt"), text("conntrack.stderr"))
            write_counters(ruleset, text("counters.txt"))
            write_stats(engine, replayer, text("stats.txt"))
        if summary is not None:
            write_summary(stdout, summary, engine, ruleset, replayer, color=color)
    rate = replayer.packets / elapsed if elapsed > 0 else 0.0
    stderr.write(f"{prog}: {replayer.packets} packets ({replayer.fed} replayed) in {elapsed:.2f} s: "
                 f"{rate:,.0f} packets/s\n")
    otherhost = engine.stats.get("otherhost", 0)
    if otherhost and otherhost * 2 >= replayer.fed:
        stderr.write(f"{prog}: note: {otherhost} frames were for another MAC than the interface's and were dropped "
                     "as a host does; to take captures from another machine, leave `mac` out of the host file's "
                     "interfaces (then every unicast frame is accepted)\n")
    return 0


def _parser(prog: str, description: str, *, explain_cmd: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--host", required=True, metavar="HOST", help="host file (TOML) or snapshot directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--in", dest="inputs", action="append", default=[], metavar="[IFACE=]FILE",
                     help="a pcap/pcapng whose packets arrive on IFACE (without IFACE: pcapng interface names)")
    src.add_argument("--scenario", metavar="FILE", help="a scenario file (traffic from simulated end hosts)")
    if explain_cmd:
        p.add_argument("--packet", type=int, metavar="N", help="explain only packet N (1-based, input order)")
    else:
        p.add_argument("--out", metavar="DIR", help="write output captures and reports to DIR")
        p.add_argument("--pcapng", metavar="FILE", help="one pcapng of every interface's output, with comments")
        p.add_argument("--explain", action="store_true", help="each packet's path through the host")
    p.add_argument("--json", action="store_true", help="one JSON object per packet on stdout")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    p.add_argument("--seed", type=int, default=1, help="seed of the host's random choices")
    return p


def main_for(argv: Sequence[str], *, prog: str, explain_cmd: bool,
             stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    desc = ("Explain what a host does to each packet of a capture or scenario." if explain_cmd
            else "Replay captures (or a scenario) through a host model.")
    parser = _parser(prog, desc, explain_cmd=explain_cmd)
    try:
        with redirect_stdout(out), redirect_stderr(err):  # argparse prints usage and --help on sys.*
            args = parser.parse_args(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        opts = ReplayOptions(
            host=args.host, inputs=[parse_in_spec(s) for s in args.inputs], scenario=args.scenario,
            out=getattr(args, "out", None), pcapng=getattr(args, "pcapng", None),
            explain=explain_cmd or bool(getattr(args, "explain", False)), json=args.json, color=args.color,
            seed=args.seed, packet=getattr(args, "packet", None), summary=not explain_cmd)
        return run(opts, stdout=out, stderr=err, prog=prog)
    except UsageError as exc:
        err.write(f"{prog}: {exc}\n")
        return 2


def replay_main(argv: Sequence[str]) -> int:
    """`natbox replay ...` (see the module doc)."""
    return main_for(argv, prog="natbox replay", explain_cmd=False)


