"""`-j TTL --ttl-set/--ttl-dec/--ttl-inc N` (libipt_TTL.c, xt_HL.c `ttl_tg`): mangle table only.

The TTL is rewritten with an incremental header checksum update, saturating at 0 and 255.
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb
from natbox.wire.checksum import csum_replace2
from natbox.wire.layout import IPH_CHECK, IPH_PROTOCOL, IPH_TTL

__all__ = ["TtlTarget"]

SET, INC, DEC = 0, 1, 2
_NAMES: Final = {SET: ("ttl-set", "set to"), DEC: ("ttl-dec", "decrement by"), INC: ("ttl-inc", "increment by")}
_TABLE: Final = ("ttl-set", "ttl-dec", "ttl-inc")  # TTL_opts order
_ORDER: Final = {SET: 0, DEC: 1, INC: 2}


class TtlTarget(Target):
    name = "TTL"
    options = (Opt("ttl-set", 1), Opt("ttl-dec", 1), Opt("ttl-inc", 1))

    def __init__(self) -> None:
        self.mode: int | None = None
        self.ttl = 0

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        mode = {"ttl-set": SET, "ttl-dec": DEC, "ttl-inc": INC}.get(opt)
        if mode is None:
            super().parse(opt, arg, inverted, rule)
            return
        if self.mode is not None:
            # xtables_options_fcheck reports the pair in option-table order (set, dec, inc)
            a, b = sorted((_ORDER[self.mode], _ORDER[mode]))
            raise RulesError(f'TTL: option "--{_TABLE[a]}" cannot be used together with "--{_TABLE[b]}".\n')
        lo = 0 if mode == SET else 1
        v = parse_uint(arg or "", lo, 255)
        if v is None:
            raise RulesError(f'TTL: bad value for option "--{opt}", or out of range ({lo}-255).\n')
        self.mode, self.ttl = mode, v

    def final_check(self, rule: Rule) -> None:
        if self.mode is None:
            raise RulesError("TTL: You must specify an action")

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if table != "mangle":
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        return f" --{_NAMES[self.mode or 0][0]} {self.ttl}"

    def print_list(self, numeric: bool) -> str:
        return f" TTL {_NAMES[self.mode or 0][1]} {self.ttl}"

    def compile(self) -> TargetFn:
        mode, n = self.mode, self.ttl

        def ttl_tg(skb: Skb, ctx: XtContext) -> int:
            data = skb.data
            old = data[IPH_TTL]
            new = n if mode == SET else (min(old + n, 255) if mode == INC else max(old - n, 0))
            if new != old:
                check = (data[IPH_CHECK] << 8) | data[IPH_CHECK + 1]
                proto = data[IPH_PROTOCOL]
                check = csum_replace2(check, (old << 8) | proto, (new << 8) | proto)
                data[IPH_TTL] = new
                data[IPH_CHECK], data[IPH_CHECK + 1] = check >> 8, check & 0xFF
            return XT_CONTINUE

        return ttl_tg
