"""A snapshot's neighbours in the engine (what `natbox gateway --adopt` starts from): each family's entries in
its own table, and the kernel's NUD semantics kept: PERMANENT (and NOARP) entries stay permanent, entries the
kernel had learned (REACHABLE, STALE, DELAY, PROBE) become natbox's own learned entries, which a packet sends
through DELAY and a unicast probe (`__neigh_event_send`, `neigh_timer_handler`) as the kernel's would."""

from __future__ import annotations

import json

from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.neigh import Nud
from natbox.engine.snapshot import host_from_snapshot
from natbox.wire import arp, ethernet, ipv4, udp

LAN_MAC, WAN_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000101")
CLIENT_MAC, SERVER_MAC = bytes.fromhex("020000000a05"), bytes.fromhex("020000000002")
CLIENT, SERVER, GW_LAN, PUBLIC = (parse_addr(a) for a in ("10.0.1.5", "198.51.100.2", "10.0.0.1", "198.51.100.1"))
SERVER6 = int.from_bytes(bytes.fromhex("fd000000000000000000000000000007"), "big")
LINKS = [{"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP"], "mtu": 65536, "link_type": "loopback",
          "address": "00:00:00:00:00:00"},
         {"ifindex": 2, "ifname": "eth0", "flags": ["UP"], "mtu": 1500, "link_type": "ether",
          "address": "02:00:00:00:00:01", "linkinfo": {"info_kind": "veth"}},
         {"ifindex": 3, "ifname": "eth1", "flags": ["UP"], "mtu": 1500, "link_type": "ether",
          "address": "02:00:00:00:01:01", "linkinfo": {"info_kind": "veth"}}]
ADDRS = [{"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host"}]},
         {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "10.0.0.1", "prefixlen": 16}]},
         {"ifname": "eth1", "addr_info": [{"family": "inet", "local": "198.51.100.1", "prefixlen": 24},
                                          {"family": "inet6", "local": "fd00::1", "prefixlen": 64}]}]
# `ip -4 -j neigh` / `ip -6 -j neigh` as iproute2 prints them on Linux 6.18 (entries made with `nud STATE`)
NEIGH = [{"dst": "198.51.100.2", "dev": "eth1", "lladdr": "02:00:00:00:00:02", "state": ["REACHABLE"]},
         {"dst": "198.51.100.3", "dev": "eth1", "lladdr": "02:00:00:00:00:03", "state": ["STALE"]},
         {"dst": "198.51.100.6", "dev": "eth1", "state": ["INCOMPLETE"]},
         {"dst": "198.51.100.7", "dev": "eth1", "lladdr": "02:00:00:00:00:07", "state": ["PROBE"]},
         {"dst": "198.51.100.4", "dev": "eth1", "lladdr": "02:00:00:00:00:04", "state": ["PERMANENT"]},
         {"dst": "198.51.100.5", "dev": "eth1", "lladdr": "02:00:00:00:00:05", "state": ["NOARP"]},
         {"dst": "198.51.100.8", "dev": "eth1", "lladdr": "02:00:00:00:00:08", "state": ["FAILED"]}]
NEIGH6 = [{"dst": "fd00::7", "dev": "eth1", "lladdr": "02:00:00:00:00:08", "state": ["STALE"]},
          {"dst": "fd00::9", "dev": "eth1", "lladdr": "02:00:00:00:00:09", "state": ["PERMANENT"]},
          {"dst": "fd00::a", "dev": "eth1", "state": ["FAILED"]}]


def _snapshot_engine() -> Engine:
    files = {"link.json": json.dumps(LINKS), "addr.json": json.dumps(ADDRS), "route.json": "[]",
             "neigh.json": json.dumps(NEIGH), "neigh6.json": json.dumps(NEIGH6),
             "sysctl.txt": "net.ipv4.ip_forward = 1\n"}
    host = host_from_snapshot(files, "snap").host
    return Engine(host, seed=1, resolve_neighbours=True)  # as natbox gateway runs it


def test_learned_entries_stay_learned_and_permanent_ones_permanent() -> None:
    engine = _snapshot_engine()
    kinds = {n.addr: n.permanent for n in engine.host.neighbours}
    assert kinds == {SERVER: False, parse_addr("198.51.100.3"): False, parse_addr("198.51.100.7"): False,
                     parse_addr("198.51.100.4"): True, parse_addr("198.51.100.5"): True,
                     SERVER6: False, SERVER6 + 2: True}
    state = {a: engine.neighs.state("eth1", a) for a in kinds if a <= 0xFFFFFFFF}
    assert state[SERVER] == state[parse_addr("198.51.100.3")] == state[parse_addr("198.51.100.7")] == Nud.STALE
    assert state[parse_addr("198.51.100.4")] == state[parse_addr("198.51.100.5")] == Nud.PERMANENT
    assert engine.neighs6.state("eth1", SERVER6) == Nud.STALE
    assert engine.neighs6.state("eth1", SERVER6 + 2) == Nud.PERMANENT


def test_each_familys_neighbours_are_in_its_own_table() -> None:
    engine = _snapshot_engine()
    assert engine.neighs.known("eth1", SERVER6) is None and engine.neighs.state("eth1", SERVER6) is None
    assert all(v.addr <= 0xFFFFFFFF for v in engine.neighs.show()) and len(engine.neighs) == 5
    assert engine.neighs6.known("eth1", SERVER6) == bytes.fromhex("020000000008")
    assert all(v.addr > 0xFFFFFFFF for v in engine.neighs6.show()) and len(engine.neighs6) == 2


def test_a_learned_neighbour_is_used_then_probed_by_unicast() -> None:
    """A packet to a STALE entry leaves at once with its MAC and turns it DELAY; 5 s later
    (delay_first_probe_time) the entry is PROBE and a unicast ARP request goes to the MAC it had. A PERMANENT
    entry is never probed."""
    engine = _snapshot_engine()
    for dst in (SERVER, parse_addr("198.51.100.4")):
        dgram = ipv4.build_ipv4(CLIENT, dst, 17, udp.build_udp(CLIENT, dst, 4000, 53, b"x" * 20))
        out = engine.receive(bytes(ethernet.build_ethernet(LAN_MAC, CLIENT_MAC, ethernet.ETH_P_IP, dgram)),
                             "eth0", 1.0)
        assert [e.iface for e in out.emitted] == ["eth1"]
    assert engine.neighs.state("eth1", SERVER) == Nud.DELAY
    assert engine.handle_timers(5.9).emitted == []
    out = engine.handle_timers(6.1)
    reqs = [(e.iface, e.frame[:6], arp.parse_arp(e.frame[14:])) for e in out.emitted]
    assert [(i, d, m.target_ip if m else None) for i, d, m in reqs] == [("eth1", SERVER_MAC, SERVER)]
    assert engine.neighs.state("eth1", SERVER) == Nud.PROBE
    assert engine.neighs.state("eth1", parse_addr("198.51.100.4")) == Nud.PERMANENT
