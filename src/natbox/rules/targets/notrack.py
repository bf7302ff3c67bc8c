"""`-j NOTRACK` and `-j CT --notrack` (xt_CT.c): raw table only; mark the skb untracked."""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb

__all__ = ["Ct", "Notrack"]

# ct_event_tbl / exp_event_tbl of libxt_CT.c (print order)
CT_EVENTS: Final = ("new", "related", "destroy", "reply", "assured", "protoinfo", "helper", "mark", "natseqinfo",
             "secmark")
EXP_EVENTS: Final = ("new",)
XT_CT_ZONE_DIR_ORIG, XT_CT_ZONE_DIR_REPL, XT_CT_ZONE_MARK = 0x04, 0x08, 0x10


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
            if skb.ct is None and not skb.ct_zone:  # xt_ct_target: "previously seen (loopback)? Ignore."
                ctx.notrack(skb)
            return XT_CONTINUE

        return notrack_tg


class Ct(Target):
    """`-j CT --notrack`, `--zone N|mark` (the zone the packet's connection is tracked in: `nf_conntrack_in`
    looks its tuple up in that zone, so equal tuples in two zones are two connections; `conntrack -L` shows
    `zone=N`; `mark` takes the id from the packet's mark; `--zone-orig`/`--zone-reply` key one direction's
    tuple only); `--helper NAME` is accepted and saved but natbox runs no helpers (no-op)."""

    name = "CT"
    options = (Opt("notrack", 0), Opt("helper", 1), Opt("zone", 1), Opt("zone-orig", 1), Opt("zone-reply", 1),
               Opt("ctevents", 1), Opt("expevents", 1))

    def __init__(self) -> None:
        self.ctevents = 0
        self.expevents = 0
        self.notrack = False
        self.helper = ""
        self.zone = 0
        self.zone_flags = 0  # XT_CT_ZONE_DIR_ORIG, XT_CT_ZONE_DIR_REPL, XT_CT_ZONE_MARK
        self.given: set[str] = set()

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt in self.given:
            raise RulesError(f'CT: option "--{opt}" can only be used once.\n')
        self.given.add(opt)
        if opt == "notrack":
            self.notrack = True
        elif opt == "helper":
            self.helper = arg or ""
        elif opt == "ctevents":
            self.ctevents = _parse_events(arg or "", CT_EVENTS, opt)
        elif opt == "expevents":
            self.expevents = _parse_events(arg or "", EXP_EVENTS, opt)
        elif opt in ("zone", "zone-orig", "zone-reply"):
            # ct_parse_zone_id
            self.zone_flags |= {"zone-orig": XT_CT_ZONE_DIR_ORIG, "zone-reply": XT_CT_ZONE_DIR_REPL}.get(opt, 0)
            self.zone = 0
            a = arg or ""
            if a.lower() == "mark":
                self.zone_flags |= XT_CT_ZONE_MARK
            else:
                v = parse_uint(a, 0, 0xFFFF)
                if v is None:
                    raise RulesError(f"Cannot parse {a} as a zone ID")
                self.zone = v
        else:
            super().parse(opt, arg, inverted, rule)

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        _raw_only(table)

    def _zone(self, pfx: str) -> str:
        """`ct_print_zone_id`."""
        if not (self.zone_flags & XT_CT_ZONE_MARK or self.zone):
            return ""
        dirs = self.zone_flags & (XT_CT_ZONE_DIR_ORIG | XT_CT_ZONE_DIR_REPL)
        pfx += {XT_CT_ZONE_DIR_ORIG: "-orig", XT_CT_ZONE_DIR_REPL: "-reply"}.get(dirs, "")
        return f" {pfx} " + ("mark" if self.zone_flags & XT_CT_ZONE_MARK else str(self.zone))

    def save(self) -> str:
        out = " --notrack" if self.notrack else ""
        if self.helper:
            out += f" --helper {self.helper}"
        if self.ctevents:
            out += " --ctevents " + _events(self.ctevents, CT_EVENTS)
        if self.expevents:
            out += " --expevents " + _events(self.expevents, EXP_EVENTS)
        return out + self._zone("--zone")

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
        return out + self._zone("zone")

    def compile(self) -> TargetFn:
        notrack, zone, by_mark = self.notrack, self.zone, bool(self.zone_flags & XT_CT_ZONE_MARK)
        # the directions above the 16-bit id (conntrack.table.zone_id_dir): 0 for both, else ORIG 1 / REPL 2
        dirs = {XT_CT_ZONE_DIR_ORIG: 1, XT_CT_ZONE_DIR_REPL: 2}.get(
            self.zone_flags & (XT_CT_ZONE_DIR_ORIG | XT_CT_ZONE_DIR_REPL), 0) << 16

        def ct_tg(skb: Skb, ctx: XtContext) -> int:
            """`xt_ct_target`: a packet that has a ct (or a template) already is left alone; else --notrack
            makes it untracked, and a template carries the zone `nf_conntrack_in` looks the tuple up in."""
            if skb.ct is not None or skb.untracked or skb.ct_zone:
                return XT_CONTINUE
            if notrack:
                ctx.notrack(skb)
            else:
                zid = skb.mark & 0xFFFF if by_mark else zone  # nf_ct_zone_tmpl
                skb.ct_zone = zid | dirs if zid else 0
            return XT_CONTINUE

        return ct_tg
