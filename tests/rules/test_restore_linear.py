"""Issue #12: restore validates once per commit, and reports exactly what validating every command did.

The reference below is the algorithm natbox used before (every path walked from each start chain, the whole
table validated after every -A/-I/-R of a restore block). Random blocks — jumps, gotos, loops, deep jump
chains, hook-restricted targets reached from the wrong hook, deletes, flushes and replaces in between — must
give the same result (tables or message, line, exit code) both ways, and a valid block costs one validation.
"""

from __future__ import annotations

import contextlib
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from natbox.cli.iptables import iptables_restore_main
from natbox.rules.commands import OP_NAMES, apply_command
from natbox.rules.evaluate import Ruleset
from natbox.rules.model import BUILTIN_TARGETS, RESOURCE_PROBLEM, Chain, RulesError, Table
from natbox.rules.parser import RestoreTable, parse_restore
from natbox.rules.printer import save_tables
from natbox.rules.validate import MAX_JUMP_DEPTH, hook_masks


def reference_hook_masks(table: Table) -> dict[str, int]:
    """`Ruleset.hook_masks` as it was written first: every path from each base chain walked (exponential on
    diamonds, exact by definition); a loop overflows the jump stack (nft_chain_validate's -EMLINK)."""
    masks: dict[str, int] = dict.fromkeys(table.chains, 0)

    def walk(chain: Chain, hook_bit: int, depth: int, path: tuple[str, ...]) -> None:
        masks[chain.name] |= hook_bit
        for r in chain.rules:
            if r.target is None and r.jump and r.jump not in BUILTIN_TARGETS:
                sub = table.chains.get(r.jump)
                if sub is None:
                    continue
                if sub.name in path:
                    raise RulesError("Too many links", RESOURCE_PROBLEM, kernel=True)
                if depth + 1 > MAX_JUMP_DEPTH:
                    raise RulesError("Too many links", RESOURCE_PROBLEM, kernel=True)
                walk(sub, hook_bit, depth + 1, (*path, sub.name))

    for c in table.builtin_chains():
        assert c.hook is not None
        walk(c, 1 << c.hook, 0, (c.name,))
    return masks


def reference_validate(table: Table) -> None:
    masks = reference_hook_masks(table)
    for c in table.chains.values():
        for r in c.rules:
            for m in r.matches:
                m.check(table.name, masks[c.name], r)
            if r.target is not None:
                r.target.check(table.name, masks[c.name], r)


def reference_restore(blocks: list[RestoreTable]) -> dict[str, Table]:
    """The former `Ruleset.restore` (without --noflush): validation after every -A/-I/-R."""
    new: dict[str, Table] = {}
    for b in blocks:
        t = Table(b.name)
        for rc in b.chains:
            if rc.name not in t.chains:
                t.chains[rc.name] = Chain(rc.name)
        for lineno, cmd in b.commands:
            try:
                apply_command(t, cmd)
                if cmd.op in "AIR":
                    reference_validate(t)
            except RulesError as e:
                if e.kernel:
                    op = OP_NAMES.get(cmd.op, "CHAIN_ADD")
                    raise RulesError(f"\nline {lineno}: {op} failed ({e.message}): rule in chain {cmd.chain}",
                                     RESOURCE_PROBLEM, line=lineno, kernel=True) from None
                if e.line is None:
                    e.line = lineno
                raise
        new[b.name] = t
    return new


CHAINS = ["A", "B", "C", "D", "E"]
TARGETS = ["ACCEPT", "RETURN", "MASQUERADE", "DNAT --to-destination 10.0.0.1", "SNAT --to-source 10.0.0.2"]


@st.composite
def nat_blocks(draw: st.DrawFn) -> str:
    """A `*nat` block: user chains, rules jumping between them and from the base chains, a few edits."""
    lines = ["*nat"] + [f":{c} - [0:0]" for c in CHAINS]
    n = draw(st.integers(1, 30))
    for _ in range(n):
        chain = draw(st.sampled_from([*CHAINS, "PREROUTING", "POSTROUTING", "OUTPUT", "INPUT"]))
        kind = draw(st.integers(0, 9))
        if kind <= 4:
            lines.append(f"-A {chain} -{draw(st.sampled_from('jg'))} {draw(st.sampled_from(CHAINS))}")
        elif kind <= 6:
            lines.append(f"-A {chain} -j {draw(st.sampled_from(TARGETS))}")
        elif kind == 7:
            lines.append(f"-I {chain} 1 -j {draw(st.sampled_from(CHAINS + TARGETS))}")
        elif kind == 8:
            lines.append(f"-F {draw(st.sampled_from(CHAINS))}")
        else:
            lines.append(f"-R {chain} 1 -j {draw(st.sampled_from(CHAINS + TARGETS))}")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _outcome(fn: object, blocks: list[RestoreTable]) -> tuple[object, ...]:
    try:
        tables = fn(blocks)  # type: ignore[operator]
    except RulesError as e:
        return ("error", str(e), e.line, e.exit_code)
    return ("ok", save_tables(list(tables.values()), "d", counters=True))


def _new_restore(blocks: list[RestoreTable]) -> dict[str, Table]:
    rs = Ruleset()
    rs.restore(blocks)
    return {b.name: rs.tables[b.name] for b in blocks}


@settings(max_examples=300, deadline=None)
@given(nat_blocks())
def test_restore_same_result_as_validating_every_command(text: str) -> None:
    blocks = parse_restore(text)
    assert _outcome(_new_restore, blocks) == _outcome(reference_restore, blocks)


