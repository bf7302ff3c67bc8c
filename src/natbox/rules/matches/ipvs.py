"""`-m ipvs` (libxt_ipvs.c, net/netfilter/xt_ipvs.c `ipvs_mt`): properties of IPVS connections.

natbox has no IPVS: no packet has `skb->ipvs_property`, so `--ipvs` never matches, `! --ipvs` alone always
does, and a rule with any other option never matches, inverted or not (`ipvs_mt` returns false for a
non-IPVS packet before comparing them). The rule is parsed, checked and printed as iptables does
(docs/differences.md); in ip6tables `--vaddr` is an IPv6 address with an optional prefix length
(libxt_ipvs's `ipvs_mt_dump_addr` prints it with xtables_ip6mask_to_numeric).
"""

from __future__ import annotations

from typing import Final

from natbox.rules.addr6 import format_addr6_mask, parse_ipv6
from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_protocol, parse_uint
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec, parse_plen, parse_plen6, plen_mask, plen_mask6
from natbox.rules.model import NFPROTO_IPV6, Match, MatchFn, Opt, Rule, RulesError, format_addr_mask, parse_ipv4
from natbox.rules.services import service_port
from natbox.skb import Skb

__all__ = ["Ipvs"]

(XT_IPVS_IPVS_PROPERTY, XT_IPVS_PROTO, XT_IPVS_VADDR, XT_IPVS_VPORT, XT_IPVS_DIR, XT_IPVS_METHOD,
 XT_IPVS_VPORTCTL) = (1 << i for i in range(7))
XT_IPVS_ONCE_MASK: Final = 0x7F & ~XT_IPVS_IPVS_PROPERTY
IP_VS_CONN_F_MASQ, IP_VS_CONN_F_TUNNEL, IP_VS_CONN_F_DROUTE = 0, 2, 3
_METHODS: Final = {"GATE": IP_VS_CONN_F_DROUTE, "IPIP": IP_VS_CONN_F_TUNNEL, "MASQ": IP_VS_CONN_F_MASQ}
_NAMES: Final = ("ipvs", "vproto", "vaddr", "vport", "vdir", "vmethod", "vportctl")
_SPECS: Final = tuple(XtOptSpec(n, i) for i, n in enumerate(_NAMES))


def _port(text: str) -> int:
    """`xtopt_parse_port` (`xtables_getportbyname`): a number or a service name."""
    v = parse_uint(text, 0, 0xFFFF)
    if v is None and text.isdigit():
        v = int(text) & 0xFFFF  # getaddrinfo's numeric service, cut to 16 bits
    if v is None:
        v = service_port(text, None)
    if v is None:
        raise RulesError(f'Port "{text}" does not resolve to anything.\n')
    return v


def _hostmask(text: str, family: int) -> tuple[int, int]:
    """`xtopt_parse_hostmask`: an address and an optional /prefix or /mask (the address is not masked); in
    ip6tables getaddrinfo looks the host up as AF_INET6 (an IPv4 address: "Address family ... not supported")."""
    a, slash, m = text.partition("/")
    if family == NFPROTO_IPV6:
        addr6 = parse_ipv6(a)
        if addr6 is None:
            if a.count(".") == 3 and parse_ipv4(a) is not None:
                raise RulesError("getaddrinfo: Address family for hostname not supported\n")
            raise RulesError("getaddrinfo: Name or service not known\n")
        return addr6, plen_mask6(parse_plen6("ipvs", "vaddr", m)) if slash else (1 << 128) - 1
    addr = parse_ipv4(a) if a.count(".") == 3 else None
    if addr is None:
        raise RulesError("getaddrinfo: Name or service not known\n")
    return addr, plen_mask(parse_plen("ipvs", "vaddr", m)) if slash else 0xFFFFFFFF


