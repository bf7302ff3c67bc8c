"""The extensions iptables can load: `-m NAME` and `-j NAME` resolved to their classes (xtables_find_match/target).

The tables are built once from `matches.ALL` and `targets.ALL`, each class under its name and its aliases
(`-m state` is the conntrack module's `State`, `-j CT` and `-j NOTRACK` share a module). Keeping the lookup
here, above the extension modules, means `rules.model` (the base classes the extensions subclass) never
imports them back: the rules package has no import cycle and the classes need no registering decorator.
ip6tables' tables (`family=NFPROTO_IPV6`) are the family-independent classes plus `rules.ext6`'s IPv6 ones.
"""

from __future__ import annotations

from natbox.rules import ext6, matches, targets
from natbox.rules.model import NFPROTO_IPV6, Match, Target

__all__ = ["MATCHES", "MATCHES6", "TARGETS", "TARGETS6", "find_match", "find_target"]

MATCHES: dict[str, type[Match]] = {n: cls for cls in matches.ALL for n in (cls.name, *cls.aliases)}
TARGETS: dict[str, type[Target]] = {n: cls for cls in targets.ALL for n in (cls.name, *cls.aliases)}
MATCHES6: dict[str, type[Match]] = {
    **{n: cls for n, cls in MATCHES.items() if cls.name not in ext6.IPV4_ONLY_MATCHES},
    **{n: cls for cls in ext6.MATCHES6_ALL for n in (cls.name, *cls.aliases)}}
TARGETS6: dict[str, type[Target]] = {
    **{n: cls for n, cls in TARGETS.items() if cls.name not in ext6.IPV4_ONLY_TARGETS},
    **{n: cls for cls in ext6.TARGETS6_ALL for n in (cls.name, *cls.aliases)}}


def find_match(name: str, family: int = 2) -> type[Match] | None:
    """The class of `-m NAME`, or None when no extension of that name exists (`xtables_find_match`)."""
    return (MATCHES6 if family == NFPROTO_IPV6 else MATCHES).get(name)


def find_target(name: str, family: int = 2) -> type[Target] | None:
    """The class of `-j NAME`, or None: then NAME may be a chain (`xtables_find_target`)."""
    return (TARGETS6 if family == NFPROTO_IPV6 else TARGETS).get(name)
