"""Neighbour resolution in the engine (live mode): packets wait for ARP, fail with ICMP host unreachable.

With `resolve_neighbours` on, a forwarded packet to a next hop without a MAC is held while the engine
sends ARP requests (broadcast, every second, three times: net.ipv4.neigh.default.mcast_solicit and
retrans_time); a reply releases the held packets in order with the learned MAC; after the third request
goes unanswered (3 s) every held packet earns its sender an ICMP host unreachable, translated back through
NAT like any ICMP error about a NATed packet (§4.9), and is dropped. tests/engine_neigh has the kernel
measurements these numbers come from.
"""

from __future__ import annotations

from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine, Output
from natbox.engine.host import Host, Interface
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import arp, ethernet, ipv4, tcp, udp

LAN_MAC = bytes.fromhex("020000000001")
WAN_MAC = bytes.fromhex("020000000101")
CLIENT_MAC = bytes.fromhex("020000000a05")
SERVER_MAC = bytes.fromhex("02000000aa02")
CLIENT = parse_addr("10.0.1.5")
GW_LAN = parse_addr("10.0.0.1")
PUBLIC = parse_addr("198.51.100.1")
SERVER = parse_addr("198.51.100.2")
DEAD = parse_addr("198.51.100.3")
RULES = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
         "-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n")


def _engine(resolve: bool = True) -> Engine:
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


def _client_knows_gw(engine: Engine) -> None:
    """The client's own ARP for the gateway (which teaches the gateway the client's MAC, as the kernel's
    neigh_event_ns does for a request aimed at it)."""
    req = arp.build_arp_request(CLIENT_MAC, CLIENT, GW_LAN)
    out = engine.receive(bytes(ethernet.build_ethernet(ethernet.BROADCAST, CLIENT_MAC, ethernet.ETH_P_ARP, req)),
                         "eth0", 0.0)
    assert [e.frame[:6] for e in out.emitted] == [CLIENT_MAC]  # our reply


def _arp_requests(out: Output) -> list[tuple[str, bytes, int, int]]:
    """(device, destination MAC, sender IP, target IP) of each ARP request emitted."""
    reqs = []
    for e in out.emitted:
        if e.frame[12:14] == b"\x08\x06":
            msg = arp.parse_arp(e.frame[14:])
            assert msg is not None and msg.op == arp.ARPOP_REQUEST
            reqs.append((e.iface, e.frame[:6], msg.sender_ip, msg.target_ip))
    return reqs


def test_packets_wait_for_arp_and_leave_in_order_with_the_learned_mac() -> None:
    engine = _engine()
    _client_knows_gw(engine)
    sent = []
    for i in range(3):
        dgram = ipv4.build_ipv4(CLIENT, SERVER, 17, udp.build_udp(CLIENT, SERVER, 4000, 53, bytes([i]) * 20))
        out = _from_client(engine, dgram, 0.01 * i)
        sent.append(out)
    # one broadcast request, sent with the first packet; nothing forwarded yet
    assert _arp_requests(sent[0]) == [("eth1", ethernet.BROADCAST, PUBLIC, SERVER)]
    assert not any(o.emitted for o in sent[1:]) and not any(o.dropped for o in sent)
    reply = arp.build_arp_reply(SERVER_MAC, SERVER, WAN_MAC, PUBLIC)
    out = engine.receive(bytes(ethernet.build_ethernet(WAN_MAC, SERVER_MAC, ethernet.ETH_P_ARP, reply)), "eth1", 0.1)
    frames = [e.frame for e in out.emitted]
    assert [f[:6] for f in frames] == [SERVER_MAC] * 3
    assert [f[-1] for f in frames] == [0, 1, 2]  # in order
    assert all(int.from_bytes(f[26:30], "big") == PUBLIC for f in frames)  # NATed as usual
    # later packets go straight out (the compiled path included)
    for i in range(3):
        dgram = ipv4.build_ipv4(CLIENT, SERVER, 17, udp.build_udp(CLIENT, SERVER, 4000, 53, b"x" * 20))
        out = _from_client(engine, dgram, 0.2 + i * 0.01)
        assert [e.frame[:6] for e in out.emitted] == [SERVER_MAC]
    assert engine.neighs.show("eth1")[0].state == "REACHABLE"


def test_unanswered_arp_fails_after_three_requests_with_icmp_host_unreachable() -> None:
    engine = _engine()
    _client_knows_gw(engine)
    syn = ipv4.build_ipv4(CLIENT, DEAD, 6, tcp.build_tcp(CLIENT, DEAD, 40000, 80, seq=1, flags=tcp.SYN))
    first = _from_client(engine, syn, 0.0)
    assert _arp_requests(first) == [("eth1", ethernet.BROADCAST, PUBLIC, DEAD)]
    requests = []
    icmp_out: list[bytes] = []
    drops = []
    t = 0.0
    while t < 4.0:
        t = round(t + 0.1, 1)
        out = engine.handle_timers(t)
        requests += [(t, r) for r in _arp_requests(out)]
        icmp_out += [e.frame for e in out.emitted if e.frame[12:14] == b"\x08\x00"]
        drops += [(t, d.reason) for d in out.dropped]
        if icmp_out:
            break
    assert [t for t, _r in requests] == [1.0, 2.0]  # the 2nd and 3rd requests, retrans_time apart
    assert drops == [(3.0, "neigh_failed")]
    (frame,) = icmp_out
    dgram = frame[14:]
    assert frame[:6] == CLIENT_MAC and dgram[9] == 1
    # __icmp_send addresses the packet's source, which SNAT made this host's own 198.51.100.1 (so that is
    # also the route's source); the nat OUTPUT hook translates the destination back to the client
    assert int.from_bytes(dgram[12:16], "big") == PUBLIC
    assert int.from_bytes(dgram[16:20], "big") == CLIENT
    assert dgram[20:22] == bytes((3, 1))  # destination unreachable, host unreachable
    inner = dgram[28:]
    # the quoted packet is the client's own, un-NATed (nf_nat_icmp_reply_translation)
    assert int.from_bytes(inner[12:16], "big") == CLIENT and int.from_bytes(inner[16:20], "big") == DEAD
    assert int.from_bytes(inner[20:22], "big") == 40000
    assert engine.neighs.show("eth1")[0].state == "FAILED"


def test_offline_mode_is_unchanged() -> None:
    engine = _engine(resolve=False)
    dgram = ipv4.build_ipv4(CLIENT, SERVER, 17, udp.build_udp(CLIENT, SERVER, 4000, 53, b"x"))
    out = _from_client(engine, dgram, 0.0)
    assert [e.frame[:6] for e in out.emitted] == [b"\x02\x00" + SERVER.to_bytes(4, "big")]
