"""bench/live_bench.py's rounds and sides: --only takes several sides (and names a wrong one), a figure is the
median of its rounds, the spread of the aims' figures is printed per side, and the TCP runs pin the senders'
congestion control (the host's default, bbr here, paced one stream well below what the path carries)."""

from __future__ import annotations

import argparse
import io
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # scripts: see test_live_bench_ping
import live_bench  # type: ignore[import-not-found]


def test_only_takes_several_sides_and_refuses_an_unknown_one() -> None:
    assert live_bench._sides("kernel,offnew-c") == ["kernel", "offnew-c"]
    with pytest.raises(argparse.ArgumentTypeError, match="not a side: 'offnew-x'"):
        live_bench._sides("kernel,offnew-x")
    with pytest.raises(argparse.ArgumentTypeError):
        live_bench._sides(",")


def test_a_figure_is_the_median_of_its_rounds_and_the_spread_is_printed() -> None:
    keys = list(live_bench.METRICS)
    nan = float("nan")

    def fig(tcp1: float) -> dict[str, float]:
        return {k: (tcp1 if k == "tcp1_gbps" else nan) for k in keys}

    runs = {"kernel": [fig(10.0), fig(12.0), fig(30.0)], "offload": [fig(9.0), fig(13.0), fig(11.0)]}
    results = {side: live_bench.median_of(r) for side, r in runs.items()}
    assert results["kernel"]["tcp1_gbps"] == 12.0 and results["offload"]["tcp1_gbps"] == 11.0
    out = io.StringIO()
    with redirect_stdout(out):
        live_bench.report(results, {}, runs)
    text = out.getvalue()
    assert "0.92  not met" in text  # 11 / 12
    assert "10..30" in text and "9..13" in text
    assert "  tcp1_gbps offload: 9 13 11" in text
    assert "udp64_pps" not in text.split("spread over the rounds")[1]  # not measured: no spread row


def test_tcp_runs_pin_the_congestion_control() -> None:
    saved = live_bench.TCP_CC["name"]
    try:
        assert live_bench.cc_args() == ["-C", "cubic"]
        live_bench.TCP_CC["name"] = ""
        assert live_bench.cc_args() == []
    finally:
        live_bench.TCP_CC["name"] = saved
