"""libxtables' option parsers shared by several extensions (xtoptions.c `xtopt_parse_mint`, `xtables_strtoui`)."""

from __future__ import annotations

from typing import Final

from natbox.rules.matches._common import parse_uint
from natbox.rules.model import RulesError

__all__ = ["U8_MAX", "U16_MAX", "U32_MAX", "parse_range", "parse_value", "print_range"]

U8_MAX: Final = 0xFF
U16_MAX: Final = 0xFFFF
U32_MAX: Final = 0xFFFFFFFF


def parse_value(ext: str, opt: str, text: str, hi: int, lo: int = 0) -> int:
    """`xtopt_parse_int` (XTTYPE_UINT*): one number in [lo, hi], or iptables' bad-value message."""
    v = parse_uint(text, lo, hi)
    if v is None:
        raise RulesError(f'{ext}: bad value for option "--{opt}", or out of range ({lo}-{hi}).\n')
    return v


def parse_range(ext: str, opt: str, text: str, hi: int) -> tuple[int, int]:
    """`xtopt_parse_mint` for XTTYPE_UINT*RC: `a`, `a:b`, `:b` (0:b), `a:` (a:max); one value gives a:a."""
    vals: list[int] = []
    parts = text.split(":")
    if len(parts) > 2:
        raise RulesError(f'{ext}: Too many components for option "--{opt}" (max: 2)\n')
    for i, part in enumerate(parts):
        if part == "":
            vals.append(hi if i == 1 else 0)
            continue
        v = parse_uint(part, 0, hi)
        if v is None:
            near = ":".join(parts[i:])
            raise RulesError(f'{ext}: bad value for option "--{opt}" near "{near}", or out of range (0-{hi}).\n')
        vals.append(v)
    if len(vals) == 1:
        vals.append(vals[0])
    return vals[0], vals[1]


def print_range(lo: int, hi: int) -> str:
    """`a` when the range is one value, else `a:b`."""
    return f"{lo}" if lo == hi else f"{lo}:{hi}"
