"""A short fuzz campaign in CI (bench/fuzz.py runs the long one): damaged frames through every engine path
and damaged files through every command that reads one raise nothing and break no invariant."""

from __future__ import annotations

from natbox.testing.fuzz import FuzzReport, fuzz_frames
from natbox.testing.fuzz_files import fuzz_files


def _explain(report: FuzzReport) -> str:
    return "\n---\n".join(report.failures[:3])


def test_frames_through_every_engine_path() -> None:
    report = fuzz_frames(45_000, seed=7)
    assert report.ok, report.summary("frames") + "\n" + _explain(report)
    # the campaign reached the engines' outputs, not only their input checks
    assert report.outputs > report.runs // 10
    assert {"flow", "fragment", "arp", "noise", "flow-damaged"} <= set(report.kinds)


def test_damaged_files_through_the_command_line() -> None:
    report = fuzz_files(400, seed=7)
    assert report.ok, report.summary("files") + "\n" + _explain(report)
    assert len(report.kinds) >= 9  # rules, restore, ipset, host, scenario, lab, difftest, capture, ...


def test_the_fuzzer_reports_what_it_finds() -> None:
    """The checks can fail: an exception and a broken invariant are counted and kept."""
    report = FuzzReport()
    report.fail("boom", exception=True)
    report.fail("bad checksum", exception=False)
    assert not report.ok and report.exceptions == 1 and report.violations == 1 and len(report.failures) == 2
