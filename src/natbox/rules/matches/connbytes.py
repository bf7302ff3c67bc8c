"""`-m connbytes` (libxt_connbytes.c, net/netfilter/xt_connbytes.c `connbytes_mt`): the ct's accounting.

Packets, bytes or the average packet size of the original direction, the reply direction or both, from the
ct's `nf_conn_acct` counters; a ct without them (accounting was off when it was created) never matches.
Loading the rule turns `net.netfilter.nf_conntrack_acct` on for good, as `connbytes_mt_check` does
("Forcing CT accounting to be enabled"): `xt_attach` asks for it, the host applies it.
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec
from natbox.rules.model import Match, MatchFn, Opt, Rule, RulesError
from natbox.rules.xtstate import XtState
from natbox.skb import Skb

__all__ = ["Connbytes"]

U64: Final = (1 << 64) - 1
XT_CONNBYTES_PKTS, XT_CONNBYTES_BYTES, XT_CONNBYTES_AVGPKT = 0, 1, 2
XT_CONNBYTES_DIR_ORIGINAL, XT_CONNBYTES_DIR_REPLY, XT_CONNBYTES_DIR_BOTH = 0, 1, 2
_SPECS: Final = (XtOptSpec("connbytes", 0, mand=True), XtOptSpec("connbytes-dir", 1, mand=True),
          XtOptSpec("connbytes-mode", 2, mand=True))
_DIRS: Final = {"original": XT_CONNBYTES_DIR_ORIGINAL, "reply": XT_CONNBYTES_DIR_REPLY, "both": XT_CONNBYTES_DIR_BOTH}
_MODES: Final = {"packets": XT_CONNBYTES_PKTS, "bytes": XT_CONNBYTES_BYTES, "avgpkt": XT_CONNBYTES_AVGPKT}


def _u64_range(opt: str, text: str) -> tuple[int, int, int]:
    """`xtopt_parse_mint` for XTTYPE_UINT64RC: (from, to, how many values were given)."""
    parts = text.split(":")
    if len(parts) > 2:
        raise RulesError(f'connbytes: Too many components for option "--{opt}" (max: 2)\n')
    vals = []
    for i, part in enumerate(parts):
        if part == "":
            vals.append(U64 if i == 1 else 0)
            continue
        v = parse_uint(part, 0, U64)
        if v is None:
            near = ":".join(parts[i:])
            raise RulesError(f'connbytes: bad value for option "--{opt}" near "{near}", or out of range '
                             f'(0-{U64}).\n')
        vals.append(v)
    if len(vals) == 2 and vals[0] > vals[1]:
        raise RulesError(f"{vals[0]} should be less than {vals[1]}")
    return vals[0], vals[-1], len(vals)


class Connbytes(Match):
    name = "connbytes"
    options = (Opt("connbytes", 1, True), Opt("connbytes-dir"), Opt("connbytes-mode"))

    def __init__(self) -> None:
        self.count_from = 0
        self.count_to = 0
        self.what = XT_CONNBYTES_PKTS
        self.direction = XT_CONNBYTES_DIR_ORIGINAL
        self.flags = XtFlags("connbytes", _SPECS)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        self.flags.parse(opt)
        a = arg or ""
        if opt == "connbytes":
            lo, hi, n = _u64_range(opt, a)
            self.count_from, self.count_to = lo, (hi if n == 2 else U64)
            if inverted:
                self.count_from, self.count_to = self.count_to, self.count_from
        elif opt == "connbytes-dir":
            if a not in _DIRS:
                raise RulesError(f"Unknown --connbytes-dir `{a}'")
            self.direction = _DIRS[a]
        else:
            if a not in _MODES:
                raise RulesError(f"Unknown --connbytes-mode `{a}'")
            self.what = _MODES[a]

    def final_check(self, rule: Rule) -> None:
        self.flags.fcheck()

    def _text(self, pfx: str) -> str:
        lo, hi = self.count_from, self.count_to
        out = ""
        if lo > hi:
            out, lo, hi = " !", hi, lo
        out += f" {pfx}connbytes {lo}" + (f":{hi}" if hi and hi < U64 else "")
        mode = {v: k for k, v in _MODES.items()}[self.what]
        direction = {v: k for k, v in _DIRS.items()}[self.direction]
        if pfx:
            return out + f" --connbytes-mode {mode} --connbytes-dir {direction}"
        return out + f" connbytes mode {mode} connbytes direction {direction}"

    def save(self) -> str:
        return self._text("--")

    def print_list(self, numeric: bool) -> str:
        return self._text("")

    def xt_attach(self, state: XtState) -> tuple[str, str]:
        state.acct_forced = True  # connbytes_mt_check: nf_ct_set_acct(net, true)
        return "connbytes", ""

    def compile(self) -> MatchFn:
        lo, hi, what, direction = self.count_from, self.count_to, self.what, self.direction
        dirs = (0, 1) if direction == XT_CONNBYTES_DIR_BOTH else (direction,)

        def connbytes_mt(skb: Skb, ctx: XtContext) -> bool:
            """`connbytes_mt()`."""
            ct = skb.ct
            if ct is None or not ct.accounted:
                return False
            pkts = sum(ct.acct_packets[d] for d in dirs)
            if what == XT_CONNBYTES_PKTS:
                v = pkts
            else:
                v = sum(ct.acct_bytes[d] for d in dirs)
                if what == XT_CONNBYTES_AVGPKT:
                    v = v // pkts if pkts else 0
            if hi >= lo:
                return lo <= v <= hi
            return v < hi or v > lo  # inverted

        return connbytes_mt
