"""The sets iptables' parser sees (`get_set_byname` asks the kernel; natbox asks this scope).

`natbox iptables` runs its command inside `using_sets(registry)` with the sets file's registry, so
`-m set --match-set NAME` and `-j SET --add-set NAME` refuse a set that does not exist, as iptables does.
Outside any scope there are no sets. A context variable, not a global: nothing here reads files.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

from natbox.ipset.core import IpsetRegistry

__all__ = ["enter_sets", "rule_set_refs", "sets_in_scope", "using_sets"]

_SETS: ContextVar[IpsetRegistry | None] = ContextVar("natbox_ipsets", default=None)


def sets_in_scope() -> IpsetRegistry | None:
    return _SETS.get()


def enter_sets(registry: IpsetRegistry | None) -> None:
    """Make `registry` the sets in scope from now on (a command-line process's whole run)."""
    _SETS.set(registry)


@contextmanager
def using_sets(registry: IpsetRegistry | None) -> Iterator[None]:
    token = _SETS.set(registry)
    try:
        yield
    finally:
        _SETS.reset(token)


_SET_OPTION: Final = re.compile(r"--(?:match-set|add-set|del-set|map-set)\s+(\S+)")


def rule_set_refs(rules_text: str) -> dict[str, int]:
    """How many references the rules of an iptables-save text hold on each set (one per set option)."""
    refs: dict[str, int] = {}
    for line in rules_text.splitlines():
        if line.startswith("-A ") or (line.startswith("[") and "] -A " in line):
            for name in _SET_OPTION.findall(line):
                refs[name.strip('"')] = refs.get(name.strip('"'), 0) + 1
    return refs
