"""natbox's listings against outputs recorded from the real iptables v1.8.9 (nf_tables) (data/oracle1)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from natbox.rules.evaluate import Ruleset
from natbox.rules.model import RulesError
from natbox.rules.parser import parse_argv
from natbox.rules.printer import save_tables

DATA_DIRS = sorted((Path(__file__).resolve().parent / "data").glob("oracle*"))
FLAGS = ["-L", "-nL", "-vL", "-nvL", "-nvxL --line-numbers", "-S", "-vS"]


def _load(data: Path) -> Ruleset:
    rs = Ruleset()
    for line in (data / "rules.txt").read_text().splitlines():
        table, args = line.split("|", 1)
        try:
            rs.execute(parse_argv(["-t", table, *shlex.split(args)]))
        except RulesError as e:
            assert "MASQUERADE --to-ports" in args, e.message  # refused by iptables too
    return rs


@pytest.mark.parametrize("data", DATA_DIRS, ids=lambda p: p.name)
@pytest.mark.parametrize("table", ["filter", "nat", "mangle", "raw"])
@pytest.mark.parametrize("flags", FLAGS)
def test_listing_matches_iptables(data: Path, table: str, flags: str) -> None:
    rs = _load(data)
    want = (data / f"{table}{flags.replace(' ', '')}.txt").read_text()
    assert rs.execute(parse_argv(["-t", table, *flags.split()])) == want


@pytest.mark.parametrize("data", DATA_DIRS, ids=lambda p: p.name)
def test_save_matches_iptables_per_table(data: Path) -> None:
    rs = _load(data)
    got = save_tables(rs.saved_tables(), "D", counters=True)
    want = (data / "save_nc.txt").read_text()

    def blocks(text: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for block in text.split("COMMIT\n"):
            lines = [x for x in block.splitlines() if x and not x.startswith("#")]
            if lines:
                out[lines[0]] = "\n".join(lines)
        return out

    mine, real = blocks(got), blocks(want)
    assert mine
    # the namespace also had tables left from earlier runs (empty ones): compare the tables natbox has
    for name, text in mine.items():
        assert text == real[name], name
