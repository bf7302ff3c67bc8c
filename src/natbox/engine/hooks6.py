"""Netfilter's IPv6 hooks (ipv6-semantics.md §1.1): the functions registered for NFPROTO_IPV6 in priority
order, and `nf_hook_slow` over them.

| hook        | functions (priority)                                                                          |
|-------------|-----------------------------------------------------------------------------------------------|
| PREROUTING  | defrag (-400), raw (-300), conntrack (-200), mangle (-150), nat DST (-100)                     |
| INPUT       | mangle (-150), filter (0), nat SRC (100), synproxy (LAST - 1), confirm (LAST - 1)              |
| FORWARD     | mangle (-150), filter (0)                                                                      |
| OUTPUT      | defrag (-400), raw (-300), conntrack (-200), mangle (-150), nat DST (-100), filter (0)          |
| POSTROUTING | mangle (-150), nat SRC (100), synproxy (LAST - 1), confirm (LAST)                              |

The tables are the engine's ip6tables `Ruleset` (`Hooks.rules6`), run with the same `XtHost` (its `family`
set to NFPROTO_IPV6 while they run); conntrack is `ipv6_conntrack_in`, NAT `nf_nat_inet_fn` (its
nf_nat_ipv6_fn branch); confirm is the one `nf_conntrack_confirm` of both families. Conntrack and defrag
are registered only while a rule needs them (`rules6.needs_conntrack()`, §1.1), NAT while an ip6tables nat table exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from natbox.conntrack.core import nf_conntrack_confirm
from natbox.conntrack.core6 import ipv6_conntrack_in
from natbox.engine.hooks import Hooks, has_target, seqadj_confirm, trace_ct
from natbox.engine.path import NF_STOLEN
from natbox.netfilter import NF_ACCEPT, NF_DROP, NFPROTO_IPV6, CtStatus, Hook, Priority
from natbox.rules.evaluate import Ruleset
from natbox.skb import Skb

__all__ = ["Hooks6"]

HookFn = Callable[[Skb], int]
_LAST: Final = 2**31 - 1
_TABLES: Final = frozenset({"raw", "mangle", "filter"})


class Hooks6:
    """The IPv6 hook functions of one network namespace (see the module docstring)."""

    def __init__(self, hooks: Hooks) -> None:
        self._hooks = hooks
        # the defragmenter, bound by the engine (IPv6 conntrack defrag, §1.5): NF_ACCEPT, NF_STOLEN or a Drop
        self.defrag: HookFn = lambda skb: NF_ACCEPT
        ops: dict[Hook, list[tuple[int, str, HookFn]]] = {h: [] for h in Hook}
        for hook in (Hook.PRE_ROUTING, Hook.LOCAL_OUT):
            ops[hook].append((Priority.CONNTRACK_DEFRAG, "defrag", self._defrag))
            ops[hook].append((Priority.RAW, "raw", self._table("raw", hook)))
            ops[hook].append((Priority.CONNTRACK, "conntrack", self._conntrack(hook)))
            ops[hook].append((Priority.NAT_DST, "nat", self._nat(hook)))
        for hook in Hook:
            ops[hook].append((Priority.MANGLE, "mangle", self._table("mangle", hook)))
        for hook in (Hook.LOCAL_IN, Hook.FORWARD, Hook.LOCAL_OUT):
            ops[hook].append((Priority.FILTER, "filter", self._table("filter", hook)))
        for hook in (Hook.LOCAL_IN, Hook.POST_ROUTING):
            ops[hook].append((Priority.NAT_SRC, "nat", self._nat(hook)))
            # nf_synproxy_ipv6_init (NF_IP_PRI_CONNTRACK_CONFIRM - 1): registered after conntrack, so at INPUT,
            # where confirm has the same priority, it goes before it (nf_hook_entries_grow)
            ops[hook].append((_LAST - 1, "synproxy", self._synproxy))
            ops[hook].append((_LAST - (hook == Hook.LOCAL_IN), "confirm", self._confirm))
        for hook in Hook:
            ops[hook].sort(key=lambda op: op[0])
        self._ops = ops
        self._synproxy_rules: tuple[Ruleset | None, int, bool] = (None, -1, False)  # (rules6, version, has SYNPROXY)

    def _table(self, table: str, hook: Hook) -> HookFn:
        hooks = self._hooks

        def run(skb: Skb) -> int:
            rules = hooks.rules6
            if rules.is_trivial(table, hook):
                return NF_ACCEPT
            return rules.run(table, hook, skb, hooks.ctx)

        return run

    def _conntrack(self, hook: Hook) -> HookFn:
        hooks = self._hooks

        def run(skb: Skb) -> int:
            if not hooks.rules6.needs_conntrack():
                return NF_ACCEPT
            verdict = ipv6_conntrack_in(skb, hook, hooks.ctx.now, hooks.table, hooks.cfg)
            if skb.trace is not None:
                trace_ct(skb)
            return verdict

        return run

    def _nat(self, hook: Hook) -> HookFn:
        hooks = self._hooks

        def run_chain(skb: Skb) -> int:
            rules = hooks.rules6
            if rules.is_trivial("nat", hook):
                return NF_ACCEPT
            return rules.run("nat", hook, skb, hooks.ctx)

        def run(skb: Skb) -> int:
            if skb.ct is None or "nat" not in hooks.rules6.present:
                return NF_ACCEPT
            return hooks.nat.nf_nat_inet_fn(skb, hook, now=hooks.ctx.now, table=hooks.table, rnd=hooks.rnd,
                                            run_chain=run_chain)

        return run

    def _synproxy(self, skb: Skb) -> int:
        """`ipv6_synproxy_hook`, while an ip6tables SYNPROXY rule exists (engine/synproxy.py)."""
        rules = self._hooks.rules6
        known, version, on = self._synproxy_rules
        if rules is not known or rules.version != version:
            on = has_target(rules, "SYNPROXY")
            self._synproxy_rules = (rules, rules.version, on)
        return self._hooks.ctx.synproxy.ipv6_synproxy_hook(skb) if on else NF_ACCEPT

    def _confirm(self, skb: Skb) -> int:
        ct = skb.ct
        if ct is None:
            return NF_ACCEPT
        if ct.status & CtStatus.SEQ_ADJUST and not seqadj_confirm(skb, self._hooks.ctx.synproxy.host,
                                                                   self._hooks.table):
            return NF_DROP
        if ct.confirmed:
            return NF_ACCEPT
        verdict = nf_conntrack_confirm(skb, self._hooks.ctx.now, self._hooks.table)
        if skb.trace is not None and verdict == NF_ACCEPT and skb.ct is not None:
            skb.add_trace(f"nf_confirm: ct #{skb.ct.ct_id} confirmed (inserted in the table)")
        return verdict

    def _defrag(self, skb: Skb) -> int:
        if skb.untracked or not self._hooks.rules6.needs_conntrack():
            return NF_ACCEPT
        return self.defrag(skb)

    def needs_conntrack(self) -> bool:
        return self._hooks.rules6.needs_conntrack()

    def run(self, hook: Hook, skb: Skb) -> int:
        """`nf_hook_slow()` for NFPROTO_IPV6: NF_ACCEPT, NF_STOLEN, or raises the Drop of a DROP verdict."""
        skb.hook = hook
        self._hooks.sync_rules()  # an ip6tables change's checkentry/destroy pass, as an iptables one's
        ctx = self._hooks.ctx
        ctx.hook = hook
        # restored, not reset to IPv4: a packet sent from inside an IPv6 hook (TEE's copy, SYNPROXY's answers)
        # runs these hooks nested, and the rest of the outer hook's rules are still ip6tables rules
        family, ctx.family = ctx.family, NFPROTO_IPV6
        try:
            for _prio, name, fn in self._ops[hook]:
                if name in _TABLES and self._hooks.rules6.is_trivial(name, hook):
                    continue
                verdict = fn(skb)
                if verdict == NF_ACCEPT:
                    continue
                if verdict == NF_STOLEN:
                    return NF_STOLEN
                raise self._hooks.verdict_drop(hook, name, skb)
        finally:
            ctx.family = family
        return NF_ACCEPT

