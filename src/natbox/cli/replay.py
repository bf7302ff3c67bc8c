"""`natbox replay`: captures (or a scenario file) through a host model, with what leaves each interface.

```
natbox replay --host HOST --in IFACE=FILE [--in ...] [--out DIR [--jsonl]] [--pcapng FILE] [--explain] [--json]
natbox replay --host HOST --in FILE            # a pcapng whose interface names are the host's
natbox replay --host HOST --in eth0=FILE --lan-net PREFIX [--wan-iface IFACE]   # a capture of one side
natbox replay --host HOST --scenario FILE ...  # traffic from a scenario file (natbox.sim.scenario)
natbox replay --host HOST --in ... --offload    # with the kernel datapath of `gateway --offload`, modelled
```

HOST is a TOML host file (`natbox.engine.hostfile`) or a snapshot directory (`natbox snapshot`). Inputs
are merged by timestamp and streamed (memory does not grow with the captures). With `--out DIR` the
files listed in `natbox.replay.report` are written (packets.jsonl only with `--jsonl`: it costs more than
the replay itself; plus `explain.txt` with `--explain`); without it a human summary is printed: tcpdump
lines per interface, drops, `conntrack -L`, `iptables -nvL` (`--quiet`: none). `--explain` prints each
packet's path (to stdout, or DIR/explain.txt); `--json` prints one JSON object per packet on stdout.
`--lan-net` splits a one-sided capture by direction (natbox.replay.split). On a terminal, progress (share
of the input read, ETA) goes to stderr; the packet rate is printed at the end, then warnings (frames for
another MAC, INVALID packets forwarded without NAT).

Exit codes: 0 done; 1 nothing replayed (every packet skipped) or `--packet N` past the end; 2 bad usage,
a host/rules/scenario file that cannot be used, or an input that is not a capture (one line on stderr
naming the file).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import ExitStack, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from natbox.cli.common import add_color_option, parse, parser, use_color
from natbox.errors import NatboxError, UsageError
from natbox.files import check_parent_dir

if TYPE_CHECKING:
    from natbox.adapters.pcap import CaptureReader, PcapRecord
    from natbox.engine.engine import Engine
    from natbox.engine.host import Host
    from natbox.engine.hostfile import HostFile
    from natbox.engine.offload_model import ModelDatapath
    from natbox.replay.driver import PacketSink, Replayer
    from natbox.rules.evaluate import Ruleset
    from natbox.sim.scenario import Scenario

__all__ = [
    "ReplayOptions", "UsageError", "build_parser", "load_host_file", "parse_in_spec", "parse_lan_net", "replay_main",
    "run",
]

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
    quiet: bool = False  # no summary, no progress
    jsonl: bool = False  # --out DIR also gets packets.jsonl
    lan_nets: list[tuple[int, int]] = field(default_factory=list)  # (network, mask): --lan-net
    wan_iface: str | None = None
    offload: bool = False  # --offload: established flows carried by the modelled datapath (engine/offload_model.py)


def parse_lan_net(text: str) -> tuple[int, int]:
    """`--lan-net 192.168.50.0/24` as (network, mask)."""
    import ipaddress

    try:
        net = ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        raise UsageError(f"--lan-net {text!r}: want an IPv4 prefix such as 192.168.50.0/24") from None
    return int(net.network_address), int(net.netmask)


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
    from natbox.adapters.snapshot import load_host

    try:
        return load_host(path)
    except NatboxError as exc:
        raise UsageError(str(exc)) from None


def _build_engine(opts: ReplayOptions, *, events: bool) -> tuple[Engine, Ruleset, HostFile]:
    from natbox.engine.engine import Engine
    from natbox.engine.host import HostError
    from natbox.engine.hostfile import host_ipsets, host_nfacct
    from natbox.engine.hostfile6 import rules6_ruleset
    from natbox.ipset.scope import using_sets
    from natbox.rules.evaluate import Ruleset
    from natbox.rules.model import RulesError
    from natbox.rules.parser import parse_restore
    from natbox.rules.xtstate.nfacct import using_nfacct

    hf = load_host_file(opts.host)
    host = hf.host
    ruleset = Ruleset()
    try:
        sets = host_ipsets(hf)  # restored first, as on the host: the rules may name them
        acct = host_nfacct(hf)  # and a snapshot's nfacct objects (-m nfacct rules name them)
    except NatboxError as exc:
        raise UsageError(str(exc)) from None
    if host.rules_text.strip():
        try:
            with using_sets(sets), using_nfacct(acct):
                ruleset.restore(parse_restore(host.rules_text, file=host.rules_origin))
        except RulesError as exc:
            raise UsageError(f"{host.rules_origin}: {exc}") from None
    try:
        with using_sets(sets), using_nfacct(acct):
            ruleset6 = rules6_ruleset(host.rules6_text, hf.rules6_origin)
    except RulesError as exc:
        raise UsageError(f"{hf.rules6_origin}: {exc}") from None
    try:
        engine = Engine(host, ruleset=ruleset, ruleset6=ruleset6, seed=opts.seed, events=events,
                        offload=opts.offload)
    except HostError as exc:
        raise UsageError(f"{opts.host}: {exc}") from None
    engine.listeners = set(hf.listen)
    engine.ipsets = sets
    engine.xt_state.nfacct = acct
    return engine, ruleset, hf


class _Progress:
    """`\\r` progress on a terminal, at most every PROGRESS_INTERVAL seconds: packets, rate, and the share of
    the input files read with the time left at that pace."""

    def __init__(self, stream: TextIO, readers: Sequence[CaptureReader], total_bytes: int) -> None:
        self.stream = stream
        self.readers = readers
        self.total = total_bytes
        self.start = time.monotonic()
        self.last = self.start
        self.shown = False
        self.width = 0

    def __call__(self, rep: Replayer) -> None:
        t = time.monotonic()
        if t - self.last < PROGRESS_INTERVAL:
            return
        self.last = t
        elapsed = max(t - self.start, 1e-9)
        line = f"replaying: {rep.packets:,} packets, {rep.packets / elapsed:,.0f} packets/s"
        done = sum(r.bytes_read for r in self.readers)
        if self.total > 0 and done > 0:
            left = elapsed * (self.total - done) / done
            line += f", {min(done / self.total, 1.0):.0%} read, ETA {int(left) // 60}:{int(left) % 60:02d}"
        self.stream.write(f"\r{line} ")
        self.stream.flush()
        self.shown = True
        self.width = max(self.width, len(line) + 1)

    def clear(self) -> None:
        if self.shown:  # erase the line (with spaces where the terminal takes no escape sequences)
            self.stream.write("\r" + " " * self.width + "\r" if os.environ.get("TERM") == "dumb" else "\r\x1b[K")
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
    from natbox.replay.split import DirectionSplit

    color = opts.color == "always" or (opts.color == "auto" and use_color("auto", stdout))
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
        from natbox.files import read_text
        from natbox.sim.scenario import ScenarioError, parse_scenario

        try:
            scenario = parse_scenario(read_text(opts.scenario), opts.scenario)
        except ScenarioError as exc:
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
            check_parent_dir(out_dir.rstrip("/") or "/", "--out")
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
            if opts.jsonl:
                sinks.append(JsonlSink(text("packets.jsonl"), trace=opts.explain))
            if opts.explain:
                sinks.append(ExplainSink(text("explain.txt"), only=opts.packet))
        if opts.explain and out_dir is None:
            sinks.append(ExplainSink(stdout, color=color, as_json=opts.json, only=opts.packet))
        elif opts.json and not opts.explain:
            sinks.append(JsonlSink(stdout))
        summary: SummarySink | None = None
        if out_dir is None and not opts.json and opts.summary and not opts.quiet:
            summary = SummarySink()
            sinks.append(summary)

        trace_all = opts.explain and opts.packet is None
        replayer = Replayer(engine, sources, sinks, trace=trace_all, trace_packet=opts.packet if opts.explain else None)
        if opts.lan_nets:
            replayer.split = DirectionSplit(engine, opts.lan_nets, _wan_iface(opts, host))
        if opts.offload:
            from natbox.engine.offload_model import ModelDatapath

            replayer.datapath = ModelDatapath(engine)
        started = time.monotonic()
        if scenario is not None:
            _run_scenario(scenario, opts, engine, replayer)
        else:
            total = sum(os.path.getsize(path) for _iface, path in opts.inputs if os.path.isfile(path))
            progress = _Progress(stderr, readers, total) if stderr.isatty() and not opts.quiet else None
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
            if replayer.datapath is not None:
                _offload_summary(replayer.datapath, stdout)
    rate = replayer.packets / elapsed if elapsed > 0 else 0.0
    stderr.write(f"{prog}: {replayer.packets} packets ({replayer.fed} replayed) in {elapsed:.2f} s: "
                 f"{rate:,.0f} packets/s\n")
    _warnings(engine, replayer, stderr, prog)
    if replayer.fed == 0:
        why = "; ".join(f"{n} {reason}" for reason, n in replayer.skipped.most_common(3))
        stderr.write(f"{prog}: error: nothing was replayed: " + ("the input had no packets" if not replayer.packets
                     else f"every packet was skipped ({why})") + "\n")
        return 1
    if opts.packet is not None and opts.packet > replayer.packets:
        stderr.write(f"{prog}: error: --packet {opts.packet}: the input has only {replayer.packets} packets\n")
        return 1
    return 0


def _offload_summary(datapath: ModelDatapath, stdout: TextIO) -> None:
    """--offload: what the modelled datapath carried, and when flows went to it and came back."""
    stdout.write(f"\noffload: {datapath.carried[0]} packets ({datapath.carried[1]} bytes) carried by the datapath, "
                 f"{len(datapath.installed)} flows offloaded at the end\n")
    for t, text in datapath.events:
        stdout.write(f"  {t:.6f} {text}\n")


def _run_scenario(scenario: Scenario, opts: ReplayOptions, engine: Engine, replayer: Replayer) -> None:
    """Run the scenario's end hosts against the host in simulated time; the sinks see each input packet."""
    from natbox.sim.lab import Lab
    from natbox.sim.scenario import ScenarioError

    lab = Lab(engine.host, engine, seed=scenario.seed)
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


