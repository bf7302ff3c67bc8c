"""natbox.testing.live.unique_lab_name: the lab (namespace) names of concurrent test runs never coincide."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import pytest

from natbox.testing.live import LAB_PREFIX_MAX, unique_lab_name

LIVE = Path(__file__).resolve().parent / "live"

# pids around every boundary of the old naming (decimal pid % 100000 truncated to 8 characters) and of
# base 36, up to PID_MAX_LIMIT - 1 (include/linux/threads.h)
PIDS = (1, 2, 35, 36, 1295, 1296, 12345, 12346, 46655, 46656, 99999, 100000, 100001, 112345,
        1679615, 1679616, 4 * 1024 * 1024 - 1)


def prefixes_in_use() -> set[str]:
    """Every prefix the live tests name labs with: the string literals of each unique_lab_name(...) call
    (a conditional one gives two) and the prefix argument of test_gateway_live6's `_example(file, prefix)`."""
    found: set[str] = set()
    for path in sorted(LIVE.glob("*.py")):
        text = path.read_text()
        for args in re.findall(r"unique_lab_name\(([^()]*)\)", text):
            found.update(re.findall(r'"([^"]*)"', args))
        found.update(re.findall(r'_example\("[^"]*", "([^"]*)"\)', text))
    return found


def test_the_live_tests_use_prefixes_found_here() -> None:
    # the scan below sees the prefixes (a change of how callers pass them would empty it unnoticed)
    assert {"gw", "b6", "br", "bv", "of6", "onw"} <= prefixes_in_use()


def test_every_prefix_and_pid_gives_its_own_name_of_at_most_8_chars() -> None:
    prefixes = sorted(prefixes_in_use())
    names: dict[str, tuple[str, int]] = {}
    for prefix, pid in itertools.product(prefixes, PIDS):
        name = unique_lab_name(prefix, pid)
        assert len(name) <= 8 and re.fullmatch(r"[a-z0-9]+", name), (prefix, pid, name)
        assert name not in names, (name, (prefix, pid), names[name])
        names[name] = (prefix, pid)


def test_the_default_pid_is_this_process() -> None:
    assert unique_lab_name("gw") == unique_lab_name("gw", os.getpid())
    assert unique_lab_name("gw", 36) == "gw00010"


@pytest.mark.parametrize("prefix", ["", "x" * (LAB_PREFIX_MAX + 1), "off6", "G6", "a-b"])
def test_a_prefix_that_cannot_fit_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="lab name prefix"):
        unique_lab_name(prefix, 1)


def test_a_pid_beyond_five_base36_digits_is_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        unique_lab_name("gw", 36 ** 5)
