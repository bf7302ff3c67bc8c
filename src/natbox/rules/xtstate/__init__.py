"""The state the stateful extensions keep per network namespace, sans-IO (the kernel's pernet data).

xt_recent's lists, xt_hashlimit's tables, nfnetlink_acct's objects and xt_RATEEST's estimators live in
one `XtState` that the host owns (`XtContext.xt_state()`), not in the rules: in the kernel they are found
by name and shared by every rule naming them, and they outlive a ruleset replacement as long as the new
ruleset names them too (nf_tables runs the new rules' checkentry before the old rules' destroy).

`XtState.sync(tables)` is the checkentry/destroy pass: called by the host whenever the ruleset changes, it
lets each stateful extension, in rule order, find or create its object (`StatefulExt.xt_attach`, the
kernel's `recent_mt_check`, `hashlimit_mt_check_common`, `xt_rateest_tg_checkentry`), then drops the
objects no rule names any more (their refcount reached zero: `recent_mt_destroy`, `htable_put`...). A
match that runs before any sync (a unit test's context) creates its object on first use.

Time is the injected clock: `jiffies(now)` is `now` in ticks of `HZ` (250, as `-m limit` counts), so
`/proc`-style timestamps start at 0 where the kernel's start at INITIAL_JIFFIES (docs/differences.md).
Every object is bounded: see `recent.IP_LIST_TOT`, `hashlimit.HashlimitTable.max`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, cast

from natbox.rules.xtstate.clock import HZ, jiffies, msecs_to_jiffies

if TYPE_CHECKING:
    from natbox.rules.xtstate.hashlimit import HashlimitTable
    from natbox.rules.xtstate.nfacct import NfAcct
    from natbox.rules.xtstate.rateest import RateEstimator
    from natbox.rules.xtstate.recent import RecentTable

__all__ = ["HZ", "StatefulExt", "XtState", "jiffies", "msecs_to_jiffies"]

class StatefulExt(Protocol):
    """A match or target holding a named per-namespace object."""

    def xt_attach(self, state: XtState) -> tuple[str, str] | list[tuple[str, str]]:
        """Find or create the object (the kernel's checkentry); return the (kind, name)s to keep alive."""


class _RuleLike(Protocol):  # natbox.rules.model.Rule, named structurally (model imports the api, which names us)
    @property
    def matches(self) -> Sequence[object]: ...

    @property
    def target(self) -> object | None: ...


class _ChainLike(Protocol):
    @property
    def rules(self) -> Sequence[_RuleLike]: ...


class _TableLike(Protocol):
    @property
    def chains(self) -> Mapping[str, _ChainLike]: ...


class XtState:
    """The per-namespace objects of the stateful extensions, by kind and name."""

    def __init__(self) -> None:
        self.recent: dict[str, RecentTable] = {}
        self.hashlimit: dict[str, HashlimitTable] = {}
        self.rateest: dict[str, RateEstimator] = {}
        # nfnetlink_acct's objects: made by `nfacct add`, not by rules, so `sync` leaves them alone
        self.nfacct: dict[str, NfAcct] = {}
        self.now = 0.0  # the time of the last sync (a new hashlimit table's gc starts from it)
        self.acct_forced = False  # a connbytes rule turned nf_conntrack_acct on (it stays on)

    def sync(self, tables: Iterable[_TableLike], now: float = 0.0) -> None:
        """Attach every stateful extension of `tables` in rule order, then drop what none names any more."""
        self.now = now
        keep: set[tuple[str, str]] = set()
        for ext in _extensions(tables):
            # what isinstance with a runtime_checkable protocol tests; compiled by mypyc, the protocol is a plain class
            if hasattr(ext, "xt_attach"):
                held = cast(StatefulExt, ext).xt_attach(self)
                keep.update(held if isinstance(held, list) else [held])
        for name in [n for n in self.recent if ("recent", n) not in keep]:
            del self.recent[name]
        for name in [n for n in self.hashlimit if ("hashlimit", n) not in keep]:
            del self.hashlimit[name]
        for name in [n for n in self.rateest if ("rateest", n) not in keep]:
            del self.rateest[name]


def _extensions(tables: Iterable[_TableLike]) -> Iterator[object]:
    for table in tables:
        for chain in table.chains.values():
            for rule in chain.rules:
                yield from rule.matches
                if rule.target is not None:
                    yield rule.target
