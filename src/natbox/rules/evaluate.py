"""The four tables, their validation, commands on them, and evaluation (ip_tables.c `ipt_do_table`).

`Ruleset` holds raw, mangle, nat and filter. `Ruleset.execute(cmd)` applies a parsed iptables command
(transactionally: a refused command leaves the tables unchanged) and returns what iptables would print.
`Ruleset.run(table, hook, skb, ctx)` evaluates a built-in chain for one packet and returns NF_ACCEPT or
NF_DROP; `is_trivial(table, hook)` tells the engine it may skip a table.

Jumps are bounded like nf_tables (iptables 1.8.9 is iptables-nft): `NFT_JUMP_STACK_SIZE` = 16 levels; a
ruleset needing deeper jumps, or with a loop a base chain reaches, is refused when it is loaded
(`nft_chain_validate`, -EMLINK), so evaluation never needs more than `MAX_JUMP_DEPTH` stack entries.
"""

from __future__ import annotations

import itertools
from typing import Final

from natbox.netfilter import Hook
from natbox.rules.api import NF_ACCEPT, NF_DROP, NF_STOLEN, XT_CONTINUE, XT_RETURN, XtContext
from natbox.rules.commands import OP_NAMES, apply_command, cheap_clone, restore_block
from natbox.rules.estimators import check_rules as check_estimators
from natbox.rules.estimators import estimators_of, restore_estimators, uses_estimators
from natbox.rules.eval6 import standard_matchers6, standard_why6
from natbox.rules.model import (
    BUILTIN_TARGETS,
    NFPROTO_IPV4,
    OTHER_PROBLEM,
    RESOURCE_PROBLEM,
    TABLE_HOOKS,
    TABLE_NAMES,
    MatchFn,
    Rule,
    RulesError,
    Table,
    TargetFn,
    collector_paused,
)
from natbox.rules.parser import Command, RestoreTable
from natbox.rules.printer import format_rule_spec
from natbox.rules.validate import MAX_JUMP_DEPTH, check_rule, hook_masks, validate_table
from natbox.skb import Skb
from natbox.wire.layout import IPH_PROTOCOL

__all__ = ["MAX_JUMP_DEPTH", "Ruleset"]


# A compiled rule: (matchers, why-functions, action kind, action value, rule, description)
#  kind: 0 verdict (value = NF_*), 1 jump (value = chain name), 2 goto, 3 return, 4 target fn, 5 no target
_K_VERDICT, _K_JUMP, _K_GOTO, _K_RETURN, _K_TARGET, _K_NONE = range(6)
_VERDICTS: Final = {"ACCEPT": NF_ACCEPT, "DROP": NF_DROP}


class _CRule:
    __slots__ = ("desc", "fns", "kind", "matches", "num", "rule", "target", "tdesc", "value")

    def __init__(self, rule: Rule, num: int) -> None:
        self.rule = rule
        self.num = num
        self.fns: tuple[MatchFn, ...] = tuple(_standard_matchers(rule)) + tuple(m.compile() for m in rule.matches)
        self.matches = rule.matches
        self.target: TargetFn | None = None
        self.value: str | int = ""
        if rule.target is not None:
            self.kind = _K_TARGET
            self.target = rule.target.compile()
        elif rule.jump in _VERDICTS:
            self.kind, self.value = _K_VERDICT, _VERDICTS[rule.jump]
        elif rule.jump == "RETURN":
            self.kind = _K_RETURN
        elif rule.jump == "QUEUE":
            self.kind, self.value = _K_VERDICT, NF_DROP  # no queue handler: the kernel drops
        elif rule.jump:
            self.kind, self.value = (_K_GOTO if rule.goto else _K_JUMP), rule.jump
        else:
            self.kind = _K_NONE
        self.desc = format_rule_spec(rule, with_target=False).strip()
        self.tdesc = rule.jump + (rule.target.save() if rule.target is not None else "")


