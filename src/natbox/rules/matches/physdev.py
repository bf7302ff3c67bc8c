"""`-m physdev` (libxt_physdev.c, net/netfilter/xt_physdev.c `physdev_mt`): bridge ports of a bridged packet.

A packet that entered through a bridge port carries `Skb.nf_bridge` (engine/bridge.py): its input port
(physindev) and, while the bridge forwards it, its output port (physoutdev). Without it
(`nf_bridge_info_exists` false: the packet did not come in by a bridge port) the rule matches exactly when
every option it uses is inverted. Interface names compare as `ifname_compare_aligned` with the mask
iptables computes: exact, or a prefix before a trailing '+'. The checkentry refuses
`--physdev-out`/`--physdev-is-out` without `--physdev-is-bridged` in chains OUTPUT reaches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["Physdev"]

XT_PHYSDEV_OP_IN, XT_PHYSDEV_OP_OUT, XT_PHYSDEV_OP_BRIDGED, XT_PHYSDEV_OP_ISIN, XT_PHYSDEV_OP_ISOUT = 1, 2, 4, 8, 16
_LOCAL_OUT_MASK: Final = 1 << 3  # NF_INET_LOCAL_OUT
IFNAMSIZ: Final = 16
_SPECS: Final = (XtOptSpec("physdev-in", 0), XtOptSpec("physdev-out", 1), XtOptSpec("physdev-is-in", 2),
          XtOptSpec("physdev-is-out", 3), XtOptSpec("physdev-is-bridged", 4))
_BITS: Final = {"physdev-in": XT_PHYSDEV_OP_IN, "physdev-out": XT_PHYSDEV_OP_OUT, "physdev-is-in": XT_PHYSDEV_OP_ISIN,
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
        bitmask, invert = self.bitmask, self.invert
        # no nf_bridge: the match holds iff every option used is inverted (physdev_mt's first branch)
        unbridged = (bitmask & ~invert) == 0
        want_bridged = not invert & XT_PHYSDEV_OP_BRIDGED
        inv_isin, inv_isout = bool(invert & XT_PHYSDEV_OP_ISIN), bool(invert & XT_PHYSDEV_OP_ISOUT)
        inv_in, inv_out = bool(invert & XT_PHYSDEV_OP_IN), bool(invert & XT_PHYSDEV_OP_OUT)
        in_name, out_name = _name_test(self.physindev), _name_test(self.physoutdev)
        op_bridged, op_isin = bool(bitmask & XT_PHYSDEV_OP_BRIDGED), bool(bitmask & XT_PHYSDEV_OP_ISIN)
        op_isout, op_in, op_out = (bool(bitmask & XT_PHYSDEV_OP_ISOUT), bool(bitmask & XT_PHYSDEV_OP_IN),
                                   bool(bitmask & XT_PHYSDEV_OP_OUT))

        def physdev_mt(skb: Skb, ctx: XtContext) -> bool:
            nfb = skb.nf_bridge
            if nfb is None:
                return unbridged
            outdev, indev = nfb.physoutdev, nfb.physindev
            # "This only makes sense in the FORWARD and POSTROUTING chains"
            if op_bridged and bool(outdev) != want_bridged:
                return False
            if (op_isin and (not indev) != inv_isin) or (op_isout and (not outdev) != inv_isout):
                return False
            if op_in and indev and in_name(indev) == inv_in:
                return False
            if not op_out:
                return True
            if not outdev:
                return False  # even when inverted: physdev_mt returns false without a physoutdev
            return out_name(outdev) != inv_out

        return physdev_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        nfb = skb.nf_bridge
        if nfb is None:
            return "no match (not a bridged packet: it did not enter by a bridge port)"
        return f"no match (physindev {nfb.physindev or '-'}, physoutdev {nfb.physoutdev or '-'})"


def _name_test(name: str) -> Callable[[str], bool]:
    """`ifname_compare_aligned` with libxt_physdev's mask: a trailing '+' compares only what precedes it."""
    if name.endswith("+"):
        prefix = name[:-1]
        return lambda dev: dev.startswith(prefix)
    return lambda dev: dev == name
