"""ip6tables targets, as ip6tables 1.8.9 parses and prints them and the kernel checks them: `-j HL`
(libip6t_HL.c, xt_HL.c `hl_tg6`), `-j REJECT` for IPv6 (libip6t_REJECT.c, ip6t_REJECT.c), `-j REDIRECT` and
`-j NETMAP` for IPv6 (nf_nat_redirect.c `nf_nat_redirect_ipv6`, xt_NETMAP.c `netmap_tg6`), `-j SNPT` / `-j DNPT`
(libip6t_SNPT.c, libip6t_DNPT.c, ip6t_NPT.c). SNAT, DNAT and MASQUERADE are the family-independent classes of
natbox.rules.targets.nat and .masquerade (their ranges hold 128-bit addresses for ip6tables rules).
"""

from __future__ import annotations

from typing import ClassVar, Final

from natbox.nat.npt import npt_adjustment, npt_map, npt_map_bounced
from natbox.netfilter import Hook
from natbox.rules.addr6 import (
    ALL_ONES6,
    format_addr6,
    format_addr6_mask,
    mask6_to_prefix,
    parse_hostmask6,
    parse_ipv6_mask,
)
from natbox.rules.api import NF_DROP, XT_CONTINUE, XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import (
    RESOURCE_PROBLEM,
    Opt,
    Rule,
    RulesError,
    Target,
    TargetFn,
    hook_mask_of,
)
from natbox.rules.targets.netmap import Netmap
from natbox.rules.targets.redirect import Redirect
from natbox.rules.targets.reject import Reject
from natbox.skb import Skb
from natbox.wire.layout import IP6H_DADDR, IP6H_HOP_LIMIT, IP6H_SADDR

__all__ = ["REJECT6_TYPES", "Dnpt", "HlTarget", "Netmap6", "Redirect6", "Reject6", "Snpt"]

HL_SET, HL_INC, HL_DEC = 0, 1, 2  # enum ip6t_HL mode
_HL_NAMES: Final = {HL_SET: ("hl-set", "set to"), HL_DEC: ("hl-dec", "decrement by"), HL_INC: ("hl-inc",
    "increment by")}
_HL_ORDER: Final = ("hl-set", "hl-dec", "hl-inc")  # HL_opts order, for the "cannot be used together" message


class HlTarget(Target):
    """`-j HL --hl-set|--hl-dec|--hl-inc N` (`struct ip6t_HL_info`): mangle table only."""

    name = "HL"
    options = (Opt("hl-set", 1), Opt("hl-dec", 1), Opt("hl-inc", 1))

    def __init__(self) -> None:
        self.mode: int | None = None
        self.hop_limit = 0

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        mode = {"hl-set": HL_SET, "hl-dec": HL_DEC, "hl-inc": HL_INC}.get(opt)
        if mode is None:
            super().parse(opt, arg, inverted, rule)
            return
        if self.mode is not None:
            a, b = sorted((_HL_ORDER.index(_HL_NAMES[self.mode][0]), _HL_ORDER.index(opt)))
            raise RulesError(f'HL: option "--{_HL_ORDER[a]}" cannot be used together with "--{_HL_ORDER[b]}".\n')
        lo = 0 if mode == HL_SET else 1
        v = parse_uint(arg or "", lo, 255)
        if v is None:
            raise RulesError(f'HL: bad value for option "--{opt}", or out of range ({lo}-255).\n')
        self.mode, self.hop_limit = mode, v

    def final_check(self, rule: Rule) -> None:
        if self.mode is None:
            raise RulesError("HL: You must specify an action")

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if table != "mangle":
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        return f" --{_HL_NAMES[self.mode or 0][0]} {self.hop_limit}"

    def print_list(self, numeric: bool) -> str:
        return f" HL {_HL_NAMES[self.mode or 0][1]} {self.hop_limit}"

    def compile(self) -> TargetFn:
        """`hl_tg6`: the hop limit set, or moved by N saturating at 0 and 255 (no header checksum in IPv6)."""
        mode, n = self.mode, self.hop_limit

        def hl_tg6(skb: Skb, ctx: XtContext) -> int:
            data = skb.data
            old = data[IP6H_HOP_LIMIT]
            data[IP6H_HOP_LIMIT] = n if mode == HL_SET else (min(old + n, 255) if mode == HL_INC else max(old - n, 0))
            return XT_CONTINUE

        return hl_tg6


# reject_table of libip6t_REJECT.c in `enum ip6t_reject_with` order (the unused slots left out)
REJECT6_TYPES: tuple[tuple[str, str], ...] = (
    ("icmp6-no-route", "no-route"), ("icmp6-adm-prohibited", "adm-prohibited"),
    ("icmp6-addr-unreachable", "addr-unreach"), ("icmp6-port-unreachable", "port-unreach"),
    ("tcp-reset", "tcp-reset"), ("icmp6-policy-fail", "policy-fail"), ("icmp6-reject-route", "reject-route"),
)


