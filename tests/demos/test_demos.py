"""The built-in experiments produce what Linux produces for the same setup (issue: replay and explain).

Each test runs a demo and asserts the packets on each interface (as tcpdump text), the conntrack
lines and the nat counters, against the facts in netfilter-semantics.md and the two write-ups.
"""

from __future__ import annotations

import io
import re

import pytest

from natbox.cli.demo import run_demo
from natbox.cli.main import main
from natbox.conntrack.format import format_conntrack
from natbox.render.tcpdump import TcpdumpPrinter
from natbox.rules.listing import list_table
from natbox.sim.lab import Lab


def _run(name: str, *, explain: bool = False) -> tuple[Lab, str]:
    out = io.StringIO()
    lab = run_demo(name, out=out, explain=explain)
    return lab, out.getvalue()


def _tcpdump(lab: Lab, iface: str) -> list[str]:
    p = TcpdumpPrinter()
    # drop the timestamp column: the rest is what tcpdump -nne prints
    return [p.line(c.frame, ts=c.time).split(" ", 1)[1] for c in lab.on(iface)]


def _conntrack(lab: Lab) -> list[str]:
    return sorted(format_conntrack(c, lab.now) for c in lab.engine.table.live(lab.now))


def test_docker_ping_is_masqueraded_on_eth0_and_not_on_docker0() -> None:
    """Write-up 004 §1.1.1: the same echo on docker0 (172.17.0.2) and on eth0 (45.77.200.180), id 28."""
    lab, _ = _run("docker")
    docker0, eth0 = _tcpdump(lab, "docker0"), _tcpdump(lab, "eth0")
    assert docker0[0] == ("02:42:ac:11:00:02 > 02:42:d5:35:3a:3c, ethertype IPv4 (0x0800), length 98: "
                          "172.17.0.2 > 8.8.8.8: ICMP echo request, id 28, seq 265, length 64")
    assert docker0[1] == ("02:42:d5:35:3a:3c > 02:42:ac:11:00:02, ethertype IPv4 (0x0800), length 98: "
                          "8.8.8.8 > 172.17.0.2: ICMP echo reply, id 28, seq 265, length 64")
    assert eth0[0] == ("56:00:04:7c:7c:23 > 06:7c:16:88:fe:87, ethertype IPv4 (0x0800), length 98: "
                       "45.77.200.180 > 8.8.8.8: ICMP echo request, id 28, seq 265, length 64")
    assert eth0[1] == ("06:7c:16:88:fe:87 > 56:00:04:7c:7c:23, ethertype IPv4 (0x0800), length 98: "
                       "8.8.8.8 > 45.77.200.180: ICMP echo reply, id 28, seq 265, length 64")


def test_docker_published_port_is_dnatted_to_the_container() -> None:
    """Write-up 004 §1.2.1: port 10000 on eth0 is port 8000 of 172.17.0.2 on docker0, both ways."""
    lab, _ = _run("docker")
    eth0 = [line for line in _tcpdump(lab, "eth0") if "Flags" in line]
    docker0 = [line for line in _tcpdump(lab, "docker0") if "Flags" in line]
    assert len(eth0) == len(docker0) == 10
    assert "114.246.99.100.60677 > 45.77.200.180.10000: Flags [S]" in eth0[0]
    assert "114.246.99.100.60677 > 172.17.0.2.8000: Flags [S]" in docker0[0]
    assert "172.17.0.2.8000 > 114.246.99.100.60677: Flags [S.]" in docker0[1]
    assert "45.77.200.180.10000 > 114.246.99.100.60677: Flags [S.]" in eth0[1]
    # the same segments (sequence numbers, lengths) cross both interfaces, only addresses and ports differ
    strip = re.compile(r"^.*?: (?:[\d.]+) > (?:[\d.]+): ")
    assert [strip.sub("", e) for e in eth0] == [strip.sub("", d) for d in docker0]


def test_docker_conntrack_and_nat_counters() -> None:
    lab, text = _run("docker")
    lines = _conntrack(lab)
    assert lines[0].startswith("icmp     1 ")
    assert "src=172.17.0.2 dst=8.8.8.8 type=8 code=0 id=28 src=8.8.8.8 dst=45.77.200.180 type=0 code=0 id=28 " \
        "mark=0 use=1" in lines[0]
    assert lines[1].startswith("tcp      6 ") and " TIME_WAIT src=114.246.99.100 dst=45.77.200.180 sport=60677 " \
        "dport=10000 src=172.17.0.2 dst=114.246.99.100 sport=8000 dport=60677 [ASSURED] mark=0 use=1" in lines[1]
    nat = list_table(lab.engine.rules.tables["nat"], numeric=True, verbose=True)
    # nat rules count connections (first packets), not packets (§4.1)
    assert "    1    60 DNAT       6    --  !docker0 *       0.0.0.0/0            0.0.0.0/0            " \
        "tcp dpt:10000 to:172.17.0.2:8000" in nat
    assert "    1    84 MASQUERADE  0    --  *      !docker0  172.17.0.0/16        0.0.0.0/0" in nat
    assert "Chain PREROUTING (policy ACCEPT 1 packets, 84 bytes)" in nat
    assert "# conntrack -L" in text and "2 flow entries have been shown." in text


