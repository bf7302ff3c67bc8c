"""`-m owner` (libxt_owner.c revision 1, net/netfilter/xt_owner.c `owner_mt`): the local socket's owner.

natbox's host model declares no processes and no sockets owning packets, so every packet is one without a
socket (`sk == NULL`): the kernel then matches exactly when every option used is inverted
(`(info->match ^ info->invert) == 0`), and `--suppl-groups` (never invertible) never matches. User and
group names are those of Debian's base-passwd (the reference box), not the host's /etc/passwd
(docs/differences.md). The match is valid in OUTPUT and POSTROUTING only (`.hooks`).
"""

from __future__ import annotations

import re
from typing import Final

from natbox.netfilter import Hook
from natbox.rules.api import XtContext
from natbox.rules.matches._common import parse_uint
from natbox.rules.matches._xtflags import XtFlags, XtOptSpec
from natbox.rules.model import RESOURCE_PROBLEM, Match, MatchFn, Opt, Rule, RulesError, hook_mask_of
from natbox.skb import Skb

__all__ = ["GROUPS", "USERS", "Owner"]

XT_OWNER_UID, XT_OWNER_GID, XT_OWNER_SOCKET, XT_OWNER_SUPPL_GROUPS = 1, 2, 4, 8
_VALID_HOOKS: Final = hook_mask_of(Hook.LOCAL_OUT, Hook.POST_ROUTING)
# Debian base-passwd's fixed accounts (getpwnam/getgrnam on the reference box)
USERS: Final = {"root": 0, "daemon": 1, "bin": 2, "sys": 3, "sync": 4, "games": 5, "man": 6, "lp": 7, "mail": 8,
         "news": 9, "uucp": 10, "proxy": 13, "www-data": 33, "backup": 34, "list": 38, "irc": 39, "_apt": 42,
         "nobody": 65534}
GROUPS: Final = {"root": 0, "daemon": 1, "bin": 2, "sys": 3, "adm": 4, "tty": 5, "disk": 6, "lp": 7, "mail": 8,
          "news": 9, "uucp": 10, "man": 12, "proxy": 13, "kmem": 15, "dialout": 20, "fax": 21, "voice": 22,
          "cdrom": 24, "floppy": 25, "tape": 26, "sudo": 27, "audio": 29, "dip": 30, "www-data": 33, "backup": 34,
          "operator": 37, "list": 38, "irc": 39, "src": 40, "shadow": 42, "utmp": 43, "video": 44, "sasl": 45,
          "plugdev": 46, "staff": 50, "games": 60, "users": 100, "nogroup": 65534}
_USER_NAMES: Final = {v: k for k, v in USERS.items()}
_GROUP_NAMES: Final = {v: k for k, v in GROUPS.items()}
_SPECS: Final = (XtOptSpec("uid-owner", 0), XtOptSpec("gid-owner", 1), XtOptSpec("socket-exists", 2),
          XtOptSpec("suppl-groups", 3))
_ID_MAX: Final = 0xFFFFFFFE  # (uid_t)-1 is reserved


def _bad(opt: str, arg: str) -> RulesError:
    return RulesError(f'owner: Bad value for "--{opt}" option: "{arg}"')


def _range(opt: str, text: str) -> tuple[int, int]:
    """`owner_parse_range()`: `a`, `a-b` or `a:b`."""
    m = re.fullmatch(r"(\s*\+?\w+?)(?:([-:])(.*))?", text)
    if m is None:
        raise _bad(opt, text)
    lo = parse_uint(m.group(1), 0, _ID_MAX)
    if lo is None:
        raise _bad(opt, text)
    if m.group(2) is None:
        return lo, lo
    hi = parse_uint(m.group(3), 0, _ID_MAX)
    if hi is None:
        raise _bad(opt, text)
    return lo, hi


class Owner(Match):
    name = "owner"
    revision = 1
    options = (Opt("uid-owner", 1, True), Opt("gid-owner", 1, True), Opt("socket-exists", 0, True),
               Opt("suppl-groups", 0))

    def __init__(self) -> None:
        self.match = 0
        self.invert = 0
        self.uid = (0, 0)
        self.gid = (0, 0)
        self.flags = XtFlags("owner", _SPECS)

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        self.flags.parse(opt)
        a = arg or ""
        if opt == "uid-owner":
            self.uid = (USERS[a], USERS[a]) if a in USERS else _range(opt, a)
            bit = XT_OWNER_UID
        elif opt == "gid-owner":
            self.gid = (GROUPS[a], GROUPS[a]) if a in GROUPS else _range(opt, a)
            bit = XT_OWNER_GID
        elif opt == "socket-exists":
            bit = XT_OWNER_SOCKET
        else:
            if not self.match & XT_OWNER_GID:
                raise _bad("suppl-groups", "you need to use --gid-owner first")
            bit = XT_OWNER_SUPPL_GROUPS
        self.match |= bit
        if inverted:
            self.invert |= bit

    def final_check(self, rule: Rule) -> None:
        if not self.flags.flags:
            raise RulesError("owner: At least one of --uid-owner, --gid-owner or --socket-exists is required")
        self.flags.fcheck()

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`.hooks` (OUTPUT, POSTROUTING) and `owner_check()`'s ranges."""
        if hook_mask & ~_VALID_HOOKS or self.uid[1] < self.uid[0] or self.gid[1] < self.gid[0]:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _items(self, numeric: bool, labels: tuple[str, str, str, str]) -> str:
        out = ""
        for bit, label in zip((XT_OWNER_SOCKET, XT_OWNER_UID, XT_OWNER_GID, XT_OWNER_SUPPL_GROUPS), labels,
                              strict=True):
            if not self.match & bit:
                continue
            out += (" !" if self.invert & bit else "") + f" {label}"
            if bit in (XT_OWNER_UID, XT_OWNER_GID):
                lo, hi = self.uid if bit == XT_OWNER_UID else self.gid
                names = _USER_NAMES if bit == XT_OWNER_UID else _GROUP_NAMES
                if lo != hi:
                    out += f" {lo}-{hi}"
                elif not numeric and lo in names:
                    out += f" {names[lo]}"
                else:
                    out += f" {lo}"
        return out

    def save(self) -> str:
        return self._items(True, ("--socket-exists", "--uid-owner", "--gid-owner", "--suppl-groups"))

    def print_list(self, numeric: bool) -> str:
        return self._items(numeric, ("owner socket exists", "owner UID match", "owner GID match",
                                     "incl. suppl. groups"))

    def compile(self) -> MatchFn:
        hit = (self.match ^ self.invert) == 0  # owner_mt without a socket

        def owner_mt(skb: Skb, ctx: XtContext) -> bool:
            return hit

        return owner_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        return "no match (no local socket owns the packet in the host model)"
