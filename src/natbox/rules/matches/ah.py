"""`-p ah -m ah --ahspi spi[:spi]` (libipt_ah.c, net/ipv4/netfilter/ipt_ah.c `ah_mt`).

The kernel reads `struct ip_auth_hdr` (nexthdr, hdrlen, reserved, spi, seq_no) at the transport offset
of a first fragment and compares `ntohl(ah->spi)` with the range; later fragments never match. A header
cut short is a hotdrop in the kernel; natbox, as for its other header matches, treats it as no match.
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._xtopt import U32_MAX, parse_range
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["Ah", "SpiMatch", "spi_list", "spi_save"]

# struct ip_auth_hdr (uapi linux/ip.h)
AH_SPI: Final = 4
AH_HDR_LEN: Final = 12


def spi_save(opt: str, spis: tuple[int, int], inv: bool, full: int = U32_MAX) -> str:
    """The `--Xspi` save text: nothing for the full range (not inverted)."""
    if spis == (0, full):
        return ""
    lo, hi = spis
    return (" !" if inv else "") + f" --{opt} " + (f"{lo}" if lo == hi else f"{lo}:{hi}")


def spi_list(label: str, spis: tuple[int, int], inv: bool, full: int = U32_MAX) -> str:
    """`print_spis`: `spi:N` or `spis:A:B`, `!` after the colon; nothing for the full range."""
    lo, hi = spis
    if lo == 0 and hi == full and not inv:
        return ""
    i = "!" if inv else ""
    return f" {label}:{i}{lo}" if lo == hi else f" {label}s:{i}{lo}:{hi}"


class SpiMatch(Match):
    """The shared shape of ah/esp/ipcomp: one SPI range on a fixed protocol (`.proto` in the kernel)."""

    proto_num = 0
    spi_opt = ""
    spi_off = 0
    hdr_len = 0
    spi_bytes = 4

    def __init__(self) -> None:
        self.spis = (0, U32_MAX)
        self.invert = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != self.spi_opt:
            super().parse(opt, arg, inverted, rule)
        self.spis = parse_range(self.name, opt, arg or "", U32_MAX)
        self.invert = inverted

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        # xt_check_match: `.proto = IPPROTO_*` and not `! -p`
        if rule.proto != self.proto_num or rule.inv_proto:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        return spi_save(self.spi_opt, self.spis, self.invert)

    def compile(self) -> MatchFn:
        lo, hi = self.spis
        inv, off, need, nbytes = self.invert, self.spi_off, self.hdr_len, self.spi_bytes

        def spi_mt(skb: Skb, ctx: XtContext) -> bool:
            if skb.is_later_fragment:
                return False
            data, th = skb.data, skb.ihl
            if len(data) < th + need:
                return False  # hotdrop in the kernel
            spi = int.from_bytes(data[th + off:th + off + nbytes], "big")
            return (lo <= spi <= hi) != inv

        return spi_mt


class Ah(SpiMatch):
    name = "ah"
    options = (Opt("ahspi", 1, True),)
    proto_num = 51
    spi_opt = "ahspi"
    spi_off = AH_SPI
    hdr_len = AH_HDR_LEN

    def print_list(self, numeric: bool) -> str:
        return " ah " + spi_list("spi", self.spis, self.invert).lstrip(" ")
