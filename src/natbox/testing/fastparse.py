"""The restore fast path (natbox.rules.fastparse) against the general loop, for both families' tests
(tests/rules/test_fastparse.py, tests/rules6/test_fastparse6.py): every line must give the same rule
(extensions compared by class and attributes) or the same error, whichever path reads it."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Iterable
from pathlib import Path

from natbox.netfilter import NFPROTO_IPV4
from natbox.rules.fastparse import GroupCache, parse_fast, parse_fast_line
from natbox.rules.model import Rule, RulesError
from natbox.rules.parser import Command, parse_argv, parse_restore_argv, parse_restore_line
from natbox.rules.words import tokenize_restore_line
from natbox.testing.rules_conformance import read_t

Outcome = tuple[str, object]


def attrs(obj: object) -> dict[str, object]:
    """An object's attributes: its __dict__, or a compiled (mypyc) class's `__mypyc_attrs__` (no __dict__)."""
    names: tuple[str, ...] | None = getattr(type(obj), "__mypyc_attrs__", None)
    if names is None:
        return dict(vars(obj))
    return {n: getattr(obj, n) for n in names if hasattr(obj, n)}


def dump_rule(rule: Rule) -> object:
    """Everything the parser put in a rule, extensions by class and attributes."""
    fields = {f.name: getattr(rule, f.name) for f in dataclasses.fields(rule) if f.name not in ("matches", "target")}
    exts = [(type(e).__name__, attrs(e)) for e in [*rule.matches, *([rule.target] if rule.target else [])]]
    return fields, exts


def outcome(parse: Callable[[list[str]], Command], argv: list[str]) -> Outcome:
    """("ok", the command's parts) or ("error", (exit code, message))."""
    try:
        cmd = parse(list(argv))
    except RulesError as e:
        return "error", (e.exit_code, e.message)
    return "ok", (cmd.op, cmd.chain, cmd.table, cmd.table_given, [dump_rule(r) for r in cmd.rules])


def compare_paths(argv: list[str], table: str, groups: GroupCache, line: str | None = None,
                  family: int = NFPROTO_IPV4) -> bool:
    """Both fast paths agree with the general loop on `argv` (and on `line`, the text it was read from, if
    given); returns whether a fast path took it."""
    slow = outcome(lambda a: parse_argv(a, table=table, family=family), argv)
    fast = outcome(lambda a: parse_restore_argv(a, table, groups, family), argv)
    assert fast == slow, argv
    taken = parse_fast(list(argv), GroupCache(), family) is not None
    if line is not None:
        assert tokenize_restore_line(line) == argv
        by_line = outcome(lambda _a: parse_restore_line(line, table, groups, family), argv)
        assert by_line == slow, line
        taken = taken or parse_fast_line(line, GroupCache(), family) is not None
    return taken


def compare_t_files(paths: Iterable[Path], family: int = NFPROTO_IPV4) -> tuple[int, int]:
    """compare_paths on every line of iptables' .t tests (accepted or refused), one GroupCache for all:
    (lines a fast path took, lines)."""
    groups = GroupCache()
    taken = total = 0
    for path in paths:
        for case in read_t(path).cases:
            try:
                words = shlex.split(case.rule)
            except ValueError:
                continue
            for chain in case.chains:
                total += 1
                line: str | None = f"-A {chain} {case.rule}"
                if tokenize_restore_line(line or "") != ["-A", chain, *words]:
                    line = None  # shell quoting iptables-restore does not read the same way
                taken += compare_paths(["-A", chain, *words], case.table, groups, line, family)
    return taken, total
