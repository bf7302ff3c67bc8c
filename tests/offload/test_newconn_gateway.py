"""gateway/newconn.py without a kernel: the maps and the ring buffer played by the test. Templates become map
updates; the copies a datapath would write are fed to the engine; a flow's entries go when it closes; a binding
natbox does not share is undone; every TCP ct's tuples are claimed and released."""

from __future__ import annotations

import struct
import sys

from tests.engine.test_offload import CLIENT, DPORT, GW_WAN, SERVER, Clock
from tests.engine.test_template import _client, _server, _syn, _templated

from natbox.conntrack.conn import Conn
from natbox.conntrack.tuple import ConnTuple
from natbox.engine.engine import Engine
from natbox.gateway.newconn import NewConnections
from natbox.netfilter import CtStatus
from natbox.offload.entry import OffloadKey, decode_action
from natbox.offload.newflows import EV_COPY, F_TRACKED, encode_ct_key, template_entry, tracked_entries
from natbox.wire import tcp

IFINDEX = {"lan0": 4, "wan0": 5}
CLOSE = [(True, 0, 0, tcp.SYN), (False, 0, 1, tcp.SYN | tcp.ACK), (True, 1, 1, tcp.ACK),
         (True, 1, 1, tcp.ACK | tcp.FIN), (False, 1, 2, tcp.ACK | tcp.FIN), (True, 2, 2, tcp.ACK)]


class Maps:
    def __init__(self) -> None:
        self.templates: dict[OffloadKey, bytes] = {}
        self.claimed: set[bytes] = set()
        self.removed: list[OffloadKey] = []
        self.batches = 0  # deletion calls (each a BPF_MAP_DELETE_BATCH)
        self.released: list[bytes] = []
        self.flows: dict[OffloadKey, bytes] = {}  # TRACKED entries natbox installed (install_tracked)
        self.reopen: set[bytes] = set()  # tuples marked NB_CT_REOPEN

    def install_template(self, key: OffloadKey, value: bytes) -> None:
        self.templates[key] = value

    def remove_template(self, key: OffloadKey) -> None:
        del self.templates[key]

    def claim(self, ct_key: bytes) -> None:
        self.claimed.add(ct_key)

    def release(self, ct_keys: list[bytes]) -> None:
        self.batches += 1
        self.released.extend(ct_keys)
        self.claimed.difference_update(ct_keys)

    def remove_tracked(self, keys: list[OffloadKey]) -> None:
        self.batches += 1
        self.removed.extend(keys)
        for key in keys:
            self.flows.pop(key, None)

    def install_tracked(self, entries: list[tuple[OffloadKey, bytes]]) -> None:
        self.flows.update(entries)

    def mark_reopen(self, ct_keys: list[bytes]) -> None:
        self.reopen.update(ct_keys)  # (the kernel's BPF_EXIST: natbox marks only tuples it holds)


class Ring:
    def __init__(self) -> None:
        self.records: list[bytes] = []

    def consume(self) -> list[bytes]:
        out, self.records = self.records, []
        return out

    def close(self) -> None:
        pass


def _event(frame: bytes, iface: str, created: bool = False) -> bytes:
    """struct nb_event as natbox_offload.bpf.c writes it."""
    data = frame[:EV_COPY]
    return struct.pack("=IHHI4xQ", IFINDEX[iface], len(data), int(created), len(frame), 0) + data.ljust(EV_COPY, b"\0")


def _setup() -> tuple[Engine, NewConnections, Maps, Ring, Clock]:
    engine, clock, maps, ring = _templated(), Clock(), Maps(), Ring()
    names = {v: k for k, v in IFINDEX.items()}
    installed: dict[OffloadKey, bytes] = {}
    conns = NewConnections(engine, maps, ring, IFINDEX.__getitem__, names, action=installed.get,
                           clock=lambda: clock.now)
    engine.receive(*_syn(39999), clock.step())  # natbox's own path: the template
    conns.sync()
    return engine, conns, maps, ring, clock