def _wan_iface(opts: ReplayOptions, host: Host) -> str:
    """--wan-iface, else the device of the main table's default route."""
    if opts.wan_iface is not None:
        if opts.wan_iface not in host.interfaces:
            raise UsageError(f"--wan-iface {opts.wan_iface}: the host has no such interface")
        return opts.wan_iface
    for r in host.routes:
        if r.prefixlen == 0 and r.dev is not None and r.table == "main":
            return r.dev
    raise UsageError("--lan-net: the host has no default route; say where replies enter with --wan-iface IFACE")


def _warnings(engine: Engine, replayer: Replayer, stderr: TextIO, prog: str) -> None:
    """What a user should know about a replay that ran: frames for another MAC, un-NATed INVALID packets."""
    otherhost = engine.stats.get("otherhost", 0)
    if otherhost and otherhost * 2 >= replayer.fed:
        stderr.write(f"{prog}: note: {otherhost} frames were for another MAC than the interface's and were dropped "
                     "as a host does; to take captures from another machine, leave `mac` out of the host file's "
                     "interfaces (then every unicast frame is accepted)\n")
    invalid = replayer.invalid_forwarded
    if invalid:
        stderr.write(f"{prog}: warning: {invalid} packets conntrack marked INVALID were forwarded without NAT "
                     "(as Linux does: NAT only sees tracked packets), so private addresses can leak out; the usual "
                     "fix is a rule such as `iptables -A FORWARD -m conntrack --ctstate INVALID -j DROP`\n")


