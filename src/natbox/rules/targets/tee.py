"""`-j TEE --gateway ADDR [--oif DEV]` (libxt_TEE.c rev 1, net/netfilter/xt_TEE.c `tee_tg4`,
net/ipv4/netfilter/nf_dup_ipv4.c `nf_dup_ipv4`).

A copy of the packet, untracked, with DF set (and one TTL less at PREROUTING and INPUT), is routed to the
gateway as its next hop and sent through LOCAL_OUT at once; the original continues with the next rule.
A copy never makes another copy (a TEE rule the copy meets does nothing). The gateway may not be 0.0.0.0;
`--oif` restricts the route to that device while it exists.

In ip6tables (`tee_tg6`, nf_dup_ipv6.c) the gateway is an IPv6 address (not ::); the copy's hop limit is one
lower at PREROUTING and INPUT, and `--oif` makes the lookup strict to that device.
"""

from __future__ import annotations

from natbox.conntrack.tuple import format_addr
from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.model import IFNAMSIZ, RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn, parse_ipv4
from natbox.skb import Skb
from natbox.wire.ipv6 import format_addr6, parse_addr6

__all__ = ["Tee", "parse_host", "parse_host6"]


def parse_host6(text: str) -> int:
    """XTTYPE_HOST in ip6tables (`getaddrinfo` with AF_INET6): a numeric IPv6 address or "localhost" (::1); an
    IPv4 literal is "Address family for hostname not supported"."""
    if text == "localhost":
        return 1
    if parse_ipv4(text) is not None:
        raise RulesError("getaddrinfo: Address family for hostname not supported\n")
    try:
        return parse_addr6(text)
    except ValueError:
        raise RulesError("getaddrinfo: Name or service not known\n") from None


def parse_host(text: str) -> int:
    """XTTYPE_HOST (`getaddrinfo` of one name): a numeric address or "localhost"; natbox resolves no other
    name."""
    if text == "localhost":
        return 0x7F000001
    addr = parse_ipv4(text) if text and text.replace(".", "").isdigit() and ".." not in text else None
    if addr is None:
        raise RulesError("getaddrinfo: Name or service not known\n")
    return addr


class Tee(Target):
    name = "TEE"
    revision = 1
    options = (Opt("gateway", 1), Opt("oif", 1))

    def __init__(self) -> None:
        self.gw: int | None = None
        self.oif = ""

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt not in ("gateway", "oif"):
            super().parse(opt, arg, inverted, rule)
        if opt == "gateway":
            if self.gw is not None:
                raise RulesError('TEE: option "--gateway" can only be used once.\n')
            self.gw = parse_host6(arg or "") if rule.family == NFPROTO_IPV6 else parse_host(arg or "")
        else:
            if self.oif:
                raise RulesError('TEE: option "--oif" can only be used once.\n')
            self.oif = (arg or "")[:IFNAMSIZ - 1]  # xtopt_parse_string into char oif[16]

    def final_check(self, rule: Rule) -> None:
        if self.gw is None:
            raise RulesError('TEE: option "--gateway" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if not self.gw:  # tee_tg_check: 0.0.0.0 is not a gateway
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _gw_text(self) -> str:
        return format_addr6(self.gw or 0) if self.family == NFPROTO_IPV6 else format_addr(self.gw or 0)

    def save(self) -> str:
        return f" --gateway {self._gw_text()}" + (f" --oif {self.oif}" if self.oif else "")

    def print_list(self, numeric: bool) -> str:
        if self.family == NFPROTO_IPV6:  # tee_tg6_print: the address (natbox resolves no name)
            return f" TEE gw:{self._gw_text()}" + (f" oif={self.oif}" if self.oif else "")
        gw = self.gw or 0
        name = "localhost" if not numeric and gw == 0x7F000001 else format_addr(gw)
        return f" TEE gw:{name}" + (f" oif={self.oif}" if self.oif else "")

    def compile(self) -> TargetFn:
        gw, oif = self.gw or 0, self.oif

        def tee_tg4(skb: Skb, ctx: XtContext) -> int:
            ctx.dup(skb, gw, oif)
            return XT_CONTINUE

        return tee_tg4
