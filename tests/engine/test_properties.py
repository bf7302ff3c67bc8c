"""Properties of the whole engine (hypothesis): untrusted bytes never raise, and state stays consistent."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ipv4

RULES = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i eth1 -p tcp --dport 80 -j DNAT --to-destination 192.168.50.9:8080
-A POSTROUTING -o eth1 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A INPUT -p udp --dport 9 -j REJECT --reject-with icmp-port-unreachable
-A INPUT -p tcp --dport 9 -j REJECT --reject-with tcp-reset
COMMIT
"""
MAC0 = bytes.fromhex("020000000001")
MAC1 = bytes.fromhex("020000000101")
IFACES = ("eth0", "eth1", "lo", "missing")


def _engine() -> Engine:
    host = Host(ip_forward=True)
    host.add_interface(Interface("eth0", mac=MAC0, mtu=576))
    host.add_interface(Interface("eth1", mac=MAC1))
    host.add_address("eth0", parse_addr("192.168.50.1"), 24)
    host.add_address("eth1", parse_addr("198.51.100.1"), 24)
    rs = Ruleset()
    rs.restore(parse_restore(RULES, file="props"))
    return Engine(host, ruleset=rs, seed=3)


def _valid_ish(src: int, dst: int, proto: int, payload: bytes, ttl: int, frag: int) -> bytes:
    """A well-formed IPv4 header over arbitrary transport bytes (gets past ip_rcv_core)."""
    d = ipv4.build_ipv4(src, dst, proto, payload, ttl=ttl, mf=bool(frag & 1), frag_offset=(frag >> 1) * 8)
    return bytes(d)


addrs = st.sampled_from([parse_addr(a) for a in ("192.168.50.2", "192.168.50.1", "198.51.100.1",
                                                   "198.51.100.2", "127.0.0.1", "255.255.255.255",
                                                   "224.0.0.1", "0.0.0.0", "192.168.50.255")])
datagrams = st.builds(_valid_ish, addrs, addrs, st.sampled_from([1, 6, 17, 47, 132, 253]),
                      st.binary(max_size=120), st.integers(0, 255), st.integers(0, 40))
frames = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda dst, eth, body: dst + bytes.fromhex("0200000000aa") + eth + body,
              st.sampled_from([MAC0, MAC1, b"\xff" * 6, bytes(6)]),
              st.sampled_from([b"\x08\x00", b"\x08\x06", b"\x81\x00", b"\x86\xdd"]),
              st.one_of(st.binary(max_size=120), datagrams)),
)
events = st.lists(st.tuples(st.sampled_from(["frame", "ip", "local"]), st.sampled_from(IFACES),
                            st.one_of(frames, datagrams), st.floats(0, 200)), min_size=1, max_size=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_engine_never_raises_and_the_table_stays_consistent(evs: list[tuple[str, str, bytes, float]]) -> None:
    engine = _engine()
    now = 0.0
    for kind, iface, data, dt in evs:
        now += dt
        if kind == "frame":
            out = engine.receive(data, iface, now)
        elif kind == "ip":
            out = engine.receive_ip(data, iface, now)
        else:
            out = engine.send_local(data, now)
        for em in out.emitted:
            assert em.iface in engine.host.interfaces
        if not int(now) % 7:
            engine.handle_timers(now)
    # no two live entries share a tuple (an entry's own two tuples may be equal: X -> X with no ports),
    # and every entry is hashed under both of its tuples
    owner: dict[tuple[int, int, int, int, int], int] = {}
    for conn in engine.table.live(now):
        for t in conn.tuples:
            assert owner.setdefault(t, conn.ct_id) == conn.ct_id
            hit = engine.table.lookup(t, now)
            assert hit is not None and hit[0] is conn
