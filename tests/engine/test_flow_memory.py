"""State that outlives its connection (issue #12): when a ct leaves the table (flush, expiry, gc), the flow
caches drop their entries for it (`ConntrackTable.register_destroy`, as the kernel's extension destroy
hooks unlink a ct everywhere, nf_nat_cleanup_conntrack). An offline churn of many flows, each compiled
by steady traffic, with a flush or an expiry between rounds, must return to its baseline memory."""

from __future__ import annotations

import gc
import tracemalloc

from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Neighbour
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import arp, ethernet, ipv4, tcp, udp

LAN_MAC = bytes.fromhex("020000000001")
WAN_MAC = bytes.fromhex("020000000101")
SERVER_MAC = bytes.fromhex("02000000aa02")
CLIENT = parse_addr("10.0.1.5")
CLIENT_MAC = bytes.fromhex("020000000a05")
PUBLIC = parse_addr("198.51.100.1")
SERVER = parse_addr("198.51.100.2")
RULES = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
         "-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n")
FILTER = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
          "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n")
FLOWS = 300  # per round, as many TCP as UDP


def _engine(rules: str) -> Engine:
    host = Host(name="gw", ip_forward=True)
    host.add_interface(Interface("eth0", mac=LAN_MAC))
    host.add_interface(Interface("eth1", mac=WAN_MAC))
    host.add_address("eth0", parse_addr("10.0.0.1"), 16)
    host.add_address("eth1", PUBLIC, 24)
    host.neighbours.append(Neighbour("eth1", SERVER, SERVER_MAC))
    rs = Ruleset()
    rs.restore(parse_restore(rules, file="test"))
    return Engine(host, ruleset=rs, seed=1)


def _out(dgram: bytes | bytearray) -> bytes:
    return bytes(ethernet.build_ethernet(LAN_MAC, CLIENT_MAC, ethernet.ETH_P_IP, dgram))


def _back(dgram: bytes | bytearray) -> bytes:
    return bytes(ethernet.build_ethernet(WAN_MAC, SERVER_MAC, ethernet.ETH_P_IP, dgram))


def _round(engine: Engine, base_port: int, now: float) -> None:
    """FLOWS TCP connections and FLOWS UDP flows, each with enough traffic to be compiled both ways."""
    for i in range(FLOWS):
        port = base_port + i
        seg = tcp.build_tcp(CLIENT, SERVER, port, 80, seq=1, flags=tcp.SYN)
        engine.receive(_out(ipv4.build_ipv4(CLIENT, SERVER, 6, seg)), "eth0", now)
        seg = tcp.build_tcp(SERVER, PUBLIC, 80, port, seq=100, ack=2, flags=tcp.SYN | tcp.ACK)
        engine.receive(_back(ipv4.build_ipv4(SERVER, PUBLIC, 6, seg)), "eth1", now)
        for k in range(3):
            seg = tcp.build_tcp(CLIENT, SERVER, port, 80, seq=2 + 10 * k, ack=101, flags=tcp.ACK, payload=b"x" * 10)
            engine.receive(_out(ipv4.build_ipv4(CLIENT, SERVER, 6, seg)), "eth0", now)
            seg = tcp.build_tcp(SERVER, PUBLIC, 80, port, seq=101, ack=12 + 10 * k, flags=tcp.ACK)
            engine.receive(_back(ipv4.build_ipv4(SERVER, PUBLIC, 6, seg)), "eth1", now)
        for _ in range(3):
            d = udp.build_udp(CLIENT, SERVER, port, 53, b"q")
            engine.receive(_out(ipv4.build_ipv4(CLIENT, SERVER, 17, d)), "eth0", now)
            d = udp.build_udp(SERVER, PUBLIC, 53, port, b"a")
            engine.receive(_back(ipv4.build_ipv4(SERVER, PUBLIC, 17, d)), "eth1", now)


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def _churn(rules: str) -> tuple[Engine, list[int]]:
    engine = _engine(rules)
    now = 1.0
    sizes = []
    tracemalloc.start()
    try:
        for r in range(4):
            _round(engine, 20000 + (r % 2) * FLOWS * 10 + r * FLOWS, now)
            if r % 2:
                engine.table.flush(now)
            else:
                now += 432001.0  # every entry past its timeout (ESTABLISHED: 5 days): the gc reaps them
                for _ in range(10):
                    engine.handle_timers(now)
                    now += 1.0
            sizes.append(_traced())
    finally:
        tracemalloc.stop()
    return engine, sizes


def test_compiled_flows_leave_with_their_ct() -> None:
    engine, sizes = _churn(RULES)
    assert len(engine.table) == 0
    # after the first round the dicts have their size: later rounds (new ports, new cts) add nothing
    assert sizes[-1] <= sizes[0] + 64 * 1024, sizes
    assert not engine._flowcache.flows and not engine._flowcache._seen and not engine._flowcache._by_ct


def test_flow_cache_leaves_with_its_ct() -> None:
    engine, sizes = _churn(RULES + FILTER)  # a filter table: tier 2 carries the flows, nothing is compiled
    assert len(engine.table) == 0
    assert sizes[-1] <= sizes[0] + 64 * 1024, sizes
    assert not engine._forward.flows and not engine._forward._by_ct


def test_neighbour_flood_stays_within_gc_thresh3() -> None:
    """20,000 frames from distinct on-link senders (ARP and IP) over 20 s teach the offline neighbour table at
    most gc_thresh3 (1024) dynamic entries (`neigh_alloc` → `neigh_forced_gc`, net/core/neighbour.c); the
    static ones stay. The table fills, refuses new entries while all are younger than 5 s, and the forced gc
    frees the older ones after that (the same allocations and frees as 200,000 frames over 20 s)."""
    host = Host(name="gw", ip_forward=True)
    host.add_interface(Interface("eth0", mac=LAN_MAC))
    host.add_address("eth0", parse_addr("10.0.0.1"), 8)
    host.neighbours.append(Neighbour("eth0", parse_addr("10.0.0.2"), SERVER_MAC))
    engine = Engine(host, seed=1)
    base = parse_addr("10.1.0.0")
    martian = parse_addr("0.0.0.0")  # dropped at the routing decision, after the sender is learned
    now = 0.0
    for i in range(20_000):
        sender = base + i
        mac = b"\x02\x01" + sender.to_bytes(4, "big")
        if i & 1:
            msg = arp.build_arp_request(mac, sender, parse_addr("10.0.0.99"))  # not for us: no reply
            frame = bytes(ethernet.build_ethernet(ethernet.BROADCAST, mac, ethernet.ETH_P_ARP, msg))
        else:
            dgram = ipv4.build_ipv4(sender, martian, 17, udp.build_udp(sender, martian, 1, 2, b""))
            frame = bytes(ethernet.build_ethernet(LAN_MAC, mac, ethernet.ETH_P_IP, dgram))
        engine.receive(frame, "eth0", now)
        now += 0.001
        assert len(engine.neighs) <= 1024 + 1
    assert engine.neighs.known("eth0", parse_addr("10.0.0.2")) == SERVER_MAC
    stats = engine.neighs.stats
    assert stats["forced_gc_runs"] > 0 and stats["table_fulls"] > 0 and stats["destroys"] > 0, stats
