"""`-m iprange --src-range a-b --dst-range a-b` rev 1 (libxt_iprange.c, xt_iprange.c)."""

from __future__ import annotations

from natbox.rules.addr6 import format_addr6, parse_ipv6
from natbox.rules.api import XtContext
from natbox.rules.model import NFPROTO_IPV4, Match, MatchFn, Opt, Rule, RulesError, format_addr_mask, parse_ipv4
from natbox.skb import Skb

__all__ = ["Iprange"]


def _parse_range(text: str, family: int = NFPROTO_IPV4, opt: str = "") -> tuple[int, int]:
    lo_s, dash, hi_s = text.partition("-")
    if family != NFPROTO_IPV4:  # ip6tables' message (recorded)
        lo6, hi6 = parse_ipv6(lo_s), parse_ipv6(hi_s) if dash else parse_ipv6(lo_s)
        for value, part in ((lo6, lo_s), (hi6, hi_s)):
            if value is None:
                raise RulesError(f'iprange: Bad value for "--{opt}" option: "{part}"')
        assert lo6 is not None and hi6 is not None
        return lo6, hi6
    lo = parse_ipv4(lo_s)
    hi = parse_ipv4(hi_s) if dash else lo
    if lo is None:
        raise RulesError(f"iprange match: Bad IP address \"{lo_s}\"")
    if hi is None:
        raise RulesError(f"iprange match: Bad IP address \"{hi_s}\"")
    return lo, hi


def _text(r: tuple[int, int], family: int = NFPROTO_IPV4) -> str:
    if family != NFPROTO_IPV4:
        return format_addr6(r[0]) + "-" + format_addr6(r[1])
    return format_addr_mask(r[0], 0xFFFFFFFF, always_prefix=False) + "-" + format_addr_mask(
        r[1], 0xFFFFFFFF, always_prefix=False)


class Iprange(Match):
    name = "iprange"
    revision = 1
    options = (Opt("src-range", 1, True), Opt("dst-range", 1, True))

    def __init__(self) -> None:
        self.src: tuple[int, int] | None = None
        self.dst: tuple[int, int] | None = None
        self.inv_src = False
        self.inv_dst = False
        self.family = NFPROTO_IPV4

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        self.family = rule.family
        if opt == "src-range":
            self.src, self.inv_src = _parse_range(arg or "", rule.family, opt), inverted
        elif opt == "dst-range":
            self.dst, self.inv_dst = _parse_range(arg or "", rule.family, opt), inverted
        else:
            super().parse(opt, arg, inverted, rule)

    def final_check(self, rule: Rule) -> None:
        if self.src is None and self.dst is None:
            raise RulesError("iprange match: You must specify `--src-range' or `--dst-range'")

    def save(self) -> str:
        out = ""
        if self.src is not None:
            out += (" !" if self.inv_src else "") + " --src-range " + _text(self.src, self.family)
        if self.dst is not None:
            out += (" !" if self.inv_dst else "") + " --dst-range " + _text(self.dst, self.family)
        return out

    def print_list(self, numeric: bool) -> str:
        out = ""
        if self.src is not None:
            out += " source IP range" + (" !" if self.inv_src else "") + " " + _text(self.src, self.family)
        if self.dst is not None:
            out += " destination IP range" + (" !" if self.inv_dst else "") + " " + _text(self.dst, self.family)
        return out

    def compile(self) -> MatchFn:
        src, dst, inv_s, inv_d = self.src, self.dst, self.inv_src, self.inv_dst

        def iprange_mt(skb: Skb, ctx: XtContext) -> bool:
            if src is not None and (src[0] <= skb.saddr <= src[1]) == inv_s:
                return False
            return not (dst is not None and (dst[0] <= skb.daddr <= dst[1]) == inv_d)

        return iprange_mt
