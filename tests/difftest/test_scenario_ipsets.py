"""Scenarios with ipsets (issue #14): `router.ipsets` is restored before the rules on the kernel side, and
natbox's replay restores the sets the router's snapshot recorded (`ipset save`) before its rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.snapshot.test_snapshot_parse import ADDR, LINK, ROUTE

from natbox.difftest.kernel import KernelRun
from natbox.difftest.natbox_side import build_engine
from natbox.difftest.scenario import ScenarioError, parse_scenario
from natbox.ipset.command import IpsetSession
from natbox.rules.printer import save_rule

CORPUS = Path(__file__).resolve().parents[2] / "scenarios"
SETS = ("create ext hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x00000011\n"
        "add ext 10.9.0.0/24\n")
RULES = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
         "[3:180] -A FORWARD -m set --match-set ext dst -j DROP\nCOMMIT\n")


def test_the_docker_28_0_0_scenario_restores_its_set() -> None:
    path = CORPUS / "docker28-ipset-published-port.toml"
    sc = parse_scenario(path.read_text(), str(path))
    assert sc.ipsets.startswith("create docker-ext-bridges-v4 hash:net family inet")
    assert "add docker-ext-bridges-v4 172.18.0.0/16" in sc.ipsets
    assert "--match-set docker-ext-bridges-v4 dst" in sc.rules


def test_ipsets_must_be_text() -> None:
    with pytest.raises(ScenarioError, match=r"x.toml: router.ipsets: must be str"):
        parse_scenario('[router]\nipsets = 3\n[[router.interface]]\nname = "a"\n', "x.toml")


def test_the_replay_engine_gets_the_snapshots_sets_and_its_rules_name_them() -> None:
    run = KernelRun("s", {"link.json": LINK, "addr.json": ADDR, "route.json": ROUTE, "iptables.rules": RULES,
                          "ipset.save": SETS})
    engine = build_engine(run)
    reg = engine.ipsets
    assert reg is not None
    rc, out, _ = IpsetSession(reg, 0.0, lambda: 0).run(["save"])
    assert rc == 0 and out == SETS
    rule = engine.rules.tables["filter"].chains["FORWARD"].rules[0]
    assert save_rule("FORWARD", rule, counters=True) == "[3:180] -A FORWARD -m set --match-set ext dst -j DROP"


def test_a_snapshot_without_sets_gives_an_engine_without_sets() -> None:
    run = KernelRun("s", {"link.json": LINK, "addr.json": ADDR, "route.json": ROUTE})
    assert build_engine(run).ipsets is None
