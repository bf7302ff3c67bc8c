"""`-m conntrack` (rev 3) and its alias `-m state` (libxt_conntrack.c, xt_conntrack.c `conntrack_mt`), §5.3."""

from __future__ import annotations

from typing import ClassVar, Final

from natbox.netfilter import CtInfo, CtStatus, Direction
from natbox.rules.addr6 import format_addr6_mask, parse_hostmask
from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_port, parse_protocol
from natbox.rules.matches._xtopt import parse_range
from natbox.rules.model import (
    NFPROTO_IPV4,
    Match,
    MatchFn,
    Opt,
    Rule,
    RulesError,
    format_addr_mask,
)
from natbox.skb import Skb

__all__ = ["Conntrack", "State"]

# XT_CONNTRACK_STATE_* bits (xt_conntrack.h): 1 << (ctinfo % IP_CT_IS_REPLY + 1), INVALID bit 0 ...
ST_INVALID: Final = 1 << 0
ST_ESTABLISHED: Final = 1 << 1
ST_RELATED: Final = 1 << 2
ST_NEW: Final = 1 << 3
ST_SNAT: Final = 1 << 6
ST_DNAT: Final = 1 << 7
ST_UNTRACKED: Final = 1 << 8
# name -> bit, in print order (print_state)
CTSTATES: tuple[tuple[str, int], ...] = (
    ("INVALID", ST_INVALID), ("NEW", ST_NEW), ("RELATED", ST_RELATED), ("ESTABLISHED", ST_ESTABLISHED),
    ("UNTRACKED", ST_UNTRACKED), ("SNAT", ST_SNAT), ("DNAT", ST_DNAT),
)
CTSTATUS: tuple[tuple[str, int], ...] = (
    ("EXPECTED", int(CtStatus.EXPECTED)), ("SEEN_REPLY", int(CtStatus.SEEN_REPLY)),
    ("ASSURED", int(CtStatus.ASSURED)), ("CONFIRMED", int(CtStatus.CONFIRMED)),
)
_CTINFO_BIT: Final = {
    CtInfo.ESTABLISHED: ST_ESTABLISHED, CtInfo.ESTABLISHED_REPLY: ST_ESTABLISHED,
    CtInfo.RELATED: ST_RELATED, CtInfo.RELATED_REPLY: ST_RELATED, CtInfo.NEW: ST_NEW,
    CtInfo.UNTRACKED: ST_UNTRACKED, CtInfo.INVALID: ST_INVALID,
}

_ADDR_OPTS: Final = ("ctorigsrc", "ctorigdst", "ctreplsrc", "ctrepldst")
_PORT_OPTS: Final = ("ctorigsrcport", "ctorigdstport", "ctreplsrcport", "ctrepldstport")


def _state_names(mask: int, names: tuple[tuple[str, int], ...] = CTSTATES) -> str:
    return ",".join(n for n, b in names if mask & b)


def state_bit(skb: Skb) -> int:
    """The packet's state bit, with SNAT/DNAT added from the ct's status (conntrack_mt)."""
    if skb.untracked:
        return ST_UNTRACKED
    ct = skb.ct
    if ct is None:
        return ST_INVALID
    bit = _CTINFO_BIT.get(skb.ctinfo, ST_INVALID)
    st = ct.status
    if st & CtStatus.SRC_NAT:
        bit |= ST_SNAT
    if st & CtStatus.DST_NAT:
        bit |= ST_DNAT
    return bit


