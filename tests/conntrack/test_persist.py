"""A saved conntrack table, restored into a new engine, carries its connections on (the gateway's --state)."""

from __future__ import annotations

import json

import pytest

from natbox.conntrack.format import format_conntrack
from natbox.conntrack.persist import dump_conns, load_conns
from natbox.conntrack.table import ConntrackTable
from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.sim.lab import Lab
from natbox.wire import tcp

RULES = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
         "-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n")


def _engine(seed: int) -> Engine:
    host = Host(ip_forward=True)
    host.add_interface(Interface("eth0", mac=bytes.fromhex("020000000001")))
    host.add_interface(Interface("eth1", mac=bytes.fromhex("020000000101")))
    host.add_address("eth0", parse_addr("192.168.50.1"), 24)
    host.add_address("eth1", parse_addr("198.51.100.1"), 24)
    rs = Ruleset()
    rs.restore(parse_restore(RULES, file="t"))
    return Engine(host, ruleset=rs, seed=seed)


def test_an_established_remapped_connection_survives_a_restart() -> None:
    first = _engine(seed=1)
    lab = Lab(first.host, first, seed=3)
    a = lab.add_host("a", "eth0", "192.168.50.2/24")
    b = lab.add_host("b", "eth0", "192.168.50.3/24")
    srv = lab.add_host("srv", "eth1", "198.51.100.2/24")
    srv.listen_tcp[80] = b""
    lab.at(0.0, lambda: a.tcp_connect("198.51.100.2", 80, sport=45000))
    lab.at(0.5, lambda: b.tcp_connect("198.51.100.2", 80, sport=45000))  # remapped: a clash
    lab.run(until=1.0)
    before = sorted(format_conntrack(c, lab.now) for c in first.table.live(lab.now))
    assert len(before) == 2 and all("ESTABLISHED" in line for line in before)
    doc = json.loads(json.dumps(dump_conns(first.table.live(lab.now), lab.now)))  # through JSON, as on disk

    second = _engine(seed=99)  # another process: another RNG, an empty table
    for v in first.neighs.show():  # the lab's warm ARP cache (the live gateway resolves with ARP)
        if v.mac is not None:
            second.neighs.learn(v.dev, v.addr, v.mac, lab.now)
    loaded = load_conns(doc, second.table, lab.now, elapsed=0.0)
    for ct in loaded:
        second.nat.restore(ct, second.table)
    assert sorted(format_conntrack(c, lab.now) for c in second.table.live(lab.now)) == before
    lab.engine = second
    conn = next(iter(b.conns.values()))
    lab.at(1.5, lambda: b._tcp_out(conn, tcp.PSH | tcp.ACK, b"after the restart"))
    lab.run(until=2.0)
    out = [c.frame for c in lab.captures if c.iface == "eth1" and c.direction == "out" and c.time >= 1.5]
    assert len(out) == 1
    sport = int.from_bytes(out[0][34:36], "big")
    expected = next(ct.reply.dport for ct in loaded if ct.original.src == parse_addr("192.168.50.3"))
    assert sport == expected != 45000  # the same remapped port as before the restart
    assert srv.conns and any(c.received.endswith(b"after the restart") for c in srv.conns.values())
    assert second.table.stats.invalid == 0


def test_expired_entries_are_not_restored_and_bad_documents_are_refused() -> None:
    first = _engine(seed=1)
    lab = Lab(first.host, first, seed=3)
    a = lab.add_host("a", "eth0", "192.168.50.2/24")
    lab.add_host("srv", "eth1", "198.51.100.2/24")
    lab.at(0.0, lambda: a.udp_send("198.51.100.2", 9, b"x", sport=40000))  # 30 s unreplied UDP
    lab.run(until=1.0)
    doc = dump_conns(first.table.live(lab.now), lab.now)
    assert load_conns(doc, ConntrackTable(), 0.0, elapsed=40.0) == []
    assert len(load_conns(doc, ConntrackTable(), 0.0, elapsed=10.0)) == 1
    for bad in ({}, {"format": "other", "entries": []}, {"format": "natbox-conntrack-1", "entries": [{}]},
                {"format": "natbox-conntrack-1", "entries": [{**doc["entries"][0], "original": [1, 2, 3]}]}):
        with pytest.raises(ValueError):
            load_conns(bad, ConntrackTable(), 0.0)
