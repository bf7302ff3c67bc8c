"""ip6tables 1.8.9's own tests: every line of the libip6t_*.t files (slow mode: one `ip6tables -A` per line;
fast mode: one ip6tables-restore), the libxt_*.t lines run by ip6tables (compared with what the real
ip6tables 1.8.9 did with each, recorded in data/ip6tables_t.json by record_ip6tables.py), and the three
ip6tables listing scripts."""

from __future__ import annotations

import dataclasses
import io
import json
import shlex
from pathlib import Path

import pytest

from natbox.cli.ip6tables import ip6tables_main, ip6tables_restore_main, ip6tables_save_main
from natbox.rules.evaluate import Ruleset
from natbox.rules.extensions import find_match
from natbox.rules.model import NFPROTO_IPV6, RulesError
from natbox.rules.parser import parse_argv
from natbox.testing.listing_scripts import run_script
from natbox.testing.rules_conformance import (
    T6_DIR,
    T_DIR,
    Case,
    TFile,
    fast_mode_ok,
    read_t,
    run_fast,
    run_slow,
    save_lines,
    unsupported_reason,
)

T6_FILES = sorted(T6_DIR.glob("*.t")) if T6_DIR.is_dir() else []
XT_FILES = sorted(T_DIR.glob("libxt_*.t")) if T_DIR.is_dir() else []
SCRIPTS = sorted((T6_DIR / "shell").glob("0*")) if T6_DIR.is_dir() else []
RECORDED = json.loads((Path(__file__).parent / "data" / "ip6tables_t.json").read_text())
V6 = NFPROTO_IPV6


def _id(p: Path) -> str:
    return p.name


def _load(path: Path, *, fast: bool = False) -> TFile:
    """The .t file, or a skip naming why it does not apply (an extension natbox lacks; fast mode not possible)."""
    reason = unsupported_reason(path, V6)
    if reason:
        pytest.skip(reason)
    tf = read_t(path)
    if fast and not fast_mode_ok(tf):
        pytest.skip("fast mode does not apply (several tables, @ commands or variants)")
    return tf


@pytest.mark.skipif(not T6_FILES, reason="shared/conformance not present beside the repository")
@pytest.mark.parametrize("path", T6_FILES, ids=_id)
def test_ip6t_file_slow(path: Path) -> None:
    tf = _load(path)
    errors = [e for case in tf.cases for chain in case.chains if (e := run_slow(case, chain, V6)) is not None]
    assert not errors, "\n".join(errors)


@pytest.mark.skipif(not T6_FILES, reason="shared/conformance not present beside the repository")
@pytest.mark.parametrize("path", T6_FILES, ids=_id)
def test_ip6t_file_fast(path: Path) -> None:
    err = run_fast(_load(path, fast=True), V6)
    assert err is None, err


def _norm(line: str) -> str:
    return " ".join(shlex.split(line))


def _no_module(rc: int, stderr: str) -> bool:
    """The recording machine's kernel lacked the extension's module (LED, SECMARK): the line's own
    expectation stands."""
    return rc == 4 and "(No such file or directory)" in stderr


def run_recorded(path: Path, case: Case, chain: str) -> str | None:
    """One libxt line by natbox's ip6tables against the real one's exit status and saved line."""
    rc, want, stderr = RECORDED[path.name][f"{case.lineno}:{chain}"]
    if _no_module(rc, stderr):
        return run_slow(case, chain, V6)
    rs = Ruleset(V6)
    try:
        rs.execute(parse_argv(["-t", case.table, "-A", chain, *shlex.split(case.rule)], family=V6))
    except RulesError as e:
        return None if rc != 0 else f"line {case.lineno}: {chain}: refused ({e.message.strip()}), ip6tables took it"
    if rc != 0:
        return f"line {case.lineno}: {chain}: accepted, ip6tables refused it"
    lines = [x for x in save_lines(rs, case.table) if x.startswith(f"-A {chain}")]
    got = lines[-1] if lines else ""
    return None if got == _norm(want) else f"line {case.lineno}: {chain}: saved {got!r}, ip6tables {want!r}"


@pytest.mark.skipif(not XT_FILES, reason="shared/conformance not present beside the repository")
@pytest.mark.parametrize("path", XT_FILES, ids=_id)
def test_xt_file_in_ip6tables(path: Path) -> None:
    tf = _load(path)
    errors = [e for case in tf.cases for chain in case.chains if (e := run_recorded(path, case, chain)) is not None]
    assert not errors, "\n".join(errors)


