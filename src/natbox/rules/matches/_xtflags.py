"""libxtables' per-option bookkeeping for x6 extensions (xtoptions.c): once-only options, `excl`, `also`, `XTOPT_MAND`.

An extension declares its `struct xt_option_entry` table as `XtOptSpec`s; `XtFlags.parse` is the check
`xtables_option_parse` makes before an option's value is parsed, and `XtFlags.fcheck` is
`xtables_options_fcheck` (run before the extension's own `x6_fcheck`), with iptables' exact messages.
"""

from __future__ import annotations

from typing import NamedTuple

from natbox.rules.model import RulesError

__all__ = ["XtFlags", "XtOptSpec"]


class XtOptSpec(NamedTuple):
    """One `struct xt_option_entry`: its name, id, and the ids it excludes / also requires (bit masks)."""

    name: str
    id: int
    excl: int = 0
    also: int = 0
    mand: bool = False
    multi: bool = False


class XtFlags:
    """`cb->xflags` of one extension instance, checked against its option table."""

    __slots__ = ("ext", "flags", "table")

    def __init__(self, ext: str, table: tuple[XtOptSpec, ...]) -> None:
        self.ext, self.table, self.flags = ext, table, 0

    def spec(self, name: str) -> XtOptSpec:
        for e in self.table:
            if e.name == name:
                return e
        raise RulesError(f'unknown option "--{name}"')

    def parse(self, name: str) -> XtOptSpec:
        """`xtables_option_parse`'s once-only check; marks the option seen and returns its entry."""
        e = self.spec(name)
        bit = 1 << e.id
        if (not e.multi or e.excl & bit) and self.flags & bit:
            raise RulesError(f'{self.ext}: option "--{e.name}" can only be used once.\n')
        self.flags |= bit
        return e

    def has(self, ident: int) -> bool:
        return bool(self.flags & (1 << ident))

    def fcheck(self) -> None:
        """`xtables_options_fcheck`: mandatory options, then `also` and `excl` per option, in table order."""
        for e in self.table:
            if e.mand and not self.has(e.id):
                raise RulesError(f'{self.ext}: option "--{e.name}" must be specified\n')
            if not self.has(e.id):
                continue
            for i in range(32):
                if i == e.id:
                    continue
                other = next((o for o in self.table if o.id == i), None)  # xtables_option_lookup
                if other is None:
                    continue
                of = 1 << i
                if e.also & of and not self.flags & of:
                    raise RulesError(f'{self.ext}: option "--{e.name}" also requires "--{other.name}".\n')
                if e.excl & of and self.flags & of:
                    raise RulesError(f'{self.ext}: option "--{e.name}" cannot be used together with '
                                     f'"--{other.name}".\n')
