"""Live natbox as the router for today's rulesets (issue #14): Docker 28 (with and without the ipset), Docker 29's
DOCKER-INTERNAL, libvirt >= 5.1 and firewalld's iptables backend agree with the kernel as run_scenario(live=True)
compares them (§10). kube-proxy's statistic rules are replay-only (natbox.difftest.draws)."""

from __future__ import annotations

from pathlib import Path

import pytest

from natbox.difftest.cli import live_capable, run_scenario
from natbox.difftest.kernel import kernel_available
from natbox.difftest.scenario import Scenario, parse_scenario

pytestmark = pytest.mark.netns
CORPUS = Path(__file__).resolve().parents[2] / "scenarios"
LIVE = ["docker28-published-port", "docker28-ipset-published-port", "docker29-internal-network",
        "libvirt5-default-network", "firewalld-iptables-backend", "ufw-limit-ssh"]


def _scenario(name: str) -> Scenario:
    path = CORPUS / f"{name}.toml"
    return parse_scenario(path.read_text(), str(path))


@pytest.mark.parametrize("name", LIVE)
def test_live_natbox_agrees_with_the_kernel(name: str) -> None:
    why = kernel_available()
    if why is not None:
        pytest.skip(f"kernel side unavailable: {why}")
    sc = _scenario(name)
    assert live_capable(sc)
    _kernel, diffs = run_scenario(sc, live=True)
    assert not diffs, "\n".join(str(d) for d in diffs[:10])


def test_random_statistic_rules_are_replay_only() -> None:
    assert not live_capable(_scenario("kube-proxy-services"))
