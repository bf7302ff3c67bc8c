"""`-j SET --add-set/--del-set/--map-set NAME src|dst[,...] [--exist] [--timeout N] [--map-mark]
[--map-prio] [--map-queue]` rev 3 (libxt_SET.c set_target_parse_v3/print_v3, xt_set.c `set_target_v3`).

The packet's element is added to or deleted from a set (kernel-side adds never resize a hash: a full
bucket leaves the element out), or looked up in a set whose skbinfo extension then sets the mark.
natbox's skb has no priority or queue mapping: `--map-prio` and `--map-queue` are accepted, printed
and checked as the kernel does, and change nothing (docs/differences.md).
"""

from __future__ import annotations

from typing import Final

from natbox.ipset.kadt import AdtOpt, ip_set_add, ip_set_del, ip_set_test
from natbox.ipset.store import ExtArgs
from natbox.netfilter import Hook
from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.matches.set import format_dirs, parse_set_arg
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn, hook_mask_of
from natbox.skb import Skb

__all__ = ["SetTarget"]

_PRIO_QUEUE_HOOKS: Final = hook_mask_of(Hook.FORWARD, Hook.LOCAL_OUT, Hook.POST_ROUTING)


class SetTarget(Target):
    name = "SET"
    revision = 3
    options = (Opt("add-set", 2), Opt("del-set", 2), Opt("exist", 0), Opt("timeout", 1), Opt("map-set", 2),
               Opt("map-mark", 0), Opt("map-prio", 0), Opt("map-queue", 0))
    checkentry_hooks = True  # set_target_v3_checkentry tests par->hook_mask

    def __init__(self) -> None:
        self.sets: dict[str, tuple[str, tuple[bool, ...]]] = {}  # "add-set"/"del-set"/"map-set" → set, dirs
        self.exist = False
        self.timeout: int | None = None
        self.map_flags: list[str] = []  # "map-mark", "map-prio", "map-queue" as given

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        """`set_target_parse_v3()`."""
        if opt in ("add-set", "del-set", "map-set"):
            if opt in self.sets:
                raise RulesError(f"--{opt} can be specified only once")
            self.sets[opt] = parse_set_arg(opt, arg or "", rule.family)
        elif opt == "exist":
            self.exist = True
        elif opt == "timeout":
            v = parse_uint(arg or "", 0, 0xFFFFFFFE)
            if v is None:
                raise RulesError(f"Invalid value for option --timeout or out of range 0-{0xFFFFFFFE}")
            self.timeout = v
        elif opt in ("map-mark", "map-prio", "map-queue"):
            if opt not in self.map_flags:
                self.map_flags.append(opt)
        else:
            super().parse(opt, arg, inverted, rule)

    def final_check(self, rule: Rule) -> None:
        """`set_target_check_v3()`."""
        if not self.sets:
            raise RulesError("You must specify either `--add-set' or `--del-set' or `--map-set'")
        if "add-set" not in self.sets:
            if self.exist:
                raise RulesError("Flag `--exist' can be used with `--add-set' only")
            if self.timeout is not None:
                raise RulesError("Option `--timeout' can be used with `--add-set' only")
        if "map-set" not in self.sets:
            for f in ("map-mark", "map-prio", "map-queue"):
                if f in self.map_flags:
                    raise RulesError(f"Flag `--{f}' can be used with `--map-set' only")
        elif not self.map_flags:
            raise RulesError("You must specify flags `--map-mark' or '--map-prio` or `--map-queue'")

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`set_target_v3_checkentry()`: --map-set only in mangle, prio/queue only after routing."""
        if "map-set" in self.sets:
            if table != "mangle":
                raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)
            if ({"map-prio", "map-queue"} & set(self.map_flags)) and hook_mask & ~_PRIO_QUEUE_HOOKS:
                raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def set_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.sets.values())

    def _text(self, sep: str) -> str:
        """`set_target_v3_print()` / `_save()`."""
        out = ""
        for what in ("add-set", "del-set", "map-set"):
            if what in self.sets:
                name, dirs = self.sets[what]
                out += f" {sep}{what} {name} {format_dirs(dirs)}"
            if what == "add-set":
                if self.exist:
                    out += f" {sep}exist"
                if self.timeout is not None:
                    out += f" {sep}timeout {self.timeout}"
        for f in ("map-mark", "map-prio", "map-queue"):
            if f in self.map_flags:
                out += f" {sep}{f}"
        return out

    def save(self) -> str:
        return self._text("--")

    def print_list(self, numeric: bool) -> str:
        return self._text("")

    def compile(self) -> TargetFn:
        add = self.sets.get("add-set")
        dele = self.sets.get("del-set")
        mp = self.sets.get("map-set")
        add_opt = AdtOpt(add[1], exist=self.exist, timeout=self.timeout) if add else None
        del_opt = AdtOpt(dele[1]) if dele else None
        map_opt = AdtOpt(mp[1]) if mp else None
        map_mark = "map-mark" in self.map_flags

        def set_target_v3(skb: Skb, ctx: XtContext) -> int:
            reg = ctx.ipsets()
            if reg is None:
                return XT_CONTINUE
            now = ctx.now
            if add is not None and add_opt is not None:
                s = reg.get(add[0])
                if s is not None:
                    ip_set_add(s, skb, add_opt, now)
            if dele is not None and del_opt is not None:
                s = reg.get(dele[0])
                if s is not None:
                    ip_set_del(s, skb, del_opt, now)
            if mp is not None and map_opt is not None:
                s = reg.get(mp[0])
                mext = ExtArgs()
                if s is not None and ip_set_test(s, skb, map_opt, now, mext) > 0 and map_mark:
                    skb.mark = (skb.mark & ~mext.skbmarkmask & 0xFFFFFFFF) ^ mext.skbmark
            return XT_CONTINUE

        return set_target_v3
