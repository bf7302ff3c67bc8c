"""`-j SNAT` / `-j DNAT` (libxt_NAT.c, xt_nat.c rev 2), range parsing shared with MASQUERADE/REDIRECT (§5.1)."""

from __future__ import annotations

from typing import Final

from natbox.nat.range import NatRange, RangeFlags
from natbox.netfilter import Hook, ManipType
from natbox.rules.addr6 import format_addr6, parse_ipv6
from natbox.rules.api import XtContext
from natbox.rules.matches.icmp6 import strtoul_prefix
from natbox.rules.model import (
    NFPROTO_IPV4,
    RESOURCE_PROBLEM,
    Opt,
    Rule,
    RulesError,
    Target,
    TargetFn,
    format_addr_mask,
    hook_mask_of,
    parse_ipv4,
)
from natbox.rules.services import service_port
from natbox.skb import Skb

__all__ = ["Dnat", "NatTarget", "Snat", "check_nat_hooks", "parse_nat_ports", "range_text"]

_PORT_OK_PROTOS: Final = frozenset({6, 17, 132, 33, 1})  # portok in __NAT_parse (ICMP: the echo id)
# the flags as plain ints: ranges are parsed and printed by the thousand in big rulesets, and IntFlag's `&`
# and `|` are slow
_MAP_IPS, _PROTO_SPECIFIED, _PROTO_OFFSET = int(RangeFlags.MAP_IPS), int(RangeFlags.PROTO_SPECIFIED), \
    int(RangeFlags.PROTO_OFFSET)
_RANDOM, _RANDOM_FULLY, _PERSISTENT = int(RangeFlags.PROTO_RANDOM), int(RangeFlags.PROTO_RANDOM_FULLY), \
    int(RangeFlags.PERSISTENT)
_NO_RANGE: Final = NatRange()  # ranges are immutable: one empty range for every new target


def _port_ok(rule: Rule) -> bool:
    return rule.proto in _PORT_OK_PROTOS


def _strtoui(text: str, lo: int, hi: int) -> tuple[int | None, int]:
    """`xtables_strtoui(text, &end, &v, lo, hi)`: the number strtoumax reads at the start (base 0; a `-` after
    the blanks refuses), None when there is none or it is out of [lo, hi]; and where it ended."""
    if text.lstrip(" \t\n\r\f\v").startswith("-"):
        return None, 0
    v, end = strtoul_prefix(text, 0)
    return (v if v is not None and lo <= v <= hi else None), end


def parse_nat_ports(arg: str, portok: bool) -> tuple[int, int, int, RangeFlags]:
    """`parse_ports` of libipt_DNAT.c / libxt_NAT.c (1.8.9): `p`, `p-q`, `p-q/base` → (min, max, base, flags).
    The first port and the base may be service names; trailing text after the base is ignored, as there."""
    if not portok:
        raise RulesError("Need TCP, UDP, SCTP or DCCP with port specification")
    flags = RangeFlags.PROTO_SPECIFIED
    if arg.isascii() and arg.isdigit() and len(arg) <= 5 and arg[0] != "0":  # a plain port: the short way
        port = int(arg)
        if port <= 65535:
            return port, port, 0, flags
    port_or_none, end = _strtoui(arg, 0, 65535)
    if port_or_none is None:
        sp = service_port(arg, None)
        if sp is None:
            raise RulesError(f"Port `{arg}' not valid")
        return sp, sp, 0, flags
    port = port_or_none
    if end == len(arg):
        return port, port, 0, flags
    if arg[end] == ":":
        raise RulesError("Invalid port:port syntax - use dash")
    if arg[end] != "-":
        raise RulesError(f"Garbage after port value: `{arg[end:]}'")
    rest = arg[end + 1:]  # a range: no service names here
    maxport, end = _strtoui(rest, 0, 65535)
    if maxport is None:
        raise RulesError(f"Port `{rest}' not valid")
    if maxport < port:
        raise RulesError(f"Port range `{rest}' funky")
    if end == len(rest):
        return port, maxport, 0, flags
    if rest[end] != "/":
        raise RulesError(f"Garbage after port range: `{rest[end:]}'")
    base_s = rest[end + 1:]
    base, _end = _strtoui(base_s, 1, 65535)
    if base is None:
        base = service_port(base_s, None)
        if base is None:
            raise RulesError(f"Port `{base_s}' not valid")
    return port, maxport, base, flags | RangeFlags.PROTO_OFFSET


