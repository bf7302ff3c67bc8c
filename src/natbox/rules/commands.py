"""iptables commands applied to a table, and iptables-restore blocks (iptables/xshared.c, nft-cmd.c).

`apply_command(table, cmd)` changes a table in place (the caller works on a copy: a refused command changes
nothing). `restore_block(table, block)` applies one `*table ... COMMIT` block and validates it the way a
commit is validated: once, after the last command (`nft_table_validate` runs once per transaction). Which
line is reported when the block is refused is still that of the first command after which the table was
invalid, as if every command had been validated on its own: adding rules (-A, -I) and chains (-N) never
makes an invalid table valid (a loop or a deep jump stays, hook masks only grow and every checkentry
refuses hooks, never requires them), so validity along a run of such commands is monotone and the first
failing command is found by bisection over the run (a few more validations, only when the block is
refused). Commands that remove or rewrite something (-D, -R, -F, -X, -E) close a run: the table is
validated before them (and after -R, which also adds a rule).
"""

from __future__ import annotations

import copy
from typing import Final

from natbox.rules.model import (
    BUILTIN_TARGETS,
    OTHER_PROBLEM,
    PARAMETER_PROBLEM,
    RESOURCE_PROBLEM,
    Chain,
    Rule,
    RulesError,
    Table,
)
from natbox.rules.parser import Command, RestoreTable
from natbox.rules.printer import format_rule_spec
from natbox.rules.validate import validate_table

__all__ = ["OP_NAMES", "apply_command", "cheap_clone", "restore_block"]

OP_NAMES: Final = {"A": "RULE_APPEND", "I": "RULE_INSERT", "R": "RULE_REPLACE", "D": "RULE_DELETE", "C": "RULE_CHECK"}
# commands after which a table that was invalid stays invalid (they add, or change nothing validated)
_MONOTONE: Final = frozenset("AINPZC")


def cheap_clone(table: Table) -> Table:
    """A copy of `table` whose chains and rule lists are new and whose rules are shared.

    Commands replace rules rather than change them (-Z and -E copy a rule before writing to it), so this is
    enough for a transaction and costs O(rules) list copying instead of a deep copy of every extension.
    """
    t = Table(table.name)  # not Table.__new__: mypyc's native classes construct only through __init__
    t.chains = {}
    for name, c in table.chains.items():
        n = Chain(c.name)
        n.hook, n.builtin, n.policy = c.hook, c.builtin, c.policy
        n.packets, n.bytes = c.packets, c.bytes
        if c.raw is not None:
            n.copy_raw_from(c)
        else:
            n.rules = list(c.rules)
            n.trusted_mask = c.trusted_mask
        t.chains[name] = n
    return t


def _find_rule(chain: Chain, rule: Rule) -> int | None:
    spec = format_rule_spec(rule)
    for i, r in enumerate(chain.rules):
        if format_rule_spec(r) == spec:
            return i
    return None


def _chain_or_error(table: Table, name: str | None) -> Chain:
    c = table.chains.get(name or "")
    if c is None:
        raise RulesError("No chain/target/match by that name.", OTHER_PROBLEM, plain=True)
    return c


def _check_jump(table: Table, rule: Rule) -> None:
    if rule.target is None and rule.jump and rule.jump not in BUILTIN_TARGETS and rule.jump not in table.chains:
        raise RulesError(f"Chain '{rule.jump}' does not exist", PARAMETER_PROBLEM)


