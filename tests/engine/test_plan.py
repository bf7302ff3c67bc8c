"""A compiled flow is a plan: plain data the slow path produces and the executor runs (engine/fastpath.py).

The plan must serialise as JSON (the next step puts the same plan in a BPF map) and say what both NAT
manips write, the route and the MACs, so that the executor derives nothing itself."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.fastpath import FlowPlan
from natbox.engine.host import Host, Interface, Neighbour
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ethernet, ipv4, udp

LAN_MAC = bytes.fromhex("020000000001")
WAN_MAC = bytes.fromhex("020000000101")
SERVER_MAC = bytes.fromhex("02000000aa02")
CLIENT_MAC = bytes.fromhex("020000000a05")
CLIENT = parse_addr("10.0.1.5")
PUBLIC = parse_addr("198.51.100.1")
SERVER = parse_addr("198.51.100.2")
RULES = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
         "-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n")


def _engine() -> Engine:
    host = Host(name="gw", ip_forward=True)
    host.add_interface(Interface("eth0", mac=LAN_MAC))
    host.add_interface(Interface("eth1", mac=WAN_MAC, mtu=1400))
    host.add_address("eth0", parse_addr("10.0.0.1"), 16)
    host.add_address("eth1", PUBLIC, 24)
    host.neighbours.append(Neighbour("eth1", SERVER, SERVER_MAC))
    rs = Ruleset()
    rs.restore(parse_restore(RULES, file="test"))
    return Engine(host, ruleset=rs, seed=1)


def _plans(engine: Engine) -> list[FlowPlan]:
    for i in range(3):
        out = ipv4.build_ipv4(CLIENT, SERVER, 17, udp.build_udp(CLIENT, SERVER, 4000, 53, b"q"))
        engine.receive(bytes(ethernet.build_ethernet(LAN_MAC, CLIENT_MAC, ethernet.ETH_P_IP, out)), "eth0", 1.0 + i)
        back = ipv4.build_ipv4(SERVER, PUBLIC, 17, udp.build_udp(SERVER, PUBLIC, 53, 4000, b"a"))
        engine.receive(bytes(ethernet.build_ethernet(WAN_MAC, SERVER_MAC, ethernet.ETH_P_IP, back)), "eth1", 1.0 + i)
    return sorted((f.plan for f in engine._flowcache.flows.values()), key=lambda p: p.direction)


def test_plan_is_plain_serialisable_data() -> None:
    orig, reply = _plans(_engine())
    for plan in (orig, reply):
        for f in fields(plan):
            assert type(getattr(plan, f.name)) in (int, bytes, str, bool)
        doc = json.loads(json.dumps(plan.as_dict()))
        back: dict[str, Any] = {k: bytes.fromhex(v) if isinstance(getattr(plan, k), bytes) else v
                                for k, v in doc.items()}
        assert FlowPlan(**back) == plan
    # the original direction leaves eth1 to the server's MAC, SNATed to the public address (port kept)
    assert (orig.iif, orig.oif, orig.dst_mac, orig.mtu) == ("eth0", "eth1", SERVER_MAC, 1400)
    assert orig.l2 == WAN_MAC + b"\x08\x00"
    assert orig.new_addrs == (PUBLIC.to_bytes(4, "big") + SERVER.to_bytes(4, "big")
                              + (4000).to_bytes(2, "big") + (53).to_bytes(2, "big"))
    assert orig.l4_rewrite and not orig.neigh_synthetic
    # the reply goes back to the client (learned from its packets), un-NATed
    assert (reply.iif, reply.oif, reply.dst_mac) == ("eth1", "eth0", CLIENT_MAC)
    assert reply.new_addrs[:8] == SERVER.to_bytes(4, "big") + CLIENT.to_bytes(4, "big")
    assert orig.ct_id == reply.ct_id and (orig.direction, reply.direction) == (0, 1)


def test_a_changed_neighbour_invalidates_the_plan() -> None:
    engine = _engine()
    _plans(engine)
    before = engine.neighs.generation
    engine.neighs.learn("eth0", CLIENT, bytes.fromhex("020000000b06"), 5.0)  # the client's MAC changed
    assert engine.neighs.generation != before
    back = ipv4.build_ipv4(SERVER, PUBLIC, 17, udp.build_udp(SERVER, PUBLIC, 53, 4000, b"a"))
    out = engine.receive(bytes(ethernet.build_ethernet(WAN_MAC, SERVER_MAC, ethernet.ETH_P_IP, back)), "eth1", 5.0)
    assert [e.frame[:6] for e in out.emitted] == [bytes.fromhex("020000000b06")]
