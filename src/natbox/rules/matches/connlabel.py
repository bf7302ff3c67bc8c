"""`-m connlabel` (libxt_connlabel.c, net/netfilter/xt_connlabel.c `connlabel_mt`): the ct's label bits.

Labels are given by number: natbox has no /etc/xtables/connlabel.conf, so a name is refused as iptables
refuses it when that file is missing ("label 'X' not found or invalid value"; iptables also prints
"Warning: cannot open /etc/xtables/connlabel.conf" on stderr, which natbox does not). Bits 0-127
(`NF_CT_LABELS_MAX_SIZE`), more is refused by the kernel with ERANGE. `--set` sets the bit on the ct and
matches. Every ct carries the label bits (docs/differences.md).
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["Connlabel"]

XT_CONNLABEL_OP_INVERT, XT_CONNLABEL_OP_SET = 1, 2
NF_CT_LABELS_MAX_BITS: Final = 128
_SPECS: Final = (XtOptSpec("label", 0, mand=True), XtOptSpec("set", 1))
_ULONG: Final = (1 << 64) - 1


def _value_parse(text: str) -> int:
    """`connlabel_value_parse()`: strtoul(.., 0) of the whole string, as an int (-1 when not a number)."""
    t = text.lstrip()
    neg = t[:1] == "-"
    if t[:1] in "+-":
        t = t[1:]
    v = parse_uint(t, 0, _ULONG) if t and t[0].isdigit() else None
    if v is None:
        return -1
    v = ((-v) & _ULONG if neg else v) & 0xFFFFFFFF  # returned as an int
    return v - (1 << 32) if v >= 1 << 31 else v


class Connlabel(Match):
    name = "connlabel"
    options = (Opt("label", 1, True), Opt("set", 0))

    def __init__(self) -> None:
        self.bit = 0
        self.opts = 0
        self.flags = XtFlags("connlabel", _SPECS)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        self.flags.parse(opt)
        if opt == "set":
            self.opts |= XT_CONNLABEL_OP_SET
            return
        a = arg or ""
        if not a:
            raise RulesError("Argument must have a minimum length of 1 characters\n")
        tmp = _value_parse(a)
        if tmp < 0:
            raise RulesError(f"label '{a}' not found or invalid value")
        self.bit = tmp & 0xFFFF  # info->bit is a u16
        if inverted:
            self.opts |= XT_CONNLABEL_OP_INVERT

    def final_check(self, rule: Rule) -> None:
        self.flags.fcheck()

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`connlabel_mt_check()` → `nf_connlabels_get()`: the bit must fit the labels extension."""
        if self.bit >= NF_CT_LABELS_MAX_BITS:
            raise RulesError("Numerical result out of range", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        return ((" !" if self.opts & XT_CONNLABEL_OP_INVERT else "") + f' --label "{self.bit}"'
                + (" --set" if self.opts & XT_CONNLABEL_OP_SET else ""))

    def print_list(self, numeric: bool) -> str:
        return (" connlabel" + (" !" if self.opts & XT_CONNLABEL_OP_INVERT else "") + f" {self.bit}"
                + (" set" if self.opts & XT_CONNLABEL_OP_SET else ""))

    def compile(self) -> MatchFn:
        bit = 1 << self.bit
        invert = bool(self.opts & XT_CONNLABEL_OP_INVERT)
        set_bit = bool(self.opts & XT_CONNLABEL_OP_SET)

        def connlabel_mt(skb: Skb, ctx: XtContext) -> bool:
            """`connlabel_mt()`."""
            ct = skb.ct
            if ct is None:
                return invert
            if ct.labels & bit:
                return not invert
            if set_bit:
                ct.labels |= bit
                return not invert
            return invert

        return connlabel_mt
