"""Every sample capture of ../shared/external/pcaps replays through a MASQUERADE host without an exception;
every record is either given to the engine or counted under a reason, and the record counts are the
manifest's (counted there by other tools)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from natbox.testing.paths import PCAPS
from natbox.testing.replay import cli

HOST = """\
name = "masq"
ip_forward = true

[[interface]]
name = "eth0"
addresses = ["10.99.0.1/16"]

[[interface]]
name = "eth1"
addresses = ["172.31.0.1/12"]

[[route]]
dst = "default"
via = "10.99.0.254"
dev = "eth0"

[rules]
text = '''
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o eth0 -j MASQUERADE
COMMIT
'''
"""

CAPTURES = sorted(p for p in PCAPS.glob("*") if p.suffix in (".pcap", ".pcapng")) if PCAPS.is_dir() else []


def _manifest() -> dict[str, dict[str, str]]:
    path = PCAPS / "MANIFEST-counts.tsv"
    if not path.is_file():
        return {}
    with path.open() as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


@pytest.mark.skipif(not CAPTURES, reason="no external captures")
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_external_capture_replays(capture: Path, tmp_path: Path) -> None:
    host = tmp_path / "masq.toml"
    host.write_text(HOST)
    out = tmp_path / "out"
    code, _o, err = cli(["--host", str(host), "--in", f"eth1={capture}", "--out", str(out), "--jsonl"])
    assert code in (0, 1), err
    stats = (out / "stats.txt").read_text().splitlines()
    totals = {ln.split()[0]: int(ln.split()[1]) for ln in stats[stats.index("# totals") + 1:]}
    # a capture of which nothing could be replayed says so and exits 1
    assert (code == 1) == (totals["replayed"] == 0), err
    assert (code == 1) == ("error: nothing was replayed" in err), err
    start = stats.index("# inputs not replayed (records)") + 1
    skipped = {ln.rsplit(": ", 1)[0]: int(ln.rsplit(": ", 1)[1]) for ln in stats[start:stats.index("# totals")]}
    early = sum(n for r, n in skipped.items() if r.startswith("capture ends early"))
    assert totals["inputs"] == totals["replayed"] + sum(skipped.values()) - early
    row = _manifest().get(capture.name)
    if row is not None:
        assert totals["inputs"] == int(row["pkts"])
        if row["linktype"] == "9":  # PPP: foreign to natbox, every record counted as such
            assert skipped.get("foreign link type 9") == int(row["pkts"])
    assert len((out / "packets.jsonl").read_text().splitlines()) == totals["inputs"]
