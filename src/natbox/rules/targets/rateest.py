"""`-j RATEEST` (libxt_RATEEST.c, net/netfilter/xt_RATEEST.c `xt_rateest_tg`): feed a named rate estimator.

The estimator is the namespace's (`XtContext.xt_state().rateest`, natbox.rules.xtstate.rateest), created by
the first rule naming it with that rule's interval and averaging constant; the target counts the packet
and continues. A second rule whose parameters differ from the existing estimator's is refused (EINVAL), as
`xt_rateest_tg_checkentry` refuses it (natbox.rules.estimators reads the other rules).
"""

from __future__ import annotations

import math
import re
from typing import Final

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec
from natbox.rules.model import Opt, Rule, RulesError, Target, TargetFn
from natbox.rules.xtstate import XtState, jiffies
from natbox.rules.xtstate.rateest import RateEstimator
from natbox.skb import Skb

__all__ = ["Rateest"]

TIME_UNITS_PER_SEC: Final = 1000000
IFNAMSIZ: Final = 16
_SPECS: Final = (XtOptSpec("rateest-name", 0, mand=True), XtOptSpec("rateest-interval", 1, mand=True),
          XtOptSpec("rateest-ewmalog", 2, mand=True))
_UNITS: Final = {"s": TIME_UNITS_PER_SEC, "sec": TIME_UNITS_PER_SEC, "secs": TIME_UNITS_PER_SEC,
          "ms": TIME_UNITS_PER_SEC // 1000, "msec": TIME_UNITS_PER_SEC // 1000, "msecs": TIME_UNITS_PER_SEC // 1000,
          "us": 1, "usec": 1, "usecs": 1}
_FLOAT: Final = re.compile(r"\s*[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)", re.I)


def get_time(text: str) -> int | None:
    """`RATEEST_get_time()`: strtod and an optional unit, in microseconds (None when malformed)."""
    m = _FLOAT.match(text)
    if m is None:
        return None
    t = float(m.group(0))
    rest = text[m.end():]
    if rest:
        unit = _UNITS.get(rest.lower())
        if unit is None:
            return None
        t *= unit
    if math.isnan(t) or t < 0 or t >= 1 << 32:
        return int(t) & 0xFFFFFFFF if math.isfinite(t) else 0
    return int(t)


def print_time(t: int) -> str:
    """`RATEEST_print_time()`."""
    if t >= TIME_UNITS_PER_SEC:
        return f" {t / TIME_UNITS_PER_SEC:.1f}s"
    if t >= TIME_UNITS_PER_SEC // 1000:
        return f" {t / (TIME_UNITS_PER_SEC / 1000):.1f}ms"
    return f" {t}us"


class Rateest(Target):
    name = "RATEEST"
    options = (Opt("rateest-name"), Opt("rateest-interval"), Opt("rateest-ewmalog"))

    def __init__(self) -> None:
        self.est_name = ""
        self.interval = 0  # gen_estimator's -2..3
        self.ewma_log = 0
        self._interval_us = 0
        self._ewma_us = 0
        self.flags = XtFlags("RATEEST", _SPECS)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        self.flags.parse(opt)
        a = arg or ""
        if opt == "rateest-name":
            self.est_name = a[:IFNAMSIZ - 1]
            return
        t = get_time(a)
        what = "interval" if opt == "rateest-interval" else "ewmalog"
        if t is None:
            raise RulesError(f'RATEEST: bad {what} value "{a}"')
        if opt == "rateest-interval":
            self._interval_us = t
        else:
            self._ewma_us = t

    def final_check(self, rule: Rule) -> None:
        """`RATEEST_final_check()`, then libxtables' mandatory options."""
        interval = 0
        while interval <= 5 and not self._interval_us <= (1 << interval) * (TIME_UNITS_PER_SEC // 4):
            interval += 1
        if interval > 5:
            raise RulesError("RATEEST: interval value is too large")
        ewma_log = 1
        while ewma_log < 32:
            w = 1.0 - 1.0 / (1 << ewma_log)
            if self._interval_us / (-math.log(w)) > self._ewma_us:
                break
            ewma_log += 1
        ewma_log -= 1
        if ewma_log == 0 or ewma_log >= 31:
            raise RulesError("RATEEST: ewmalog value is out of range")
        self.interval, self.ewma_log = interval - 2, ewma_log
        self.flags.fcheck()

    def _text(self, pfx: str) -> str:
        local_interval = (TIME_UNITS_PER_SEC << (self.interval + 2)) // 4
        local_ewma = (local_interval * (1 << self.ewma_log)) & 0xFFFFFFFF
        return (f" {pfx}name {self.est_name} {pfx}interval" + print_time(local_interval) + f" {pfx}ewmalog"
                + print_time(local_ewma))

    def save(self) -> str:
        return self._text("--rateest-")

    def print_list(self, numeric: bool) -> str:
        return self._text("")

    def xt_attach(self, state: XtState) -> tuple[str, str]:
        """`xt_rateest_tg_checkentry()`: the estimator `name`, created with this rule's parameters if new."""
        if self.est_name not in state.rateest:
            state.rateest[self.est_name] = RateEstimator(self.est_name, self.interval, self.ewma_log,
                                                         jiffies(state.now))
        return "rateest", self.est_name

    def compile(self) -> TargetFn:
        name, interval, ewma_log = self.est_name, self.interval, self.ewma_log

        def rateest_tg(skb: Skb, ctx: XtContext) -> int:
            """`xt_rateest_tg()`."""
            now = jiffies(ctx.now)
            ests = ctx.xt_state().rateest
            est = ests.get(name)
            if est is None:
                est = ests[name] = RateEstimator(name, interval, ewma_log, now)
            est.add(len(skb.data), now)
            return XT_CONTINUE

        return rateest_tg
