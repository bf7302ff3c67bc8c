"""`[[router.bridge]]` in difftest scenarios: parsing, validation, and no live run for a router with a bridge."""

from __future__ import annotations

import pytest

from natbox.difftest.cli import live_capable
from natbox.difftest.scenario import ScenarioError, parse_scenario
from natbox.testing.paths import REPO

BASE = """
[[router.interface]]
name = "lan1"
[[router.interface]]
name = "lan2"
[[router.interface]]
name = "wan"
addresses = ["198.51.100.1/24"]
[[host]]
name = "a"
attach = "lan1"
addresses = ["10.60.0.10/24"]
[[host]]
name = "b"
attach = "wan"
addresses = ["198.51.100.2/24"]
"""


def test_a_bridge_over_two_ports() -> None:
    sc = parse_scenario(BASE + '[[router.bridge]]\nname = "br0"\nports = ["lan1", "lan2"]\n'
                        'addresses = ["10.60.0.1/24"]\n', "t.toml")
    assert [(b.name, b.ports, b.addresses) for b in sc.bridges] == [("br0", ["lan1", "lan2"], ["10.60.0.1/24"])]
    assert sc.bridge_of("lan2") is sc.bridges[0] and sc.bridge_of("wan") is None
    assert not live_capable(sc)
    assert live_capable(parse_scenario(BASE, "t.toml"))


@pytest.mark.parametrize(("bridge", "message"), [
    ('name = "br0"\nports = ["wan"]', "'wan' must be a router interface without addresses"),
    ('name = "br0"\nports = ["nope"]', "'nope' must be a router interface"),
    ('name = "br0"\nports = []', "at least one port"),
    ('name = "lan1"\nports = ["lan2"]', "not an interface's"),
    ('name = "br0"\nports = ["lan1"]\naddresses = ["192.0.2.1/24"]', "outside"),
    ('name = "br0"\nports = ["lan1"]\nstp = true', "unknown keys"),
])
def test_bad_bridges_are_refused(bridge: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(BASE + "[[router.bridge]]\n" + bridge + "\n", "t.toml")


def test_the_corpus_bridge_scenarios_parse() -> None:
    for name in ("physdev-bridge-forward", "physdev-bridge-dnat"):
        path = REPO / "scenarios" / f"{name}.toml"
        sc = parse_scenario(path.read_text(), str(path))
        assert sc.bridges and not live_capable(sc)
