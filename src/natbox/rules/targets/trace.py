"""`-j TRACE`: iptables-nft turns it into `meta nftrace set 1`, valid in any table and chain. In natbox it
switches on the skb's explanation trace."""

from __future__ import annotations

from natbox.rules.api import XT_CONTINUE, XtContext
from natbox.rules.model import Target, TargetFn
from natbox.skb import Skb

__all__ = ["Trace"]


class Trace(Target):
    name = "TRACE"

    def compile(self) -> TargetFn:
        def trace_tg(skb: Skb, ctx: XtContext) -> int:
            if skb.trace is None:
                skb.trace = []
            return XT_CONTINUE

        return trace_tg