def apply_command(table: Table, cmd: Command) -> str:
    """Apply a modifying command to `table` in place (the caller works on a copy)."""
    op = cmd.op
    if op in "AICDR":
        assert cmd.rule is not None
        chain = _chain_or_error(table, cmd.chain)
        many = cmd.rules or [cmd.rule]
        if len(many) > 1 and op != "R":
            out = ""
            for one in many:
                sub = Command(op=op, table=cmd.table, chain=cmd.chain, rule=one, rules=[one], rulenum=cmd.rulenum)
                out += apply_command(table, sub)
            return out
        rule = cmd.rule
        if op in "AIR":
            _check_jump(table, rule)
        if op == "A":
            chain.rules.append(rule)
        elif op == "I":
            n = cmd.rulenum or 1
            if n > len(chain.rules) + 1:
                raise RulesError("Index of insertion too big.", OTHER_PROBLEM, plain=True)
            chain.rules.insert(n - 1, rule)
        elif op == "R":
            n = cmd.rulenum or 1
            if n > len(chain.rules):
                raise RulesError("Index of replacement too big.", OTHER_PROBLEM, plain=True)
            chain.rules[n - 1] = rule
        elif op == "D":
            if cmd.rulenum is not None:
                if cmd.rulenum > len(chain.rules):
                    raise RulesError("Index of deletion too big.", OTHER_PROBLEM, plain=True)
                del chain.rules[cmd.rulenum - 1]
            else:
                idx = _find_rule(chain, rule)
                if idx is None:
                    raise RulesError("Bad rule (does a matching rule exist in that chain?).", OTHER_PROBLEM,
                                     plain=True)
                del chain.rules[idx]
        elif op == "C":
            if _find_rule(chain, rule) is None:
                raise RulesError("Bad rule (does a matching rule exist in that chain?).", OTHER_PROBLEM,
                                 plain=True)
        return ""
    if op == "N":
        assert cmd.chain is not None
        if cmd.chain in table.chains:
            raise RulesError("Chain already exists.", OTHER_PROBLEM, plain=True)
        table.chains[cmd.chain] = Chain(cmd.chain)
        return ""
    if op == "X":
        # nf_tables refuses to delete a chain that has rules or is referenced (-EBUSY); `-X` without a
        # chain deletes every user chain in one transaction, failing on the first busy one
        names = [cmd.chain] if cmd.chain is not None else [c.name for c in table.user_chains()]
        refs = table.reference_counts()  # deleting a chain without rules changes no other chain's count
        deleted = ""
        for name in names:
            if cmd.verbose:  # `-v -X` (recorded)
                deleted += f"Deleting chain `{name}'\n"
            c = _chain_or_error(table, name)
            if c.builtin or c.rules or refs.get(c.name, 0):
                raise RulesError(f" CHAIN_DEL failed (Device or resource busy): chain {c.name}", RESOURCE_PROBLEM)
            del table.chains[c.name]
        return deleted
    if op in "FZ":
        fz_chains = [_chain_or_error(table, cmd.chain)] if cmd.chain is not None else list(table.chains.values())
        out = ""
        for c in fz_chains:
            if op == "F":
                c.rules = []
                if cmd.verbose:
                    out += f"Flushing chain `{c.name}'\n"
            else:
                c.packets = c.bytes = 0
                for i, r in enumerate(c.rules):
                    if r.packets or r.bytes:
                        r = c.rules[i] = copy.copy(r)  # the rule may be shared with the live table
                        r.packets = r.bytes = 0
                if cmd.verbose:
                    out += f"Zeroing chain `{c.name}'\n"
        return out
    if op == "P":
        pc = table.chains.get(cmd.chain or "")
        if pc is None or not pc.builtin:
            raise RulesError("Bad built-in chain name.", OTHER_PROBLEM, plain=True)
        if cmd.policy not in ("ACCEPT", "DROP"):
            raise RulesError("Bad policy name. Run `dmesg' for more information.", OTHER_PROBLEM, plain=True)
        pc.policy = cmd.policy
        if cmd.counters is not None:
            pc.packets, pc.bytes = cmd.counters
        return ""
    if op == "E":
        c = _chain_or_error(table, cmd.chain)
        assert cmd.new_name is not None
        if cmd.new_name in table.chains:
            raise RulesError("File exists.", OTHER_PROBLEM, plain=True)
        if c.builtin:
            raise RulesError("Invalid argument", OTHER_PROBLEM, plain=True)
        old = c.name
        renamed: dict[str, Chain] = {}
        for name, ch in table.chains.items():
            if name == old:
                ch.name = cmd.new_name
                renamed[cmd.new_name] = ch
            else:
                renamed[name] = ch
            for i, r in enumerate(ch.rules):
                if r.target is None and r.jump == old:
                    r = ch.rules[i] = copy.copy(r)  # the rule may be shared with the live table
                    r.jump = cmd.new_name
        table.chains = renamed
        return ""
    raise RulesError("no command specified")



