"""natbox's ip6tables against what the real ip6tables 1.8.9 printed (data/listing_recorded.json, made by
record_listing.py in a scratch namespace): for each rule, whether `-A` is refused, and the rule's `-S`, `-L`,
`-nL` and `-v -C` text, byte for byte."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from natbox.rules.evaluate import Ruleset
from natbox.rules.model import NFPROTO_IPV6, RulesError
from natbox.rules.parser import parse_argv

RECORDED: list[dict[str, Any]] = json.loads((Path(__file__).parent / "data" / "listing_recorded.json").read_text())


def _run(rs: Ruleset, table: str, *argv: str) -> str:
    return rs.execute(parse_argv(["-t", table, *argv], family=NFPROTO_IPV6))


@pytest.mark.parametrize("rec", RECORDED, ids=[f"{r['table']} {r['rule']}" for r in RECORDED])
def test_like_ip6tables(rec: dict[str, Any]) -> None:
    rs = Ruleset(NFPROTO_IPV6)
    table, chain, argv = rec["table"], rec["chain"], shlex.split(rec["rule"])
    try:
        _run(rs, table, "-A", chain, *argv)
    except RulesError as e:
        if "natbox does not implement" in e.message:
            pytest.skip(e.message.splitlines()[0])
        assert rec["rc"] != 0, f"refused ({e.exit_code}: {e.message.strip()}), ip6tables took it"
        assert e.exit_code == rec["rc"], e.message
        return
    assert rec["rc"] == 0, f"accepted, ip6tables refused it: {rec['stderr']}"
    assert [x for x in _run(rs, table, "-S", chain).splitlines() if x.startswith("-A")] == rec["S"]
    assert _run(rs, table, "-L", chain).splitlines()[2:] == rec["L"]
    assert _run(rs, table, "-nL", chain).splitlines()[2:] == rec["nL"]
    assert _run(rs, table, "-v", "-C", chain, *argv) == rec["vC"]


REFUSED = [r for r in RECORDED if r["rc"] != 0]


@pytest.mark.parametrize("rec", REFUSED, ids=[f"{r['table']} {r['rule']}" for r in REFUSED])
def test_refusal_message_like_ip6tables(rec: dict[str, Any], tmp_path: Path) -> None:
    """What ip6tables printed on stderr, and its exit status, for the rules it refused."""
    from natbox.cli.ip6tables import ip6tables_main

    out, err = io.StringIO(), io.StringIO()
    rc = ip6tables_main(["-t", rec["table"], "-A", rec["chain"], *shlex.split(rec["rule"])],
                        rules_path=str(tmp_path / "r.v6"), stdout=out, stderr=err)
    assert (rc, err.getvalue()) == (rec["rc"], rec["stderr"])
