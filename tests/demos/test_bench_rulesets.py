"""`natbox bench rules` measures the rulesets the demos and scenarios show, at scale (issue #14). No timing is
asserted: only that the generated rulesets are those rulesets and that each benchmark runs and reports."""

from __future__ import annotations

from natbox.cli.bench_rules import bench_ipset, docker28_ruleset, kube_proxy_ruleset
from natbox.demos.modern import scenario_rules
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore


def _rule_lines(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.startswith(("-A ", ":", "*")))


def test_docker28_bench_ruleset_with_one_port_is_the_scenarios() -> None:
    bench = docker28_ruleset(1).replace("--dport 8000 ", "--dport 8080 ")
    assert _rule_lines(bench) == _rule_lines(scenario_rules("docker28-published-port"))


def test_kube_proxy_bench_ruleset_has_the_scenarios_shapes_and_loads() -> None:
    text = kube_proxy_ruleset(1000)
    rules = [line for line in text.splitlines() if line.startswith("-A ")]
    assert len(rules) == 1000 * 11 + 13
    assert sum("--mode random --probability 0.33333333349" in r for r in rules) == 1000
    Ruleset().restore(parse_restore(text, file="kube"))
    scenario = scenario_rules("kube-proxy-services")
    for shape in ("-j MASQUERADE --random-fully", "-j MARK --set-xmark 0x4000/0x4000",
                  "-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"):
        assert shape in text and shape in scenario


def test_the_ipset_benchmark_reports_both_sizes() -> None:
    lines: list[str] = []
    bench_ipset(50, lines.append)
    assert len(lines) == 1 and "10 elements" in lines[0] and "100,000 elements" in lines[0]