class Ipvs(Match):
    name = "ipvs"
    options = (Opt("ipvs", 0, True), Opt("vproto", 1, True), Opt("vaddr", 1, True), Opt("vport", 1, True),
               Opt("vdir"), Opt("vmethod", 1, True), Opt("vportctl", 1, True))

    def __init__(self) -> None:
        self.bitmask = self.invert = 0
        self.l4proto = self.vport = self.vportctl = self.fwd_method = 0
        self.vaddr, self.vmask = 0, 0
        self.family = 0  # the rule's (NFPROTO_IPV6: --vaddr is an IPv6 address)
        self.flags = XtFlags("ipvs", _SPECS)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        e = self.flags.parse(opt)
        a = arg or ""
        if opt == "vproto":
            self.l4proto = parse_protocol(a)
        elif opt == "vaddr":
            self.family = rule.family
            self.vaddr, self.vmask = _hostmask(a, rule.family)
        elif opt == "vport":
            self.vport = _port(a)
        elif opt == "vportctl":
            self.vportctl = _port(a)
        elif opt == "vdir":
            if a.upper() not in ("ORIGINAL", "REPLY"):
                raise RulesError(f'ipvs: Bad value for "--vdir" option: "{a}"')
            self.bitmask |= XT_IPVS_DIR
            self.invert = self.invert | XT_IPVS_DIR if a.upper() == "REPLY" else self.invert & ~XT_IPVS_DIR
        elif opt == "vmethod":
            if a.upper() not in _METHODS:
                raise RulesError(f'ipvs: Bad value for "--vmethod" option: "{a}"')
            self.fwd_method = _METHODS[a.upper()]
        self.bitmask |= 1 << e.id
        if inverted:
            self.invert |= 1 << e.id

    def final_check(self, rule: Rule) -> None:
        """`ipvs_mt_check()` of libxt_ipvs."""
        if not self.flags.flags:
            raise RulesError("IPVS: At least one option is required")
        if self.bitmask & XT_IPVS_ONCE_MASK:
            if self.invert & XT_IPVS_IPVS_PROPERTY:
                raise RulesError("! --ipvs cannot be together with other options")
            self.bitmask |= XT_IPVS_IPVS_PROPERTY
        self.flags.fcheck()

    def _dump(self, numeric: bool, pfx: str) -> str:
        b, inv, out = self.bitmask, self.invert, ""
        if b == XT_IPVS_IPVS_PROPERTY:
            out += (" !" if inv & XT_IPVS_IPVS_PROPERTY else "") + f" {pfx}ipvs"
        if b & XT_IPVS_PROTO:
            out += (" !" if inv & XT_IPVS_PROTO else "") + f" {pfx}vproto {self.l4proto}"
        if b & XT_IPVS_VADDR:
            out += (" !" if inv & XT_IPVS_VADDR else "") + f" {pfx}vaddr"
            if not numeric and self.vaddr == 0:
                out += " anywhere"
            elif self.family == NFPROTO_IPV6:
                out += " " + format_addr6_mask(self.vaddr, self.vmask, always_prefix=False)
            else:
                out += " " + format_addr_mask(self.vaddr, self.vmask, numeric=numeric, always_prefix=False)
        if b & XT_IPVS_VPORT:
            out += (" !" if inv & XT_IPVS_VPORT else "") + f" {pfx}vport {self.vport}"
        if b & XT_IPVS_DIR:
            out += f" {pfx}vdir {'REPLY' if inv & XT_IPVS_DIR else 'ORIGINAL'}"
        if b & XT_IPVS_METHOD:
            name = {v: k for k, v in _METHODS.items()}.get(self.fwd_method, "UNKNOWN")
            out += (" !" if inv & XT_IPVS_METHOD else "") + f" {pfx}vmethod {name}"
        if b & XT_IPVS_VPORTCTL:
            out += (" !" if inv & XT_IPVS_VPORTCTL else "") + f" {pfx}vportctl {self.vportctl}"
        return out

    def save(self) -> str:
        return self._dump(True, "--")

    def print_list(self, numeric: bool) -> str:
        return self._dump(numeric, "")

    def compile(self) -> MatchFn:
        # no IPVS: skb->ipvs_property is 0 (ipvs_mt)
        hit = self.bitmask == XT_IPVS_IPVS_PROPERTY and bool(self.invert & XT_IPVS_IPVS_PROPERTY)

        def ipvs_mt(skb: Skb, ctx: XtContext) -> bool:
            return hit

        return ipvs_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return "no match (no IPVS in natbox)"
