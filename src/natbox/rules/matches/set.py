"""`-m set [!] --match-set NAME src|dst[,...] ...` rev 4 (libxt_set.c set_parse_v4/set_print_v4, xt_set.c
`set_match_v4`): the packet's element looked up in an ipset.

The set must exist when the rule is parsed (`get_set_byname`: "Set NAME doesn't exist."); natbox looks in
the sets in scope (natbox.ipset.scope). At run time the rule reaches the sets through `XtContext.ipsets()`
and finds its set by name; a missing set never matches (ip_set_test of a gone index returns 0).
"""

from __future__ import annotations

from typing import Final

from natbox.ipset.kadt import COUNTER_EQ, COUNTER_GT, COUNTER_LT, COUNTER_NE, COUNTER_NONE, AdtOpt, ip_set_test
from natbox.ipset.scope import sets_in_scope
from natbox.netfilter import NFPROTO_IPV4
from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["IPSET_DIM_MAX", "SetMatch", "format_dirs", "parse_set_arg"]

IPSET_DIM_MAX: Final = 6
IPSET_MAXNAMELEN: Final = 32
U64_MAX: Final = (1 << 64) - 1


def parse_set_arg(what: str, arg: str, family: int = NFPROTO_IPV4) -> tuple[str, tuple[bool, ...]]:
    """`get_set_byname` + `parse_dirs`: "NAME src,dst" → (name, src flag of each dimension). The set's family
    must be the rule's (iptables: inet, ip6tables: inet6) or none (bitmap:port, hash:mac, list:set)."""
    name, _, dirs = arg.partition(" ")
    if len(name) > IPSET_MAXNAMELEN - 1:
        raise RulesError(f"setname `{name}' too long, max {IPSET_MAXNAMELEN - 1} characters.")
    reg = sets_in_scope()
    s = reg.get(name) if reg is not None else None
    if s is None:
        raise RulesError(f"Set {name} doesn't exist.\n")
    if s.family and s.family != family:
        fam = "IPv4" if s.family == NFPROTO_IPV4 else "IPv6"
        raise RulesError(f"The protocol family of set {name} is {fam}, which is not applicable.\n")
    parts = dirs.split(",")
    flags: list[bool] = []
    for p in parts[:IPSET_DIM_MAX]:
        if p.startswith("src"):
            flags.append(True)
        elif p.startswith("dst"):
            flags.append(False)
        else:
            raise RulesError("You must spefify (the comma separated list of) 'src' or 'dst'.")
    if len(parts) > IPSET_DIM_MAX:
        raise RulesError(f"Can't be more src/dst options than {IPSET_DIM_MAX}.")
    return name, tuple(flags)


def format_dirs(flags: tuple[bool, ...]) -> str:
    return ",".join("src" if f else "dst" for f in flags)


def _counter_text(op: int, value: int, what: str, sep: str) -> str:
    """`set_printv3_counter()`."""
    if op == COUNTER_EQ:
        return f" {sep}{what}-eq {value}"
    if op == COUNTER_NE:
        return f" ! {sep}{what}-eq {value}"
    if op == COUNTER_LT:
        return f" {sep}{what}-lt {value}"
    if op == COUNTER_GT:
        return f" {sep}{what}-gt {value}"
    return ""


class SetMatch(Match):
    name = "set"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    revision = 4
    options = (Opt("match-set", 2, True), Opt("return-nomatch", 0), Opt("update-counters", 0, True),
               Opt("update-subcounters", 0, True), Opt("packets-eq", 1, True), Opt("packets-lt", 1),
               Opt("packets-gt", 1), Opt("bytes-eq", 1, True), Opt("bytes-lt", 1), Opt("bytes-gt", 1))

    def __init__(self) -> None:
        self.set_name = ""
        self.dirs: tuple[bool, ...] = ()
        self.invert = False
        self.return_nomatch = False
        self.skip_counters = False
        self.skip_subcounters = False
        self.packets_op = COUNTER_NONE
        self.packets = 0
        self.bytes_op = COUNTER_NONE
        self.bytes = 0

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        """`set_parse_v4()`."""
        if opt == "match-set":
            if self.dirs:
                raise RulesError("--match-set can be specified only once")
            self.set_name, self.dirs = parse_set_arg("match-set", arg or "", rule.family)
            self.invert = inverted
        elif opt == "return-nomatch":
            self.return_nomatch = True
        elif opt == "update-counters":
            self.skip_counters = inverted
        elif opt == "update-subcounters":
            self.skip_subcounters = inverted
        elif opt.startswith(("packets-", "bytes-")):
            what, _, kind = opt.partition("-")
            if (self.packets_op if what == "packets" else self.bytes_op) != COUNTER_NONE:
                raise RulesError(f"only one of the --{what}-[eq|lt|gt] is allowed")
            value = parse_uint(arg or "", 0, U64_MAX)
            if value is None:
                raise RulesError(f"Cannot parse {arg} as a counter value")
            op = {"eq": COUNTER_NE if inverted else COUNTER_EQ, "lt": COUNTER_LT, "gt": COUNTER_GT}[kind]
            if what == "packets":
                self.packets_op, self.packets = op, value
            else:
                self.bytes_op, self.bytes = op, value
        else:
            super().parse(opt, arg, inverted, rule)

    def final_check(self, rule: Rule) -> None:
        if not self.dirs:
            raise RulesError("You must specify `--match-set' with proper arguments")

    def set_names(self) -> tuple[str, ...]:
        """The sets this match holds a reference on."""
        return (self.set_name,)

    def _text(self, prefix: str, sep: str) -> str:
        """`set_print_v4_matchinfo()`."""
        out = f"{' !' if self.invert else ''} {prefix} {self.set_name} {format_dirs(self.dirs)}"
        if self.return_nomatch:
            out += f" {sep}return-nomatch"
        if self.skip_counters:
            out += f" ! {sep}update-counters"
        if self.skip_subcounters:
            out += f" ! {sep}update-subcounters"
        return (out + _counter_text(self.packets_op, self.packets, "packets", sep)
                + _counter_text(self.bytes_op, self.bytes, "bytes", sep))

    def save(self) -> str:
        return self._text("--match-set", "--")

    def print_list(self, numeric: bool) -> str:
        return self._text("match-set", "")

    def _opt(self) -> AdtOpt:
        return AdtOpt(self.dirs, self.return_nomatch, self.skip_counters, self.skip_subcounters,
                      self.packets_op, self.packets, self.bytes_op, self.bytes)

    def compile(self) -> MatchFn:
        name, inv, opt = self.set_name, self.invert, self._opt()

        def set_match_v4(skb: Skb, ctx: XtContext) -> bool:
            reg = ctx.ipsets()
            s = reg.get(name) if reg is not None else None
            if s is None:
                return inv
            return (ip_set_test(s, skb, opt, ctx.now) > 0) != inv

        return set_match_v4

    def why(self, skb: Skb, ctx: XtContext) -> str:
        reg = ctx.ipsets()
        if reg is None or reg.get(self.set_name) is None:
            return f"no match (no set {self.set_name})"
        return f"no match (not {'' if self.invert else 'in '}set {self.set_name})"