def test_qemu_replies_find_their_vm_through_unique_reply_tuples() -> None:
    """Write-up 000: both VMs behind 192.168.0.108; the second VM's ICMP id, UDP and TCP port are remapped."""
    lab, _ = _run("qemu")
    lines = _conntrack(lab)
    replies = [re.findall(r"(?:id|dport)=(\d+)", line)[-1] for line in lines]
    by_vm = {
        "vm1": [r for r, line in zip(replies, lines, strict=True) if "src=192.168.129.110" in line],
        "vm2": [r for r, line in zip(replies, lines, strict=True) if "src=192.168.130.110" in line],
    }
    assert by_vm["vm1"] == ["16962", "45000", "40000"]  # icmp id, tcp port, udp port kept (sorted lines)
    assert all(v not in by_vm["vm1"] for v in by_vm["vm2"])  # vm2's are all remapped
    assert all(int(p) >= 1024 for p in by_vm["vm2"][1:])  # ports stay in their class
    # every reply reached the VM that asked, with its own id/port restored
    for vm in ("vm1", "vm2"):
        got = lab.hosts[vm].received
        assert [d[9] for _t, d in got].count(1) == 1  # one echo reply
        assert any(d[9] == 17 and d[-4:] == b"pong" for _t, d in got)
        assert any(d[9] == 6 and d.endswith(b"hi") for _t, d in got)
    eth0 = _tcpdump(lab, "eth0")
    assert all("192.168.129." not in line and "192.168.130." not in line for line in eth0)


def test_hairpin_without_snat_fails_and_the_fix_applies_to_new_connections_only() -> None:
    lab, _ = _run("hairpin")
    first, second = _conntrack(lab)
    assert " SYN_SENT src=192.168.50.2 dst=198.51.100.1 sport=41000 dport=8080 [UNREPLIED] src=192.168.50.10 " \
        "dst=192.168.50.2 sport=80 dport=41000 " in first
    assert " TIME_WAIT src=192.168.50.2 dst=198.51.100.1 sport=41001 dport=8080 src=192.168.50.10 " \
        "dst=192.168.50.1 sport=80 dport=41001 [ASSURED]" in second
    assert any(d.endswith(b"hairpin") for _t, d in lab.hosts["client"].received)


def test_port_clash_keeps_classes_and_exhaustion_fails_insert() -> None:
    lab, text = _run("port-clash")
    lines = _conntrack(lab)
    tcp = [line for line in lines if line.startswith("tcp")]
    second_45000 = next(line for line in tcp if "src=192.168.50.3" in line and "sport=45000" in line)
    second_100 = next(line for line in tcp if "src=192.168.50.3" in line and "sport=100 " in line)
    port_a = int(re.findall(r"dport=(\d+)", second_45000)[-1])
    port_b = int(re.findall(r"dport=(\d+)", second_100)[-1])
    assert port_a != 45000 and port_a >= 1024
    assert port_b != 100 and 1 <= port_b <= 511
    udp = sorted(int(re.findall(r"dport=(\d+)", line)[-1]) for line in lines if line.startswith("udp"))
    assert udp == [30000, 30001]
    assert lab.engine.table.stats.insert_failed == 1
    assert "nat_insert_failed" in text


def test_basic_demo_translates_the_port_unreachable_back() -> None:
    lab, _ = _run("basic")
    eth0 = _tcpdump(lab, "eth0")
    assert any("198.51.100.2 > 192.168.50.2: ICMP 198.51.100.2 udp port 5999 unreachable" in line for line in eth0)


def test_explain_names_hooks_rules_and_bindings() -> None:
    _lab, text = _run("docker", explain=True)
    assert "nat PREROUTING #1 -m addrtype --dst-type LOCAL: no match (8.8.8.8 is UNICAST)" in text
    assert "nf_confirm: ct #1 confirmed" in text
    assert "DNAT: ct #2" in text and "172.17.0.2:8000" in text
    assert "routing: forward via docker0" in text


@pytest.mark.parametrize("name", ["docker", "qemu", "basic", "hairpin", "port-clash"])
def test_demo_command_runs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", name]) == 0
    assert "# conntrack -L" in capsys.readouterr().out


def test_unknown_demo_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "nope"]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
