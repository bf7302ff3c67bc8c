"""`-m tos [!] --tos value[/mask] | symbol` rev 1 (libxt_tos.c, net/netfilter/xt_dscp.c `tos_mt`).

The kernel compares `(iph->tos & mask) == value`, inverted by `!`. A number gives mask 0xff; the
symbolic names of tos_values.c give their value with mask 0x3f (the ECN bits not compared).
"""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.matches.dsfield6 import tos_mt6
from natbox.rules.model import NFPROTO_IPV6, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb
from natbox.wire.layout import IPH_TOS

__all__ = ["TOS_SYMBOLS", "Tos", "parse_tos_mask", "tos_symbolic"]

# tos_symbol_names (tos_values.c), in the order they are looked up
TOS_SYMBOLS: tuple[tuple[int, str], ...] = (
    (0x10, "Minimize-Delay"), (0x08, "Maximize-Throughput"), (0x04, "Maximize-Reliability"),
    (0x02, "Minimize-Cost"), (0x00, "Normal-Service"),
)


def parse_tos_mask(ext: str, opt: str, text: str) -> tuple[int, int]:
    """`xtopt_parse_tosmask`: `value[/mask]` (mask 0xff by default) or a symbolic name (mask 0x3f)."""
    head = text.split("/", 1)[0]
    if parse_uint(head, 0, 0xFF) is not None:
        value_s, sep, mask_s = text.partition("/")
        value = parse_uint(value_s, 0, 0xFF)
        mask = parse_uint(mask_s, 0, 0xFF) if sep else 0xFF
        if value is None or mask is None:
            raise RulesError(f'Illegal value: "{text}"')
        return value, mask
    for value, name in TOS_SYMBOLS:
        if name.lower() == text.lower():
            return value, 0x3F
    raise RulesError(f'Symbolic name "{text}" is unknown')


def tos_symbolic(value: int, mask: int) -> str | None:
    """`tos_try_print_symbolic`: the name of a value under mask 0x3f, else None."""
    if mask != 0x3F:
        return None
    for v, name in TOS_SYMBOLS:
        if v == value:
            return name
    return None


class Tos(Match):
    name = "tos"
    revision = 1
    options = (Opt("tos", 1, True),)

    def __init__(self) -> None:
        self.value = 0
        self.mask = 0
        self.invert = False
        self.given = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "tos":
            super().parse(opt, arg, inverted, rule)
        self.value, self.mask = parse_tos_mask("tos", opt, arg or "")
        self.invert, self.given = inverted, True

    def final_check(self, rule: Rule) -> None:
        if not self.given:
            raise RulesError('tos: option "--tos" must be specified\n')

    def save(self) -> str:
        return (" !" if self.invert else "") + f" --tos 0x{self.value:02x}/0x{self.mask:02x}"

    def print_list(self, numeric: bool) -> str:
        out = " tos match" + ("!" if self.invert else "")
        sym = None if numeric else tos_symbolic(self.value, self.mask)
        return out + (f" {sym}" if sym is not None else f"0x{self.value:02x}/0x{self.mask:02x}")

    def compile(self) -> MatchFn:
        value, mask, inv = self.value, self.mask, self.invert
        if self.family == NFPROTO_IPV6:
            return tos_mt6(value, mask, inv)

        def tos_mt(skb: Skb, ctx: XtContext) -> bool:
            return ((skb.data[IPH_TOS] & mask) == value) != inv

        return tos_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return f"no match (tos 0x{skb.data[IPH_TOS]:02x})"
