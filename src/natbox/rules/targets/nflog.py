"""`-j NFLOG` (libxt_NFLOG.c): recorded through `ctx.log` (prefix, level 4) and continues."""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches._common import quote_string
from natbox.rules.matches._xtopt import parse_value
from natbox.rules.model import Opt, Rule, Target, TargetFn
from natbox.skb import Skb

__all__ = ["Nflog"]

XT_NFLOG_DEFAULT_THRESHOLD: Final = 0
# iptables-nft turns NFLOG into nft's log expression, whose prefix keeps NF_LOG_PREFIXLEN - 1 = 127
# characters (recorded with iptables 1.8.9 (nf_tables): 70 kept whole, 130 and 200 cut to 127), not
# the 63 of xt_NFLOG's `prefix[64]` that iptables-legacy sends
NFLOG_PREFIX_MAX: Final = 127


class Nflog(Target):
    name = "NFLOG"
    options = (Opt("nflog-group", 1), Opt("nflog-prefix", 1), Opt("nflog-range", 1), Opt("nflog-size", 1),
               Opt("nflog-threshold", 1))

    def __init__(self) -> None:
        self.group = 0
        self.prefix = ""
        self.len = 0
        self.copy_len = False
        self.threshold = XT_NFLOG_DEFAULT_THRESHOLD

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if opt == "nflog-prefix":
            self.prefix = a[:NFLOG_PREFIX_MAX]
            return
        v = parse_value("NFLOG", opt, a, 0xFFFF if opt in ("nflog-group", "nflog-threshold") else 0xFFFFFFFF)
        if opt == "nflog-group":
            self.group = v
        elif opt == "nflog-range":
            pass  # iptables-nft drops --nflog-range (superseded by --nflog-size); the .t says NOMATCH
        elif opt == "nflog-size":
            self.len, self.copy_len = v, True
        elif opt == "nflog-threshold":
            self.threshold = v
        else:
            super().parse(opt, arg, inverted, rule)

    def _dump(self, pfx: str) -> str:
        out = ""
        if self.prefix:
            out += f" {pfx}nflog-prefix" + quote_string(self.prefix)
        if self.group:
            out += f" {pfx}nflog-group {self.group}"
        if self.copy_len:
            out += f" {pfx}nflog-size {self.len}"
        elif self.len:
            out += f" {pfx}nflog-range {self.len}"
        if self.threshold != XT_NFLOG_DEFAULT_THRESHOLD:
            out += f" {pfx}nflog-threshold {self.threshold}"
        return out

    def save(self) -> str:
        return self._dump("--")

    def print_list(self, numeric: bool) -> str:
        return self._dump("")

    def compile(self) -> TargetFn:
        prefix = self.prefix

        def nflog_tg(skb: Skb, ctx: XtContext) -> int:
            ctx.log(skb, prefix, 4)
            return XT_CONTINUE

        return nflog_tg
