"""`-m nfacct --nfacct-name NAME` (libxt_nfacct.c, net/netfilter/xt_nfacct.c): count into an nfacct object.

The kernel refuses a rule naming an accounting object that `nfacct add` has not created
(`nfnl_acct_find_get` → ENOENT). natbox has no nfacct objects (no `nfacct` command, nothing in the host
model), so every such rule is refused the same way (docs/differences.md). Printing keeps iptables' double
space (" --nfacct-name  NAME").
"""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.matches._common import quote_string
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["Nfacct"]

NFACCT_NAME_MAX = 32


class Nfacct(Match):
    name = "nfacct"
    revision = 1
    options = (Opt("nfacct-name"),)

    def __init__(self) -> None:
        self.acct_name = ""
        self.flags = XtFlags("nfacct", (XtOptSpec("nfacct-name", 0, mand=True),))

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        self.flags.parse(opt)
        a = arg or ""
        if not a:
            raise RulesError("Argument must have a minimum length of 1 characters\n")
        if "\n" in a:
            raise RulesError("Newlines not allowed in --nfacct-name")
        self.acct_name = a[:NFACCT_NAME_MAX - 1]

    def final_check(self, rule: Rule) -> None:
        self.flags.fcheck()

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`nfacct_mt_checkentry()`: the object must exist; natbox has none."""
        raise RulesError("No such file or directory", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        return " --nfacct-name " + quote_string(self.acct_name)

    def print_list(self, numeric: bool) -> str:
        return " nfacct-name " + quote_string(self.acct_name)

    def compile(self) -> MatchFn:
        def nfacct_mt(skb: Skb, ctx: XtContext) -> bool:
            return True  # nfacct_mt counts and matches (never loaded: check() refuses the rule)

        return nfacct_mt
