"""Scenario tests: the reference's [V] experiments, run through the whole engine in simulated time.

Each test builds a router (`Host` + ruleset), attaches end hosts with a `Lab`, sends traffic, and
asserts what Linux 6.18 was measured to do (netfilter-semantics.md §2-§9, Appendix A).
"""

from __future__ import annotations

from functools import partial

from natbox.conntrack.format import format_conntrack
from natbox.conntrack.tuple import format_addr, parse_addr
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Route
from natbox.engine.output import Output
from natbox.netfilter import TcpState
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.sim.lab import CapturedFrame, Lab
from natbox.wire import icmp, ipv4, tcp, udp

NAT_HEAD = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
MASQ = NAT_HEAD + "-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n"
ROUTER_OUT = parse_addr("198.51.100.1")


def router(rules: str = MASQ, *, ip_forward: bool = True, seed: int = 7) -> tuple[Lab, Engine]:
    """The reference lab's router: eth0 192.168.50.1/24 (LAN), eth1 198.51.100.1/24 (outside)."""
    host = Host(name="rtr", ip_forward=ip_forward)
    host.add_interface(Interface("eth0", mac=bytes.fromhex("020000000001")))
    host.add_interface(Interface("eth1", mac=bytes.fromhex("020000000101")))
    host.add_address("eth0", parse_addr("192.168.50.1"), 24)
    host.add_address("eth1", ROUTER_OUT, 24)
    ruleset = Ruleset()
    ruleset.restore(parse_restore(rules, file="test"))
    engine = Engine(host, ruleset=ruleset, seed=seed)
    return Lab(host, engine, seed=seed), engine


def sent(lab: Lab, iface: str) -> list[bytes]:
    """IPv4 datagrams the router sent on `iface`."""
    return [c.frame[14:] for c in lab.on(iface) if c.direction == "out"]


def fields(d: bytes) -> tuple[str, str, int, int]:
    """(src, dst, sport, dport) of a TCP/UDP datagram."""
    ihl = (d[0] & 0x0F) * 4
    return (format_addr(int.from_bytes(d[12:16], "big")), format_addr(int.from_bytes(d[16:20], "big")),
            int.from_bytes(d[ihl:ihl + 2], "big"), int.from_bytes(d[ihl + 2:ihl + 4], "big"))


def ct_lines(lab: Lab, engine: Engine) -> list[str]:
    return sorted(format_conntrack(c, lab.now) for c in engine.table.live(lab.now))


def test_masquerade_keeps_the_port_then_remaps_a_clash_within_its_class() -> None:
    """Appendix A #1: same sport from .2 and .3 — the first keeps it, the second gets another in its class."""
    lab, _engine = router()
    a = lab.add_host("a", "eth0", "192.168.50.2/24")
    b = lab.add_host("b", "eth0", "192.168.50.3/24")
    srv = lab.add_host("srv", "eth1", "198.51.100.2/24")
    srv.listen_udp[5000] = None
    for i, sport in enumerate((40010, 100, 700)):
        lab.at(i, partial(a.udp_send, "198.51.100.2", 5000, b"a", sport=sport))
        lab.at(i + 0.5, partial(b.udp_send, "198.51.100.2", 5000, b"b", sport=sport))
    lab.run(until=5)
    out = [fields(d) for d in sent(lab, "eth1")]
    assert all(src == "198.51.100.1" for src, *_ in out)
    ports = [sport for _src, _dst, sport, _dport in out]
    assert ports[0] == 40010 and ports[2] == 100 and ports[4] == 700  # first flows keep their port
    assert ports[1] != 40010 and ports[1] >= 1024
    assert 1 <= ports[3] <= 511 and ports[3] != 100
    assert 600 <= ports[5] <= 1023 and ports[5] != 700
    # every reply found its way back to the right inside host
    assert [d[28:] for _t, d in a.received] == [b"a", b"a", b"a"]
    assert [d[28:] for _t, d in b.received] == [b"b", b"b", b"b"]