def _standard_matchers(rule: Rule) -> list[MatchFn]:
    """`ip_packet_match()`: compiled closures for -s -d -i -o -p -f (only those the rule uses)."""
    if rule.family != NFPROTO_IPV4:  # ip6tables: rules.eval6, then -i/-o below
        return standard_matchers6(rule) + [_iface_matcher(n, i, d) for n, i, d in
                                           ((rule.iniface, rule.inv_in, True), (rule.outiface, rule.inv_out, False))
                                           if n]
    fns: list[MatchFn] = []
    if rule.smsk or rule.inv_src:
        a, m, inv = rule.src, rule.smsk, rule.inv_src

        def src_mt(skb: Skb, ctx: XtContext) -> bool:
            return ((skb.saddr & m) == a) != inv
        fns.append(src_mt)
    if rule.dmsk or rule.inv_dst:
        a2, m2, inv2 = rule.dst, rule.dmsk, rule.inv_dst

        def dst_mt(skb: Skb, ctx: XtContext) -> bool:
            return ((skb.daddr & m2) == a2) != inv2
        fns.append(dst_mt)
    for name, inv3, is_in in ((rule.iniface, rule.inv_in, True), (rule.outiface, rule.inv_out, False)):
        if name:
            fns.append(_iface_matcher(name, inv3, is_in))
    if rule.proto or rule.inv_proto:
        p, inv4 = rule.proto, rule.inv_proto

        def proto_mt(skb: Skb, ctx: XtContext) -> bool:
            return (skb.data[IPH_PROTOCOL] == p) != inv4
        fns.append(proto_mt)
    if rule.frag:
        inv5 = rule.inv_frag

        def frag_mt(skb: Skb, ctx: XtContext) -> bool:
            return skb.is_later_fragment != inv5
        fns.append(frag_mt)
    return fns


def _iface_matcher(name: str, inv: bool, is_in: bool) -> MatchFn:
    """`-i/-o [!] name[+]`: exact, or a prefix with a trailing '+' (`ifname_compare_aligned`)."""
    if name.endswith("+"):
        prefix = name[:-1]
        if is_in:
            def in_prefix(skb: Skb, ctx: XtContext) -> bool:
                return skb.iif.startswith(prefix) != inv
            return in_prefix

        def out_prefix(skb: Skb, ctx: XtContext) -> bool:
            return skb.oif.startswith(prefix) != inv
        return out_prefix
    if is_in:
        def in_exact(skb: Skb, ctx: XtContext) -> bool:
            return (skb.iif == name) != inv
        return in_exact

    def out_exact(skb: Skb, ctx: XtContext) -> bool:
        return (skb.oif == name) != inv
    return out_exact


def _standard_why(rule: Rule, skb: Skb) -> str | None:
    """Why `ip_packet_match` failed, in the trace's words (None if it matched)."""
    from natbox.rules.model import format_addr_mask

    if rule.family != NFPROTO_IPV4:
        why6 = standard_why6(rule, skb)
        if why6 is not None:
            return why6
        rule = Rule(iniface=rule.iniface, inv_in=rule.inv_in, outiface=rule.outiface, inv_out=rule.inv_out)
    if (rule.smsk or rule.inv_src) and ((skb.saddr & rule.smsk) == rule.src) == rule.inv_src:
        return f"no match (src is {format_addr_mask(skb.saddr, 0xFFFFFFFF, always_prefix=False)})"
    if (rule.dmsk or rule.inv_dst) and ((skb.daddr & rule.dmsk) == rule.dst) == rule.inv_dst:
        return f"no match (dst is {format_addr_mask(skb.daddr, 0xFFFFFFFF, always_prefix=False)})"
    for name, inv, val, what in ((rule.iniface, rule.inv_in, skb.iif, "in"), (rule.outiface, rule.inv_out,
                                                                            skb.oif, "out")):
        if name:
            hit = val.startswith(name[:-1]) if name.endswith("+") else val == name
            if hit == inv:
                return f"no match ({what} is {val or 'none'})"
    if (rule.proto or rule.inv_proto) and (skb.protocol == rule.proto) == rule.inv_proto:
        return f"no match (protocol is {skb.protocol})"
    if rule.frag and skb.is_later_fragment == rule.inv_frag:
        return "no match (fragment)" if skb.is_later_fragment else "no match (not a later fragment)"
    return None


_ALL: Final = "(all packets)"
_VERDICT_NAMES: Final = {NF_ACCEPT: "ACCEPT", NF_STOLEN: "STOLEN"}  # a target's verdict in the trace (others: DROP)
SAVE_ORDER: Final = ("mangle", "security", "raw", "filter", "nat")
_CHAIN_NAME: Final = {h: h.chain_name for h in Hook}  # Hook.chain_name without the property call per packet
# extensions whose checkentry calls nf_ct_netns_get(): while one is in the ruleset, conntrack runs
CONNTRACK_MATCHES: Final = frozenset({"conntrack", "state", "connmark", "helper", "connlimit", "connbytes", "connlabel",
                               "cluster"})
CONNTRACK_TARGETS: Final = frozenset({"SNAT", "DNAT", "MASQUERADE", "REDIRECT", "NETMAP", "CONNMARK", "CT",
                               "CONNSECMARK", "SYNPROXY"})


