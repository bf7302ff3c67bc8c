"""The commands a running gateway answers on its control socket: iptables, iptables-save, ipset,
iptables-restore and conntrack on the live engine, `status`, and the plain-text `stats`/`conntrack`.

They run in the loop's thread between two batches of packets, so the engine is never touched
concurrently. A command that raises (a bug) is answered with an error and reported once on stderr; the
gateway goes on forwarding.
"""

from __future__ import annotations

import io
import json
import time
import traceback
from collections.abc import Callable
from typing import TextIO

from natbox.cli.iptables import iptables_main, iptables_restore_main, iptables_save_main
from natbox.conntrack.format import format_conntrack
from natbox.engine.engine import Engine
from natbox.engine.neigh import format_ip_neigh
from natbox.gateway.ctcommand import conntrack_command
from natbox.gateway.log import say
from natbox.gateway.loop import EventLoop

__all__ = ["Commands"]


class Commands:
    """What the control socket can ask of `engine` (and of `loop`, for its counters)."""

    def __init__(self, engine: Engine, loop: EventLoop) -> None:
        self.engine = engine
        self.loop = loop
        self.errors = 0
        self.reports: list[Callable[[], str]] = []  # more lines for `status` (the control server's counters)

    def answer_json(self, req: dict[str, object]) -> str:
        """A JSON request (natbox.adapters.control): its answer, as JSON text."""
        cmd, argv, stdin = req.get("cmd"), req.get("argv", []), req.get("stdin", "")
        if not isinstance(cmd, str) or not isinstance(argv, list) or not isinstance(stdin, str):
            return json.dumps({"exit": 2, "stdout": "", "stderr": "natbox gateway: malformed control request\n"})
        out, err = io.StringIO(), io.StringIO()
        try:
            code = self.run_command(cmd, [str(a) for a in argv], io.StringIO(stdin), out, err)
        except Exception as exc:  # a bug must not stop the gateway: answered, reported once
            self.errors += 1
            if self.errors == 1:
                say("error: a control command raised: " + "".join(traceback.format_exception(exc)).strip())
            return json.dumps({"exit": 1, "stdout": out.getvalue(),
                               "stderr": err.getvalue() + f"natbox gateway: internal error in {cmd}: {exc!r}\n"})
        return json.dumps({"exit": code, "stdout": out.getvalue(), "stderr": err.getvalue()})

    def run_command(self, cmd: str, argv: list[str], stdin: TextIO, out: TextIO, err: TextIO) -> int:
        rules = self.engine.rules
        if cmd == "ipset":
            from natbox.cli.ipset import ipset_live
            from natbox.ipset.core import IpsetRegistry
            from natbox.rules.printer import save_tables

            if self.engine.ipsets is None:
                self.engine.ipsets = IpsetRegistry()
            text = save_tables(rules.saved_tables(), "", counters=False)
            return ipset_live(self.engine.ipsets, text, argv, stdin.read(), time.monotonic(), out, err)
        if self.engine.ipsets is None:
            return self._run_rules_command(cmd, argv, stdin, out, err)
        from natbox.ipset.scope import using_sets

        with using_sets(self.engine.ipsets):  # the rules may name the gateway's sets
            return self._run_rules_command(cmd, argv, stdin, out, err)

    def _run_rules_command(self, cmd: str, argv: list[str], stdin: TextIO, out: TextIO, err: TextIO) -> int:
        rules = self.engine.rules
        if cmd == "iptables":
            return iptables_main(argv, ruleset=rules, stdout=out, stderr=err)
        if cmd == "iptables-save":
            return iptables_save_main(argv, ruleset=rules, stdout=out, stderr=err)
        if cmd == "iptables-restore":
            return iptables_restore_main(argv, ruleset=rules, stdin=stdin, stdout=out, stderr=err)
        if cmd == "conntrack":
            return conntrack_command(self.engine, argv, time.monotonic(), out, err)
        if cmd == "status":
            out.write(self.status())
            return 0
        err.write(f"natbox gateway: unknown command {cmd!r}\n")
        return 2

    def status(self) -> str:
        """`natbox status`: the interfaces natbox owns, the loop's counters, drops and conntrack figures."""
        engine = self.engine
        lines = [f"host {engine.host.name}"]
        for iface in engine.host.interfaces.values():
            if iface.kind == "loopback":
                continue
            addrs = ", ".join(str(a) for a in iface.addresses) or "no address"
            mac = ":".join(f"{b:02x}" for b in iface.mac)
            lines.append(f"  {iface.name:<10} {'up' if iface.up else 'DOWN':<5} {mac}  {addrs}")
        neigh = format_ip_neigh(engine.neighs.show())
        lines.append(f"neighbours: {len(neigh)}" + "".join(f"\n  {line}" for line in neigh))
        lines.append(f"loop: {self.loop.report()}")
        drops = ", ".join(f"{k} {v}" for k, v in sorted(engine.stats.items())) or "none"
        lines.append(f"engine counters: {drops}")
        stats = engine.table.stats
        lines.append(f"conntrack: {len(engine.table.live(time.monotonic()))} entries (max {engine.table.max_entries}), "
                     f"insert_failed {stats.insert_failed}, drop {stats.drop}, early_drop {stats.early_drop}, "
                     f"invalid {stats.invalid}")
        lines += [report() for report in self.reports]
        return "\n".join(lines) + "\n"

    def answer_plain(self, cmd: str) -> str:
        """The plain-text commands: `stats` (loop and engine counters) and `conntrack` (conntrack -L)."""
        if cmd == "stats":
            engine_stats = " ".join(f"{k}={v}" for k, v in sorted(self.engine.stats.items()))
            return f"loop: {self.loop.report()}\nengine: {engine_stats}\n"
        if cmd == "conntrack":
            now = time.monotonic()
            return "".join(format_conntrack(c, now) + "\n" for c in self.engine.table.live(now))
        shown = cmd if len(cmd) <= 40 else cmd[:40] + "..."
        return f"unknown command {shown!r} (stats, conntrack; or a JSON request, see natbox.adapters.control)\n"
