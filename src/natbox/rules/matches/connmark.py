"""`-m connmark --mark value[/mask]` rev 1 (libxt_connmark.c, xt_connmark.c `connmark_mt`).

The option, its parsing, checks and save form are `-m mark`'s; only the listing and what is compared
(the ct's mark, no match without a ct) differ.
"""

from __future__ import annotations

from natbox.rules.api import XtContext
from natbox.rules.matches.mark import Mark, print_mark_mask
from natbox.rules.model import MatchFn
from natbox.skb import Skb

__all__ = ["Connmark"]


class Connmark(Mark):
    name = "connmark"
    shareable = True  # natbox.rules.model: nothing changes an instance after parse

    def print_list(self, numeric: bool) -> str:
        return " connmark match " + ("!" if self.invert else "") + print_mark_mask(self.mark or 0, self.mask)

    def compile(self) -> MatchFn:
        mark, mask, inv = self.mark or 0, self.mask, self.invert

        def connmark_mt(skb: Skb, ctx: XtContext) -> bool:
            ct = skb.ct
            if ct is None or skb.untracked:
                return False
            return ((ct.mark & mask) == mark) != inv

        return connmark_mt

    def why(self, skb: Skb, ctx: XtContext) -> str:
        ct = skb.ct
        return "no match (no conntrack entry)" if ct is None or skb.untracked else f"no match (ctmark 0x{ct.mark:x})"