def _declare_chains(t: Table, b: RestoreTable) -> None:
    """The block's `:CHAIN POLICY [p:b]` lines."""
    for rc in b.chains:
        c = t.chains.get(rc.name)
        if rc.policy == "-":
            if c is not None and c.builtin:
                raise RulesError(f"iptables-restore: line {rc.line} failed: Bad built-in chain name.",
                                 OTHER_PROBLEM, line=rc.line)
            if c is None:
                t.chains[rc.name] = Chain(rc.name)
            else:
                c.rules = []  # declaring an existing user chain flushes it (also with --noflush)
        else:
            if c is None or not c.builtin:
                raise RulesError(f"iptables-restore: line {rc.line} failed: Bad built-in chain name.",
                                 OTHER_PROBLEM, line=rc.line)
            c.policy = rc.policy  # --noflush keeps a built-in chain's rules
            c.packets, c.bytes = rc.counters


def _restore_error(e: RulesError, lineno: int, cmd: Command) -> RulesError:
    """A refused restore command as iptables-restore reports it."""
    if e.kernel:
        op = OP_NAMES.get(cmd.op, "CHAIN_ADD")
        return RulesError(f"\nline {lineno}: {op} failed ({e.message}): rule in chain {cmd.chain}",
                          RESOURCE_PROBLEM, line=lineno, kernel=True)
    if e.line is None:
        e.line = lineno
    return e


class _Run:
    """The commands since the table was last validated, with the rules each one added.

    `validations` counts full validations (tests check that a block costs one, not one per rule).
    """

    def __init__(self, table: Table) -> None:
        self.table = table
        self.added: list[tuple[int, Command, list[Rule]]] = []
        self.validations = 0

    def validate(self, skip: set[int] | None = None) -> RulesError | None:
        self.validations += 1
        try:
            validate_table(self.table, skip or set())
        except RulesError as e:
            return e
        return None

    def settle(self) -> None:
        """Validate the table; if it is invalid, raise the error of the first command that made it so."""
        if not self.added:
            return
        err = self.validate()
        if err is not None:
            lo, hi = 0, len(self.added) - 1  # the table after command `hi` is invalid
            while lo < hi:
                mid = (lo + hi) // 2
                later = {id(r) for _ln, _c, rules in self.added[mid + 1:] for r in rules}
                e = self.validate(later)
                if e is None:
                    lo = mid + 1
                else:
                    hi, err = mid, e
            lineno, cmd, _rules = self.added[hi]
            raise _restore_error(err, lineno, cmd) from None
        self.added.clear()


def restore_block(t: Table, b: RestoreTable) -> int:
    """Apply one iptables-restore block to `t` in place; returns how many full validations it took."""
    _declare_chains(t, b)
    run = _Run(t)
    for lineno, cmd in b.commands:
        if cmd.op not in _MONOTONE:
            run.settle()
        try:
            apply_command(t, cmd)
        except RulesError as e:
            run.settle()  # a refusal of an earlier command comes first
            raise _restore_error(e, lineno, cmd) from None
        if cmd.op in "AIR":
            assert cmd.rule is not None
            run.added.append((lineno, cmd, cmd.rules or [cmd.rule]))
            if cmd.op == "R":
                run.settle()
    run.settle()
    return run.validations
