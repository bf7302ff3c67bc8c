"""The gateway's collector settings (natbox.gateway.app.settle_collector): start-up's objects frozen, full
collections rare, and cycles made while forwarding still collected without an explicit gc.collect()."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from natbox.gateway.app import COLLECTOR_THRESHOLDS, settle_collector


class _Node:
    def __init__(self) -> None:
        self.me: _Node | None = None


@pytest.fixture
def restored() -> Iterator[None]:
    old = gc.get_threshold()
    enabled = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*old)
        if not enabled:
            gc.disable()


def test_startup_objects_frozen_and_thresholds_set(restored: None) -> None:
    built = [[i] for i in range(20_000)]  # start-up's containers: the host, rules, engine
    settle_collector()
    assert gc.get_freeze_count() >= len(built)
    assert gc.get_threshold() == COLLECTOR_THRESHOLDS
    assert COLLECTOR_THRESHOLDS[0] > 700 and COLLECTOR_THRESHOLDS[2] > 10  # fewer collections than CPython's


def test_cycles_made_while_forwarding_still_die(restored: None) -> None:
    settle_collector()
    node = _Node()
    node.me = node  # a reference cycle: reference counting alone never frees it
    alive = weakref.ref(node)
    del node
    keep = [[i] for i in range(COLLECTOR_THRESHOLDS[0] * 3)]  # allocations enough for young collections
    assert alive() is None, "the cycle outlived the young collections"
    assert len(keep) == COLLECTOR_THRESHOLDS[0] * 3
