"""`-m ttl --ttl-eq/--ttl-lt/--ttl-gt N` (libipt_ttl.c, ipt_ttl.c)."""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb
from natbox.wire.layout import IPH_TTL

__all__ = ["Ttl"]

EQ, NE, LT, GT = 0, 1, 2, 3


class Ttl(Match):
    name = "ttl"
    options = (Opt("ttl-eq", 1, True), Opt("ttl-lt", 1), Opt("ttl-gt", 1))

    def __init__(self) -> None:
        self.mode: int | None = None
        self.ttl = 0

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if self.mode is not None:
            raise RulesError("Can't specify TTL option twice")
        v = parse_uint(arg or "", 0, 255)
        if v is None:
            raise RulesError(f'ttl: bad value for option "--{opt}", or out of range (0-255).\n')
        if opt == "ttl-eq":
            self.mode = NE if inverted else EQ
        elif opt == "ttl-lt":
            self.mode = LT
        elif opt == "ttl-gt":
            self.mode = GT
        else:
            super().parse(opt, arg, inverted, rule)
        self.ttl = v

    def final_check(self, rule: Rule) -> None:
        if self.mode is None:
            raise RulesError("TTL match: You must specify one of `--ttl-eq', `--ttl-lt', `--ttl-gt")

    def save(self) -> str:
        return {EQ: " --ttl-eq", NE: " ! --ttl-eq", LT: " --ttl-lt", GT: " --ttl-gt"}[self.mode or 0] + f" {self.ttl}"

    def print_list(self, numeric: bool) -> str:
        return " TTL match " + {EQ: "TTL ==", NE: "TTL !=", LT: "TTL <", GT: "TTL >"}[self.mode or 0] + f" {self.ttl}"

    def compile(self) -> MatchFn:
        mode, ttl = self.mode, self.ttl

        def ttl_mt(skb: Skb, ctx: XtContext) -> bool:
            t = skb.data[IPH_TTL]
            if mode == EQ:
                return t == ttl
            if mode == NE:
                return t != ttl
            if mode == LT:
                return t < ttl
            return t > ttl

        return ttl_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return f"no match (ttl {skb.data[IPH_TTL]})"
