"""`-p udp [-m udp]`: ports (libxt_udp.c, xt_tcpudp.c `udp_mt`)."""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.matches.tcp import PortMatch
from natbox.rules.model import MatchFn, Opt, Rule
from natbox.skb import Skb
from natbox.wire.layout import L4_DPORT, L4_SPORT, UDPH_DEST, UDPH_LEN_BYTES, UDPH_SOURCE

__all__ = ["Udp"]


class Udp(PortMatch):
    name = "udp"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    proto_num = 17
    options = (Opt("sport", 1, True), Opt("source-port", 1, True), Opt("dport", 1, True),
               Opt("destination-port", 1, True))

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if arg is None or not self._parse_ports(opt, arg, inverted):
            super().parse(opt, arg, inverted, rule)

    def save(self) -> str:
        return self._save_ports()

    def print_list(self, numeric: bool) -> str:
        return " udp" + self._print_ports(numeric)

    def compile(self) -> MatchFn:
        slo, shi, dlo, dhi, inv_s, inv_d = self._port_test()

        def udp_mt(skb: Skb, ctx: XtContext) -> bool:
            if skb.is_later_fragment:
                return False
            data = skb.data
            off = skb.ihl
            if len(data) < off + UDPH_LEN_BYTES:
                return False
            sp = (data[off + UDPH_SOURCE] << 8) | data[off + UDPH_SOURCE + 1]
            dp = (data[off + UDPH_DEST] << 8) | data[off + UDPH_DEST + 1]
            return (slo <= sp <= shi) != inv_s and (dlo <= dp <= dhi) != inv_d

        return udp_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return f"no match (sport {skb.l4_u16(L4_SPORT)}, dport {skb.l4_u16(L4_DPORT)})"