def test_udp_timeout_30s_then_120s_and_assured_after_2s() -> None:
    """§3.3 [V]: 29 s after an exchange; still 29 after a second exchange within 2 s; 119 + ASSURED at 2.2 s."""
    lab, engine = router()
    c = lab.add_host("c", "eth0", "192.168.50.2/24")
    srv = lab.add_host("srv", "eth1", "198.51.100.2/24")
    srv.listen_udp[5001] = None
    lab.at(0.0, lambda: c.udp_send("198.51.100.2", 5001, b"x", sport=48000))
    lab.run(until=1.0)
    (line,) = ct_lines(lab, engine)
    assert line.startswith("udp      17 29 src=192.168.50.2 dst=198.51.100.2 sport=48000 dport=5001 src=")
    assert "[ASSURED]" not in line and "[UNREPLIED]" not in line
    lab.at(1.5, lambda: c.udp_send("198.51.100.2", 5001, b"x", sport=48000))
    lab.run(until=1.6)
    assert ct_lines(lab, engine)[0].startswith("udp      17 29 ")
    lab.at(2.2, lambda: c.udp_send("198.51.100.2", 5001, b"x", sport=48000))
    lab.run(until=2.3)
    (line,) = ct_lines(lab, engine)
    assert line.startswith("udp      17 119 ") and "[ASSURED]" in line


def test_udp_entry_expires_exactly() -> None:
    """§2.8: an entry is gone once now >= timeout, and a new packet then makes a new one."""
    lab, engine = router()
    c = lab.add_host("c", "eth0", "192.168.50.2/24")
    lab.add_host("srv", "eth1", "198.51.100.2/24")
    lab.at(0.0, lambda: c.udp_send("198.51.100.2", 9, b"x", sport=40002))
    lab.run(until=29.9)
    assert len(ct_lines(lab, engine)) == 1
    lab.run(until=30.1)
    assert ct_lines(lab, engine) == []


def test_refused_tcp_connect_leaves_no_entry() -> None:
    """§3.2 [V]: SYN, then RST/ACK from a closed port: the ct is deleted at once."""
    lab, engine = router()
    c = lab.add_host("c", "eth0", "192.168.50.2/24")
    lab.add_host("srv", "eth1", "198.51.100.2/24")
    lab.at(0.0, lambda: c.tcp_connect("198.51.100.2", 81, sport=47000))
    lab.run(until=1)
    assert ct_lines(lab, engine) == []
    # the RST made it back, un-NATed
    rst = [d for _t, d in c.received if d[9] == 6]
    assert len(rst) == 1 and rst[0][20 + 13] & tcp.RST


def test_tcp_connection_through_masquerade_reaches_time_wait_assured() -> None:
    lab, engine = router()
    c = lab.add_host("c", "eth0", "192.168.50.2/24")
    srv = lab.add_host("srv", "eth1", "198.51.100.2/24")
    srv.listen_tcp[8080] = b"hello"
    lab.at(0.0, lambda: c.tcp_connect("198.51.100.2", 8080, sport=40000, request=b"GET"))
    lab.run(until=3)
    (line,) = ct_lines(lab, engine)
    assert line.startswith("tcp      6 117 TIME_WAIT src=192.168.50.2 dst=198.51.100.2 sport=40000 dport=8080 "
                           "src=198.51.100.2 dst=198.51.100.1 sport=8080 dport=40000 [ASSURED] mark=0 use=1")
    conn = engine.table.live(lab.now)[0]
    assert conn.tcp is not None and conn.tcp.state == TcpState.TIME_WAIT


def test_syn_to_unreachable_host_is_syn_sent_120() -> None:
    """Appendix A #12: SYN_SENT 120 [UNREPLIED]."""
    lab, engine = router()
    c = lab.add_host("c", "eth0", "192.168.50.2/24")
    lab.at(0.0, lambda: c.tcp_connect("198.51.100.77", 80, sport=47000))
    lab.run(until=0.5)
    (line,) = ct_lines(lab, engine)
    assert line.startswith("tcp      6 119 SYN_SENT src=192.168.50.2 dst=198.51.100.77 sport=47000 dport=80 "
                           "[UNREPLIED] src=198.51.100.77 dst=198.51.100.1 sport=80 dport=47000")


