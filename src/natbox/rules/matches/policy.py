"""`-m policy --dir in|out --pol none|ipsec [--strict] [element [--next element]...]` (libxt_policy.c,
net/netfilter/xt_policy.c `policy_mt`).

natbox models no IPsec: no packet has a sec path (`skb_sec_path`) or an xfrm bundle on its route
(`skb_dst(skb)->xfrm`), so `match_policy_in`/`match_policy_out` return -1 and `policy_mt` answers
`info->flags & XT_POLICY_MATCH_NONE`: `--pol none` always matches, `--pol ipsec` never
(docs/differences.md). Parsing, `policy_check` and the kernel's hook checks are iptables' and Linux's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from natbox.netfilter import Hook
from natbox.rules.addr6 import format_addr6_mask, parse_hostmask
from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_protocol, proto_name
from natbox.rules.matches._xtopt import U32_MAX, parse_value
from natbox.rules.model import (
    NFPROTO_IPV4,
    RESOURCE_PROBLEM,
    Match,
    MatchFn,
    Opt,
    Rule,
    RulesError,
    format_addr_mask,
    hook_mask_of,
)
from natbox.skb import Skb

__all__ = ["Policy"]

XT_POLICY_MATCH_IN: Final = 0x1
XT_POLICY_MATCH_OUT: Final = 0x2
XT_POLICY_MATCH_NONE: Final = 0x4
XT_POLICY_MATCH_STRICT: Final = 0x8
XT_POLICY_MAX_ELEM: Final = 4
XT_POLICY_MODE_TRANSPORT: Final = 0
XT_POLICY_MODE_TUNNEL: Final = 1
IPPROTO_AH, IPPROTO_ESP, IPPROTO_COMP = 51, 50, 108
_IN_HOOKS: Final = hook_mask_of(Hook.PRE_ROUTING, Hook.LOCAL_IN)
_OUT_HOOKS: Final = hook_mask_of(Hook.POST_ROUTING, Hook.LOCAL_OUT)


@dataclass
class PolicyElem:
    """`struct xt_policy_elem`: the selectors given (`match`), their values and inversions."""

    match: dict[str, bool] = field(default_factory=dict)  # selector -> inverted
    reqid: int = 0
    spi: int = 0
    proto: int = 0
    mode: int = XT_POLICY_MODE_TRANSPORT
    saddr: tuple[int, int] = (0, 0)
    daddr: tuple[int, int] = (0, 0)
    family: int = NFPROTO_IPV4  # ip6tables: 128-bit tunnel addresses

    def text(self, prefix: str, numeric: bool) -> str:
        """`print_entry`."""
        out = ""
        for key in ("reqid", "spi", "proto", "mode", "tunnel-dst", "tunnel-src"):
            if key not in self.match:
                continue
            out += " !" if self.match[key] else ""
            if key == "reqid":
                out += f" {prefix}reqid {self.reqid}"
            elif key == "spi":
                out += f" {prefix}spi 0x{self.spi:x}"
            elif key == "proto":
                name = None if numeric else proto_name(self.proto, False)
                out += f" {prefix}proto {name or self.proto}"
            elif key == "mode":
                out += f" {prefix}mode " + ("tunnel" if self.mode == XT_POLICY_MODE_TUNNEL else "transport")
            else:
                addr, mask = self.daddr if key == "tunnel-dst" else self.saddr
                out += f" {prefix}{key} " + (format_addr_mask(addr, mask, always_prefix=False)
                                             if self.family == NFPROTO_IPV4
                                             else format_addr6_mask(addr, mask, always_prefix=False))
        return out


class Policy(Match):
    name = "policy"
    options = (
        Opt("dir", 1), Opt("pol", 1), Opt("strict", 0), Opt("reqid", 1, True), Opt("spi", 1, True),
        Opt("tunnel-src", 1, True), Opt("tunnel-dst", 1, True), Opt("proto", 1, True), Opt("mode", 1, True),
        Opt("next", 0),
    )
    checkentry_hooks = True  # policy_mt_check tests par->hook_mask

    def __init__(self) -> None:
        self.flags = 0
        self.pol: list[PolicyElem] = [PolicyElem()]
        self.seen: set[str] = set()

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt in ("dir", "pol", "strict") and opt in self.seen:
            raise RulesError(f'policy: option "--{opt}" can only be used once.\n')
        self.seen.add(opt)
        a = arg or ""
        e = self.pol[-1]
        if opt == "dir":
            if a not in ("in", "out"):
                raise RulesError(f'policy_match: invalid dir "{a}"')
            self.flags |= XT_POLICY_MATCH_IN if a == "in" else XT_POLICY_MATCH_OUT
        elif opt == "pol":
            if a not in ("none", "ipsec"):
                raise RulesError(f'policy match: invalid policy "{a}"')
            self.flags |= XT_POLICY_MATCH_NONE if a == "none" else 0
        elif opt == "strict":
            self.flags |= XT_POLICY_MATCH_STRICT
        elif opt == "next":
            if "strict" not in self.seen:
                raise RulesError('policy: option "--next" also requires "--strict".\n')
            if len(self.pol) == XT_POLICY_MAX_ELEM:
                raise RulesError("policy match: maximum policy depth reached")
            self.pol.append(PolicyElem())
        else:
            e.family = rule.family
            self._parse_elem(e, opt, a, inverted)

    @staticmethod
    def _parse_elem(e: PolicyElem, opt: str, a: str, inverted: bool) -> None:
        if opt in e.match:
            raise RulesError(f"policy match: double --{opt} option")
        if opt in ("reqid", "spi"):
            setattr(e, opt, parse_value("policy", opt, a, U32_MAX))
        elif opt in ("tunnel-src", "tunnel-dst"):
            am = parse_hostmask(a, e.family, "policy", opt)
            if opt == "tunnel-src":
                e.saddr = am
            else:
                e.daddr = am
        elif opt == "proto":
            e.proto = parse_protocol(a)
            if e.proto not in (IPPROTO_AH, IPPROTO_ESP, IPPROTO_COMP):
                raise RulesError("policy match: protocol must be ah/esp/ipcomp")
        elif opt == "mode":
            if a not in ("transport", "tunnel"):
                raise RulesError(f'policy match: invalid mode "{a}"')
            e.mode = XT_POLICY_MODE_TUNNEL if a == "tunnel" else XT_POLICY_MODE_TRANSPORT
        else:
            raise RulesError(f'unknown option "--{opt}"')
        e.match[opt] = inverted

    def final_check(self, rule: Rule) -> None:
        """`policy_check`."""
        if not self.flags & (XT_POLICY_MATCH_IN | XT_POLICY_MATCH_OUT):
            raise RulesError("policy match: neither --dir in nor --dir out specified")
        if self.flags & XT_POLICY_MATCH_NONE:
            if self.flags & XT_POLICY_MATCH_STRICT:
                raise RulesError("policy match: policy none but --strict given")
            if len(self.pol) > 1 or self.pol[0].match:
                raise RulesError("policy match: policy none but policy given")
        for i, e in enumerate(self._elems()):
            if self.flags & XT_POLICY_MATCH_STRICT and not e.match:
                raise RulesError(
                    f"policy match: empty policy element {i}. --strict is in effect, but at least one of "
                    "reqid, spi, tunnel-src, tunnel-dst, proto or mode is required.")
            inv_mode = e.match.get("mode", False)
            if ("tunnel-src" in e.match or "tunnel-dst" in e.match) and (
                    (e.mode == XT_POLICY_MODE_TUNNEL and inv_mode)
                    or (e.mode == XT_POLICY_MODE_TRANSPORT and not inv_mode)):
                raise RulesError("policy match: --tunnel-src/--tunnel-dst is only valid in tunnel mode")

    def _elems(self) -> list[PolicyElem]:
        """The elements `info->len` counts: none for `--pol none`."""
        return [] if self.flags & XT_POLICY_MATCH_NONE else self.pol

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`policy_mt_check`: an output policy is not valid in PREROUTING/INPUT, an input one in
        POSTROUTING/OUTPUT."""
        if ((hook_mask & _IN_HOOKS and self.flags & XT_POLICY_MATCH_OUT)
                or (hook_mask & _OUT_HOOKS and self.flags & XT_POLICY_MATCH_IN)):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _flags_text(self, prefix: str) -> str:
        out = f" {prefix}dir " + ("in" if self.flags & XT_POLICY_MATCH_IN else "out")
        out += f" {prefix}pol " + ("none" if self.flags & XT_POLICY_MATCH_NONE else "ipsec")
        return out + (f" {prefix}strict" if self.flags & XT_POLICY_MATCH_STRICT else "")

    def save(self) -> str:
        elems = self._elems()
        return self._flags_text("--") + " --next".join(e.text("--", False) for e in elems)

    def print_list(self, numeric: bool) -> str:
        elems = self._elems()
        out = " policy match" + self._flags_text("")
        for i, e in enumerate(elems):
            out += (f" [{i}]" if len(elems) > 1 else "") + e.text("", numeric)
        return out

    def compile(self) -> MatchFn:
        hit = bool(self.flags & XT_POLICY_MATCH_NONE)  # no sec path, no xfrm: ret = -1

        def policy_mt(skb: Skb, ctx: XtContext) -> bool:
            return hit

        return policy_mt
