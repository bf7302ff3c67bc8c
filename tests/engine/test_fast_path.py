"""The established-flow fast path is an optimisation only: with it on or off, the engine's output is the same.

Each test runs identical traffic through two engines (fast path on and off) and compares every emitted
frame, every drop, the conntrack table, the stats and the rule counters.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from natbox.cli.bench import _workload
from natbox.conntrack.format import format_conntrack
from natbox.demos.scenarios import DEMOS
from natbox.engine.engine import Engine
from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.evaluate import Ruleset
from natbox.rules.listing import list_table
from natbox.rules.parser import parse_restore
from natbox.sim.lab import Lab
from natbox.wire import tcp


def _state(engine: Engine, now: float) -> tuple[list[str], dict[str, int], dict[str, int], list[str]]:
    conns = sorted(format_conntrack(c, now) for c in engine.table.live(now))
    counters = [list_table(t, numeric=True, verbose=True, exact=True) for t in engine.rules.tables.values()]
    return conns, dict(engine.stats), engine.table.stats.as_dict(), counters


def _run_workload(fast: bool) -> tuple[list[tuple[str, bytes]], object]:
    engine, work = _workload(20, 4000)
    engine.fast_path = fast
    out: list[tuple[str, bytes]] = []
    now = 1.0
    for i, (frame, iface) in enumerate(work):
        now += 0.0005
        res = engine.receive(frame, iface, now)
        out.extend((e.iface, e.frame) for e in res.emitted)
        out.extend((f"drop:{d.reason}", b"") for d in res.dropped)
        if i == 2000:  # a rule change mid-stream: FORWARD is no longer trivial
            from natbox.rules.parser import parse_argv

            engine.rules.execute(parse_argv(["-A", "FORWARD", "-p", "udp", "--dport", "53", "-j", "ACCEPT"]))
    return out, _state(engine, now)


def test_bench_workload_is_identical_with_and_without_the_fast_path() -> None:
    slow_out, slow_state = _run_workload(False)
    fast_out, fast_state = _run_workload(True)
    assert len(slow_out) == 4000
    assert fast_out == slow_out
    assert fast_state == slow_state


def _run_demo(name: str, fast: bool, extra: Callable[[Lab], None] | None = None) -> tuple[object, ...]:
    demo = DEMOS[name]
    host, rules = demo.build()
    ruleset = Ruleset(demo.family)
    ruleset.restore(parse_restore(rules, file=name, family=demo.family))
    v6 = demo.family == NFPROTO_IPV6  # docker6: an ip6tables ruleset
    engine = Engine(host, ruleset=None if v6 else ruleset, ruleset6=ruleset if v6 else None, seed=5)
    engine.fast_path = fast
    lab = Lab(host, engine, seed=5)
    demo.script(lab)
    if extra is not None:
        extra(lab)
    lab.run(until=10)
    frames = [(c.iface, c.direction, c.frame) for c in lab.captures]
    drops = [d for o in lab.outputs for d in o.dropped]
    return frames, drops, _state(engine, lab.now)


def _bulk(lab: Lab) -> None:
    """A longer TCP exchange, so the flow cache is exercised, then a link change that invalidates it."""
    server = next(iter(lab.hosts.values()))
    server.listen_tcp[9000] = b"x" * 1000
    for i in range(5):
        for h in lab.hosts.values():
            if h is not server:
                lab.at(5.0 + i * 0.1, partial(h.tcp_connect, server.addr, 9000, sport=50000 + i,
                                              request=b"y" * 500))
    lab.at(6.0, lab.engine.fib.rebuild)
    assert tcp.SYN


def test_demos_are_identical_with_and_without_the_fast_path() -> None:
    for name in DEMOS:
        assert _run_demo(name, False) == _run_demo(name, True), name
        if DEMOS[name].family != NFPROTO_IPV6:  # _bulk drives the IPv4 end hosts' TCP
            assert _run_demo(name, False, _bulk) == _run_demo(name, True, _bulk), name
