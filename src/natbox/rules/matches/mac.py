"""`-m mac --mac-source XX:XX:XX:XX:XX:XX` (libxt_mac.c, xt_mac.c): PREROUTING/INPUT/FORWARD only."""

from __future__ import annotations

from typing import Final

from natbox.netfilter import Hook
from natbox.rules.api import XtContext
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError, hook_mask_of
from natbox.skb import Skb

__all__ = ["Mac"]

_VALID_HOOKS: Final = hook_mask_of(Hook.PRE_ROUTING, Hook.LOCAL_IN, Hook.FORWARD)


class Mac(Match):
    name = "mac"
    options = (Opt("mac-source", 1, True),)

    def __init__(self) -> None:
        self.addr = b""
        self.invert = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "mac-source":
            super().parse(opt, arg, inverted, rule)
        parts = (arg or "").split(":")
        try:
            if len(parts) != 6 or any(not 1 <= len(p) <= 2 for p in parts):
                raise ValueError
            self.addr = bytes(int(p, 16) for p in parts)
        except ValueError:
            raise RulesError("Invalid MAC address specified.") from None
        self.invert = inverted

    def final_check(self, rule: Rule) -> None:
        if not self.addr:
            raise RulesError('mac: option "--mac-source" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if hook_mask & ~_VALID_HOOKS:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _text(self) -> str:
        return ":".join(f"{b:02x}" for b in self.addr)

    def save(self) -> str:
        return (" !" if self.invert else "") + " --mac-source " + self._text()

    def print_list(self, numeric: bool) -> str:
        return " MAC " + ("! " if self.invert else "") + self._text()

    def compile(self) -> MatchFn:
        addr, inv = self.addr, self.invert

        def mac_mt(skb: Skb, ctx: XtContext) -> bool:
            # xt_mac: no Ethernet header (locally generated) never matches, whatever the inversion
            if len(skb.src_mac) != 6:
                return False
            return (skb.src_mac == addr) != inv

        return mac_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return f"no match (source MAC {':'.join(f'{b:02x}' for b in skb.src_mac) or 'none'})"
