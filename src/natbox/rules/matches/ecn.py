"""`-m ecn [!] --ecn-tcp-cwr [!] --ecn-tcp-ece [!] --ecn-ip-ect N` (libxt_ecn.c, net/netfilter/xt_ecn.c).

`ecn_mt4`: the IP test compares `iph->tos & INET_ECN_MASK` with N (`match_ip`); the TCP tests read the
ECE and CWR flag bits (`match_tcp`; the kernel looks at no fragment offset there). `ecn_mt_check4`
refuses the TCP tests unless the rule says `-p tcp` (not inverted).
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._xtopt import parse_value
from natbox.rules.matches.dsfield6 import ecn_mt6
from natbox.rules.model import NFPROTO_IPV6, RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb
from natbox.wire.layout import IPH_TOS, TCPH_FLAGS, TCPH_MIN_LEN

__all__ = ["Ecn"]

XT_ECN_OP_MATCH_IP: Final = 0x01
XT_ECN_OP_MATCH_ECE: Final = 0x10
XT_ECN_OP_MATCH_CWR: Final = 0x20
INET_ECN_MASK: Final = 0x03
TCP_FLAG_ECE: Final = 0x40
TCP_FLAG_CWR: Final = 0x80


class Ecn(Match):
    name = "ecn"
    options = (Opt("ecn-tcp-cwr", 0, True), Opt("ecn-tcp-ece", 0, True), Opt("ecn-ip-ect", 1, True))

    def __init__(self) -> None:
        self.operation = 0
        self.invert = 0
        self.ip_ect = 0

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt == "ecn-tcp-cwr":
            bit = XT_ECN_OP_MATCH_CWR
        elif opt == "ecn-tcp-ece":
            bit = XT_ECN_OP_MATCH_ECE
        elif opt == "ecn-ip-ect":
            bit = XT_ECN_OP_MATCH_IP
            self.ip_ect = parse_value("ecn", opt, arg or "", 3)
        else:
            super().parse(opt, arg, inverted, rule)
        self.operation |= bit
        if inverted:
            self.invert |= bit

    def final_check(self, rule: Rule) -> None:
        if not self.operation:
            raise RulesError("ecn: at least one option is required")

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        tcp = self.operation & (XT_ECN_OP_MATCH_ECE | XT_ECN_OP_MATCH_CWR)
        if tcp and (rule.proto != 6 or rule.inv_proto):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        out = ""
        for bit, text in ((XT_ECN_OP_MATCH_ECE, " --ecn-tcp-ece"), (XT_ECN_OP_MATCH_CWR, " --ecn-tcp-cwr"),
                          (XT_ECN_OP_MATCH_IP, f" --ecn-ip-ect {self.ip_ect}")):
            if self.operation & bit:
                out += (" !" if self.invert & bit else "") + text
        return out

    def print_list(self, numeric: bool) -> str:
        out = " ECN match"
        for bit, text in ((XT_ECN_OP_MATCH_ECE, "ECE"), (XT_ECN_OP_MATCH_CWR, "CWR"),
                          (XT_ECN_OP_MATCH_IP, f"ECT={self.ip_ect}")):
            if self.operation & bit:
                out += " " + ("!" if self.invert & bit else "") + text
        return out

    def compile(self) -> MatchFn:
        op, inv, ect = self.operation, self.invert, self.ip_ect
        # per TCP flag bit tested: (bit, the value it must have)
        tcp_tests = tuple((flag, not (inv & opbit)) for opbit, flag in
                          ((XT_ECN_OP_MATCH_ECE, TCP_FLAG_ECE), (XT_ECN_OP_MATCH_CWR, TCP_FLAG_CWR)) if op & opbit)
        test_ip, inv_ip = bool(op & XT_ECN_OP_MATCH_IP), bool(inv & XT_ECN_OP_MATCH_IP)
        if self.family == NFPROTO_IPV6:
            return ecn_mt6(test_ip, inv_ip, ect, tcp_tests)

        def ecn_mt4(skb: Skb, ctx: XtContext) -> bool:
            data = skb.data
            if test_ip and ((data[IPH_TOS] & INET_ECN_MASK) == ect) == inv_ip:
                return False
            if tcp_tests:
                th = skb.ihl
                if len(data) < th + TCPH_MIN_LEN:
                    return False
                flags = data[th + TCPH_FLAGS]
                for flag, want in tcp_tests:
                    if bool(flags & flag) != want:
                        return False
            return True

        return ecn_mt4
