"""`-j CONNMARK` rev 2 without shifts (libxt_CONNMARK.c, xt_connmark.c `connmark_tg_shift`)."""

from __future__ import annotations

from typing import Final

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.matches.mark import parse_mark_mask
from natbox.rules.model import Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb

__all__ = ["ConnmarkTarget"]

SET, SAVE, RESTORE = 0, 1, 2
FULL: Final = 0xFFFFFFFF


class ConnmarkTarget(Target):
    name = "CONNMARK"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse
    revision = 2
    options = (Opt("set-xmark", 1), Opt("set-mark", 1), Opt("and-mark", 1), Opt("or-mark", 1), Opt("xor-mark", 1),
               Opt("save-mark", 0), Opt("restore-mark", 0), Opt("ctmask", 1), Opt("nfmask", 1), Opt("mask", 1))

    def __init__(self) -> None:
        self.mode: int | None = None
        self.ctmark = 0
        self.ctmask = FULL
        self.nfmask = FULL

    def _set_mode(self, mode: int) -> None:
        if self.mode is not None:
            raise RulesError("CONNMARK target: Only one action may be specified")
        self.mode = mode

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        a = arg or ""
        if opt == "set-xmark":
            self._set_mode(SET)
            self.ctmark, self.ctmask = parse_mark_mask(a, "CONNMARK", opt)
        elif opt == "set-mark":
            self._set_mode(SET)
            v, m = parse_mark_mask(a, "CONNMARK", opt)
            self.ctmark, self.ctmask = v, v | m
        elif opt in ("and-mark", "or-mark", "xor-mark"):
            self._set_mode(SET)
            v, _m = parse_mark_mask(a, "CONNMARK", opt)
            self.ctmark, self.ctmask = {"and-mark": (0, (~v) & FULL), "or-mark": (v, v), "xor-mark": (v, 0)}[opt]
        elif opt == "save-mark":
            self._set_mode(SAVE)
        elif opt == "restore-mark":
            self._set_mode(RESTORE)
        elif opt in ("ctmask", "nfmask", "mask"):
            if self.mode not in (SAVE, RESTORE):
                raise RulesError(f"CONNMARK: --{opt} is only valid with --save-mark or --restore-mark")
            v2 = parse_uint(a, 0, FULL)
            if v2 is None:
                raise RulesError(f'CONNMARK: bad value for option "--{opt}", or out of range (0-4294967295).\n')
            if opt in ("ctmask", "mask"):
                self.ctmask = v2
            if opt in ("nfmask", "mask"):
                self.nfmask = v2
        else:
            super().parse(opt, arg, inverted, rule)

    def final_check(self, rule: Rule) -> None:
        if self.mode is None:
            raise RulesError("CONNMARK target: No operation specified")

    def save(self) -> str:
        if self.mode == SET:
            return f" --set-xmark 0x{self.ctmark:x}/0x{self.ctmask:x}"
        word = "save" if self.mode == SAVE else "restore"
        return f" --{word}-mark --nfmask 0x{self.nfmask:x} --ctmask 0x{self.ctmask:x}"

    def print_list(self, numeric: bool) -> str:
        ctmark, ctmask, nfmask = self.ctmark, self.ctmask, self.nfmask
        if self.mode == SET:
            if ctmark == 0:
                return f" CONNMARK and 0x{(~ctmask) & FULL:x}"
            if ctmark == ctmask:
                return f" CONNMARK or 0x{ctmark:x}"
            if ctmask == 0:
                return f" CONNMARK xor 0x{ctmark:x}"
            if ctmask == FULL:
                return f" CONNMARK set 0x{ctmark:x}"
            return f" CONNMARK xset 0x{ctmark:x}/0x{ctmask:x}"
        if self.mode == SAVE:
            if nfmask == FULL and ctmask == FULL:
                return " CONNMARK save"
            if nfmask == ctmask:
                return f" CONNMARK save mask 0x{nfmask:x}"
            return f" CONNMARK save nfmask 0x{nfmask:x} ctmask ~0x{ctmask:x}"
        if ctmask == FULL and nfmask == FULL:
            return " CONNMARK restore"
        if ctmask == nfmask:
            return f" CONNMARK restore mask 0x{ctmask:x}"
        return f" CONNMARK restore ctmask 0x{ctmask:x} nfmask ~0x{nfmask:x}"

    def compile(self) -> TargetFn:
        mode, ctmark, ctmask, nfmask = self.mode, self.ctmark, self.ctmask, self.nfmask

        def connmark_tg(skb: Skb, ctx: XtContext) -> int:
            ct = skb.ct
            if ct is None or skb.untracked:
                return XT_CONTINUE
            if mode == SET:
                ct.mark = (ct.mark & ~ctmask & FULL) ^ ctmark
            elif mode == SAVE:
                ct.mark = (ct.mark & ~ctmask & FULL) ^ (skb.mark & nfmask)
            else:
                skb.mark = (skb.mark & ~nfmask & FULL) ^ (ct.mark & ctmask)
            return XT_CONTINUE

        return connmark_tg
