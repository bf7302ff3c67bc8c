"""Parsing snapshot files (no namespaces): the JSON `ip -j` prints on Linux 6.18 / iproute2, copied from a
real run, and errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natbox.adapters.snapshot import load_host
from natbox.engine.snapshot import SnapshotError, host_from_snapshot, parse_sysctl_text

# captured from `ip -j addr`, `ip -d -j link`, `ip -4 -j route show table all`, `ip -4 -j neigh` in a namespace
ADDR = ('[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK"],"mtu":65536,"link_type":"loopback","address":'
        '"00:00:00:00:00:00","addr_info":[]},{"ifindex":2,"ifname":"br0","flags":["BROADCAST","MULTICAST","UP",'
        '"LOWER_UP"],"mtu":1500,"link_type":"ether","address":"3a:db:3f:7d:a8:ef","addr_info":[{"family":"inet",'
        '"local":"10.9.0.1","prefixlen":24,"scope":"global","label":"br0"},{"family":"inet","local":"10.9.0.2",'
        '"prefixlen":24,"scope":"global","secondary":true,"label":"br0"},{"family":"inet6","local":'
        '"fe80::38db:3fff:fe7d:a8ef","prefixlen":64,"scope":"link"}]},{"ifindex":4,"link":"v1","ifname":"v0",'
        '"flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"link_type":"ether","address":'
        '"ae:78:e5:9d:d4:33","addr_info":[{"family":"inet","local":"10.8.0.1","prefixlen":30,"scope":"global",'
        '"label":"v0"}]}]')
LINK = ('[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK"],"mtu":65536,"link_type":"loopback","address":'
        '"00:00:00:00:00:00"},{"ifindex":2,"ifname":"br0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],'
        '"mtu":1500,"link_type":"ether","address":"3a:db:3f:7d:a8:ef","linkinfo":{"info_kind":"bridge",'
        '"info_data":{"stp_state":0}}},{"ifindex":4,"link":"v1","ifname":"v0","flags":["BROADCAST","MULTICAST",'
        '"UP","LOWER_UP"],"mtu":1500,"link_type":"ether","address":"ae:78:e5:9d:d4:33","linkinfo":'
        '{"info_kind":"veth"}}]')
ROUTE = ('[{"dst":"default","gateway":"10.9.0.254","dev":"br0","flags":[]},{"dst":"10.8.0.0/30","dev":"v0",'
         '"protocol":"kernel","scope":"link","prefsrc":"10.8.0.1","flags":[]},{"dst":"10.9.0.0/24","dev":"br0",'
         '"protocol":"kernel","scope":"link","prefsrc":"10.9.0.1","flags":[]},{"type":"local","dst":"10.8.0.1",'
         '"dev":"v0","table":"local","protocol":"kernel","scope":"host","prefsrc":"10.8.0.1","flags":[]},'
         '{"type":"broadcast","dst":"10.9.0.255","dev":"br0","table":"local","protocol":"kernel","scope":"link",'
         '"prefsrc":"10.9.0.1","flags":[]}]')
NEIGH = ('[{"dst":"10.9.0.7","dev":"br0","lladdr":"02:00:00:00:00:07","state":["PERMANENT"]},'
         '{"dst":"10.9.0.8","dev":"br0","state":["FAILED"]}]')
SYSCTL = """net.ipv4.conf.all.forwarding = 1
net.ipv4.conf.br0.forwarding = 1
net.ipv4.conf.br0.route_localnet = 1
net.ipv4.conf.v0.forwarding = 0
net.ipv4.ip_forward = 1
net.netfilter.nf_conntrack_buckets = 262144
net.netfilter.nf_conntrack_count = 3
net.netfilter.nf_conntrack_sctp_timeout_closed = 10
net.netfilter.nf_conntrack_tcp_timeout_established = 7200
"""


def _files(**over: str) -> dict[str, str]:
    files = {"addr.json": ADDR, "link.json": LINK, "route.json": ROUTE, "neigh.json": NEIGH, "sysctl.txt": SYSCTL,
             "iptables.rules": "*filter\n:INPUT ACCEPT [3:180]\nCOMMIT\n"}
    files.update(over)
    return {k: v for k, v in files.items() if v != "DROP"}


def test_host_from_snapshot() -> None:
    host = host_from_snapshot(_files(), "snap").host
    assert list(host.interfaces) == ["lo", "br0", "v0"]
    br, v0 = host.interfaces["br0"], host.interfaces["v0"]
    assert br.kind == "bridge" and v0.kind == "veth" and host.interfaces["lo"].kind == "loopback"
    assert br.mac == bytes.fromhex("3adb3f7da8ef") and br.index == 2 and v0.index == 4 and br.up
    assert host.interfaces["lo"].up is False  # a fresh namespace's lo is down, and has no address then
    assert [(str(a), a.secondary) for a in br.addresses] == [("10.9.0.1/24", False), ("10.9.0.2/24", True)]
    # only the non-kernel route is copied; Fib derives connected/local/broadcast routes itself
    assert [str(r) for r in host.routes] == ["unicast default via 10.9.0.254 dev br0 table main"]
    assert [(n.dev, n.addr) for n in host.neighbours] == [("br0", 0x0A090007)]  # FAILED entry skipped
    assert host.ip_forward and br.forwarding is True and v0.forwarding is False and br.route_localnet
    assert host.conntrack.tcp_timeout_established == 7200
    assert host.sysctls["net.netfilter.nf_conntrack_sctp_timeout_closed"] == "10"  # kept, and applied
    assert host.conntrack.sctp_timeout_closed == 10
    assert host.rules_text.startswith("*filter") and host.rules_origin == "snap/iptables.rules"
    assert host.name == "snap"


@pytest.mark.parametrize(("over", "message"), [
    ({"link.json": "DROP"}, "snap/link.json: missing"),
    ({"addr.json": "[{"}, "snap/addr.json:1:3: not JSON"),
    ({"route.json": "{}"}, "snap/route.json: expected a JSON array"),
    ({"route.json": '[{"dst":"10.0.0.0/33","dev":"br0"}]'}, "snap/route.json: route 0 (10.0.0.0/33): bad dst"),
    ({"route.json": '[{"dst":"10.1.0.0/16","dev":"eth9"}]'}, "no such interface 'eth9'"),
    ({"route.json": '[{"type":"multicast","dst":"10.1.0.0/16","dev":"br0"}]'}, "route type 'multicast'"),
    ({"link.json": LINK.replace('"ae:78:e5:9d:d4:33"', '"zz"')}, "snap/link.json: v0: bad MAC address 'zz'"),
    ({"neigh.json": '[{"dst":"10.9.0.7","dev":"eth7","lladdr":"02:00:00:00:00:07"}]'}, "snap/neigh.json: 10.9.0.7"),
    ({"sysctl.txt": "net.ipv4.ip_forward = 2\n"}, "snap/sysctl.txt: net.ipv4.ip_forward: "),
    ({"sysctl.txt": "net.netfilter.nf_conntrack_udp_timeout = -5\n"}, "nf_conntrack_udp_timeout"),
    ({"sysctl.txt": "garbage\n"}, "snap/sysctl.txt:1: expected `name = value`"),
    ({"addr.json": ADDR.replace('"ifname":"v0"', '"ifname":"v9"')}, "snap/addr.json: v9: not in link.json"),
])
def test_errors_name_the_file(over: dict[str, str], message: str) -> None:
    with pytest.raises(SnapshotError) as exc:
        host_from_snapshot(_files(**over), "snap")
    assert message in str(exc.value)


def test_sysctl_text() -> None:
    assert parse_sysctl_text("# c\n\na.b = 1\nc.d=x y\n") == [("a.b", "1"), ("c.d", "x y")]


def test_device_names_with_dots() -> None:
    link = json.loads(LINK)
    link[2]["ifname"] = "v0.100"
    addr = json.loads(ADDR)
    addr[2]["ifname"] = "v0.100"
    files = _files(**{"link.json": json.dumps(link), "addr.json": json.dumps(addr), "route.json": "[]",
                      "sysctl.txt": "net.ipv4.conf.v0/100.route_localnet = 1\n"})
    assert host_from_snapshot(files, "s").host.interfaces["v0.100"].route_localnet is True


def test_load_host_dir_and_toml(tmp_path: Path) -> None:
    snap = tmp_path / "snap"
    snap.mkdir()
    for name, text in _files().items():
        (snap / name).write_text(text)
    assert set(load_host(snap).host.interfaces) == {"lo", "br0", "v0"}
    (tmp_path / "rules.v4").write_text("*nat\nCOMMIT\n")
    (tmp_path / "h.toml").write_text('[[interface]]\nname = "eth0"\naddresses = ["10.0.0.1/24"]\n'
                                     '[rules]\nfile = "rules.v4"\n')
    hf = load_host(tmp_path / "h.toml")
    assert hf.host.rules_text == "*nat\nCOMMIT\n" and hf.host.rules_origin == str(tmp_path / "rules.v4")


_json = st.recursive(st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=12)
                     | st.sampled_from(["lo", "br0", "v0", "10.9.0.1", "default", "inet", "UP", "kernel", "local"]),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.sampled_from(["ifname", "addr_info", "family", "local", "prefixlen", "dst",
                                                        "dev", "gateway", "table", "protocol", "type", "mtu", "flags",
                                                        "address", "linkinfo", "info_kind", "lladdr", "state",
                                                        "metric", "ifindex", "prefsrc", "secondary", "scope"]),
                                       inner, max_size=6),
                     max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["link.json", "addr.json", "route.json", "neigh.json"]), value=_json)
def test_any_json_gives_a_host_or_a_snapshot_error(name: str, value: object) -> None:
    try:
        host_from_snapshot(_files(**{name: json.dumps(value)}), "snap")
    except SnapshotError as exc:
        assert str(exc).startswith("snap")


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80))
def test_any_sysctl_text_gives_a_host_or_a_snapshot_error(text: str) -> None:
    try:
        host_from_snapshot(_files(**{"sysctl.txt": text}), "snap")
    except SnapshotError as exc:
        assert str(exc).startswith("snap")


def test_snapshot_names_a_missing_program_and_writes_nothing(tmp_path: Path) -> None:
    """On a machine without iptables-save: one line naming it, exit 1, and no half-written directory."""
    import os
    import shutil
    import subprocess
    import sys

    from natbox.testing.paths import IMPORT_ROOT

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for prog in ("ip", "sysctl"):
        found = shutil.which(prog)
        if found is None:
            pytest.skip(f"needs {prog}")
        (bin_dir / prog).symlink_to(found)
    env = dict(os.environ, PATH=str(bin_dir), PYTHONPATH=str(IMPORT_ROOT))
    res = subprocess.run([sys.executable, "-m", "natbox", "snapshot", str(tmp_path / "snap")], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1
    assert res.stderr == "natbox snapshot: iptables-save: not found on PATH (a snapshot runs ip, iptables-save, " \
                         "sysctl)\n"
    assert not (tmp_path / "snap").exists()


@pytest.mark.parametrize("state", ['[["FAILED"]]', '[{"a": 1}]', '"REACHABLE"', "7"])
def test_a_neighbour_state_of_the_wrong_type_is_no_traceback(state: str) -> None:
    neigh = '[{"dst":"10.9.0.7","dev":"br0","lladdr":"02:00:00:00:00:07","state":' + state + "}]"
    host = host_from_snapshot(_files(**{"neigh.json": neigh}), "snap").host
    assert [(n.dev, n.addr) for n in host.neighbours] == [("br0", 0x0A090007)]
