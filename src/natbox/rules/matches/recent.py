"""`-m recent` (libxt_recent.c revision 1, net/netfilter/xt_recent.c `recent_mt`): "recently seen" address lists.

The lists are the namespace's (`XtContext.xt_state().recent`, natbox.rules.xtstate.recent), shared by every
rule naming them; a list's mask is the one of the first rule that named it. Times are jiffies of the
injected clock. ufw's `limit` rules are `--set` then `--update --seconds 30 --hitcount 6`.
"""

from __future__ import annotations

from typing import Final

from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.api import XtContext
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec
from natbox.rules.matches._xtopt import U32_MAX, parse_value
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError, parse_ipv4
from natbox.rules.xtstate import HZ, XtState, jiffies
from natbox.rules.xtstate.recent import XT_RECENT_MAX_NSTAMPS, recent_attach
from natbox.skb import Skb
from natbox.wire.ipv6 import format_addr6, parse_addr6

__all__ = ["XT_RECENT_CHECK", "XT_RECENT_REAP", "XT_RECENT_REMOVE", "XT_RECENT_SET", "XT_RECENT_TTL",
           "XT_RECENT_UPDATE", "Recent"]

# xt_recent.h
XT_RECENT_CHECK, XT_RECENT_SET, XT_RECENT_UPDATE, XT_RECENT_REMOVE, XT_RECENT_TTL, XT_RECENT_REAP = 1, 2, 4, 8, 16, 32
XT_RECENT_MODIFIERS: Final = XT_RECENT_TTL | XT_RECENT_REAP
XT_RECENT_NAME_LEN: Final = 200

(O_SET, O_RCHECK, O_UPDATE, O_REMOVE, O_SECONDS, O_REAP, O_HITCOUNT, O_RTTL, O_NAME, O_RSOURCE, O_RDEST,
 O_MASK) = range(12)
F_SET, F_REMOVE, F_SECONDS = 1 << O_SET, 1 << O_REMOVE, 1 << O_SECONDS
F_ANY_OP: Final = 0b1111
_SPECS: Final = (
    XtOptSpec("set", O_SET, excl=F_ANY_OP), XtOptSpec("rcheck", O_RCHECK, excl=F_ANY_OP),
    XtOptSpec("update", O_UPDATE, excl=F_ANY_OP), XtOptSpec("remove", O_REMOVE, excl=F_ANY_OP),
    XtOptSpec("seconds", O_SECONDS), XtOptSpec("reap", O_REAP, also=F_SECONDS),
    XtOptSpec("hitcount", O_HITCOUNT), XtOptSpec("rttl", O_RTTL, excl=F_SET | F_REMOVE),
    XtOptSpec("name", O_NAME), XtOptSpec("rsource", O_RSOURCE), XtOptSpec("rdest", O_RDEST),
    XtOptSpec("mask", O_MASK),
)
_OPS: Final = {"set": XT_RECENT_SET, "rcheck": XT_RECENT_CHECK, "update": XT_RECENT_UPDATE, "remove": XT_RECENT_REMOVE}


def _dotted(a: int) -> str:
    return f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"


