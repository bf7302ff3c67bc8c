"""Small ip6tables matches, as ip6tables 1.8.9 parses and prints them and the kernel checks them: `-m hl`
(libip6t_hl.c, ip6t_hl.c), `-m ah` for IPv6 (libip6t_ah.c, ip6t_ah.c: SPI range, length, reserved), `-m mh`
(libip6t_mh.c, ip6t_mh.c: the Mobility Header type) and `-m eui64` (libip6t_eui64.c, ip6t_eui64.c).
"""

from __future__ import annotations

from typing import Final

from natbox.netfilter import Hook
from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.matches._xtopt import U32_MAX, parse_range, parse_value
from natbox.rules.matches.exthdr6 import print_ids
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError, hook_mask_of
from natbox.skb import Skb
from natbox.wire.ipv6 import NEXTHDR_AUTH, NEXTHDR_NONE, ipv6_find_hdr
from natbox.wire.layout import (
    AUTH_HDRLEN,
    AUTH_MIN_LEN,
    AUTH_RESERVED,
    AUTH_SPI,
    IP6H_HOP_LIMIT,
    IP6H_SADDR,
    IP6MH_MIN_LEN,
    IP6MH_PROTO,
    IP6MH_TYPE,
)

__all__ = ["Ah6", "Eui64", "Hl", "Mh"]

HL_EQ, HL_NE, HL_LT, HL_GT = 0, 1, 2, 3  # enum ip6t_hl mode
IPPROTO_MH: Final = 135


class Hl(Match):
    """`-m hl --hl-eq|--hl-lt|--hl-gt N` (`struct ip6t_hl_info`), one of the three."""

    name = "hl"
    options = (Opt("hl-eq", 1, True), Opt("hl-lt", 1), Opt("hl-gt", 1))

    def __init__(self) -> None:
        self.mode: int | None = None
        self.hop_limit = 0
        self.given: list[str] = []

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt not in ("hl-eq", "hl-lt", "hl-gt"):
            super().parse(opt, arg, inverted, rule)
        if opt in self.given:
            raise RulesError(f'hl: option "--{opt}" can only be used once.\n')
        self.given.append(opt)
        self.hop_limit = parse_value("hl", opt, arg or "", 255)
        self.mode = {"hl-eq": HL_NE if inverted else HL_EQ, "hl-lt": HL_LT, "hl-gt": HL_GT}[opt]

    def final_check(self, rule: Rule) -> None:
        """`xtables_options_fcheck`: the first given option of the table (hl-lt, hl-gt, hl-eq) against the
        first other given one by id (eq, lt, gt), all three mutually exclusive (recorded)."""
        if self.mode is None:
            raise RulesError("HL match: You must specify one of `--hl-eq', `--hl-lt', `--hl-gt'")
        if len(self.given) > 1:
            entry = next(o for o in ("hl-lt", "hl-gt", "hl-eq") if o in self.given)
            other = next(o for o in ("hl-eq", "hl-lt", "hl-gt") if o in self.given and o != entry)
            raise RulesError(f'hl: option "--{entry}" cannot be used together with "--{other}".\n')

    def save(self) -> str:
        return {HL_EQ: " --hl-eq", HL_NE: " ! --hl-eq", HL_LT: " --hl-lt", HL_GT: " --hl-gt"}[self.mode or 0] + \
            f" {self.hop_limit}"

    def print_list(self, numeric: bool) -> str:
        return " HL match HL " + {HL_EQ: "==", HL_NE: "!=", HL_LT: "<", HL_GT: ">"}[self.mode or 0] + \
            f" {self.hop_limit}"

    def compile(self) -> MatchFn:
        """`hl_mt6`: the hop limit compared with N."""
        mode, n = self.mode, self.hop_limit

        def hl_mt6(skb: Skb, ctx: XtContext) -> bool:
            hl = skb.data[IP6H_HOP_LIMIT]
            if mode == HL_EQ:
                return hl == n
            if mode == HL_NE:
                return hl != n
            return hl < n if mode == HL_LT else hl > n

        return hl_mt6

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return f"no match (hop limit {skb.data[IP6H_HOP_LIMIT]})"


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

    def compile(self) -> MatchFn:
        """`ah_mt6`: the AH header found by `ipv6_find_hdr`; SPI in range, length ((hdrlen + 2) * 4 bytes) when
        given, reserved field zero with --ahres."""
        (lo, hi), inv_spi, want_len, inv_len, res = self.spis, self.inv_spi, self.hdrlen, self.inv_len, self.hdrres

        def ah_mt6(skb: Skb, ctx: XtContext) -> bool:
            data = skb.data
            found = ipv6_find_hdr(data, NEXTHDR_AUTH)
            if found is None or found[0] + AUTH_MIN_LEN > len(data):
                return False
            p = found[0]
            spi = int.from_bytes(data[p + AUTH_SPI:p + AUTH_SPI + 4], "big")
            hdrlen = (data[p + AUTH_HDRLEN] + 2) << 2
            return ((lo <= spi <= hi) != inv_spi
                    and (not want_len or (want_len == hdrlen) != inv_len)
                    and not (res and data[p + AUTH_RESERVED:p + AUTH_SPI] != b"\0\0"))

        return ah_mt6

    def why(self, skb: Skb, ctx: XtContext) -> str:
        found = ipv6_find_hdr(skb.data, NEXTHDR_AUTH)
        if found is None or found[0] + AUTH_MIN_LEN > len(skb.data):
            return "no match (no AH header)"
        return f"no match (spi {int.from_bytes(skb.data[found[0] + AUTH_SPI:found[0] + AUTH_SPI + 4], 'big')})"


