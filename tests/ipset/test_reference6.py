"""natbox's ipset for sets of family inet6 against what the real ipset 7.17 printed on Linux 6.18
(tests/ipset/data/record_ipset6.py): every step through `IpsetSession`, one registry per case, stdout,
stderr and exit status byte for byte (member order and "Size in memory" included)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from natbox.ipset import IpsetRegistry, IpsetSession

DATA = json.loads((Path(__file__).parent / "data" / "ipset6_7.17.json").read_text())
# the recording kernel has no hash:mac module ("Kernel error received: set type not supported")
SKIP_STEPS = {("family_options", "create m hash:mac family inet6")}


@pytest.mark.parametrize("case", sorted(DATA["cases"]))
def test_inet6_case_matches_ipset(case: str) -> None:
    reg = IpsetRegistry()
    steps: list[dict[str, Any]] = DATA["cases"][case]
    for i, step in enumerate(steps):
        argv: list[str] = step["argv"]
        if (case, " ".join(argv)) in SKIP_STEPS:
            continue
        stdin = step["stdin"] or ""
        session = IpsetSession(reg, 1000.0 + i * 0.01, lambda: 0x11111111)
        rc, out, err = session.run(argv, stdin)
        what = f"{case} step {i}: ipset {' '.join(argv)}"
        assert (out, err, rc) == (step["stdout"], step["stderr"], step["rc"]), what
