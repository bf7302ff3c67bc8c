"""Host files (TOML): the model they build, and errors that name file:line and the key."""

from __future__ import annotations

import pytest

from natbox.conntrack.tuple import parse_addr
from natbox.engine.hostfile import HostFileError, parse_host_toml

GOOD = """\
name = "gw"
ip_forward = true

[[interface]]
name = "eth0"
mac = "02:00:00:00:00:01"
addresses = ["192.168.50.1/24", "192.168.50.9/24", "10.1.0.1/16"]

[[interface]]
name = "eth1"
mtu = 1400
route_localnet = true

[[route]]
dst = "default"
via = "192.168.50.254"

[[route]]
dst = "10.9.0.0/16"
dev = "eth1"
type = "blackhole"

[[neighbour]]
dev = "eth0"
addr = "192.168.50.254"
mac = "02:00:00:00:00:fe"

[sysctl]
"net.netfilter.nf_conntrack_udp_timeout" = 10
"net.ipv4.conf.eth0.forwarding" = 0

[rules]
file = "gw.rules"

[listen]
tcp = [22]
udp = [53]
"""


def test_a_good_host_file_builds_the_model() -> None:
    hf = parse_host_toml(GOOD, "gw.toml")
    host = hf.host
    assert host.name == "gw" and host.ip_forward
    assert list(host.interfaces) == ["lo", "eth0", "eth1"]
    eth0 = host.interfaces["eth0"]
    assert [(str(a), a.secondary) for a in eth0.addresses] == [
        ("192.168.50.1/24", False), ("192.168.50.9/24", True), ("10.1.0.1/16", False)]
    assert eth0.forwarding is False and host.interfaces["eth1"].route_localnet
    assert host.interfaces["eth1"].mtu == 1400
    gw = host.routes[0]
    assert gw.prefixlen == 0 and gw.gateway == parse_addr("192.168.50.254") and gw.dev == "eth0"
    assert host.routes[1].type == "blackhole"
    assert host.neighbours[0].mac == bytes.fromhex("0200000000fe")
    assert host.conntrack.udp_timeout == 10
    assert hf.rules_file == "gw.rules" and hf.listen == {(6, 22), (17, 53)}


@pytest.mark.parametrize(("text", "message"), [
    ("name = \"x\"\n[[interface]\n", "h.toml:2:"),  # TOML syntax: line and column
    ("bogus = 1\n", "h.toml:1: bogus: unknown key"),
    ("[[interface]]\nname = \"eth0\"\naddresses = [\"192.168.50.300/24\"]\n",
     "h.toml:3: interface[0].addresses: bad IPv4 prefix '192.168.50.300/24'"),
    ("[[interface]]\nname = \"eth0\"\nmac = \"02:00\"\n", "h.toml:3: interface[0].mac: bad MAC address '02:00'"),
    ("[[interface]]\nname = \"eth0\"\n\n[[interface]]\nname = \"eth0\"\n",
     "h.toml:4: interface[1]: interface 'eth0' defined twice"),
    ("[[interface]]\nname = \"eth0\"\n[[route]]\ndst = \"10.0.0.0/8\"\ndev = \"eth9\"\n",
     "h.toml:5: route[0].dev: no such interface 'eth9'"),
    ("[[interface]]\nname = \"eth0\"\naddresses = [\"10.0.0.1/24\"]\n[[route]]\ndst = \"default\"\n"
     "via = \"172.16.0.1\"\n", "h.toml:6: route[0].via: gateway 172.16.0.1 is not on any interface's subnet"),
    ("[[route]]\ndst = \"10.0.0.1/8\"\ndev = \"lo\"\n", "h.toml:2: route[0].dst: '10.0.0.1/8' has host bits set"),
    ("[sysctl]\n\"net.netfilter.nf_conntrack_nonsense\" = 1\n",
     "h.toml:2: sysctl[0].net.netfilter.nf_conntrack_nonsense:"),
    ("[rules]\nfile = \"a\"\ntext = \"b\"\n", "h.toml:3: rules[0].text: give either file or text, not both"),
    ("[listen]\ntcp = [0]\n", "h.toml:2: listen[0].tcp: must be a list of ports 1..65535"),
    ("ip_forward = \"yes\"\n", "h.toml:1: ip_forward: ip_forward must be bool"),
])
def test_errors_name_the_file_line_and_key(text: str, message: str) -> None:
    with pytest.raises(HostFileError) as exc:
        parse_host_toml(text, "h.toml")
    assert str(exc.value).startswith(message), str(exc.value)
    assert "\n" not in str(exc.value)
