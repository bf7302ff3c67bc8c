"""`-m physdev` (libxt_physdev.c, net/netfilter/xt_physdev.c `physdev_mt`): bridge ports of a bridged packet.

natbox's host model has no bridges, so no packet carries bridge netfilter information
(`nf_bridge_info_exists` is false): the kernel then matches exactly when every option the rule uses is
inverted (`! --physdev-is-bridged` matches, `--physdev-in eth0` never does). The checkentry refuses
`--physdev-out`/`--physdev-is-out` without `--physdev-is-bridged` in chains OUTPUT reaches
(docs/differences.md).
"""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["Physdev"]

XT_PHYSDEV_OP_IN, XT_PHYSDEV_OP_OUT, XT_PHYSDEV_OP_BRIDGED, XT_PHYSDEV_OP_ISIN, XT_PHYSDEV_OP_ISOUT = 1, 2, 4, 8, 16
_LOCAL_OUT_MASK = 1 << 3  # NF_INET_LOCAL_OUT
IFNAMSIZ = 16
_SPECS = (XtOptSpec("physdev-in", 0), XtOptSpec("physdev-out", 1), XtOptSpec("physdev-is-in", 2),
          XtOptSpec("physdev-is-out", 3), XtOptSpec("physdev-is-bridged", 4))
_BITS = {"physdev-in": XT_PHYSDEV_OP_IN, "physdev-out": XT_PHYSDEV_OP_OUT, "physdev-is-in": XT_PHYSDEV_OP_ISIN,
         "physdev-is-out": XT_PHYSDEV_OP_ISOUT, "physdev-is-bridged": XT_PHYSDEV_OP_BRIDGED}


def _iface(arg: str) -> str:
    """`xtables_parse_interface`'s length check."""
    if len(arg) + 1 > IFNAMSIZ:
        raise RulesError(f"interface name `{arg}' must be shorter than IFNAMSIZ ({IFNAMSIZ - 1})")
    return arg


class Physdev(Match):
    name = "physdev"
    options = (Opt("physdev-in", 1, True), Opt("physdev-out", 1, True), Opt("physdev-is-in", 0, True),
               Opt("physdev-is-out", 0, True), Opt("physdev-is-bridged", 0, True))
    checkentry_hooks = True  # physdev_mt_check tests par->hook_mask

    def __init__(self) -> None:
        self.bitmask = 0
        self.invert = 0
        self.physindev = ""
        self.physoutdev = ""
        self.flags = XtFlags("physdev", _SPECS)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        self.flags.parse(opt)
        bit = _BITS[opt]
        if opt == "physdev-in":
            self.physindev = _iface(arg or "")
        elif opt == "physdev-out":
            self.physoutdev = _iface(arg or "")
        self.bitmask |= bit
        if inverted:
            self.invert |= bit

    def final_check(self, rule: Rule) -> None:
        if not self.flags.flags:
            raise RulesError("PHYSDEV: no physdev option specified")
        self.flags.fcheck()

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`physdev_mt_check()`."""
        if (self.bitmask & (XT_PHYSDEV_OP_OUT | XT_PHYSDEV_OP_ISOUT)
                and (not self.bitmask & XT_PHYSDEV_OP_BRIDGED or self.invert & XT_PHYSDEV_OP_BRIDGED)
                and hook_mask & _LOCAL_OUT_MASK):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _text(self) -> str:
        out = ""
        for bit, word, dev in ((XT_PHYSDEV_OP_ISIN, "--physdev-is-in", None),
                               (XT_PHYSDEV_OP_IN, "--physdev-in", self.physindev),
                               (XT_PHYSDEV_OP_ISOUT, "--physdev-is-out", None),
                               (XT_PHYSDEV_OP_OUT, "--physdev-out", self.physoutdev),
                               (XT_PHYSDEV_OP_BRIDGED, "--physdev-is-bridged", None)):
            if self.bitmask & bit:
                out += (" !" if self.invert & bit else "") + f" {word}" + (f" {dev}" if dev is not None else "")
        return out

    def save(self) -> str:
        return self._text()

    def print_list(self, numeric: bool) -> str:
        return " PHYSDEV match" + self._text()

    def compile(self) -> MatchFn:
        # no packet is bridged: the match holds iff every option used is inverted (physdev_mt's first branch)
        hit = (self.bitmask & ~self.invert) == 0

        def physdev_mt(skb: Skb, ctx: XtContext) -> bool:
            return hit

        return physdev_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return "no match (not a bridged packet: the host model has no bridges)"
