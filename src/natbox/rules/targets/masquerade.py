"""`-j MASQUERADE [--to-ports p[-q]] [--random] [--random-fully]` (xt_MASQUERADE.c), §5.2."""

from __future__ import annotations

from natbox.nat.range import NatRange, RangeFlags
from natbox.netfilter import Hook
from natbox.rules.api import XtContext
from natbox.rules.model import Opt, Rule, RulesError, Target, TargetFn, hook_mask_of
from natbox.rules.targets.nat import _PORT_OK_PROTOS, check_nat_hooks, nat_print, parse_nat_ports
from natbox.skb import Skb

__all__ = ["Masquerade", "PortsTarget"]


class PortsTarget(Target):
    """MASQUERADE and REDIRECT: an optional port range plus random flags."""

    valid_hooks = 0
    print_opt = ""
    flags_allowed: tuple[str, ...] = ("random",)
    shifted_in_fcheck = False  # REDIRECT: a shifted range (`p-q/base`) is refused by DNAT_fcheck

    def __init__(self) -> None:
        self.range = NatRange()

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        r = self.range
        if opt == "to-ports":
            a = arg or ""
            lo, hi, _base, flags = parse_nat_ports(a, rule.proto in _PORT_OK_PROTOS)
            if flags & RangeFlags.PROTO_OFFSET and not self.shifted_in_fcheck:
                # MASQUERADE: iptables-nft takes it and saves `/0` (docs/differences.md)
                raise RulesError(f"Garbage after port range: `{a[a.index('/', a.index('-')):]}'")
            self.range = NatRange(r.flags | flags, 0, 0, lo, hi)
        elif opt in self.flags_allowed:
            bit = RangeFlags.PROTO_RANDOM if opt == "random" else RangeFlags.PROTO_RANDOM_FULLY
            self.range = NatRange(r.flags | bit, r.min_addr, r.max_addr, r.min_proto, r.max_proto)
        else:
            super().parse(opt, arg, inverted, rule)

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        check_nat_hooks(table, hook_mask, self.valid_hooks)

    def save(self) -> str:
        return nat_print(self.range, "--to-ports ", "--", True)

    def print_list(self, numeric: bool) -> str:
        return nat_print(self.range, self.print_opt, "", True)


class Masquerade(PortsTarget):
    name = "MASQUERADE"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    valid_hooks = hook_mask_of(Hook.POST_ROUTING)
    print_opt = "masq ports: "
    flags_allowed: tuple[str, ...] = ("random", "random-fully")
    options = (Opt("to-ports", 1), Opt("random", 0), Opt("random-fully", 0))

    def compile(self) -> TargetFn:
        rng = self.range

        def masquerade_tg(skb: Skb, ctx: XtContext) -> int:
            return ctx.masquerade(skb, rng)

        return masquerade_tg
