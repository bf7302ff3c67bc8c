"""`-p dccp -m dccp [--sport] [--dport] [--dccp-types T,...] [--dccp-option N]` (libxt_dccp.c, xt_dccp.c).

`dccp_mt` (first fragments only) reads `struct dccp_hdr`: ports, the packet type (bits 1-4 of byte 8,
`match_types`: `typemask & (1 << type)`) and, for `--dccp-option`, walks the options between the
generic header (with the extended sequence number when X is set) plus the type's own header and
`dccph_doff * 4` (`dccp_find_option`: kinds below 2 are one byte, others carry a length). Each test
is inverted on its own (`DCCHECK`). A cut header or options are the kernel's hotdrop, no match here.
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_port_range, print_port
from natbox.rules.matches._xtopt import U8_MAX, parse_value
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb
from natbox.wire.layout import L4_DPORT, L4_SPORT

__all__ = ["DCCP_PKT_TYPES", "Dccp"]

# struct dccp_hdr (uapi linux/dccp.h)
DCCPH_DOFF: Final = 4
DCCPH_TYPE_X: Final = 8  # reserved:3, type:4, x:1 (x is the lowest bit)
DCCP_HDR_LEN: Final = 12
DCCP_HDR_EXT_LEN: Final = 4

DCCP_PKT_TYPES: Final = ("REQUEST", "RESPONSE", "DATA", "ACK", "DATAACK", "CLOSEREQ", "CLOSE", "RESET", "SYNC",
                  "SYNCACK", "INVALID")
DCCP_PKT_INVALID: Final = 10
DCCP_INVALID_MASK: Final = 0xFFFF & ~((1 << DCCP_PKT_INVALID) - 1)
XT_DCCP_SRC_PORTS, XT_DCCP_DEST_PORTS, XT_DCCP_TYPE, XT_DCCP_OPTION = 0x01, 0x02, 0x04, 0x08


def dccp_packet_hdr_len(ptype: int) -> int:
    """`dccp_packet_hdr_len`: the type-specific header after the generic one."""
    if ptype == 2:  # DATA
        return 0
    if ptype in (3, 4, 5, 6, 8, 9):  # ACK, DATAACK, CLOSEREQ, CLOSE, SYNC, SYNCACK: dccp_hdr_ack_bits
        return 8
    if ptype == 0:  # REQUEST: dccp_hdr_request
        return 4
    return 12  # RESPONSE (dccp_hdr_response), RESET and the rest (dccp_hdr_reset)


def dccp_find_option(data: bytearray, th: int, option: int) -> bool | None:
    """`dccp_find_option`: True/False, or None for a malformed or cut header (the kernel's hotdrop)."""
    tx = data[th + DCCPH_TYPE_X]
    ptype, ext = (tx >> 1) & 0x0F, tx & 1
    hdr_len = DCCP_HDR_LEN + (DCCP_HDR_EXT_LEN if ext else 0) + dccp_packet_hdr_len(ptype)
    doff = data[th + DCCPH_DOFF] * 4
    if doff < hdr_len:
        return None
    optlen = doff - hdr_len
    if not optlen:
        return False
    start = th + hdr_len
    if len(data) < start + optlen:
        return None
    i = 0
    while i < optlen:
        kind = data[start + i]
        if kind == option:
            return True
        if kind < 2:
            i += 1
        else:
            i += (data[start + i + 1] if i + 1 < optlen else 0) or 1
    return False


def parse_dccp_ports(text: str) -> tuple[int, int]:
    """libxt_dccp's port range: as tcp's, except that a number is cut to 16 bits (`--sport 65536` is
    port 0, as iptables 1.8.9 does)."""
    if ":" not in text:
        return _dccp_port(text), _dccp_port(text)
    a, b = text.split(":", 1)
    return (_dccp_port(a) if a else 0), (_dccp_port(b) if b else 0xFFFF)


def _dccp_port(text: str) -> int:
    if text.isdigit():
        return int(text) & 0xFFFF
    return parse_port_range(text, None, xtopt=True)[0]  # XTTYPE_PORTRC


class Dccp(Match):
    name = "dccp"
    options = (Opt("source-port", 1, True), Opt("sport", 1, True), Opt("destination-port", 1, True),
               Opt("dport", 1, True), Opt("dccp-types", 1, True), Opt("dccp-option", 1, True))

    def __init__(self) -> None:
        self.spts = (0, 0xFFFF)
        self.dpts = (0, 0xFFFF)
        self.typemask = 0
        self.option = 0
        self.flags = 0
        self.invflags = 0

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if opt in ("source-port", "sport"):
            bit = XT_DCCP_SRC_PORTS
            self.spts = parse_dccp_ports(a)
        elif opt in ("destination-port", "dport"):
            bit = XT_DCCP_DEST_PORTS
            self.dpts = parse_dccp_ports(a)
        elif opt == "dccp-types":
            bit = XT_DCCP_TYPE
            self.typemask = 0
            for part in a.split(","):
                for i, name in enumerate(DCCP_PKT_TYPES):
                    if name.lower() == part.lower():
                        # INVALID stands for every type from 10 up (types 10-15 are invalid in RFC 4340)
                        self.typemask |= DCCP_INVALID_MASK if i == DCCP_PKT_INVALID else 1 << i
                        break
                else:
                    raise RulesError(f"Unknown DCCP type `{part}'")
        elif opt == "dccp-option":
            bit = XT_DCCP_OPTION
            self.option = parse_value("dccp", opt, a, U8_MAX, 1)
        else:
            super().parse(opt, arg, inverted, rule)
        self.flags |= bit
        if inverted:
            self.invflags |= bit

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if rule.proto != 33 or rule.inv_proto:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _types(self, numeric: bool) -> str:
        """`print_types`: numbers of every bit, or names with INVALID once for the bits from 10 up."""
        bits = [i for i in range(16) if self.typemask & (1 << i)]
        if numeric:
            return ",".join(str(i) for i in bits)
        names = [DCCP_PKT_TYPES[i] for i in bits if i < DCCP_PKT_INVALID]
        return ",".join(names + (["INVALID"] if self.typemask & DCCP_INVALID_MASK else []))

    def save(self) -> str:
        out = ""
        for bit, opt, (lo, hi) in ((XT_DCCP_SRC_PORTS, "sport", self.spts), (XT_DCCP_DEST_PORTS, "dport", self.dpts)):
            if self.flags & bit:
                out += (" !" if self.invflags & bit else "") + f" --{opt} " + (f"{lo}" if lo == hi else f"{lo}:{hi}")
        if self.flags & XT_DCCP_TYPE:
            out += (" !" if self.invflags & XT_DCCP_TYPE else "") + " --dccp-types " + self._types(False)
        if self.flags & XT_DCCP_OPTION:
            out += (" !" if self.invflags & XT_DCCP_OPTION else "") + f" --dccp-option {self.option}"
        return out

    def print_list(self, numeric: bool) -> str:
        out = " dccp"
        for bit, label, (lo, hi) in ((XT_DCCP_SRC_PORTS, "spt", self.spts), (XT_DCCP_DEST_PORTS, "dpt", self.dpts)):
            inv = bool(self.invflags & bit)
            if self.flags & bit and (lo != 0 or hi != 0xFFFF or inv):
                i = "!" if inv else ""
                if lo == hi:
                    out += f" {label}:{i}{print_port(lo, numeric, 'dccp')}"
                else:
                    out += f" {label}s:{i}{print_port(lo, numeric, 'dccp')}:{print_port(hi, numeric, 'dccp')}"
        if self.flags & XT_DCCP_TYPE:
            out += (" !" if self.invflags & XT_DCCP_TYPE else "") + " " + self._types(numeric)
        if self.flags & XT_DCCP_OPTION:
            inv = bool(self.invflags & XT_DCCP_OPTION)
            if self.option or inv:
                out += f" option={'!' if inv else ''}{self.option}"
        return out

    def compile(self) -> MatchFn:
        flags, inv = self.flags, self.invflags
        (slo, shi), (dlo, dhi), typemask, option = self.spts, self.dpts, self.typemask, self.option

        def dccp_mt(skb: Skb, ctx: XtContext) -> bool:
            if skb.is_later_fragment:
                return False
            data, th = skb.data, skb.ihl
            if len(data) < th + DCCP_HDR_LEN:
                return False  # hotdrop in the kernel
            if flags & XT_DCCP_SRC_PORTS:
                sp = (data[th + L4_SPORT] << 8) | data[th + L4_SPORT + 1]
                if (slo <= sp <= shi) == bool(inv & XT_DCCP_SRC_PORTS):
                    return False
            if flags & XT_DCCP_DEST_PORTS:
                dp = (data[th + L4_DPORT] << 8) | data[th + L4_DPORT + 1]
                if (dlo <= dp <= dhi) == bool(inv & XT_DCCP_DEST_PORTS):
                    return False
            if flags & XT_DCCP_TYPE:
                ptype = (data[th + DCCPH_TYPE_X] >> 1) & 0x0F
                if bool(typemask & (1 << ptype)) == bool(inv & XT_DCCP_TYPE):
                    return False
            if flags & XT_DCCP_OPTION:
                found = dccp_find_option(data, th, option)
                if found is None:
                    return False  # hotdrop in the kernel
                if found == bool(inv & XT_DCCP_OPTION):
                    return False
            return True

        return dccp_mt
