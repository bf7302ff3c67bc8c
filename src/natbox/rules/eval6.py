"""ip6tables' standard selectors on an IPv6 packet, as iptables-nft 1.8.9 has the kernel evaluate them.

`-s`/`-d` compare the masked 128-bit addresses. `-p` is nf_tables' `meta l4proto`: the protocol
`nft_set_pktinfo_ipv6` found with `ipv6_find_hdr(skb, &thoff, -1, &frag_off, IP6_FH_F_AUTH)` (extension
headers skipped, AH not: a packet with AH has l4proto 51; a non-first fragment has its Fragment header's next
header, so `-p udp` matches it). When that walk fails (a truncated chain) l4proto is unset and any `-p` test,
inverted or not, does not match (NFT_BREAK); ip6tables-legacy would hotdrop it instead (ipv6-semantics.md
§1.6). `-i`/`-o` are the family-independent matchers of natbox.rules.evaluate.
"""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.model import MatchFn, Rule
from natbox.skb import Skb
from natbox.wire.ipv6 import IP6_FH_F_AUTH, format_addr6, ipv6_find_hdr

__all__ = ["l4proto6", "standard_matchers6", "standard_why6"]


def l4proto6(skb: Skb) -> int | None:
    """`meta l4proto` of an IPv6 packet (`nft_set_pktinfo_ipv6`), None when unset."""
    found = ipv6_find_hdr(skb.data, -1, IP6_FH_F_AUTH)
    return None if found is None else found[1]


def standard_matchers6(rule: Rule) -> list[MatchFn]:
    """The -s, -d and -p closures of an ip6tables rule (only those it uses)."""
    fns: list[MatchFn] = []
    if rule.smsk or rule.inv_src:
        a, m, inv = rule.src, rule.smsk, rule.inv_src

        def src6_mt(skb: Skb, ctx: XtContext) -> bool:
            return ((skb.saddr & m) == a) != inv
        fns.append(src6_mt)
    if rule.dmsk or rule.inv_dst:
        a2, m2, inv2 = rule.dst, rule.dmsk, rule.inv_dst

        def dst6_mt(skb: Skb, ctx: XtContext) -> bool:
            return ((skb.daddr & m2) == a2) != inv2
        fns.append(dst6_mt)
    if rule.proto or rule.inv_proto:
        p, inv4 = rule.proto, rule.inv_proto

        def proto6_mt(skb: Skb, ctx: XtContext) -> bool:
            found = ipv6_find_hdr(skb.data, -1, IP6_FH_F_AUTH)
            return found is not None and (found[1] == p) != inv4
        fns.append(proto6_mt)
    return fns


def standard_why6(rule: Rule, skb: Skb) -> str | None:
    """Why the -s/-d/-p part of an ip6tables rule failed, in the trace's words (None if it matched)."""
    if (rule.smsk or rule.inv_src) and ((skb.saddr & rule.smsk) == rule.src) == rule.inv_src:
        return f"no match (src is {format_addr6(skb.saddr)})"
    if (rule.dmsk or rule.inv_dst) and ((skb.daddr & rule.dmsk) == rule.dst) == rule.inv_dst:
        return f"no match (dst is {format_addr6(skb.daddr)})"
    if rule.proto or rule.inv_proto:
        proto = l4proto6(skb)
        if proto is None or (proto == rule.proto) == rule.inv_proto:
            return f"no match (protocol is {'unknown' if proto is None else proto})"
    return None
