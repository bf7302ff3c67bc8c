"""Offline micro-benchmark of the engine's slow path: new connections through a NAT gateway.

    python bench/slowpath_bench.py [--conns 3000] [--udp 3000] [--only gateway,docker-out,docker-in]
                                   [--profile FILE]

Each scenario builds an Engine and runs N complete TCP connection lifecycles through it, each with a
fresh client port, the way a client that connects and closes in a loop drives a live gateway:

    client SYN → server SYN-ACK → client ACK → client FIN/ACK → server ACK → server FIN/ACK → client ACK

The server side's packets are addressed to what the engine actually emitted (the NATed source address
and port, or the DNATed destination), and every packet must leave as exactly one frame: a warm-up
connection checks that up front (and every timed packet is checked as well), so what is measured is the
real forwarding path, not a drop. Segments carry the options Linux sends (MSS, SACK_PERM, timestamps,
window scale on the SYNs; timestamps on the rest). A UDP variant measures a new flow's first packet and
its reply.

Scenarios:
* `gateway`: `natbox bench`'s gateway (`-A POSTROUTING -o eth1 -j MASQUERADE`, no filter table).
* `docker-out`: Docker's classic ruleset (src/natbox/demos, §6), a container connecting out (filter
  FORWARD chains, MASQUERADE).
* `docker-in`: the same ruleset, an outside client connecting to the published port 10000 (DNAT to
  172.17.0.2:8000, the DOCKER filter chain).

Figures are µs per packet by kind (the mean of the `Engine.receive` calls, timed one by one with
`time.perf_counter`) and connections/s (the seven packets' sum). A benchmark reports; it never fails.
`--profile FILE` writes a cProfile of the gateway scenario's connections to FILE.

Before/after in one run (issue #11: "no slower than before"):

    python bench/slowpath_bench.py --compare e01bbe0 [--runs 7] [--callgrind-scale 20] [--cases ...]

measures revision REV (its src/ unpacked from `git archive` into a temporary directory) and this tree (with
uncommitted changes) with the same driver, this file: each tree runs in its own worker process
(NATBOX_SRC names its src/, PYTHONHASHSEED=0). The cases are `established` (`natbox bench`'s workload:
established TCP and UDP over 1000 + 1000 flows through the MASQUERADE gateway) and the scenarios above
as `<scenario> TCP` / `<scenario> UDP`. A worker runs each case once and keeps the frames it sent, then
replays them through a fresh engine built the same way (same seed, same virtual times, so the same
answers) and measures only those `Engine.receive` calls:
1. instructions per packet under callgrind (`valgrind --tool=callgrind`, counts divided by
   `--callgrind-scale`), counted only inside the calls of receive (see `_replay`): deterministic, the
   primary figure on a machine other work loads;
2. CPU time (`time.process_time_ns`) per packet, the median of `--runs` runs alternating the trees
   (REV first in odd runs, this tree first in even ones), with the ratio of the medians and the median
   of the per-run ratios.
Ratios are this tree / REV: below 1.00 is faster.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

if not os.environ.get("NATBOX_INSTALLED"):  # set it to measure the installed natbox (the compiled build)
    # --compare's workers set NATBOX_SRC to the src directory of the tree they measure
    sys.path.insert(0, os.environ.get("NATBOX_SRC") or str(Path(__file__).resolve().parents[1] / "src"))

from natbox.cli.bench import _gateway  # `natbox bench`'s gateway: -o eth1 -j MASQUERADE
from natbox.conntrack.tuple import parse_addr
from natbox.demos.scenarios import _docker_host
from natbox.engine.engine import Engine, Output
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ipv4, tcp, udp

KINDS = ("SYN", "SYN-ACK", "ACK", "FIN/ACK (client)", "ACK (server)", "FIN/ACK (server)", "last ACK")
REPO = Path(__file__).resolve().parents[1]
UDP_KINDS = ("UDP first", "UDP reply")
STEP = 0.0001  # virtual seconds between packets


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


@dataclass
class Scenario:
    """Where a client is, where it connects to, and how the host is built."""

    name: str
    build: Callable[[], Engine]
    client_if: str
    client: int
    client_mac: bytes
    dst: int
    dport: int
    server_if: str


def _docker() -> Engine:
    """The docker demo's host and ruleset (src/natbox/demos/scenarios.py)."""
    host, rules = _docker_host()
    ruleset = Ruleset()
    ruleset.restore(parse_restore(rules, file="docker"))
    return Engine(host, ruleset=ruleset, seed=1)


