"""Ruleset files natbox wrote itself, read without parsing every rule (issue #12: 50,000 rules in under 1 s).

`natbox iptables --rules F` loads F, applies one command and writes F back. Parsing and validating every
line of a kube-proxy-sized file each time costs seconds, although the command touches one chain. So when
natbox writes a ruleset file it ends it with a stamp line, a comment that iptables-restore ignores:

    # natbox-ruleset 1 sha256 <hex digest of every byte before this line>

A file whose stamp matches its content is exactly what natbox printed for a ruleset it had validated, so
its rule lines are already in iptables-save's canonical form and passed the kernel checks under the hook
masks they had. `load_stamped` then builds the tables with each chain's rule lines kept as text
(`Chain.raw`): they are written back verbatim, their jump targets are read off the lines' last two words for
the loop, depth and hook mask walk, and they are parsed only when something needs them as rules (a command
on that chain, a listing, evaluation, or a hook mask that changed so their checks must run again). A file
without a matching stamp (written by hand, by iptables-save, or edited) is parsed and validated in full.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Final

from natbox.rules.evaluate import Ruleset
from natbox.rules.extensions import find_target
from natbox.rules.fastparse import GroupCache
from natbox.rules.model import NFPROTO_IPV4, TABLE_NAMES, Chain, Rule, RulesError, Table, collector_paused
from natbox.rules.parser import parse_restore_line
from natbox.rules.validate import hook_masks
from natbox.rules.words import parse_counters

__all__ = ["STAMP_PREFIX", "load_stamped", "stamp"]

STAMP_PREFIX: Final = "# natbox-ruleset 1 sha256 "  # bump the number when the saved form of a rule changes


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8", "surrogateescape")).hexdigest()


def stamp(text: str) -> str:
    """`text` (iptables-save -c output) followed by its stamp line."""
    return f"{text}{STAMP_PREFIX}{_digest(text)}\n"


def _stamped_body(text: str) -> str | None:
    """The text before a matching stamp line, or None."""
    if not text.endswith("\n"):
        return None
    start = text.rfind("\n", 0, len(text) - 1) + 1
    last = text[start:-1]
    if not last.startswith(STAMP_PREFIX):
        return None
    body = text[:start]
    return body if last[len(STAMP_PREFIX):] == _digest(body) else None


def _loader(table: str, file: str | None,
            family: int = NFPROTO_IPV4) -> Callable[[list[tuple[int, str]]], list[Rule]]:
    def load(raw: list[tuple[int, str]]) -> list[Rule]:
        rules: list[Rule] = []
        groups = GroupCache()  # for this call only: the ipsets in scope may differ from one call to the next
        with collector_paused():
            for lineno, text in raw:
                head, _, rest = text.partition(" ")
                try:
                    packets, nbytes = parse_counters(head, lineno)
                    cmd = parse_restore_line(rest, table, groups, family)
                except RulesError as e:
                    e.file, e.line = file, lineno
                    raise
                assert cmd.rule is not None
                for r in cmd.rules or [cmd.rule]:
                    r.packets, r.bytes = packets, nbytes
                    rules.append(r)
        return rules

    return load


def _jumps(raw: list[tuple[int, str]], family: int = NFPROTO_IPV4) -> list[str]:
    """The chains saved rule lines jump or go to: a chain jump has no target options, so in iptables-save
    text it is the last two words, `-g NAME`, or `-j NAME` where no target extension is called NAME (the
    parser's rule)."""
    out: list[str] = []
    for _ln, text in raw:
        parts = text.rsplit(" ", 2)
        if len(parts) == 3 and (parts[1] == "-g" or (parts[1] == "-j" and find_target(parts[2], family) is None)):
            out.append(parts[2])
    return out


def load_stamped(text: str, file: str | None = None, family: int = NFPROTO_IPV4) -> Ruleset | None:
    """The ruleset of a stamped file with its rule lines unparsed; None when the stamp is missing or stale."""
    body = _stamped_body(text)
    if body is None:
        return None
    try:
        return _build(body, file, family)
    except (ValueError, IndexError, KeyError):
        return None  # not the shape natbox writes after all: the caller parses it in full


def _build(body: str, file: str | None, family: int) -> Ruleset | None:
    rs = Ruleset(family)
    table: Table | None = None
    lines: dict[str, list[tuple[int, str]]] = {}
    for lineno, line in enumerate(body.split("\n"), 1):
        if not line or line[0] == "#":
            continue
        c0 = line[0]
        if c0 == "[":
            chain = line.split(" ", 3)[2]
            lines.setdefault(chain, []).append((lineno, line))
        elif c0 == ":":
            if table is None:
                return None
            name, policy, counters = line[1:].split(" ")
            c = table.chains.get(name)
            if c is None:
                if policy != "-":
                    return None
                table.chains[name] = Chain(name)
            elif policy == "-" or not c.builtin:
                return None
            else:
                c.policy = policy
                c.packets, c.bytes = parse_counters(counters, lineno)
        elif c0 == "*":
            if table is not None or line[1:] not in TABLE_NAMES:
                return None
            table, lines = Table(line[1:]), {}
        elif line == "COMMIT" and table is not None:
            load = _loader(table.name, file, family)
            for name, raw in lines.items():
                table.chains[name].set_raw(raw, load, _jumps(raw, family))
            for name, mask in hook_masks(table).items():
                table.chains[name].trusted_mask = mask
            rs.tables[table.name] = table
            rs.touch(table.name)
            table = None
        else:
            return None
    return rs if table is None else None