def _copies(ring: Ring, sport: int, created: bool = True) -> None:
    for i, (outbound, seq, ack, flags) in enumerate(CLOSE):
        frame, iface = _client(seq, ack, flags, sport=sport) if outbound else _server(seq, ack, flags, dport=sport)
        ring.records.append(_event(frame, iface, created and i == 0))


def test_a_template_is_installed_and_a_flow_the_datapath_opened_is_tracked_until_it_closes() -> None:
    engine, conns, maps, ring, clock = _setup()
    (key,) = maps.templates
    assert key == OffloadKey(4, 6, CLIENT, SERVER, 0, DPORT)
    entry = engine.templates and template_entry(next(iter(engine.templates.templates.values())),
                                                IFINDEX.__getitem__)
    assert entry and maps.templates[key] == entry.value
    # natbox's own ct is claimed (both tuples)
    assert encode_ct_key(CLIENT, SERVER, 39999, DPORT, 6) in maps.claimed
    assert encode_ct_key(SERVER, GW_WAN, DPORT, 39999, 6) in maps.claimed
    _copies(ring, 40000)
    clock.step()
    assert conns.drain() == len(CLOSE)
    (conn,) = [c for c in engine.table.live(clock.now) if c.tuples[0].sport == 40000]
    assert conn.tcp is not None and conn.tcp.state.name == "TIME_WAIT" and conn.tuples[1].dport == 40000
    assert conns.stats["created"] == 1 and conns.stats["disagree"] == 0 and conns.stats["closed"] == 1
    # both TRACKED entries went at TIME_WAIT: the SYN's and the reply's (arriving on wan0, the port the wildcard)
    assert maps.removed == [OffloadKey(4, 6, CLIENT, SERVER, 40000, DPORT),
                            OffloadKey(5, 6, SERVER, GW_WAN, DPORT, 40000)]
    assert engine.templates is not None and engine.templates.copies["tracked"] == len(CLOSE) - 1
    assert engine.templates.copies["opened"] == 1  # the SYN: from the template's decision (open_copy)
    # the ct's tuples were claimed by the datapath, and go when it does
    engine.table.delete(conn, clock.now)
    assert encode_ct_key(SERVER, GW_WAN, DPORT, 40000, 6) not in maps.claimed


def test_a_rule_change_removes_the_templates() -> None:
    engine, conns, maps, _, _ = _setup()
    rules = _templated().rules
    engine.rules = rules
    conns.sync()
    assert maps.templates == {} and conns.templates == {}


def test_a_binding_natbox_does_not_share_is_undone() -> None:
    engine, conns, maps, ring, clock = _setup()
    # another client holds GW_WAN:40001 towards the server: natbox's NAT picks another port for this SYN,
    # while the datapath (which, in this race, did not see the claim) used 40001
    engine.receive(*_syn(40001, client=CLIENT + 1), clock.step())
    ring.records.append(_event(_client(0, 0, tcp.SYN, sport=40001)[0], "lan0", created=True))
    conns.drain()
    assert conns.stats["disagree"] == 1 and conns.tracked == {}
    assert engine.templates is not None and engine.templates.copies["opened"] == 1  # NAT's own answer found it
    assert maps.removed == [OffloadKey(4, 6, CLIENT, SERVER, 40001, DPORT),
                            OffloadKey(5, 6, SERVER, GW_WAN, DPORT, 40001)]
    assert encode_ct_key(SERVER, GW_WAN, DPORT, 40001, 6) in maps.claimed  # the other client's: kept


