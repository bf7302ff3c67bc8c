"""`-p tcp -m tcpmss [!] --mss min[:max]` (libxt_tcpmss.c, net/netfilter/xt_tcpmss.c `tcpmss_mt`).

The kernel walks the TCP options for an MSS option (kind 2, length 4, room left for it) and compares its
value with the range, inverted by `!`; a segment without one matches only when inverted. A header
shorter than 20 bytes, a data offset below 5 or options cut short are a hotdrop in the kernel (no match
in natbox, as for its other header matches).
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._xtopt import U16_MAX, parse_range, print_range
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb
from natbox.wire.layout import TCPH_DOFF, TCPH_MIN_LEN
from natbox.wire.tcp import TCPOPT_MSS

__all__ = ["TcpmssMatch", "tcp_option_mss"]

TCPOLEN_MSS: Final = 4


def tcp_option_mss(data: bytearray, th: int) -> int | None:
    """The MSS option's value, -1 when the header is malformed or cut short, None when there is none."""
    if len(data) < th + TCPH_MIN_LEN:
        return -1
    doff = (data[th + TCPH_DOFF] >> 4) * 4
    if doff < TCPH_MIN_LEN:
        return -1
    optlen = doff - TCPH_MIN_LEN
    start = th + TCPH_MIN_LEN
    if len(data) < start + optlen:
        return -1
    i = 0
    while i < optlen:
        kind = data[start + i]
        if kind == TCPOPT_MSS and optlen - i >= TCPOLEN_MSS and data[start + i + 1] == TCPOLEN_MSS:
            return (data[start + i + 2] << 8) | data[start + i + 3]
        if kind < 2:
            i += 1
        else:
            i += data[start + i + 1] if i + 1 < optlen and data[start + i + 1] else 1
    return None


class TcpmssMatch(Match):
    name = "tcpmss"
    options = (Opt("mss", 1, True),)

    def __init__(self) -> None:
        self.mss: tuple[int, int] | None = None
        self.invert = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "mss":
            super().parse(opt, arg, inverted, rule)
        lo, hi = parse_range("tcpmss", opt, arg or "", U16_MAX)
        if lo > hi:
            raise RulesError("tcpmss: invalid range given")
        self.mss, self.invert = (lo, hi), inverted

    def final_check(self, rule: Rule) -> None:
        if self.mss is None:
            raise RulesError('tcpmss: option "--mss" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if rule.proto != 6 or rule.inv_proto:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        lo, hi = self.mss or (0, 0)
        return (" !" if self.invert else "") + " --mss " + print_range(lo, hi)

    def print_list(self, numeric: bool) -> str:
        lo, hi = self.mss or (0, 0)
        return " tcpmss match " + ("!" if self.invert else "") + print_range(lo, hi)

    def compile(self) -> MatchFn:
        lo, hi = self.mss or (0, 0)
        inv = self.invert

        def tcpmss_mt(skb: Skb, ctx: XtContext) -> bool:
            mss = tcp_option_mss(skb.data, skb.ihl)
            if mss is None:
                return inv
            if mss < 0:
                return False  # hotdrop in the kernel
            return (lo <= mss <= hi) != inv

        return tcpmss_mt