REPLAY_DESCRIPTION = """\
Replay captures (or a scenario file) through a host model and show what the host does: the frames that
leave each interface, the conntrack table, the rule counters, what was dropped and why.

HOST is a TOML host file (examples/masquerade-host.toml; its `[rules] file` is read relative to it) or a
snapshot directory (natbox snapshot). Inputs are merged by timestamp and streamed: memory does not grow
with the captures. The captures' timestamps are the host's clock (conntrack timeouts, gc)."""

EXPLAIN_DESCRIPTION = """\
Explain what a host does to each packet of a capture or scenario: for every input packet (or only packet
N, counted from 1 in the merged input order) a header line (number, time, interface, source file and
index, `tcpdump -n` text), the engine's steps in order (hooks, the rules met and why others did not
match, conntrack, NAT bindings and port choices, routing), then its fate: `=> sent on IFACE` with the
packet as sent, `=> delivered locally`, or `=> dropped at WHERE: REASON`. The same as
`natbox replay --explain` without the summary."""

REPLAY_EPILOG = """\
output:
  Without --out a summary is printed: tcpdump lines per interface, drops, `conntrack -L`, `iptables -nvL`.
  --out DIR writes (DIR's parent must exist):
    IFACE.out.pcap     what left IFACE (or one pcapng with --pcapng FILE, each packet commented with the
                       input packet it came from and its conntrack id)
    conntrack.txt      the final table as `conntrack -L`; events.txt as `conntrack -E`
    counters.txt       `iptables -t TABLE -nvL` of every table
    stats.txt          `conntrack -S`, natbox's drop reasons, the inputs not replayed and why
    packets.jsonl      one JSON object per input packet (with --jsonl only: it doubles the run time)
    explain.txt        with --explain

examples:
  natbox replay --host examples/masquerade-host.toml --in eth0=examples/lan.pcap --in eth1=examples/wan.pcap
  natbox replay --host examples/masquerade-host.toml --in examples/both.pcapng --out out/
  natbox replay --host examples/masquerade-host.toml --in eth0=examples/client-side.pcap --lan-net 192.168.50.0/24
  natbox replay --host examples/docker-host.toml --scenario examples/docker-scenario.toml --explain

exit status: 0 replayed; 1 nothing could be replayed (every packet skipped: the reasons are printed);
2 bad usage, or a host, rules, scenario or capture file that cannot be used (one line naming it).
On a terminal, progress (% of the input read, ETA) goes to stderr; --quiet leaves it and the summary out."""

