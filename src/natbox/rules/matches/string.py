"""`-m string --algo bm|kmp [!] --string S | --hex-string H [--from N] [--to N] [--icase]` rev 1
(libxt_string.c, net/netfilter/xt_string.c `string_mt`, lib/ts_bm.c, lib/ts_kmp.c).

`string_mt` answers `skb_find_text(skb, from, to, config) != UINT_MAX`, inverted by `!`: the pattern must
lie wholly inside bytes [from, to) of the packet counted from the IP header (`skb->data` at the IPv4
hooks), clipped to its length. natbox's packet is one linear buffer, so Boyer-Moore and KMP find the
same occurrence (the kernel's bm can miss a match spanning two fragments of a non-linear skb; natbox's
never are). `--icase` compares through the kernel's `toupper` (lib/ctype.c: Latin-1 letters included).
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._xtopt import U16_MAX, parse_value
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["String", "kernel_toupper_table"]

XT_STRING_MAX_PATTERN_SIZE: Final = 128
XT_STRING_MAX_ALGO_NAME_SIZE: Final = 16
TEXTSEARCH_ALGOS: Final = ("bm", "kmp")  # lib/ts_*.c that take a byte pattern


def kernel_toupper_table() -> bytes:
    """`__toupper` over 0-255 (lib/ctype.c: a-z, 0xDF-0xF6 and 0xF8-0xFF are lower case)."""
    out = bytearray(range(256))
    for c in range(256):
        if 0x61 <= c <= 0x7A or 0xDF <= c <= 0xF6 or 0xF8 <= c <= 0xFF:
            out[c] = c - 0x20
    return bytes(out)


_TOUPPER: Final = kernel_toupper_table()


def parse_hex_string(s: str) -> bytes:
    """`parse_hex_string`: text with `|hex hex|` blocks and `\\` escapes."""
    if not s:
        raise RulesError("STRING must contain at least one char")
    out = bytearray()
    i, slen, hex_f, literal_f = 0, len(s), False, False
    while i < slen:
        if s[i] == "\\" and not hex_f:
            literal_f = True
        elif s[i] == "\\":
            raise RulesError("Cannot include literals in hex data")
        elif s[i] == "|":
            if hex_f:
                hex_f = False
            else:
                hex_f = True
                while i + 1 < slen and s[i + 1] == " ":
                    i += 1
            if i + 1 >= slen:
                break
            i += 1
        if literal_f:
            if i + 1 >= slen:
                raise RulesError("Bad literal placement at end of string")
            out += s[i + 1].encode("latin-1", "replace")
            i += 2
            literal_f = False
        elif hex_f:
            if i + 1 >= slen:
                raise RulesError("Odd number of hex digits")
            if i + 2 >= slen:
                raise RulesError("Invalid hex block")
            for ch in s[i:i + 2]:
                if ch not in "0123456789abcdefABCDEF":
                    raise RulesError(f"Invalid hex char '{ch}'")
            out.append(int(s[i:i + 2], 16))
            i += 3 if s[i + 2] == " " else 2
        else:
            out += s[i].encode("latin-1", "replace")
            i += 1
        if len(out) > XT_STRING_MAX_PATTERN_SIZE + 1:
            raise RulesError(f'STRING too long "{s}"')
    return bytes(out)


def _is_hex_string(pattern: bytes) -> bool:
    """`is_hex_string`: any byte that is not printable ASCII."""
    return any(not 0x20 <= b <= 0x7E for b in pattern)


def _quoted(pattern: bytes) -> str:
    if _is_hex_string(pattern):
        return ' "|' + pattern.hex() + '|"'
    text = pattern.decode("ascii")
    return ' "' + "".join("\\" + c if c in '"\\' else c for c in text) + '"'


class String(Match):
    name = "string"
    revision = 1
    options = (Opt("from", 1), Opt("to", 1), Opt("algo", 1), Opt("string", 1, True), Opt("hex-string", 1, True),
               Opt("icase", 0))

    def __init__(self) -> None:
        self.pattern: bytes | None = None
        self.algo = ""
        self.from_offset = 0
        self.to_offset = U16_MAX
        self.invert = False
        self.icase = False
        self.seen: list[str] = []

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if opt in self.seen and opt != "icase":
            raise RulesError(f'string: option "--{opt}" can only be used once.\n')
        other = {"string": "hex-string", "hex-string": "string"}.get(opt)
        if other in self.seen:
            raise RulesError(f'string: option "--{opt}" cannot be used together with "--{other}".\n')
        if opt == "from":
            self.from_offset = parse_value("string", opt, a, U16_MAX)
        elif opt == "to":
            self.to_offset = parse_value("string", opt, a, U16_MAX)
        elif opt == "algo":
            if len(a) >= XT_STRING_MAX_ALGO_NAME_SIZE:
                raise RulesError(f'string: argument to "--algo" is too long ({len(a)} > '
                                 f'{XT_STRING_MAX_ALGO_NAME_SIZE - 1}).\n')
            self.algo = a
        elif opt == "string":
            if len(a.encode()) > XT_STRING_MAX_PATTERN_SIZE:
                raise RulesError(f'STRING too long "{a}"')
            self.pattern, self.invert = a.encode(), inverted
        elif opt == "hex-string":
            self.pattern, self.invert = parse_hex_string(a), inverted
        elif opt == "icase":
            self.icase = True
        else:
            super().parse(opt, arg, inverted, rule)
        self.seen.append(opt)

    def final_check(self, rule: Rule) -> None:
        if self.pattern is None:
            raise RulesError("STRING match: You must specify `--string' or `--hex-string'")
        if "algo" not in self.seen:
            raise RulesError('string: option "--algo" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`string_mt_check`: from <= to, a pattern that fits, a textsearch algorithm the kernel has."""
        pattern = self.pattern or b""
        if (self.from_offset > self.to_offset or len(pattern) > XT_STRING_MAX_PATTERN_SIZE
                or self.algo not in TEXTSEARCH_ALGOS):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        pattern = self.pattern or b""
        out = (" !" if self.invert else "") + (" --hex-string" if _is_hex_string(pattern) else " --string")
        out += _quoted(pattern) + f" --algo {self.algo}"
        if self.from_offset:
            out += f" --from {self.from_offset}"
        if self.to_offset != U16_MAX:
            out += f" --to {self.to_offset}"
        return out + (" --icase" if self.icase else "")

    def print_list(self, numeric: bool) -> str:
        out = " STRING match " + ("!" if self.invert else "") + _quoted(self.pattern or b"")
        out += f" ALGO name {self.algo}"
        if self.from_offset:
            out += f" FROM {self.from_offset}"
        if self.to_offset != U16_MAX:
            out += f" TO {self.to_offset}"
        return out + (" ICASE" if self.icase else "")

    def compile(self) -> MatchFn:
        pattern, lo, hi, inv = self.pattern or b"", self.from_offset, self.to_offset, self.invert
        if self.icase:
            pattern = pattern.translate(_TOUPPER)
        icase = self.icase

        def string_mt(skb: Skb, ctx: XtContext) -> bool:
            window = bytes(skb.data[lo:hi])
            if icase:
                window = window.translate(_TOUPPER)
            return (pattern in window) != inv

        return string_mt
