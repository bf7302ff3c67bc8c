"""`-m osf` (libxt_osf.c, net/netfilter/xt_osf.c over nf_osf.c `nf_osf_match`): passive OS fingerprinting.

The kernel compares a TCP SYN's options with the fingerprints `nfnl_osf` loaded (pf.os); natbox loads
none, as a kernel before `nfnl_osf -f pf.os`, so nothing matches, `! --genre` included: `nf_osf_match`
returns whether a fingerprint matched and never looks at the inversion. `--log` would log "Remote OS is
not known" for SYNs; natbox does not (docs/differences.md). TCP only (`.proto`), at PREROUTING, INPUT and
FORWARD (`.hooks`).
"""

from __future__ import annotations

from typing import Final

from natbox.netfilter import Hook
from natbox.rules.api import XtContext
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec
from natbox.rules.matches._xtopt import parse_value
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError, hook_mask_of
from natbox.skb import Skb

__all__ = ["Osf"]

XT_OSF_GENRE, XT_OSF_TTL, XT_OSF_LOG, XT_OSF_INVERT = 1, 2, 4, 8
MAXGENRELEN: Final = 32
_VALID_HOOKS: Final = hook_mask_of(Hook.PRE_ROUTING, Hook.LOCAL_IN, Hook.FORWARD)
_SPECS: Final = (XtOptSpec("genre", 0, mand=True), XtOptSpec("ttl", 1), XtOptSpec("log", 2))


class Osf(Match):
    name = "osf"
    options = (Opt("genre", 1, True), Opt("ttl"), Opt("log"))

    def __init__(self) -> None:
        self.genre = ""
        self.oflags = 0
        self.ttl = 0
        self.loglevel = 0
        self.flags = XtFlags("osf", _SPECS)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        self.flags.parse(opt)
        a = arg or ""
        if opt == "genre":
            self.genre = a[:MAXGENRELEN - 1]
            if inverted:
                self.oflags |= XT_OSF_INVERT
        elif opt == "ttl":
            self.ttl = parse_value("osf", opt, a, 2)
            self.oflags |= XT_OSF_TTL
        else:
            self.loglevel = parse_value("osf", opt, a, 2)
            self.oflags |= XT_OSF_LOG

    def final_check(self, rule: Rule) -> None:
        self.flags.fcheck()

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`.proto` (TCP) and `.hooks`."""
        if rule.proto != 6 or rule.inv_proto or hook_mask & ~_VALID_HOOKS:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        return ((" !" if self.oflags & XT_OSF_INVERT else "") + f" --genre {self.genre}"
                + (f" --ttl {self.ttl}" if self.oflags & XT_OSF_TTL else "")
                + (f" --log {self.loglevel}" if self.oflags & XT_OSF_LOG else ""))

    def print_list(self, numeric: bool) -> str:
        return f" OS fingerprint match {'! ' if self.oflags & XT_OSF_INVERT else ''}{self.genre}"

    def compile(self) -> MatchFn:
        def osf_mt(skb: Skb, ctx: XtContext) -> bool:
            return False  # no fingerprints loaded: nf_osf_match finds none

        return osf_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return "no match (no OS fingerprints loaded)"