def _raw_tcp(lab: Lab, host: str, flags: int, *, sport: int = 47001, dport: int = 80) -> None:
    h = lab.hosts[host]
    seg = tcp.build_tcp(h.addr, parse_addr("198.51.100.2"), sport, dport, seq=1000, ack=0, flags=flags, window=512)
    h.send_ip(ipv4.build_ipv4(h.addr, parse_addr("198.51.100.2"), 6, seg, ttl=64))


def test_bare_fin_is_invalid_and_leaves_un_natted() -> None:
    """§9 [V] / Appendix A #17: INVALID packets are not NATed: the private source leaves the router."""
    lab, engine = router()
    lab.add_host("c", "eth0", "192.168.50.2/24")
    lab.add_host("srv", "eth1", "198.51.100.2/24")
    lab.at(0.0, lambda: _raw_tcp(lab, "c", tcp.FIN))
    lab.run(until=0.5)
    (d,) = sent(lab, "eth1")
    assert fields(d)[:2] == ("192.168.50.2", "198.51.100.2")
    assert ct_lines(lab, engine) == []
    assert engine.table.stats.invalid >= 1


def test_ack_first_is_picked_up_as_established_300() -> None:
    """Appendix A #12: an ACK with no SYN seen → ESTABLISHED, capped at 300 s, [UNREPLIED]."""
    lab, engine = router()
    lab.add_host("c", "eth0", "192.168.50.2/24")
    lab.at(0.0, lambda: _raw_tcp(lab, "c", tcp.ACK, dport=81))
    lab.run(until=0.5)
    (line,) = ct_lines(lab, engine)
    assert line.startswith("tcp      6 299 ESTABLISHED ") and "[UNREPLIED]" in line


def test_invalid_flag_combinations_create_no_entry() -> None:
    lab, engine = router()
    lab.add_host("c", "eth0", "192.168.50.2/24")
    for i, flags in enumerate((tcp.RST, tcp.SYN | tcp.FIN, 0, tcp.SYN | tcp.RST)):
        lab.at(i * 0.1, partial(_raw_tcp, lab, "c", flags, sport=47100 + i))
    lab.run(until=1)
    assert ct_lines(lab, engine) == []


def test_ttl_expiry_sends_time_exceeded_and_leaves_no_entry() -> None:
    """§2.5 [V]: a TTL-expired first packet is dropped before confirm: ICMP time exceeded, no ct."""
    lab, engine = router()
    c = lab.add_host("c", "eth0", "192.168.50.2/24")
    lab.add_host("srv", "eth1", "198.51.100.2/24")
    lab.at(0.0, lambda: c.udp_send("198.51.100.2", 33434, b"trace", sport=40000, ttl=1))
    lab.run(until=0.5)
    assert sent(lab, "eth1") == []
    (err,) = [d for _t, d in c.received]
    assert format_addr(int.from_bytes(err[12:16], "big")) == "192.168.50.1"
    assert err[20] == 11 and err[21] == 0  # time exceeded in transit
    assert ct_lines(lab, engine) == []


def test_time_exceeded_for_dnatted_packet_comes_from_the_original_destination() -> None:
    """§4.9 [V] / Appendix A #16: outer source = the pre-DNAT destination, inner header restored."""
    rules = NAT_HEAD + ("-A PREROUTING -d 198.51.100.1 -p udp --dport 7777 -j DNAT --to-destination "
                        "192.168.50.9:7000\nCOMMIT\n")
    lab, engine = router(rules)
    lab.add_host("lan", "eth0", "192.168.50.9/24")
    cli = lab.add_host("cli", "eth1", "198.51.100.2/24")
    lab.at(0.0, lambda: cli.udp_send("198.51.100.1", 7777, b"x", sport=45000, ttl=1))
    lab.run(until=0.5)
    (err,) = [d for _t, d in cli.received]
    assert err[9] == 1 and err[20] == 11
    assert format_addr(int.from_bytes(err[12:16], "big")) == "198.51.100.1"
    inner = err[28:]
    assert fields(inner) == ("198.51.100.2", "198.51.100.1", 45000, 7777)
    assert ct_lines(lab, engine) == []


