"""The harness extensions without namespaces: exec steps (parsed, mirrored on natbox), known failures, the
port bijection, the report files, and the random scenario generator (with a stand-in runner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from natbox.demos.scenarios import DOCKER_RULES, _docker_host
from natbox.difftest.compare import Difference
from natbox.difftest.generator import MAX_PACKETS, explore, rulesets, scenarios
from natbox.difftest.natbox_side import apply_exec
from natbox.difftest.portmap import PortMap
from natbox.difftest.report import ScenarioResult, render_markdown, write_report
from natbox.difftest.scenario import ROUTER, ScenarioError, parse_scenario
from natbox.engine.engine import Engine
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore

BASE = """
[router]
rules = "*nat\\nCOMMIT\\n"
[[router.interface]]
name = "lan0"
addresses = ["192.168.50.1/24"]
[[host]]
name = "cli"
attach = "lan0"
addresses = ["192.168.50.2/24"]
"""


def _exec(cmd: str) -> str:
    return BASE + f'[[step]]\nat = 0.1\nexec = "{cmd}"\n'


@pytest.mark.parametrize("cmd", ["iptables -t nat -F POSTROUTING", "ip addr del 192.168.50.1/24 dev lan0",
                                 "ip addr add 10.1.0.1/16 dev lan0", "ip link set lan0 down", "conntrack -F",
                                 "iptables -A FORWARD -m comment --comment 'two words' -j ACCEPT"])
def test_exec_steps_parse(cmd: str) -> None:
    sc = parse_scenario(_exec(cmd), "x.toml")
    step = sc.steps[0]
    assert step.host == ROUTER and step.exec is not None and step.exec[0] in ("iptables", "ip", "conntrack")
    if "comment" in cmd:
        assert "two words" in step.exec


@pytest.mark.parametrize("cmd", ["rm -rf /", "ip route add default via 10.0.0.1", "ip addr del 10.0.0.1 dev x",
                                 "ip link set lan0 mtu 100", "ip addr add 192.0.2.1/24 dev lan0", ""])
def test_exec_steps_refused(cmd: str) -> None:
    with pytest.raises(ScenarioError, match=r"x\.toml: step\[0\]\.exec"):
        parse_scenario(_exec(cmd), "x.toml")


def test_exec_step_takes_no_host_or_packet_keys() -> None:
    with pytest.raises(ScenarioError, match="exec step"):
        parse_scenario(BASE + '[[step]]\nexec = "conntrack -F"\nhost = "cli"\n', "x.toml")
    with pytest.raises(ScenarioError, match="exec step"):
        parse_scenario(BASE + '[[step]]\nexec = "conntrack -F"\ndst = "10.0.0.1"\n', "x.toml")


def test_known_failure_field() -> None:
    assert parse_scenario(BASE, "x.toml").known_failure is None
    sc = parse_scenario('known_failure = "natbox bug #1"\n' + BASE, "x.toml")
    assert sc.known_failure == "natbox bug #1"
    with pytest.raises(ScenarioError, match="known_failure"):
        parse_scenario("known_failure = 3\n" + BASE, "x.toml")


def _engine() -> Engine:
    host, _ = _docker_host()
    rs = Ruleset()
    rs.restore(parse_restore(DOCKER_RULES, file="docker"))
    return Engine(host, ruleset=rs, seed=1)


def _rules(engine: Engine) -> list[str]:
    return [str(r) for t in engine.rules.saved_tables() for c in t.chains.values() for r in c.rules]


def test_apply_exec_mirrors_router_commands() -> None:
    engine = _engine()
    n = len(_rules(engine))
    assert apply_exec(engine, ["iptables", "-I", "FORWARD", "-p", "udp", "--dport", "53", "-j", "DROP"], 1.0) is None
    assert len(_rules(engine)) == n + 1
    assert apply_exec(engine, ["iptables", "-D", "FORWARD", "1"], 1.1) is None
    assert len(_rules(engine)) == n
    assert apply_exec(engine, ["iptables", "-t", "nat", "-F"], 1.2) is None
    assert not engine.rules.tables["nat"].chains["POSTROUTING"].rules
    eth0 = engine.host.interface("eth0")
    addr = eth0.addresses[0].addr
    assert apply_exec(engine, ["ip", "addr", "del", "45.77.200.180/23", "dev", "eth0"], 1.3) is None
    assert all(a.addr != addr for a in eth0.addresses)
    assert apply_exec(engine, ["ip", "addr", "add", "198.51.100.7/24", "dev", "eth0"], 1.4) is None
    assert any(a.prefixlen == 24 for a in eth0.addresses)
    assert apply_exec(engine, ["ip", "link", "set", "eth0", "down"], 1.5) is None
    assert engine.host.interface("eth0").up is False
    assert apply_exec(engine, ["ip", "link", "set", "eth0", "up"], 1.6) is None
    assert engine.host.interface("eth0").up is True
    assert apply_exec(engine, ["conntrack", "-F"], 1.7) is None and len(engine.table) == 0


def test_apply_exec_reports_failures() -> None:
    engine = _engine()
    why = apply_exec(engine, ["iptables", "-A", "NOSUCH", "-j", "ACCEPT"], 1.0)
    assert why is not None and "RulesError" in why
    assert apply_exec(engine, ["ip", "link", "set", "nosuch0", "down"], 1.0) is not None
    assert apply_exec(engine, ["ping", "x"], 1.0) == "not a command natbox can mirror"


def test_portmap_records_identities() -> None:
    # masquerade-to-ports on Linux 6.18: the kernel chose 30000, 30004, 30005 for three flows where natbox
    # chose 30000, 30002, 30004; the server's port unreachables carried the kernel's 30000 and 30004 back in
    pm = PortMap({30000: 0.0004, 30004: 0.0503, 30005: 0.1003})
    pm.identity(30000, 0.0004)  # equal, but the inputs already carried 30000 then: not a random choice
    assert pm.k2n == {}
    assert pm.accept(30004, 30002, 0.0502)
    assert pm.accept(30005, 30004, 0.1002)  # natbox's 30004 was the kernel's choice for another flow: fine
    assert not pm.accept(30005, 30003, 0.2)  # but a kernel value maps one way only
    pm.identity(31000, 0.3)
    assert pm.k2n[31000] == 31000 and not pm.accept(31001, 31000, 0.4)


def _result(status: str, diffs: int = 0) -> ScenarioResult:
    d = [Difference("frame", "wan0 frame #1", "k", "n", "ip.id: 1 | 2")] * diffs
    return ScenarioResult(f"s-{status}", f"scenarios/s-{status}.toml", "desc | with bar", status, 1.25, 10, 2, d,
                          reason="a known natbox bug" if status in ("xfail", "xpass") else "")


def test_report_files(tmp_path: Path) -> None:
    results = [_result("pass"), _result("xfail", 25), _result("fail", 1), _result("xpass")]
    jpath, mpath = write_report(results, tmp_path / "difftest-report.md")
    assert jpath == tmp_path / "difftest-report.json" and mpath == tmp_path / "difftest-report.md"
    doc = json.loads(jpath.read_text())
    assert doc["summary"] | {"kernel": "-"} == {"passed": 1, "failed": 1, "xfail": 1, "xpass": 1, "scenarios": 4,
                                                "seconds": 5.0, "kernel": "-"}
    xfail = doc["scenarios"][1]
    assert xfail["status"] == "xfail" and xfail["differences_total"] == 25 and len(xfail["differences"]) == 20
    assert xfail["reason"] == "a known natbox bug"
    md = mpath.read_text()
    assert "**1 passed, 1 failed, 1 known failures (xfail), 1 xpass**" in md
    assert "| s-pass | pass | 1.2 | 10 | 2 | desc \\| with bar |" in md
    assert "- **s-xfail** (xfail): a known natbox bug" in md and "... 5 more" in md
    assert write_report(results, tmp_path / "r.json") == (tmp_path / "r.json", tmp_path / "r.md")


def test_markdown_without_differences() -> None:
    md = render_markdown([_result("pass")])
    assert "## Differences" not in md and "## Known failures" not in md


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(scenarios())
def test_random_scenarios_are_valid(text: str) -> None:
    sc = parse_scenario(text, "<random>")
    assert 1 <= len(sc.steps) <= MAX_PACKETS
    assert "-A POSTROUTING -o wan0 -j MASQUERADE\nCOMMIT" in sc.rules  # a conntrack user, always
    assert all("-i lan0" not in ln for ln in sc.rules.splitlines() if "DNAT" in ln)
    Ruleset().restore(parse_restore(sc.rules + "\n", file="<random>"))  # natbox loads every ruleset


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(rulesets())
def test_rulesets_use_implemented_extensions(rules: str) -> None:
    Ruleset().restore(parse_restore(rules + "\n", file="<random>"))


def test_explore_shrinks_and_writes_a_regression(tmp_path: Path) -> None:
    seen: list[str] = []

    def runner(text: str) -> list[Difference]:  # stand-in for the kernel: "differs" on any REJECT rule
        seen.append(text)
        return [Difference("frame", "x", "k", "n")] if "-j REJECT" in text else []

    found = explore(60, seed=3, out_dir=tmp_path, runner=runner)
    assert found is not None and found.path is not None and found.path.parent == tmp_path
    sc = parse_scenario(found.path.read_text(), str(found.path))
    assert sc.name == found.path.stem and sc.name.startswith("regression-")
    assert sc.rules.count("-j REJECT") == 1 and len(sc.steps) == 1  # shrunk to one rule and one packet
    assert len(found.text) == min(len(t) for t in seen if "-j REJECT" in t)


def test_explore_returns_none_when_all_agree(tmp_path: Path) -> None:
    calls: list[str] = []

    def runner(text: str) -> list[Difference]:
        calls.append(text)
        return []

    assert explore(5, runner=runner, out_dir=tmp_path) is None
    assert len(calls) == 5 and not list(tmp_path.iterdir())


def test_report_with_random_summary(tmp_path: Path) -> None:
    from natbox.difftest.report import RandomSummary

    rnd = RandomSummary(cases=120, examples=100, seed=0, seconds=91.04, differing=1,
                        regression="scenarios/regressions/regression-x.toml", reproduced=2)
    jpath, mpath = write_report([_result("pass")], tmp_path / "r.md", rnd)
    assert json.loads(jpath.read_text())["random"] == {
        "cases": 120, "examples": 100, "seed": 0, "seconds": 91.0, "differing": 1,
        "regression": "scenarios/regressions/regression-x.toml", "reproduced": 2}
    assert "100 examples, 120 runs with shrinking, **1 differing**, 91.0 s" in mpath.read_text()


@pytest.mark.parametrize("argv", [["--random"], ["--report"], ["--random", "x"], ["--seed", "y", "--random", "1"]])
def test_cli_refuses_bad_options(argv: list[str]) -> None:
    from natbox.difftest.cli import cli_difftest

    assert cli_difftest(argv) == 2


def test_host_rules_field() -> None:
    addr = 'addresses = ["192.168.50.2/24"]\n'
    text = BASE.replace(addr, addr + 'rules = "*filter\\nCOMMIT\\n"\n')
    assert parse_scenario(text, "x.toml").hosts[0].rules == "*filter\nCOMMIT\n"
    assert parse_scenario(BASE, "x.toml").hosts[0].rules == ""
