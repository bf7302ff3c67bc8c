"""The engine's one deadline: `next_deadline()` is the earliest of the conntrack gc, the fragment queues'
`ip_expire` timers and the neighbour timers, and `handle_timers(now)` does exactly the work due at `now`.

The conntrack gc runs at most every CT_GC_INTERVAL (1 s) while the table holds entries; fragment queues
expire ipfrag_time (30 s) after their first fragment (net/ipv4/ip_fragment.c); an unresolved neighbour
is re-solicited every retrans_time (1 s) (net/core/neighbour.c, neigh_timer_handler).
"""

from __future__ import annotations

from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import CT_GC_INTERVAL, Engine, Output
from natbox.engine.host import Host, Interface
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ethernet, ipv4, udp

LAN_MAC = bytes.fromhex("020000000001")
WAN_MAC = bytes.fromhex("020000000101")
CLIENT_MAC = bytes.fromhex("020000000a05")
CLIENT = parse_addr("10.0.1.5")
GW_LAN = parse_addr("10.0.0.1")
PUBLIC = parse_addr("198.51.100.1")
SERVER = parse_addr("198.51.100.2")
RULES = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
         "-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n")
IPFRAG_TIME = 30.0


def _engine(*, resolve: bool = False) -> Engine:
    host = Host(name="gw", ip_forward=True)
    host.add_interface(Interface("eth0", mac=LAN_MAC))
    host.add_interface(Interface("eth1", mac=WAN_MAC))
    host.add_address("eth0", GW_LAN, 16)
    host.add_address("eth1", PUBLIC, 24)
    rules = Ruleset()
    rules.restore(parse_restore(RULES, file="test"))
    engine = Engine(host, ruleset=rules, seed=1, resolve_neighbours=resolve)
    return engine


def _from_client(engine: Engine, dgram: bytes | bytearray, now: float) -> Output:
    return engine.receive(bytes(ethernet.build_ethernet(LAN_MAC, CLIENT_MAC, ethernet.ETH_P_IP, dgram)), "eth0", now)


def _udp(sport: int = 4000, dst: int = SERVER) -> bytes:
    return bytes(ipv4.build_ipv4(CLIENT, dst, 17, udp.build_udp(CLIENT, dst, sport, 53, b"x" * 20)))


def _first_fragment(dst: int) -> bytes:
    """The first 24 bytes of a UDP datagram to `dst` (MF set, offset 0): its queue waits for the rest."""
    whole = bytearray(ipv4.build_ipv4(CLIENT, dst, 17, udp.build_udp(CLIENT, dst, 4000, 53, b"y" * 40)))
    frag = whole[:20] + whole[20:44]
    frag[2:4] = len(frag).to_bytes(2, "big")
    frag[6] = 0x20  # MF
    ipv4.ip_send_check(frag)
    return bytes(frag)


def _empty(out: Output) -> bool:
    return not (out.emitted or out.dropped or out.delivered or out.logs or out.trace)


def test_an_idle_engine_has_no_deadline() -> None:
    engine = _engine(resolve=True)
    assert engine.next_deadline() is None
    assert _empty(engine.handle_timers(100.0))
    assert engine.next_deadline() is None


def test_conntrack_gc_at_most_once_a_second_while_the_table_has_entries() -> None:
    engine = _engine()
    assert _from_client(engine, _udp(), 5.0).emitted
    assert len(engine.table) == 1
    due = engine.next_deadline()
    assert due is not None and due <= 5.0  # the gc never ran: due at once
    engine.handle_timers(5.0)
    assert engine.next_deadline() == 5.0 + CT_GC_INTERVAL
    engine.handle_timers(5.5)  # early: nothing happens, the deadline stays
    assert engine.next_deadline() == 5.0 + CT_GC_INTERVAL
    # the UDP entry (unreplied: nf_conntrack_udp_timeout 30 s) is gone from lookups at its timeout
    # exactly, whether or not the gc has run; the gc at its next deadline reaps it
    (conn,) = engine.table.live(5.0)
    expiry = conn.timeout
    assert engine.table.lookup(conn.tuples[0], expiry) is None
    assert len(engine.table) == 0
    assert engine.next_deadline() is None  # an empty table needs no gc


def test_gc_reaps_expired_entries_when_due() -> None:
    engine = _engine()
    _from_client(engine, _udp(4000), 0.0)
    _from_client(engine, _udp(4001), 0.0)
    engine.handle_timers(0.0)
    t = max(c.timeout for c in engine.table.live(0.0)) + 0.5
    engine.handle_timers(t)
    assert len(engine.table) == 0
    assert engine.next_deadline() is None


def test_fragment_queue_deadline_is_exact() -> None:
    engine = _engine()
    out = _from_client(engine, _first_fragment(GW_LAN), 2.5)  # for this host: ip_expire answers it
    assert _empty(Output(out.emitted, out.dropped, out.delivered, out.logs, []))
    assert engine.next_deadline() == 2.5 + IPFRAG_TIME  # nothing was tracked: only the fragment queue
    before = engine.handle_timers(2.5 + IPFRAG_TIME - 0.01)
    assert _empty(before) and len(engine.defrag) == 1
    out = engine.handle_timers(2.5 + IPFRAG_TIME)
    assert len(engine.defrag) == 0
    (em,) = out.emitted
    dgram = em.frame[14:]
    assert dgram[9] == 1 and dgram[20:22] == bytes((11, 1))  # time exceeded, reassembly
    assert engine.next_deadline() is None


def test_neighbour_timer_deadline_and_earliest_of_all() -> None:
    engine = _engine(resolve=True)
    out = _from_client(engine, _udp(), 0.0)  # held: the server's MAC is unknown; one ARP request now
    assert [e.frame[12:14] for e in out.emitted] == [b"\x08\x06"]
    _from_client(engine, _first_fragment(GW_LAN), 0.2)
    # the gc is due at once (never ran); after it, the neighbour's retransmit (1 s) is the earliest
    engine.handle_timers(0.3)
    assert engine.next_deadline() == 1.0
    assert engine.next_deadline() == min(0.3 + CT_GC_INTERVAL, 0.2 + IPFRAG_TIME, 1.0)
    assert _empty(engine.handle_timers(0.99))
    out = engine.handle_timers(1.0)
    assert [e.frame[12:14] for e in out.emitted] == [b"\x08\x06"]  # the second request
    assert engine.next_deadline() == 1.3  # now the gc (0.3 + 1 s) comes first
    out = engine.handle_timers(1.3)
    assert _empty(out)
    assert engine.next_deadline() == 2.0
