"""A full flow map pauses installs of its own family only (natbox.gateway.offload.GatewayOffload.full_maps).

IPv4 and IPv6 flows live in maps of their own (nb_flows, nb_flows6), so E2BIG from one says nothing about the
other. A dual-stack router (eth0 LAN, eth1 WAN; MASQUERADE and NAT66 MASQUERADE out of eth1) carries UDP
flows of both families; the datapath is a dict with a capacity per family. No root.
"""

from __future__ import annotations

import errno

from natbox.conntrack.conn import Conn
from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Neighbour
from natbox.gateway.offload import GatewayOffload
from natbox.netfilter import NFPROTO_IPV4, NFPROTO_IPV6, CtStatus
from natbox.offload.entry import FlowStats, OffloadAction, OffloadKey, offload_entry
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.testing.offload6 import CLIENT6, LAN6, PUBLIC6, RULES6, SERVER6, RouterFlows6
from natbox.wire import ethernet, ipv4, udp
from natbox.wire.layout import ETH_HDR_LEN, IPH_MIN_LEN, UDPH_DEST

CLIENT, GW_LAN, GW_WAN, SERVER = (parse_addr(a) for a in ("10.0.1.2", "10.0.1.1", "198.51.100.1", "198.51.100.2"))
LAN_MAC, WAN_MAC, CLIENT_MAC, SERVER_MAC = (bytes.fromhex(m) for m in ("020000000001", "020000000101",
                                                                         "020000000a02", "02000000aa02"))
NAT4 = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
        "-A POSTROUTING -s 10.0.1.0/24 -o eth1 -j MASQUERADE\nCOMMIT\n")
IFINDEX = {"eth0": 11, "eth1": 12}


class FamilyMaps:
    """nb_flows and nb_flows6 as dicts, each holding at most `capacity[family]` entries (E2BIG past it)."""

    def __init__(self) -> None:
        self.entries: dict[OffloadKey, OffloadAction] = {}
        self.capacity = {NFPROTO_IPV4: 1 << 16, NFPROTO_IPV6: 1 << 16}
        self.calls = {NFPROTO_IPV4: 0, NFPROTO_IPV6: 0}  # install calls per family

    def attach(self, ifname: str) -> None:
        pass

    def install(self, key: OffloadKey, action: OffloadAction) -> None:
        self.calls[key.family] += 1
        held = sum(k.family == key.family for k in self.entries)
        if held >= self.capacity[key.family] and key not in self.entries:
            raise OSError(errno.E2BIG, "Argument list too long")  # what the kernel says for a full hash map
        self.entries[key] = action

    def remove(self, key: OffloadKey) -> None:
        self.entries.pop(key, None)

    def stats(self) -> dict[OffloadKey, FlowStats]:
        return {}

    def close(self) -> None:
        pass


def _router() -> RouterFlows6:
    """RouterFlows6's router with IPv4 beside IPv6: eth0 10.0.1.1/24, eth1 198.51.100.1/24 and MASQUERADE."""
    r = RouterFlows6(LAN_MAC, WAN_MAC, CLIENT_MAC, SERVER_MAC)
    host = Host(name="router", ip_forward=True, ipv6_forward=True)
    host.add_interface(Interface("eth0", mac=LAN_MAC))
    host.add_interface(Interface("eth1", mac=WAN_MAC))
    host.add_address("eth0", GW_LAN, 24)
    host.add_address("eth1", GW_WAN, 24)
    host.add_address6("eth0", LAN6, 64)
    host.add_address6("eth1", PUBLIC6, 64)
    for dev, addr, mac in (("eth0", CLIENT, CLIENT_MAC), ("eth1", SERVER, SERVER_MAC), ("eth0", CLIENT6, CLIENT_MAC),
                           ("eth1", SERVER6, SERVER_MAC)):
        host.neighbours.append(Neighbour(dev, addr, mac))
    rules, rules6 = Ruleset(), Ruleset(NFPROTO_IPV6)
    rules.restore(parse_restore(NAT4, file="test"))
    rules6.restore(parse_restore(RULES6, file="test6", family=NFPROTO_IPV6))
    r.engine = Engine(host, ruleset=rules, ruleset6=rules6, seed=1, offload=True)
    return r