class Conntrack(Match):
    name = "conntrack"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    revision = 3
    options: ClassVar[tuple[Opt, ...]] = (
        Opt("ctstate", 1, True), Opt("ctproto", 1, True), Opt("ctorigsrc", 1, True), Opt("ctorigdst", 1, True),
        Opt("ctreplsrc", 1, True), Opt("ctrepldst", 1, True), Opt("ctstatus", 1, True),
        Opt("ctexpire", 1, True), Opt("ctorigsrcport", 1, True), Opt("ctorigdstport", 1, True),
        Opt("ctreplsrcport", 1, True), Opt("ctrepldstport", 1, True), Opt("ctdir", 1, False),
    )

    def __init__(self) -> None:
        self.state: int | None = None
        self.inv: set[str] = set()
        self.alias = False
        self.proto: int | None = None
        self.addrs: dict[str, tuple[int, int]] = {}
        self.ports: dict[str, tuple[int, int]] = {}
        self.status: int | None = None
        self.expire: tuple[int, int] | None = None
        self.direction: Direction | None = None
        self.family = NFPROTO_IPV4  # the rule's: how --ctorigsrc etc. read and print

    @staticmethod
    def _parse_states(arg: str, what: str) -> int:
        mask = 0
        for part in arg.split(","):
            for n, b in CTSTATES if what == "ctstate" else CTSTATES[:5]:
                if n.lower() == part.lower():
                    mask |= b
                    break
            else:
                raise RulesError(f'Bad {what} "{part}"')
        return mask

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if inverted:
            self.inv.add(opt)
        if opt == "ctstate":
            self.state = self._parse_states(a, "ctstate")
        elif opt == "ctproto":
            self.proto = parse_protocol(a)
        elif opt in _ADDR_OPTS:
            self.family = rule.family
            self.addrs[opt] = parse_hostmask(a, rule.family, "conntrack", opt)
        elif opt in _PORT_OPTS:
            lo_s, _, hi_s = a.partition(":")
            lo = parse_port(lo_s, None)
            hi = parse_port(hi_s, None) if hi_s else lo
            self.ports[opt] = (lo, hi)
        elif opt == "ctstatus":
            mask = 0
            for part in a.split(","):
                if part.upper() == "NONE":
                    continue
                for n, b in CTSTATUS:
                    if n.lower() == part.lower():
                        mask |= b
                        break
                else:
                    raise RulesError(f'Bad ctstatus "{part}"')
            self.status = mask
        elif opt == "ctexpire":
            self.expire = parse_range("conntrack", "ctexpire", a, 0xFFFFFFFF)  # XTTYPE_UINT32RC
        elif opt == "ctdir":
            if a.upper() == "ORIGINAL":
                self.direction = Direction.ORIGINAL
            elif a.upper() == "REPLY":
                self.direction = Direction.REPLY
            else:
                raise RulesError(f'conntrack: Bad value for "--ctdir" option: "{a}"')
        else:
            super().parse(opt, arg, inverted, rule)

    def _empty(self) -> bool:
        return (self.state is None and self.proto is None and not self.addrs and not self.ports
                and self.status is None and self.expire is None and self.direction is None)

    def final_check(self, rule: Rule) -> None:
        if self._empty():
            raise RulesError("conntrack: At least one option is required")

    def _dump(self, prefix: str, numeric: bool) -> str:
        out = ""

        def neg(o: str) -> str:
            return " !" if o in self.inv else ""

        if self.state is not None:
            out += neg("ctstate") + f" {prefix}{'state' if self.alias else 'ctstate'} " + _state_names(self.state)
        if self.proto is not None:
            out += neg("ctproto") + f" {prefix}ctproto {self.proto}"
        for o in _ADDR_OPTS:
            if o in self.addrs:
                addr, mask = self.addrs[o]
                if not numeric and addr == 0:
                    text = "anywhere"
                elif self.family != NFPROTO_IPV4:
                    text = format_addr6_mask(addr, mask, always_prefix=False)
                else:
                    text = format_addr_mask(addr, mask, numeric=numeric, always_prefix=False)
                out += neg(o) + f" {prefix}{o} {text}"
        for o in _PORT_OPTS:
            if o in self.ports:
                lo, hi = self.ports[o]
                out += neg(o) + f" {prefix}{o} {lo}" + (f":{hi}" if hi != lo else "")
        if self.status is not None:
            out += neg("ctstatus") + f" {prefix}ctstatus " + (_state_names(self.status, CTSTATUS) or "NONE")
        if self.expire is not None:
            lo, hi = self.expire
            out += neg("ctexpire") + f" {prefix}ctexpire " + (f"{lo}" if lo == hi else f"{lo}:{hi}")
        if self.direction is not None:
            out += f" {prefix}ctdir {'REPLY' if self.direction == Direction.REPLY else 'ORIGINAL'}"
        return out

    def save(self) -> str:
        return self._dump("--", True)

    def print_list(self, numeric: bool) -> str:
        return self._dump("", numeric)

    @property
    def save_name(self) -> str:
        return "state" if self.alias else "conntrack"

    def compile(self) -> MatchFn:
        state, inv = self.state, self.inv
        inv_state = "ctstate" in inv or "state" in inv
        proto = self.proto
        addr_tests = [(("ctorigsrc", "ctorigdst", "ctreplsrc", "ctrepldst").index(o), a, m, o in inv)
                      for o, (a, m) in self.addrs.items()]
        port_tests = [(_PORT_OPTS.index(o), lo, hi, o in inv) for o, (lo, hi) in self.ports.items()]
        status, inv_status = self.status, "ctstatus" in inv
        expire, inv_expire = self.expire, "ctexpire" in inv
        direction = self.direction
        only_state = state is not None and proto is None and not addr_tests and not port_tests and \
            status is None and expire is None and direction is None

        def conntrack_mt(skb: Skb, ctx: XtContext) -> bool:
            if state is not None:
                if bool(state & state_bit(skb)) == inv_state:
                    return False
            ct = skb.ct
            if ct is None or skb.untracked:
                return state is not None and only_state
            if direction is not None and (skb.ctinfo.direction == direction) is False:
                return False
            if proto is not None and (ct.tuples[0].proto == proto) == ("ctproto" in inv):
                return False
            for which, a, m, neg in addr_tests:
                t = ct.tuples[which >> 1]
                v = t.src if which & 1 == 0 else t.dst
                if (((v ^ a) & m) == 0) == neg:
                    return False
            for which, lo, hi, neg in port_tests:
                t = ct.tuples[which >> 1]
                v = t.sport if which & 1 == 0 else t.dport
                if (lo <= v <= hi) == neg:
                    return False
            if status is not None and bool(int(ct.status) & status) == inv_status:
                return False
            if expire is not None:
                left = max(0, int(ct.timeout - ctx.now)) if ct.confirmed else 0
                if (expire[0] <= left <= expire[1]) == inv_expire:
                    return False
            return True

        return conntrack_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        bit = state_bit(skb)
        return f"no match (state {_state_names(bit)})"


class State(Conntrack):
    """`-m state --state`: in iptables 1.8.9 an alias of conntrack rev 3 with XT_CONNTRACK_STATE_ALIAS."""

    name = "state"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    options: ClassVar[tuple[Opt, ...]] = (Opt("state", 1, True),)

    def __init__(self) -> None:
        super().__init__()
        self.alias = True

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "state":
            raise RulesError(f'unknown option "--{opt}"')
        if inverted:
            self.inv.add("ctstate")
        self.state = self._parse_states(arg or "", "state")

    def final_check(self, rule: Rule) -> None:
        if self.state is None:
            raise RulesError('state: option "--state" must be specified\n')
