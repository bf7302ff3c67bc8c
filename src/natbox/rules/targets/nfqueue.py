"""`-j NFQUEUE [--queue-num N | --queue-balance A:B [--queue-cpu-fanout]] [--queue-bypass]` (libxt_NFQUEUE.c
rev 3, net/netfilter/xt_NFQUEUE.c `nfqueue_tg_v3`, net/netfilter/nf_queue.c `nf_queue`).

The target's verdict is NF_QUEUE to a queue (one of the balance range, chosen by a flow hash or the CPU).
natbox has no nfnetlink_queue listener, so `__nf_queue` finds no instance (-ESRCH): the packet is dropped
and counted (a rule drop whose note names the queue), unless `--queue-bypass`, which makes `nf_hook_slow`
go on with the next hook function: the packet leaves this table accepted (docs/differences.md).
"""

from __future__ import annotations

from typing import Final

from natbox.rules.api import NF_ACCEPT, NF_DROP, XtContext
from natbox.rules.matches._xtopt import U16_MAX, parse_range, parse_value
from natbox.rules.model import RESOURCE_PROBLEM, Opt, Rule, RulesError, Target, TargetFn
from natbox.skb import Skb

__all__ = ["Nfqueue"]

NFQ_FLAG_BYPASS: Final = 0x01
NFQ_FLAG_CPU_FANOUT: Final = 0x02


class Nfqueue(Target):
    name = "NFQUEUE"
    revision = 3
    options = (Opt("queue-num", 1), Opt("queue-balance", 1), Opt("queue-bypass", 0), Opt("queue-cpu-fanout", 0))

    def __init__(self) -> None:
        self.queuenum = 0
        self.queues_total = 1
        self.flags = 0
        self.given: list[str] = []

    def parse(self, opt: str, arg: str | None, inverted: bool, rule: Rule) -> None:
        if opt not in ("queue-num", "queue-balance", "queue-bypass", "queue-cpu-fanout"):
            super().parse(opt, arg, inverted, rule)
        if opt in self.given:
            raise RulesError(f'NFQUEUE: option "--{opt}" can only be used once.\n')
        a = arg or ""
        if opt == "queue-num":
            self.queuenum = parse_value("NFQUEUE", opt, a, U16_MAX)
        elif opt == "queue-balance":
            lo, hi = parse_range("NFQUEUE", opt, a, U16_MAX)
            if ":" not in a:  # cb->nvals != 2
                raise RulesError(f'Bad range "{a}"')
            if lo >= hi:
                raise RulesError(f"{lo} should be less than {hi}")
            self.queuenum, self.queues_total = lo, (hi - lo + 1) & U16_MAX  # xt_NFQ_info_v3.queues_total: u16
        elif opt == "queue-bypass":
            self.flags |= NFQ_FLAG_BYPASS
        else:
            self.flags |= NFQ_FLAG_CPU_FANOUT
        self.given.append(opt)

    def final_check(self, rule: Rule) -> None:
        """xtables_options_fcheck: the exclusion of --queue-num and --queue-balance, and what
        --queue-cpu-fanout needs."""
        if "queue-num" in self.given and "queue-balance" in self.given:
            raise RulesError('NFQUEUE: option "--queue-num" cannot be used together with "--queue-balance".\n')
        if "queue-cpu-fanout" in self.given and "queue-balance" not in self.given:
            raise RulesError('NFQUEUE: option "--queue-cpu-fanout" also requires "--queue-balance".\n')

    def check(self, table: str, hook_mask: int, rule: Rule) -> None:
        """`nfqueue_tg_check`: no queue at all (a total that wrapped to 0) is refused."""
        if not self.queues_total:
            raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)

    def _queues(self, balance: str, num: str) -> str:
        if self.queues_total > 1:
            return f" {balance} {self.queuenum}:{self.queuenum + self.queues_total - 1}"
        return f" {num} {self.queuenum}"

    def save(self) -> str:
        out = self._queues("--queue-balance", "--queue-num")
        if self.flags & NFQ_FLAG_BYPASS:
            out += " --queue-bypass"
        if self.flags & NFQ_FLAG_CPU_FANOUT:
            out += " --queue-cpu-fanout"
        return out

    def print_list(self, numeric: bool) -> str:
        out = " NFQUEUE" + self._queues("balance", "num")
        if self.flags & NFQ_FLAG_BYPASS:
            out += " bypass"
        if self.flags & NFQ_FLAG_CPU_FANOUT:
            out += " cpu-fanout"
        return out

    def compile(self) -> TargetFn:
        bypass = bool(self.flags & NFQ_FLAG_BYPASS)
        queues = (self.queuenum, self.queuenum + self.queues_total - 1)

        def nfqueue_tg(skb: Skb, ctx: XtContext) -> int:
            # nf_queue → __nf_queue: no queue handler instance listens on any queue here (-ESRCH)
            if bypass:
                return NF_ACCEPT  # NF_VERDICT_FLAG_QUEUE_BYPASS: on to the next hook function
            lo, hi = queues
            skb.note = f"NFQUEUE: no listener on queue {lo}" + (f"-{hi}" if hi != lo else "")
            return NF_DROP

        return nfqueue_tg
