"""Replaying a kernel run through natbox: the same router, the same input frames, at the same times.

`run_on_natbox(scenario, kernel_run)` builds the host from the router's snapshot (taken after setup,
before traffic), loads its ruleset, and feeds the frames the kernel router *received* (direction in, with
their timestamps relative to t0) into `Engine.receive`.

Where the kernel picked a port or ICMP id at random (§10), the kernel's later input frames carry the
kernel's choice (the server replies to it). So the replay learns the kernel<->natbox bijection online:
each frame natbox emits is paired with the kernel's frame of the same index on that interface, and a
port/id that differs and that no input carried before is recorded (`PortMap`); later input frames are
rewritten through the bijection (checksums updated incrementally) before natbox sees them. SYNPROXY's
cookies are handled the same way: per-flow ISN and timestamp offsets learned from the paired SYN-ACKs, the
client's later segments rewritten into natbox's numbering (natbox.difftest.seqmap).
An `exec` step (a router command the kernel ran at time t, see `KernelRun.execs`) is applied to the
Engine before the first input frame at or after the command's end; an input frame received while the
command ran is reported as an error (the order would be ambiguous).
`-m statistic --mode random` draws follow the kernel's choices by scripted outcomes and repeated replays
(natbox.difftest.draws, §10). It collects what natbox emits per interface, the
`conntrack -L` lines at the moment the kernel's listing was taken, `iptables-save -c` of natbox's rules and
`nfacct list` of the objects the snapshot recorded (which its `-m nfacct` rules counted into).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from natbox.conntrack.format import format_conntrack
from natbox.difftest.draws import MAX_REPLAYS, DrawScript, first_divergence, next_outcomes
from natbox.difftest.kernel import Captured, KernelRun
from natbox.difftest.packets import decode_frame, is_compared_frame, rewrite_ports
from natbox.difftest.portmap import PortMap, first_seen
from natbox.difftest.scenario import Scenario
from natbox.difftest.seqmap import FlowKey, SynproxyOffsets
from natbox.engine.engine import Engine
from natbox.engine.hostfile import host_ipsets, host_nfacct
from natbox.engine.hostfile6 import rules6_ruleset
from natbox.engine.snapshot import host_from_snapshot
from natbox.ipset.scope import using_sets
from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.evaluate import Ruleset
from natbox.rules.model import RulesError
from natbox.rules.parser import parse_argv, parse_restore
from natbox.rules.printer import save_tables
from natbox.rules.xtstate.nfacct import format_list, using_nfacct

__all__ = ["NatboxRun", "apply_exec", "build_engine", "frame_skew", "natbox_run_from_live", "run_on_natbox"]

SAVE_DATE = "Thu Jan  1 00:00:00 1970"  # the date natbox's iptables-save header lines carry here


@dataclass
class NatboxRun:
    """What natbox did with the kernel run's inputs (times are seconds since the kernel run's t0)."""

    sent: dict[str, list[tuple[float, bytes]]] = field(default_factory=dict)  # iface -> (time, frame)
    conntrack: list[str] = field(default_factory=list)
    iptables_save: str = ""
    ip6tables_save: str = ""
    nfacct: str = ""  # `nfacct list` after the replay
    dropped: list[str] = field(default_factory=list)  # "t iface reason where detail"
    errors: list[str] = field(default_factory=list)  # natbox could not run (e.g. an exception)
    port_pairs: dict[int, int] = field(default_factory=dict)  # kernel's random port/id -> natbox's
    draw_script: dict[int, list[bool]] = field(default_factory=dict)  # input frame -> statistic outcomes (draws)
    # SYNPROXY flows: (client, cport, server, sport) -> kernel - natbox (ISN, TSval) (natbox.difftest.seqmap)
    synproxy_offsets: dict[FlowKey, tuple[int, int]] = field(default_factory=dict)
    # the moments between which natbox computed the listing's timeouts: a replay lists at the kernel's start
    # of `conntrack -L` (None: that moment); a live natbox run somewhere in its own listing's span
    listed: tuple[float, float] | None = None
    skew: float = 0.0  # how much later or earlier than the kernel natbox may have handled a packet (live: measured)


def build_engine(kernel_run: KernelRun, *, seed: int = 0) -> Engine:
    """The Engine for the kernel router: host from its snapshot, its ipsets from the snapshot's `ipset save`,
    its nfacct objects from the snapshot's `nfacct list`, rules from the snapshot's iptables-save."""
    hf = host_from_snapshot(kernel_run.snapshot, f"<{kernel_run.scenario} router snapshot>")
    host = hf.host
    ruleset = Ruleset()
    sets = host_ipsets(hf)  # the snapshot's `ipset save`, restored before the rules as on the kernel side
    acct = host_nfacct(hf)  # and its nfacct objects, which -m nfacct rules must find
    with using_sets(sets), using_nfacct(acct):
        if host.rules_text.strip():
            ruleset.restore(parse_restore(host.rules_text, file=host.rules_origin, with_counters=True))
        # ip6tables rules may name the snapshot's inet6 sets
        ruleset6 = rules6_ruleset(host.rules6_text, f"<{kernel_run.scenario} router snapshot>/ip6tables.rules",
                                  with_counters=True)
    engine = Engine(host, ruleset=ruleset, ruleset6=ruleset6, seed=seed)
    engine.ipsets = sets
    engine.xt_state.nfacct = acct
    return engine


def run_on_natbox(scenario: Scenario, kernel_run: KernelRun, *, seed: int = 0) -> NatboxRun:
    """Replay the kernel router's input frames through natbox (see the module docstring). Where the ruleset
    draws random numbers (`-m statistic --mode random`), the replay is repeated with scripted outcomes until
    natbox took the branches the kernel took, or no outcome is left (natbox.difftest.draws)."""
    script: dict[int, list[bool]] = {}
    kernel_ip = {i: [(c.ts, c.frame) for c in ks] for i, ks in _kernel_sent(kernel_run).items()}
    times = [c.ts for c in kernel_run.received()]
    out, made, draws = _replay(kernel_run, seed, script)
    for _ in range(MAX_REPLAYS - 1):
        if not any(draws.used.values()) or out.errors:
            break
        at = first_divergence(kernel_ip, made, times)
        if at is None:
            break
        frame = max((i for i, n in draws.used.items() if 0 <= i <= at and n), default=None)
        if frame is None:
            break
        outcomes = next_outcomes(script.get(frame), draws.used[frame])
        if outcomes is None:
            break
        script = {i: s for i, s in script.items() if i < frame}
        script[frame] = outcomes
        out, made, draws = _replay(kernel_run, seed, script)
    out.draw_script = {i: s for i, s in script.items() if draws.used.get(i)}
    return out


def _kernel_sent(kernel_run: KernelRun) -> dict[str, list[Captured]]:
    ksent: dict[str, list[Captured]] = {}
    for f in kernel_run.frames:
        if f.outgoing and is_compared_frame(f.frame):
            ksent.setdefault(f.iface, []).append(f)
    return ksent


def _replay(kernel_run: KernelRun, seed: int, script: dict[int, list[bool]]
            ) -> tuple[NatboxRun, dict[str, list[tuple[int, bytes]]], DrawScript]:
    """One replay: the NatboxRun, the IPv4 frames natbox sent per interface with the index of the input frame
    that made each, and the draws each input frame made."""
    out = NatboxRun()
    draws = DrawScript(script, seed)
    made: dict[str, list[tuple[int, bytes]]] = {}
    try:
        engine = build_engine(kernel_run, seed=seed)
    except Exception as exc:
        out.errors.append(f"natbox could not load the router snapshot: {type(exc).__name__}: {exc}")
        return out, made, draws
    # the statistic match's random source (XtContext.random_u32) becomes the script; NAT's draws are untouched
    engine._ctx.draw_u32 = draws.random_u32
    for f in kernel_run.frames:
        out.sent.setdefault(f.iface, [])
    seen, _ids = first_seen(kernel_run)
    ports = PortMap(seen)
    cookies = SynproxyOffsets()
    ksent = _kernel_sent(kernel_run)
    execs = list(kernel_run.execs)
    for index, c in enumerate(kernel_run.received()):
        draws.frame = index
        while execs and execs[0][1] <= c.ts:
            _, end, argv = execs.pop(0)
            why = apply_exec(engine, argv, end)
            if why:
                out.errors.append(f"{end:.6f} exec {' '.join(argv)}: {why}")
        if execs and execs[0][0] <= c.ts and is_compared_frame(c.frame):  # (IPv6 ND/MLD chatter is no traffic)
            out.errors.append(f"{c.ts:.6f} {c.iface}: frame received while `{' '.join(execs[0][2])}` ran")
        frame = cookies.rewrite_input(rewrite_ports(c.frame, ports.k2n))
        try:
            res = engine.receive(frame, c.iface, c.ts)
        except Exception as exc:
            out.errors.append(f"{c.ts:.6f} {c.iface}: engine raised {type(exc).__name__}: {exc}")
            continue
        for e in res.emitted:
            out.sent.setdefault(e.iface, []).append((c.ts, e.frame))
            if is_compared_frame(e.frame):
                sent = made.setdefault(e.iface, [])
                n = len(sent)
                sent.append((index, e.frame))
                kern = ksent.get(e.iface, [])
                if n < len(kern):
                    _learn(ports, kern[n], e.frame)
                    cookies.learn(kern[n].frame, e.frame)
        for d in res.dropped:
            out.dropped.append(f"{c.ts:.6f} {c.iface} {d.reason} {d.where} {d.detail}".rstrip())
    draws.frame = -1
    for _, end, argv in execs:
        why = apply_exec(engine, argv, end)
        if why:
            out.errors.append(f"{end:.6f} exec {' '.join(argv)}: {why}")
    out.port_pairs = dict(ports.k2n)
    out.synproxy_offsets = dict(cookies.flows)
    now = kernel_run.conntrack_time
    out.conntrack = [format_conntrack(conn, now) for conn in engine.table.live(now)]
    out.iptables_save = save_tables(engine.rules.saved_tables(), SAVE_DATE, counters=True)
    out.ip6tables_save = save_tables(engine.rules6.saved_tables(), SAVE_DATE, counters=True, prog="ip6tables-save")
    out.nfacct = format_list(engine.xt_state.nfacct)
    return out, made, draws


def apply_exec(engine: Engine, argv: list[str], now: float) -> str | None:
    """Apply a router command (an `exec` step, see `scenario.EXEC_FORMS`) to natbox; None or why it failed."""
    try:
        if argv[0] == "iptables":
            engine.rules.execute(parse_argv(argv[1:]))
        elif argv[0] == "ip6tables":
            engine.rules6.execute(parse_argv(argv[1:], family=NFPROTO_IPV6))
        elif argv[:2] == ["ip", "addr"] and ":" in argv[3]:
            iface6 = ipaddress.IPv6Interface(argv[3])
            if argv[2] == "del":
                engine.del_address6(argv[5], int(iface6.ip), now)
            else:
                engine.add_address6(argv[5], int(iface6.ip), iface6.network.prefixlen)
        elif argv[:2] == ["ip", "addr"]:
            iface = ipaddress.IPv4Interface(argv[3])
            if argv[2] == "del":
                engine.del_address(argv[5], int(iface.ip), now)
            else:
                engine.add_address(argv[5], int(iface.ip), iface.network.prefixlen)
        elif argv[:3] == ["ip", "link", "set"]:
            if argv[4] == "down":
                engine.link_down(argv[3], now)
            else:
                engine.link_up(argv[3])
        elif argv[:2] == ["conntrack", "-F"]:
            engine.table.flush(now)
        else:
            return "not a command natbox can mirror"
    except (RulesError, KeyError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _learn(ports: PortMap, kernel: Captured, natbox_frame: bytes) -> None:
    """Record the port/id pairs where natbox's frame differs from the kernel's frame at the same position."""
    fk, fn = decode_frame(kernel.frame), decode_frame(natbox_frame)
    if [n for n, _, _ in fk] != [n for n, _, _ in fn]:
        return
    for (_, vk, kind), (_, vn, _) in zip(fk, fn, strict=True):
        if kind == "port" and isinstance(vk, int) and isinstance(vn, int):
            if vk == vn:
                ports.identity(vk, kernel.ts)
            else:
                ports.accept(vk, vn, kernel.ts)


def frame_skew(a: KernelRun, b: KernelRun) -> float:
    """The largest difference in time (since each run's t0) between frames of two runs of one scenario that
    correspond (the n-th compared frame in or out of the same interface): how far apart the two routers
    handled the same packet."""
    def by_place(run: KernelRun) -> dict[tuple[str, bool], list[float]]:
        out: dict[tuple[str, bool], list[float]] = {}
        for c in run.frames:
            if is_compared_frame(c.frame):
                out.setdefault((c.iface, c.outgoing), []).append(c.ts)
        return out

    ta, tb = by_place(a), by_place(b)
    return max((abs(x - y) for k in ta.keys() & tb.keys() for x, y in zip(ta[k], tb[k], strict=False)),
               default=0.0)


def natbox_run_from_live(live: KernelRun, kernel: KernelRun) -> NatboxRun:
    """A run of live natbox (run_on_kernel(..., natbox_router=True)) in the shape `compare` takes; `kernel`
    is the kernel's run of the same scenario (for the skew between the two runs' timings)."""
    run = NatboxRun(conntrack=list(live.conntrack), iptables_save=live.iptables_save,
                    ip6tables_save=live.ip6tables_save, nfacct=live.nfacct,
                    errors=list(live.errors),
                    listed=(live.conntrack_time, max(live.conntrack_end, live.conntrack_time)),
                    skew=frame_skew(kernel, live))
    for c in live.frames:
        if c.outgoing:
            run.sent.setdefault(c.iface, []).append((c.ts, c.frame))
    return run
