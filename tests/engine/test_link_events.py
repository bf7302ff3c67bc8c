"""Link events offline: what the neighbour table knows survives `ip link set DEV down` and up again.

In the kernel `neigh_ifdown` empties the device's neighbour entries and ARP resolves the next hop anew
once the link is back, answering with the same MAC (scenarios/masquerade-link-down.toml, checked against
Linux by the difftest corpus). Offline nothing resolves, so natbox keeps what it knows instead of falling
back to a synthetic 02:00:<address> MAC.
"""

from __future__ import annotations

from natbox.cli.bench import GW_LAN_MAC, SERVER, _gateway
from natbox.wire import ethernet, ipv4, udp

CLIENT = ipv4.str_to_addr("10.0.1.2")
SERVER_MAC = bytes.fromhex("02000000aa02")  # the gateway's static neighbour entry for SERVER


def _udp_out() -> bytes:
    seg = udp.build_udp(CLIENT, SERVER, 41600, 5000, b"a")
    return bytes(ethernet.build_ethernet(GW_LAN_MAC, b"\x02\x00\x00\x00\x01\x02", ethernet.ETH_P_IP,
                                         ipv4.build_ipv4(CLIENT, SERVER, 17, seg)))


def test_known_mac_survives_link_down_and_up_offline() -> None:
    engine = _gateway()
    first = engine.receive(_udp_out(), "eth0", 1.0).emitted
    assert [e.frame[:6] for e in first] == [SERVER_MAC]
    engine.link_down("eth1", 2.0)
    while_down = engine.receive(_udp_out(), "eth0", 2.5).emitted  # no route: an ICMP error goes back
    assert [e.iface for e in while_down] == ["eth0"]
    engine.link_up("eth1")
    again = engine.receive(_udp_out(), "eth0", 3.0).emitted
    assert [e.frame[:6] for e in again] == [SERVER_MAC]
