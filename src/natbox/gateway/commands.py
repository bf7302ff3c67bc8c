"""The commands a running gateway answers on its control socket: iptables, iptables-save, ipset,
iptables-restore (and the ip6tables tools on the IPv6 ruleset) and conntrack on the live engine, `status`,
and the plain-text `stats`/`conntrack`.

They run in the loop's thread between two batches of packets, so the engine is never touched
concurrently. A command that raises (a bug) is answered with an error and reported once on stderr; the
gateway goes on forwarding.
"""

from __future__ import annotations

import io
import ipaddress
import json
import time
import traceback
from collections.abc import Callable
from typing import TextIO, TypedDict

from natbox.cli.iptables import iptables_main, iptables_restore_main, iptables_save_main
from natbox.conntrack.format import format_conntrack
from natbox.engine.engine import Engine
from natbox.engine.neigh import format_ip_neigh
from natbox.gateway.ctcommand import conntrack_command
from natbox.gateway.log import say
from natbox.gateway.loop import EventLoop
from natbox.rules.xtstate import jiffies
from natbox.wire.ipv6 import format_addr6

__all__ = ["Commands", "StatusData", "ip_addr_command"]


class InterfaceStatus(TypedDict):
    name: str
    up: bool
    mac: str
    addresses: list[str]


class ConntrackStatus(TypedDict):
    entries: int
    max: int
    insert_failed: int
    drop: int
    early_drop: int
    invalid: int


class StatusData(TypedDict):
    """`natbox status --json`: one object with these keys."""

    host: str
    interfaces: list[InterfaceStatus]
    neighbours: list[str]  # `ip neigh` lines
    loop: dict[str, dict[str, int]]  # "loop": the event loop's counters; each interface: its port's counters
    engine_counters: dict[str, int]  # drop reasons and other engine counters
    conntrack: ConntrackStatus
    reports: list[str]  # more lines (the control server's counters)
    xt_recent: dict[str, list[str]]  # each -m recent list: /proc/net/xt_recent/NAME's lines
    ipt_hashlimit: dict[str, list[str]]  # each iptables -m hashlimit table: /proc/net/ipt_hashlimit/NAME's lines
    ip6t_hashlimit: dict[str, list[str]]  # each ip6tables one: /proc/net/ip6t_hashlimit/NAME's lines
    rateest: dict[str, list[int]]  # each -j RATEEST estimator: [bytes/s, packets/s] (gen_estimator_read)
    synproxy: dict[str, int]  # /proc/net/stat/synproxy's counters (syn_received, cookie_invalid...)


def ip_addr_command(engine: Engine, argv: list[str], err: TextIO) -> int:
    """`ip addr add|del PREFIX dev DEV` on the addresses natbox holds (the kernel's `ip` cannot reach them):
    Engine.add_address/del_address and their IPv6 twins, with MASQUERADE's flush on a removed address
    (§5.2, IPv6 §3.5). `natbox difftest --live` mirrors a scenario's `ip addr` steps this way."""
    if len(argv) != 5 or argv[0] != "addr" or argv[1] not in ("add", "del") or argv[3] != "dev":
        err.write("natbox gateway: ip: only `ip addr add|del PREFIX dev DEV` is served\n")
        return 2
    verb, prefix, dev = argv[1], argv[2], argv[4]
    if dev not in engine.host.interfaces:
        err.write(f'Cannot find device "{dev}"\n')
        return 1
    try:
        net = ipaddress.ip_interface(prefix)
    except ValueError:
        err.write(f'Error: any valid prefix is expected rather than "{prefix}".\n')
        return 1
    now = time.monotonic()
    try:
        if net.version == 6:
            if verb == "add":
                engine.add_address6(dev, int(net.ip), net.network.prefixlen)
            else:
                engine.del_address6(dev, int(net.ip), now)
        elif verb == "add":
            engine.add_address(dev, int(net.ip), net.network.prefixlen)
        else:
            engine.del_address(dev, int(net.ip), now)
    except (KeyError, ValueError) as exc:
        err.write(f"Error: {exc}\n")
        return 2
    return 0


