"""`-p tcp|udp -j TPROXY --on-port P [--on-ip ADDR] [--tproxy-mark V[/M]]` (libxt_TPROXY.c rev 1,
net/netfilter/xt_TPROXY.c `tproxy_tg4`, nf_tproxy_ipv4.c).

mangle PREROUTING only, for `-p tcp` or `-p udp`. The packet is given to a transparent socket of the host
listening on `--on-ip` (default: the first primary address of the input device, else the packet's
destination, `nf_tproxy_laddr4`) and `--on-port` (0: the packet's destination port), the mark is set
(`(mark & ~M) ^ V`) and the packet is accepted; with no such socket it is dropped. natbox's local stack
keeps no established sockets, so only the listener lookup is made; its listeners count as transparent
sockets, and a packet with a socket assigned is delivered locally (docs/differences.md).

In ip6tables (`tproxy_tg6_v1`, nf_tproxy_ipv6.c) the protocol and ports are found with `ipv6_find_hdr` (no
upper-layer header, or one cut short: drop), `--on-ip` is an IPv6 address and its default the in-device's
first usable address, else the destination (`nf_tproxy_laddr6`, taken as REDIRECT6's choice here).
"""

from __future__ import annotations

from typing import Final

from natbox.conntrack.tuple import format_addr
from natbox.netfilter import NFPROTO_IPV6, Hook
from natbox.rules.api import NF_ACCEPT, NF_DROP, XtContext
from natbox.rules.matches.mark import parse_mark_mask
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn, hook_mask_of
from natbox.rules.services import service_port
from natbox.rules.targets.tee import parse_host, parse_host6
from natbox.skb import Skb
from natbox.wire.ipv6 import format_addr6, ipv6_find_hdr
from natbox.wire.layout import L4_DPORT, UDPH_LEN_BYTES

__all__ = ["Tproxy"]

TPROXY_HOOKS: Final = hook_mask_of(Hook.PRE_ROUTING)


def _parse_port(text: str) -> int:
    """XTTYPE_PORT (`xtables_getportbyname`: getaddrinfo's service lookup, a number cut to 16 bits)."""
    if text.isdigit():
        return int(text) & 0xFFFF
    port = service_port(text, None)
    if port is None:
        raise RulesError(f'Port "{text}" does not resolve to anything.\n')
    return port


class Tproxy(Target):
    name = "TPROXY"
    revision = 1
    options = (Opt("on-port", 1), Opt("on-ip", 1), Opt("tproxy-mark", 1))

    def __init__(self) -> None:
        self.lport: int | None = None
        self.laddr = 0
        self.mark_value = self.mark_mask = 0
        self.given: set[str] = set()

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt not in ("on-port", "on-ip", "tproxy-mark"):
            super().parse(opt, arg, inverted, rule)
        if opt in self.given:
            raise RulesError(f'TPROXY: option "--{opt}" can only be used once.\n')
        self.given.add(opt)
        a = arg or ""
        if opt == "on-port":
            self.lport = _parse_port(a)
        elif opt == "on-ip":
            self.laddr = parse_host6(a) if rule.family == NFPROTO_IPV6 else parse_host(a)
        else:
            self.mark_value, self.mark_mask = parse_mark_mask(a, "TPROXY", opt)

    def final_check(self, rule: Rule) -> None:
        if self.lport is None:
            raise RulesError('TPROXY: option "--on-port" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """The target's `.table = "mangle"`, `.hooks = PREROUTING`, and `tproxy_tg4_check` (tcp or udp)."""
        if table != "mangle" or hook_mask & ~TPROXY_HOOKS or rule.proto not in (6, 17) or rule.inv_proto:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _addr(self) -> str:
        return format_addr6(self.laddr) if self.family == NFPROTO_IPV6 else format_addr(self.laddr)

    def save(self) -> str:
        return (f" --on-port {self.lport or 0} --on-ip {self._addr()}"
                f" --tproxy-mark 0x{self.mark_value:x}/0x{self.mark_mask:x}")

    def print_list(self, numeric: bool) -> str:
        return (f" TPROXY redirect {self._addr()}:{self.lport or 0}"  # tproxy_tg_print6: no brackets either
                f" mark 0x{self.mark_value:x}/0x{self.mark_mask:x}")

    def compile(self) -> TargetFn:
        laddr, lport, value, mask = self.laddr, self.lport or 0, self.mark_value, self.mark_mask

        def tproxy_tg4(skb: Skb, ctx: XtContext) -> int:
            data, th = skb.data, skb.ihl
            if len(data) < th + UDPH_LEN_BYTES:
                return NF_DROP
            dport = (data[th + L4_DPORT] << 8) | data[th + L4_DPORT + 1]
            port = lport or dport
            addr = laddr or ctx.iface_primary_addr(skb.iif) or skb.daddr  # nf_tproxy_laddr4
            proto = skb.protocol
            if not ctx.socket_listening(proto, addr, port):
                skb.note = f"TPROXY: no transparent socket on {format_addr(addr)}:{port}"
                return NF_DROP
            skb.mark = ((skb.mark & ~mask) ^ value) & 0xFFFFFFFF
            skb.sk = (proto, port)  # nf_tproxy_assign_sock
            return NF_ACCEPT

        def tproxy_tg6(skb: Skb, ctx: XtContext) -> int:
            """`tproxy_tg6_v1()` (listener lookup only, as for IPv4)."""
            data = skb.data
            found = ipv6_find_hdr(data)
            if found is None:
                return NF_DROP
            th, proto = found[0], found[1]
            if len(data) < th + UDPH_LEN_BYTES:
                return NF_DROP
            port = lport or (data[th + L4_DPORT] << 8) | data[th + L4_DPORT + 1]
            addr = laddr or ctx.iface_primary_addr(skb.iif) or skb.daddr  # nf_tproxy_laddr6
            if not ctx.socket_listening(proto, addr, port):
                skb.note = f"TPROXY: no transparent socket on [{format_addr6(addr)}]:{port}"
                return NF_DROP
            skb.mark = ((skb.mark & ~mask) ^ value) & 0xFFFFFFFF
            skb.sk = (proto, port)
            return NF_ACCEPT

        return tproxy_tg6 if self.family == NFPROTO_IPV6 else tproxy_tg4
