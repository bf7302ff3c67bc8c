"""The extensions iptables can load: `-m NAME` and `-j NAME` resolved to their classes (xtables_find_match/target).

The tables are built once from `matches.ALL` and `targets.ALL`, each class under its name and its aliases
(`-m state` is the conntrack module's `State`, `-j CT` and `-j NOTRACK` share a module). Keeping the lookup
here, above the extension modules, means `rules.model` (the base classes the extensions subclass) never
imports them back: the rules package has no import cycle and the classes need no registering decorator.
"""

from __future__ import annotations

from natbox.rules import matches, targets
from natbox.rules.model import Match, Target

__all__ = ["MATCHES", "TARGETS", "find_match", "find_target"]

MATCHES: dict[str, type[Match]] = {n: cls for cls in matches.ALL for n in (cls.name, *cls.aliases)}
TARGETS: dict[str, type[Target]] = {n: cls for cls in targets.ALL for n in (cls.name, *cls.aliases)}


def find_match(name: str) -> type[Match] | None:
    """The class of `-m NAME`, or None when no extension of that name exists (`xtables_find_match`)."""
    return MATCHES.get(name)


def find_target(name: str) -> type[Target] | None:
    """The class of `-j NAME`, or None: then NAME may be a chain (`xtables_find_target`)."""
    return TARGETS.get(name)