class Recent(Match):
    name = "recent"
    revision = 1
    options = (Opt("set", 0, True), Opt("rcheck", 0, True), Opt("update", 0, True), Opt("remove", 0, True),
               Opt("seconds"), Opt("reap", 0), Opt("hitcount"), Opt("rttl", 0), Opt("name"), Opt("rsource", 0),
               Opt("rdest", 0), Opt("mask"))

    def __init__(self) -> None:
        self.check_set = 0
        self.invert = False
        self.seconds = 0
        self.hit_count = 0
        self.list_name = "DEFAULT"
        self.dest = False  # side: XT_RECENT_DEST
        self.mask: int | None = None  # None: all ones (libxt_recent's init); else the rule family's mask
        self.flags = XtFlags("recent", _SPECS)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        self.flags.parse(opt)
        a = arg or ""
        if opt in _OPS:
            self.check_set |= _OPS[opt]
            self.invert = self.invert or inverted
        elif opt == "seconds":
            self.seconds = parse_value("recent", opt, a, U32_MAX, 1)
        elif opt == "hitcount":
            self.hit_count = parse_value("recent", opt, a, U32_MAX)
        elif opt == "reap":
            self.check_set |= XT_RECENT_REAP
        elif opt == "rttl":
            self.check_set |= XT_RECENT_TTL
        elif opt == "name":
            self.list_name = a[:XT_RECENT_NAME_LEN - 1]
        elif opt in ("rsource", "rdest"):
            self.dest = opt == "rdest"
        elif opt == "mask" and rule.family == NFPROTO_IPV6:
            if parse_ipv4(a) is not None:
                raise RulesError("getaddrinfo: Address family for hostname not supported\n")
            try:
                self.mask = parse_addr6(a)
            except ValueError:
                raise RulesError("getaddrinfo: Name or service not known\n") from None
        elif opt == "mask":
            m = parse_ipv4(a) if a.count(".") == 3 else None
            if m is None:
                raise RulesError("getaddrinfo: Name or service not known\n")
            self.mask = m

    def final_check(self, rule: Rule) -> None:
        if not self.flags.flags & F_ANY_OP:  # recent_check, then xtables_options_fcheck (xtables_option_mfcall)
            raise RulesError("recent: you must specify one of `--set', `--rcheck' `--update' or `--remove'")
        self.flags.fcheck()

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`recent_mt_check`: one operation, no modifiers on --set/--remove, the hit count and the name."""
        cs = self.check_set
        ops = cs & (XT_RECENT_SET | XT_RECENT_REMOVE | XT_RECENT_CHECK | XT_RECENT_UPDATE)
        bad = (ops.bit_count() != 1
               or (cs & (XT_RECENT_SET | XT_RECENT_REMOVE)
                   and (self.seconds or self.hit_count or cs & XT_RECENT_MODIFIERS))
               or (cs & XT_RECENT_REAP and not self.seconds)
               or self.hit_count >= XT_RECENT_MAX_NSTAMPS
               or self.list_name in ("", ".", "..") or "/" in self.list_name)
        if bad:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _words(self) -> list[tuple[str, str]]:
        cs, out = self.check_set, []
        for bit, save, show in ((XT_RECENT_SET, "--set", "SET"), (XT_RECENT_CHECK, "--rcheck", "CHECK"),
                                (XT_RECENT_UPDATE, "--update", "UPDATE"), (XT_RECENT_REMOVE, "--remove", "REMOVE")):
            if cs & bit:
                out.append((save, show))
        if self.seconds:
            out.append((f"--seconds {self.seconds}", f"seconds: {self.seconds}"))
        if cs & XT_RECENT_REAP:
            out.append(("--reap", "reap"))
        if self.hit_count:
            out.append((f"--hitcount {self.hit_count}", f"hit_count: {self.hit_count}"))
        if cs & XT_RECENT_TTL:
            out.append(("--rttl", "TTL-Match"))
        return out

    def _mask_text(self) -> str:
        if self.family == NFPROTO_IPV6:
            return format_addr6((1 << 128) - 1 if self.mask is None else self.mask)
        return _dotted(0xFFFFFFFF if self.mask is None else self.mask)

    def _union_mask(self) -> int:
        """The rule's `union nf_inet_addr` mask as a 128-bit int (an IPv4 mask is the first word)."""
        if self.mask is None:
            return (1 << 128) - 1
        return self.mask if self.family == NFPROTO_IPV6 else (self.mask << 96) | ((1 << 96) - 1)

    def save(self) -> str:
        words = " ".join(s for s, _ in self._words())
        return ((" !" if self.invert else "") + (f" {words}" if words else "") + f" --name {self.list_name}"
                + f" --mask {self._mask_text()}" + (" --rdest" if self.dest else " --rsource"))

    def print_list(self, numeric: bool) -> str:
        words = "".join(f" {s}" for _, s in self._words())
        return ((" !" if self.invert else "") + " recent:" + words + f" name: {self.list_name}"
                + (" side: dest" if self.dest else " side: source") + f" mask: {self._mask_text()}")

    def xt_attach(self, state: XtState) -> tuple[str, str]:
        recent_attach(state.recent, self.list_name, self._union_mask(), self.hit_count)
        return "recent", self.list_name

    def compile(self) -> MatchFn:
        cs, invert, seconds, hit_count = self.check_set, self.invert, self.seconds, self.hit_count
        name, mask, dest, hit_count = self.list_name, self._union_mask(), self.dest, self.hit_count
        v6 = self.family == NFPROTO_IPV6
        want_ttl = bool(cs & XT_RECENT_TTL)
        is_set, is_update = bool(cs & XT_RECENT_SET), bool(cs & XT_RECENT_UPDATE)

        def recent_mt(skb: Skb, ctx: XtContext) -> bool:
            """`recent_mt()`."""
            addr = skb.daddr if dest else skb.saddr
            ttl = skb.ttl
            if skb.oif and skb.iif:  # "use TTL as seen before forwarding": forwarded, no local socket
                ttl = (ttl + 1) & 0xFF
            t = recent_attach(ctx.xt_state().recent, name, mask, hit_count)
            # nf_inet_addr_mask with the table's mask; an IPv6 entry is keyed apart (its family)
            addr = (addr & t.mask) | (1 << 128) if v6 else addr & (t.mask >> 96)
            now = jiffies(ctx.now)
            ret = invert
            e = t.lookup(addr, ttl if want_ttl else 0)
            if e is None:
                if not is_set:
                    return ret
                t.init(addr, ttl, now)
                return not ret
            if is_set:
                ret = not ret
            elif cs & XT_RECENT_REMOVE:
                t.remove(e)
                ret = not ret
            else:  # CHECK or UPDATE
                time = now - seconds * HZ
                hits = 0
                for i in range(e.nstamps):
                    if seconds and time > e.stamps[i]:
                        continue
                    hits += 1
                    if not hit_count or hits >= hit_count:
                        ret = not ret
                        break
                if cs & XT_RECENT_REAP:
                    t.reap(time, e, is_update and ret)
            if is_set or (is_update and ret):
                t.update(e, now)
                e.ttl = ttl
            return ret

        return recent_mt
