"""The gateway's configuration and state on disk: the host file and ruleset it runs (read at start and
again on SIGHUP) and the conntrack table it saves on a clean stop (--state) and restores at the next
start, so established connections survive a restart."""

from __future__ import annotations

import dataclasses
import json
import os
import time

from natbox.adapters.snapshot import load_host
from natbox.conntrack.persist import dump_conns, load_conns
from natbox.engine.engine import Engine
from natbox.engine.hostfile import HostFile, host_ipsets, host_nfacct
from natbox.engine.hostfile6 import rules6_ruleset
from natbox.errors import NatboxError
from natbox.gateway.config import GatewayConfig
from natbox.gateway.log import WARNING, say
from natbox.ipset.bitmap import ListSet
from natbox.ipset.core import IpsetRegistry
from natbox.ipset.scope import using_sets
from natbox.netfilter import CtStatus
from natbox.rules.evaluate import Ruleset
from natbox.rules.model import RulesError
from natbox.rules.parser import parse_restore
from natbox.rules.xtstate.nfacct import NfAcct, using_nfacct

__all__ = ["load", "reload", "restore_state", "save_state"]


def load(cfg: GatewayConfig, nfacct: dict[str, NfAcct] | None = None,
         sets: IpsetRegistry | None = None) -> tuple[HostFile, Ruleset]:
    """The host file and its ruleset (--rules, or the file's [rules]); ValueError with one line on any problem.
    A snapshot's ipsets and nfacct objects (`hf.sets`, `hf.nfacct`) are made first: the rules may name them.
    `nfacct` and `sets` are a running gateway's objects (SIGHUP): those made through the control socket
    (`natbox nfacct add`, `natbox ipset create`) exist as much as the file's, as nfnetlink_acct's objects and
    ip_set's sets outlive an iptables-restore, so the rules are checked against them all
    (`nfacct_mt_checkentry`, `set_match_v4_checkentry`'s `ip_set_nfnl_get_byindex`); `hf.nfacct` is then
    those objects, in their order and with their counters, followed by the file's objects of new names, and
    `hf.sets` those sets (the same objects at the same indexes, their members, timeouts and counters kept),
    followed by the file's sets of new names with their members (a running name's set in the file is not
    read again: the gateway's is kept, as `ipset restore` of an existing name would refuse)."""
    hf = load_host(cfg.host_file)  # a TOML host file (its [rules] read) or a snapshot directory
    host = hf.host
    rules_text, origin = host.rules_text, host.rules_origin
    if cfg.rules is not None:
        try:
            with open(cfg.rules, encoding="utf-8") as f:
                rules_text, origin = f.read(), cfg.rules
        except OSError as exc:
            raise ValueError(f"{cfg.rules}: {exc.strerror}") from None
    ruleset = Ruleset()
    try:
        # restored before the rules, which may name them; the rules' references are counted per command
        hf.sets = host_ipsets(hf, time.monotonic(), rule_refs=False)  # timeouts run on the loop's clock
        if sets is not None:
            hf.sets = _with_new_sets(sets, hf.sets)
        hf.nfacct = host_nfacct(hf)
        if nfacct is not None:
            hf.nfacct = {**nfacct, **{n: a for n, a in hf.nfacct.items() if n not in nfacct}}
    except NatboxError as exc:
        raise ValueError(str(exc)) from None
    if rules_text.strip():
        try:
            with using_sets(hf.sets), using_nfacct(hf.nfacct):
                ruleset.restore(parse_restore(rules_text, file=origin, with_counters=cfg.adopt))
        except RulesError as exc:
            raise ValueError(f"{origin}: {exc}") from None
    try:  # the host file's [rules6] or the snapshot's ip6tables.rules
        with using_sets(hf.sets), using_nfacct(hf.nfacct):  # ip6tables rules may name inet6 sets
            hf.ruleset6 = rules6_ruleset(host.rules6_text, hf.rules6_origin, with_counters=cfg.adopt)
    except RulesError as exc:
        raise ValueError(f"{hf.rules6_origin}: {exc}") from None
    return hf, ruleset


