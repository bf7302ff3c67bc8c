"""Scenario files: the corpus parses, and bad files are refused with the file and key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from natbox.difftest.cli import cli_difftest, load_scenarios
from natbox.difftest.scenario import ScenarioError, parse_scenario

CORPUS = Path(__file__).resolve().parents[2] / "scenarios"
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
gateway = "192.168.50.1"
"""


def test_corpus_parses() -> None:
    scenarios = load_scenarios([str(CORPUS)])
    assert len(scenarios) >= 10
    names = {s.name for s in scenarios}
    assert {"masquerade-ping", "fragments-reverse", "reject-forward", "ip-forward-off"} <= names
    for sc in scenarios:
        assert sc.description and sc.steps
        assert all(h.attach in {i.name for i in sc.interfaces} for h in sc.hosts)


def test_minimal_scenario() -> None:
    sc = parse_scenario(BASE + '[[step]]\nat = 0\nhost = "cli"\nsend = "udp"\ndst = "198.51.100.9"\ndport = 9\n',
                        "x/min.toml")
    assert sc.name == "min" and sc.steps[0].args == {"dst": "198.51.100.9", "dport": 9} and sc.settle == 0.3


@pytest.mark.parametrize(("extra", "message"), [
    ('[[step]]\nhost = "cli"\nsend = "udp"\ndst = "203.0.113.5"\n', "step[0].dst: 203.0.113.5 is outside"),
    ('[[step]]\nhost = "cli"\nsend = "udp"\ndst = "192.0.2.1"\n', "outside"),
    ('[[step]]\nhost = "nobody"\nsend = "udp"\ndst = "10.0.0.1"\n', "step[0].host: no host 'nobody'"),
    ('[[step]]\nhost = "cli"\nsend = "sctp"\ndst = "10.0.0.1"\n', "step[0].send: 'sctp' not one of"),
    ('[[step]]\nhost = "cli"\nsend = "udp"\nrun = "ping"\ndst = "10.0.0.1"\n', "exactly one of send or run"),
    ('[[step]]\nhost = "cli"\nsend = "udp"\ndst = "10.0.0.1"\ncolour = 1\n', "step[0].colour: unknown key"),
    ('[[step]]\nhost = "cli"\nsend = "udp"\ndst = "10.0.0.1"\nfragment = 100\n', "multiple of 8"),
    ('[[step]]\nhost = "cli"\nsend = "udp"\ndst = "10.0.0.1"\nsport = "x"\n', "sport: must be int"),
    ('[[step]]\nat = 1.0\nhost = "cli"\nrun = "sleep"\n[[step]]\nat = 0.5\nhost = "cli"\nrun = "sleep"\n',
     "step[1].at"),
    ('[[step]]\nhost = "cli"\nrun = "ping"\n', "ping needs dst"),
    ("bogus = 1\n", "host[0]: unknown keys ['bogus']"),
])
def test_errors_name_the_key(extra: str, message: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(BASE + extra, "bad.toml")
    assert str(exc.value).startswith("bad.toml:") and message in str(exc.value)


def test_topology_errors() -> None:
    with pytest.raises(ScenarioError, match=r"t.toml: unknown keys \['bogus'\]"):
        parse_scenario("bogus = 1\n" + BASE, "t.toml")
    with pytest.raises(ScenarioError, match=r"router.interface\[0\]: unknown keys \['speed'\]"):
        parse_scenario(BASE.replace('name = "lan0"', 'name = "lan0"\nspeed = 1'), "t.toml")
    with pytest.raises(ScenarioError, match="no router interface 'wan0'"):
        parse_scenario(BASE.replace('attach = "lan0"', 'attach = "wan0"'), "t.toml")
    with pytest.raises(ScenarioError, match="needs a prefix length"):
        parse_scenario(BASE.replace('"192.168.50.2/24"', '"192.168.50.2"'), "t.toml")
    with pytest.raises(ScenarioError, match="at least one"):
        parse_scenario("[router]\n", "t.toml")
    with pytest.raises(ScenarioError, match="TOML syntax error"):
        parse_scenario("[router\n", "t.toml")


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_difftest([]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[router\n")
    assert cli_difftest([str(bad)]) == 2
    assert "TOML syntax error" in capsys.readouterr().err
    assert cli_difftest([str(tmp_path / "absent.toml")]) == 2


def test_cli_quiet_prints_only_what_did_not_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`natbox difftest -q`: no `ok` lines, the failures and the closing count still printed (the kernel
    side is replaced here: the option is about what is printed)."""
    import natbox.difftest.cli as dcli
    from natbox.difftest.report import ScenarioResult

    for name in ("a", "b"):
        (tmp_path / f"{name}.toml").write_text(BASE)
    verdicts = iter(["pass", "fail"])

    def judge(sc: object, keep: str | None = None, *, live: bool = False, offload: bool = False
              ) -> tuple[ScenarioResult, None]:
        status = next(verdicts)
        return ScenarioResult(status, "f", "", status, 0.1, problems=["boom"] if status == "fail" else []), None

    monkeypatch.setattr(dcli, "kernel_available", lambda: None)
    monkeypatch.setattr(dcli, "cleanup_stale", lambda: None)
    monkeypatch.setattr(dcli, "run_and_judge", judge)
    assert cli_difftest(["-q", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert not any(line.startswith("ok") for line in out.splitlines())
    assert "FAIL fail" in out and out.endswith("1 passed, 1 failed\n")