def test_port_unreachable_is_translated_back_to_the_inside_host() -> None:
    """§4.9 [V] / Appendix A #6: outer S → 192.168.50.2, inner 192.168.50.2.44001 > S.5999, checksums valid."""
    lab, engine = router()
    c = lab.add_host("c", "eth0", "192.168.50.2/24")
    lab.add_host("srv", "eth1", "198.51.100.2/24")
    lab.at(0.0, lambda: c.udp_send("198.51.100.2", 5999, b"probe", sport=44001))
    lab.run(until=0.5)
    (err,) = [d for _t, d in c.received]
    assert fields(err)[:2] == ("198.51.100.2", "192.168.50.2")
    assert err[8] == 63  # forwarded: TTL 64 - 1
    inner = err[28:]
    assert fields(inner) == ("192.168.50.2", "198.51.100.2", 44001, 5999)
    from natbox.wire.checksum import internet_checksum

    assert internet_checksum(err[:20]) == 0 and internet_checksum(err[20:]) == 0
    assert internet_checksum(inner[:20]) == 0
    # the UDP entry stays [UNREPLIED]: errors never set SEEN_REPLY
    assert "[UNREPLIED]" in ct_lines(lab, engine)[0]


def test_dnat_port_range_takes_lowest_free_port() -> None:
    """Appendix A #3: DNAT to :5000-5010 gives 5000, then 5001, 5002 when reply tuples would clash."""
    rules = NAT_HEAD + ("-A PREROUTING -i eth1 -p tcp -j DNAT --to-destination 192.168.50.9:5000-5010\n"
                        "COMMIT\n")
    lab, _engine = router(rules)
    srv = lab.add_host("srv", "eth0", "192.168.50.9/24")
    for port in range(5000, 5011):
        srv.listen_tcp[port] = b"ok"  # listening, so the entries live (a RST would delete them)
    cli = lab.add_host("cli", "eth1", "198.51.100.2/24")
    for i, dport in enumerate((80, 81, 82)):
        lab.at(i * 0.1, partial(cli.tcp_connect, "198.51.100.1", dport, sport=45000))
    lab.run(until=1)
    dports = [fields(d)[3] for d in sent(lab, "eth0") if d[9] == 6 and d[33] & tcp.SYN]
    assert dports[:3] == [5000, 5001, 5002]


def test_port_exhaustion_drops_at_confirm_with_insert_failed() -> None:
    """§2.5 [V]: all ports of --to-ports busy → insert_failed + drop, no entry."""
    rules = NAT_HEAD + "-A POSTROUTING -o eth1 -p udp -j MASQUERADE --to-ports 30000-30001\nCOMMIT\n"
    lab, engine = router(rules)
    hosts = [lab.add_host(f"h{i}", "eth0", f"192.168.50.{i + 2}/24") for i in range(3)]
    lab.add_host("srv", "eth1", "198.51.100.2/24")
    for i, h in enumerate(hosts):
        lab.at(i * 0.1, partial(h.udp_send, "198.51.100.2", 53, b"q", sport=40000))
    lab.run(until=1)
    out = [fields(d)[2] for d in sent(lab, "eth1")]
    assert sorted(out) == [30000, 30001]
    assert engine.table.stats.insert_failed == 1 and engine.table.stats.drop >= 1
    assert len(ct_lines(lab, engine)) == 2


