"""`-m cpu [!] --cpu N` (libxt_cpu.c, net/netfilter/xt_cpu.c `cpu_mt`): `info->cpu == smp_processor_id()`.

natbox runs every packet on one CPU, number 0 (the host model declares no CPUs): `--cpu 0` matches,
any other number only when inverted (docs/differences.md).
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._xtopt import U32_MAX, parse_value
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["RECEIVING_CPU", "Cpu"]

RECEIVING_CPU: Final = 0  # smp_processor_id() in natbox's model


class Cpu(Match):
    name = "cpu"
    options = (Opt("cpu", 1, True),)

    def __init__(self) -> None:
        self.cpu: int | None = None
        self.invert = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "cpu":
            super().parse(opt, arg, inverted, rule)
        self.cpu, self.invert = parse_value("cpu", opt, arg or "", U32_MAX), inverted

    def final_check(self, rule: Rule) -> None:
        if self.cpu is None:
            raise RulesError('cpu: option "--cpu" must be specified\n')

    def save(self) -> str:
        return (" !" if self.invert else "") + f" --cpu {self.cpu}"

    def print_list(self, numeric: bool) -> str:
        return f" cpu {'! ' if self.invert else ''}{self.cpu}"

    def compile(self) -> MatchFn:
        hit = (self.cpu == RECEIVING_CPU) != self.invert

        def cpu_mt(skb: Skb, ctx: XtContext) -> bool:
            return hit

        return cpu_mt
