"""`-j NOTRACK` and `-j CT --notrack` (xt_CT.c): raw table only; mark the skb untracked."""

from __future__ import annotations

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb

__all__ = ["Ct", "Notrack"]

# ct_event_tbl / exp_event_tbl of libxt_CT.c (print order)
CT_EVENTS = ("new", "related", "destroy", "reply", "assured", "protoinfo", "helper", "mark", "natseqinfo",
             "secmark")
EXP_EVENTS = ("new",)


def _parse_events(arg: str, names: tuple[str, ...], opt: str) -> int:
    mask = 0
    for part in arg.split(","):
        if part not in names:
            raise RulesError(f"CT: unknown event \"{part}\"")
        mask |= 1 << names.index(part)
    return mask


def _events(mask: int, names: tuple[str, ...]) -> str:
    return ",".join(n for i, n in enumerate(names) if mask & (1 << i))


def _raw_only(table: str) -> None:
    if table != "raw":
        raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)


class Notrack(Target):
    name = "NOTRACK"
    real_name = "CT"  # libxt_CT: NOTRACK is CT rev 2 with XT_CT_NOTRACK_ALIAS

    def print_list(self, numeric: bool) -> str:
        return " NOTRACK"

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        _raw_only(table)

    def compile(self) -> TargetFn:
        def notrack_tg(skb: Skb, ctx: XtContext) -> int:
            ctx.notrack(skb)
            return XT_CONTINUE

        return notrack_tg


class Ct(Target):
    """`-j CT --notrack`; `--helper NAME` is accepted and saved but natbox runs no helpers (no-op)."""

    name = "CT"
    options = (Opt("notrack", 0), Opt("helper", 1), Opt("zone", 1), Opt("ctevents", 1), Opt("expevents", 1))

    def __init__(self) -> None:
        self.ctevents = 0
        self.expevents = 0
        self.notrack = False
        self.helper = ""
        self.zone = 0

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt == "notrack":
            self.notrack = True
        elif opt == "helper":
            self.helper = arg or ""
        elif opt == "ctevents":
            self.ctevents = _parse_events(arg or "", CT_EVENTS, opt)
        elif opt == "expevents":
            self.expevents = _parse_events(arg or "", EXP_EVENTS, opt)
        elif opt == "zone":
            if not (arg or "").isdigit() or int(arg or "0") > 65535:
                raise RulesError(f"Cannot parse {arg} as a zone ID")
            self.zone = int(arg or "0")
        else:
            super().parse(opt, arg, inverted, rule)

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        _raw_only(table)

    def save(self) -> str:
        if self.notrack:
            return " --notrack"
        out = ""
        if self.helper:
            out += f" --helper {self.helper}"
        if self.ctevents:
            out += " --ctevents " + _events(self.ctevents, CT_EVENTS)
        if self.expevents:
            out += " --expevents " + _events(self.expevents, EXP_EVENTS)
        if self.zone:
            out += f" --zone {self.zone}"
        return out

    def print_list(self, numeric: bool) -> str:
        out = " CT"
        if self.notrack:
            out += " notrack"
        if self.helper:
            out += f" helper {self.helper}"
        if self.ctevents:
            out += " ctevents " + _events(self.ctevents, CT_EVENTS)
        if self.expevents:
            out += " expevents " + _events(self.expevents, EXP_EVENTS)
        if self.zone:
            out += f" zone {self.zone}"
        return out

    def compile(self) -> TargetFn:
        notrack = self.notrack

        def ct_tg(skb: Skb, ctx: XtContext) -> int:
            if notrack:
                ctx.notrack(skb)
            return XT_CONTINUE

        return ct_tg
