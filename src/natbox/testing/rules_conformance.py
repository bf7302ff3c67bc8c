"""Reading iptables' own `.t` rule tests (iptables-test.py 1.8.9 format, see shared/conformance/README.md)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from natbox.netfilter import Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.extensions import find_match, find_target
from natbox.rules.model import NFPROTO_IPV4, TABLE_HOOKS, RulesError
from natbox.rules.parser import parse_argv, parse_restore, tokenize_restore_line
from natbox.rules.printer import save_table
from natbox.testing.paths import SHARED

T_DIR = SHARED / "conformance" / "iptables-t"
T6_DIR = SHARED / "conformance" / "ip6tables-t"  # libip6t_*.t, run with family=NFPROTO_IPV6
RULESETS = SHARED / "conformance" / "rulesets"

_HOOK_ORDER = {h.chain_name: int(h) for h in Hook}


@dataclass
class Case:
    lineno: int
    table: str
    chains: list[str]
    rule: str
    expect: str
    result: str  # OK / FAIL / NOMATCH, already resolved for the NFT backend
    # the `%iptables ...` lines above this one (iptables-test.py runs them as written, in order): the rules
    # the line's check may look up, such as the RATEEST rules creating the estimators -m rateest names
    setup: tuple[str, ...] = ()


@dataclass
class TFile:
    path: Path
    cases: list[Case]
    tables: set[str]
    has_cmd: bool
    has_variant: bool


def _invert(result: str) -> str:
    return {"OK": "FAIL", "FAIL": "OK"}.get(result, result)


def read_t(path: Path) -> TFile:
    cases: list[Case] = []
    chains: list[str] = []
    table = "filter"
    tables: set[str] = set()
    has_cmd = has_variant = False
    setup: tuple[str, ...] = ()
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        if line[0] in "@%":
            has_cmd = True
            if line.startswith("%iptables "):
                setup += (line[len("%iptables "):],)
            continue
        if line.startswith(":"):
            chains = line[1:].split(",")
            continue
        if line.startswith("*"):
            table = line[1:].strip()
            continue
        parts = line.split(";")
        if len(parts) < 3:
            continue
        rule, expect, result = parts[0], parts[1], parts[2].strip()
        if len(parts) >= 4 and parts[3].strip():
            has_variant = True
            variant = parts[3].strip()
            if variant == "LEGACY":
                result = parts[4].strip() if len(parts) >= 5 and parts[4].strip() else _invert(result)
        if (expect in ("=", "") and result == "OK") or expect == "=":
            expect = rule
        tables.add(table)
        cases.append(Case(lineno, table, list(chains), rule, expect, result, setup))
    return TFile(path, cases, tables, has_cmd, has_variant)


def extension_of(path: Path) -> str | None:
    """`libxt_tcp.t` -> "tcp"; iptables.t / libxt_standard.t -> None (core only)."""
    stem = path.stem
    if stem in ("iptables", "libxt_standard", "libip6t_standard"):
        return None
    return stem.split("_", 1)[1]


def unsupported_reason(path: Path, family: int = NFPROTO_IPV4) -> str | None:
    ext = extension_of(path)
    if ext is None:
        return None
    if find_match(ext, family) is None and find_target(ext, family) is None:
        return f"extension '{ext}' not supported"
    return None


def _normalize(line: str) -> str:
    """Compare as argv (the .t lines go through a shell, save output through iptables-restore's tokenizer)."""
    return " ".join(tokenize_restore_line(line))


def save_lines(rs: Ruleset, table: str) -> list[str]:
    return [_normalize(x) for x in save_table(rs.tables[table])]


def run_slow(case: Case, chain: str, family: int = NFPROTO_IPV4) -> str | None:
    """One `.t` line in one chain (run by ip6tables with `family` NFPROTO_IPV6); an error description or None."""
    rs = Ruleset(family)
    for setup in case.setup:  # in the family being tested: the kernel's objects are the namespace's
        rs.execute(parse_argv(shlex.split(setup), family=family))
    argv = ["-t", case.table, "-A", chain, *shlex.split(case.rule)]
    try:
        cmd = parse_argv(argv, family=family)
        rs.execute(cmd)
        ok = True
        err = ""
    except RulesError as e:
        ok = False
        err = f"{e.exit_code}: {e.message}"
    want = " ".join(["-A", chain, *shlex.split(case.expect)])
    if case.result == "FAIL":
        return None if not ok else f"line {case.lineno}: {chain}: accepted, want FAIL"
    if not ok:
        return f"line {case.lineno}: {chain}: refused ({err}), want {case.result}"
    lines = save_lines(rs, case.table)
    if case.result == "OK" and want not in lines:
        return f"line {case.lineno}: {chain}: save lacks {want!r}; has {lines[-2]!r}"
    if case.result == "NOMATCH" and want in lines:
        return f"line {case.lineno}: {chain}: save has {want!r}, want NOMATCH"
    return None


def fast_mode_ok(tf: TFile) -> bool:
    return len(tf.tables) == 1 and not tf.has_cmd and not tf.has_variant


def run_fast(tf: TFile, family: int = NFPROTO_IPV4) -> str | None:
    """All OK lines at once through iptables-restore; the expected lines must appear as one block."""
    table = next(iter(tf.tables))
    by_chain: dict[str, list[tuple[str, str]]] = {}
    for case in tf.cases:
        if case.result != "OK":
            continue
        for chain in case.chains:
            by_chain.setdefault(chain, []).append((case.rule, case.expect))
    order = sorted(by_chain, key=lambda c: _HOOK_ORDER.get(c, 99))
    text = [f"*{table}"]
    expect: list[str] = []
    for chain in order:
        if chain not in [h.chain_name for h in TABLE_HOOKS[table]]:
            continue
        for rule, exp in by_chain[chain]:
            text.append(f"-A {chain} {rule}")
            expect.append(" ".join(["-A", chain, *shlex.split(exp)]))
    text.append("COMMIT")
    rs = Ruleset(family)
    try:
        rs.restore(parse_restore("\n".join(text) + "\n", family=family))
    except RulesError as e:
        return f"restore refused: line {e.line}: {e.message}"
    lines = save_lines(rs, table)
    for i in range(len(lines)):
        if lines[i:i + len(expect)] == expect:
            return None
    missing = [x for x in expect if x not in lines]
    return f"block not found; missing {missing[:3]}"
