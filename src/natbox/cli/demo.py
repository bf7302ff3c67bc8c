"""`natbox demo NAME`: run a built-in experiment and show what Linux would show.

Prints, per interface, the frames as `tcpdump -nne -i IFACE` would; then `conntrack -L` and
`iptables -t nat -nvL` at the end. `--explain` adds each packet's path through the host.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from natbox.cli.common import add_color_option, parse, parser, use_color
from natbox.conntrack.format import format_conntrack, summary_line
from natbox.conntrack.tuple import format_addr
from natbox.demos.scenarios import DEMOS
from natbox.engine.engine import Engine
from natbox.netfilter import NFPROTO_IPV6
from natbox.render.tcpdump import TcpdumpPrinter
from natbox.rules.evaluate import Ruleset
from natbox.rules.listing import list_table
from natbox.rules.parser import parse_restore
from natbox.sim.lab import Lab
from natbox.wire.ipv6 import format_addr6

__all__ = ["build_parser", "demo_main", "run_demo"]

DURATION = 10.0  # seconds of simulated time each demo runs


def _style(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def run_demo(name: str, *, explain: bool = False, seed: int = 1, out: TextIO | None = None,
             color: bool = False) -> Lab:
    """Run demo `name` and print its report to `out` (default stdout). Returns the lab for inspection."""
    if out is None:
        out = sys.stdout
    demo = DEMOS[name]
    host, rules = demo.build()
    v6 = demo.family == NFPROTO_IPV6
    ruleset = Ruleset(demo.family)
    ruleset.restore(parse_restore(rules, file=f"demo:{name}", family=demo.family))
    engine = Engine(host, ruleset=None if v6 else ruleset, ruleset6=ruleset if v6 else None, seed=seed)
    engine.trace_all = explain
    lab = Lab(host, engine, seed=seed)
    demo.script(lab)
    lab.run(until=DURATION)

    def heading(text: str) -> None:
        out.write("\n" + _style(text, "1;36", color) + "\n")

    out.write(_style(f"natbox demo {name}: {demo.title}", "1", color) + "\n")
    out.write(demo.description + "\n")
    heading("# the host")
    for iface in host.interfaces.values():
        if iface.kind == "loopback":
            continue
        addrs = ", ".join([str(a) for a in iface.addresses]
                          + [f"{format_addr6(a.addr)}/{a.prefixlen}" for a in iface.addresses6]) or "no address"
        mac = ":".join(f"{b:02x}" for b in iface.mac)
        out.write(f"  {iface.name:<8} {mac}  {addrs}\n")
    for r in host.routes:
        via = f" via {format_addr(r.gateway)}" if r.gateway is not None else ""
        dst = "default" if r.prefixlen == 0 else f"{format_addr(r.dst)}/{r.prefixlen}"
        out.write(f"  route {dst}{via} dev {r.dev}\n")
    for r6 in host.routes6:
        via = f" via {format_addr6(r6.gateway)}" if r6.gateway is not None else ""
        dst = "default" if r6.prefixlen == 0 else f"{format_addr6(r6.dst)}/{r6.prefixlen}"
        out.write(f"  route {dst}{via} dev {r6.dev}\n")
    if v6:
        out.write(f"  net.ipv6.conf.all.forwarding = {int(host.ipv6_forward)}\n")
    else:
        out.write(f"  net.ipv4.ip_forward = {int(host.ip_forward)}\n")
    tool = "ip6tables" if v6 else "iptables"
    heading(f"# {tool}-save (the ruleset)")
    out.write("".join(f"  {line}\n" for line in rules.splitlines()))

    for ifname in demo.interfaces:
        heading(f"# tcpdump -nne -i {ifname}")
        printer = TcpdumpPrinter()
        for cap in lab.on(ifname):
            out.write(printer.line(cap.frame, ts=cap.time) + "\n")

    if explain:
        heading("# explain: every packet's path through the host")
        _explain(lab, out, color)

    drops = [d for o in lab.outputs for d in o.dropped]
    if drops:
        heading("# drops")
        for d in drops:
            out.write(f"  packet #{d.pkt_id}: {d.reason} at {d.where}" + (f" ({d.detail})" if d.detail else "") + "\n")

    heading("# conntrack -L")
    conns = engine.table.live(lab.now)
    for conn in sorted(conns, key=lambda c: c.ct_id):
        out.write(format_conntrack(conn, lab.now) + "\n")
    out.write(summary_line(len(conns)) + "\n")

    for table in demo.tables:
        heading(f"# {tool} -t {table} -nvL")
        out.write(list_table(ruleset.tables[table], numeric=True, verbose=True) + "\n")
    if demo.questions:
        heading("# what this shows")
        for q in demo.questions:
            out.write(f"  - {q}\n")
    return lab


def _explain(lab: Lab, out: TextIO, color: bool) -> None:
    printer = TcpdumpPrinter(eflag=False)
    inputs = [c for c in lab.captures if c.direction == "in"]
    for cap, output in zip(inputs, lab.outputs, strict=False):
        steps = [s for _pid, s in output.trace]
        out.write(_style(f"{cap.time:9.6f} in {cap.iface}: ", "1", color) + printer.line(cap.frame) + "\n")
        for step in steps:
            out.write(f"    {step}\n")


def build_parser() -> argparse.ArgumentParser:
    demos = "\n".join(f"  {name:<11} {DEMOS[name].title}" for name in sorted(DEMOS))
    p = parser("natbox demo", """\
Run a built-in NAT experiment in simulated time (no root, no network) and show what Linux would show:
the frames on each interface as `tcpdump -nne -i IFACE` prints them, then the conntrack table as
`conntrack -L` and the nat table as `iptables -t nat -nvL` at the end.""", f"""\
experiments:
{demos}

examples:
  natbox demo docker
  natbox demo qemu --explain | less -R
  NO_COLOR=1 natbox demo hairpin --explain > hairpin.txt""")
    p.add_argument("name", choices=sorted(DEMOS), metavar="NAME", help="which experiment (see below)")
    p.add_argument("--explain", action="store_true",
                   help="also show every packet's path through the host: hooks, chains, the rules met, conntrack "
                        "and NAT decisions, routing, with the kernel functions named")
    p.add_argument("--seed", type=int, default=1, help="seed of the random choices (ports on clashes); default 1")
    add_color_option(p)
    return p


def demo_main(argv: Sequence[str]) -> int:
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    run_demo(args.name, explain=args.explain, seed=args.seed, color=use_color(args.color, sys.stdout))
    return 0