SCENARIOS = (
    Scenario("gateway", _gateway, "eth0", parse_addr("10.0.1.2"), _mac("02000a000102"),
             parse_addr("198.51.100.2"), 80, "eth1"),
    Scenario("docker-out", _docker, "docker0", parse_addr("172.17.0.2"), _mac("02:42:ac:11:00:02"),
             parse_addr("8.8.8.8"), 80, "eth0"),
    Scenario("docker-in", _docker, "eth0", parse_addr("114.246.99.100"), _mac("06:7c:16:88:fe:87"),
             parse_addr("45.77.200.180"), 10000, "docker0"),
)

SYN_OPTS = tcp.tcp_opt_mss(1460) + tcp.tcp_opt_sack_perm()
NOP = tcp.tcp_opt_nop()


def _syn_options(tsval: int, tsecr: int) -> bytes:
    """What Linux puts on a SYN or SYN-ACK: MSS, SACK_PERM, timestamps, NOP, window scale 7."""
    return SYN_OPTS + tcp.tcp_opt_timestamps(tsval, tsecr) + NOP + tcp.tcp_opt_wscale(7)


def _ts_options(tsval: int, tsecr: int) -> bytes:
    return NOP + NOP + tcp.tcp_opt_timestamps(tsval, tsecr)


class _Side:
    """One end of a connection: builds its frames to the gateway's MAC on its link."""

    def __init__(self, addr: int, port: int, peer: int, pport: int, mac: bytes, gw_mac: bytes) -> None:
        self.addr, self.port, self.peer, self.pport = addr, port, peer, pport
        self.l2 = gw_mac + mac + b"\x08\x00"
        self.ts = 1000

    def seg(self, flags: int, seq: int, ack: int, window: int, options: bytes) -> bytes:
        seg = tcp.build_tcp(self.addr, self.peer, self.port, self.pport, seq=seq, ack=ack, flags=flags,
                            window=window, options=options)
        return self.l2 + bytes(ipv4.build_ipv4(self.addr, self.peer, 6, seg, ttl=64, df=True))

    def dgram(self, payload: bytes) -> bytes:
        d = udp.build_udp(self.addr, self.peer, self.port, self.pport, payload)
        return self.l2 + bytes(ipv4.build_ipv4(self.addr, self.peer, 17, d, ttl=64, df=True))


def _emitted(out: Output, what: str) -> tuple[str, bytes]:
    """The one frame the engine sent for a packet (anything else is a measurement error)."""
    if len(out.emitted) != 1 or out.dropped:
        raise SystemExit(f"slowpath_bench: {what} was not forwarded as one frame: emitted {out.emitted}, "
                         f"dropped {out.dropped}")
    e = out.emitted[0]
    return e.iface, e.frame


@dataclass
class Figures:
    total: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    bad: int = 0

    def add(self, kind: str, seconds: float) -> None:
        self.total[kind] = self.total.get(kind, 0.0) + seconds
        self.count[kind] = self.count.get(kind, 0) + 1

    def us(self, kind: str) -> float:
        return self.total[kind] / self.count[kind] * 1e6 if self.count.get(kind) else 0.0