def test_icmp_id_clash_is_remapped() -> None:
    """Appendix A #5: the same echo id from two hosts to one server: the second id is remapped."""
    lab, _engine = router()
    a = lab.add_host("a", "eth0", "192.168.50.2/24")
    b = lab.add_host("b", "eth0", "192.168.50.3/24")
    lab.add_host("srv", "eth1", "198.51.100.2/24")
    lab.at(0.0, lambda: a.ping("198.51.100.2", ident=4242))
    lab.at(0.1, lambda: b.ping("198.51.100.2", ident=4242))
    lab.run(until=1)
    ids = [int.from_bytes(d[24:26], "big") for d in sent(lab, "eth1")]
    assert ids[0] == 4242 and ids[1] != 4242
    assert len(a.received) == 1 and len(b.received) == 1
    assert int.from_bytes(b.received[0][1][24:26], "big") == 4242  # un-NATed back to its own id


def test_ip_forward_off_drops_silently() -> None:
    """§1.2 [V]: with ip_forward=0 a packet to a non-local address is dropped, no ICMP."""
    lab, engine = router(ip_forward=False)
    c = lab.add_host("c", "eth0", "192.168.50.2/24")
    lab.add_host("srv", "eth1", "198.51.100.2/24")
    lab.at(0.0, lambda: c.ping("198.51.100.2"))
    lab.run(until=1)
    assert sent(lab, "eth1") == [] and c.received == []
    assert engine.stats["forwarding_disabled"] == 1


def test_router_answers_ping_to_its_own_address() -> None:
    lab, _engine = router()
    c = lab.add_host("c", "eth0", "192.168.50.2/24")
    lab.at(0.0, lambda: c.ping("198.51.100.1", ident=9))
    lab.run(until=1)
    (reply,) = [d for _t, d in c.received]
    assert reply[20] == 0 and format_addr(int.from_bytes(reply[12:16], "big")) == "198.51.100.1"


def test_reverse_order_fragments_are_reassembled_natted_and_refragmented_in_order() -> None:
    """§9 [V] / Appendix A #14: 620/620/28 sent in reverse → NATed 620/620/28 in order, same ID, TTL-1."""
    lab, _engine = router()
    c = lab.add_host("c", "eth0", "192.168.50.2/24")
    lab.add_host("srv", "eth1", "198.51.100.2/24")
    payload = bytes(range(256)) * 5
    seg = udp.build_udp(c.addr, parse_addr("198.51.100.2"), 40000, 9999, payload[:1200])
    whole = ipv4.build_ipv4(c.addr, parse_addr("198.51.100.2"), 17, seg, ttl=64, ident=777)
    pieces = ipv4.ip_fragment(bytes(whole), 620)
    assert [len(p) for p in pieces] == [620, 620, 28]
    for i, piece in enumerate(reversed(pieces)):
        lab.at(i * 0.01, partial(c.send_ip, piece))
    lab.run(until=1)
    out = sent(lab, "eth1")
    assert [len(d) for d in out] == [620, 620, 28]
    assert all(int.from_bytes(d[4:6], "big") == 777 and d[8] == 63 for d in out)
    offsets = [(int.from_bytes(d[6:8], "big") & 0x1FFF) * 8 for d in out]
    assert offsets == [0, 600, 1200]
    assert all(format_addr(int.from_bytes(d[12:16], "big")) == "198.51.100.1" for d in out)


def test_unknown_protocol_is_tracked_600s_and_two_hosts_clash() -> None:
    """§3.5 [V]: generic tracking, 600 s; a second host with the same protocol to the same server clashes."""
    lab, engine = router()
    a = lab.add_host("a", "eth0", "192.168.50.2/24")
    b = lab.add_host("b", "eth0", "192.168.50.3/24")
    dst = parse_addr("198.51.100.2")
    lab.at(0.0, lambda: a.send_ip(ipv4.build_ipv4(a.addr, dst, 253, b"proto-253", ttl=64)))
    lab.at(0.1, lambda: b.send_ip(ipv4.build_ipv4(b.addr, dst, 253, b"proto-253", ttl=64)))
    lab.run(until=1)
    (line,) = ct_lines(lab, engine)
    assert line.startswith("unknown  253 599 src=192.168.50.2 dst=198.51.100.2 [UNREPLIED] "
                           "src=198.51.100.2 dst=198.51.100.1 mark=0 use=1")
    assert engine.table.stats.insert_failed == 1
    assert len(sent(lab, "eth1")) == 1


