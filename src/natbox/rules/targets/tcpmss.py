"""`-j TCPMSS --set-mss N | --clamp-mss-to-pmtu` (libxt_TCPMSS.c).

natbox parses, validates and prints it; at run time it does not rewrite the MSS option (continues).
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb

__all__ = ["Tcpmss"]

XT_TCPMSS_CLAMP_PMTU: Final = 0xFFFF


class Tcpmss(Target):
    name = "TCPMSS"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    options = (Opt("set-mss", 1), Opt("clamp-mss-to-pmtu", 0))

    def __init__(self) -> None:
        self.mss: int | None = None

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if self.mss is not None:
            raise RulesError("TCPMSS target: Only one option may be specified")
        if opt == "set-mss":
            v = parse_uint(arg or "", 0, 0xFFFF - 1)
            if v is None:
                raise RulesError('TCPMSS: bad value for option "--set-mss", or out of range (0-65534).\n')
            self.mss = v
        elif opt == "clamp-mss-to-pmtu":
            self.mss = XT_TCPMSS_CLAMP_PMTU
        else:
            super().parse(opt, arg, inverted, rule)

    def final_check(self, rule: Rule) -> None:
        if self.mss is None:
            raise RulesError("TCPMSS target: At least one parameter is required")

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if rule.proto != 6 or rule.inv_proto:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        return " --clamp-mss-to-pmtu" if self.mss == XT_TCPMSS_CLAMP_PMTU else f" --set-mss {self.mss}"

    def print_list(self, numeric: bool) -> str:
        return " TCPMSS clamp to PMTU" if self.mss == XT_TCPMSS_CLAMP_PMTU else f" TCPMSS set {self.mss}"

    def compile(self) -> TargetFn:
        def tcpmss_tg(skb: Skb, ctx: XtContext) -> int:
            return XT_CONTINUE

        return tcpmss_tg