class Reject6(Reject):
    """`-j REJECT [--reject-with TYPE]` for IPv6: Reject with IPv6's table, where the first type whose name or
    alias starts with the text (case-insensitive) is taken; the kernel checks as for IPv4 (tcp-reset needs
    `-p tcp`)."""

    types: ClassVar[tuple[tuple[str, str], ...]] = REJECT6_TYPES
    default = "icmp6-port-unreachable"

    @classmethod
    def find_type(cls, text: str) -> str | None:
        """libip6t_REJECT.c: `strncasecmp` of the text against each name and alias, in table order."""
        a = text.lower()
        return next((name for name, alias in cls.types if name.startswith(a) or alias.startswith(a)), None)


LOOPBACK6: Final = 1  # ::1


class Redirect6(Redirect):
    """`nf_nat_redirect_ipv6`: to ::1 from OUTPUT, else to the incoming interface's address (the engine's
    choice, `iface_primary_addr`); no address: drop. Redirect's evaluator with ::1 for 127.0.0.1."""

    loopback = LOOPBACK6


class Netmap6(Netmap):
    """`-j NETMAP --to ADDR[/LEN|/MASK]` for IPv6 (`netmap_tg6`): Netmap's with 128-bit addresses."""

    all_ones = ALL_ONES6

    @staticmethod
    def parse_mask(text: str) -> tuple[int, int]:
        return parse_ipv6_mask(text)

    @staticmethod
    def format_mask(addr: int, mask: int) -> str:
        return format_addr6_mask(addr, mask)


class Snpt(Target):
    """`-j SNPT --src-pfx P/L --dst-pfx P/L` (`struct ip6t_npt_tginfo`): mangle, INPUT and POSTROUTING."""

    name = "SNPT"
    options = (Opt("src-pfx", 1), Opt("dst-pfx", 1))
    valid_hooks = hook_mask_of(Hook.LOCAL_IN, Hook.POST_ROUTING)
    field = IP6H_SADDR  # the address rewritten
    failure = "npt-paramprob-saddr"  # what a map failure sends

    def __init__(self) -> None:
        self.pfx: dict[str, tuple[int, int]] = {}  # option -> (prefix as given, mask)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt not in ("src-pfx", "dst-pfx"):
            super().parse(opt, arg, inverted, rule)
        self.pfx[opt] = parse_hostmask6(arg or "", self.name, opt)

    def final_check(self, rule: Rule) -> None:
        for opt in ("src-pfx", "dst-pfx"):
            if opt not in self.pfx:
                raise RulesError(f'{self.name}: option "--{opt}" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`ip6t_npt_checkentry`: prefixes of at most 64 bits with no bit set past their length."""
        if table != "mangle" or hook_mask & ~self.valid_hooks:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)
        for addr, mask in self.pfx.values():
            if mask6_to_prefix(mask) > 64 or addr & ~mask:
                raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _text(self, opt: str) -> str:
        addr, mask = self.pfx.get(opt, (0, 0))
        return f"{format_addr6(addr)}/{mask6_to_prefix(mask)}"

    def save(self) -> str:
        return f" --src-pfx {self._text('src-pfx')} --dst-pfx {self._text('dst-pfx')}"

    def print_list(self, numeric: bool) -> str:
        return f" {self.name} src-pfx {self._text('src-pfx')} dst-pfx {self._text('dst-pfx')}"

    def compile(self) -> TargetFn:
        """`ip6t_snpt_tg` / `ip6t_dnpt_tg` (ipv6-semantics.md §3.7): the address mapped by `npt_map` with the
        adjustment checkentry computed; a map failure sends Parameter Problem (through the context) and
        drops; otherwise the next rule runs."""
        src, smask = self.pfx.get("src-pfx", (0, 0))
        dst, dmask = self.pfx.get("dst-pfx", (0, 0))
        adjustment = npt_adjustment(src, dst)
        src_len = mask6_to_prefix(smask)
        pfx_len = max(src_len, mask6_to_prefix(dmask))
        lo, hi, failure = self.field, self.field + 16, self.failure
        snpt = self.field == IP6H_SADDR

        def npt_tg(skb: Skb, ctx: XtContext) -> int:
            data = skb.data
            new = npt_map(int.from_bytes(data[lo:hi], "big"), adjustment, dst, pfx_len)
            if new is None:
                ctx.send_reject(skb, failure)
                return NF_DROP
            data[lo:hi] = new.to_bytes(16, "big")
            # the packet an ICMPv6 error quotes: its daddr (SNPT) or saddr (DNPT) when in the source prefix
            npt_map_bounced(data, adjustment, src, src_len, dst, pfx_len, snpt=snpt)
            return XT_CONTINUE

        return npt_tg


class Dnpt(Snpt):
    """`-j DNPT --src-pfx P/L --dst-pfx P/L`: mangle, PREROUTING and OUTPUT."""

    name = "DNPT"
    valid_hooks = hook_mask_of(Hook.PRE_ROUTING, Hook.LOCAL_OUT)
    field = IP6H_DADDR
    failure = "npt-paramprob-daddr"
