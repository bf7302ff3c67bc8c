"""`natbox snapshot` against a real network namespace: configure it with ip/sysctl/iptables, snapshot, load.

Skipped unless root with `ip netns`. The namespaces are named nbx-snap-<pid> and always deleted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from natbox.adapters.snapshot import cli_snapshot, load_host, take_snapshot
from natbox.engine.host import Host
from natbox.testing.live import require_programs

pytestmark = pytest.mark.netns

NS = f"nbx-snap-{os.getpid()}"
PEER = f"nbx-snapp-{os.getpid()}"
RULES = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i sv0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.77.1.2:80
-A POSTROUTING -o sv0 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i sbr0 -j ACCEPT
COMMIT
"""


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=20).stdout


def _in(*argv: str) -> str:
    return _sh("ip", "netns", "exec", NS, *argv)


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("iptables-restore") is None:
        pytest.skip("needs root, ip and iptables")
    if subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10, check=False).returncode != 0:
        pytest.skip("ip netns unavailable")
    try:
        _sh("ip", "netns", "add", NS)
        _sh("ip", "netns", "add", PEER)
        yield NS
    finally:
        for ns in (NS, PEER):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20, check=False)


def _configure() -> None:
    _in("ip", "link", "add", "sv0", "address", "02:00:5e:10:00:01", "mtu", "1400", "type", "veth",
        "peer", "name", "sv1", "address", "02:00:5e:10:00:02")
    _in("ip", "link", "set", "sv1", "netns", PEER)
    _in("ip", "link", "add", "sbr0", "address", "02:00:5e:10:00:03", "type", "bridge")
    _in("ip", "link", "set", "lo", "up")
    _in("ip", "link", "set", "sv0", "up")
    _in("ip", "link", "set", "sbr0", "up")
    _in("ip", "addr", "add", "198.51.100.10/24", "dev", "sv0")
    _in("ip", "addr", "add", "198.51.100.11/24", "dev", "sv0")  # secondary: same subnet
    _in("ip", "addr", "add", "10.77.1.1/24", "dev", "sbr0")
    _in("ip", "addr", "add", "172.16.5.1/16", "dev", "sbr0")  # another primary on the same device
    _in("ip", "route", "add", "default", "via", "198.51.100.1", "dev", "sv0")
    _in("ip", "route", "add", "10.200.0.0/16", "via", "10.77.1.254", "metric", "50")
    _in("ip", "route", "add", "blackhole", "10.66.0.0/16")
    _in("ip", "neigh", "add", "198.51.100.1", "lladdr", "02:00:5e:10:00:fe", "dev", "sv0", "nud", "permanent")
    _in("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    _in("sysctl", "-q", "-w", "net.ipv4.conf.sbr0.route_localnet=1")
    _in("sysctl", "-q", "-w", "net.ipv4.conf.sv0.forwarding=0")
    _in("sysctl", "-q", "-w", "net.netfilter.nf_conntrack_udp_timeout=45")
    subprocess.run(["ip", "netns", "exec", NS, "iptables-restore"], input=RULES, text=True, check=True,
                   capture_output=True, timeout=20)


def _check(host: Host) -> None:
    assert set(host.interfaces) == {"lo", "sv0", "sbr0"}
    sv0, br, lo = host.interfaces["sv0"], host.interfaces["sbr0"], host.interfaces["lo"]
    assert sv0.mac == bytes.fromhex("02005e100001") and sv0.mtu == 1400 and sv0.kind == "veth" and sv0.up
    assert br.mac == bytes.fromhex("02005e100003") and br.kind == "bridge"
    assert lo.kind == "loopback" and [str(a) for a in lo.addresses] == ["127.0.0.1/8"]
    assert [(str(a), a.secondary) for a in sv0.addresses] == [("198.51.100.10/24", False),
                                                               ("198.51.100.11/24", True)]
    assert [(str(a), a.secondary) for a in br.addresses] == [("10.77.1.1/24", False), ("172.16.5.1/16", False)]
    main = sorted(str(r) for r in host.routes if r.table == "main")
    assert main == sorted(["unicast default via 198.51.100.1 dev sv0 table main",
                           "unicast 10.200.0.0/16 via 10.77.1.254 dev sbr0 table main",
                           "blackhole 10.66.0.0/16 table main"])
    metric = {str(r): r.metric for r in host.routes}
    assert metric["unicast 10.200.0.0/16 via 10.77.1.254 dev sbr0 table main"] == 50
    assert not any(r.proto == "kernel" for r in host.routes)  # derived by Fib, not copied
    assert [(n.dev, n.addr, n.mac) for n in host.neighbours] == [("sv0", 0xC6336401, bytes.fromhex("02005e1000fe"))]
    assert host.ip_forward is True
    assert br.route_localnet is True and sv0.route_localnet is False
    assert sv0.forwarding is False and br.forwarding is True
    assert host.conntrack.udp_timeout == 45
    assert host.conntrack.tcp_timeout_established == 432000
    rules = host.rules_text
    assert "-A PREROUTING -i sv0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.77.1.2:80" in rules
    assert "[0:0] -A POSTROUTING -o sv0 -j MASQUERADE" in rules  # iptables-save -c form
    assert ":FORWARD DROP [0:0]" in rules


def test_snapshot_round_trip(netns: str, tmp_path: Path) -> None:
    _configure()
    take_snapshot(tmp_path / "snap", netns=netns)
    for name in ("link.json", "addr.json", "route.json", "neigh.json", "sysctl.txt", "iptables.rules"):
        assert (tmp_path / "snap" / name).is_file(), name
    _check(load_host(tmp_path / "snap").host)


def test_cli_snapshot(netns: str, tmp_path: Path) -> None:
    _configure()
    assert cli_snapshot(["--netns", netns, str(tmp_path / "s")]) == 0
    hf = load_host(tmp_path / "s")
    _check(hf.host)
    assert hf.host.name == netns


def test_cli_snapshot_bad_netns(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip")
    assert cli_snapshot(["--netns", f"nbx-snap-absent-{os.getpid()}", str(tmp_path / "s")]) == 1
    assert cli_snapshot([]) == 2


def test_snapshot_records_nfacct_objects_and_br_netfilter(netns: str, tmp_path: Path) -> None:
    """nfacct.list is `nfacct list` (quotas and counters), br_netfilter.txt the module's sysctl as this kernel
    has it (empty without br_netfilter: then bridged frames skip the IPv4 hooks)."""
    require_programs("nfacct", "sysctl")
    _in("nfacct", "add", "web")
    _in("nfacct", "add", "cap", "byte", "1000")
    take_snapshot(tmp_path / "snap", netns=netns)
    listed = (tmp_path / "snap" / "nfacct.list").read_text()
    assert listed == _in("nfacct", "list") and "quota = 00000000000000001000, mode = byte" in listed
    hf = load_host(tmp_path / "snap")
    assert hf.nfacct_text == listed
    loaded = Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists()
    recorded = (tmp_path / "snap" / "br_netfilter.txt").read_text()
    assert recorded.startswith("net.bridge.bridge-nf-call-iptables = ") if loaded else recorded == ""
    assert hf.host.bridge_nf_call_iptables is (loaded and recorded.strip().endswith("1"))
