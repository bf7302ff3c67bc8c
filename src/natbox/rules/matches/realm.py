"""`-m realm [!] --realm value[/mask]` (libxt_realm.c, net/netfilter/xt_realm.c `realm_mt`).

The kernel tests `(skb_dst(skb)->tclassid & mask) == id`, inverted by `!`, in POST_ROUTING, FORWARD,
LOCAL_OUT and LOCAL_IN. natbox's routes carry no realm (`ip route ... realm` is not modelled), so
`tclassid` is 0: the rule matches when `id` is 0, or when inverted and `id` is not (docs/differences.md).
Realm names (/etc/iproute2/rt_realms) are not read: only numbers are accepted.
"""

from __future__ import annotations

from typing import Final

from natbox.netfilter import Hook
from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError, hook_mask_of
from natbox.skb import Skb

__all__ = ["Realm"]

REALM_HOOKS: Final = hook_mask_of(Hook.POST_ROUTING, Hook.FORWARD, Hook.LOCAL_OUT, Hook.LOCAL_IN)


class Realm(Match):
    name = "realm"
    options = (Opt("realm", 1, True),)

    def __init__(self) -> None:
        self.id = 0
        self.mask = 0xFFFFFFFF
        self.invert = False
        self.given = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "realm":
            super().parse(opt, arg, inverted, rule)
        a = arg or ""
        id_s, sep, mask_s = a.partition("/")
        rid = parse_uint(id_s, 0, 0xFFFFFFFF)
        mask = parse_uint(mask_s, 0, 0xFFFFFFFF) if sep else 0xFFFFFFFF
        if rid is None or mask is None:
            raise RulesError(f'realm: could not map name {a} to an integer value for option "--realm".\n')
        self.id, self.mask, self.invert, self.given = rid, mask, inverted, True

    def final_check(self, rule: Rule) -> None:
        if not self.given:
            raise RulesError('realm: option "--realm" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if hook_mask & ~REALM_HOOKS:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _text(self) -> str:
        if self.mask != 0xFFFFFFFF:
            return f"0x{self.id:x}/0x{self.mask:x}"
        return f"0x{self.id:x}"

    def save(self) -> str:
        return (" !" if self.invert else "") + " --realm " + self._text()

    def print_list(self, numeric: bool) -> str:
        return (" !" if self.invert else "") + " realm " + self._text()

    def compile(self) -> MatchFn:
        hit = ((0 & self.mask) == self.id) != self.invert  # tclassid is always 0 in natbox

        def realm_mt(skb: Skb, ctx: XtContext) -> bool:
            return hit

        return realm_mt
