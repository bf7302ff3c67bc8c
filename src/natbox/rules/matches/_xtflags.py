"""libxtables' per-option bookkeeping for x6 extensions (xtoptions.c): once-only options, `excl`, `also`, `XTOPT_MAND`.

An extension declares its `struct xt_option_entry` table as `XtOptSpec`s; `XtFlags.parse` is the check
`xtables_option_parse` makes before an option's value is parsed, and `XtFlags.fcheck` is
`xtables_options_fcheck` (run before the extension's own `x6_fcheck`), with iptables' exact messages.
"""

from __future__ import annotations

from typing import NamedTuple

from natbox.rules.matches._common import parse_uint
from natbox.rules.model import RulesError

__all__ = ["XtFlags", "XtOptSpec", "parse_plen", "parse_plen6", "plen_mask", "plen_mask6"]


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

    def __eq__(self, other: object) -> bool:
        return isinstance(other, XtFlags) and (self.ext, self.flags, self.table) == (other.ext, other.flags,
                                                                                     other.table)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __deepcopy__(self, memo: dict[int, object]) -> XtFlags:
        """A copy for a cloned rule (the option table is immutable and shared). Spelled out: copy.deepcopy's
        generic reconstruction calls `__init__` without arguments on a compiled (mypyc) class."""
        c = XtFlags(self.ext, self.table)
        c.flags = self.flags
        return c

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


def parse_plen(ext: str, opt: str, text: str) -> int:
    """`xtopt_parse_plen` (iptables 1.8.9, IPv4): a prefix length 0-32, or a dotted mask (inet_aton forms) whose
    prefix length it is; a mask that is no prefix (or a number above 32, read as an address) gives 255."""
    v = parse_uint(text, 0, 32)
    if v is not None and text.isdigit():
        return v
    parts = text.split(".")
    if 1 <= len(parts) <= 4 and all(p.isdigit() for p in parts):
        nums = [int(p) for p in parts]
        limits = [0xFFFFFFFF, 0xFFFFFF, 0xFFFF, 0xFF][len(parts) - 1]
        if all(n <= 255 for n in nums[:-1]) and nums[-1] <= limits:
            addr = nums[-1]
            for i, n in enumerate(nums[:-1]):
                addr |= n << (24 - 8 * i)
            inv = ~addr & 0xFFFFFFFF
            if inv & (inv + 1) == 0:  # contiguous
                return 32 - inv.bit_length()
            return 255
    raise RulesError(f'{ext}: bad value for option "--{opt}", neither a valid network mask nor valid CIDR '
                     f'(0-32).\n')


def plen_mask(hlen: int) -> int:
    """`xtopt_parse_plenmask` (1.8.9): the IPv4 mask of a prefix length; 255 (no prefix) leaves all ones."""
    if hlen == 0:
        return 0
    if hlen <= 32:
        return (0xFFFFFFFF << (32 - hlen)) & 0xFFFFFFFF
    return 0xFFFFFFFF


def parse_plen6(ext: str, opt: str, text: str) -> int:
    """`xtopt_parse_plen` in ip6tables: a prefix length 0-128, or an IPv6 mask whose prefix length it is (255
    when it is no prefix)."""
    v = parse_uint(text, 0, 128)
    if v is not None and text.isdigit():
        return v
    try:
        from natbox.wire.ipv6 import parse_addr6

        mask = parse_addr6(text)
    except ValueError:
        raise RulesError(f'{ext}: bad value for option "--{opt}", neither a valid network mask nor valid CIDR '
                         f'(0-128).\n') from None
    inv = ~mask & ((1 << 128) - 1)
    return 128 - inv.bit_length() if inv & (inv + 1) == 0 else 255


def plen_mask6(hlen: int) -> int:
    """The IPv6 mask of a prefix length (255: all ones)."""
    if hlen > 128:
        return (1 << 128) - 1
    return ((1 << 128) - 1) ^ ((1 << (128 - hlen)) - 1)
