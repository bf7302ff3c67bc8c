"""`-m cluster` (libxt_cluster.c, net/netfilter/xt_cluster.c `xt_cluster_mt`): a node's share of connections.

The ct's original source address is hashed with `jhash_1word(addr, --cluster-hash-seed)`, scaled to the
node count (`reciprocal_scale`) and tested against the local node mask. A packet sent to a unicast address
with a multicast link address is turned into one for this host (`pkt_type` set to HOST), as the kernel's
match does. No ct, no match. For IPv6, `xt_cluster_hash_ipv6` calls `jhash2(ip, NF_CT_TUPLE_L3SIZE / sizeof(__u32))`,
and NF_CT_TUPLE_L3SIZE is the element count of `nf_inet_addr.all` (4), so one word: only the first 32 bits
of the source are hashed (measured on 6.18: every source in fd00::/32 lands on the same node).
"""

from __future__ import annotations

from typing import Final

from natbox.nat.jhash import addr_word, jhash2, reciprocal_scale
from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.api import XtContext
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec
from natbox.rules.matches._xtopt import U32_MAX, parse_value
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import PacketType, Skb

__all__ = ["Cluster"]

XT_CLUSTER_NODES_MAX: Final = 32
XT_CLUSTER_F_INV: Final = 1
O_TOTAL, O_NODE, O_MASK, O_SEED = range(4)
_SPECS: Final = (XtOptSpec("cluster-total-nodes", O_TOTAL, mand=True),
          XtOptSpec("cluster-local-node", O_NODE, excl=1 << O_MASK),
          XtOptSpec("cluster-local-nodemask", O_MASK, excl=1 << O_NODE),
          XtOptSpec("cluster-hash-seed", O_SEED, mand=True))


class Cluster(Match):
    name = "cluster"
    options = (Opt("cluster-total-nodes"), Opt("cluster-local-node", 1, True),
               Opt("cluster-local-nodemask", 1, True), Opt("cluster-hash-seed"))

    def __init__(self) -> None:
        self.total_nodes = 0
        self.node_mask = 0
        self.hash_seed = 0
        self.cflags = 0
        self.flags = XtFlags("cluster", _SPECS)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        e = self.flags.parse(opt)
        a = arg or ""
        if e.id == O_SEED:
            self.hash_seed = parse_value("cluster", opt, a, U32_MAX)
            return
        if e.id == O_MASK and len(a) == 10 and a.startswith("0x"):
            # iptables-save's own form (0x%08x) of a mask of nodes above 5: iptables-restore refuses it
            # (the option's range is 1-32), natbox reads it back (docs/differences.md)
            v = parse_value("cluster", opt, a, U32_MAX, 1)
        else:
            v = parse_value("cluster", opt, a, XT_CLUSTER_NODES_MAX, 1)
        if e.id == O_TOTAL:
            self.total_nodes = v
            return
        self.node_mask = (1 << (v - 1)) & U32_MAX if e.id == O_NODE else v
        if inverted:
            self.cflags |= XT_CLUSTER_F_INV

    def final_check(self, rule: Rule) -> None:
        """`cluster_check()`, then libxtables' checks."""
        f = self.flags
        if f.has(O_TOTAL) and f.has(O_NODE) and f.has(O_SEED):
            if self.node_mask >= 1 << self.total_nodes:
                raise RulesError("cluster match: `--cluster-local-node' must be <= `--cluster-total-nodes'")
        elif f.has(O_TOTAL) and f.has(O_MASK) and f.has(O_SEED):
            if self.node_mask >= 1 << self.total_nodes:
                raise RulesError("cluster match: `--cluster-local-nodemask' too big for `--cluster-total-nodes'")
        elif not (f.has(O_NODE) or f.has(O_MASK)):
            raise RulesError("cluster match: `--cluster-local-node' or`--cluster-local-nodemask' is missing")
        f.fcheck()

    def save(self) -> str:
        return ((" !" if self.cflags & XT_CLUSTER_F_INV else "") + f" --cluster-local-nodemask 0x{self.node_mask:08x}"
                + f" --cluster-total-nodes {self.total_nodes} --cluster-hash-seed 0x{self.hash_seed:08x}")

    def print_list(self, numeric: bool) -> str:
        return (f" cluster {'!' if self.cflags & XT_CLUSTER_F_INV else ''}node_mask=0x{self.node_mask:08x}"
                f" total_nodes={self.total_nodes} hash_seed=0x{self.hash_seed:08x}")

    def compile(self) -> MatchFn:
        seed, total, mask = self.hash_seed, self.total_nodes, self.node_mask
        invert = bool(self.cflags & XT_CLUSTER_F_INV)

        def cluster_mt(skb: Skb, ctx: XtContext) -> bool:
            """`xt_cluster_mt()`."""
            if skb.pkt_type == PacketType.MULTICAST and skb.daddr >> 28 != 0xE:
                skb.pkt_type = PacketType.HOST
            ct = skb.ct
            if ct is None:
                return False
            h = reciprocal_scale(jhash2([addr_word(ct.tuples[0].src)], seed), total)
            return bool((1 << h) & mask) != invert

        def cluster_mt6(skb: Skb, ctx: XtContext) -> bool:
            """`xt_cluster_mt()` for IPv6: `xt_cluster_is_multicast_addr` on ff00::/8, and
            `xt_cluster_hash_ipv6`: jhash2 over one word, the original source's first 32 bits as they lie in
            memory (see the module docstring)."""
            if skb.pkt_type == PacketType.MULTICAST and skb.daddr >> 120 != 0xFF:
                skb.pkt_type = PacketType.HOST
            ct = skb.ct
            if ct is None:
                return False
            h = reciprocal_scale(jhash2([addr_word(ct.tuples[0].src >> 96)], seed), total)
            return bool((1 << h) & mask) != invert

        return cluster_mt6 if self.family == NFPROTO_IPV6 else cluster_mt
