"""`-p tcp [-m tcp]`: ports, flags, option (libxt_tcp.c, xt_tcpudp.c `tcp_mt`)."""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_port_range, parse_uint, print_port
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb
from natbox.wire.layout import L4_DPORT, L4_SPORT, TCPH_DEST, TCPH_DOFF, TCPH_FLAGS, TCPH_MIN_LEN, TCPH_SOURCE

__all__ = ["PortMatch", "Tcp"]

# tcp_flag_names in libxt_tcp.c (order matters for printing)
TCP_FLAG_NAMES: tuple[tuple[str, int], ...] = (
    ("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10), ("URG", 0x20),
    ("ALL", 0x3F), ("NONE", 0),
)


def parse_tcp_flags(text: str) -> int:
    flags = 0
    for part in text.split(","):
        for name, bit in TCP_FLAG_NAMES:
            if name.lower() == part.lower():
                flags |= bit
                break
        else:
            raise RulesError(f'Unknown TCP flag `{part}\'')
    return flags


def format_tcp_flags(flags: int) -> str:
    """`print_tcpf`: names of set flags, lowest first; NONE for 0."""
    if not flags:
        return "NONE"
    names = []
    for name, bit in TCP_FLAG_NAMES[:6]:
        if flags & bit:
            names.append(name)
    return ",".join(names)


class PortMatch(Match):
    """Shared port logic of tcp/udp: `spts`, `dpts` ranges with inversion."""

    proto_num = 6

    def __init__(self) -> None:
        self.spts = (0, 0xFFFF)
        self.dpts = (0, 0xFFFF)
        self.inv_spt = False
        self.inv_dpt = False

    def _parse_ports(self, opt: str, arg: str, inverted: bool) -> bool:
        if opt in ("sport", "source-port"):
            self.spts = parse_port_range(arg, self.name, xtopt=self.name != "tcp")  # udp: XTTYPE_PORTRC
            self.inv_spt = inverted
            return True
        if opt in ("dport", "destination-port"):
            self.dpts = parse_port_range(arg, self.name, xtopt=self.name != "tcp")
            self.inv_dpt = inverted
            return True
        return False

    def _ports_zero(self) -> bool:
        return self.spts == (0, 0xFFFF) and self.dpts == (0, 0xFFFF) and not self.inv_spt and not self.inv_dpt

    def _save_ports(self) -> str:
        out = ""
        for opt, (lo, hi), inv in (("sport", self.spts, self.inv_spt), ("dport", self.dpts, self.inv_dpt)):
            if (lo, hi) != (0, 0xFFFF) or inv:
                out += " !" if inv else ""
                out += f" --{opt} {lo}:{hi}" if lo != hi else f" --{opt} {lo}"
        return out

    def _print_ports(self, numeric: bool) -> str:
        out = ""
        for label, (lo, hi), inv in (("spt", self.spts, self.inv_spt), ("dpt", self.dpts, self.inv_dpt)):
            if lo != 0 or hi != 0xFFFF or inv:
                i = "!" if inv else ""
                if lo == hi:
                    out += f" {label}:{i}{print_port(lo, numeric, self.name)}"
                else:
                    out += f" {label}s:{i}{print_port(lo, numeric, self.name)}:{print_port(hi, numeric, self.name)}"
        return out

    def _kept_as_xt(self) -> bool:
        """iptables-nft keeps the xt match (checked by the kernel) only when it cannot be a payload test."""
        return self._all_zero()

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        # xt_check_match: `.proto = IPPROTO_TCP/UDP`, not inverted
        if self._kept_as_xt() and (rule.proto != self.proto_num or rule.inv_proto):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def final_check(self, rule: Rule) -> None:
        # add_nft_tcp/add_nft_udp: the payload form needs the rule's protocol (inversion is not looked at)
        if not self._all_zero() and rule.proto != self.proto_num:
            raise RulesError(f"{self.name.upper()} match requires '-p {self.name}'")

    def _all_zero(self) -> bool:
        return self._ports_zero()

    def _port_test(self) -> tuple[int, int, int, int, bool, bool]:
        return (*self.spts, *self.dpts, self.inv_spt, self.inv_dpt)


class Tcp(PortMatch):
    name = "tcp"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    options = (
        Opt("sport", 1, True), Opt("source-port", 1, True), Opt("dport", 1, True),
        Opt("destination-port", 1, True), Opt("tcp-flags", 2, True), Opt("syn", 0, True),
        Opt("tcp-option", 1, True),
    )

    def __init__(self) -> None:
        super().__init__()
        self.flg_mask = 0
        self.flg_cmp = 0
        self.inv_flags = False
        self.option = 0
        self.inv_option = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if arg is not None and self._parse_ports(opt, arg, inverted):
            return
        if opt in ("syn", "tcp-flags") and (self.flg_mask or self.inv_flags):
            raise RulesError("Only one of `--syn' or `--tcp-flags'  allowed")
        if opt == "syn":
            self.flg_mask, self.flg_cmp, self.inv_flags = 0x17, 0x02, inverted
        elif opt == "tcp-flags":
            assert arg is not None
            mask_s, _, cmp_s = arg.partition(" ")
            self.flg_mask = parse_tcp_flags(mask_s)
            self.flg_cmp = parse_tcp_flags(cmp_s)
            self.inv_flags = inverted
        elif opt == "tcp-option":
            v = parse_uint(arg or "", 1, 255)
            if v is None:
                raise RulesError(f"Unknown TCP option `{arg}'")
            self.option, self.inv_option = v, inverted
        else:
            super().parse(opt, arg, inverted, rule)

    def _all_zero(self) -> bool:
        return self._ports_zero() and not self.flg_mask and not self.inv_flags and not self.option

    def final_check(self, rule: Rule) -> None:
        # iptables-nft translates tcp into native payload matches unless --tcp-option is used
        if self.option or self.inv_option:
            return
        super().final_check(rule)

    def _kept_as_xt(self) -> bool:
        return self._all_zero() or bool(self.option) or self.inv_option

    def save(self) -> str:
        out = self._save_ports()
        if self.option:
            out += (" !" if self.inv_option else "") + f" --tcp-option {self.option}"
        if self.flg_mask or self.inv_flags:
            out += (" !" if self.inv_flags else "")
            out += f" --tcp-flags {format_tcp_flags(self.flg_mask)} {format_tcp_flags(self.flg_cmp)}"
        return out

    def print_list(self, numeric: bool) -> str:
        out = " tcp" + self._print_ports(numeric)
        if self.option or self.inv_option:
            out += f" option={'!' if self.inv_option else ''}{self.option}"
        if self.flg_mask or self.inv_flags:
            out += " flags:" + ("!" if self.inv_flags else "")
            if numeric:
                out += f"0x{self.flg_mask:02X}/0x{self.flg_cmp:02X}"
            else:
                out += f"{format_tcp_flags(self.flg_mask)}/{format_tcp_flags(self.flg_cmp)}"
        return out

    def compile(self) -> MatchFn:
        slo, shi, dlo, dhi, inv_s, inv_d = self._port_test()
        fmask, fcmp, inv_f = self.flg_mask, self.flg_cmp, self.inv_flags
        option, inv_opt = self.option, self.inv_option

        def tcp_mt(skb: Skb, ctx: XtContext) -> bool:
            if skb.is_later_fragment:
                return False
            data = skb.data
            off = skb.ihl
            if len(data) < off + TCPH_MIN_LEN:
                return False  # the kernel hotdrops a truncated header; natbox treats it as no match
            sp = (data[off + TCPH_SOURCE] << 8) | data[off + TCPH_SOURCE + 1]
            if (slo <= sp <= shi) == inv_s:
                return False
            dp = (data[off + TCPH_DEST] << 8) | data[off + TCPH_DEST + 1]
            if (dlo <= dp <= dhi) == inv_d:
                return False
            if ((data[off + TCPH_FLAGS] & fmask) == fcmp) == inv_f:
                return False
            if option:
                return _has_tcp_option(data, off, option) != inv_opt
            return True

        return tcp_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        sp, dp = skb.l4_u16(L4_SPORT), skb.l4_u16(L4_DPORT)
        return f"no match (sport {sp}, dport {dp})"


def _has_tcp_option(data: bytearray, off: int, option: int) -> bool:
    """`tcp_find_option`: walk the options (kind 0 ends, 1 is a one-byte NOP)."""
    doff = (data[off + TCPH_DOFF] >> 4) * 4
    end = min(off + doff, len(data))
    i = off + TCPH_MIN_LEN
    while i < end:
        kind = data[i]
        if kind == option:
            return True
        if kind == 0:
            return False
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end or data[i + 1] < 2:
            return False
        i += data[i + 1]
    return False