def parse_nat_to6(arg: str, portok: bool) -> NatRange:
    """`parse_to` for IPv6: `a[-b]`, `[a[-b]]:p[-q][/base]`, `:p...`; without brackets one colon means a port,
    more mean an address."""
    flags = RangeFlags(0)
    pmin = pmax = base = 0
    if arg.startswith("["):
        end = arg.find("]")
        if end < 0:
            raise RulesError("Invalid address format")
        start, rest = arg[1:end], arg[end + 1:]
        colon = rest.find(":")
        port_part = rest[colon + 1:] if colon >= 0 else None
    else:
        start, port_part = arg, None
        if arg.count(":") == 1:
            start, _, port_part = arg.partition(":")
    if port_part is not None:
        pmin, pmax, base, pflags = parse_nat_ports(port_part, portok)
        flags |= pflags
        if not start:
            return NatRange(flags, 0, 0, pmin, pmax, base)
    lo_s, dash, hi_s = start.partition("-")
    lo = parse_ipv6(lo_s)
    if lo is None:
        raise RulesError(f'Bad IP address "{lo_s}"')
    hi = lo
    if dash:
        hi2 = parse_ipv6(hi_s)
        if hi2 is None:
            raise RulesError(f'Bad IP address "{hi_s}"')
        hi = hi2
    return NatRange(flags | RangeFlags.MAP_IPS, lo, hi, pmin, pmax, base)


def parse_nat_to(arg: str, portok: bool, family: int = NFPROTO_IPV4) -> NatRange:
    """`parse_to`: `[a[-b]][:p[-q][/base]]` (IPv6: parse_nat_to6)."""
    if family != NFPROTO_IPV4:
        return parse_nat_to6(arg, portok)
    bits = 0  # the flags as an int until the end (IntFlag arithmetic is slow, and ranges are parsed by the
    # thousand in big rulesets)
    pmin = pmax = base = 0
    addr_part = arg
    if arg.count(":") == 1:  # more than one colon: parse_to takes it for an IPv6 address
        addr_part, _, port_part = arg.partition(":")
        pmin, pmax, base, pflags = parse_nat_ports(port_part, portok)
        bits |= pflags.value
    amin = amax = 0
    if addr_part:
        bits |= _MAP_IPS
        lo_s, dash, hi_s = addr_part.partition("-")
        lo = parse_ipv4(lo_s) if lo_s.count(".") == 3 else None
        if lo is None and not dash:
            raise RulesError(f'Bad IP address "{addr_part}"')
        if lo is None:
            raise RulesError(f'Bad IP address "{lo_s}"')
        hi = lo
        if dash:
            hi2 = parse_ipv4(hi_s) if hi_s.count(".") == 3 else None
            if hi2 is None:
                raise RulesError(f'Bad IP address "{hi_s}"')
            hi = hi2
        amin, amax = lo, hi
    return NatRange(RangeFlags(bits), amin, amax, pmin, pmax, base)


def range_text(r: NatRange, skip_colon: bool, family: int = NFPROTO_IPV4) -> str:
    """`sprint_range`: `a[-b][:p[-q][/base]]` (the leading ':' dropped when `skip_colon` and no address);
    IPv6 addresses in brackets when a port follows."""
    out = ""
    flags = int(r.flags)
    if flags & _MAP_IPS and family != NFPROTO_IPV4:
        out = format_addr6(r.min_addr) + (f"-{format_addr6(r.max_addr)}" if r.max_addr != r.min_addr else "")
        if flags & _PROTO_SPECIFIED:
            out = f"[{out}]"
    elif flags & _MAP_IPS:
        out = format_addr_mask(r.min_addr, 0xFFFFFFFF, always_prefix=False)
        if r.max_addr != r.min_addr:
            out += "-" + format_addr_mask(r.max_addr, 0xFFFFFFFF, always_prefix=False)
    if flags & _PROTO_SPECIFIED:
        out += f":{r.min_proto}"
        if r.max_proto != r.min_proto:
            out += f"-{r.max_proto}"
        if flags & _PROTO_OFFSET:
            out += f"/{r.base_proto}"
    if skip_colon and out.startswith(":"):
        out = out[1:]
    return out


