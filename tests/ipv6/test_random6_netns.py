"""Random IPv6 scenarios (natbox.difftest.generator6) on the kernel and through natbox, derandomized; a
difference is shrunk and written to scenarios/ipv6/ as a regression scenario (which test_difftest6_netns then
runs with the corpus). About 1 s per case."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from natbox.difftest.generator import explore
from natbox.difftest.generator6 import scenarios6
from natbox.difftest.kernel import kernel_available
from natbox.testing.live import require_programs

pytestmark = [pytest.mark.netns, pytest.mark.slow]

REGRESSIONS6 = Path(__file__).resolve().parents[2] / "scenarios" / "ipv6"
RANDOM6_CASES = int(os.environ.get("NATBOX_DIFFTEST_RANDOM6", "30"))
SEED = int(os.environ.get("NATBOX_DIFFTEST_SEED", "0"))


def test_random_ipv6_scenarios_agree() -> None:
    why = kernel_available()
    if why is not None:
        pytest.skip(f"kernel side unavailable: {why}")
    require_programs("ip6tables-restore", "ip6tables-save")
    found = explore(RANDOM6_CASES, seed=SEED, out_dir=REGRESSIONS6, strategy=scenarios6())
    assert found is None, (f"natbox differs from the kernel; shrunk case written to {found.path} "
                           f"(differed again in {found.reproduced} reruns):\n"
                           + "\n".join(str(d) for d in found.differences[:10]))