@settings(max_examples=200, deadline=None)
@given(nat_blocks())
def test_hook_masks_same_as_walking_every_path(text: str) -> None:
    # the same tables without validation in between: compare the one-shot walk on the final table
    t = Table("nat")
    blocks = parse_restore(text)
    for rc in blocks[0].chains:
        t.chains[rc.name] = Chain(rc.name)
    for _ln, cmd in blocks[0].commands:
        with contextlib.suppress(RulesError):
            apply_command(t, cmd)
    try:
        want: object = reference_hook_masks(t)
    except RulesError as e:
        want = e.message
    try:
        got: object = hook_masks(t)
    except RulesError as e:
        got = e.message
    assert got == want


def deep_block(depth: int, loop_at: int | None = None) -> str:
    """`INPUT -> C0 -> C1 -> ... -> C{depth-1}`, optionally `C{last} -> C{loop_at}`."""
    lines = ["*filter"] + [f":C{i} - [0:0]" for i in range(depth)]
    lines.append("-A INPUT -j C0")
    lines += [f"-A C{i} -j C{i + 1}" for i in range(depth - 1)]
    if loop_at is not None:
        lines.append(f"-A C{depth - 1} -j C{loop_at}")
    return "\n".join([*lines, "COMMIT"]) + "\n"


def test_deep_and_looping_blocks_report_the_first_bad_line() -> None:
    for text in (deep_block(MAX_JUMP_DEPTH), deep_block(MAX_JUMP_DEPTH + 1), deep_block(20),
                 deep_block(5, loop_at=2), deep_block(20, loop_at=0)):
        blocks = parse_restore(text)
        assert _outcome(_new_restore, blocks) == _outcome(reference_restore, blocks)


def test_one_validation_per_commit() -> None:
    """The validation work of a block does not grow with its rules: one pass per COMMIT, any size."""
    for n in (10, 1000, 5000):
        lines = ["*filter", ":X - [0:0]"] + [f"-A X -s 10.0.{i >> 8}.{i & 255} -j ACCEPT" for i in range(n)]
        lines += ["-A INPUT -j X", "COMMIT", "*nat", "-A POSTROUTING -j MASQUERADE", "COMMIT"]
        assert Ruleset().restore(parse_restore("\n".join(lines) + "\n")) == 2


def test_refused_block_names_its_first_bad_line() -> None:
    lines = ["*nat", ":X - [0:0]"] + [f"-A X -d 10.0.{i >> 8}.{i & 255} -j ACCEPT" for i in range(3000)]
    lines += ["-A X -j MASQUERADE", "-A PREROUTING -j X"] + ["-A X -j ACCEPT"] * 100 + ["COMMIT"]
    err = io.StringIO()
    rc = iptables_restore_main([], stdin=io.StringIO("\n".join(lines) + "\n"), stderr=err, ruleset=Ruleset())
    assert rc == 4
    assert err.getvalue() == ("iptables-restore v1.8.9 (nf_tables): \n"
                              "line 3004: RULE_APPEND failed (Invalid argument): rule in chain PREROUTING\n")


EXEC_COMMANDS = [
    "-t nat -N X", "-t nat -N Y", "-t nat -A PREROUTING -j X", "-t nat -A X -j Y", "-t nat -A Y -j X",
    "-t nat -A X -j MASQUERADE", "-t nat -A Y -j DNAT --to-destination 10.0.0.1", "-t nat -A X -j ACCEPT",
    "-t nat -I X 1 -j SNAT --to-source 10.0.0.2", "-t nat -A POSTROUTING -j Y", "-t nat -A OUTPUT -j X",
    "-t nat -D X 1", "-t nat -F X", "-t nat -R Y 1 -j RETURN", "-t nat -A POSTROUTING -j MASQUERADE",
    "-t nat -A Y -s 10.0.0.1,10.0.0.2 -j MASQUERADE", "-t nat -X Y", "-t nat -E X Z", "-t nat -E Z X",
]


def _execute(rs: Ruleset, line: str) -> str:
    from natbox.rules.parser import parse_argv

    try:
        return rs.execute(parse_argv(line.split()))
    except RulesError as e:
        return f"error {e.exit_code} {e}"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(EXEC_COMMANDS), min_size=1, max_size=20))
def test_rules_added_one_by_one_validate_like_a_full_validation(cmds: list[str]) -> None:
    incremental, full = Ruleset(), Ruleset()
    for c in cmds:
        full._masks.clear()  # no known hook masks: every command validates the whole table
        assert _execute(incremental, c) == _execute(full, c), c
        assert save_tables(incremental.saved_tables(), "d") == save_tables(full.saved_tables(), "d")


def test_rules_added_one_by_one_cost_constant_validation_work() -> None:
    rs = Ruleset()
    _execute(rs, "-t nat -N X")
    _execute(rs, "-t nat -A PREROUTING -j X")  # a jump: the hook masks change, the table is walked
    for i in range(300):
        assert _execute(rs, f"-t nat -A X -d 10.0.{i >> 8}.{i & 255} -j DNAT --to-destination 10.1.0.1") == ""
    assert _execute(rs, "-t nat -A X -j MASQUERADE").startswith("error 4")  # MASQUERADE at PREROUTING
    assert (rs.full_validations, rs.incremental_validations) == (1, 301)
