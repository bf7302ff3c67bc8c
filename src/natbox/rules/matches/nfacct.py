"""`-m nfacct --nfacct-name NAME` (libxt_nfacct.c, net/netfilter/xt_nfacct.c): count into an nfacct object.

The object must exist (`nfnl_acct_find_get`, else ENOENT): `natbox nfacct add` creates it in the objects
in scope (natbox.rules.xtstate.nfacct: a file's for `natbox iptables --nfacct FILE`, a gateway's own). Each
packet is counted into the namespace's object of that name (`XtState.nfacct`), and the rule matches unless the
object has a quota not yet passed (`nfacct_mt`). Printing keeps iptables' double space (" --nfacct-name  NAME").
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._common import quote_string
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.rules.xtstate.nfacct import NFACCT_UNDERQUOTA, nfacct_in_scope
from natbox.skb import Skb

__all__ = ["Nfacct"]

NFACCT_NAME_MAX: Final = 32


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
        """`nfacct_mt_checkentry()`: the object must exist."""
        objects = nfacct_in_scope()
        if objects is None or self.acct_name not in objects:
            raise RulesError("No such file or directory", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        return " --nfacct-name " + quote_string(self.acct_name)

    def print_list(self, numeric: bool) -> str:
        return " nfacct-name " + quote_string(self.acct_name)

    def compile(self) -> MatchFn:
        name = self.acct_name

        def nfacct_mt(skb: Skb, ctx: XtContext) -> bool:
            """`nfacct_mt()`: count, then match unless under a quota."""
            acct = ctx.xt_state().nfacct.get(name)
            if acct is None:
                return True  # a context without the namespace's objects (the rule was checked against them)
            acct.update(len(skb.data))
            return acct.check_quota() != NFACCT_UNDERQUOTA

        return nfacct_mt
