"""`natbox ipset` on a sets file, against the real ipset 7.17's recorded output, byte for byte.

Each step loads the sets file, runs, and writes it back, so this also checks that `ipset save` text
restores to the same sets. Where only the kernel's allocation history explains an output (buckets that
grew and shrank keep their accounting; freed slots are reused first), the sets file cannot carry it:
those cases run in tests/ipset/test_reference.py on one registry instead.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from tests.ipset.test_reference import DATA, SKIP_CASES, SKIP_STEPS

from natbox.cli.ipset import ipset_main, rule_set_refs

HISTORY_CASES = {"buckets"}
HISTORY_STEPS = {
    ("admin", 19),  # e fills the index d's destroy freed: save text has no indexes
}


def _natbox(argv: list[str], sets: Path, stdin: str = "", rules: Path | None = None) -> tuple[str, str, int]:
    out, err = io.StringIO(), io.StringIO()
    extra = ["--rules", str(rules)] if rules is not None else []
    rc = ipset_main(["--sets", str(sets), *extra, *argv], stdin=io.StringIO(stdin), stdout=out, stderr=err,
                    clock=lambda: 1_700_000_000.25)  # one second for a whole case, as when it was recorded
    return out.getvalue(), err.getvalue(), rc


@pytest.mark.parametrize("case", sorted(c for c in DATA["cases"] if c not in SKIP_CASES | HISTORY_CASES))
def test_cli_matches_ipset(case: str, tmp_path: Path) -> None:
    sets = tmp_path / "sets"
    for i, step in enumerate(DATA["cases"][case]):
        argv: list[str] = step["argv"]
        if (case, " ".join(argv)) in SKIP_STEPS or (case, i) in HISTORY_STEPS:
            continue
        stdin = step["stdin"] or ""
        if "/dev/stdin" in argv:
            (tmp_path / "in").write_text(stdin)
            argv = [str(tmp_path / "in") if a == "/dev/stdin" else a for a in argv]
        got = _natbox(argv, sets, stdin)
        assert got == (step["stdout"], step["stderr"], step["rc"]), f"{case} step {i}: ipset {' '.join(argv)}"


def test_sets_file_is_ipset_save_text(tmp_path: Path) -> None:
    sets = tmp_path / "sets"
    _natbox(["create", "a", "hash:ip", "initval", "0x1"], sets)
    _natbox(["add", "a", "10.0.0.1"], sets)
    assert sets.read_text() == "create a hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 " \
                               "initval 0x00000001\nadd a 10.0.0.1\n"
    assert _natbox(["save"], sets)[0] == sets.read_text()


def test_a_set_used_by_a_rule_cannot_be_destroyed(tmp_path: Path) -> None:
    sets, rules = tmp_path / "sets", tmp_path / "rules"
    rules.write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                     "[0:0] -A FORWARD -m set --match-set used src,dst -j DROP\n"
                     "[0:0] -A INPUT -j SET --add-set used src --exist\nCOMMIT\n")
    _natbox(["create", "used", "hash:ip,port"], sets, rules=rules)
    _natbox(["create", "free", "hash:ip,port"], sets, rules=rules)
    assert "References: 2\n" in _natbox(["list", "-t", "used"], sets, rules=rules)[0]
    assert _natbox(["destroy", "used"], sets, rules=rules) == (
        "", "ipset v7.17: Set cannot be destroyed: it is in use by a kernel component\n", 1)
    assert _natbox(["destroy"], sets, rules=rules)[2] == 1
    assert _natbox(["destroy", "free"], sets, rules=rules)[2] == 0
    assert _natbox(["list", "-n"], sets, rules=rules)[0] == "used\n"
    assert _natbox(["destroy", "used"], sets)[2] == 0  # no ruleset: nothing holds it


def test_rule_references_are_counted_per_option() -> None:
    text = "-A X -m set --match-set a src -m set ! --match-set b dst\n[1:2] -A Y -j SET --add-set a src " \
           "--del-set a dst\n# -A Z --match-set c\n"
    assert rule_set_refs(text) == {"a": 3, "b": 1}


def test_bad_sets_file_is_one_line(tmp_path: Path) -> None:
    sets = tmp_path / "sets"
    sets.write_text("create a hash:ip\nadd a 10.0.0.300\n")
    _out, err, rc = _natbox(["list"], sets)
    assert rc == 1 and err.count("\n") == 1 and "Error in line 2" in err


def test_timeouts_run_on_between_commands(tmp_path: Path) -> None:
    sets = tmp_path / "sets"

    def at(t: float, *argv: str) -> tuple[str, str, int]:
        out, err = io.StringIO(), io.StringIO()
        rc = ipset_main(["--sets", str(sets), *argv], stdout=out, stderr=err, clock=lambda: t)
        return out.getvalue(), err.getvalue(), rc

    at(100.3, "create", "t", "hash:ip", "timeout", "10", "initval", "0x1")
    at(100.4, "add", "t", "10.0.0.1")
    at(103.2, "add", "t", "10.0.0.2", "timeout", "100")  # a write in between loses nothing
    assert "add t 10.0.0.1 timeout 4\n" in at(105.9, "save")[0]
    assert "add t 10.0.0.2 timeout 97\n" in at(105.9, "save")[0]
    assert at(110.5, "test", "t", "10.0.0.1")[2] == 1
    assert at(110.5, "test", "t", "10.0.0.2")[2] == 0
