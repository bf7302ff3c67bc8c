"""`-j LED --led-trigger-id ID [--led-delay ms|inf] [--led-always-blink]` (libxt_LED.c, xt_LED.c `led_tg`).

The kernel fires the LED trigger "netfilter-ID" and continues. natbox has no LEDs: the target only
continues (docs/differences.md).
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb

__all__ = ["Led"]

LED_ID_SIZE: Final = 27  # struct xt_led_info.id, "netfilter-" + the name + NUL
LED_PREFIX: Final = "netfilter-"


def _escaped(text: str) -> str:
    return "".join("\\" + c if c in '"\\' else c for c in text)


class Led(Target):
    name = "LED"
    options = (Opt("led-trigger-id", 1), Opt("led-delay", 1), Opt("led-always-blink", 0))

    def __init__(self) -> None:
        self.id: str | None = None
        self.delay = 0
        self.always_blink = False

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if opt == "led-trigger-id":
            if len(LED_PREFIX) + len(a) >= LED_ID_SIZE:
                raise RulesError(f'LED: argument to "--led-trigger-id" is too long ({len(a)} > '
                                 f'{LED_ID_SIZE - len(LED_PREFIX) - 1}).\n')
            self.id = a
        elif opt == "led-delay":
            if a == "inf":
                self.delay = -1
            elif a.isdigit() and int(a) <= 0x7FFFFFFF:
                self.delay = int(a)
            else:
                raise RulesError('LED: bad value for option "--led-delay", or out of range.\n')
        elif opt == "led-always-blink":
            self.always_blink = True
        else:
            super().parse(opt, arg, inverted, rule)

    def final_check(self, rule: Rule) -> None:
        if self.id is None:
            raise RulesError('LED: option "--led-trigger-id" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        if not self.id:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)  # led_tg_check: empty id

    def save(self) -> str:
        out = f' --led-trigger-id "{_escaped(self.id or "")}"'
        if self.delay > 0:
            out += f" --led-delay {self.delay}"
        elif self.delay == -1:
            out += " --led-delay inf"
        return out + (" --led-always-blink" if self.always_blink else "")

    def print_list(self, numeric: bool) -> str:
        out = f' led-trigger-id:"{_escaped(self.id or "")}"'
        out += " led-delay:inf" if self.delay == -1 else f" led-delay:{self.delay}ms"
        return out + (" led-always-blink" if self.always_blink else "")

    def compile(self) -> TargetFn:
        def led_tg(skb: Skb, ctx: XtContext) -> int:
            return XT_CONTINUE

        return led_tg
