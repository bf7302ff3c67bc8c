"""`-m socket` (libxt_socket.c revision 3, net/netfilter/xt_socket.c `socket_mt4_v1_v2_v3`).

The kernel looks the packet up in the local socket tables (`nf_sk_lookup_slow_v4`: established, then
listening sockets of its protocol and destination port). natbox's local stack has only the listening
ports the host model declares (`XtContext.socket_listening`), each bound to every address (INADDR_ANY) and
taken as transparent (as -j TPROXY takes them): such a socket is a wildcard one, which the match ignores
unless `--nowildcard`. `--restore-skmark` then copies the socket's mark (0) to the packet.

In ip6tables (`socket_mt6_v1_v2_v3`, `nf_sk_lookup_slow_v6`) the protocol and ports are `ipv6_find_hdr`'s:
for a non-first fragment that is the fragment's payload, read as ports as the kernel reads it.
"""

from __future__ import annotations

from typing import Final

from natbox.netfilter import IPPROTO_TCP, IPPROTO_UDP, NFPROTO_IPV6, Hook
from natbox.rules.api import XtContext
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError, hook_mask_of
from natbox.skb import Skb
from natbox.wire.ipv6 import ipv6_find_hdr
from natbox.wire.layout import L4_DPORT, L4_PORTS_END

__all__ = ["Socket"]

XT_SOCKET_TRANSPARENT, XT_SOCKET_NOWILDCARD, XT_SOCKET_RESTORESKMARK = 1, 2, 4
_VALID_HOOKS: Final = hook_mask_of(Hook.PRE_ROUTING, Hook.LOCAL_IN)
_SPECS: Final = (XtOptSpec("transparent", 0), XtOptSpec("nowildcard", 1), XtOptSpec("restore-skmark", 2))
_BITS: Final = {"transparent": XT_SOCKET_TRANSPARENT, "nowildcard": XT_SOCKET_NOWILDCARD,
         "restore-skmark": XT_SOCKET_RESTORESKMARK}
SOCKET_MARK: Final = 0  # sk_mark of the model's sockets (nothing sets SO_MARK)


class Socket(Match):
    name = "socket"
    revision = 3
    options = (Opt("transparent", 0), Opt("nowildcard", 0), Opt("restore-skmark", 0))

    def __init__(self) -> None:
        self.sflags = 0
        self.flags = XtFlags("socket", _SPECS)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        self.flags.parse(opt)
        self.sflags |= _BITS[opt]

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if hook_mask & ~_VALID_HOOKS:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        return "".join(f" --{w}" for w, b in _BITS.items() if self.sflags & b)

    def print_list(self, numeric: bool) -> str:
        return " socket" + self.save()

    def compile(self) -> MatchFn:
        flags = self.sflags
        nowildcard = bool(flags & XT_SOCKET_NOWILDCARD)
        restore = bool(flags & XT_SOCKET_RESTORESKMARK)

        def socket_mt(skb: Skb, ctx: XtContext) -> bool:
            """`socket_mt4_v1_v2_v3()` with the model's sockets (listening on INADDR_ANY, transparent)."""
            proto = skb.protocol
            if proto not in (IPPROTO_TCP, IPPROTO_UDP) or skb.is_later_fragment:
                return False
            data, pos = skb.data, skb.ihl
            if len(data) < pos + L4_PORTS_END:
                return False
            dport = int.from_bytes(data[pos + L4_DPORT:pos + L4_PORTS_END], "big")
            if not ctx.socket_listening(proto, skb.daddr, dport):
                return False
            # bound to INADDR_ANY: a wildcard socket, ignored without --nowildcard; IP_TRANSPARENT in the model,
            # so --transparent keeps it
            if not nowildcard:
                return False
            if restore:
                skb.mark = SOCKET_MARK
            return True

        def socket_mt6(skb: Skb, ctx: XtContext) -> bool:
            """`socket_mt6_v1_v2_v3()` with the model's sockets (listening on ::, transparent)."""
            found = ipv6_find_hdr(skb.data)
            if found is None or found[1] not in (IPPROTO_TCP, IPPROTO_UDP):
                return False
            data, pos, proto = skb.data, found[0], found[1]
            if len(data) < pos + L4_PORTS_END:
                return False
            dport = int.from_bytes(data[pos + L4_DPORT:pos + L4_PORTS_END], "big")
            if not ctx.socket_listening(proto, skb.daddr, dport) or not nowildcard:
                return False  # no socket, or a wildcard one (bound to ::) without --nowildcard
            if restore:
                skb.mark = SOCKET_MARK
            return True

        return socket_mt6 if self.family == NFPROTO_IPV6 else socket_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return "no match (no local socket, or a wildcard one)"