def test_masquerade_entries_are_flushed_when_the_link_goes_down() -> None:
    """§5.2 [V] / Appendix A #11: NETDEV_DOWN deletes every ct masqueraded through that device."""
    lab, engine = router()
    c = lab.add_host("c", "eth0", "192.168.50.2/24")
    lab.add_host("srv", "eth1", "198.51.100.2/24")
    lab.at(0.0, lambda: c.ping("198.51.100.2"))
    lab.run(until=0.5)
    assert len(ct_lines(lab, engine)) == 1
    assert engine.link_down("eth1", lab.now) == 1
    assert ct_lines(lab, engine) == []


def test_docker_published_port_conntrack_line() -> None:
    """§6 [V]: `src=EXT dst=HOST sport=s dport=10000 src=172.17.0.2 dst=EXT sport=8000 dport=s`."""
    from natbox.cli.demo import run_demo

    class Sink:
        def write(self, s: str) -> int:
            return len(s)

    lab = run_demo("docker", out=Sink())  # type: ignore[arg-type]
    lines = sorted(format_conntrack(c, lab.now) for c in lab.engine.table.live(lab.now))
    assert any(" src=114.246.99.100 dst=45.77.200.180 sport=60677 dport=10000 src=172.17.0.2 "
               "dst=114.246.99.100 sport=8000 dport=60677 [ASSURED]" in line for line in lines)
    assert any(line.startswith("icmp     1 ") and "src=172.17.0.2 dst=8.8.8.8 type=8 code=0 id=28 "
               "src=8.8.8.8 dst=45.77.200.180 type=0 code=0 id=28" in line for line in lines)
    eth0: list[CapturedFrame] = lab.on("eth0")
    # MASQUERADE: the container's pings leave eth0 from the host's address
    assert format_addr(int.from_bytes(eth0[0].frame[26:30], "big")) == "45.77.200.180"
    docker0 = lab.on("docker0")
    syn = next(c.frame[14:] for c in docker0 if c.frame[23] == 6)
    assert fields(syn) == ("114.246.99.100", "172.17.0.2", 60677, 8000)


def test_engine_never_raises_on_garbage() -> None:
    """Untrusted bytes never raise out of the engine (a quick deterministic sweep; hypothesis below)."""
    _lab, engine = router()
    import itertools

    seed = 1
    for n, iface in itertools.product(range(0, 120, 7), ("eth0", "eth1", "nope")):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        junk = bytes((seed >> (i % 24)) & 0xFF for i in range(n))
        frame = bytes.fromhex("020000000001" + "020000000002" + "0800") + junk
        engine.receive(frame, iface, 1.0)
        engine.receive(junk, iface, 1.0)
    assert icmp is not None


# --- ICMP errors about 127/8, 240/4 and 0/8 sources: `__icmp_send` tests no source, routing does -------------


def _udp_to(src: str, dst: str, dport: int = 9) -> bytes:
    s, d = parse_addr(src), parse_addr(dst)
    return bytes(ipv4.build_ipv4(s, d, 17, udp.build_udp(s, d, 40000, dport, b"x"), ident=7))


def _icmp_delivered(outs: list[Output]) -> list[tuple[str, str, int, int, bytes]]:
    """(src, dst, type, code, quoted datagram) of each ICMP message the host's own stack received."""
    return [(*fields(d.datagram)[:2], d.datagram[20], d.datagram[21], d.datagram[28:])
            for o in outs for d in o.delivered if d.datagram[9] == 1]


def _sent_from_srv(datagram: bytes, *, default_route: bool = True, route_localnet: bool = False) -> Lab:
    """The reference router (with a default route via 198.51.100.2) after srv (198.51.100.2, on eth1) sent
    `datagram`, whatever its addresses."""
    lab, engine = router()
    if default_route:
        engine.host.routes.append(Route(0, 0, "eth1", parse_addr("198.51.100.2")))
        engine.fib.rebuild()
    engine.host.interfaces["eth1"].route_localnet = route_localnet
    srv = lab.add_host("srv", "eth1", "198.51.100.2/24")
    lab.at(0.0, partial(srv.send_ip, datagram))
    lab.run(until=0.5)
    return lab