def reload(cfg: GatewayConfig, engine: Engine) -> bool:
    """SIGHUP: read the host file (and rules) again and apply what can change while running: the ruleset
    (new connections only, as in Linux), conntrack sysctls, ip_forward and per-interface knobs, routes
    and addresses, and the file's ipsets and nfacct objects of new names (the running ones, those made
    through the control socket too, are kept with their members and counters: `load`). Interfaces cannot
    come or go (their sockets are open): that is refused with a warning.
    Returns whether it reloaded.
    """
    try:
        hf, ruleset = load(cfg, engine.xt_state.nfacct, engine.ipsets)
    except (ValueError, OSError) as exc:
        say(f"SIGHUP: not reloaded: {exc}", WARNING)
        return False
    host = hf.host
    old = engine.host
    if set(host.interfaces) != set(old.interfaces):
        say("SIGHUP: not reloaded: the host file's interfaces changed (restart natbox for that)", WARNING)
        return False
    for name, iface in host.interfaces.items():
        cur = old.interfaces[name]
        cur.addresses, cur.route_localnet, cur.forwarding = iface.addresses, iface.route_localnet, iface.forwarding
    old.routes, old.neighbours, old.ip_forward = host.routes, host.neighbours, host.ip_forward
    for name, iface in host.interfaces.items():
        old.interfaces[name].addresses6 = iface.addresses6
    old.routes6, old.ipv6_forward = host.routes6, host.ipv6_forward
    for f in dataclasses.fields(host.conntrack):
        if f.init:
            setattr(engine.cfg, f.name, getattr(host.conntrack, f.name))  # setattr: keeps its caches right
    engine.table.max_entries = engine.cfg.max_entries
    engine.fib.rebuild()
    engine.fib6.rebuild()
    engine.rules.tables, engine.rules.present = ruleset.tables, ruleset.present
    engine.rules.invalidate()
    if hf.ruleset6 is not None:
        engine.rules6.tables, engine.rules6.present = hf.ruleset6.tables, hf.ruleset6.present
        engine.rules6.invalidate()
    engine.listeners = set(hf.listen)
    engine.xt_state.nfacct = hf.nfacct  # the running objects, and the file's new ones the rules may name
    if hf.sets is not None:  # likewise the running sets and the file's new ones
        _link_members(hf.sets)
    engine.ipsets = hf.sets
    say(f"SIGHUP: reloaded {cfg.host_file}")
    return True


def _with_new_sets(running: IpsetRegistry, new: IpsetRegistry | None) -> IpsetRegistry:
    """The running gateway's sets and, after them, the sets of `new` whose names it does not run (`running`
    itself is left as it is: a refused reload keeps it)."""
    reg = running.copy()
    for s in new.ordered() if new is not None else ():
        if running.get(s.name) is None:
            reg.create(s, False)
    return reg


def _link_members(reg: IpsetRegistry) -> None:
    """A list:set of the file naming a set the gateway runs has the running set as its member, which holds
    one more reference on it (`list_set_uadd`'s `ip_set_get_byindex`), instead of the file's copy."""
    for s in reg.ordered():
        if isinstance(s, ListSet):
            for i, (m, e) in enumerate(s.members):
                cur = reg.get(m.name)
                if cur is not None and cur is not m:
                    s.members[i] = (cur, e)
                    cur.ref += 1


def restore_state(path: str, engine: Engine) -> None:
    """Load the conntrack table a previous run saved (--state): established connections survive."""
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        elapsed = max(0.0, time.time() - float(doc.get("saved_at", time.time())))
        conns = load_conns(doc, engine.table, time.monotonic(), elapsed=elapsed)
    except (OSError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        say(f"warning: --state {path}: not restored ({exc}); starting with an empty conntrack table")
        return
    for ct in conns:
        ct.status &= ~CtStatus.OFFLOAD  # no datapath carries it now: the engine offloads it again if it may
        engine.nat.restore(ct, engine.table)
    say(f"restored {len(conns)} conntrack entries from {path} ({elapsed:.1f} s old)")


def save_state(path: str, engine: Engine) -> None:
    """Write the live conntrack table for the next start (atomically: a crash leaves the old file)."""
    now = time.monotonic()
    doc = dump_conns(engine.table.live(now), now)
    doc["saved_at"] = time.time()
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
    except OSError as exc:
        say(f"warning: --state {path}: not saved ({exc.strerror or exc})")
        return
    say(f"saved {len(doc['entries'])} conntrack entries to {path}")
