"""`-j SECMARK --selctx CONTEXT` and `-j CONNSECMARK --save|--restore` (libxt_SECMARK.c, libxt_CONNSECMARK.c;
net/netfilter/xt_SECMARK.c `secmark_tg`, xt_CONNSECMARK.c `connsecmark_tg`).

SECMARK sets `skb->secmark` to the security ID of an SELinux context; CONNSECMARK copies it to the
connection (`--save`, only while the ct has none) or back to a packet that has none (`--restore`). Both are
valid in the mangle and security tables only (their checkentry) and continue.

natbox has no SELinux policy to map a context to a security ID (`security_secctx_to_secid`): it accepts
every context, as a kernel whose policy knows it would, and uses a fixed ID derived from the context's
text (CRC-32, never 0), so equal contexts give equal marks. Nothing in natbox reads the marks but
CONNSECMARK (docs/differences.md).
"""

from __future__ import annotations

import zlib
from typing import Final

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb

__all__ = ["Connsecmark", "Secmark", "secid_of"]

SECMARK_SECCTX_MAX: Final = 256  # struct xt_secmark_target_info.secctx, with its NUL
_TABLES: Final = ("mangle", "security")


def secid_of(secctx: str) -> int:
    """natbox's stand-in for `security_secctx_to_secid`: a nonzero 32-bit ID per context text."""
    return zlib.crc32(secctx.encode()) or 1


def _mangle_or_security(table: str) -> None:
    """`secmark_tg_check` / `connsecmark_tg_check`: "only valid in 'mangle' or 'security' table"."""
    if table not in _TABLES:
        raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)


class Secmark(Target):
    name = "SECMARK"
    revision = 1
    options = (Opt("selctx", 1),)

    def __init__(self) -> None:
        self.secctx: str | None = None

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt != "selctx":
            super().parse(opt, arg, inverted, rule)
        if self.secctx is not None:
            raise RulesError('SECMARK: option "--selctx" can only be used once.\n')
        # xtopt_parse_string with XTOPT_PUT: cut to the field's size
        self.secctx = (arg or "").encode()[:SECMARK_SECCTX_MAX - 1].decode(errors="ignore")

    def final_check(self, rule: Rule) -> None:
        if self.secctx is None:
            raise RulesError('SECMARK: option "--selctx" must be specified\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        _mangle_or_security(table)

    def save(self) -> str:
        return f" --selctx {self.secctx}"

    def print_list(self, numeric: bool) -> str:
        return f" SECMARK selctx {self.secctx}"

    def compile(self) -> TargetFn:
        secid = secid_of(self.secctx or "")

        def secmark_tg(skb: Skb, ctx: XtContext) -> int:
            skb.secmark = secid
            return XT_CONTINUE

        return secmark_tg


class Connsecmark(Target):
    name = "CONNSECMARK"
    options = (Opt("save", 0), Opt("restore", 0))

    def __init__(self) -> None:
        self.given: list[str] = []

    @property
    def mode(self) -> str:
        """"save" or "restore" (CONNSECMARK_SAVE / CONNSECMARK_RESTORE: the last option given)."""
        return self.given[-1] if self.given else ""

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt not in ("save", "restore"):
            super().parse(opt, arg, inverted, rule)
        if opt in self.given:
            raise RulesError(f'CONNSECMARK: option "--{opt}" can only be used once.\n')
        self.given.append(opt)

    def final_check(self, rule: Rule) -> None:
        if not self.given:
            raise RulesError("CONNSECMARK target: parameter required")
        if len(self.given) > 1:  # xtables_options_fcheck, in option table order
            raise RulesError('CONNSECMARK: option "--save" cannot be used together with "--restore".\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        _mangle_or_security(table)

    def save(self) -> str:
        return f" --{self.mode}"

    def print_list(self, numeric: bool) -> str:
        return f" CONNSECMARK {self.mode}"

    def compile(self) -> TargetFn:
        if self.mode == "save":
            def secmark_save(skb: Skb, ctx: XtContext) -> int:
                ct = skb.ct
                if skb.secmark and ct is not None and not ct.secmark:
                    ct.secmark = skb.secmark
                return XT_CONTINUE

            return secmark_save

        def secmark_restore(skb: Skb, ctx: XtContext) -> int:
            ct = skb.ct
            if not skb.secmark and ct is not None and ct.secmark:
                skb.secmark = ct.secmark
            return XT_CONTINUE

        return secmark_restore