def test_deletions_are_batched_per_drain_and_a_claim_cancels_a_release_waiting() -> None:
    engine, conns, maps, ring, clock = _setup()
    for sport in (40000, 40001, 40002):
        _copies(ring, sport)
    clock.step()
    assert conns.drain() == 3 * len(CLOSE)
    assert conns.stats["closed"] == 3 and len(maps.removed) == 6 and maps.batches == 1  # one call for the 6
    # the cts leave the table (expiry, conntrack -D): their tuples are released at the next drain, at once
    for conn in [c for c in engine.table.live(clock.now) if c.tuples[0].sport in (40000, 40001)]:
        engine.table.delete(conn, clock.now)
    assert maps.released == [] and conns.next_deadline() == 0.0  # waiting: the loop turns again at once
    # meanwhile natbox's own path confirms a ct with the tuples of one of them: its claim stands
    engine.receive(*_syn(40000), clock.step())
    assert encode_ct_key(SERVER, GW_WAN, DPORT, 40000, 6) in maps.claimed
    conns.handle_timers(clock.now)  # (or the next drain)
    assert conns.next_deadline() is None
    assert maps.batches == 2 and maps.released == [encode_ct_key(CLIENT, SERVER, 40001, DPORT, 6),
                                                   encode_ct_key(SERVER, GW_WAN, DPORT, 40001, 6)]
    assert encode_ct_key(SERVER, GW_WAN, DPORT, 40000, 6) in maps.claimed


def test_a_syn_natbox_forwarded_for_a_templates_key_hands_the_rest_of_the_connection_to_the_datapath() -> None:
    engine, conns, maps, ring, clock = _setup()
    (key,) = maps.templates
    _copies(ring, 40000)  # a connection the program opened, closed: its ct in TIME_WAIT holds the tuples
    conns.drain()
    assert conns.stats["closed"] == 1 and maps.flows == {}
    # the client reuses the port: the program's claim fails, the SYN goes up and reopens the ct on natbox's
    # own path, which installs the flow's TRACKED entries before the SYN leaves
    (old,) = [c for c in engine.table.live(clock.now) if c.tuples[0].sport == 40000]
    out = engine.receive(*_client(0, 0, tcp.SYN, sport=40000), clock.step())
    assert [e.iface for e in out.emitted] == ["wan0"]
    (new,) = [c for c in engine.table.live(clock.now) if c.tuples[0].sport == 40000]
    assert new is not old and new.tuples[1] == ConnTuple(SERVER, DPORT, GW_WAN, 40000, 6)
    reply_key = OffloadKey(5, 6, SERVER, GW_WAN, DPORT, 40000)
    assert conns.stats["handed"] == 1 and conns.tracked == {new.ct_id: (key._replace(sport=40000), reply_key)}
    # the entries are what the program creates for a SYN of that port (nb_new_flow), TRACKED
    first, second = tracked_entries(maps.templates[key], key, 40000)
    assert maps.flows == dict([first, second])
    orig, reply = decode_action(first[1]), decode_action(second[1])
    assert (orig.saddr, orig.sport, orig.daddr, orig.dport) == (GW_WAN, 40000, SERVER, DPORT)
    assert (reply.saddr, reply.sport, reply.daddr, reply.dport) == (SERVER, DPORT, CLIENT, 40000)
    assert all(int.from_bytes(v[-4:], sys.byteorder) & F_TRACKED for v in maps.flows.values())
    # the rest of the connection arrives as copies: conntrack follows it to TIME_WAIT, the entries go
    for outbound, seq, ack, flags in CLOSE[1:]:
        frame, iface = _client(seq, ack, flags, sport=40000) if outbound else _server(seq, ack, flags, dport=40000)
        ring.records.append(_event(frame, iface))
    clock.step()
    conns.drain()
    assert new.tcp is not None and new.tcp.state.name == "TIME_WAIT" and new.status & CtStatus.ASSURED
    assert conns.stats["closed"] == 2 and conns.tracked == {} and maps.flows == {}
    assert conns.stats["disagree"] == 0


