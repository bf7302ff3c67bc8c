"""`-p ipv6-icmp [-m icmp6] --icmpv6-type T[/code]` (libip6t_icmp6.c, ip6_tables.c `icmp6_match`).

The type and code are read the way ip6tables 1.8.9 reads them (recorded): a name or a unique prefix of one
(case-insensitive; two names with the prefix are "Ambiguous"), else `type[/code[:code]]` numbers in
strtoul's forms (base 0, leading blanks and `+`), `type:x` refused as a range, anything after the numbers
"unknown character". `--icmpv6-type` is mandatory and once only; the kernel refuses the match unless the
rule says `-p ipv6-icmp` (icmp6_checkentry, exit 4).
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb
from natbox.wire.layout import ICMP6H_CODE, ICMP6H_LEN, ICMP6H_TYPE

__all__ = ["ICMPV6_CODES", "Icmp6", "parse_icmpv6", "parse_type_code", "print_type_code_list", "strtoul_prefix"]

IPPROTO_ICMPV6: Final = 58

# `icmpv6_codes` of libxt_icmp.h (1.8.9): (name, type, code_min, code_max)
ICMPV6_CODES: tuple[tuple[str, int, int, int], ...] = (
    ("destination-unreachable", 1, 0, 0xFF), ("no-route", 1, 0, 0), ("communication-prohibited", 1, 1, 1),
    ("beyond-scope", 1, 2, 2), ("address-unreachable", 1, 3, 3), ("port-unreachable", 1, 4, 4),
    ("failed-policy", 1, 5, 5), ("reject-route", 1, 6, 6), ("packet-too-big", 2, 0, 0xFF),
    ("time-exceeded", 3, 0, 0xFF), ("ttl-exceeded", 3, 0, 0xFF), ("ttl-zero-during-transit", 3, 0, 0),
    ("ttl-zero-during-reassembly", 3, 1, 1), ("parameter-problem", 4, 0, 0xFF), ("bad-header", 4, 0, 0),
    ("unknown-header-type", 4, 1, 1), ("unknown-option", 4, 2, 2), ("echo-request", 128, 0, 0xFF),
    ("ping", 128, 0, 0xFF), ("echo-reply", 129, 0, 0xFF), ("pong", 129, 0, 0xFF),
    ("mld-listener-query", 130, 0, 0xFF), ("mld-listener-report", 131, 0, 0xFF),
    ("mld-listener-done", 132, 0, 0xFF), ("mld-listener-reduction", 132, 0, 0xFF),
    ("router-solicitation", 133, 0, 0xFF), ("router-advertisement", 134, 0, 0xFF),
    ("neighbour-solicitation", 135, 0, 0xFF), ("neighbor-solicitation", 135, 0, 0xFF),
    ("neighbour-advertisement", 136, 0, 0xFF), ("neighbor-advertisement", 136, 0, 0xFF),
    ("redirect", 137, 0, 0xFF),
)


def strtoul_prefix(text: str, pos: int) -> tuple[int | None, int]:
    """C `strtoul(text + pos, &end, 0)`: leading blanks, a sign, 0x/0 prefixes; (value or None, end index).
    A `-` makes the value wrap as strtoul does (here: None, out of any range)."""
    i = pos
    while i < len(text) and text[i] in " \t\n\r\f\v":
        i += 1
    neg = False
    if i < len(text) and text[i] in "+-":
        neg = text[i] == "-"
        i += 1
    base, digits = 10, "0123456789"
    if text[i:i + 2].lower() == "0x" and i + 2 < len(text) and text[i + 2] in "0123456789abcdefABCDEF":
        base, digits, i = 16, "0123456789abcdefABCDEF", i + 2
    elif text[i:i + 1] == "0":
        base, digits = 8, "01234567"
    start = i
    while i < len(text) and text[i] in digits:
        i += 1
    if i == start:
        return None, pos
    value = int(text[start:i], base)
    return (None if neg and value else value), i


def parse_icmpv6(text: str) -> tuple[int, int, int]:
    """`parse_icmpv6` of ip6tables 1.8.9: (type, code_min, code_max)."""
    found: tuple[str, int, int, int] | None = None
    for entry in ICMPV6_CODES:
        if entry[0].lower().startswith(text.lower()):
            if found is not None:
                raise RulesError(f"Ambiguous ICMPv6 type `{text}': `{found[0]}' or `{entry[0]}'?")
            found = entry
    if found is not None:
        return found[1], found[2], found[3]
    return parse_type_code(text, "ICMPv6")


def parse_type_code(text: str, word: str) -> tuple[int, int, int]:
    """The numeric `type[/code[:code]]` of libxt_icmp.h 1.8.9 (iptables and ip6tables alike, `word` "ICMP" or
    "ICMPv6" naming it in the messages): strtoul forms, anything after a number is an "unknown character"."""
    t, end = strtoul_prefix(text, 0)
    if t is None or t > 0xFF:
        raise RulesError(f"Unknown {word} type `{text}'")
    if end < len(text) and text[end] == ":":
        raise RulesError(f"{word} type range not supported")
    if end == len(text):
        return t, 0, 0xFF
    if text[end] != "/":
        raise RulesError(f"unknown character {text[end]}")
    lo, end = strtoul_prefix(text, end + 1)
    if lo is None or lo > 0xFF:
        raise RulesError(f"Unknown {word} code `{text}'")
    hi: int | None = lo
    if end < len(text) and text[end] == ":":
        hi, end = strtoul_prefix(text, end + 1)
    if hi is None or hi > 0xFF:
        raise RulesError(f"Unknown {word} code `{text}'")
    if end < len(text):
        raise RulesError(f"unknown character {text[end]}")
    return t, lo, hi


def print_type_code_list(word: str, codes: tuple[tuple[str, int, int, int], ...], itype: int | None,
                         code: tuple[int, int], invert: bool, numeric: bool) -> str:
    """`print_icmptype` / `print_icmpv6type` (libxt_icmp.h's shared shape): the protocol word, then the name
    of the type/code range unless -n, else `type T` with `code C` or `codes LO-HI`."""
    lo, hi = code
    if not numeric:
        for name, t, clo, chi in codes:
            if (t, clo, chi) == (itype, lo, hi):
                return word + f" {'!' if invert else ''}{name}"
    out = word + (" !" if invert else "") + f"type {itype}"
    if lo == hi:
        out += f" code {lo}"
    elif lo != 0 or hi != 0xFF:
        out += f" codes {lo}-{hi}"
    return out


class Icmp6(Match):
    """`struct ip6t_icmp`: type, code range, invert."""

    name = "icmp6"
    aliases = ("icmpv6", "ipv6-icmp")  # xtables_find_match maps these names to icmp6
    options = (Opt("icmpv6-type", 1, True),)

    def __init__(self) -> None:
        self.type: int | None = None
        self.code = (0, 0xFF)
        self.invert = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "icmpv6-type":
            super().parse(opt, arg, inverted, rule)
        if self.type is not None:
            raise RulesError('icmp6: option "--icmpv6-type" can only be used once.\n')
        t, lo, hi = parse_icmpv6(arg or "")
        self.type, self.code, self.invert = t, (lo, hi), inverted

    def final_check(self, rule: Rule) -> None:
        if self.type is None:
            raise RulesError('icmp6: option "--icmpv6-type" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """ip6t_icmp6 is registered with `.proto = IPPROTO_ICMPV6`: xt_check_match refuses other rules."""
        if rule.proto != IPPROTO_ICMPV6 or rule.inv_proto:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        out = " !" if self.invert else ""
        out += f" --icmpv6-type {self.type}"
        if self.code != (0, 0xFF):
            out += f"/{self.code[0]}"
        return out

    def print_list(self, numeric: bool) -> str:
        return print_type_code_list(" ipv6-icmp", ICMPV6_CODES, self.type, self.code, self.invert, numeric)

    def compile(self) -> MatchFn:
        """`icmp6_match`: not a later fragment, a whole 8-byte ICMPv6 header at the transport offset (else the
        kernel's hotdrop, no match here), then `icmp6_type_code_match`."""
        itype, (clo, chi), inv = self.type, self.code, self.invert

        def icmp6_mt(skb: Skb, ctx: XtContext) -> bool:
            if skb.is_later_fragment:
                return False
            off = skb.ihl
            data = skb.data
            if len(data) < off + ICMP6H_LEN:
                return False
            hit = data[off + ICMP6H_TYPE] == itype and clo <= data[off + ICMP6H_CODE] <= chi
            return hit != inv

        return icmp6_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        off = skb.ihl
        if len(skb.data) < off + ICMP6H_LEN:
            return "no match (truncated)"
        return f"no match (type {skb.data[off + ICMP6H_TYPE]} code {skb.data[off + ICMP6H_CODE]})"