def test_0_0_0_0_is_a_martian_except_to_0_0_0_0() -> None:
    """[V] Linux 6.18 (`ip_route_input_slow`): 0.0.0.0 -> a local address is a martian source, a host ->
    0.0.0.0 a martian destination, neither answered; 0.0.0.0 -> 0.0.0.0 is delivered as a broadcast
    (brd_input: INPUT counts it), which no port unreachable answers."""
    cases: list[tuple[str, str, list[str]]] = [
        ("0.0.0.0", "198.51.100.1", ["martian_source"]), ("198.51.100.2", "0.0.0.0", ["martian_destination"]),
        ("0.0.0.0", "0.0.0.0", [])]
    for src, dst, drops in cases:
        lab = _sent_from_srv(_udp_to(src, dst))
        assert [d.reason for o in lab.outputs for d in o.dropped] == drops, (src, dst)
        assert [d for d in sent(lab, "eth1") if d[9] == 1] == [] and _icmp_delivered(lab.outputs) == []
        delivered = [d.action for o in lab.outputs for d in o.delivered]
        assert delivered == ([] if drops else ["no socket (broadcast: no reply)"]), (src, dst)


def test_0_8_other_than_0_0_0_0_is_an_ordinary_address() -> None:
    """[V] Linux 6.18, a router with a default route (`ipv4_is_zeronet` is 0.0.0.0 alone since 5.3): from
    0.1.2.3 to its closed port 9, a port unreachable goes back by the default route; a datagram to 0.1.2.3
    with TTL 1 is forwarded, so it earns Time Exceeded."""
    datagram = _udp_to("0.1.2.3", "198.51.100.1")
    (err,) = [d for d in sent(_sent_from_srv(datagram), "eth1") if d[9] == 1]
    assert fields(err)[:2] == ("198.51.100.1", "0.1.2.3") and (err[20], err[21]) == (3, 3) and err[28:] == datagram
    s, d = parse_addr("198.51.100.2"), parse_addr("0.1.2.3")
    lab = _sent_from_srv(bytes(ipv4.build_ipv4(s, d, 17, udp.build_udp(s, d, 1, 9, b""), ttl=1)))
    (err,) = [d for d in sent(lab, "eth1") if d[9] == 1]
    assert fields(err)[:2] == ("198.51.100.1", "198.51.100.2") and (err[20], err[21]) == (11, 0)


FILTER_HEAD = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
LO_UDP = bytes(ipv4.build_ipv4(parse_addr("127.0.0.1"), parse_addr("127.0.0.2"), 17,
                               udp.build_udp(parse_addr("127.0.0.1"), parse_addr("127.0.0.2"), 40000, 9, b"x")))


def test_a_host_udp_datagram_to_a_closed_port_on_127_0_0_2_gets_a_port_unreachable_on_lo() -> None:
    """[V] Linux 6.18: a UDP socket 127.0.0.1 -> 127.0.0.2:9 (closed) gets ECONNREFUSED: `__icmp_send` answers
    a 127/8 source (only routing refuses one, from a device other than lo). Nothing leaves a real device."""
    _lab, engine = router()
    out = engine.send_local(LO_UDP, 1.0)
    assert out.emitted == [] and out.dropped == []
    ((src, dst, itype, code, quote),) = _icmp_delivered([out])
    assert (src, dst, itype, code) == ("127.0.0.2", "127.0.0.1", 3, 3)
    assert quote == LO_UDP


def _lo_engine(rules: str, listeners: set[tuple[int, int]]) -> Engine:
    host = Host(name="h")
    host.add_interface(Interface("eth0", mac=bytes.fromhex("020000000001")))
    host.add_address("eth0", parse_addr("10.0.0.1"), 24)
    ruleset = Ruleset()
    ruleset.restore(parse_restore(FILTER_HEAD + rules + "COMMIT\n", file="test"))
    return Engine(host, ruleset=ruleset, listeners=listeners)