def test_a_syn_natbox_forwarded_with_another_binding_stays_on_natboxs_path() -> None:
    engine, conns, maps, _, clock = _setup()
    templates = engine.templates
    assert templates is not None and templates.on_opened is not None
    (tkey,) = templates.templates
    # a ct of the template's key whose reply does not keep the client's port (another binding)
    conn = Conn(ConnTuple(CLIENT, 40005, SERVER, DPORT, 6), ConnTuple(SERVER, DPORT, GW_WAN, 1024, 6), now=clock.now,
                ct_id=99)
    templates.on_opened(conn, tkey)
    assert conns.stats["handed"] == 0 and conns.tracked == {} and maps.flows == {}
    # with the template's binding, it is handed over
    conn = Conn(ConnTuple(CLIENT, 40005, SERVER, DPORT, 6), ConnTuple(SERVER, DPORT, GW_WAN, 40005, 6), now=clock.now,
                ct_id=100)
    templates.on_opened(conn, tkey)
    assert conns.stats["handed"] == 1 and list(conns.tracked) == [100] and len(maps.flows) == 2
    # a template gone: nothing
    engine.rules = _templated().rules
    conns.sync()
    conn = Conn(ConnTuple(CLIENT, 40006, SERVER, DPORT, 6), ConnTuple(SERVER, DPORT, GW_WAN, 40006, 6), now=clock.now,
                ct_id=101)
    templates.on_opened(conn, tkey)
    assert conns.stats["handed"] == 1


def test_a_closed_flows_tuples_are_marked_and_a_syn_the_program_reopens_them_with_is_tracked() -> None:
    engine, conns, maps, ring, clock = _setup()
    _copies(ring, 40000)
    conns.drain()
    ok, rk = encode_ct_key(CLIENT, SERVER, 40000, DPORT, 6), encode_ct_key(SERVER, GW_WAN, DPORT, 40000, 6)
    # closed by FINs (IP_CT_TCP_FLAG_CLOSE_INIT): both tuples marked after the entries went, none released
    assert maps.reopen == {ok, rk} and len(maps.removed) == 2 and maps.released == []
    (old,) = [c for c in engine.table.live(clock.now) if c.tuples[0].sport == 40000]
    # the client connects from the same port: the program claims over the marks and opens the flow
    _copies(ring, 40000)
    clock.step()
    conns.drain()
    (new,) = [c for c in engine.table.live(clock.now) if c.tuples[0].sport == 40000]
    assert new is not old and new.tcp is not None and new.tcp.state.name == "TIME_WAIT"  # a TCP reopen
    assert conns.stats["created"] == 2 and conns.stats["disagree"] == 0 and conns.stats["closed"] == 2
    assert maps.released == []  # the old ct's release, made when it went, did not follow the program's claim
    assert engine.templates is not None and engine.templates.copies["opened"] == 2


def test_a_closed_ct_that_leaves_the_table_before_the_flush_is_released_not_marked() -> None:
    engine, conns, maps, ring, clock = _setup()
    _copies(ring, 40000)
    conns.drain()
    (conn,) = [c for c in engine.table.live(clock.now) if c.tuples[0].sport == 40000]
    assert conn.tcp is not None and conn.tcp.state.name == "TIME_WAIT"
    maps.reopen.clear()
    # within one turn: the flow is untracked as closed (its marks wait for the flush), then its ct goes
    conns.tracked[conn.ct_id] = (OffloadKey(4, 6, CLIENT, SERVER, 40000, DPORT),
                                 OffloadKey(5, 6, SERVER, GW_WAN, DPORT, 40000))
    conns._untrack(conn, "closed")
    assert conns.next_deadline() == 0.0
    engine.table.delete(conn, clock.now)
    conns.flush()
    ok, rk = encode_ct_key(CLIENT, SERVER, 40000, DPORT, 6), encode_ct_key(SERVER, GW_WAN, DPORT, 40000, 6)
    assert {ok, rk} <= set(maps.released) and maps.reopen == set()
