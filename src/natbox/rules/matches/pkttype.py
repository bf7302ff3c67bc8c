"""`-m pkttype --pkt-type unicast|broadcast|multicast|otherhost` (libxt_pkttype.c, xt_pkttype.c)."""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import PacketType, Skb

__all__ = ["Pkttype"]

# supported_types of libxt_pkttype.c (first name of each type is the printed one)
PKTTYPES: tuple[tuple[str, int], ...] = (
    ("unicast", PacketType.HOST), ("broadcast", PacketType.BROADCAST), ("multicast", PacketType.MULTICAST),
    ("otherhost", PacketType.OTHERHOST), ("bcast", PacketType.BROADCAST), ("mcast", PacketType.MULTICAST),
    ("host", PacketType.HOST),
)


class Pkttype(Match):
    name = "pkttype"
    options = (Opt("pkt-type", 1, True),)

    def __init__(self) -> None:
        self.pkttype: int | None = None
        self.invert = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "pkt-type":
            super().parse(opt, arg, inverted, rule)
        for n, t in PKTTYPES:
            if n == (arg or "").lower():
                self.pkttype, self.invert = int(t), inverted
                return
        raise RulesError(f"Bad packet type '{arg}'")

    def final_check(self, rule: Rule) -> None:
        if self.pkttype is None:
            raise RulesError('pkttype: option "--pkt-type" must be specified\n')

    def _name(self) -> str:
        for n, t in PKTTYPES:
            if t == self.pkttype:
                return n
        return str(self.pkttype)

    def save(self) -> str:
        return (" !" if self.invert else "") + " --pkt-type " + self._name()

    def print_list(self, numeric: bool) -> str:
        return f" PKTTYPE {'!' if self.invert else ''}= " + self._name()

    def compile(self) -> MatchFn:
        want, inv = self.pkttype, self.invert

        def pkttype_mt(skb: Skb, ctx: XtContext) -> bool:
            t = int(skb.pkt_type)
            if t == PacketType.LOOPBACK:
                t = PacketType.MULTICAST if (skb.daddr >> 28) == 0xE else PacketType.BROADCAST
            return (t == want) != inv

        return pkttype_mt
