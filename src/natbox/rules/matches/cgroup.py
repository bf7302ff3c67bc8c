"""`-m cgroup` (libxt_cgroup.c revision 2, net/netfilter/xt_cgroup.c `cgroup_mt_v2`): the socket's cgroup.

The match looks at the packet's local socket; natbox's host model has no sockets owning packets, so it
never matches, inverted or not (the kernel returns false before any comparison when `skb->sk` is NULL).
Any `--path` is accepted: the model does not know which cgroups exist (docs/differences.md).
"""

from __future__ import annotations

from typing import Final

from natbox.netfilter import Hook
from natbox.rules.api import XtContext
from natbox.rules.matches._common import quote_string
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec
from natbox.rules.matches._xtopt import U32_MAX, parse_value
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError, hook_mask_of
from natbox.skb import Skb

__all__ = ["Cgroup"]

XT_CGROUP_PATH_MAX: Final = 512
_VALID_HOOKS: Final = hook_mask_of(Hook.LOCAL_OUT, Hook.POST_ROUTING, Hook.LOCAL_IN)
_SPECS: Final = (XtOptSpec("path", 0), XtOptSpec("cgroup", 1))


class Cgroup(Match):
    name = "cgroup"
    revision = 2
    options = (Opt("path", 1, True), Opt("cgroup", 1, True))

    def __init__(self) -> None:
        self.path: str | None = None
        self.invert_path = False
        self.classid: int | None = None
        self.invert_classid = False
        self.flags = XtFlags("cgroup", _SPECS)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        self.flags.parse(opt)
        if opt == "path":
            self.path, self.invert_path = (arg or "")[:XT_CGROUP_PATH_MAX - 1], inverted
        else:
            self.classid, self.invert_classid = parse_value("cgroup", opt, arg or "", U32_MAX), inverted

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`.hooks` and `cgroup_mt_check_v2()`: exactly one of --path and --cgroup."""
        if hook_mask & ~_VALID_HOOKS or (self.path is None) == (self.classid is None):
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def save(self) -> str:
        out = ""
        if self.path is not None:
            out += (" !" if self.invert_path else "") + " --path" + quote_string(self.path)
        if self.classid is not None:
            out += (" !" if self.invert_classid else "") + f" --cgroup {self.classid}"
        return out

    def print_list(self, numeric: bool) -> str:
        out = " cgroup"
        if self.path is not None:
            out += f" {'! ' if self.invert_path else ''}{self.path}"
        if self.classid is not None:
            out += f" {'! ' if self.invert_classid else ''}{self.classid}"
        return out

    def compile(self) -> MatchFn:
        def cgroup_mt(skb: Skb, ctx: XtContext) -> bool:
            return False  # no socket: cgroup_mt_v2 returns false whatever the inversion

        return cgroup_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return "no match (no local socket owns the packet in the host model)"
