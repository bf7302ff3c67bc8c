"""`-p icmp [-m icmp] --icmp-type T[/code]` (libipt_icmp.c, ip_tables.c `icmp_match`)."""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.matches.icmp6 import parse_type_code, print_type_code_list
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb
from natbox.wire.layout import ICMPH_CHECKSUM, ICMPH_CODE, ICMPH_TYPE

__all__ = ["ICMP_CODES", "Icmp"]

# `icmp_codes` of libxt_icmp.h: (name, type, code_min, code_max)
ICMP_CODES: tuple[tuple[str, int, int, int], ...] = (
    ("any", 0xFF, 0, 0xFF), ("echo-reply", 0, 0, 0xFF), ("pong", 0, 0, 0xFF),
    ("destination-unreachable", 3, 0, 0xFF), ("network-unreachable", 3, 0, 0), ("host-unreachable", 3, 1, 1),
    ("protocol-unreachable", 3, 2, 2), ("port-unreachable", 3, 3, 3), ("fragmentation-needed", 3, 4, 4),
    ("source-route-failed", 3, 5, 5), ("network-unknown", 3, 6, 6), ("host-unknown", 3, 7, 7),
    ("network-prohibited", 3, 9, 9), ("host-prohibited", 3, 10, 10), ("TOS-network-unreachable", 3, 11, 11),
    ("TOS-host-unreachable", 3, 12, 12), ("communication-prohibited", 3, 13, 13),
    ("host-precedence-violation", 3, 14, 14), ("precedence-cutoff", 3, 15, 15), ("source-quench", 4, 0, 0xFF),
    ("redirect", 5, 0, 0xFF), ("network-redirect", 5, 0, 0), ("host-redirect", 5, 1, 1),
    ("TOS-network-redirect", 5, 2, 2), ("TOS-host-redirect", 5, 3, 3), ("echo-request", 8, 0, 0xFF),
    ("ping", 8, 0, 0xFF), ("router-advertisement", 9, 0, 0xFF), ("router-solicitation", 10, 0, 0xFF),
    ("time-exceeded", 11, 0, 0xFF), ("ttl-exceeded", 11, 0, 0xFF), ("ttl-zero-during-transit", 11, 0, 0),
    ("ttl-zero-during-reassembly", 11, 1, 1), ("parameter-problem", 12, 0, 0xFF), ("ip-header-bad", 12, 0, 0),
    ("required-option-missing", 12, 1, 1), ("timestamp-request", 13, 0, 0xFF), ("timestamp-reply", 14, 0, 0xFF),
    ("address-mask-request", 17, 0, 0xFF), ("address-mask-reply", 18, 0, 0xFF),
)


def parse_icmp(text: str) -> tuple[int, int, int]:
    """`__parse_icmp`: a (prefix of a) name, or `type[/code[:code]]` (`parse_type_code`)."""
    found = None
    for entry in ICMP_CODES:
        if entry[0].lower().startswith(text.lower()):
            if found is not None and entry[0].lower() != text.lower():
                if found[0].lower() != text.lower():
                    raise RulesError(f"Ambiguous ICMP type `{text}': `{found[0]}' or `{entry[0]}'?")
                continue
            if found is None or entry[0].lower() == text.lower():
                found = entry
    if found is not None:
        return found[1], found[2], found[3]
    return parse_type_code(text, "ICMP")


class Icmp(Match):
    name = "icmp"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    options = (Opt("icmp-type", 1, True),)

    def __init__(self) -> None:
        self.type = 0xFF
        self.code = (0, 0xFF)
        self.invert = False
        self.given = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "icmp-type":
            super().parse(opt, arg, inverted, rule)
        t, lo, hi = parse_icmp(arg or "")
        self.type, self.code, self.invert, self.given = t, (lo, hi), inverted, True

    def final_check(self, rule: Rule) -> None:
        """libipt_icmp's option table marks --icmp-type XTOPT_MAND (xtables_options_fcheck)."""
        if not self.given:
            raise RulesError('icmp: option "--icmp-type" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if rule.proto != 1 or rule.inv_proto:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        out = " !" if self.invert else ""
        if self.type == 0xFF:
            return out + " --icmp-type any"
        out += f" --icmp-type {self.type}"
        if self.code != (0, 0xFF):
            out += f"/{self.code[0]}"
        return out

    def print_list(self, numeric: bool) -> str:
        return print_type_code_list(" icmp", ICMP_CODES, self.type, self.code, self.invert, numeric)

    def compile(self) -> MatchFn:
        itype, (clo, chi), inv = self.type, self.code, self.invert

        def icmp_mt(skb: Skb, ctx: XtContext) -> bool:
            if skb.is_later_fragment:
                return False
            data = skb.data
            off = skb.ihl
            if len(data) < off + ICMPH_CHECKSUM:
                return False  # the kernel hotdrops a truncated ICMP header
            t, c = data[off + ICMPH_TYPE], data[off + ICMPH_CODE]
            hit = itype == 0xFF or (t == itype and clo <= c <= chi)
            return hit != inv

        return icmp_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        if len(skb.data) < skb.ihl + ICMPH_CHECKSUM:
            return "no match (truncated)"
        return f"no match (type {skb.data[skb.ihl + ICMPH_TYPE]} code {skb.data[skb.ihl + ICMPH_CODE]})"