# `mh_names` of libip6t_mh.c: full names first, then their aliases
MH_NAMES: Final = (("binding-refresh-request", 0), ("brr", 0), ("home-test-init", 1), ("hoti", 1),
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

    def compile(self) -> MatchFn:
        """`mh_mt6`: not a later fragment, a Mobility Header whose payload proto is NONE (else the kernel's
        hotdrop, no match here), its type in range."""
        (lo, hi), inv = self.types, self.invert

        def mh_mt6(skb: Skb, ctx: XtContext) -> bool:
            if skb.is_later_fragment:
                return False
            off, data = skb.ihl, skb.data
            if len(data) < off + IP6MH_MIN_LEN or data[off + IP6MH_PROTO] != NEXTHDR_NONE:
                return False
            return (lo <= data[off + IP6MH_TYPE] <= hi) != inv

        return mh_mt6

    def why(self, skb: Skb, ctx: XtContext) -> str:
        off, data = skb.ihl, skb.data
        if len(data) < off + IP6MH_MIN_LEN:
            return "no match (truncated)"
        return f"no match (type {data[off + IP6MH_TYPE]})"


_EUI64_HOOKS: Final = hook_mask_of(Hook.PRE_ROUTING, Hook.LOCAL_IN, Hook.FORWARD)


class Eui64(Match):
    """`-m eui64`: the source address's interface id is the EUI-64 of the source MAC (ip6t_eui64.c); the
    kernel registers it for PREROUTING, INPUT and FORWARD only (a MAC header is needed)."""

    name = "eui64"

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if hook_mask & ~_EUI64_HOOKS:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def compile(self) -> MatchFn:
        """`eui64_mt6`: the source MAC with the U/L bit flipped and ff:fe in the middle is the interface id
        (the low 64 bits of the source address); no Ethernet header: no match."""

        def eui64_mt6(skb: Skb, ctx: XtContext) -> bool:
            mac = skb.src_mac
            if len(mac) != 6:
                return False
            eui = bytes((mac[0] ^ 0x02, mac[1], mac[2], 0xFF, 0xFE, mac[3], mac[4], mac[5]))
            return skb.data[IP6H_SADDR + 8:IP6H_SADDR + 16] == eui

        return eui64_mt6