def nat_print(r: NatRange, rangeopt: str, flag_pfx: str, skip_colon: bool, family: int = NFPROTO_IPV4) -> str:
    """`__NAT_print`."""
    text = range_text(r, skip_colon, family)
    out = f" {rangeopt}{text}" if text else ""
    flags = int(r.flags)
    if flags & _RANDOM:
        out += f" {flag_pfx}random"
    if flags & _RANDOM_FULLY:
        out += f" {flag_pfx}random-fully"
    if flags & _PERSISTENT:
        out += f" {flag_pfx}persistent"
    return out


def check_nat_hooks(table: str, hook_mask: int, valid: int) -> None:
    """xt_nat/xt_MASQUERADE/xt_REDIRECT `.table = "nat"` and `.hooks` (x_tables `xt_check_target`)."""
    if table != "nat" or hook_mask & ~valid:
        raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)


class NatTarget(Target):
    """Shared state: one `NatRange` built from the options, plus flags."""

    range_opt = ""
    manip = ManipType.SRC
    valid_hooks = 0

    def __init__(self) -> None:
        self.range = _NO_RANGE
        self.seen_to = False
        self.family = NFPROTO_IPV4  # the rule's: NFPROTO_IPV6 ranges hold 128-bit addresses

    def _flag(self, opt: str) -> bool:
        bit = {"random": RangeFlags.PROTO_RANDOM, "random-fully": RangeFlags.PROTO_RANDOM_FULLY,
               "persistent": RangeFlags.PERSISTENT}.get(opt)
        if bit is None:
            return False
        r = self.range
        self.range = NatRange(r.flags | bit, r.min_addr, r.max_addr, r.min_proto, r.max_proto, r.base_proto)
        return True

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt == self.range_opt:
            if self.seen_to:
                raise RulesError(f'{self.name}: option "--{opt}" can only be used once.\n')
            self.seen_to = True
            self.family = rule.family
            r = parse_nat_to(arg or "", _port_ok(rule), rule.family)
            if self.range.flags:  # --random etc. came first
                r = NatRange(r.flags | self.range.flags, r.min_addr, r.max_addr, r.min_proto, r.max_proto,
                             r.base_proto)
            self.range = r
        elif not self._flag(opt):
            super().parse(opt, arg, inverted, rule)

    def final_check(self, rule: Rule) -> None:
        if not self.seen_to:
            raise RulesError(f'{self.name}: option "--{self.range_opt}" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        check_nat_hooks(table, hook_mask, self.valid_hooks)

    def save(self) -> str:
        return nat_print(self.range, f"--{self.range_opt} ", "--", False, self.family)

    def print_list(self, numeric: bool) -> str:
        return nat_print(self.range, "to:", "", False, self.family)

    def compile(self) -> TargetFn:
        rng, manip = self.range, self.manip

        def nat_tg(skb: Skb, ctx: XtContext) -> int:
            return ctx.nat_setup_info(skb, rng, manip)

        return nat_tg


class Snat(NatTarget):
    name = "SNAT"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    revision = 2
    range_opt = "to-source"
    manip = ManipType.SRC
    valid_hooks = hook_mask_of(Hook.POST_ROUTING, Hook.LOCAL_IN)
    options = (Opt("to-source", 1), Opt("random", 0), Opt("random-fully", 0), Opt("persistent", 0))


class Dnat(NatTarget):
    name = "DNAT"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    revision = 2
    range_opt = "to-destination"
    manip = ManipType.DST
    valid_hooks = hook_mask_of(Hook.PRE_ROUTING, Hook.LOCAL_OUT)
    options = (Opt("to-destination", 1), Opt("random", 0), Opt("persistent", 0))
