"""`-p ipcomp -m ipcomp --ipcompspi cpi[:cpi] [--compres]` (libxt_ipcomp.c, net/netfilter/xt_ipcomp.c).

`comp_mt` reads `struct ip_comp_hdr` (nexthdr, flags, cpi) of a first fragment and compares
`ntohs(chdr->cpi)` with the range (`spi_match`). `--compres` sets `hdrres`, which the kernel keeps but never
looks at; a truncated header is a hotdrop in the kernel, no match in natbox.
"""

from __future__ import annotations

from typing import Final

from natbox.rules.matches.ah import SpiMatch, spi_list
from natbox.rules.model import Opt, Rule

__all__ = ["Ipcomp"]

# struct ip_comp_hdr (uapi linux/ip.h)
IPCOMP_CPI: Final = 2
IPCOMP_HDR_LEN: Final = 4


class Ipcomp(SpiMatch):
    name = "ipcomp"
    options = (Opt("ipcompspi", 1, True), Opt("compres", 0))
    proto_num = 108
    spi_opt = "ipcompspi"
    spi_off = IPCOMP_CPI
    hdr_len = IPCOMP_HDR_LEN
    spi_bytes = 2

    def __init__(self) -> None:
        super().__init__()
        self.spis = (0, 0)  # libxt_ipcomp has no init: without --ipcompspi only CPI 0 matches
        self.hdrres = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt == "compres":
            self.hdrres = True
            return
        super().parse(opt, arg, inverted, rule)

    def save(self) -> str:
        return super().save() + (" --compres" if self.hdrres else "")

    def print_list(self, numeric: bool) -> str:
        out = " comp " + spi_list("spi", self.spis, self.invert).lstrip(" ")
        return out + (" reserved" if self.hdrres else "")
