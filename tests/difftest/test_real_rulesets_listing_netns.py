"""Today's rulesets as the scenarios hold them (Docker 28/29, kube-proxy, libvirt >= 5.1, firewalld, ufw): natbox's
iptables-save, -S and -L listings are the kernel's and iptables 1.8.9's, byte for byte, with the ipsets restored
first where the rules name them (issue #14, "Done means"). Needs root, `ip netns`, iptables (and ipset)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from natbox.difftest.scenario import parse_scenario
from natbox.engine.host import Host
from natbox.engine.hostfile import HostFile, host_ipsets
from natbox.ipset.scope import using_sets
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv, parse_restore
from natbox.rules.printer import save_tables
from natbox.testing.live import require_programs

pytestmark = pytest.mark.netns

CORPUS = Path(__file__).resolve().parents[2] / "scenarios"
SCENARIOS = ["docker28-published-port", "docker28-noproxy-published-port", "docker28-ipset-published-port",
             "docker29-internal-network", "kube-proxy-services", "libvirt5-default-network",
             "firewalld-iptables-backend", "ufw-limit-ssh"]
FLAGS = ["-S", "-nL", "-nvL", "-nvxL --line-numbers"]  # numeric: -L without -n asks the name databases
NS = f"nbx-realrs-{os.getpid()}"


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    require_programs("ip", "iptables", "iptables-restore", "iptables-save", "ipset")
    if subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10, check=False).returncode != 0:
        pytest.skip("ip netns unavailable")
    yield NS
    subprocess.run(["ip", "netns", "del", NS], capture_output=True, timeout=20, check=False)


def _in(*argv: str, stdin: str | None = None) -> str:
    return subprocess.run(["ip", "netns", "exec", NS, *argv], input=stdin, capture_output=True, text=True,
                          check=True, timeout=30).stdout


def _tables(rules: str) -> list[str]:
    return [line[1:] for line in rules.splitlines() if line.startswith("*")]


@pytest.mark.parametrize("name", SCENARIOS)
def test_listings_are_the_kernels(netns: str, name: str) -> None:
    path = CORPUS / f"{name}.toml"
    sc = parse_scenario(path.read_text(), str(path))
    subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=20, check=False)
    subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True, timeout=20)
    if sc.ipsets.strip():
        _in("ipset", "restore", stdin=sc.ipsets)
    _in("iptables-restore", stdin=sc.rules)
    host = Host(name="r")
    host.rules_text = sc.rules
    sets = host_ipsets(HostFile(host, ipsets_text=sc.ipsets, ipsets_origin=name))
    rs = Ruleset()
    with using_sets(sets):
        rs.restore(parse_restore(sc.rules, file=name))

    def strip(text: str) -> str:
        return "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))

    assert strip(save_tables(rs.saved_tables(), "D")) == strip(_in("iptables-save"))
    for table in _tables(sc.rules):
        for flags in FLAGS:
            want = _in("iptables", "-t", table, *flags.split())
            assert rs.execute(parse_argv(["-t", table, *flags.split()])) == want, (table, flags)