_VERSIONS: Final = itertools.count(1)  # Ruleset.version's source (see Ruleset.__init__)


class Ruleset:
    """raw, mangle, nat, filter and security, as iptables-nft keeps them in the kernel."""

    def __init__(self, family: int = NFPROTO_IPV4) -> None:
        self.family = family  # NFPROTO_IPV6: ip6tables' tables (ip6_tables.c), rules with 128-bit addresses
        self.tables: dict[str, Table] = {name: Table(name) for name in TABLE_NAMES}
        # tables iptables-save prints, in the order they were first used (nf_tables creates them on use)
        self.present: list[str] = []
        self._compiled: dict[str, dict[str, list[_CRule]]] = {}
        self._needs_ct: bool | None = None
        # changed by every change: what caches of "which tables are trivial" and compiled flows' plans compare
        # against; drawn from one counter for all rulesets, so a ruleset put in place of another (a reload)
        # never carries a version a plan of the old one was stamped with
        self.version = next(_VERSIONS)
        # each table's hook masks, while the table object is the one they were computed for
        self._masks: dict[str, tuple[Table, dict[str, int]]] = {}
        self.full_validations = self.incremental_validations = 0  # work counters (tests, benchmarks)

    # --- bookkeeping ------------------------------------------------------------------------------

    def touch(self, table: str) -> None:
        if table not in self.present:
            self.present.append(table)
            self.version = next(_VERSIONS)

    def invalidate(self, table: str | None = None) -> None:
        self.version = next(_VERSIONS)
        self._needs_ct = None
        if table is None:
            self._compiled.clear()
        else:
            self._compiled.pop(table, None)

    def saved_tables(self, table: str | None = None) -> list[Table]:
        """The tables iptables-save prints: iptables-nft lists them in one fixed order whatever order they
        were created in (recorded with iptables 1.8.9: mangle, security, raw, filter, nat), not in load order
        as iptables-legacy does."""
        if table is not None:
            return [self.tables[table]]
        return [self.tables[n] for n in SAVE_ORDER if n in self.present]

    # --- validation (translate_table / mark_source_chains / nft_chain_validate) -------------------

    @staticmethod
    def hook_masks(table: Table) -> dict[str, int]:
        """Which hooks reach each chain (the kernel's `mark_source_chains`). Raises on loops/depth."""
        return hook_masks(table)

    def validate(self, table: Table) -> None:
        """Every rule's extensions checked with its chain's hook mask (kernel checkentry)."""
        validate_table(table)

    # --- commands ---------------------------------------------------------------------------------

    def execute(self, cmd: Command) -> str:
        """Apply one command; return iptables' stdout text. A refused command changes nothing."""

        self.touch(cmd.table)
        table = self.tables[cmd.table]
        if cmd.op in ("L", "S"):
            if cmd.chain is not None and cmd.chain not in table.chains:
                raise RulesError(f"chain `{cmd.chain}' in table `{cmd.table}' is incompatible, use 'nft' tool.",
                                 OTHER_PROBLEM)
            text = self._list(table, cmd)
            if cmd.zero:  # then zero what was listed (`-L -Z`)
                work = cheap_clone(table)
                text += apply_command(work, Command(op="Z", table=cmd.table, chain=cmd.chain, verbose=cmd.verbose))
                self.tables[cmd.table] = work
                self.invalidate(cmd.table)
            return text
        return self._change(table, cmd)

    @staticmethod
    def _list(table: Table, cmd: Command) -> str:
        """`-L` / `-S` text."""
        from natbox.rules.listing import list_table
        from natbox.rules.printer import list_rules

        if cmd.op in ("L", "S"):
            if cmd.op == "S":
                return list_rules(table, cmd.chain, verbose=bool(cmd.verbose), rulenum=cmd.rulenum)
            if cmd.rulenum is not None and cmd.chain is not None:
                # `-L CHAIN N`: just that rule's line, no header (nothing when N is past the end)
                from natbox.rules.listing import rule_line

                rules = table.chains[cmd.chain].rules
                if cmd.rulenum > len(rules):
                    return ""
                return rule_line(rules[cmd.rulenum - 1], cmd.rulenum, numeric=cmd.numeric,
                                 verbose=bool(cmd.verbose), exact=cmd.exact, line_numbers=cmd.line_numbers)
            return list_table(table, cmd.chain, numeric=cmd.numeric, verbose=bool(cmd.verbose), exact=cmd.exact,
                              line_numbers=cmd.line_numbers)
        return ""

    def _change(self, table: Table, cmd: Command) -> str:
        """A command that changes `table` (on a copy, committed when accepted)."""
        work = cheap_clone(table)
        out = apply_command(work, cmd)
        if cmd.verbose and cmd.op in "AIDCR" and cmd.rule is not None and not (cmd.op == "D" and cmd.rulenum):
            from natbox.rules.listing import rule_line_verbose

            out = "".join(rule_line_verbose(r) for r in cmd.rules or [cmd.rule])
        if cmd.op in ("A", "I", "R"):
            try:
                masks = self._validate_change(table, work, cmd)
                added = cmd.rules or ([cmd.rule] if cmd.rule is not None else [])
                if uses_estimators(added):  # xt_rateest_lookup: the estimators other rules made
                    check_estimators(estimators_of(self.tables.values()), added)
            except RulesError as e:
                if e.kernel:
                    chain = cmd.chain or ""
                    op = OP_NAMES.get(cmd.op, "CHAIN_ADD")
                    raise RulesError(f" {op} failed ({e.message}): rule in chain {chain}", RESOURCE_PROBLEM,
                                     kernel=True) from None
                raise
        if cmd.op in ("C",):
            return out
        self.tables[cmd.table] = work
        self.invalidate(cmd.table)
        if cmd.op in ("A", "I", "R"):
            self._masks[cmd.table] = (work, masks)
        return out

    def _validate_change(self, old: Table, work: Table, cmd: Command) -> dict[str, int]:
        """Validate `work`, which is `old` with `cmd` applied; return its hook masks.

        Rules added one by one cost O(1) each: when `old` was validated with known hook masks and no new
        rule jumps to a chain, the jump graph and so every chain's hook mask are unchanged, every old rule
        still passes its checks, and only the new rules are checked (the first refused is the one full
        validation would report). Anything else is validated in full (`validate_table`, linear).
        """
        cached = self._masks.get(work.name)
        rules = cmd.rules or ([cmd.rule] if cmd.rule is not None else [])
        if (cmd.op in ("A", "I") and cached is not None and cached[0] is old and cmd.chain in cached[1]
                and not any(r.target is None and r.jump and r.jump not in BUILTIN_TARGETS for r in rules)):
            self.incremental_validations += 1
            masks = cached[1]
            user = work.chains[cmd.chain or ""].hook is None
            for r in rules:
                check_rule(work.name, masks[cmd.chain or ""], r, user)
            return masks
        self.full_validations += 1
        return validate_table(work)

    def restore(self, blocks: list[RestoreTable], *, noflush: bool = False) -> int:
        """Apply iptables-restore blocks; each table is replaced atomically at its COMMIT.

        Each block is validated once (`restore_block`); returns the number of full validations done.
        """
        with collector_paused():
            return self._restore(blocks, noflush)

    def _restore(self, blocks: list[RestoreTable], noflush: bool) -> int:
        new: dict[str, Table] = {}
        validations = 0
        for b in blocks:
            if noflush:
                t = new[b.name] if b.name in new else cheap_clone(self.tables[b.name])
            else:
                t = Table(b.name)
            validations += restore_block(t, b)
            new[b.name] = t
        restore_estimators(self.tables.values(), blocks)
        for name, t in new.items():
            self.tables[name] = t
            self.touch(name)
            self.invalidate(name)
        return validations

    # --- evaluation -------------------------------------------------------------------------------

    def _compile(self, table: str) -> dict[str, list[_CRule]]:
        comp = self._compiled.get(table)
        if comp is None:
            t = self.tables[table]
            comp = {c.name: [_CRule(r, i) for i, r in enumerate(c.rules, 1)] for c in t.chains.values()}
            self._compiled[table] = comp
        return comp

    def needs_conntrack(self) -> bool:
        """Whether some rule holds the conntrack hooks in this netns.

        The kernel registers connection tracking (and IPv4 defragmentation with it) in a network namespace
        only while an extension that needs it is loaded: `nf_ct_netns_get()` is called from the checkentry
        of the NAT targets, CONNMARK, CT (not `--notrack`) and the conntrack, state, connmark and helper
        matches, and `nf_ct_netns_put()` when the last such rule goes (nf_conntrack_proto.c). Without them
        nothing is tracked, so nothing is NATed.
        """
        if self._needs_ct is None:
            self._needs_ct = any(
                any(m.name in CONNTRACK_MATCHES for m in rule.matches)
                or (rule.target is not None and rule.target.name in CONNTRACK_TARGETS
                    and not getattr(rule.target, "notrack", False))
                for table in self.tables.values() for chain in table.chains.values() for rule in chain.rules)
        return self._needs_ct

    def is_trivial(self, table: str, hook: Hook) -> bool:
        """The table has no chain at `hook`, so the engine may skip it.

        With iptables-nft a table exists only once it is used (restored, listed or changed): until then
        nothing is registered at its hooks. Once it exists, every packet traverses its base chains, and
        one that falls through to the policy is counted there (`-nvL` "policy ACCEPT N packets"), so an
        empty chain is not skipped.
        """
        return table not in self.present or hook not in TABLE_HOOKS[table]

    def run(self, table: str, hook: Hook, skb: Skb, ctx: XtContext) -> int:
        """Mirrors `ipt_do_table()`: traverse the hook's built-in chain, return NF_ACCEPT or NF_DROP."""
        comp = self._compiled.get(table)
        if comp is None:
            comp = self._compile(table)
        base = self.tables[table].chains[_CHAIN_NAME[hook]]
        size = len(skb.data)
        trace = skb.trace
        stack: list[tuple[str, int]] = []
        chain_name = base.name
        rules = comp[chain_name]
        i = 0
        while True:
            if i >= len(rules):
                if stack:
                    chain_name, i = stack.pop()
                    rules = comp[chain_name]
                    continue
                # policy of the built-in chain
                base.packets += 1
                base.bytes += size
                verdict = NF_ACCEPT if base.policy == "ACCEPT" else NF_DROP
                if trace is not None:
                    trace.append(f"{table} {base.name}: policy {base.policy}")
                return verdict
            cr = rules[i]
            ok = True
            for fn in cr.fns:
                if not fn(skb, ctx):
                    ok = False
                    break
            if not ok:
                if trace is not None:
                    trace.append(f"{table} {chain_name} #{cr.num} {cr.desc or _ALL}: {self._why(cr, skb, ctx)}")
                i += 1
                continue
            r = cr.rule
            r.packets += 1
            r.bytes += size
            kind = cr.kind
            if kind == _K_TARGET:
                assert cr.target is not None
                if trace is not None:  # before the target runs, so what it does (NAT bindings) follows
                    trace.append(f"{table} {chain_name} #{cr.num} {cr.desc or _ALL}: match -> {cr.tdesc}")
                v = cr.target(skb, ctx)
                if trace is None and skb.trace is not None:  # -j TRACE switched tracing on
                    trace = skb.trace
                    trace.append(f"{table} {chain_name} #{cr.num} {cr.desc or _ALL}: match -> {cr.tdesc}")
                if v == XT_CONTINUE:
                    if trace is not None:
                        trace.append(f"{table} {chain_name}: {cr.tdesc.split()[0]} continues")
                    i += 1
                    continue
                if v != XT_RETURN:
                    if trace is not None:
                        trace.append(f"{table} {chain_name}: {_VERDICT_NAMES.get(v, 'DROP')}")
                    return v
                kind = _K_RETURN
            if trace is not None:
                what = {_K_VERDICT: r.jump, _K_JUMP: f"jump {r.jump}", _K_GOTO: f"goto {r.jump}",
                        _K_RETURN: "RETURN", _K_NONE: "continue"}.get(kind, r.jump)
                trace.append(f"{table} {chain_name} #{cr.num} {cr.desc or _ALL}: match -> {what}")
            if kind == _K_VERDICT:
                assert isinstance(cr.value, int)
                return cr.value
            if kind == _K_NONE:
                i += 1
                continue
            if kind == _K_RETURN:
                if stack:
                    chain_name, i = stack.pop()
                    rules = comp[chain_name]
                    continue
                # RETURN from the built-in chain: its policy decides
                i = len(rules)
                continue
            target_chain = cr.value
            assert isinstance(target_chain, str)
            if target_chain not in comp:
                i += 1  # cannot happen for a validated ruleset
                continue
            if kind == _K_JUMP:
                if len(stack) >= MAX_JUMP_DEPTH:
                    return NF_DROP  # validation forbids this depth; drop like nft's stack overflow guard
                stack.append((chain_name, i + 1))
            chain_name = target_chain
            rules = comp[chain_name]
            i = 0

    @staticmethod
    def _why(cr: _CRule, skb: Skb, ctx: XtContext) -> str:
        w = _standard_why(cr.rule, skb)
        if w is not None:
            return w
        for m, fn in zip(cr.matches, cr.fns[len(cr.fns) - len(cr.matches):], strict=True):
            if not fn(skb, ctx):
                return m.why(skb, ctx)
        return "no match"
