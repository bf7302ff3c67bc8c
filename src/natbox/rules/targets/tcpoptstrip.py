"""`-p tcp -j TCPOPTSTRIP [--strip-options opt,...]` (libxt_TCPOPTSTRIP.c, xt_TCPOPTSTRIP.c).

mangle table, TCP only. `tcpoptstrip_mangle_packet` walks the options of a first fragment (`optlen`: kinds
0 and 1, and a zero length, step one byte), overwrites each option in the set with NOPs and updates the
TCP checksum byte by byte (`inet_proto_csum_replace2`: untouched for a CHECKSUM_PARTIAL skb); a TCP header
that cannot be read, or a data offset below 5 or past the packet, drops the packet. It always continues.
"""

from __future__ import annotations

from typing import Final

from natbox.netfilter import NF_DROP
from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb
from natbox.wire.checksum import csum_replace2
from natbox.wire.layout import TCPH_CHECK, TCPH_DOFF, TCPH_MIN_LEN
from natbox.wire.tcp import TCPOPT_NOP

__all__ = ["Tcpoptstrip", "tcpoptstrip_mangle_packet"]

# tcp_optionmap of libxt_TCPOPTSTRIP.c
TCP_OPTIONMAP: Final = (("wscale", 3), ("mss", 2), ("sack-permitted", 4), ("sack", 5), ("timestamp", 8), ("md5", 19))


def tcpoptstrip_mangle_packet(skb: Skb, strip: frozenset[int]) -> int:
    """The kernel function of that name, for an IPv4 skb."""
    if skb.is_later_fragment:
        return XT_CONTINUE
    data, th = skb.data, skb.ihl
    if len(data) < th + TCPH_MIN_LEN:
        return NF_DROP
    hdrlen = (data[th + TCPH_DOFF] >> 4) * 4
    if hdrlen < TCPH_MIN_LEN or len(data) < th + hdrlen:
        return NF_DROP
    check = (data[th + TCPH_CHECK] << 8) | data[th + TCPH_CHECK + 1]
    i = TCPH_MIN_LEN
    while i < hdrlen - 1:
        kind = data[th + i]
        optl = 1 if kind <= TCPOPT_NOP or data[th + i + 1] == 0 else data[th + i + 1]
        if i + optl > hdrlen:
            break
        if kind in strip:
            for j in range(i, i + optl):
                old = data[th + j]
                if not skb.csum_partial:
                    shift = 8 if j % 2 == 0 else 0
                    check = csum_replace2(check, old << shift, TCPOPT_NOP << shift)
                data[th + j] = TCPOPT_NOP
        i += optl
    data[th + TCPH_CHECK], data[th + TCPH_CHECK + 1] = check >> 8, check & 0xFF
    return XT_CONTINUE


class Tcpoptstrip(Target):
    name = "TCPOPTSTRIP"
    options = (Opt("strip-options", 1),)

    def __init__(self) -> None:
        self.strip: set[int] = set()

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "strip-options":
            super().parse(opt, arg, inverted, rule)
        for part in (arg or "").split(","):
            value = parse_uint(part, 0, 255)
            if value is None:
                value = next((v for n, v in TCP_OPTIONMAP if n == part), None)
            if value is None:
                raise RulesError(f'Bad TCP option value "{part}"')
            if value < 2:
                raise RulesError("Option value may not be 0 or 1")
            self.strip.add(value)

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if table != "mangle" or rule.proto != 6 or rule.inv_proto:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _list(self, numeric: bool) -> str:
        names = {v: n for n, v in TCP_OPTIONMAP}
        return ",".join(str(v) if numeric or v not in names else names[v] for v in sorted(self.strip))

    def save(self) -> str:
        return f" --strip-options {self._list(True)}" if self.strip else ""

    def print_list(self, numeric: bool) -> str:
        return f" TCPOPTSTRIP options {self._list(numeric)}" if self.strip else ""

    def compile(self) -> TargetFn:
        strip = frozenset(self.strip)

        def tcpoptstrip_tg4(skb: Skb, ctx: XtContext) -> int:
            return tcpoptstrip_mangle_packet(skb, strip)

        return tcpoptstrip_tg4
