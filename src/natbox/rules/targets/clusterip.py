"""`-j CLUSTERIP` (libipt_CLUSTERIP.c): parsed, checked and printed as iptables 1.8.9 does, never loaded.

Linux removed ipt_CLUSTERIP in 6.3 ("use the cluster match instead"), so on the 6.x kernels natbox models
every CLUSTERIP rule is refused when it reaches the kernel ("RULE_APPEND failed (No such file or
directory)"; iptables also warns "Extension CLUSTERIP revision 0 not supported, missing kernel module?" on
stderr, which natbox does not print). natbox refuses it the same way (docs/differences.md).
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec
from natbox.rules.matches._xtopt import U16_MAX, U32_MAX, parse_value
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb

__all__ = ["Clusterip"]

CLUSTERIP_MAX_NODES: Final = 16
CLUSTERIP_FLAG_NEW: Final = 1
_HASHMODES: Final = ("sourceip", "sourceip-sourceport", "sourceip-sourceport-destport")  # CLUSTERIP_HASHMODE_* - 1
O_NEW, O_HASHMODE, O_CLUSTERMAC, O_TOTAL_NODES, O_LOCAL_NODE, O_HASH_INIT = range(6)
F_FULL: Final = 0b11111
_SPECS: Final = (XtOptSpec("new", O_NEW), XtOptSpec("hashmode", O_HASHMODE, also=O_NEW),
          XtOptSpec("clustermac", O_CLUSTERMAC, also=O_NEW), XtOptSpec("total-nodes", O_TOTAL_NODES, also=O_NEW),
          XtOptSpec("local-node", O_LOCAL_NODE, also=O_NEW), XtOptSpec("hash-init", O_HASH_INIT, also=O_NEW))


def _mac(text: str) -> bytes:
    """XTTYPE_ETHERMAC (`xtables_parse_mac`): six hex bytes separated by colons."""
    parts = text.split(":")
    if len(text) != 17 or len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise RulesError('Invalid MAC address specified.')
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise RulesError("Invalid MAC address specified.") from None


class Clusterip(Target):
    name = "CLUSTERIP"
    options = (Opt("new", 0), Opt("hashmode"), Opt("clustermac"), Opt("total-nodes"), Opt("local-node"),
               Opt("hash-init"))

    def __init__(self) -> None:
        self.cflags = 0
        self.hash_mode = 0
        self.clustermac = bytes(6)
        self.total_nodes = 0
        self.local_node = 0
        self.hash_init = 0
        self.flags = XtFlags("CLUSTERIP", _SPECS)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        self.flags.parse(opt)
        a = arg or ""
        if opt == "new":
            self.cflags |= CLUSTERIP_FLAG_NEW
        elif opt == "hashmode":
            if a not in _HASHMODES:
                raise RulesError(f'Unknown hashmode "{a}"')
            self.hash_mode = _HASHMODES.index(a) + 1
        elif opt == "clustermac":
            self.clustermac = _mac(a)
            if not self.clustermac[0] & 1:
                raise RulesError("MAC has to be a multicast ethernet address")
        elif opt == "total-nodes":
            self.total_nodes = parse_value("CLUSTERIP", opt, a, min(CLUSTERIP_MAX_NODES, U16_MAX))
        elif opt == "local-node":
            self.local_node = parse_value("CLUSTERIP", opt, a, min(CLUSTERIP_MAX_NODES, U16_MAX))
        else:
            self.hash_init = parse_value("CLUSTERIP", opt, a, U32_MAX)

    def final_check(self, rule: Rule) -> None:
        """`CLUSTERIP_check()`, then libxtables' checks."""
        if self.flags.flags and self.flags.flags & F_FULL != F_FULL:
            raise RulesError("CLUSTERIP target: Invalid parameter combination")
        self.flags.fcheck()

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """ipt_CLUSTERIP is not in Linux 6.x: the kernel has no such target."""
        raise RulesError("No such file or directory", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        if not self.cflags & CLUSTERIP_FLAG_NEW:
            return ""
        mac = ":".join(f"{b:02X}" for b in self.clustermac)
        return (f" --new --hashmode {self._mode()} --clustermac {mac} --total-nodes {self.total_nodes}"
                f" --local-node {self.local_node} --hash-init {self.hash_init}")

    def _mode(self) -> str:
        return _HASHMODES[self.hash_mode - 1] if 1 <= self.hash_mode <= 3 else "unknown-error"

    def print_list(self, numeric: bool) -> str:
        if not self.cflags & CLUSTERIP_FLAG_NEW:
            return " CLUSTERIP"
        mac = ":".join(f"{b:02X}" for b in self.clustermac)
        return (f" CLUSTERIP hashmode={self._mode()} clustermac={mac} total_nodes={self.total_nodes}"
                f" local_node={self.local_node} hash_init={self.hash_init}")

    def compile(self) -> TargetFn:
        def clusterip_tg(skb: Skb, ctx: XtContext) -> int:
            return XT_CONTINUE  # never loaded (check() refuses every rule)

        return clusterip_tg
