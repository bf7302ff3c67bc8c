"""`-j LOG` (libxt_LOG.c, xt_LOG.c): records a log event through `ctx.log`, then continues."""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches._common import quote_string
from natbox.rules.model import Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb

__all__ = ["Log"]

LOG_DEFAULT_LEVEL: Final = 4  # LOG_WARNING
LOG_PREFIX_MAX: Final = 29  # sizeof(xt_log_info.prefix) - 1
# syslog priority names (priority2name / log_names in libxt_LOG.c)
LEVEL_NAMES: Final = ("emerg", "alert", "crit", "error", "warning", "notice", "info", "debug")
_LEVEL_ALIASES: Final = {"panic": 0, "err": 3, "warn": 4}
_PRINT_NAMES: Final = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")
# XT_LOG_* flags, in save order
LOG_FLAGS: tuple[tuple[str, str, int], ...] = (
    ("log-tcp-sequence", "tcp-sequence", 0x01), ("log-tcp-options", "tcp-options", 0x02),
    ("log-ip-options", "ip-options", 0x04), ("log-uid", "uid", 0x08), ("log-macdecode", "macdecode", 0x20),
)


class Log(Target):
    name = "LOG"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    options = (Opt("log-level", 1), Opt("log-prefix", 1), *(Opt(f[0], 0) for f in LOG_FLAGS))

    def __init__(self) -> None:
        self.level = LOG_DEFAULT_LEVEL
        self.prefix = ""
        self.flags = 0

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if opt == "log-level":
            if a.isdigit() and int(a) <= 7:
                self.level = int(a)
            elif a.lower() in LEVEL_NAMES:
                self.level = LEVEL_NAMES.index(a.lower())
            elif a.lower() in _LEVEL_ALIASES:
                self.level = _LEVEL_ALIASES[a.lower()]
            else:
                raise RulesError(f'log level "{a}" unknown\n')
        elif opt == "log-prefix":
            if "\n" in a:
                raise RulesError("Newlines not allowed in --log-prefix")
            self.prefix = a[:LOG_PREFIX_MAX]  # XTTYPE_STRING truncates to the field size
        else:
            for o, _p, bit in LOG_FLAGS:
                if o == opt:
                    self.flags |= bit
                    return
            super().parse(opt, arg, inverted, rule)

    def save(self) -> str:
        out = ""
        if self.prefix:
            out += " --log-prefix" + quote_string(self.prefix)
        if self.level != LOG_DEFAULT_LEVEL:
            out += f" --log-level {self.level}"
        for o, _p, bit in LOG_FLAGS:
            if self.flags & bit:
                out += f" --{o}"
        return out

    def print_list(self, numeric: bool) -> str:
        out = " LOG"
        if numeric:
            out += f" flags {self.flags} level {self.level}"
        else:
            out += f" level {_PRINT_NAMES[self.level]}"
            for _o, p, bit in LOG_FLAGS:
                if self.flags & bit:
                    out += f" {p}"
        if self.prefix:
            out += f' prefix "{self.prefix}"'
        return out

    def compile(self) -> TargetFn:
        prefix, level, flags = self.prefix, self.level, self.flags

        def log_tg(skb: Skb, ctx: XtContext) -> int:
            ctx.log(skb, prefix, level, flags)
            return XT_CONTINUE

        return log_tg
