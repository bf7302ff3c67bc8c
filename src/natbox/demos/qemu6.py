"""`natbox demo qemu6`: the two-VM qemu experiment (`natbox demo qemu`) with IPv6 on the taps.

vm1 on tap0 (ULA fd00:80:1::/64) and vm2 on tap1 (fd00:80:2::/64) share the host's uplink address
2001:db8:108::108 through `-A POSTROUTING -s fd00:80::/32 -j SNAT --to-source 2001:db8:108::108` (ip6tables,
NAT66). Both ping the same outside host with the same ICMPv6 echo id, then send UDP from the same source port,
then open TCP from the same source port: the second flow of each kind must get another id or port so that
every reply tuple stays unique (ipv6-semantics.md §3.2: NAT66 picks ids and ports as NAT44 does,
nf_nat_l4proto_unique_tuple). scenarios/ipv6/qemu6-two-vms-snat.toml runs the same traffic against the
kernel.
"""

from __future__ import annotations

from natbox.demos.docker6 import EndHost6
from natbox.engine.host import Host, Interface, Route6
from natbox.sim.lab import Lab
from natbox.wire.ipv6 import parse_addr6

__all__ = ["QEMU6_QUESTIONS", "QEMU6_RULES", "qemu6_host", "qemu6_script"]

QEMU6_RULES = """\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s fd00:80::/32 -j SNAT --to-source 2001:db8:108::108
COMMIT
"""
REMOTE = "2001:db8:4012::34"  # an outside host beyond the uplink's router (the IPv4 demo's 121.40.12.34)


def _mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def qemu6_host() -> tuple[Host, str]:
    """The qemu host: eth0 2001:db8:108::108/64 (default route via ::1), tap0 fd00:80:1::1/64, tap1
    fd00:80:2::1/64, IPv6 forwarding on."""
    host = Host(name="qemu-host", ipv6_forward=True)
    host.add_interface(Interface("eth0", mac=_mac("52:54:00:c0:a8:6c")))
    host.add_interface(Interface("tap0", mac=_mac("fe:54:00:81:00:01"), kind="tap"))
    host.add_interface(Interface("tap1", mac=_mac("fe:54:00:82:00:01"), kind="tap"))
    host.add_address6("eth0", parse_addr6("2001:db8:108::108"), 64)
    host.add_address6("tap0", parse_addr6("fd00:80:1::1"), 64)
    host.add_address6("tap1", parse_addr6("fd00:80:2::1"), 64)
    host.routes6.append(Route6(0, 0, "eth0", parse_addr6("2001:db8:108::1")))
    return host, QEMU6_RULES


def qemu6_script(lab: Lab) -> None:
    vm1 = EndHost6(lab, "vm1", "tap0", "fd00:80:1::110/64", gateway="fd00:80:1::1", mac="52:54:00:12:34:01")
    vm2 = EndHost6(lab, "vm2", "tap1", "fd00:80:2::110/64", gateway="fd00:80:2::1", mac="52:54:00:12:34:02")
    cloud = EndHost6(lab, "router", "eth0", "2001:db8:108::1/64", gateway=None, mac="52:54:00:c0:a8:01",
                     extra_addrs=(REMOTE,))
    cloud.listen_udp[5000] = None
    cloud.listen_tcp[80] = b"HTTP/1.0 200 OK\r\n\r\nhi"
    # both VMs ping the same host with the same ICMPv6 echo id: the second id is remapped
    lab.at(0.0, lambda: vm1.ping6(REMOTE, 0x4242, 1))
    lab.at(0.5, lambda: vm2.ping6(REMOTE, 0x4242, 1))
    # the same UDP source port from both
    lab.at(1.0, lambda: vm1.udp6_send(REMOTE, 5000, b"ping", 40000))
    lab.at(1.5, lambda: vm2.udp6_send(REMOTE, 5000, b"ping", 40000))
    # the same TCP source port from both
    lab.at(2.0, lambda: vm1.tcp6_connect(REMOTE, 80, 45000, b"GET / HTTP/1.0\r\n\r\n"))
    lab.at(2.5, lambda: vm2.tcp6_connect(REMOTE, 80, 45000, b"GET / HTTP/1.0\r\n\r\n"))


QEMU6_QUESTIONS = (
    "How does a reply to 2001:db8:108::108 find the right VM? As in IPv4: through the conntrack entry's reply "
    "tuple. NAT66 keeps each reply tuple unique by giving the second flow another ICMPv6 echo id or source "
    "port (the first keeps its own).",
    "Is NAT66 stateful here? Yes: SNAT in ip6tables is the same conntrack NAT as for IPv4 (NPTv6, SNPT/DNPT, is "
    "the stateless alternative, which maps prefixes and keeps ports).",
)