class Runner:
    """Runs connection lifecycles through one scenario's engine, timing each `receive`."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.engine = sc.build()
        self.gw_client_mac = self.engine.host.interfaces[sc.client_if].mac
        self.gw_server_mac = self.engine.host.interfaces[sc.server_if].mac
        self.now = 1.0
        self.port = 10000
        self.figures = Figures()
        self.log: list[tuple[bytes, str, float]] | None = None  # every frame received, for --compare's replay

    def _rx(self, kind: str, frame: bytes, iface: str, want_if: str, check: bool) -> bytes:
        receive = self.engine.receive
        now = self.now = self.now + STEP
        if self.log is not None:
            self.log.append((frame, iface, now))
        t0 = time.perf_counter()
        out = receive(frame, iface, now)
        dt = time.perf_counter() - t0
        self.figures.add(kind, dt)
        if check:
            got_if, got = _emitted(out, kind)
            if got_if != want_if:
                raise SystemExit(f"slowpath_bench: {kind} left on {got_if}, not {want_if}")
            return got
        if len(out.emitted) != 1 or out.dropped:
            self.figures.bad += 1
            return b""
        return out.emitted[0].frame

    def _next_port(self) -> int:
        self.port += 1
        if self.port > 60000:
            self.port = 10001
        return self.port

    def tcp_conn(self, check: bool = False) -> None:
        sc = self.sc
        c = _Side(sc.client, self._next_port(), sc.dst, sc.dport, sc.client_mac, self.gw_client_mac)
        cseq, sseq = 0x1000_0000 + c.port * 7919, 0x5000_0000 + c.port * 104729
        c.ts += 1
        syn = self._rx(KINDS[0], c.seg(tcp.SYN, cseq, 0, 64240, _syn_options(c.ts, 0)), sc.client_if,
                       sc.server_if, check)
        if not syn:
            return
        # the server answers what arrived: addresses and ports as the engine emitted them
        ip = syn[14:]
        ihl = (ip[0] & 0x0F) * 4
        s = _Side(int.from_bytes(ip[16:20], "big"), int.from_bytes(ip[ihl + 2:ihl + 4], "big"),
                  int.from_bytes(ip[12:16], "big"), int.from_bytes(ip[ihl:ihl + 2], "big"), syn[:6],
                  self.gw_server_mac)
        sts = 7000 + c.port
        rx = self._rx
        rx(KINDS[1], s.seg(tcp.SYN | tcp.ACK, sseq, cseq + 1, 65160, _syn_options(sts, c.ts)), sc.server_if,
           sc.client_if, check)
        rx(KINDS[2], c.seg(tcp.ACK, cseq + 1, sseq + 1, 502, _ts_options(c.ts + 1, sts)), sc.client_if,
           sc.server_if, check)
        rx(KINDS[3], c.seg(tcp.FIN | tcp.ACK, cseq + 1, sseq + 1, 502, _ts_options(c.ts + 1, sts)), sc.client_if,
           sc.server_if, check)
        rx(KINDS[4], s.seg(tcp.ACK, sseq + 1, cseq + 2, 509, _ts_options(sts + 1, c.ts + 1)), sc.server_if,
           sc.client_if, check)
        rx(KINDS[5], s.seg(tcp.FIN | tcp.ACK, sseq + 1, cseq + 2, 509, _ts_options(sts + 1, c.ts + 1)),
           sc.server_if, sc.client_if, check)
        rx(KINDS[6], c.seg(tcp.ACK, cseq + 2, sseq + 2, 502, _ts_options(c.ts + 2, sts + 1)), sc.client_if,
           sc.server_if, check)

    def udp_flow(self, check: bool = False) -> None:
        sc = self.sc
        c = _Side(sc.client, self._next_port(), sc.dst, sc.dport if sc.dport != 10000 else 10000, sc.client_mac,
                  self.gw_client_mac)
        first = self._rx(UDP_KINDS[0], c.dgram(b"q" * 32), sc.client_if, sc.server_if, check)
        if not first:
            return
        ip = first[14:]
        s = _Side(int.from_bytes(ip[16:20], "big"), int.from_bytes(ip[22:24], "big"),
                  int.from_bytes(ip[12:16], "big"), int.from_bytes(ip[20:22], "big"), first[:6], self.gw_server_mac)
        self._rx(UDP_KINDS[1], s.dgram(b"r" * 64), sc.server_if, sc.client_if, check)


def run_scenario(sc: Scenario, conns: int, udps: int, profile: str | None) -> tuple[Figures, Figures]:
    tcp_run = Runner(sc)
    tcp_run.tcp_conn(check=True)  # the warm-up: every packet must be forwarded, or the figures mean nothing
    tcp_run.tcp_conn(check=True)
    tcp_run.figures = Figures()
    gc.collect()
    prof = cProfile.Profile() if profile else None
    if prof is not None:
        prof.enable()
    for _ in range(conns):
        tcp_run.tcp_conn()
    if prof is not None:
        prof.disable()
        assert profile is not None
        prof.dump_stats(profile)
    udp_run = Runner(sc)
    udp_figs = udp_run.figures
    if udps and sc.name != "docker-in":  # the published port is TCP only
        udp_run.udp_flow(check=True)
        udp_run.figures = udp_figs = Figures()
        gc.collect()
        for _ in range(udps):
            udp_run.udp_flow()
    return tcp_run.figures, udp_figs


# --compare REV: the figures of another revision and of this tree, measured in the same run ------------------------

CASES = ("established", "gateway TCP", "gateway UDP", "docker-out TCP", "docker-out UDP", "docker-in TCP")
Frames = list[tuple[bytes, str, float]]


def _recorded(case: str, n: int) -> tuple[Callable[[], Engine], Frames, int]:
    """`case`'s engine builder, the frames it receives (warm-up first) and how many of them are warm-up.

    A slow-path case runs its connections (or UDP flows) once through a Runner that keeps every frame it
    sends; a fresh engine built the same way (same seed, same virtual times) answers the same frames the
    same way, so the replay measures `Engine.receive` alone. `established` is `natbox bench`'s workload:
    1000 TCP and 1000 UDP flows set up, three packets of each kind on each flow as the warm-up (the flows'
    compiled plans are made there), then `n` packets of established traffic."""
    if case == "established":
        from natbox.cli.bench import _workload

        engine, work = _workload(1000, n + 12000)
        # natbox bench's clock: +1 ms every 1024 packets
        return (lambda: engine), [(f, i, 1.0 + (k // 1024 + 1) * 0.001) for k, (f, i) in enumerate(work)], 12000
    name, proto = case.split()
    run = Runner(next(sc for sc in SCENARIOS if sc.name == name))
    run.log = []
    step = run.tcp_conn if proto == "TCP" else run.udp_flow
    step(check=True)
    step(check=True)
    warm = len(run.log)
    for _ in range(n):
        step()
    if run.figures.bad:
        raise SystemExit(f"slowpath_bench: {case}: {run.figures.bad} packets were not forwarded as one frame")
    return run.sc.build, run.log, warm


def _replay(engine: Engine, frames: Frames) -> tuple[int, int]:
    """CPU nanoseconds and frames out for `frames` through `engine.receive`, called through a
    functools.partial: callgrind counts only what runs inside it (`--toggle-collect=partial_vectorcall`),
    from gc.get_count() (`--zero-before=gc_get_count`) to gc.get_threshold() (`--dump-before=...`)."""
    receive = functools.partial(engine.receive)
    sent = 0
    gc.collect()
    gc.get_count()
    t0 = time.process_time_ns()
    for frame, iface, now in frames:
        sent += len(receive(frame, iface, now).emitted)
    ns = time.process_time_ns() - t0
    gc.get_threshold()
    return ns, sent


def worker(cases: list[str], tcp_conns: int, udp_flows: int, packets: int) -> dict[str, dict[str, int]]:
    """One tree's figures for `cases` (run with NATBOX_SRC naming the tree's src directory)."""
    result: dict[str, dict[str, int]] = {}
    for case in cases:
        n = packets if case == "established" else tcp_conns if case.endswith("TCP") else udp_flows
        build, frames, warm = _recorded(case, n)
        engine = build()
        if warm:
            for frame, iface, now in frames[:warm]:
                engine.receive(frame, iface, now)
        ns, sent = _replay(engine, frames[warm:])
        if sent != len(frames) - warm:
            raise SystemExit(f"slowpath_bench: {case}: {len(frames) - warm} packets in, {sent} frames out")
        result[case] = {"packets": len(frames) - warm, "ns": ns, "sent": sent}
    return result


def _tree_of(rev: str, into: Path) -> Path:
    """`rev`'s src directory, unpacked from `git archive` into `into`."""
    got = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev, "src"], capture_output=True,
                         check=False)
    if got.returncode:
        raise SystemExit(f"slowpath_bench: --compare {rev}: {got.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(got.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _worker_cmd(args: argparse.Namespace, scale: int) -> list[str]:
    return [sys.executable, __file__, "--worker", ",".join(args.cases), "--conns", str(args.conns // scale),
            "--udp", str(args.udp // scale), "--packets", str(args.packets // scale)]


def _env(src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NATBOX_INSTALLED", "PYTHONPATH")}
    return env | {"NATBOX_SRC": str(src), "PYTHONHASHSEED": "0"}


def _instructions(args: argparse.Namespace, src: Path, out: Path) -> dict[str, float]:
    """Instructions per packet of `Engine.receive` for each case, counted by callgrind."""
    cmd = ["valgrind", "--tool=callgrind", "--toggle-collect=partial_vectorcall", "--zero-before=gc_get_count",
           "--dump-before=gc_get_threshold",
           f"--callgrind-out-file={out}", *_worker_cmd(args, args.callgrind_scale)]
    got = subprocess.run(cmd, env=_env(src), capture_output=True, text=True, check=False)
    if got.returncode:
        raise SystemExit(f"slowpath_bench: callgrind failed: {got.stderr.strip()[-2000:]}")
    figures = json.loads(got.stdout)
    counts = []
    for dump in sorted(out.parent.glob(out.name + ".*"), key=lambda p: int(p.suffix[1:])):
        totals = [int(line.split()[1]) for line in dump.read_text().splitlines() if line.startswith("totals:")]
        counts += totals[:1]
    if len(counts) != len(args.cases) or not all(counts):
        raise SystemExit(f"slowpath_bench: callgrind gave counts {counts} for {len(args.cases)} cases (a Python "
                         "without symbols for partial_vectorcall, gc_get_count and gc_get_threshold?)")
    return {case: ir / figures[case]["packets"] for case, ir in zip(args.cases, counts, strict=True)}


def compare(args: argparse.Namespace) -> int:
    """Print `--compare REV`'s figures: callgrind instructions per packet, then CPU-time medians of
    alternating runs of both trees, with their ratios (this tree / REV)."""
    with tempfile.TemporaryDirectory(prefix="slowpath-compare-") as tmp:
        trees = {args.compare: _tree_of(args.compare, Path(tmp) / "base"), "this tree": REPO / "src"}
        names = list(trees)
        print(f"slowpath_bench --compare {args.compare}: ratios are this tree (with uncommitted changes) / "
              f"{args.compare}; cases: {', '.join(args.cases)}")
        if args.callgrind_scale:
            ir = {name: _instructions(args, src, Path(tmp) / f"cg-{k}.out") for k, (name, src) in
                  enumerate(trees.items())}
            print(f"\ninstructions per packet (callgrind, Engine.receive only; counts / {args.callgrind_scale})")
            print(f"  {'case':<16} {names[0]:>12} {names[1]:>12}  ratio")
            for case in args.cases:
                a, b = ir[names[0]][case], ir[names[1]][case]
                print(f"  {case:<16} {a:12,.0f} {b:12,.0f}  {b / a:.4f}")
        if args.runs:
            us: dict[str, dict[str, list[float]]] = {name: {c: [] for c in args.cases} for name in names}
            for run in range(args.runs):
                for name in names if run % 2 == 0 else names[::-1]:
                    got = subprocess.run(_worker_cmd(args, 1), env=_env(trees[name]), capture_output=True,
                                         text=True, check=True)
                    for case, fig in json.loads(got.stdout).items():
                        us[name][case].append(fig["ns"] / fig["packets"] / 1000)
            print(f"\nCPU time per packet (process_time, µs; median of {args.runs} alternating runs)")
            print(f"  {'case':<16} {names[0]:>12} {names[1]:>12}  ratio  median of paired ratios")
            for case in args.cases:
                old, new = us[names[0]][case], us[names[1]][case]
                paired = statistics.median(y / x for x, y in zip(old, new, strict=True))
                print(f"  {case:<16} {statistics.median(old):12.2f} {statistics.median(new):12.2f}  "
                      f"{statistics.median(new) / statistics.median(old):.3f}  {paired:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--conns", type=int, default=3000, help="TCP connections per scenario (default 3000)")
    ap.add_argument("--udp", type=int, default=3000, help="UDP flows per scenario (default 3000)")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--profile", default="", help="write a cProfile of the first scenario's TCP connections")
    ap.add_argument("--compare", metavar="REV", default="",
                    help="print REV's figures beside this tree's, measured in the same run (see the docstring)")
    ap.add_argument("--runs", type=int, default=7, help="--compare: alternating CPU-time runs (0 skips them)")
    ap.add_argument("--packets", type=int, default=40000, help="--compare: established packets per run")
    ap.add_argument("--cases", default=",".join(CASES), help="--compare: comma-separated cases")
    ap.add_argument("--callgrind-scale", type=int, default=20,
                    help="--compare: callgrind runs the counts divided by this (0 skips callgrind)")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker.split(","), args.conns, args.udp, args.packets)))
        return 0
    if args.compare:
        args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
        return compare(args)
    from natbox.cli.bench import build_name  # here, not above: --compare's workers import this file on old trees

    only = set(filter(None, args.only.split(",")))
    print(f"slowpath_bench: build: {build_name()}")
    print(f"slowpath_bench: {args.conns} TCP connections (7 packets each) and {args.udp} UDP flows per scenario")
    first = True
    for sc in SCENARIOS:
        if only and sc.name not in only:
            continue
        tf, uf = run_scenario(sc, args.conns, args.udp, args.profile if first and args.profile else None)
        first = False
        per_conn = sum(tf.us(k) for k in KINDS)
        print(f"\n[{sc.name}]")
        for k in KINDS:
            print(f"  {k:<18} {tf.us(k):7.1f} us/packet")
        print(f"  {'mean':<18} {per_conn / len(KINDS):7.1f} us/packet")
        print(f"  connection (7 packets) {per_conn:7.1f} us  ->  {1e6 / per_conn:8,.0f} connections/s")
        if uf.count:
            for k in UDP_KINDS:
                print(f"  {k:<18} {uf.us(k):7.1f} us/packet")
            udp_us = sum(uf.us(k) for k in UDP_KINDS)
            print(f"  UDP flow (2 packets) {udp_us:7.1f} us  ->  {1e6 / udp_us:8,.0f} flows/s")
        if tf.bad or uf.bad:
            print(f"  WARNING: {tf.bad + uf.bad} packets were not forwarded as one frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
