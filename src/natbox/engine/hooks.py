"""Netfilter's hooks: the functions registered at each hook in priority order, and `nf_hook_slow`.

Hooks run their registered functions in kernel priority order (§1.1), the way `nf_hook_slow()` walks
`nf_hook_entries`:

| hook        | functions (priority)                                                                  |
|-------------|---------------------------------------------------------------------------------------|
| PREROUTING  | defrag (-400), raw (-300), conntrack (-200), mangle (-150), nat DST (-100)             |
| INPUT       | mangle (-150), filter (0), security (50), nat SRC (100), confirm (INT_MAX)              |
| FORWARD     | mangle (-150), filter (0), security (50)                                               |
| OUTPUT      | defrag (-400), raw (-300), conntrack (-200), mangle (-150), nat DST (-100), filter (0), |
|             | security (50)                                                                          |
| POSTROUTING | mangle (-150), nat SRC (100), confirm (INT_MAX)                                         |

`XtHost` is the host as a rule sees it (`natbox.rules.api.XtContext`): the clock, the hook being run,
randomness, addresses, NAT and the REJECT/LOG side effects. `Hooks.tier2_plan` answers the fast paths'
question about the ruleset (which tables a forwarded packet would meet).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.core import nf_conntrack_confirm, nf_conntrack_in
from natbox.conntrack.seqadj import nf_ct_seq_adjust
from natbox.conntrack.synproxy import SynproxyOptions, SynproxyStats
from natbox.conntrack.table import ConntrackTable
from natbox.engine.defrag import IpDefrag
from natbox.engine.host import Host
from natbox.engine.path import NF_STOLEN, Drop
from natbox.engine.route6 import Fib6
from natbox.engine.routing import RTN_UNREACHABLE, Fib
from natbox.engine.synproxy import SynproxyNet, nf_is_loopback_packet
from natbox.ipset.core import IpsetRegistry
from natbox.nat.core import NatCore
from natbox.nat.masquerade import masquerade
from natbox.nat.range import NatRange
from natbox.netfilter import (
    IPPROTO_TCP,
    NFPROTO_IPV4,
    NFPROTO_IPV6,
    CtInfo,
    CtStatus,
    DropReason,
    Hook,
    ManipType,
    Priority,
)
from natbox.rand import RandomSource
from natbox.rules.api import NF_ACCEPT, NF_DROP
from natbox.rules.evaluate import Ruleset
from natbox.rules.model import TABLE_HOOKS
from natbox.rules.xtstate import XtState
from natbox.skb import Skb
from natbox.wire.layout import IPH_FRAG_OFF, IPH_VER_IHL

__all__ = ["HookFn", "Hooks", "XtHost", "has_target", "seqadj_confirm", "trace_ct"]

HookFn = Callable[[Skb], int]
# hook functions registered by _table_fn, by table name
_TABLE_OPS: Final = frozenset({"raw", "mangle", "filter", "security"})
_HOOK_FORWARD: Final = Hook.FORWARD
_HOOK_LOCAL_IN: Final = Hook.LOCAL_IN
_HOOK_LOCAL_OUT: Final = Hook.LOCAL_OUT
_HOOK_POST_ROUTING: Final = Hook.POST_ROUTING
_HOOK_PRE_ROUTING: Final = Hook.PRE_ROUTING
_CTINFO_UNTRACKED: Final = CtInfo.UNTRACKED
_CTINFO_RELATED_REPLY: Final = CtInfo.RELATED_REPLY
_SEQ_ADJUST: Final = CtStatus.SEQ_ADJUST
_CONFIRMED: Final = CtStatus.CONFIRMED


def trace_ct(skb: Skb) -> None:
    """The trace line of `nf_conntrack_in`'s result: the ctinfo and the ct's tuples."""
    ct = skb.ct
    if skb.trace is None:
        return
    if ct is None:
        state = "UNTRACKED" if skb.untracked else "INVALID"
        skb.add_trace(f"nf_conntrack_in: {state}" + (f" ({skb.note})" if skb.note else ""))
        return
    what = "existing" if ct.confirmed else "new (unconfirmed)"
    skb.add_trace(f"nf_conntrack_in: ctinfo {skb.ctinfo.name}, {what} ct #{ct.ct_id}: "
                  f"original {ct.original}, reply {ct.reply}")


def has_target(rules: Ruleset, name: str) -> bool:
    """Whether a rule of `rules` jumps to the target `name` (its checkentry ran: the module's hooks exist)."""
    return any(rule.target is not None and rule.target.name == name
               for table in rules.tables.values() for chain in table.chains.values() for rule in chain.rules)


def seqadj_confirm(skb: Skb, host: Host, table: ConntrackTable) -> bool:
    """`nf_confirm()`'s sequence adjustment for a ct with IPS_SEQ_ADJUST (both families): not on loopback, nor
    for a RELATED_REPLY error; False when the packet must be dropped (counted as conntrack's `drop`)."""
    ct = skb.ct
    if (ct is None or skb.ctinfo == _CTINFO_RELATED_REPLY or skb.protocol != IPPROTO_TCP
            or nf_is_loopback_packet(skb, host)):
        return True
    if nf_ct_seq_adjust(skb.data, skb.ihl, ct, skb.ctinfo.direction, skb.csum_partial):
        return True
    table.stats.drop += 1
    skb.note = "nf_ct_seq_adjust failed (a partial TCP option)"
    return False


class XtHost:
    """The engine seen from a rule (implements `natbox.rules.api.XtContext`); `now` and `hook` are set by
    the engine as it goes."""

    def __init__(self, host: Host, fib: Fib, nat: NatCore, table: ConntrackTable, rnd: RandomSource) -> None:
        self.hook = _HOOK_PRE_ROUTING
        self.now = 0.0
        self.family = NFPROTO_IPV4  # the family of the table being run (NFPROTO_IPV6 for ip6tables)
        self.fib6: Fib6 | None = None  # the IPv6 routes (bound by the engine)
        self._host, self._fib, self._nat, self._table, self._rnd = host, fib, nat, table, rnd
        self.sets: IpsetRegistry | None = None  # the namespace's ipsets (-m set, -j SET)
        self.xt = XtState()  # recent lists, hashlimit tables... (synced with the ruleset by Hooks)
        # REJECT's and LOG's side effects, bound by the engine to its ICMP stage and its log
        self.reject: Callable[[Skb, str, float], None] = lambda skb, how, now: None
        self.log_packet: Callable[[Skb, str, int, int], None] = lambda skb, prefix, level, flags: None
        # TEE's copy (LocalStack.nf_dup_ipv4) and TPROXY's socket lookup (the local stack's listeners)
        self.dup_packet: Callable[[Skb, int, str], None] = lambda skb, gw, oif: None
        self.dup_packet6: Callable[[Skb, int, str], None] = lambda skb, gw, oif: None  # nf_dup_ipv6
        self.listeners: Callable[[], set[tuple[int, int]]] = set
        # get_random_u32()'s source for `-m statistic` (difftest replaces it with a script of draws; NAT's
        # draws stay on `rnd`): an attribute, not a patched method, so a compiled XtHost takes it too
        self.draw_u32: Callable[[], int] = self._rnd_u32
        # SYNPROXY's per-namespace state and functions (engine/synproxy.py; its `send` bound by the engine)
        self.synproxy = SynproxyNet(host, rnd, lambda: self.now)

    def _rnd_u32(self) -> int:
        return self._rnd.getrandbits(32)

    def random_u32(self) -> int:
        """`get_random_u32()`: from `draw_u32` (the engine's random source unless replaced)."""
        return self.draw_u32()

    def addr_type(self, addr: int, dev: str | None) -> int:
        if self.family == NFPROTO_IPV6 and self.fib6 is not None:
            return self.fib6.addr_type(addr, dev)
        return self._fib.addr_type(addr, dev)

    def iface_primary_addr(self, dev: str) -> int | None:
        iface = self._host.interfaces.get(dev)
        if iface is None:
            return None
        if self.family == NFPROTO_IPV6 and self.fib6 is not None:
            return self.fib6.first_addr(iface)  # nf_nat_redirect_ipv6 (IPv6 §3.5)
        prim = iface.primary_addresses
        return prim[0].addr if prim else None

    def nat_setup_info(self, skb: Skb, rng: NatRange, manip: ManipType) -> int:
        ct = skb.ct
        if ct is None:
            return NF_ACCEPT
        return self._nat.setup_info(ct, rng, manip, now=self.now, table=self._table, rnd=self._rnd, trace=skb.trace)

    def masquerade(self, skb: Skb, rng: NatRange) -> int:
        ct = skb.ct
        if ct is None:
            return NF_ACCEPT
        if skb.family == NFPROTO_IPV6 and self.fib6 is not None:
            # nf_nat_masquerade_ipv6: ipv6_dev_get_saddr(out, the packet's daddr) (IPv6 §3.5)
            newsrc = self.fib6.ipv6_dev_get_saddr(skb.oif, skb.daddr)
        else:
            newsrc = self._fib.select_addr(skb.oif, skb.nexthop)
        return masquerade(skb, ct, rng, skb.oif, newsrc, nat=self._nat, now=self.now, table=self._table,
                          rnd=self._rnd)

    def send_reject(self, skb: Skb, reject_with: str) -> None:
        self.reject(skb, reject_with, self.now)

    def log(self, skb: Skb, prefix: str, level: int, flags: int = 0) -> None:
        self.log_packet(skb, prefix, level, flags)

    def notrack(self, skb: Skb) -> None:
        skb.untracked = True
        skb.ct = None
        skb.ctinfo = _CTINFO_UNTRACKED

    def ipsets(self) -> IpsetRegistry | None:
        return self.sets

    def dup(self, skb: Skb, gw: int, oif: str) -> None:
        if skb.family == NFPROTO_IPV6:
            self.dup_packet6(skb, gw, oif)
        else:
            self.dup_packet(skb, gw, oif)

    def socket_listening(self, proto: int, laddr: int, lport: int) -> bool:
        """The host model's listeners are bound to every address and taken as transparent (IP_TRANSPARENT)
        sockets (docs/differences.md)."""
        return (proto, lport) in self.listeners()

    def xt_state(self) -> XtState:
        return self.xt

    def synproxy_stats(self) -> SynproxyStats:
        return self.synproxy.stats

    def synproxy_send_client_synack(self, skb: Skb, opts: SynproxyOptions) -> None:
        self.synproxy.send_client_synack(skb, opts)

    def synproxy_recv_client_ack(self, skb: Skb, opts: SynproxyOptions, recv_seq: int) -> bool:
        return self.synproxy.recv_client_ack(skb, opts, recv_seq)

    def fib_lookup(self, daddr: int) -> tuple[int, str | None] | None:
        if self.family == NFPROTO_IPV6 and self.fib6 is not None:  # ip6_route_lookup (ip6t_rpfilter)
            res6 = self.fib6.lookup(daddr)
            if res6 is not None and res6.reject:  # RTF_REJECT: ip6t_rpfilter's lookup fails as for unreachable
                return (RTN_UNREACHABLE, res6.dev)
            return None if res6 is None else (res6.type, res6.dev)
        res = self._fib.lookup(daddr)
        return None if res is None else (res.type, res.dev)


class Hooks:
    """The hook functions of one network namespace and `nf_hook_slow` over them."""

    def __init__(self, rules: Ruleset, ctx: XtHost, *, table: ConntrackTable, cfg: ConntrackConfig, nat: NatCore,
                 rnd: RandomSource, defrag: IpDefrag) -> None:
        self.rules = rules
        self.rules6 = Ruleset(NFPROTO_IPV6)  # ip6tables (the engine sets it)
        self._ctx = ctx
        # what the IPv6 hooks (engine/hooks6.py) share with these
        self.ctx, self.table, self.cfg, self.nat, self.rnd = ctx, table, cfg, nat, rnd
        self._table, self._cfg, self._nat, self._rnd, self._defrag = table, cfg, nat, rnd, defrag
        self._hooks = self._build_hooks()
        # _run_hook's functions per hook for one Ruleset object and version (see _refresh_ops)
        self._active_ops: dict[Hook, list[tuple[int, str, HookFn]]] = {}
        self._active_fns: dict[Hook, tuple[HookFn, ...]] = {}  # the functions alone, what `run` loops over
        self._ct_registered = False  # rules.needs_conntrack() for the same Ruleset object and version
        self._ops_rules: Ruleset | None = None
        self._ops_version = -1
        self._xt_rules6: tuple[Ruleset | None, int] = (None, -1)  # the ip6tables ruleset (and version) last synced
        # the fast paths' view of the ruleset (see tier2_plan), valid for one Ruleset object and version
        self._plan_rules: Ruleset | None = None
        self._plan_version = -1
        self._plan = (False, False, False, False)
        # runs the nat table's chain instead of `rules.run` when set (engine/template.py: a SYN's rule path)
        self.nat_chain_watch: Callable[[Ruleset, Hook, Skb, XtHost], int] | None = None
        self.pre_after_ct = [n for _p, n, _f in self._hooks[_HOOK_PRE_ROUTING]].index("conntrack") + 1
        self.nat_chain = {h: self._nat_chain_fn(h) for h in (_HOOK_PRE_ROUTING, _HOOK_POST_ROUTING)}

    # --- registration ----------------------------------------------------------------------------

    def _build_hooks(self) -> dict[Hook, list[tuple[int, str, HookFn]]]:
        """Register the hook functions as the kernel modules would (see the module docstring)."""
        ops: dict[Hook, list[tuple[int, str, HookFn]]] = {h: [] for h in Hook}
        for hook in (_HOOK_PRE_ROUTING, _HOOK_LOCAL_OUT):
            ops[hook].append((Priority.CONNTRACK_DEFRAG, "defrag", self._hook_defrag))
            ops[hook].append((Priority.RAW, "raw", self._table_fn("raw", hook)))
            ops[hook].append((Priority.CONNTRACK, "conntrack", self._hook_conntrack(hook)))
            ops[hook].append((Priority.NAT_DST, "nat", self._hook_nat(hook)))
        for hook in Hook:
            ops[hook].append((Priority.MANGLE, "mangle", self._table_fn("mangle", hook)))
        for hook in (_HOOK_LOCAL_IN, _HOOK_FORWARD, _HOOK_LOCAL_OUT):
            ops[hook].append((Priority.FILTER, "filter", self._table_fn("filter", hook)))
            ops[hook].append((Priority.SECURITY, "security", self._table_fn("security", hook)))
        for hook in (_HOOK_LOCAL_IN, _HOOK_POST_ROUTING):
            ops[hook].append((Priority.NAT_SRC, "nat", self._hook_nat(hook)))
            # nf_synproxy_ipv4_init: registered while a SYNPROXY rule exists (see _refresh_ops)
            ops[hook].append((Priority.CONNTRACK_CONFIRM - 1, "synproxy", self._ctx.synproxy.ipv4_synproxy_hook))
            ops[hook].append((Priority.CONNTRACK_CONFIRM, "confirm", self._hook_confirm))
        for hook in Hook:
            ops[hook].sort(key=lambda op: op[0])
        return ops

    def _refresh_ops(self) -> None:
        """The hook functions `run` calls for the current ruleset: every one but those of the raw, mangle
        and filter tables that are trivial at their hook (absent, see `Ruleset.is_trivial`), whose function
        would only return NF_ACCEPT. Each keeps its index in the full list (`start`). Worked out again
        whenever the Ruleset object or its version changes."""
        rules = self.rules
        synproxy = has_target(rules, "SYNPROXY")
        self._active_ops = {
            hook: [(i, name, fn) for i, (_prio, name, fn) in enumerate(ops)
                   if not (name in _TABLE_OPS and rules.is_trivial(name, hook)) and (synproxy or name != "synproxy")]
            for hook, ops in self._hooks.items()}
        self._active_fns = {hook: tuple(fn for _i, _name, fn in ops) for hook, ops in self._active_ops.items()}
        self._ct_registered = rules.needs_conntrack()
        self._ops_rules, self._ops_version = rules, rules.version
        # the stateful extensions' checkentry/destroy: objects named by the new ruleset kept, others dropped
        # (ip6tables rules share the namespace's objects: an estimator or list they name is kept too)
        six = self.rules6
        self._xt_rules6 = (six, six.version)
        self._ctx.xt.sync([*(rules.tables[t] for t in rules.present), *(six.tables[t] for t in six.present)],
                          self._ctx.now)
        if self._ctx.xt.acct_forced:
            self._cfg.acct = True  # connbytes_mt_check: "Forcing CT accounting to be enabled"

    def _table_fn(self, table: str, hook: Hook) -> HookFn:
        ctx = self._ctx

        def run(skb: Skb) -> int:
            # only called by run(), which leaves out the table where it is trivial (_refresh_ops)
            ctx.hook = hook
            return self.rules.run(table, hook, skb, ctx)

        return run

    def _hook_conntrack(self, hook: Hook) -> HookFn:
        def run(skb: Skb) -> int:
            # only called by run(), which refreshed _ct_registered (rules.needs_conntrack()) for this ruleset
            if not self._ct_registered:
                if skb.trace is not None and skb.ct is None:
                    skb.add_trace("nf_conntrack_in: not registered in this netns (no rule needs connection "
                                  "tracking): the packet is not tracked and cannot be NATed")
                return NF_ACCEPT
            verdict = nf_conntrack_in(skb, hook, self._ctx.now, self._table, self._cfg)
            if skb.trace is not None:
                trace_ct(skb)
            return verdict

        return run

    def _nat_chain_fn(self, hook: Hook) -> HookFn:
        ctx = self._ctx

        nat_hook = hook in TABLE_HOOKS["nat"]

        def run_chain(skb: Skb) -> int:
            rules = self.rules
            if not nat_hook or "nat" not in rules.present:  # rules.is_trivial("nat", hook), without the call
                return NF_ACCEPT
            ctx.hook = hook
            watch = self.nat_chain_watch
            if watch is not None:  # engine/template.py records a new TCP connection's rule path
                return watch(rules, hook, skb, ctx)
            return rules.run("nat", hook, skb, ctx)

        return run_chain

    def _hook_nat(self, hook: Hook) -> HookFn:
        ctx = self._ctx
        run_chain = self._nat_chain_fn(hook)

        def run(skb: Skb) -> int:
            # the NAT hooks exist while a nat table does (iptable_nat registers them), and act on tracked
            # packets only
            if skb.ct is None or "nat" not in self.rules.present:
                return NF_ACCEPT
            return self._nat.nf_nat_inet_fn(skb, hook, now=ctx.now, table=self._table, rnd=self._rnd,
                                            run_chain=run_chain)

        return run

    def _hook_confirm(self, skb: Skb) -> int:
        """`nf_confirm()`: a ct with IPS_SEQ_ADJUST has its TCP sequence numbers adjusted (natbox.conntrack.
        seqadj; not on loopback, nor a RELATED_REPLY error), then a new ct is confirmed."""
        ct = skb.ct
        if ct is None:
            return NF_ACCEPT
        if ct.status & _SEQ_ADJUST and not seqadj_confirm(skb, self._ctx.synproxy.host, self._table):
            return NF_DROP
        if ct.status & _CONFIRMED:
            return NF_ACCEPT
        verdict = nf_conntrack_confirm(skb, self._ctx.now, self._table)
        if skb.trace is not None and verdict == NF_ACCEPT and skb.ct is not None:
            skb.add_trace(f"nf_confirm: ct #{skb.ct.ct_id} confirmed (inserted in the table)")
        return verdict

    def _hook_defrag(self, skb: Skb) -> int:
        """`ipv4_conntrack_defrag`: fragments are held until the datagram is complete (§9)."""
        data = skb.data
        # `not skb.is_fragment` (MF and offset clear), without the two property calls
        if (not (data[IPH_FRAG_OFF] & 0x3F or data[IPH_FRAG_OFF + 1]) or skb.untracked
                or not self.rules.needs_conntrack()):
            return NF_ACCEPT  # nf_defrag_ipv4 is enabled by conntrack's registration (nf_ct_netns_get)
        result = self._defrag.add(skb.data, self._ctx.now)
        if result.datagram is None:
            if result.reason is not None:
                raise Drop(result.reason, "defrag", result.detail)
            skb.add_trace("ipv4_conntrack_defrag: fragment held for reassembly")
            return NF_STOLEN
        skb.data = result.datagram
        skb.ihl = (skb.data[IPH_VER_IHL] & 0x0F) * 4
        skb.frag_max_size = result.frag_max_size
        skb.frag_pmtu = result.frag_pmtu
        skb.frag_list = list(result.frag_list) if result.frag_list else None
        if skb.trace is not None:
            skb.add_trace(f"ipv4_conntrack_defrag: reassembled {len(skb.data)} bytes "
                          f"(largest fragment {result.frag_max_size})")
        return NF_ACCEPT

    def xt_state(self) -> XtState:
        """The stateful extensions' objects, synced with the current rulesets of both families first (`natbox
        status`: an ip6tables rule's hashlimit table exists from its checkentry on, as in /proc)."""
        self.sync_rules()
        return self._ctx.xt

    def sync_rules(self) -> None:
        """`_refresh_ops` if either family's ruleset changed since it last ran: the stateful extensions'
        checkentry/destroy pass that the kernel runs at each rule change, here before the next packet of
        either family (the IPv6 hooks call this; the IPv4 `run` tests its own ruleset alone, as an ip6tables
        change adds or drops only objects the IPv4 rules do not name) or `natbox status`."""
        rules, six = self.rules, self.rules6
        if (rules is not self._ops_rules or rules.version != self._ops_version
                or self._xt_rules6[0] is not six or self._xt_rules6[1] != six.version):
            self._refresh_ops()

    # --- running ---------------------------------------------------------------------------------

    def run(self, hook: Hook, skb: Skb, start: int = 0) -> int:
        """`nf_hook_slow()`: run the hook's functions in priority order until one does not ACCEPT
        (from the `start`-th function on, when the fast path hands a packet back mid-hook)."""
        skb.hook = self._ctx.hook = hook
        rules = self.rules
        if rules is not self._ops_rules or rules.version != self._ops_version:
            self._refresh_ops()
        fns = self._active_fns[hook]
        if start:
            fns = tuple(fn for i, _name, fn in self._active_ops[hook] if i >= start)
        for fn in fns:
            verdict = fn(skb)
            if verdict != NF_ACCEPT:
                if verdict == NF_STOLEN:
                    return NF_STOLEN
                # the function's name from the registration list (`_active_ops` is rebuilt when the ruleset changes)
                raise self.verdict_drop(hook, next(name for _p, name, f in self._hooks[hook] if f is fn), skb)
        return NF_ACCEPT

    def verdict_drop(self, hook: Hook, name: str, skb: Skb) -> Drop:
        """The `Drop` for a hook function's NF_DROP, with the reason that function stands for."""
        detail = skb.note or f"{name} {hook.chain_name}"
        reason = DropReason.RULE_DROP
        if name == "conntrack":
            reason = DropReason.CT_TABLE_FULL
        elif name == "confirm":
            reason = DropReason.NAT_INSERT_FAILED
        elif name == "nat" and self._nat.drop_reason is not None:
            reason = self._nat.drop_reason
        return Drop(reason, f"{hook.chain_name}/{name}", detail)

    def tier2_plan(self) -> tuple[bool, bool, bool, bool]:
        """What the fast paths ask of the ruleset, worked out once per ruleset version (every change to the
        tables, `present` or the conntrack registration bumps `Ruleset.version`): whether the flow cache may
        be used at all (raw PREROUTING absent, conntrack registered, a nat table), and whether mangle
        PREROUTING, mangle+filter+security FORWARD and mangle POSTROUTING are absent. A flow may be compiled
        (`FlowCache`) only when all four hold: nothing but conntrack and nat sees its packets."""
        rules = self.rules
        if rules is self._plan_rules and rules.version == self._plan_version:
            return self._plan
        pre, fwd, post = _HOOK_PRE_ROUTING, _HOOK_FORWARD, _HOOK_POST_ROUTING
        self._plan = (rules.is_trivial("raw", pre) and rules.needs_conntrack() and "nat" in rules.present,
                      rules.is_trivial("mangle", pre),
                      rules.is_trivial("mangle", fwd) and rules.is_trivial("filter", fwd)
                      and rules.is_trivial("security", fwd),
                      rules.is_trivial("mangle", post))
        self._plan_rules, self._plan_version = rules, rules.version
        return self._plan

    def compilable(self) -> bool:
        """Whether nothing but conntrack and nat would see a forwarded packet (all of `tier2_plan`)."""
        return all(self.tier2_plan())