@pytest.mark.skipif(not XT_FILES, reason="shared/conformance not present beside the repository")
@pytest.mark.parametrize("path", XT_FILES, ids=_id)
def test_xt_file_in_ip6tables_fast(path: Path) -> None:
    """Fast mode with the lines the real ip6tables accepted, expecting the lines it saved."""
    tf = _load(path, fast=True)
    rec = RECORDED[path.name]
    kept = []
    for case in tf.cases:
        if any(_no_module(*rec[f"{case.lineno}:{c}"][0:3:2]) for c in case.chains):
            if case.result == "OK":
                kept.append(case)
            continue
        got = {tuple(rec[f"{case.lineno}:{c}"][:2]) for c in case.chains}
        if all(rc == 0 for rc, _l in got) and len({_norm(line).split(" ", 2)[2:] and
                                                   _norm(line).split(" ", 2)[2] for _rc, line in got}) == 1:
            line = _norm(next(iter(got))[1])
            kept.append(dataclasses.replace(case, expect=line.split(" ", 2)[2] if line.count(" ") >= 2 else "",
                                            result="OK"))
    if not kept:
        pytest.skip("ip6tables accepts none of these lines")
    err = run_fast(dataclasses.replace(tf, cases=kept), V6)
    assert err is None, err


def _cli(path: Path) -> object:
    def run(prog: str, argv: list[str], stdin: str) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        main = {"ip6tables": ip6tables_main, "ip6tables-save": ip6tables_save_main,
                "ip6tables-restore": ip6tables_restore_main}[prog]
        rc = main(argv, rules_path=str(path), stdin=io.StringIO(stdin), stdout=out, stderr=err)
        return rc, out.getvalue()
    return run


@pytest.mark.skipif(not SCRIPTS, reason="shared/conformance not present beside the repository")
@pytest.mark.parametrize("script", SCRIPTS, ids=_id)
def test_listing_script(script: Path, tmp_path: Path) -> None:
    """0002-verbose-output, 0003-list-rules, 0004-address-masks: natbox ip6tables on a rules file."""
    missing = [n for n in ("icmp6", "dst", "rt", "frag") if find_match(n, V6) is None]
    if script.name.startswith("0002") and missing:
        pytest.skip(f"uses matches natbox's ip6tables lacks: {missing}")
    run = _cli(tmp_path / "rules.v6")
    errors = run_script(script, run)  # type: ignore[arg-type]
    assert not errors, "\n".join(errors)


def test_never_matched_protocol_warning(tmp_path: Path) -> None:
    """ip6tables 1.8.9 (recorded): `-p` of a routing, fragment, AH or destination options header warns on
    stderr (the name as given, lower case) and still adds the rule; `! -p` and `-p hopopt` do not warn."""
    path = str(tmp_path / "r.v6")
    for argv, warning in ((["-p", "IPv6-Route"], "ipv6-route"), (["-p", "44"], "44"), (["-p", "ah"], "ah"),
                          (["!", "-p", "ah"], None), (["-p", "hopopt"], None)):
        err = io.StringIO()
        assert ip6tables_main(["-A", "INPUT", *argv], rules_path=path, stdout=io.StringIO(), stderr=err) == 0
        want = f"Warning: never matched protocol: {warning}. use extension match instead.\n" if warning else ""
        assert err.getvalue() == want
    err = io.StringIO()
    assert ip6tables_restore_main([], rules_path=path, stdin=io.StringIO("*filter\n-A INPUT -p ah\nCOMMIT\n"),
                                  stderr=err) == 0
    assert err.getvalue() == "Warning: never matched protocol: ah. use extension match instead.\n"


@pytest.mark.skipif(not T6_FILES, reason="shared/conformance not present beside the repository")
@pytest.mark.parametrize("path", T6_FILES, ids=_id)
def test_ip6t_refusals_print_what_ip6tables_printed(path: Path, tmp_path: Path) -> None:
    """The libip6t lines ip6tables refused: the same exit status and the same stderr, byte for byte."""
    errors = []
    for case in read_t(path).cases:
        for chain in case.chains:
            rc, _line, stderr = RECORDED[path.name][f"{case.lineno}:{chain}"]
            if rc == 0 or _no_module(rc, stderr):
                continue
            err = io.StringIO()
            got = ip6tables_main(["-t", case.table, "-A", chain, *shlex.split(case.rule)],
                                 rules_path=str(tmp_path / f"{case.lineno}{chain}.v6"), stdout=io.StringIO(),
                                 stderr=err)
            if (got, err.getvalue().strip()) != (rc, stderr):
                errors.append(f"line {case.lineno} {chain}: {got} {err.getvalue()!r}, ip6tables {rc} {stderr!r}")
    assert not errors, "\n".join(errors)
