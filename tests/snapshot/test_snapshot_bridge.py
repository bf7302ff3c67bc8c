"""Bridge ports and br_netfilter's sysctl in snapshots: `ip -d -j link` names a port's bridge as `master`."""

from __future__ import annotations

import json

import pytest

from natbox.engine.snapshot import SnapshotError, host_from_snapshot

LINKS = [
    {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK"], "mtu": 65536, "link_type": "loopback",
     "address": "00:00:00:00:00:00"},
    {"ifindex": 2, "ifname": "br0", "flags": ["UP"], "mtu": 1500, "link_type": "ether",
     "address": "02:00:00:00:03:01", "linkinfo": {"info_kind": "bridge"}},
    {"ifindex": 3, "ifname": "lan1", "flags": ["UP"], "mtu": 1500, "link_type": "ether", "master": "br0",
     "address": "02:00:00:00:01:01", "linkinfo": {"info_kind": "veth", "info_slave_kind": "bridge"}},
]


def _files(links: list[dict[str, object]], sysctl: str = "") -> dict[str, str]:
    addrs = [{"ifname": link["ifname"], "addr_info": []} for link in links]
    return {"link.json": json.dumps(links), "addr.json": json.dumps(addrs), "route.json": "[]",
            "sysctl.txt": sysctl}


def test_ports_and_bridge_nf_call_iptables() -> None:
    host = host_from_snapshot(_files(LINKS, "net.bridge.bridge-nf-call-iptables = 0\n"), "snap").host
    assert host.interfaces["lan1"].master == "br0" and host.interfaces["br0"].kind == "bridge"
    assert [p.name for p in host.bridge_ports("br0")] == ["lan1"]
    assert host.bridge_nf_call_iptables is False
    assert host_from_snapshot(_files(LINKS), "snap").host.bridge_nf_call_iptables is True  # the kernel's default


def test_a_snapshot_that_recorded_no_br_netfilter_bridges_past_the_ipv4_hooks() -> None:
    """br_netfilter.txt recorded: empty (the module was not loaded, no net.bridge sysctl) means 0; its line
    gives the value. Without the file (an older snapshot) sysctl.txt's line or the default 1 stand, as before."""
    absent = {**_files(LINKS), "br_netfilter.txt": ""}
    assert host_from_snapshot(absent, "snap").host.bridge_nf_call_iptables is False
    loaded = {**_files(LINKS), "br_netfilter.txt": "net.bridge.bridge-nf-call-iptables = 1\n"}
    assert host_from_snapshot(loaded, "snap").host.bridge_nf_call_iptables is True
    off = {**_files(LINKS), "br_netfilter.txt": "net.bridge.bridge-nf-call-iptables = 0\n"}
    assert host_from_snapshot(off, "snap").host.bridge_nf_call_iptables is False
    old = _files(LINKS, "net.bridge.bridge-nf-call-iptables = 0\n")
    assert host_from_snapshot(old, "snap").host.bridge_nf_call_iptables is False


def test_a_bad_br_netfilter_line_names_the_file() -> None:
    bad = {**_files(LINKS), "br_netfilter.txt": "net.bridge.bridge-nf-call-iptables = yes\n"}
    with pytest.raises(SnapshotError, match=r"snap/br_netfilter\.txt: net\.bridge\.bridge-nf-call-iptables: "):
        host_from_snapshot(bad, "snap")


def test_a_bad_master_names_the_file() -> None:
    bad = [*LINKS[:2], {**LINKS[2], "master": 7}]
    with pytest.raises(SnapshotError, match=r"link\.json: lan1: bad master 7"):
        host_from_snapshot(_files(bad), "snap")
