"""`-p esp -m esp --espspi spi[:spi]` (libxt_esp.c, net/netfilter/xt_esp.c `esp_mt`).

`struct ip_esp_hdr` (spi, seq_no) at the transport offset of a first fragment; `ntohl(esp->spi)` in
range, inverted by `!`. A truncated header is the kernel's hotdrop, no match in natbox.
"""

from __future__ import annotations

from typing import Final

from natbox.rules.matches.ah import SpiMatch, spi_list
from natbox.rules.model import Opt

__all__ = ["Esp"]

# struct ip_esp_hdr (uapi linux/ip.h)
ESP_SPI: Final = 0
ESP_HDR_LEN: Final = 8


class Esp(SpiMatch):
    name = "esp"
    options = (Opt("espspi", 1, True),)
    proto_num = 50
    spi_opt = "espspi"
    spi_off = ESP_SPI
    hdr_len = ESP_HDR_LEN

    def print_list(self, numeric: bool) -> str:
        return " esp" + spi_list("spi", self.spis, self.invert)
