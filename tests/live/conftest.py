"""Live tests: make `livelib` importable (--import-mode=importlib) and skip cleanly without root."""

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from livelib import netns_reason  # noqa: E402


@pytest.fixture
def need_netns() -> None:
    reason = netns_reason()
    if reason is not None:
        pytest.skip(f"live test: {reason}")
