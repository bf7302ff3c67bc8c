"""Connection templates (engine/template.py): which SYNs become templates, what a template holds, when the
ruleset refuses them, and how a ruleset, route or neighbour change drops them. No kernel.

The gateway is test_offload's: MASQUERADE 10.0.1.0/24 out of wan0, the client 10.0.1.2, the server
198.51.100.2, both MACs static.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.engine.test_offload import (
    CLIENT,
    CLIENT_MAC,
    DPORT,
    GW_WAN,
    LAN_MAC,
    NAT,
    SERVER,
    SERVER_MAC,
    WAN_MAC,
    Clock,
    _engine,
    _establish,
    _send,
)

from natbox.conntrack.format import format_conntrack
from natbox.conntrack.tuple import format_addr
from natbox.engine.engine import Engine
from natbox.engine.offload import OffloadAdd
from natbox.engine.template import (
    TEMPLATE_MAX,
    TemplateAdd,
    TemplateDel,
    TemplateFlush,
    reply_tuple,
    template_unsafe,
)
from natbox.netfilter import CtStatus
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ethernet, ipv4, tcp


def _templated(rules: str = NAT, *, offload: bool = False, templates: bool = True) -> Engine:
    engine = _engine(rules=rules, offload=offload)
    engine2 = Engine(engine.host, ruleset=engine.rules, seed=1, offload=offload, events=True, templates=templates)
    return engine2


def _syn(sport: int, dport: int = DPORT, flags: int = tcp.SYN, client: int = CLIENT) -> tuple[bytes, str]:
    seg = tcp.build_tcp(client, SERVER, sport, dport, seq=1000, ack=0, flags=flags, window=65000)
    return bytes(ethernet.build_ethernet(LAN_MAC, CLIENT_MAC, ethernet.ETH_P_IP, ipv4.build_ipv4(
        client, SERVER, 6, seg))), "lan0"


def _client(seq: int, ack: int, flags: int, payload: bytes = b"", *, sport: int) -> tuple[bytes, str]:
    seg = tcp.build_tcp(CLIENT, SERVER, sport, DPORT, seq=1000 + seq, ack=5000 + ack if ack else 0, flags=flags,
                        window=65000, payload=payload)
    return bytes(ethernet.build_ethernet(LAN_MAC, CLIENT_MAC, ethernet.ETH_P_IP, ipv4.build_ipv4(
        CLIENT, SERVER, 6, seg))), "lan0"


def _server(seq: int, ack: int, flags: int, payload: bytes = b"", *, dport: int) -> tuple[bytes, str]:
    seg = tcp.build_tcp(SERVER, GW_WAN, DPORT, dport, seq=5000 + seq, ack=1000 + ack if ack else 0, flags=flags,
                        window=65000, payload=payload)
    return bytes(ethernet.build_ethernet(WAN_MAC, SERVER_MAC, ethernet.ETH_P_IP, ipv4.build_ipv4(
        SERVER, GW_WAN, 6, seg))), "wan0"


def _nat(*rules: str, filt: str = "") -> str:
    lines = "\n".join(rules)
    text = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
            ":SUB - [0:0]\n" + lines + "\nCOMMIT\n")
    if filt:
        text += "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" + filt + "\nCOMMIT\n"
    return text


MASQ = "-A POSTROUTING -s 10.0.1.0/24 -o wan0 -j MASQUERADE"


def test_a_syn_makes_a_template_whose_plans_are_the_compiled_flows_plans() -> None:
    engine, clock = _templated(offload=True), Clock()
    conn = _establish(engine, clock)
    (req,) = [r for r in engine.template_requests() if isinstance(r, TemplateAdd)]
    template = req.template
    assert template.key == ("lan0", 6, CLIENT, SERVER, DPORT)
    (add,) = [r for r in engine.offload_requests() if isinstance(r, OffloadAdd)]
    # made from the ct alone, the template's plans are what the slow path compiled from the packets
    for made, compiled in zip(template.plans, add.plans, strict=True):
        assert made == replace(compiled, ct_id=0)
    assert reply_tuple(template, conn.original.sport) == conn.reply
    assert template.plans[1].dst_mac == CLIENT_MAC and template.plans[0].dst_mac == SERVER_MAC


def test_only_a_plain_syn_of_a_new_connection_makes_one() -> None:
    engine, clock = _templated(), Clock()
    _send(engine, clock, _syn(40000, flags=tcp.SYN | tcp.ECE | tcp.CWR))
    assert engine.template_requests() == []
    _send(engine, clock, _syn(40001))
    assert [type(r) for r in engine.template_requests()] == [TemplateAdd]
    _send(engine, clock, _syn(40002))  # the same key: one template
    assert engine.template_requests() == []
    assert engine.templates is not None and len(engine.templates.templates) == 1


def test_no_template_when_nat_changed_the_clients_port() -> None:
    engine, clock = _templated(), Clock()
    _send(engine, clock, _syn(40000, client=CLIENT + 1))  # takes 198.51.100.1:40000 towards the server
    assert [type(r) for r in engine.template_requests()] == [TemplateAdd]
    _send(engine, clock, _syn(40000))  # the same port from another client: NAT picks another one
    assert engine.template_requests() == []
    assert engine.templates is not None and len(engine.templates.templates) == 1


UNSAFE = [
    ("-A POSTROUTING -m statistic --mode random --probability 0.5 -j RETURN", "-m statistic"),
    ("-A POSTROUTING -m recent --set --name x", "-m recent"),
    ("-A POSTROUTING -m limit --limit 1/sec -j RETURN", "-m limit"),
    ("-A POSTROUTING -p tcp -m hashlimit --hashlimit-upto 1/sec --hashlimit-name h -j RETURN", "-m hashlimit"),
    ("-A POSTROUTING -p tcp -m connlimit --connlimit-above 2 -j RETURN", "-m connlimit"),
    ("-A POSTROUTING -j LOG", "-j LOG"),
    ("-A POSTROUTING -j NFLOG", "-j NFLOG"),
    ("-A POSTROUTING -m mark --mark 1 -j RETURN", "-m mark"),
    ("-A POSTROUTING -p tcp --sport 1000 -j RETURN", "--sport"),
    ("-A POSTROUTING -p tcp -m multiport --sports 1000,2000 -j RETURN", "--sports"),
    ("-A POSTROUTING -p tcp -m string --string x --algo bm -j RETURN", "-m string"),
    ("-A POSTROUTING -m conntrack --ctorigsrc 10.0.0.1 -j RETURN", "--ctorigsrc"),
    ("-A POSTROUTING -f -j RETURN", "-f"),
    ("-A POSTROUTING -p tcp -m tcp --tcp-option 2 -j RETURN", "--tcp-option"),
    ("-A POSTROUTING -o wan0 -j MASQUERADE --random", "--random"),
    ("-A POSTROUTING -o wan0 -j SNAT --to-source 198.51.100.1 --persistent", "--persistent"),
    ("-A POSTROUTING -o wan0 -j SNAT --to-source 198.51.100.1-198.51.100.3", "198.51.100.1-198.51.100.3"),
    ("-A PREROUTING -p tcp -j DNAT --to-destination 198.51.100.2:80-90", "80-90"),
    # one port for every client port: the template SYN's own port may be it, later SYNs' are not
    ("-A POSTROUTING -p tcp -o wan0 -j SNAT --to-source 198.51.100.1:5000", "198.51.100.1:5000"),
    ("-A SUB -m length --length 60 -j RETURN", "-m length"),
]


@pytest.mark.parametrize(("rule", "why"), UNSAFE, ids=[w for _, w in UNSAFE])
def test_each_unsafe_match_or_target_refuses_templates(rule: str, why: str) -> None:
    engine, clock = _templated(_nat(rule, MASQ)), Clock()
    _send(engine, clock, _syn(40000))
    assert engine.template_requests() == []
    assert engine.templates is not None and why in engine.templates.unsafe
    assert engine.templates.stats["unsafe"] == 1


SAFE = [
    "-A POSTROUTING -p tcp -m tcp --dport 5001 --syn -j SUB",
    "-A POSTROUTING -p tcp -m multiport --dports 5001,5002 -m comment --comment x -j RETURN",
    "-A POSTROUTING -m conntrack --ctstate NEW -m addrtype --dst-type UNICAST -j SUB",
    "-A PREROUTING -m state --state NEW -s 10.0.0.0/8 -d 198.51.100.0/24 -i lan0 -j ACCEPT",
    "-A PREROUTING -i wan0 -p tcp --dport 80 -j DNAT --to-destination 10.0.1.9:8080",
]


@pytest.mark.parametrize("rule", SAFE)
def test_whitelisted_matches_and_targets_allow_templates(rule: str) -> None:
    rules = Ruleset()
    rules.restore(parse_restore(_nat(rule, MASQ), file="test"))
    engine = _templated(_nat(rule, MASQ))
    assert engine.templates is not None
    assert template_unsafe(rules, engine._hooks) is None


def test_a_filter_table_on_forwarded_packets_refuses_templates() -> None:
    engine, clock = _templated(_nat(MASQ, filt="-A FORWARD -p tcp --dport 9 -j DROP")), Clock()
    _send(engine, clock, _syn(40000))
    assert engine.template_requests() == []
    assert engine.templates is not None and "tables besides nat" in engine.templates.unsafe


def test_a_ruleset_change_flushes_the_templates_at_the_next_drain() -> None:
    engine, clock = _templated(), Clock()
    _send(engine, clock, _syn(40000))
    assert [type(r) for r in engine.template_requests()] == [TemplateAdd]
    rules = Ruleset()
    rules.restore(parse_restore(_nat(MASQ, "-A POSTROUTING -j LOG"), file="test"))
    engine.rules = rules
    assert engine.template_requests() == [TemplateFlush("rules")]
    assert engine.templates is not None and not engine.templates.templates
    _send(engine, clock, _syn(40001))  # the new ruleset refuses them
    assert engine.template_requests() == []
    engine.rules = _templated().rules  # safe again: the next SYN makes one
    assert engine.template_requests() == [TemplateFlush("rules")]
    _send(engine, clock, _syn(40002))
    assert [type(r) for r in engine.template_requests()] == [TemplateAdd]


def test_a_route_change_flushes_and_a_neighbour_change_drops_the_templates_using_it() -> None:
    engine, clock = _templated(), Clock()
    _send(engine, clock, _syn(40000))
    engine.template_requests()
    engine.neighs.learn("wan0", SERVER, bytes.fromhex("02000000bb02"), clock.now)
    assert engine.template_requests() == [TemplateDel(("lan0", 6, CLIENT, SERVER, DPORT), "neigh")]
    _send(engine, clock, _syn(40001))
    (req,) = engine.template_requests()
    assert isinstance(req, TemplateAdd) and req.template.plans[0].dst_mac == bytes.fromhex("02000000bb02")
    engine.add_address("wan0", GW_WAN + 5, 24)
    assert engine.template_requests() == [TemplateFlush("route")]


def test_templates_are_bounded_and_the_oldest_goes_first() -> None:
    engine, clock = _templated(), Clock()
    for i in range(TEMPLATE_MAX + 1):
        _send(engine, clock, _syn(20000, dport=1 + i))
    reqs = engine.template_requests()
    assert len(reqs) == TEMPLATE_MAX + 2 and reqs[-2] == TemplateDel(("lan0", 6, CLIENT, SERVER, 1), "evicted")
    assert engine.templates is not None and len(engine.templates.templates) == TEMPLATE_MAX


def test_a_template_ct_is_an_ordinary_ct() -> None:
    engine, clock = _templated(), Clock()
    _send(engine, clock, _syn(40000))
    (conn,) = engine.table.live(clock.now)
    assert conn.status & CtStatus.SRC_NAT and conn.reply.dst == GW_WAN and conn.reply.dport == 40000


CLOSE = [  # a connection that opens, carries a line each way and closes: (from the client, seq, ack, flags, payload)
    (True, 0, 0, tcp.SYN, b""), (False, 0, 1, tcp.SYN | tcp.ACK, b""), (True, 1, 1, tcp.ACK, b""),
    (True, 1, 1, tcp.ACK | tcp.PSH, b"hello"), (False, 1, 6, tcp.ACK | tcp.PSH, b"world"),
    (True, 6, 6, tcp.ACK | tcp.FIN, b""), (False, 6, 7, tcp.ACK | tcp.FIN, b""), (True, 7, 7, tcp.ACK, b""),
]


def test_copies_fed_leave_the_cts_and_counters_the_slow_path_leaves() -> None:
    """The same connections through two engines: one forwards every packet itself, the other gets the
    template's SYN on its slow path and then only copies (track_copy, else receive with CHECKSUM_PARTIAL),
    as the gateway feeds them from the ring buffer."""
    slow, fed, clock = _templated(), _templated(), Clock()
    now = clock.step()
    for engine in (slow, fed):  # the connection that made the template, on both
        assert len(engine.receive(*_syn(39999), now).emitted) == 1
    tracked = 0
    for sport in (40000, 40001):
        for outbound, seq, ack, flags, payload in CLOSE:
            frame, iface = (_client(seq, ack, flags, payload, sport=sport) if outbound
                            else _server(seq, ack, flags, payload, dport=sport))
            now = clock.step()
            assert len(slow.receive(frame, iface, now).emitted) == 1
            if fed.track_copy(frame, iface, now) is not None:
                tracked += 1
            else:
                fed.receive(frame, iface, now, partial=True)
    assert tracked == 2 * 5  # SYN-ACK, ACK, both FINs, the last ACK; the SYN and the established data go whole
    assert [format_conntrack(c, clock.now) for c in fed.table.live(clock.now)] == [
        format_conntrack(c, clock.now) for c in slow.table.live(clock.now)]
    assert [(c.acct_packets, c.acct_bytes, c.timeout) for c in fed.table.live(clock.now)] == [
        (c.acct_packets, c.acct_bytes, c.timeout) for c in slow.table.live(clock.now)]
    assert "TIME_WAIT" in format_conntrack(fed.table.live(clock.now)[-1], clock.now)
    for chain in ("PREROUTING", "POSTROUTING"):
        fc, sc = fed.rules.tables["nat"].chains[chain], slow.rules.tables["nat"].chains[chain]
        assert (fc.packets, fc.bytes) == (sc.packets, sc.bytes)
        assert [(r.packets, r.bytes) for r in fc.rules] == [(r.packets, r.bytes) for r in sc.rules]
    assert fed.rules.tables["nat"].chains["POSTROUTING"].rules[0].packets == 3


def test_no_copy_is_tracked_alone_when_templates_are_unsafe() -> None:
    engine, clock = _templated(_nat(MASQ, "-A POSTROUTING -j LOG")), Clock()
    _send(engine, clock, _syn(40000))
    assert engine.track_copy(_server(0, 1, tcp.SYN | tcp.ACK, dport=40000)[0], "wan0", clock.step()) is None


def _state(engine: Engine, now: float) -> list[object]:
    """What a SYN leaves behind: the cts (as conntrack -L prints them, their accounting, timeouts, status and
    MASQUERADE device), the nat table's counters, the events, NAT's bysource."""
    cts = [(format_conntrack(c, now), c.acct_packets, c.acct_bytes, c.timeout, int(c.status), c.masq_index)
           for c in engine.table.live(now)]
    nat = engine.rules.tables["nat"]
    counters = [(name, chain.packets, chain.bytes, [(r.packets, r.bytes) for r in chain.rules])
                for name, chain in nat.chains.items()]
    events = [(e.kind, e.reason, e.conn.ct_id) for e in engine.table.drain_events()]
    return [cts, counters, events, len(engine.nat), engine.table.stats.insert_failed]


DNAT_SNAT = _nat(f"-A PREROUTING -d {format_addr(SERVER)}/32 -p tcp --dport {DPORT} -j SUB",
                 f"-A SUB -p tcp -j DNAT --to-destination {format_addr(SERVER)}:8080",
                 "-A POSTROUTING -p udp -j ACCEPT",
                 f"-A POSTROUTING -o wan0 -j SNAT --to-source {format_addr(GW_WAN)}")


@pytest.mark.parametrize("rules", [NAT, _nat(MASQ), DNAT_SNAT, _nat("-A POSTROUTING -o lan0 -j MASQUERADE")])
def test_a_syn_opened_from_its_template_leaves_what_the_slow_path_leaves(rules: str) -> None:
    """The same SYNs through two engines: one without templates forwards each on its slow path, the other
    (after the template SYN) creates each SYN's ct from the template's decision (open_copy): the same cts,
    bindings, counters, events. Rulesets: MASQUERADE; a jump to a user chain that DNATs to another port, then
    SNAT; no binding (the null bindings)."""
    slow, fed, clock = _templated(rules, templates=False), _templated(rules), Clock()
    now = clock.step()
    for engine in (slow, fed):
        assert len(engine.receive(*_syn(39999), now).emitted) == 1
    assert fed.templates is not None and len(fed.templates.templates) == 1
    for sport in (40000, 40001, 40002):
        now = clock.step()
        frame, iface = _syn(sport)
        assert len(slow.receive(frame, iface, now).emitted) == 1
        assert fed.open_copy(frame, iface, now)
        assert _state(fed, now) == _state(slow, now)
    assert fed.templates.copies == {"tracked": 0, "opened": 3, "dropped": 0}
    (dnat,) = [c for c in fed.table.live(now) if c.tuples[0].sport == 40000]
    if rules == DNAT_SNAT:
        assert dnat.reply.sport == 8080 and dnat.status & CtStatus.DST_NAT
        assert fed.rules.tables["nat"].chains["SUB"].rules[0].packets == 4
        assert fed.rules.tables["nat"].chains["POSTROUTING"].rules[0].packets == 0


def test_a_taken_tuple_gives_the_slow_paths_binding_and_a_clash_its_drop() -> None:
    """Another client holds GW_WAN:40000 towards the server: NAT's own search picks another port for the
    opened SYN, as on the slow path (the gateway then sees the datapath's binding differ: a disagreement)."""
    slow, fed, clock = _templated(templates=False), _templated(), Clock()
    now = clock.step()
    for engine in (slow, fed):
        engine.receive(*_syn(39999), now)
        engine.receive(*_syn(40000, client=CLIENT + 1), now)
    now = clock.step()
    assert len(slow.receive(*_syn(40000), now).emitted) == 1
    assert fed.open_copy(*_syn(40000), now)
    assert _state(fed, now) == _state(slow, now)
    (conn,) = [c for c in fed.table.live(now) if c.original.src == CLIENT and c.original.sport == 40000]
    assert conn.reply.dport != 40000


def test_no_template_or_a_stale_one_leaves_the_syn_to_the_slow_path() -> None:
    engine, clock = _templated(), Clock()
    assert not engine.open_copy(_syn(40000)[0], "lan0", clock.step())  # no template yet
    _send(engine, clock, _syn(39999))
    assert not engine.open_copy(_syn(40000, flags=tcp.SYN | tcp.ACK)[0], "lan0", clock.step())
    assert not engine.open_copy(_syn(40000, dport=DPORT + 1)[0], "lan0", clock.step())  # another key
    rules = Ruleset()
    rules.restore(parse_restore(_nat(MASQ), file="test"))
    engine.rules = rules
    assert not engine.open_copy(_syn(40000)[0], "lan0", clock.step())  # a new ruleset: the template is gone
    assert engine.templates is not None and engine.templates.copies["opened"] == 0
    assert len(engine.table.live(clock.now)) == 1


def test_a_syn_of_a_ct_in_the_table_is_that_cts_as_on_the_slow_path() -> None:
    """The SYN of a tuple natbox holds: a retransmitted SYN (conntrack alone: the ct's NAT is done), and one
    reopening a closed connection (conntrack makes a new ct, the template's decision binds it)."""
    slow, fed, clock = _templated(templates=False), _templated(), Clock()
    for engine in (slow, fed):
        engine.receive(*_syn(39999), clock.now)
    for sport, packets in ((40000, []), (40001, CLOSE[1:])):
        for engine in (slow, fed):  # the connection on both engines' slow paths
            engine.receive(*_syn(sport), clock.now)
            for outbound, seq, ack, flags, payload in packets:
                engine.receive(*(_client(seq, ack, flags, payload, sport=sport) if outbound
                                 else _server(seq, ack, flags, payload, dport=sport)), clock.now)
        now = clock.step()
        frame, iface = _syn(sport) if not packets else _client(100000, 0, tcp.SYN, sport=sport)
        slow.receive(frame, iface, now)
        assert fed.open_copy(frame, iface, now)
        assert _state(fed, now) == _state(slow, now)
    assert fed.templates is not None and fed.templates.copies["opened"] == 2
    states = [format_conntrack(c, clock.now).split()[3] for c in fed.table.live(clock.now)]
    assert states.count("SYN_SENT") == 3  # the template's, the retransmitted, the reopened
