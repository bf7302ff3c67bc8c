"""`-m quota [!] --quota BYTES` (libxt_quota.c, xt_quota.c `quota_mt`): a byte budget spent per packet.

The remaining budget lives on the instance (like the kernel's per-rule `master`), so it survives
recompilation; `-L`/save show the configured quota, as iptables-nft does.
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["Quota"]

U64_MAX: Final = (1 << 64) - 1


class Quota(Match):
    name = "quota"
    options = (Opt("quota", 1, True),)

    def __init__(self) -> None:
        self.quota: int | None = None
        self.invert = False
        self.left: list[int] = []

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "quota":
            super().parse(opt, arg, inverted, rule)
        v = parse_uint(arg or "", 0, U64_MAX)
        if v is None:
            raise RulesError(f'quota: bad value for option "--quota", or out of range (0-{U64_MAX}).\n')
        self.quota, self.invert, self.left = v, inverted, [v]

    def final_check(self, rule: Rule) -> None:
        if self.quota is None:
            raise RulesError('quota: option "--quota" must be specified\n')

    def save(self) -> str:
        return (" !" if self.invert else "") + f" --quota {self.quota}"

    def print_list(self, numeric: bool) -> str:
        return f" quota: {self.quota} bytes"

    def compile(self) -> MatchFn:
        left, inv = self.left, self.invert

        def quota_mt(skb: Skb, ctx: XtContext) -> bool:
            size = len(skb.data)
            if left[0] >= size:
                left[0] -= size
                return not inv
            left[0] = 0  # quota reached: the kernel zeroes what is left
            return inv

        return quota_mt
