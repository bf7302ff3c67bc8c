"""Small ip6tables matches, as ip6tables 1.8.9 parses and prints them and the kernel checks them: `-m hl`
(libip6t_hl.c, ip6t_hl.c), `-m ah` for IPv6 (libip6t_ah.c, ip6t_ah.c: SPI range, length, reserved), `-m mh`
(libip6t_mh.c, ip6t_mh.c: the Mobility Header type) and `-m eui64` (libip6t_eui64.c, ip6t_eui64.c).
"""

from __future__ import annotations

from natbox.netfilter import Hook
from natbox.rules.matches._common import parse_uint
from natbox.rules.matches._xtopt import U32_MAX, parse_range, parse_value
from natbox.rules.matches.exthdr6 import print_ids
from natbox.rules.model import RESOURCE_PROBLEM, Match, Opt, Rule, RulesError, hook_mask_of

__all__ = ["Ah6", "Eui64", "Hl", "Mh"]

HL_EQ, HL_NE, HL_LT, HL_GT = 0, 1, 2, 3  # enum ip6t_hl mode
IPPROTO_MH = 135


class Hl(Match):
    """`-m hl --hl-eq|--hl-lt|--hl-gt N` (`struct ip6t_hl_info`), one of the three."""

    name = "hl"
    options = (Opt("hl-eq", 1, True), Opt("hl-lt", 1), Opt("hl-gt", 1))

    def __init__(self) -> None:
        self.mode: int | None = None
        self.hop_limit = 0

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt not in ("hl-eq", "hl-lt", "hl-gt"):
            super().parse(opt, arg, inverted, rule)
        if self.mode is not None:
            raise RulesError("hl: Only one of --hl-eq, --hl-lt, --hl-gt is allowed\n")
        self.hop_limit = parse_value("hl", opt, arg or "", 255)
        self.mode = {"hl-eq": HL_NE if inverted else HL_EQ, "hl-lt": HL_LT, "hl-gt": HL_GT}[opt]

    def final_check(self, rule: Rule) -> None:
        if self.mode is None:
            raise RulesError("hl match: You must specify one of `--hl-eq', `--hl-lt', `--hl-gt'")

    def save(self) -> str:
        return {HL_EQ: " --hl-eq", HL_NE: " ! --hl-eq", HL_LT: " --hl-lt", HL_GT: " --hl-gt"}[self.mode or 0] + \
            f" {self.hop_limit}"

    def print_list(self, numeric: bool) -> str:
        return " HL match HL " + {HL_EQ: "==", HL_NE: "!=", HL_LT: "<", HL_GT: ">"}[self.mode or 0] + \
            f" {self.hop_limit}"


class Ah6(Match):
    """`-m ah [!] --ahspi A[:B] [!] --ahlen N --ahres` for IPv6 (`struct ip6t_ah`)."""

    name = "ah"
    options = (Opt("ahspi", 1, True), Opt("ahlen", 1, True), Opt("ahres", 0))

    def __init__(self) -> None:
        self.spis = (0, U32_MAX)
        self.inv_spi = False
        self.hdrlen = 0
        self.inv_len = False
        self.hdrres = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt == "ahspi":
            self.spis, self.inv_spi = parse_range("ah", opt, arg or "", U32_MAX), inverted
        elif opt == "ahlen":
            self.hdrlen, self.inv_len = parse_value("ah", opt, arg or "", U32_MAX), inverted
        elif opt == "ahres":
            self.hdrres = True
        else:
            super().parse(opt, arg, inverted, rule)

    def save(self) -> str:
        out = ""
        lo, hi = self.spis
        if (lo, hi) != (0, U32_MAX):
            out += (" !" if self.inv_spi else "") + " --ahspi " + (f"{lo}" if lo == hi else f"{lo}:{hi}")
        if self.hdrlen or self.inv_len:
            out += (" !" if self.inv_len else "") + f" --ahlen {self.hdrlen}"
        return out + (" --ahres" if self.hdrres else "")

    def print_list(self, numeric: bool) -> str:
        out = " ah " + print_ids("spi", *self.spis, self.inv_spi)
        if self.hdrlen or self.inv_len:
            out += f"length:{'!' if self.inv_len else ''}{self.hdrlen}"
        return out + (" reserved" if self.hdrres else "")


# `mh_names` of libip6t_mh.c: full names first, then their aliases
MH_NAMES = (("binding-refresh-request", 0), ("brr", 0), ("home-test-init", 1), ("hoti", 1),
            ("careof-test-init", 2), ("coti", 2), ("home-test", 3), ("hot", 3), ("careof-test", 4), ("cot", 4),
            ("binding-update", 5), ("bu", 5), ("binding-acknowledgement", 6), ("ba", 6), ("binding-error", 7),
            ("be", 7))


def _mh_type(text: str) -> int:
    """`name_to_type`: the first name the text is a prefix of, or one it equals; else a number 0-255."""
    match: int | None = None
    for name, t in MH_NAMES:
        if name.lower().startswith(text.lower()) and (match is None or len(name) == len(text)):
            match = t
    if match is not None:
        return match
    v = parse_uint(text, 0, 255)
    if v is None:
        raise RulesError(f"Invalid MH type `{text}'\n")
    return v


def _mh_name(t: int, numeric: bool) -> str:
    if not numeric:
        for name, nt in MH_NAMES:
            if nt == t:
                return name
    return f"{t}"


class Mh(Match):
    """`-p mh -m mh [!] --mh-type T[:T]` (`struct ip6t_mh`); the kernel needs `-p mh` (`.proto`)."""

    name = "mh"
    aliases = ("ipv6-mh", "mobility-header")  # xtables_find_match maps these names to mh
    options = (Opt("mh-type", 1, True),)

    def __init__(self) -> None:
        self.types = (0, 0xFF)
        self.invert = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "mh-type":
            super().parse(opt, arg, inverted, rule)
        a = arg or ""
        lo_s, colon, hi_s = a.partition(":")
        if not colon:
            lo = hi = _mh_type(a)
        else:
            lo = _mh_type(lo_s) if lo_s else 0
            hi = _mh_type(hi_s) if hi_s else 0xFF
        self.types, self.invert = (lo, hi), inverted

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if rule.proto != IPPROTO_MH or rule.inv_proto:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        lo, hi = self.types
        if (lo, hi) == (0, 0xFF):
            return ""
        return (" !" if self.invert else "") + " --mh-type " + (f"{lo}" if lo == hi else f"{lo}:{hi}")

    def print_list(self, numeric: bool) -> str:
        lo, hi = self.types
        out = " mh"
        if lo != 0 or hi != 0xFF or self.invert:
            out += " " + ("!" if self.invert else "") + _mh_name(lo, numeric)
            if lo != hi:
                out += ":" + _mh_name(hi, numeric)
        return out


_EUI64_HOOKS = hook_mask_of(Hook.PRE_ROUTING, Hook.LOCAL_IN, Hook.FORWARD)


class Eui64(Match):
    """`-m eui64`: the source address's interface id is the EUI-64 of the source MAC (ip6t_eui64.c); the
    kernel registers it for PREROUTING, INPUT and FORWARD only (a MAC header is needed)."""

    name = "eui64"

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if hook_mask & ~_EUI64_HOOKS:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)
