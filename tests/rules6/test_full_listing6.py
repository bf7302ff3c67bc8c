"""A whole IPv6 ruleset (Docker's of ipv6-semantics.md §6 with counters, NPTv6, HL, REJECT, LOG...) restored
with `-c` and listed every way, byte for byte against the real ip6tables 1.8.9 (data/docker6_listings.json,
recorded by record_full_listing.py). ip6tables-nft 1.8.9 keeps the policy counters and drops the rules'."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from natbox.cli.ip6tables import ip6tables_main, ip6tables_restore_main, ip6tables_save_main

DATA = Path(__file__).parent / "data"
RECORDED: dict[str, list[object]] = json.loads((DATA / "docker6_listings.json").read_text())


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("r6") / "rules.v6"
    text = (DATA / "docker6_counters.rules").read_text()
    assert ip6tables_restore_main(["-c"], rules_path=str(path), stdin=io.StringIO(text)) == 0
    return path


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_listing_like_ip6tables(key: str, rules_file: Path) -> None:
    rc, want = RECORDED[key]
    out, err = io.StringIO(), io.StringIO()
    words = key.split()
    if words[0] == "save":
        got_rc = ip6tables_save_main(words[1:], rules_path=str(rules_file), stdout=out, stderr=err)
        got = "".join(x + "\n" for x in out.getvalue().splitlines() if x[:1] != "#")
    else:
        got_rc = ip6tables_main(["-t", *words], rules_path=str(rules_file), stdout=out, stderr=err)
        got = out.getvalue()
    assert (got_rc, got) == (rc, want), err.getvalue()
