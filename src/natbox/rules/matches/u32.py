"""`-m u32 [!] --u32 "TEST[&&TEST]..."` (libxt_u32.c, net/netfilter/xt_u32.c `u32_match_it`).

A test reads the 32-bit big-endian word at a location counted from the IP header, applies `&`, `<<`,
`>>` and `@` (move `at` forward by the value, then read at `at + number`) in order, and matches when the
value lies in one of its `,`-separated `min[:max]` ranges; every test must match, and `!` inverts the
whole. A read past the packet's end makes the match false (before the inversion). Shift counts of 32 or
more behave as on x86, where the kernel's `val <<= number` takes the count modulo 32.
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["U32"]

XT_U32_MAXSIZE: Final = 10
XT_U32_AND, XT_U32_LEFTSH, XT_U32_RIGHTSH, XT_U32_AT = 0, 1, 2, 3
_OP_TEXT: Final = {XT_U32_AND: "&", XT_U32_LEFTSH: "<<", XT_U32_RIGHTSH: ">>", XT_U32_AT: "@"}

Test = tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]  # ((op, number)...), ((min, max)...)


class _Reader:
    """`parse_number` and the cursor of `u32_parse` (positions in messages count from 0)."""

    def __init__(self, text: str) -> None:
        self.s, self.i = text, 0

    def skip(self) -> None:
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def peek(self, n: int = 1) -> str:
        return self.s[self.i:self.i + n]

    def number(self) -> int:
        """`strtoul(s, &end, 0)`: leading blanks, 0x hex, 0 octal, decimal."""
        self.skip()
        j = self.i
        s = self.s
        if s[j:j + 2].lower() == "0x" and j + 2 < len(s) and s[j + 2] in "0123456789abcdefABCDEF":
            k = j + 2
            while k < len(s) and s[k] in "0123456789abcdefABCDEF":
                k += 1
            val = int(s[j + 2:k], 16)
        elif s[j:j + 1] == "0":
            k = j + 1
            while k < len(s) and s[k] in "01234567":
                k += 1
            val = int(s[j:k], 8)
        else:
            k = j
            while k < len(s) and s[k].isdigit():
                k += 1
            if k == j:
                raise RulesError(f"u32: at char {self.i}: expected number")
            val = int(s[j:k])
        if val > 0xFFFFFFFF:
            raise RulesError(f"u32: at char {self.i}: number too big")
        self.i = k
        return val


def parse_u32(text: str) -> tuple[Test, ...]:
    """`u32_parse`."""
    r = _Reader(text)
    tests: list[Test] = []
    while True:
        if len(tests) > XT_U32_MAXSIZE:
            raise RulesError(f'u32: at char {r.i}: too many "&&"s')
        loc: list[tuple[int, int]] = [(XT_U32_AND, r.number())]
        while True:
            r.skip()
            c = r.peek()
            if c == "=":
                r.i += 1
                break
            if c == "&":
                op, width = XT_U32_AND, 1
            elif r.peek(2) == "<<":
                op, width = XT_U32_LEFTSH, 2
            elif r.peek(2) == ">>":
                op, width = XT_U32_RIGHTSH, 2
            elif c == "@":
                op, width = XT_U32_AT, 1
            else:
                raise RulesError(f'u32: at char {r.i}: expected "=", "&", "<<", ">>" or "@"')
            if len(loc) > XT_U32_MAXSIZE:
                raise RulesError(f"u32: at char {r.i}: too many operators")
            r.i += width
            loc.append((op, r.number()))
        vals: list[tuple[int, int]] = []
        while True:
            if len(vals) > XT_U32_MAXSIZE:
                raise RulesError(f"u32: at char {r.i}: too many \",\"s")
            lo = r.number()
            r.skip()
            hi = lo
            if r.peek() == ":":
                r.i += 1
                hi = r.number()
                r.skip()
            vals.append((lo, hi))
            if r.peek() == ",":
                r.i += 1
                continue
            break
        tests.append((tuple(loc), tuple(vals)))
        r.skip()
        if r.peek(2) == "&&":
            r.i += 2
            continue
        if r.i >= len(r.s):
            return tuple(tests)
        raise RulesError(f'u32: at char {r.i}: expected "&&" or end of string')


def u32_match_it(tests: tuple[Test, ...], data: bytearray) -> bool:
    """The kernel's `u32_match_it` on a linear packet."""
    length = len(data)
    for loc, vals in tests:
        at = 0
        pos = loc[0][1]
        if length < 4 or pos > length - 4:
            return False
        val = int.from_bytes(data[pos:pos + 4], "big")
        for op, number in loc[1:]:
            if op == XT_U32_AND:
                val &= number
            elif op == XT_U32_LEFTSH:
                val = (val << (number & 31)) & 0xFFFFFFFF
            elif op == XT_U32_RIGHTSH:
                val >>= number & 31
            else:
                if at + val > 0xFFFFFFFF:
                    return False
                at += val
                pos = number
                if at + 4 > 0xFFFFFFFF or length < at + 4 or pos > length - at - 4:
                    return False
                val = int.from_bytes(data[at + pos:at + pos + 4], "big")
        if not any(lo <= val <= hi for lo, hi in vals):
            return False
    return True


class U32(Match):
    name = "u32"
    options = (Opt("u32", 1, True),)

    def __init__(self) -> None:
        self.tests: tuple[Test, ...] = ()
        self.invert = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "u32":
            super().parse(opt, arg, inverted, rule)
        self.tests, self.invert = parse_u32(arg or ""), inverted

    def final_check(self, rule: Rule) -> None:
        if not self.tests:
            raise RulesError('u32: option "--u32" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if len(self.tests) > XT_U32_MAXSIZE or any(
                len(loc) > XT_U32_MAXSIZE or len(vals) > XT_U32_MAXSIZE for loc, vals in self.tests):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _dump(self) -> str:
        """`u32_dump`."""
        parts = []
        for loc, vals in self.tests:
            text = f"0x{loc[0][1]:x}" + "".join(f"{_OP_TEXT[op]}0x{n:x}" for op, n in loc[1:])
            text += "=" + ",".join(f"0x{lo:x}" if lo == hi else f"0x{lo:x}:0x{hi:x}" for lo, hi in vals)
            parts.append(text)
        return ' "' + "&&".join(parts) + '"'

    def save(self) -> str:
        return (" !" if self.invert else "") + " --u32" + self._dump()

    def print_list(self, numeric: bool) -> str:
        return " u32" + (" !" if self.invert else "") + self._dump()

    def compile(self) -> MatchFn:
        tests, inv = self.tests, self.invert

        def u32_mt(skb: Skb, ctx: XtContext) -> bool:
            return u32_match_it(tests, skb.data) != inv

        return u32_mt
