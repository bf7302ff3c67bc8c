"""Random scenarios on the kernel and through natbox (natbox.difftest.generator): CI runs RANDOM_CASES of
them, derandomized; a difference is shrunk and written to scenarios/regressions/ as a regression scenario.
About 0.8 s per case on the 2-core CI machine (one set of namespaces per case), so ~90 s for 100."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from natbox.difftest.generator import explore
from natbox.difftest.kernel import kernel_available

pytestmark = [pytest.mark.netns, pytest.mark.slow]

REGRESSIONS = Path(__file__).resolve().parents[2] / "scenarios" / "regressions"
RANDOM_CASES = int(os.environ.get("NATBOX_DIFFTEST_RANDOM", "100"))  # examples per CI run
SEED = int(os.environ.get("NATBOX_DIFFTEST_SEED", "0"))


def test_random_scenarios_agree() -> None:
    why = kernel_available()
    if why is not None:
        pytest.skip(f"kernel side unavailable: {why}")
    found = explore(RANDOM_CASES, seed=SEED, out_dir=REGRESSIONS)
    assert found is None, (f"natbox differs from the kernel; shrunk case written to {found.path} "
                           f"(differed again in {found.reproduced} reruns):\n"
                           + "\n".join(str(d) for d in found.differences[:10]))
