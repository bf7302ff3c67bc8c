"""`-m time [--datestart D] [--datestop D] [--timestart T] [--timestop T] [--monthdays N,..] [--weekdays W,..]
[--kerneltz] [--contiguous]` (libxt_time.c, net/netfilter/xt_time.c `time_mt`).

The packet's time is the engine's injected clock (`XtContext.now`, taken as Unix seconds, as the kernel
takes `skb->tstamp` or the real time). The kernel's timezone (`sys_tz`, used with `--kerneltz`) is UTC
in natbox's model, so `--kerneltz` changes the text iptables prints and nothing else (docs/differences.md).
`time_mt`: the date range, the daytime range (over midnight when start > stop; `--contiguous` counts
the part after midnight to the previous day), the weekday (`localtime_2`: Monday = 1) and the day of
the month (`localtime_3`).
"""

from __future__ import annotations

import calendar
import datetime
from typing import Final

from natbox.rules.api import XtContext
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError
from natbox.skb import Skb

__all__ = ["TimeMatch"]

XT_TIME_LOCAL_TZ: Final = 1
XT_TIME_CONTIGUOUS: Final = 2
XT_TIME_ALL_MONTHDAYS: Final = 0xFFFFFFFE
XT_TIME_ALL_WEEKDAYS: Final = 0xFE
XT_TIME_MAX_DAYTIME: Final = 24 * 60 * 60 - 1
INT_MAX: Final = 0x7FFFFFFF
SECONDS_PER_DAY: Final = 86400
WEEK_DAYS: Final = ("", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _strtoul(s: str) -> tuple[int, str]:
    j = 0
    while j < len(s) and s[j].isdigit():
        j += 1
    return (int(s[:j]) if j else 0), s[j:]


def parse_date(text: str) -> int:
    """`time_parse_date`: YYYY[-MM[-DD[Thh[:mm[:ss]]]]] in UTC."""
    fields = [1970, 1, 1, 0, 0, 0]
    limits = ((1970, 2038), (0, 12), (0, 31), (0, 23), (0, 59), (0, 59))
    seps = "--T::"
    s = text
    for i in range(6):
        v, rest = _strtoul(s)
        lo, hi = limits[i]
        ok_sep = (rest == "" or (i < 5 and rest[0] == seps[i]))
        if not ok_sep or not lo <= v <= hi:
            raise RulesError(f'Invalid date "{text}" specified. Should be YYYY[-MM[-DD[Thh[:mm[:ss]]]]]')
        fields[i] = v
        if rest == "":
            break
        s = rest[1:]
    year, month, day, hour, minute, second = fields
    # mktime normalises month 0 / day 0 as C does: go through day arithmetic
    month0 = month - 1
    y, m = year + month0 // 12, month0 % 12
    first = datetime.datetime(y, m + 1, 1, tzinfo=datetime.UTC)
    stamp = first + datetime.timedelta(days=day - 1, hours=hour, minutes=minute, seconds=second)
    return calendar.timegm(stamp.utctimetuple())


def parse_daytime(text: str) -> int:
    """`time_parse_minutes`: hh:mm[:ss]."""
    hour, rest = _strtoul(text)
    err = RulesError(f'invalid time "{text}" specified, should be hh:mm[:ss] format and within the boundaries')
    if not rest.startswith(":") or hour > 23:
        raise err
    minute, rest = _strtoul(rest[1:])
    second = 0
    if (rest and rest[0] != ":") or minute > 59:
        raise err
    if rest:
        second, rest = _strtoul(rest[1:])
        if rest or second > 59:
            raise err
    return 3600 * hour + 60 * minute + second


def parse_monthdays(text: str) -> int:
    ret = 0
    for day in text.split(","):
        v, rest = _strtoul(day)
        if rest or v > 31 or not day:
            raise RulesError(f"{day} is not a valid day for --monthdays")
        ret |= 1 << v
    return ret


def parse_weekdays(text: str) -> int:
    ret = 0
    for day in text.split(","):
        if day.isdigit():
            if int(day) == 0:
                raise RulesError("No, the week does NOT begin with Sunday.")
            ret |= 1 << int(day)
            continue
        for i in range(1, 8):
            if day[:2] == WEEK_DAYS[i][:2]:
                ret |= 1 << i
                break
        else:
            raise RulesError(f"{day} is not a valid day specifier")
    return ret


def _hms(t: int) -> str:
    return f"{t // 3600:02}:{t // 60 % 60:02}:{t % 60:02}"


def _date(t: int, sep: str = "T") -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime(f"%Y-%m-%d{sep}%H:%M:%S")


class TimeMatch(Match):
    name = "time"
    options = (Opt("datestart", 1), Opt("datestop", 1), Opt("timestart", 1), Opt("timestop", 1),
               Opt("weekdays", 1, True), Opt("monthdays", 1, True), Opt("localtz", 0), Opt("utc", 0),
               Opt("kerneltz", 0), Opt("contiguous", 0))

    def __init__(self) -> None:
        self.date_start = 0
        self.date_stop = INT_MAX
        self.daytime_start = 0
        self.daytime_stop = XT_TIME_MAX_DAYTIME
        self.weekdays = XT_TIME_ALL_WEEKDAYS
        self.monthdays = XT_TIME_ALL_MONTHDAYS
        self.flags = 0

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if opt == "datestart":
            self.date_start = parse_date(a)
        elif opt == "datestop":
            self.date_stop = parse_date(a)
        elif opt == "timestart":
            self.daytime_start = parse_daytime(a)
        elif opt == "timestop":
            self.daytime_stop = parse_daytime(a)
        elif opt == "weekdays":
            w = parse_weekdays(a)
            self.weekdays = (~w & XT_TIME_ALL_WEEKDAYS) if inverted else w
        elif opt == "monthdays":
            m = parse_monthdays(a)
            self.monthdays = (~m & XT_TIME_ALL_MONTHDAYS) if inverted else m
        elif opt in ("localtz", "kerneltz"):
            self.flags |= XT_TIME_LOCAL_TZ
        elif opt == "utc":
            self.flags &= ~XT_TIME_LOCAL_TZ
        elif opt == "contiguous":
            self.flags |= XT_TIME_CONTIGUOUS
        else:
            super().parse(opt, arg, inverted, rule)

    def final_check(self, rule: Rule) -> None:
        if self.flags & XT_TIME_CONTIGUOUS and self.daytime_start < self.daytime_stop:
            raise RulesError("time: --contiguous only makes sense when stoptime is smaller than starttime")

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`time_mt_check`."""
        if self.flags & XT_TIME_CONTIGUOUS and self.daytime_start < self.daytime_stop:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _days(self) -> tuple[str, str]:
        months = ",".join(str(i) for i in range(1, 32) if self.monthdays & (1 << i))
        weeks = ",".join(WEEK_DAYS[i] for i in range(1, 8) if self.weekdays & (1 << i))
        return months, weeks

    def save(self) -> str:
        out = ""
        if self.daytime_start != 0 or self.daytime_stop != XT_TIME_MAX_DAYTIME:
            out += f" --timestart {_hms(self.daytime_start)} --timestop {_hms(self.daytime_stop)}"
        months, weeks = self._days()
        if self.monthdays != XT_TIME_ALL_MONTHDAYS:
            out += f" --monthdays {months}"
        if self.weekdays != XT_TIME_ALL_WEEKDAYS:
            out += f" --weekdays {weeks}"
        if self.date_start != 0:
            out += f" --datestart {_date(self.date_start)}"
        out += f" --datestop {_date(self.date_stop)}"  # time_save prints it even at its default
        if self.flags & XT_TIME_LOCAL_TZ:
            out += " --kerneltz"
        return out + (" --contiguous" if self.flags & XT_TIME_CONTIGUOUS else "")

    def print_list(self, numeric: bool) -> str:
        out = " TIME"
        if self.daytime_start != 0 or self.daytime_stop != XT_TIME_MAX_DAYTIME:
            out += f" from {_hms(self.daytime_start)} to {_hms(self.daytime_stop)}"
        months, weeks = self._days()
        if self.weekdays != XT_TIME_ALL_WEEKDAYS:
            out += f" on {weeks}"
        if self.monthdays != XT_TIME_ALL_MONTHDAYS:
            out += " on " + ",".join(_ordinal(int(d)) for d in months.split(",") if d)
        if self.date_start != 0:
            out += f" starting from {_date(self.date_start, ' ')}"
        if self.date_stop != INT_MAX:
            out += f" until date {_date(self.date_stop, ' ')}"
        if not self.flags & XT_TIME_LOCAL_TZ:
            out += " UTC"
        return out + (" contiguous" if self.flags & XT_TIME_CONTIGUOUS else "")

    def compile(self) -> MatchFn:
        d0, d1, t0, t1 = self.date_start, self.date_stop, self.daytime_start, self.daytime_stop
        weekdays, monthdays, contiguous = self.weekdays, self.monthdays, bool(self.flags & XT_TIME_CONTIGUOUS)

        def time_mt(skb: Skb, ctx: XtContext) -> bool:
            stamp = int(ctx.now)  # sys_tz is UTC in natbox's model: --kerneltz subtracts nothing
            if stamp < d0 or stamp > d1:
                return False
            packet_time = stamp % SECONDS_PER_DAY
            if t0 < t1:
                if packet_time < t0 or packet_time > t1:
                    return False
            else:
                if t1 < packet_time < t0:
                    return False
                if contiguous and packet_time <= t1:
                    stamp -= SECONDS_PER_DAY
            weekday = (4 + stamp // SECONDS_PER_DAY - 1) % 7 + 1
            if not weekdays & (1 << weekday):
                return False
            if monthdays != XT_TIME_ALL_MONTHDAYS:
                mday = datetime.datetime.fromtimestamp(stamp, datetime.UTC).day
                if not monthdays & (1 << mday):
                    return False
            return True

        return time_mt


def _ordinal(d: int) -> str:
    """`time_print_monthdays(..., human_readable)`: 1st, 2nd, 3rd, 4th... 11th, 21st."""
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
    return f"{d}{suffix}"
