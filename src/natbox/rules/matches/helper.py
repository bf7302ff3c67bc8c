"""`-m helper --helper NAME` (libxt_helper.c, xt_helper.c `helper_mt`).

natbox runs no conntrack helpers, so no connection is ever related to a helper's expectation: the
match is false (true when inverted), as the kernel answers for a ct without a master.
"""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.matches._common import quote_string
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["Helper"]


class Helper(Match):
    name = "helper"
    options = (Opt("helper", 1, True),)

    def __init__(self) -> None:
        self.helper: str | None = None
        self.invert = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "helper":
            super().parse(opt, arg, inverted, rule)
        self.helper, self.invert = (arg or "")[:29], inverted

    def final_check(self, rule: Rule) -> None:
        if self.helper is None:
            raise RulesError('helper: option "--helper" must be specified\n')

    def save(self) -> str:
        return (" !" if self.invert else "") + " --helper" + quote_string(self.helper or "")

    def print_list(self, numeric: bool) -> str:
        return f' helper match {"! " if self.invert else ""}"{self.helper}"'

    def compile(self) -> MatchFn:
        inv = self.invert

        def helper_mt(skb: Skb, ctx: XtContext) -> bool:
            return inv  # no ct has a master connection in natbox

        return helper_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return "no match (natbox runs no conntrack helpers)"