def test_reject_of_lo_traffic_from_127_0_0_1_answers_with_port_unreachable() -> None:
    """[V] Linux 6.18, 127.0.0.1 -> 127.0.0.2 with a socket listening: `-A OUTPUT -o lo ... -j REJECT` (send
    gets EPERM, then ECONNREFUSED) and `-A INPUT -i lo ... -j REJECT` (ECONNREFUSED) both send the port
    unreachable, which arrives on lo; the datagram reaches no socket."""
    for chain, iface in (("OUTPUT", "-o lo"), ("INPUT", "-i lo")):
        engine = _lo_engine(f"-A {chain} {iface} -p udp --dport 9 -j REJECT\n", {(17, 9)})
        out = engine.send_local(LO_UDP, 1.0)
        ((src, dst, itype, code, quote),) = _icmp_delivered([out])
        assert (src, dst, itype, code, quote) == ("127.0.0.2", "127.0.0.1", 3, 3, LO_UDP), chain
        assert not [d for d in out.delivered if d.datagram[9] == 17], chain
        assert [d.reason for d in out.dropped] == ["rule_drop"], chain  # the verdict after the answer: NF_DROP


def test_reject_with_tcp_reset_of_lo_traffic_from_127_0_0_1() -> None:
    """[V] Linux 6.18: `-A INPUT -i lo -p tcp --dport 9 -j REJECT --reject-with tcp-reset` with 127.0.0.2:9
    listening: connect() from 127.0.0.1 gets ECONNREFUSED (`nf_send_reset` has no source test either)."""
    engine = _lo_engine("-A INPUT -i lo -p tcp --dport 9 -j REJECT --reject-with tcp-reset\n", {(6, 9)})
    lo1, lo2 = parse_addr("127.0.0.1"), parse_addr("127.0.0.2")
    syn = ipv4.build_ipv4(lo1, lo2, 6, tcp.build_tcp(lo1, lo2, 40000, 9, seq=100, flags=tcp.SYN))
    out = engine.send_local(bytes(syn), 1.0)
    (rst,) = [d.datagram for d in out.delivered if d.datagram[9] == 6 and d.datagram[20 + 13] & tcp.RST]
    assert fields(rst) == ("127.0.0.2", "127.0.0.1", 9, 40000)
    assert int.from_bytes(rst[28:32], "big") == 101  # ACK of the SYN


def test_a_127_8_source_in_on_a_device_with_route_localnet_gets_its_port_unreachable_on_lo() -> None:
    """[V] Linux 6.18: 127.0.0.5 -> the router's 198.51.100.1:9 (closed) in on a device with route_localnet=1:
    the port unreachable goes to 127.0.0.5 over lo (OUTPUT -o lo and INPUT -i lo count it), nothing out of
    the device. Without route_localnet the datagram is a martian and nothing answers."""
    datagram = _udp_to("127.0.0.5", "198.51.100.1")
    for localnet in (True, False):
        lab = _sent_from_srv(datagram, default_route=False, route_localnet=localnet)
        assert sent(lab, "eth1") == []
        errors = _icmp_delivered(lab.outputs)
        if localnet:
            assert errors == [("198.51.100.1", "127.0.0.5", 3, 3, datagram)]
        else:
            assert errors == []
            assert [d.reason for o in lab.outputs for d in o.dropped] == ["martian_source"]


def test_a_240_4_source_is_answered() -> None:
    """[V] Linux 6.18, a router with a default route: from 240.0.0.1 (class E is no martian) to its closed
    port 9, a port unreachable goes back by the default route."""
    datagram = _udp_to("240.0.0.1", "198.51.100.1")
    (err,) = [d for d in sent(_sent_from_srv(datagram), "eth1") if d[9] == 1]
    assert fields(err)[:2] == ("198.51.100.1", "240.0.0.1") and (err[20], err[21]) == (3, 3) and err[28:] == datagram
