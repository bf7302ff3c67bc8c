"""New connections in the kernel data path (natbox_offload.bpf.c built with -DNB_NEW_FLOWS), on real devices:
the router of test_datapath_live with its own forwarding off, a template from a natbox engine's SYN installed,
and real TCP connections from the client namespace to the server namespace. Whatever connects went through the
BPF program: its SYN created both directions' entries, every packet of it was copied to the ring buffer, and a
SYN whose tuples natbox's conntrack holds (nb_ct) went up to the stack instead."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from natbox.adapters.netns import enter_netns
from natbox.engine.engine import Engine
from natbox.engine.template import TemplateAdd
from natbox.offload.datapath import ifindex
from natbox.offload.entry import OffloadKey, decode_action
from natbox.offload.newflows import EventRing, NewFlowEvent, decode_event, encode_ct_key, template_entry
from natbox.testing.offload import CLIENT, PUBLIC, SERVER, RouterFlows
from natbox.testing.offload_live import IPV4, Lab, offload_lab
from natbox.wire import ipv4, tcp
from natbox.wire.layout import ETH_HDR_LEN, IPH_MIN_LEN, TCPH_FLAGS

pytestmark = pytest.mark.netns

PORT = 5001
_FLAGS = ETH_HDR_LEN + IPH_MIN_LEN + TCPH_FLAGS


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """The router of test_datapath_live, not forwarding, no kernel NAT, the new-connections build."""
    with offload_lab(IPV4, tmp_path, "nbn", masquerade=False, new_flows=True, programs=()) as lab:
        yield lab


def _template(lab: Lab) -> OffloadKey:
    """A SYN from the client to PORT through a templating engine of the router; its template installed."""
    flows = RouterFlows(*lab.macs)
    engine = Engine(flows.engine.host, ruleset=flows.engine.rules, seed=1, templates=True)
    flows.engine = engine
    flows.feed(ipv4.build_ipv4(CLIENT, SERVER, 6, tcp.build_tcp(CLIENT, SERVER, 39999, PORT, seq=1, ack=0,
                                                                  flags=tcp.SYN)), True)
    (req,) = engine.template_requests()
    assert isinstance(req, TemplateAdd)
    maps = lab.dp.new_flows
    assert maps is not None
    with enter_netns(lab.router):
        entry = template_entry(req.template, ifindex)
    assert entry is not None
    maps.install_template(entry.key, entry.value)
    return entry.reply_key


def _connect(lab: Lab, sport: int, timeout: float = 2.0) -> tuple[bool, tuple[str, int] | None]:
    """Connect from the client's port `sport` to the server; (connected, the peer address the server saw)."""
    with enter_netns(lab.server):
        srv = socket.socket()
    with enter_netns(lab.client):
        cli = socket.socket()
    try:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("198.51.100.2", PORT))
        srv.listen(8)
        srv.settimeout(timeout)
        cli.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        cli.bind(("10.0.1.2", sport))
        cli.settimeout(timeout)
        try:
            cli.connect(("198.51.100.2", PORT))
        except OSError:
            return False, None
        conn, peer = srv.accept()
        cli.sendall(b"hello")
        assert conn.recv(5) == b"hello"
        conn.close()
        cli.close()
        return True, peer
    finally:
        cli.close()
        srv.close()


def _events(ring: EventRing) -> list[NewFlowEvent]:
    out = [decode_event(raw) for raw in ring.consume()]
    assert all(e is not None for e in out)
    return [e for e in out if e is not None]


@pytest.mark.parametrize("libbpf", [False, True], ids=["mapped", "libbpf"])
def test_a_syn_matching_a_template_opens_the_connection_in_the_datapath(lab: Lab, libbpf: bool) -> None:
    """(The ring buffer read directly, mapped as libbpf maps it, and through libbpf: the same records.)"""
    reply_key = _template(lab)
    maps = lab.dp.new_flows
    assert maps is not None
    ring = EventRing(maps.events_fd, libbpf=libbpf)
    assert (ring.fileno() == maps.events_fd) != libbpf  # mapped: the map is the poll descriptor
    try:
        ok, peer = _connect(lab, 40001)
        assert ok and peer == ("198.51.100.1", 40001)  # MASQUERADE kept the port, as the template said
        events = _events(ring)
    finally:
        ring.close()
    with enter_netns(lab.router):
        lan, wan = ifindex("eth0"), ifindex("eth1")
    # the SYN created the entries; every packet of the connection after it was copied too, as it arrived
    assert events[0].created and events[0].ifindex == lan and events[0].data[_FLAGS] == tcp.SYN
    assert not any(e.created for e in events[1:])
    assert events[1].ifindex == wan and events[1].data[_FLAGS] == tcp.SYN | tcp.ACK
    flags = [e.data[_FLAGS] for e in events]
    assert any(f & tcp.FIN for f in flags) and any(f & tcp.PSH for f in flags)
    first = events[1].data
    assert int.from_bytes(first[ETH_HDR_LEN + 16:ETH_HDR_LEN + 20], "big") == PUBLIC  # before the rewrite
    # both directions' entries exist, flagged TRACKED, and the tuples are claimed
    with enter_netns(lab.router):
        orig = lab.dp.action(OffloadKey(lan, 6, CLIENT, SERVER, 40001, PORT))
        back = lab.dp.action(reply_key._replace(dport=40001))
    assert orig is not None and back is not None
    assert decode_action(orig).sport == 40001 and decode_action(back).dport == 40001
    assert maps.cts.lookup(encode_ct_key(CLIENT, SERVER, 40001, PORT, 6)) is not None
    assert maps.cts.lookup(encode_ct_key(SERVER, PUBLIC, PORT, 40001, 6)) is not None


def test_a_syn_whose_tuple_natbox_holds_goes_up(lab: Lab) -> None:
    _template(lab)
    maps = lab.dp.new_flows
    assert maps is not None
    maps.claim(encode_ct_key(SERVER, PUBLIC, PORT, 40002, 6))  # another ct's reply tuple: NAT would pick another
    ring = EventRing(maps.events_fd)
    try:
        ok, _ = _connect(lab, 40002, timeout=1.0)
        assert not ok  # up to the router's stack, whose forwarding is off
        assert _events(ring) == []
        with enter_netns(lab.router):
            assert lab.dp.action(OffloadKey(ifindex("eth0"), 6, CLIENT, SERVER, 40002, PORT)) is None
        # the original tuple it claimed first was given back
        assert maps.cts.lookup(encode_ct_key(CLIENT, SERVER, 40002, PORT, 6)) is None
        ok, _ = _connect(lab, 40003)
        assert ok and len(_events(ring)) > 3
    finally:
        ring.close()


def test_without_a_template_nothing_is_forwarded(lab: Lab) -> None:
    maps = lab.dp.new_flows
    assert maps is not None
    ring = EventRing(maps.events_fd)
    try:
        ok, _ = _connect(lab, 40004, timeout=1.0)
        assert not ok and _events(ring) == []
    finally:
        ring.close()
