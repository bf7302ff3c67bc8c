"""`-j IDLETIMER --timeout SECONDS --label NAME [--alarm]` rev 1 (libxt_IDLETIMER.c, xt_IDLETIMER.c).

`idletimer_tg_target` re-arms the timer named by the label (its sysfs file under
/sys/class/xt_idletimer/timers notifies userspace when it expires) and continues. natbox keeps the
timer as this rule's metadata only: the target continues and nothing is notified (docs/differences.md).
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches._xtopt import U32_MAX, parse_value
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb

__all__ = ["Idletimer"]

MAX_IDLETIMER_LABEL_SIZE: Final = 28
XT_IDLETIMER_ALARM: Final = 0x01


class Idletimer(Target):
    name = "IDLETIMER"
    revision = 1
    options = (Opt("timeout", 1), Opt("label", 1), Opt("alarm", 0))

    def __init__(self) -> None:
        self.timeout: int | None = None
        self.label: str | None = None
        self.timer_type = 0

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if opt == "timeout":
            self.timeout = parse_value("IDLETIMER", opt, a, U32_MAX)
        elif opt == "label":
            if len(a) >= MAX_IDLETIMER_LABEL_SIZE:
                raise RulesError(f'IDLETIMER: argument to "--label" is too long ({len(a)} > '
                                 f'{MAX_IDLETIMER_LABEL_SIZE - 1}).\n')
            self.label = a
        elif opt == "alarm":
            self.timer_type |= XT_IDLETIMER_ALARM
        else:
            super().parse(opt, arg, inverted, rule)

    def final_check(self, rule: Rule) -> None:
        for opt, value in (("timeout", self.timeout), ("label", self.label)):
            if value is None:
                raise RulesError(f'IDLETIMER: option "--{opt}" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`idletimer_tg_checkentry_v1`: a timeout of 0 or above INT_MAX/1000, an empty or reserved label."""
        t = self.timeout or 0
        if t == 0 or t >= 0x7FFFFFFF // 1000 or not self.label or self.label in ("power", "subsystem", "uevent"):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        return f" --timeout {self.timeout} --label {self.label}" + (" --alarm" if self.timer_type else "")

    def print_list(self, numeric: bool) -> str:
        return f" timeout:{self.timeout} label:{self.label}" + (" alarm" if self.timer_type else "")

    def compile(self) -> TargetFn:
        def idletimer_tg(skb: Skb, ctx: XtContext) -> int:
            return XT_CONTINUE

        return idletimer_tg