EXPLAIN_EPILOG = """\
examples:
  natbox explain --host examples/docker-host.toml --scenario examples/docker-scenario.toml --packet 5
  natbox explain --host examples/masquerade-host.toml --in eth0=examples/lan.pcap --json | jq .

exit status: 0 explained; 1 nothing to explain (--packet N past the end, or every packet skipped);
2 bad usage or an input that cannot be used."""


def build_parser(*, explain_cmd: bool) -> argparse.ArgumentParser:
    """The argument parser of `natbox replay` (or `natbox explain`)."""
    p = parser("natbox explain" if explain_cmd else "natbox replay",
               EXPLAIN_DESCRIPTION if explain_cmd else REPLAY_DESCRIPTION,
               EXPLAIN_EPILOG if explain_cmd else REPLAY_EPILOG)
    p.add_argument("--host", required=True, metavar="HOST", help="host file (TOML) or snapshot directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--in", dest="inputs", action="append", default=[], metavar="[IFACE=]FILE",
                     help="a pcap or pcapng capture whose packets arrive on IFACE; without IFACE, a pcapng whose "
                          "interface names are the host's (repeat --in for several captures)")
    src.add_argument("--scenario", metavar="FILE",
                     help="a scenario file: traffic from simulated end hosts (examples/*-scenario.toml)")
    p.add_argument("--lan-net", action="append", default=[], metavar="PREFIX",
                   help="a capture taken on the LAN side only (on a client): packets from inside PREFIX enter "
                        "as captured; the others are replies, given the address and port the host's NAT chose "
                        "and entered on the WAN side (repeatable)")
    p.add_argument("--wan-iface", metavar="IFACE",
                   help="with --lan-net: where replies enter (default: the interface of the default route)")
    if explain_cmd:
        p.add_argument("--packet", type=int, metavar="N", help="explain only packet N (1-based, input order)")
    else:
        p.add_argument("--out", metavar="DIR", help="write output captures and reports to DIR (see below)")
        p.add_argument("--pcapng", metavar="FILE", help="one pcapng of every interface's output, with comments")
        p.add_argument("--jsonl", action="store_true", help="with --out: also write DIR/packets.jsonl")
        p.add_argument("--explain", action="store_true", help="each packet's path through the host (as natbox explain)")
        p.add_argument("-q", "--quiet", action="store_true",
                       help="no summary and no progress: only warnings, errors and the closing rate line")
    p.add_argument("--json", action="store_true", help="one JSON object per packet on stdout")
    p.add_argument("--offload", action="store_true",
                   help="model `natbox gateway --offload`: once the host offloads a flow, its packets are carried "
                        "by the kernel datapath (its plan, no hook: rule counters, LOG and NFLOG do not see them) "
                        "until it comes back (FIN, RST, idle, route); captures with Ethernet headers only")
    add_color_option(p)
    p.add_argument("--seed", type=int, default=1, help="seed of the host's random choices (default 1)")
    return p


def main_for(argv: Sequence[str], *, prog: str, explain_cmd: bool,
             stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    with redirect_stdout(out), redirect_stderr(err):  # argparse prints usage and --help on sys.*
        args = parse(build_parser(explain_cmd=explain_cmd), argv)
    if isinstance(args, int):
        return args
    try:
        opts = ReplayOptions(
            host=args.host, inputs=[parse_in_spec(s) for s in args.inputs], scenario=args.scenario,
            out=getattr(args, "out", None), pcapng=getattr(args, "pcapng", None),
            explain=explain_cmd or bool(getattr(args, "explain", False)), json=args.json,
            color="always" if use_color(args.color, out) else "never",
            seed=args.seed, packet=getattr(args, "packet", None), summary=not explain_cmd,
            quiet=bool(getattr(args, "quiet", False)), jsonl=bool(getattr(args, "jsonl", False)),
            lan_nets=[parse_lan_net(n) for n in args.lan_net], wan_iface=args.wan_iface, offload=args.offload)
        if opts.wan_iface is not None and not opts.lan_nets:
            raise UsageError("--wan-iface needs --lan-net (which packets are replies)")
        if opts.lan_nets and opts.scenario is not None:
            raise UsageError("--lan-net splits captures (--in), not a scenario")
        if opts.offload and opts.scenario is not None:
            raise UsageError("--offload models the datapath for captures (--in), not a scenario")
        return run(opts, stdout=out, stderr=err, prog=prog)
    except UsageError as exc:
        err.write(f"{prog}: {exc}\n")
        return 2


def replay_main(argv: Sequence[str]) -> int:
    """`natbox replay ...` (see the module doc)."""
    return main_for(argv, prog="natbox replay", explain_cmd=False)