class Commands:
    """What the control socket can ask of `engine` (and of `loop`, for its counters)."""

    def __init__(self, engine: Engine, loop: EventLoop) -> None:
        self.engine = engine
        self.loop = loop
        self.errors = 0
        self.reports: list[Callable[[], str]] = []  # more lines for `status` (the control server's counters)
        # called before conntrack answers (--offload folds the datapath's counters into the cts first)
        self.before_conntrack: list[Callable[[], None]] = []

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
        from natbox.rules.xtstate.nfacct import NfacctSession, rule_acct_refs, using_nfacct

        if cmd == "nfacct":  # the engine's accounting objects; its rules' -m nfacct hold references on them
            from natbox.rules.printer import save_tables

            refs = rule_acct_refs(save_tables(rules.saved_tables(), "", counters=False))
            code, o, e = NfacctSession(self.engine.xt_state.nfacct, refs).run(argv, stdin.read())
            out.write(o)
            err.write(e)
            return code
        with using_nfacct(self.engine.xt_state.nfacct):  # -m nfacct rules name the gateway's objects
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
        if cmd.startswith("ip6tables"):  # the same tools on the engine's ip6tables ruleset
            from natbox.cli.ip6tables import ip6tables_main, ip6tables_restore_main, ip6tables_save_main

            tool = {"ip6tables": ip6tables_main, "ip6tables-save": ip6tables_save_main,
                    "ip6tables-restore": ip6tables_restore_main}.get(cmd)
            if tool is not None:
                return tool(argv, ruleset=self.engine.rules6, stdin=stdin, stdout=out, stderr=err)
        if cmd == "conntrack":
            for fn in self.before_conntrack:
                fn()
            return conntrack_command(self.engine, argv, time.monotonic(), out, err)
        if cmd == "ip":
            return ip_addr_command(self.engine, argv, err)
        if cmd == "status":
            if argv not in ([], ["--json"]):
                err.write("usage: natbox status --control PATH [--json]\n")
                return 2
            out.write(json.dumps(self.status_data(), indent=2) + "\n" if argv else self.status())
            return 0
        err.write(f"natbox gateway: unknown command {cmd!r}\n")
        return 2

    def status_data(self) -> StatusData:
        """What `natbox status` shows, as data (`natbox status --json` prints it as JSON)."""
        engine = self.engine
        stats = engine.table.stats
        return {
            "host": engine.host.name,
            "interfaces": [{"name": i.name, "up": i.up, "mac": ":".join(f"{b:02x}" for b in i.mac),
                            "addresses": [str(a) for a in i.addresses]
                            + [f"{format_addr6(a.addr)}/{a.prefixlen}" for a in i.addresses6]}
                           for i in engine.host.interfaces.values() if i.kind != "loopback"],
            "neighbours": format_ip_neigh(engine.neighs.show()) + format_ip_neigh(engine.neighs6.show()),
            "loop": self.loop.counters(),
            "engine_counters": {str(k): v for k, v in sorted(engine.stats.items())},
            "conntrack": {"entries": len(engine.table.live(time.monotonic())), "max": engine.table.max_entries,
                          "insert_failed": stats.insert_failed, "drop": stats.drop,
                          "early_drop": stats.early_drop, "invalid": stats.invalid},
            "reports": [report() for report in self.reports],
            "xt_recent": {name: t.proc_lines() for name, t in engine.xt_state.recent.items()},
            # hashlimit_proc_net_init: one /proc directory per family, a table named as its rules name it
            "ipt_hashlimit": {t.name: t.proc_lines(jiffies(time.monotonic()))
                              for t in engine.xt_state.hashlimit.values() if not t.v6},
            "ip6t_hashlimit": {t.name: t.proc_lines(jiffies(time.monotonic()))
                               for t in engine.xt_state.hashlimit.values() if t.v6},
            "rateest": {name: list(e.read(jiffies(time.monotonic()))) for name, e in engine.xt_state.rateest.items()},
            "synproxy": engine.synproxy.stats.as_dict(),
        }

    def status(self) -> str:
        """`natbox status`: the interfaces natbox owns, the loop's counters, drops and conntrack figures."""
        data = self.status_data()
        lines = [f"host {data['host']}"]
        for i in data["interfaces"]:
            addrs = ", ".join(i["addresses"]) or "no address"
            lines.append(f"  {i['name']:<10} {'up' if i['up'] else 'DOWN':<5} {i['mac']}  {addrs}")
        neigh = data["neighbours"]
        lines.append(f"neighbours: {len(neigh)}" + "".join(f"\n  {line}" for line in neigh))
        lines.append(f"loop: {self.loop.report()}")
        drops = ", ".join(f"{k} {v}" for k, v in data["engine_counters"].items()) or "none"
        lines.append(f"engine counters: {drops}")
        ct = data["conntrack"]
        lines.append(f"conntrack: {ct['entries']} entries (max {ct['max']}), insert_failed {ct['insert_failed']}, "
                     f"drop {ct['drop']}, early_drop {ct['early_drop']}, invalid {ct['invalid']}")
        for name, entries in data["xt_recent"].items():
            lines.append(f"xt_recent/{name}: {len(entries)} entries" + "".join(f"\n  {e}" for e in entries))
        for proc in ("ipt_hashlimit", "ip6t_hashlimit"):
            for name, entries in data[proc].items():
                lines.append(f"{proc}/{name}: {len(entries)} entries" + "".join(f"\n  {e}" for e in entries))
        for name, (bps, pps) in data["rateest"].items():
            lines.append(f"rate estimator {name}: {bps} bytes/s, {pps} packets/s")
        if any(data["synproxy"].values()):
            lines.append("synproxy: " + ", ".join(f"{k} {v}" for k, v in data["synproxy"].items()))
        lines += data["reports"]
        return "\n".join(lines) + "\n"

    def answer_plain(self, cmd: str) -> str:
        """The plain-text commands: `stats` (loop and engine counters) and `conntrack` (conntrack -L)."""
        if cmd == "stats":
            engine_stats = " ".join(f"{k}={v}" for k, v in sorted(self.engine.stats.items()))
            return f"loop: {self.loop.report()}\nengine: {engine_stats}\n"
        if cmd == "conntrack":
            for fn in self.before_conntrack:
                fn()
            now = time.monotonic()
            return "".join(format_conntrack(c, now) + "\n" for c in self.engine.table.live(now))
        shown = cmd if len(cmd) <= 40 else cmd[:40] + "..."
        return f"unknown command {shown!r} (stats, conntrack; or a JSON request, see natbox.adapters.control)\n"
