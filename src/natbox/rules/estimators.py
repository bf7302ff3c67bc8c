"""The namespace's rate estimators as rules create and look them up (xt_RATEEST.c `xt_rateest_lookup`).

A `-j RATEEST --rateest-name N` rule creates estimator N with its interval and averaging constant when none
exists (`xt_rateest_tg_checkentry`); a later RATEEST rule naming N must give the same parameters, or the
kernel refuses it with EINVAL. A `-m rateest` rule finds its estimators by name (`xt_rateest_mt_checkentry`),
ENOENT when one does not exist. These checks read other rules, so they run here, over the whole ruleset,
rather than in one extension's `check`:

- a command (-A, -I, -R) is checked against the estimators of every table before it (the rule it replaces
  included: with nf_tables the old rule is released only when the transaction commits);
- an iptables-restore is checked line by line in file order after the tables before it, as nf_tables
  initialises the rules of the batch in order (so a `-m rateest` line before its RATEEST line is refused).

An estimator lives while a rule refers to it: names only a `-m rateest` rule still names count as existing
(their parameters unknown, so any RATEEST naming them is taken). Tables kept as unparsed text
(natbox.rules.lazy) are read only when their text mentions the extension. Cost: nothing unless a new rule
uses rateest or RATEEST; then one pass over the ruleset's rules.
"""

from __future__ import annotations

from collections.abc import Iterable

from natbox.rules.commands import _restore_error
from natbox.rules.model import RESOURCE_PROBLEM, Rule, RulesError, Table
from natbox.rules.parser import Command, RestoreTable

__all__ = ["check_rules", "estimators_of", "restore_estimators", "uses_estimators"]

# name -> (interval, ewma_log) of the RATEEST rule that created it; None when only rateest matches name it
Estimators = dict[str, "tuple[int, int] | None"]


def uses_estimators(rules: Iterable[Rule]) -> bool:
    """Whether any of `rules` creates or reads an estimator (the checks are skipped otherwise)."""
    return any((r.target is not None and r.target.name == "RATEEST") or any(m.name == "rateest" for m in r.matches)
               for r in rules)


def _names_read(r: Rule) -> list[str]:
    out: list[str] = []
    for m in r.matches:
        if m.name == "rateest":
            out += [n for n in (getattr(m, "name1", ""), getattr(m, "name2", "")) if n]
    return out


def _created(r: Rule) -> tuple[str, tuple[int, int]] | None:
    t = r.target
    if t is None or t.name != "RATEEST":
        return None
    return str(getattr(t, "est_name", "")), (int(getattr(t, "interval", 0)), int(getattr(t, "ewma_log", 0)))


def estimators_of(tables: Iterable[Table]) -> Estimators:
    """The estimators the rules of `tables` hold, in table and chain order (the first RATEEST of a name gives
    its parameters)."""
    est: Estimators = {}
    for t in tables:
        for c in t.chains.values():
            if c.raw is not None and not any("rateest" in line.lower() for _n, line in c.raw):
                continue  # unparsed lines that name no estimator stay unparsed
            for r in c.rules:
                made = _created(r)
                if made is not None and est.get(made[0]) is None:
                    est[made[0]] = made[1]
                for name in _names_read(r):
                    est.setdefault(name, None)
    return est


def check_rules(est: Estimators, rules: Iterable[Rule]) -> None:
    """Add `rules` in order, as checkentry does: a rateest match needs its estimators, a RATEEST target
    creates its estimator or must repeat its parameters. Raises the kernel's error (`kernel=True`)."""
    for r in rules:
        for name in _names_read(r):
            if name not in est:
                raise RulesError("No such file or directory", RESOURCE_PROBLEM, kernel=True)
        made = _created(r)
        if made is not None:
            have = est.get(made[0])
            if made[0] not in est or have is None:
                est[made[0]] = made[1]
            elif have != made[1]:
                raise RulesError("Invalid argument", RESOURCE_PROBLEM, kernel=True)


def _added(cmd: Command) -> list[Rule]:
    return cmd.rules or ([cmd.rule] if cmd.rule is not None else [])


def restore_estimators(before: Iterable[Table], blocks: list[RestoreTable]) -> None:
    """An iptables-restore's rules in file order against the estimators of the tables before it; the first
    refused line is reported as iptables-restore reports a kernel refusal."""
    cmds = [(lineno, cmd) for b in blocks for lineno, cmd in b.commands if cmd.op in ("A", "I", "R")]
    if not any(uses_estimators(_added(cmd)) for _lineno, cmd in cmds):
        return
    est = estimators_of(before)
    for lineno, cmd in cmds:
        try:
            check_rules(est, _added(cmd))
        except RulesError as e:
            raise _restore_error(e, lineno, cmd) from None
