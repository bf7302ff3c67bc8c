"""Lab files: parsing, validation and the commands `natbox lab up` runs (pure: no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from natbox.cli.lab import cli_lab
from natbox.lab.builder import plan_down, plan_up
from natbox.lab.model import LabError, parse_lab_toml
from natbox.testing.paths import LAB_EXAMPLES as EXAMPLES

BASE = """
name = "t"
[[node]]
name = "a"
[[node]]
name = "gw"
gateway = true
owned = ["p0"]
[[link]]
a = { node = "a", name = "eth0", addresses = ["%s"] }
b = { node = "gw", name = "p0" }
"""


@pytest.mark.parametrize("name", ["basic.toml", "qemu.toml", "docker.toml", "basic6.toml", "qemu6.toml"])
def test_examples_parse(name: str) -> None:
    lab = parse_lab_toml((EXAMPLES / name).read_text(), name)
    assert lab.gateway is not None and lab.gateway.host is not None
    assert (EXAMPLES / lab.gateway.host).exists()
    assert all(lab.netns(n).startswith(f"nbx-{lab.name}-") for n in lab.nodes)


def test_basic_plan() -> None:
    lab = parse_lab_toml((EXAMPLES / "basic.toml").read_text(), "basic.toml")
    cmds = [" ".join(c) for c in plan_up(lab)]
    assert cmds[0] == "ip netns add nbx-basic-client"
    # veths are created straight inside their namespaces: no name ever exists in the caller's
    assert "ip -n nbx-basic-client link add eth0 type veth peer name lan0 netns nbx-basic-gw" in cmds
    assert "ip -n nbx-basic-client addr add 10.0.1.2/24 dev eth0" in cmds
    assert cmds[-1] == "ip -n nbx-basic-client route add default via 10.0.1.1"
    assert "ip netns exec nbx-basic-gw sysctl -qw net.ipv4.ip_forward=0" in cmds
    # addresses before links up, links up before routes
    assert cmds.index("ip -n nbx-basic-server addr add 198.51.100.2/24 dev eth0") < \
        cmds.index("ip -n nbx-basic-server link set eth0 up") < len(cmds) - 1
    assert [" ".join(c) for c in plan_down(lab)] == [
        "ip netns del nbx-basic-client", "ip netns del nbx-basic-gw", "ip netns del nbx-basic-server"]


def test_qemu_plan_and_ns_refs() -> None:
    lab = parse_lab_toml((EXAMPLES / "qemu.toml").read_text(), "qemu.toml")
    cmds = [" ".join(c) for c in plan_up(lab)]
    assert "ip -n nbx-qemu-vm tuntap add dev eth0 mode tap vnet_hdr" in cmds
    assert lab.gateway_args() == ["--tap-netns", "tap0=nbx-qemu-vm/eth0"]
    assert plan_down(lab)[0] == ["ip", "-n", "nbx-qemu-vm", "tuntap", "del", "dev", "eth0", "mode", "tap"]


def test_docker_plan_bridges_ports() -> None:
    lab = parse_lab_toml((EXAMPLES / "docker.toml").read_text(), "docker.toml")
    cmds = [" ".join(c) for c in plan_up(lab)]
    assert "ip -n nbx-docker-gw link add br0 type bridge" in cmds
    assert "ip -n nbx-docker-gw link set vethc1 master br0" in cmds


@pytest.mark.parametrize("addr", ["192.0.2.1/24", "203.0.113.5/24", "8.8.8.8/24", "100.64.0.1/10"])
def test_only_private_and_198_51_100(addr: str) -> None:
    with pytest.raises(LabError, match=r"t.toml:9: \[\[link\]\] #1: .*only private ranges"):
        parse_lab_toml(BASE % addr, "t.toml")


@pytest.mark.parametrize("addr", ["10.1.2.3/8", "172.20.0.1/16", "192.168.7.1/24", "198.51.100.9/24"])
def test_allowed_ranges(addr: str) -> None:
    parse_lab_toml(BASE % addr, "t.toml")


def test_route_addresses_checked() -> None:
    text = BASE % "10.0.0.2/24" + '\n[[node]]\nname = "b"\nroutes = ["default via 192.0.2.1"]\n'
    with pytest.raises(LabError, match=r"t.toml:15: \[\[node\]\] #3: 192.0.2.1: only private"):
        parse_lab_toml(text, "t.toml")


def test_owned_interface_must_not_carry_addresses() -> None:
    text = BASE.replace('name = "p0" }', 'name = "p0", addresses = ["10.0.0.1/24"] }') % "10.0.0.2/24"
    with pytest.raises(LabError, match="owned interface 'p0' must carry no kernel addresses"):
        parse_lab_toml(text, "t.toml")


@pytest.mark.parametrize(("text", "message"), [
    ('name = "Bad"\n[[node]]\nname = "a"\n', "name must be 1-8"),
    ('name = "toolongname"\n[[node]]\nname = "a"\n', "name must be 1-8"),
    ('name = "x"\n', "at least one"),
    ('name = "x"\n[[node]]\nname = "a"\ncolour = 1\n', r"<t>:4: \[\[node\]\] #1: unknown key 'colour'"),
    ('name = "x"\n[[node]]\nname = "a"\n[[node]]\nname = "a"\n', "defined twice"),
    ('name = "x"\n[[node]]\nname = "a"\n[[link]]\na = { node = "a", name = "averyveryverylongname" }\n'
     'b = { node = "a", name = "b" }\n', "bad interface name"),
    ('name = "x"\n[[node]]\nname = "a"\n[[link]]\na = { node = "zz", name = "e" }\nb = { node = "a", name = "b" }\n',
     "no such node 'zz'"),
    ('name = "x"\n[[node]]\nname = "a"\nowned = ["e"]\n', "owned interfaces need gateway = true"),
    ('name = "x"\n[[node]]\nname = "a"\ngateway = true\ngateway_args = ["{ns:nope}"]\n', "names no node"),
    ('name = "x"\n[[node]]\nname = "a"\n[[link]]\na = { node = "a", name = "e", bridge = "br9" }\n'
     'b = { node = "a", name = "f" }\n', "no bridge 'br9'"),
    ('name = "x"\n[[node\n', "TOML syntax error"),
])
def test_errors(text: str, message: str) -> None:
    with pytest.raises(LabError, match=message):
        parse_lab_toml(text, "<t>")


def test_cli_plan_and_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli_lab([str(EXAMPLES / "basic.toml"), "plan"]) == 0
    assert "ip netns add nbx-basic-gw" in capsys.readouterr().out
    assert cli_lab([str(EXAMPLES / "basic.toml"), "frobnicate"]) == 2
    assert "unknown action" in capsys.readouterr().err
    assert cli_lab(["/nonexistent/lab.toml", "up"]) == 2
    assert cli_lab([str(EXAMPLES / "basic.toml"), "exec", "nosuchnode", "true"]) == 1
    assert "has no node 'nosuchnode'" in capsys.readouterr().err
    assert cli_lab([]) == 2
    no_gw = tmp_path / "nogw.toml"
    no_gw.write_text('name = "x"\n[[node]]\nname = "a"\n')
    assert cli_lab([str(no_gw), "gateway"]) == 2
    assert "no node has gateway = true" in capsys.readouterr().err
