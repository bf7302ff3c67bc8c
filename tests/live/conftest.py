"""Live tests: skip cleanly without root and network namespaces."""

import pytest

from natbox.testing.live import netns_reason


@pytest.fixture
def need_netns() -> None:
    reason = netns_reason()
    if reason is not None:
        pytest.skip(f"live test: {reason}")
