"""`-j ECN --ecn-tcp-remove | --ecn-tcp-cwr N | --ecn-tcp-ece N | --ecn-ip-ect N` (libipt_ECN.c, ipt_ECN.c).

mangle table only. `ecn_tg`: `set_ect_ip` rewrites the ECN bits of the TOS byte (csum_replace2 on the
header checksum); `set_ect_tcp` rewrites the ECE/CWR bits of a TCP header and fixes the TCP checksum
with `inet_proto_csum_replace2` (untouched for a CHECKSUM_PARTIAL skb: it covers no flags yet); a TCP
header that cannot be read drops the packet. `ecn_tg_check` wants `-p tcp` for the TCP options.
"""

from __future__ import annotations

from typing import Final

from natbox.netfilter import NF_DROP
from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches._xtopt import parse_value
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn
from natbox.rules.targets.dscp import set_tos
from natbox.skb import Skb
from natbox.wire.checksum import csum_replace2
from natbox.wire.layout import IPH_PROTOCOL, IPH_TOS, TCPH_CHECK, TCPH_DOFF, TCPH_MIN_LEN

__all__ = ["EcnTarget"]

IPT_ECN_OP_SET_IP: Final = 0x01
IPT_ECN_OP_SET_ECE: Final = 0x10
IPT_ECN_OP_SET_CWR: Final = 0x20
TCP_FLAG_ECE: Final = 0x40
TCP_FLAG_CWR: Final = 0x80


class EcnTarget(Target):
    name = "ECN"
    options = (Opt("ecn-tcp-remove", 0), Opt("ecn-tcp-cwr", 1), Opt("ecn-tcp-ece", 1), Opt("ecn-ip-ect", 1))

    def __init__(self) -> None:
        self.operation = 0
        self.ece = 0
        self.cwr = 0
        self.ip_ect = 0

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if opt == "ecn-tcp-remove":
            self.operation |= IPT_ECN_OP_SET_ECE | IPT_ECN_OP_SET_CWR
            self.ece = self.cwr = 0
        elif opt == "ecn-tcp-cwr":
            self.cwr = parse_value("ECN", opt, a, 1)
            self.operation |= IPT_ECN_OP_SET_CWR
        elif opt == "ecn-tcp-ece":
            self.ece = parse_value("ECN", opt, a, 1)
            self.operation |= IPT_ECN_OP_SET_ECE
        elif opt == "ecn-ip-ect":
            self.ip_ect = parse_value("ECN", opt, a, 3)
            self.operation |= IPT_ECN_OP_SET_IP
        else:
            super().parse(opt, arg, inverted, rule)

    def final_check(self, rule: Rule) -> None:
        if not self.operation:
            raise RulesError("ECN target: An operation is required")

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        tcp = self.operation & (IPT_ECN_OP_SET_ECE | IPT_ECN_OP_SET_CWR)
        if table != "mangle" or (tcp and (rule.proto != 6 or rule.inv_proto)):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _removes(self) -> bool:
        return self.operation == IPT_ECN_OP_SET_ECE | IPT_ECN_OP_SET_CWR and not self.ece and not self.cwr

    def save(self) -> str:
        if self._removes():
            return " --ecn-tcp-remove"
        out = ""
        if self.operation & IPT_ECN_OP_SET_ECE:
            out += f" --ecn-tcp-ece {self.ece}"
        if self.operation & IPT_ECN_OP_SET_CWR:
            out += f" --ecn-tcp-cwr {self.cwr}"
        if self.operation & IPT_ECN_OP_SET_IP:
            out += f" --ecn-ip-ect {self.ip_ect}"
        return out

    def print_list(self, numeric: bool) -> str:
        if self._removes():
            return " ECN TCP remove"
        out = " ECN"
        if self.operation & IPT_ECN_OP_SET_ECE:
            out += f" ECE={self.ece}"
        if self.operation & IPT_ECN_OP_SET_CWR:
            out += f" CWR={self.cwr}"
        if self.operation & IPT_ECN_OP_SET_IP:
            out += f" ECT codepoint={self.ip_ect}"
        return out

    def compile(self) -> TargetFn:
        op = self.operation
        set_ip = bool(op & IPT_ECN_OP_SET_IP)
        ect = self.ip_ect
        fmask = (TCP_FLAG_ECE if op & IPT_ECN_OP_SET_ECE else 0) | (TCP_FLAG_CWR if op & IPT_ECN_OP_SET_CWR else 0)
        fval = (TCP_FLAG_ECE if self.ece else 0) | (TCP_FLAG_CWR if self.cwr else 0)
        fval &= fmask

        def ecn_tg(skb: Skb, ctx: XtContext) -> int:
            data = skb.data
            if set_ip and (data[IPH_TOS] & 0x03) != ect:
                set_tos(skb, (data[IPH_TOS] & ~0x03) | ect)
            if fmask and data[IPH_PROTOCOL] == 6:
                th = skb.ihl
                if len(data) < th + TCPH_MIN_LEN:
                    return NF_DROP
                word = (data[th + TCPH_DOFF] << 8) | data[th + TCPH_DOFF + 1]
                new = (word & ~fmask) | fval
                if new != word:
                    data[th + TCPH_DOFF], data[th + TCPH_DOFF + 1] = new >> 8, new & 0xFF
                    if not skb.csum_partial:
                        check = (data[th + TCPH_CHECK] << 8) | data[th + TCPH_CHECK + 1]
                        check = csum_replace2(check, word, new)
                        data[th + TCPH_CHECK], data[th + TCPH_CHECK + 1] = check >> 8, check & 0xFF
            return XT_CONTINUE

        return ecn_tg
