"""The docker28 and kube-proxy demos (issue #14): today's rulesets do to packets what the kernel does with them
(the same rulesets agree with Linux in scenarios/docker28-published-port.toml and kube-proxy-services.toml)."""

from __future__ import annotations

import functools
import io
from collections import Counter

from natbox.cli.demo import run_demo
from natbox.conntrack.format import format_conntrack
from natbox.demos.modern import kube_proxy_host, scenario_rules
from natbox.demos.scenarios import DEMOS
from natbox.engine.engine import Engine
from natbox.render.tcpdump import TcpdumpPrinter
from natbox.rules.evaluate import Ruleset
from natbox.rules.listing import list_table
from natbox.rules.parser import parse_restore
from natbox.sim.lab import Lab


def _tcpdump(lab: Lab, iface: str) -> list[str]:
    p = TcpdumpPrinter()
    return [p.line(c.frame, ts=c.time).split(" ", 1)[1] for c in lab.on(iface)]


def test_the_demos_share_the_difftested_rulesets() -> None:
    assert DEMOS["docker28"].build()[1] == scenario_rules("docker28-published-port")
    assert DEMOS["kube-proxy"].build()[1] == scenario_rules("kube-proxy-services")
    assert scenario_rules("kube-proxy-services").startswith("*filter\n")


def test_docker28_published_port_isolation_and_direct_access() -> None:
    out = io.StringIO()
    lab = run_demo("docker28", out=out)
    text = out.getvalue()
    eth0, bridge1 = _tcpdump(lab, "eth0"), _tcpdump(lab, "bridge1")
    assert any("10.99.0.7.50000 > 198.51.100.10.8080: Flags [S]" in ln for ln in eth0)
    assert any("10.99.0.7.50000 > 172.18.0.2.80: Flags [S]" in ln for ln in bridge1)  # DNAT, no SNAT
    assert any("198.51.100.10 > 10.99.0.1: ICMP echo request" in ln for ln in eth0)  # docker0 masqueraded
    assert not any("172.17.0.2" in ln for ln in bridge1)  # isolation: nothing from docker0 reaches bridge1
    drops = [(d.reason, d.where) for o in lab.outputs for d in o.dropped]
    assert drops == [("rule_drop", "FORWARD/filter"), ("rule_drop", "PREROUTING/raw")]
    filt = list_table(lab.engine.rules.tables["filter"], numeric=True, verbose=True)
    assert ("    1    37 DROP       0    --  *      bridge1  0.0.0.0/0            0.0.0.0/0           "
            in filt)  # DOCKER-ISOLATION-STAGE-2's rule 1 took ctr0's datagram
    assert "    1    60 ACCEPT     6    --  !bridge1 bridge1  0.0.0.0/0            172.18.0.2           tcp dpt:80" \
        in filt
    assert "# iptables -t raw -nvL" in text and "# iptables -t filter -nvL" in text
    conns = sorted(format_conntrack(c, lab.now) for c in lab.engine.table.live(lab.now))
    assert len(conns) == 2
    assert "src=10.99.0.7 dst=198.51.100.10 sport=50000 dport=8080 src=172.18.0.2 dst=10.99.0.7 sport=80 " \
        "dport=50000 [ASSURED]" in conns[1]


def test_kube_proxy_marks_masquerades_and_spreads_connections() -> None:
    out = io.StringIO()
    lab = run_demo("kube-proxy", out=out)
    conns = [format_conntrack(c, lab.now) for c in lab.engine.table.live(lab.now)]
    assert len(conns) == 6
    for line in conns:  # every connection was DNATed to a pod and MASQUERADEd to cni0's address
        assert " dst=10.244.0.1 " in line and "[ASSURED]" in line
        pods = (3, 4) if "dport=30080 " in line else (2, 3, 4)  # the NodePort service has two endpoints
        assert any(f" src=10.244.0.{i} dst=10.244.0.1 sport=8080 " in line for i in pods), line
    nat = list_table(lab.engine.rules.tables["nat"], numeric=True, verbose=True)
    assert "    6   360 MARK       0    --  *      *       0.0.0.0/0            0.0.0.0/0            MARK or 0x4000" \
        in nat
    assert "random-fully" in nat


def test_kube_proxy_statistic_chain_is_uniform_with_the_seeded_rng() -> None:
    """1/3, 1/2, then the rest: each of the three pods gets about a third of 900 new connections."""
    host, rules = kube_proxy_host()
    ruleset = Ruleset()
    ruleset.restore(parse_restore(rules, file="kube-proxy"))
    lab = Lab(host, Engine(host, ruleset=ruleset, seed=7), seed=7)
    pods = [lab.add_host(f"pod{i}", "cni0", f"10.244.0.{i}/24", gateway="10.244.0.1") for i in (2, 3, 4)]
    for pod in pods:
        pod.listen_tcp[8080] = b"ok"
    client = lab.add_host("client", "eth0", "198.51.100.1/24", extra_addrs=("10.99.0.7",))
    for i in range(900):
        lab.at(0.01 * i, functools.partial(client.tcp_connect, "10.96.0.10", 80, sport=20000 + i, src="10.99.0.7"))
    lab.run(until=30.0)
    chosen = Counter(c.reply.src for c in lab.engine.table.live(lab.now))
    assert sum(chosen.values()) == 900
    assert all(240 <= n <= 360 for n in chosen.values()), chosen
    assert len(chosen) == 3
