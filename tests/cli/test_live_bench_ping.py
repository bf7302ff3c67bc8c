"""bench/live_bench.py's ping figures: enough replies to settle issue #16's aim "ping on an established flow
<= 1.1x the kernel's", their median and 90th percentile, and how many replies each figure has."""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # a directory of scripts, not a package:
# found by this file's place, as the compiled pass runs the tests from outside the checkout (test_slowpath_equivalence)
from live_bench import (  # type: ignore[import-not-found]
    METRICS,
    PING_COUNT,
    PING_INTERVAL,
    PING_WARM,
    no_ping,
    ping_figures,
)


def _output(rtts: list[float]) -> str:
    lines = ["PING 198.51.100.2 (198.51.100.2) 56(84) bytes of data."]
    lines += [f"64 bytes from 198.51.100.2: icmp_seq={i + 1} ttl=63 time={t:.3f} ms" for i, t in enumerate(rtts)]
    lines += ["", "--- 198.51.100.2 ping statistics ---",
              f"{PING_COUNT} packets transmitted, {len(rtts)} received, 0% packet loss, time 2010ms"]
    return "\n".join(lines) + "\n"


def test_a_run_asks_for_enough_requests_quickly() -> None:
    assert PING_COUNT >= 200 and float(PING_INTERVAL) <= 0.01  # two seconds, some 195 established replies


def test_the_established_figures_are_the_median_and_p90_of_the_replies_after_the_warm_up() -> None:
    warm = [0.9, 0.5, 0.3, 0.2, 0.15][:PING_WARM]  # the slow path's first replies: left out
    est = [0.060 + 0.001 * (i % 40) for i in range(PING_COUNT - PING_WARM)]
    got = ping_figures(_output(warm + est), "ping")
    assert got["ping_n"] == PING_COUNT and got["ping_est_n"] == PING_COUNT - PING_WARM
    assert math.isclose(got["ping_est_ms"], statistics.median(est))
    assert math.isclose(got["ping_est_p90_ms"], statistics.quantiles(est, n=10)[8])
    assert 0.094 < got["ping_est_p90_ms"] < 0.097 and got["ping_est_ms"] < got["ping_est_p90_ms"]
    assert math.isclose(got["ping_ms"], statistics.fmean(warm + est))


def test_lost_replies_are_counted_and_too_few_give_nan() -> None:
    got = ping_figures(_output([0.1] * (PING_WARM + 1)), "ping6")
    assert (got["ping6_n"], got["ping6_est_n"], got["ping6_est_ms"]) == (PING_WARM + 1, 1, 0.1)
    assert math.isnan(got["ping6_est_p90_ms"])  # a percentile needs two replies
    nothing = ping_figures("", "ping")
    assert nothing["ping_n"] == 0 and all(math.isnan(nothing[k]) for k in ("ping_ms", "ping_est_ms"))


def test_every_figure_is_a_printed_metric() -> None:
    assert set(no_ping("ping")) | set(no_ping("ping6")) <= set(METRICS)
    assert {"ping_est_p90_ms", "ping_est_n", "ping6_est_p90_ms", "ping6_est_n"} <= set(METRICS)