def _udp4(r: RouterFlows6, cport: int, rounds: int = 3) -> None:
    """`rounds` IPv4 datagrams from the client's port `cport` to the server's 53, each answered."""
    for _ in range(rounds):
        frame = ethernet.build_ethernet(LAN_MAC, CLIENT_MAC, ethernet.ETH_P_IP, ipv4.build_ipv4(
            CLIENT, SERVER, 17, udp.build_udp(CLIENT, SERVER, cport, 53, b"q")))
        (sent,) = r.engine.receive(bytes(frame), "eth0", r.now).emitted
        at = ETH_HDR_LEN + IPH_MIN_LEN
        wan_port = int.from_bytes(sent.frame[at:at + 2], "big")
        reply = ethernet.build_ethernet(WAN_MAC, SERVER_MAC, ethernet.ETH_P_IP, ipv4.build_ipv4(
            SERVER, GW_WAN, 17, udp.build_udp(SERVER, GW_WAN, 53, wan_port, b"a")))
        (back,) = r.engine.receive(bytes(reply), "eth1", r.now + 0.001).emitted
        assert int.from_bytes(back.frame[at + UDPH_DEST:at + UDPH_DEST + 2], "big") == cport
        r.now += 0.01


def _conn(r: RouterFlows6, src: int, sport: int) -> Conn:
    (conn,) = [c for c in r.engine.table.live(r.now) if c.original.src == src and c.original.sport == sport]
    return conn


def test_a_full_ipv4_map_does_not_pause_ipv6_installs_and_a_full_ipv6_map_not_ipv4_ones() -> None:
    r = _router()
    dp = FamilyMaps()
    gw = GatewayOffload(r.engine, dp, offload_entry, IFINDEX.__getitem__, clock=lambda: r.now)
    dp.capacity = {NFPROTO_IPV4: 2, NFPROTO_IPV6: 2}  # one flow each
    _udp4(r, 4001)
    gw.sync()
    _udp4(r, 4002)  # the IPv4 map is full: refused with E2BIG
    gw.sync()
    first4, second4 = _conn(r, CLIENT, 4001), _conn(r, CLIENT, 4002)
    assert first4.status & CtStatus.OFFLOAD and not second4.status & CtStatus.OFFLOAD
    assert gw.full_maps == {NFPROTO_IPV4} and gw.stats["full"] == 1 and dp.calls[NFPROTO_IPV4] == 3

    r.udp(40001, 5001)  # IPv6 has room: installed, though IPv4's map is full
    gw.sync()
    first6 = _conn(r, CLIENT6, 40001)
    assert first6.status & CtStatus.OFFLOAD and dp.calls[NFPROTO_IPV6] == 2
    assert sum(k.family == NFPROTO_IPV6 for k in dp.entries) == 2 and gw.full_maps == {NFPROTO_IPV4}

    r.udp(40002, 5001)  # now IPv6's is full too
    gw.sync()
    second6 = _conn(r, CLIENT6, 40002)
    assert not second6.status & CtStatus.OFFLOAD and gw.full_maps == {NFPROTO_IPV4, NFPROTO_IPV6}
    assert "IPv4 map full, IPv6 map full" in gw.report()

    # an IPv6 flow goes: IPv6's flag clears and its waiting flow is offered (and installed at its next
    # packet); IPv4's map is still full: its waiting flow is not offered, no install of it is tried
    r.engine.table.delete(first6, r.now)
    gw.sync()
    assert gw.full_maps == {NFPROTO_IPV4}
    calls4 = dp.calls[NFPROTO_IPV4]
    r.udp(40002, 5001, rounds=2)
    _udp4(r, 4002, rounds=2)
    gw.sync()
    assert second6.status & CtStatus.OFFLOAD and second6.ct_id in gw.installed
    assert not second4.status & CtStatus.OFFLOAD and dp.calls[NFPROTO_IPV4] == calls4

    # the IPv4 flow goes: now IPv4's waiting flow is offered and installed
    r.engine.table.delete(first4, r.now)
    gw.sync()
    assert not gw.full_maps
    _udp4(r, 4002, rounds=2)
    gw.sync()
    assert second4.status & CtStatus.OFFLOAD and dp.calls[NFPROTO_IPV4] == calls4 + 2
    assert {k.family for k in dp.entries} == {NFPROTO_IPV4, NFPROTO_IPV6} and len(dp.entries) == 4
