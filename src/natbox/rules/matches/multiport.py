"""`-m multiport --sports/--dports/--ports P[,P[:Q]]...` rev 1 (libxt_multiport.c, xt_multiport.c)."""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_port, print_port
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb
from natbox.wire.layout import L4_DPORT, L4_SPORT

__all__ = ["Multiport"]

XT_MULTI_PORTS: Final = 15  # at most 15 port slots (a range takes two)
_PROTOS: Final = {6: "tcp", 17: "udp", 136: "udplite", 132: "sctp", 33: "dccp"}


class Multiport(Match):
    name = "multiport"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    revision = 1
    options = (Opt("source-ports", 1, True), Opt("sports", 1, True), Opt("destination-ports", 1, True),
               Opt("dports", 1, True), Opt("ports", 1, True))

    def __init__(self) -> None:
        self.flags = ""  # "sports" / "dports" / "ports"
        self.ranges: list[tuple[int, int]] = []
        self.invert = False
        self.proto = 0

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        kind = {"source-ports": "sports", "sports": "sports", "destination-ports": "dports",
                "dports": "dports", "ports": "ports"}.get(opt)
        if kind is None:
            super().parse(opt, arg, inverted, rule)
            return
        if self.flags:
            raise RulesError("multiport can only have one option")
        pname = _PROTOS.get(rule.proto)
        if pname is None or rule.inv_proto:
            raise RulesError("multiport needs `-p tcp', `-p udp', `-p udplite', `-p sctp' or `-p dccp'")
        self.proto = rule.proto
        slots = 0
        ranges: list[tuple[int, int]] = []
        for part in (arg or "").split(","):
            lo_s, sep, hi_s = part.partition(":")
            lo = parse_port(lo_s, pname)
            hi = parse_port(hi_s, pname) if sep else lo
            if sep and lo >= hi:
                raise RulesError("invalid portrange specified")
            slots += 2 if sep else 1
            if slots > XT_MULTI_PORTS:
                raise RulesError("too many ports specified")
            ranges.append((lo, hi) if sep else (lo, lo))
        self.flags, self.ranges, self.invert = kind, ranges, inverted
        self._ranged = [":" in p for p in (arg or "").split(",")]

    def final_check(self, rule: Rule) -> None:
        if not self.flags:
            raise RulesError("multiport expection an option")

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if rule.proto not in _PROTOS or rule.inv_proto:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _ports(self, numeric: bool) -> str:
        pname = _PROTOS.get(self.proto, "tcp")
        ranged = getattr(self, "_ranged", [lo != hi for lo, hi in self.ranges])
        parts = []
        for (lo, hi), r in zip(self.ranges, ranged, strict=False):
            s = print_port(lo, numeric, pname)
            if r:
                s += ":" + print_port(hi, numeric, pname)
            parts.append(s)
        return ",".join(parts)

    def save(self) -> str:
        return (" !" if self.invert else "") + f" --{self.flags} " + self._ports(True)

    def print_list(self, numeric: bool) -> str:
        return f" multiport {self.flags} " + (" !" if self.invert else "") + self._ports(numeric)

    def compile(self) -> MatchFn:
        ranges = tuple(self.ranges)
        kind, inv = self.flags, self.invert

        def multiport_mt(skb: Skb, ctx: XtContext) -> bool:
            if skb.is_later_fragment:
                return False
            sp, dp = skb.l4_u16(L4_SPORT), skb.l4_u16(L4_DPORT)
            if sp is None or dp is None:
                return False  # the kernel hotdrops a truncated header
            for lo, hi in ranges:
                if (kind != "dports" and lo <= sp <= hi) or (kind != "sports" and lo <= dp <= hi):
                    return not inv
            return inv

        return multiport_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return f"no match (sport {skb.l4_u16(L4_SPORT)}, dport {skb.l4_u16(L4_DPORT)})"
