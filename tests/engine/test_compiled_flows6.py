"""IPv6 compiled flows (engine/fastpath6.py) change nothing but speed: random traffic, identical results.

As tests/engine/test_compiled_flows.py does for IPv4: hypothesis drives the same random sequence of packets
and events through two engines, one with the fast paths and one without, and compares the frames sent,
the drops, the conntrack entries (TCP window state, timeouts, counters) and the engine's statistics. Flows:
TCP, UDP and ICMPv6 echo through NAT66 MASQUERADE (SNAT), DNAT, both, and plain forwarded (tracked, not
NATed). Traffic the compiled path must hand back unchanged: hop limit 1 (Time Exceeded) and 2 (forwarded with
1), oversize packets (Packet Too Big), extension headers, fragments, corrupted checksums, zero UDP checksums,
truncated frames, offload metadata (partial checksums; GSO super-packets whose segments fit or not, also
given as memoryviews whose payload must stay in place), FIN/RST/SYN, out-of-window segments; events: time jumps past the
timeouts, deleted entries, a conntrack flush, rule changes, a replaced ruleset, route changes, MTU changes.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Neighbour, Route6
from natbox.engine.output import Emitted
from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv, parse_restore
from natbox.testing.compiled_flows import Flow, FlowDriver, Recorder
from natbox.wire import ethernet, tcp
from natbox.wire.checksum import csum_fold, csum_partial
from natbox.wire.gso import GSO_TCPV6, GSO_UDP_L4
from natbox.wire.ipv6 import build_ipv6, parse_addr6
from natbox.wire.layout import ICMP6H_CKSUM, TCPH_CHECK, UDPH_CHECK, UDPH_LEN_BYTES

A = parse_addr6
LAN_MAC = bytes.fromhex("020000000001")
WAN_MAC = bytes.fromhex("020000000101")
SERVER_MAC = bytes.fromhex("02000000aa02")
SERVER = A("2001:db8:100::10")
PUBLIC = A("2001:db8:100::1")
VIP = A("2001:db8:100::9")  # DNATed to SERVER for inside clients: both manips on one flow
INSIDE = A("fd00:1::50")  # the published server
ROUTED = A("2001:db8:1::5")  # an inside host with a global address: forwarded without NAT
C5, C6 = A("fd00:1::5"), A("fd00:1::6")
RULES = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i wan0 -p tcp --dport 8080 -j DNAT --to-destination [fd00:1::50]:80
-A PREROUTING -i wan0 -p udp --dport 8053 -j DNAT --to-destination [fd00:1::50]:53
-A PREROUTING -i lan0 -d 2001:db8:100::9 -j DNAT --to-destination 2001:db8:100::10
-A POSTROUTING -s fd00:1::/64 -o wan0 -j MASQUERADE
COMMIT
"""


# what a replaced ruleset adds: ICMPv6 dropped in FORWARD (a table a compiled flow must not bypass)
NO_PING = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p ipv6-icmp -j DROP
COMMIT
"""


def _ruleset(text: str = RULES) -> Ruleset:
    rules = Ruleset(NFPROTO_IPV6)
    rules.restore(parse_restore(text, file="test", family=NFPROTO_IPV6))
    return rules


def _engine(fast: bool, acct: bool, checksum: bool) -> Engine:
    host = Host(name="gw", ipv6_forward=True)
    host.add_interface(Interface("lan0", mac=LAN_MAC))
    host.add_interface(Interface("wan0", mac=WAN_MAC))
    host.add_address6("lan0", A("fe80::1"), 64)
    host.add_address6("lan0", A("fd00:1::1"), 64)
    host.add_address6("lan0", A("2001:db8:1::1"), 64)
    host.add_address6("wan0", PUBLIC, 64)
    host.routes6.append(Route6(0, 0, "wan0", gateway=A("2001:db8:100::fe")))
    host.neighbours.append(Neighbour("wan0", SERVER, SERVER_MAC))
    host.conntrack.acct = acct
    host.conntrack.checksum = checksum
    engine = Engine(host, ruleset6=_ruleset(), seed=3)
    engine.fast_path = fast
    return engine


def _mac(addr: int) -> bytes:
    return b"\x02\x00" + (addr & 0xFFFFFFFF).to_bytes(4, "big")


def _flows() -> list[Flow]:
    flows = []
    for proto, port in ((6, 80), (17, 53)):
        flows += [
            Flow(proto, (C5, 40000 + proto, _mac(C5), "lan0"), (SERVER, port, SERVER_MAC, "wan0"), (SERVER, port),
                 (PUBLIC, 40000 + proto)),  # SNAT (MASQUERADE keeps the port)
            Flow(proto, (SERVER, 5555 + proto, SERVER_MAC, "wan0"), (INSIDE, port, _mac(INSIDE), "lan0"),
                 (PUBLIC, 8080 if proto == 6 else 8053), (SERVER, 5555 + proto)),  # DNAT
            Flow(proto, (C6, 41000 + proto, _mac(C6), "lan0"), (SERVER, 443, SERVER_MAC, "wan0"), (VIP, 443),
                 (PUBLIC, 41000 + proto)),  # DNAT and SNAT
            Flow(proto, (ROUTED, 42000 + proto, _mac(ROUTED), "lan0"), (SERVER, port, SERVER_MAC, "wan0"),
                 (SERVER, port), (ROUTED, 42000 + proto)),  # plain forwarding (tracked, not NATed)
        ]
    # hairpin: in and out by lan0 (ip6_forward sends redirects: never compiled)
    flows.append(Flow(6, (C5, 43006, _mac(C5), "lan0"), (INSIDE, 80, _mac(INSIDE), "lan0"), (INSIDE, 80),
                      (C5, 43006)))
    # ICMPv6 echo (the "port" is the id): SNAT, DNAT + SNAT, plain
    flows += [
        Flow(58, (C5, 777, _mac(C5), "lan0"), (SERVER, 777, SERVER_MAC, "wan0"), (SERVER, 777), (PUBLIC, 777)),
        Flow(58, (C6, 778, _mac(C6), "lan0"), (SERVER, 778, SERVER_MAC, "wan0"), (VIP, 778), (PUBLIC, 778)),
        Flow(58, (ROUTED, 779, _mac(ROUTED), "lan0"), (SERVER, 779, SERVER_MAC, "wan0"), (SERVER, 779),
             (ROUTED, 779)),
    ]
    return flows


FLOWS = _flows()

_KINDS = ["ack", "ack", "ack", "psh", "psh", "fin", "rst", "syn"]
_DAMAGE = ["none"] * 8 + ["l4_csum", "hop1", "hop2", "oversize", "short", "udp_zero", "exthdr", "frag", "padded"]
packet = st.tuples(
    st.integers(0, len(FLOWS) - 1), st.booleans(), st.sampled_from(_KINDS), st.sampled_from([0, 0, 1, 100, 1400]),
    st.sampled_from([0, 0, 0, 0, -1, 1, 70000, 1 << 31]), st.sampled_from([65535, 65535, 1000, 0]),
    st.sampled_from(_DAMAGE), st.sampled_from(["none"] * 6 + ["partial", "gso", "gso_view"]),
)
event = st.one_of(
    packet.map(lambda p: ("packet", p)),
    st.sampled_from([0.001, 0.5, 2.5, 31.0, 200.0]).map(lambda dt: ("time", dt)),
    st.integers(0, len(FLOWS) - 1).map(lambda i: ("delete", i)),
    st.sampled_from(["rule", "replace", "route", "mtu", "flush"]).map(lambda k: (k, 0)),
)
# warm: two rounds of steady traffic on every flow before the events, so that they start compiled
warmth = st.sampled_from([0, 2, 2])


def _checksum(src: int, dst: int, proto: int, seg: bytearray, at: int) -> None:
    """The TCP/UDP/ICMPv6 checksum with the IPv6 pseudo-header (RFC 8200 §8.1); UDP writes 0 as 0xFFFF."""
    seg[at:at + 2] = b"\0\0"
    total = (src % 0xFFFF) + (dst % 0xFFFF) + len(seg) + proto
    check = csum_fold(csum_partial(seg, total))
    seg[at:at + 2] = (check or (0xFFFF if proto == 17 else 0)).to_bytes(2, "big")


class _Driver(FlowDriver):
    """Sends the same traffic to an engine, tracking each flow's sequence numbers as real ends would."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, FLOWS)

    def send(self, frame: bytes, iface: str, partial: bool = False, gso: tuple[int, int] = (0, 0),
             view: bool = False) -> None:
        given = memoryview(bytearray(frame)) if view else frame  # as the gateway's receive ring hands it over
        self.record(self.engine.receive(given, iface, self.now, gso_type=gso[0], gso_size=gso[1], partial=partial))

    def open(self, rounds: int = 0) -> None:
        """Handshakes for the TCP flows, a request and an answer for the others; then `rounds` of steady
        traffic both ways."""
        for i, f in enumerate(FLOWS):
            if f.proto == 6:
                self.segment(i, False, "syn", 0, 0, 65535, "none")
                self.segment(i, True, "synack", 0, 0, 65535, "none")
                self.segment(i, False, "ack", 0, 0, 512, "none")
            else:
                self.segment(i, False, "ack", 10, 0, 0, "none")
                self.segment(i, True, "ack", 10, 0, 0, "none")
        for round_ in range(rounds):
            for i, f in enumerate(FLOWS):
                self.segment(i, False, "psh", 100 + round_, round_ if f.proto == 58 else 0, 65535, "none")
                self.segment(i, True, "ack", round_, round_ if f.proto == 58 else 0, 65535, "none")

    def segment(self, i: int, back: bool, kind: str, length: int, dseq: int, win: int, damage: str,
                offload: str = "none", payload: bytes | None = None) -> None:
        f = FLOWS[i]
        s, sp, d, dp = self.l3(f, back)
        if damage == "oversize":  # a valid packet, too big for the out MTU
            length = 1500
        gso = offload.startswith("gso") and f.proto != 58
        gso_size = 1480 if damage == "oversize" else 1000  # 1480: segments over the 1500-byte MTU
        if gso:  # a GSO super-packet of three segments
            length = 3 * gso_size
        if payload is None:
            payload = bytes((i * 7 + n) & 0xFF for n in range(length))
        if f.proto == 58:
            itype = (139 if kind == "rst" else 128) if not back else 129
            seg = bytearray((itype, 0, 0, 0)) + sp.to_bytes(2, "big") + (dseq & 0xFFFF).to_bytes(2, "big") + payload
            _checksum(s, d, 58, seg, ICMP6H_CKSUM)
        elif f.proto == 17:
            ulen = UDPH_LEN_BYTES + len(payload)
            seg = bytearray(sp.to_bytes(2, "big") + dp.to_bytes(2, "big") + ulen.to_bytes(2, "big") + b"\0\0" + payload)
            if damage != "udp_zero":
                _checksum(s, d, 17, seg, UDPH_CHECK)
        else:
            mine, theirs = (1, 0) if back else (0, 1)
            seq = (self.seq[i][mine] + dseq) & 0xFFFFFFFF
            ack = self.seq[i][theirs] & 0xFFFFFFFF
            flags = {"ack": tcp.ACK, "psh": tcp.ACK | tcp.PSH, "fin": tcp.ACK | tcp.FIN, "rst": tcp.RST | tcp.ACK,
                     "syn": tcp.SYN, "synack": tcp.SYN | tcp.ACK}[kind]
            opts = bytes((2, 4, 5, 160, 4, 2, 3, 3, 7, 1)) if flags & tcp.SYN else b""
            seg = bytearray(tcp.build_tcp(0, 0, sp, dp, seq=seq, ack=ack if flags & tcp.ACK else 0, flags=flags,
                                          window=win, options=opts, payload=payload))
            _checksum(s, d, 6, seg, TCPH_CHECK)
            if dseq == 0 and damage == "none":
                self.seq[i][mine] = (seq + len(payload) + (1 if flags & (tcp.SYN | tcp.FIN) else 0)) & 0xFFFFFFFF
        if gso and damage != "udp_zero":  # CHECKSUM_PARTIAL: the field holds the pseudo-header sum (tcp_v6_send_check)
            at = TCPH_CHECK if f.proto == 6 else UDPH_CHECK
            seg[at:at + 2] = ((s % 0xFFFF + d % 0xFFFF + len(seg) + f.proto - 1) % 0xFFFF + 1).to_bytes(2, "big")
        if damage == "l4_csum":
            seg[{6: TCPH_CHECK, 17: UDPH_CHECK, 58: ICMP6H_CKSUM}[f.proto] + 1] ^= 0x01
        nexthdr = f.proto
        if damage == "exthdr":  # a Hop-by-Hop header with one PadN option
            seg, nexthdr = bytearray((nexthdr, 0, 1, 4, 0, 0, 0, 0)) + seg, 0
        elif damage == "frag":  # an atomic fragment (offset 0, no more fragments)
            seg, nexthdr = bytearray((nexthdr, 0, 0, 0, 0, 0, 0x12, 0x34)) + seg, 44
        hlim = {"hop1": 1, "hop2": 2}.get(damage, 64)
        dgram = bytes(build_ipv6(s, d, nexthdr, seg, hop_limit=hlim))
        src = f.server if back else f.client
        frame = bytes(ethernet.build_ethernet(WAN_MAC if src[3] == "wan0" else LAN_MAC, src[2], ethernet.ETH_P_IPV6,
                                              dgram))
        if damage == "short":
            frame = frame[:-3]
        elif damage == "padded":  # Ethernet padding past the payload length: trimmed by ip6_rcv_core
            frame += bytes(6)
        if gso:
            self.send(frame, src[3], True, (GSO_TCPV6 if f.proto == 6 else GSO_UDP_L4, gso_size), offload == "gso_view")
        else:
            self.send(frame, src[3], offload == "partial")

    def apply(self, ev: tuple[str, object]) -> bool:
        kind, _arg = ev
        engine = self.engine
        if kind == "rule":
            engine.rules6.execute(parse_argv(["-t", "nat", "-I", "POSTROUTING", "-p", "ipv6-icmp", "-j", "ACCEPT"],
                                             family=NFPROTO_IPV6))
        elif kind == "replace":
            # a new ruleset object (ip6tables-restore, SIGHUP) whose version number happens to be the old one's:
            # with a filter table that drops ICMPv6, then without it again
            new = _ruleset(RULES if "filter" in engine.rules6.present else RULES + NO_PING)
            new.version = engine.rules6.version
            engine.rules6 = new
        elif kind == "route":  # the server's /128 through another gateway, or back to the default route
            routes = engine.host.routes6
            if len(routes) == 1:
                routes.append(Route6(SERVER, 128, "wan0", gateway=A("2001:db8:100::fd")))
            else:
                del routes[1:]
            engine.fib6.rebuild()
        elif kind == "mtu":
            wan = engine.host.interfaces["wan0"]
            wan.mtu = 1280 if wan.mtu == 1500 else 1500
        else:
            return super().apply(ev)
        return True

    def state(self) -> list[object]:
        counters = [(t.name, c.name, c.packets, c.bytes, [(r.packets, r.bytes) for r in c.rules])
                    for t in self.engine.rules6.tables.values() for c in t.chains.values()]
        return [self.conntrack_rows(), dict(self.engine.stats), self.engine.table.stats.as_dict(),
                sorted(self.engine.neighs6.show()), counters]


def _run(fast: bool, acct: bool, checksum: bool, events: list[tuple[str, object]],
         warm: int = 0) -> tuple[list[object], list[object]]:
    drv = _Driver(_engine(fast, acct, checksum))
    drv.open(warm)
    for ev in events:
        assert drv.apply(ev), ev
    return drv.out, drv.state()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(event, max_size=60), acct=st.booleans(), checksum=st.booleans(), warm=warmth)
def test_random_ipv6_traffic_is_identical_with_and_without_compiled_flows(
    events: list[tuple[str, object]], acct: bool, checksum: bool, warm: int
) -> None:
    slow = _run(False, acct, checksum, events, warm)
    fast = _run(True, acct, checksum, events, warm)
    assert fast[0] == slow[0]
    assert fast[1] == slow[1]


def _steady_driver(fast: bool) -> _Driver:
    drv = _Driver(_engine(fast, True, True))
    drv.open(3)  # the second packet of each direction compiles the flow
    return drv


def test_compiled_ipv6_flows_carry_steady_traffic() -> None:
    """The differential test would pass vacuously if nothing were compiled: steady traffic on every flow
    (TCP, UDP, ICMPv6 echo; SNAT, DNAT, both, none) is forwarded by compiled flows without the slow path."""
    drv = _steady_driver(True)
    engine = drv.engine
    assert len(engine._flowcache6.flows) == 2 * (len(FLOWS) - 1)  # all but the hairpin flow
    assert {fl.plan.family for fl in engine._flowcache6.flows.values()} == {NFPROTO_IPV6}
    recorder = Recorder(engine, [])  # counts the calls that took the slow path
    drv.engine = recorder  # type: ignore[assignment]
    before = len(drv.out)
    for i, f in enumerate(FLOWS):
        drv.segment(i, False, "psh", 100, 5 if f.proto == 58 else 0, 65535, "hop2")
        drv.segment(i, True, "ack", 0, 5 if f.proto == 58 else 0, 65535, "padded")
    assert recorder.slow == 2  # the hairpin flow's
    assert len(drv.out) - before >= 2 * len(FLOWS)
    # and what the plan does not cover takes the slow path: hop limit 1, too big, an extension header
    for damage in ("hop1", "oversize", "exthdr"):
        drv.segment(0, False, "psh", 10, 0, 65535, damage)
    assert recorder.slow == 5


def test_ipv6_gso_packets_leave_whole_with_their_payload_in_place() -> None:
    """A GSO super-packet of a compiled TCP or UDP flow with a partial checksum is forwarded by the plan, whole,
    with its GSO metadata and the checksum field updated in partial form; given as a view, only its headers are
    copied and the payload leaves as the very view (as IPv4's executor does). Segments over the MTU: the slow
    path (Packet Too Big)."""
    drv = _steady_driver(True)
    captured: list[Emitted] = []
    rec = Recorder(drv.engine, captured)
    drv.engine = rec  # type: ignore[assignment]
    for i, f in enumerate(FLOWS[:8]):  # TCP and UDP: SNAT, DNAT, both, none
        drv.segment(i, False, "psh", 0, 0, 65535, "none", "gso_view")
        (e,) = captured[-1:]
        assert e.tail is not None and len(e.tail) == 3000 and not isinstance(e.tail.obj, bytes)
        assert (e.gso_type, e.gso_size, e.partial) == (GSO_TCPV6 if f.proto == 6 else GSO_UDP_L4, 1000, True)
        assert len(e.frame) == 14 + 40 + (20 if f.proto == 6 else UDPH_LEN_BYTES)
    assert rec.slow == 0
    drv.segment(0, False, "psh", 0, 0, 65535, "oversize", "gso_view")
    assert rec.slow == 1


def test_steady_ipv6_traffic_on_every_flow_is_identical() -> None:
    """Every flow kind in steady state, where compiled flows carry nearly every packet, byte for byte."""
    fast, slow = _steady_driver(True), _steady_driver(False)
    assert fast.out == slow.out
    assert fast.state() == slow.state()


def test_ipv6_plans_are_plain_data() -> None:
    """A plan is JSON-ready data saying its family; NAT66 plans write 128-bit addresses."""
    drv = _steady_driver(True)
    plans = [fl.plan.as_dict() for fl in drv.engine._flowcache6.flows.values()]
    assert all(p["family"] == NFPROTO_IPV6 and p["ip_add"] == 0 for p in plans)
    written = PUBLIC.to_bytes(16, "big") + SERVER.to_bytes(16, "big") + (40006).to_bytes(2, "big") + b"\0P"  # :80
    snat = next(p for p in plans if p["proto"] == 6 and p["direction"] == 0 and p["iif"] == "lan0"
                and p["new_addrs"] == written.hex())
    assert snat["l4_rewrite"] is True
    assert snat["oif"] == "wan0" and snat["dst_mac"] == SERVER_MAC.hex()


def _matrix(fast: bool, checksum: bool) -> tuple[list[object], list[object]]:
    """Every damage and offload on every compiled flow and direction, each followed by a clean packet; then
    every event, each followed by a clean packet on every flow: what random traffic reaches only rarely."""
    drv = _Driver(_engine(fast, True, checksum))
    drv.open(2)
    for damage in [*_DAMAGE[8:], "partial", "gso", "gso_view"]:
        for i in range(len(FLOWS)):
            for back in (False, True):
                offload = damage if damage in ("partial", "gso", "gso_view") else "none"
                drv.segment(i, back, "psh", 100, 0, 65535, "none" if offload != "none" else damage, offload)
                drv.segment(i, back, "psh", 10, 0, 65535, "none")
    for damage in ("oversize", "l4_csum", "udp_zero"):  # GSO packets with segments too big, a bad field, no sum
        for i in range(len(FLOWS)):
            drv.segment(i, False, "psh", 100, 0, 65535, damage, "gso_view")
            drv.segment(i, False, "psh", 10, 0, 65535, "none")
    for ev in [("rule", 0), ("route", 0), ("mtu", 0), ("replace", 0), ("replace", 0), ("route", 0), ("time", 31.0),
               ("time", 200.0), ("delete", 0), ("delete", 11), ("flush", 0)]:
        drv.apply(ev)
        for length in (100, 1300, 100):  # 1300: too big once the MTU is 1280
            for i in range(len(FLOWS)):
                for back in (False, True):
                    drv.segment(i, back, "psh", length, 0, 65535, "none")
    return drv.out, drv.state()


def test_every_damage_and_event_on_compiled_ipv6_flows_is_identical() -> None:
    for checksum in (True, False):
        assert _matrix(True, checksum) == _matrix(False, checksum)


def test_a_udp_checksum_nat_makes_zero_leaves_as_ffff() -> None:
    """`udp_manip_pkt`'s CSUM_MANGLED_0: a UDP checksum that NAT66 turns into 0 is sent as 0xFFFF, by the
    compiled flow as by the slow path. The datagram's last payload word is chosen so that the NATed datagram's
    checksum, computed from scratch, is 0."""
    i = next(k for k, f in enumerate(FLOWS) if f.proto == 17 and f.s_dst[0] == PUBLIC and f.c_dst[0] == SERVER)
    f = FLOWS[i]
    body = bytes(range(30))
    seg = bytearray(f.s_dst[1].to_bytes(2, "big") + (53).to_bytes(2, "big") + (8 + len(body) + 2).to_bytes(2, "big")
                    + b"\0\0" + body + b"\0\0")
    total = (PUBLIC % 0xFFFF) + (SERVER % 0xFFFF) + len(seg) + 17 + csum_partial(seg)  # as NAT leaves it
    payload = body + ((-total) % 0xFFFF).to_bytes(2, "big")
    outs = []
    for fast in (True, False):
        drv = _Driver(_engine(fast, True, True))
        drv.open(2)
        before = len(drv.out)
        drv.segment(i, False, "psh", 0, 0, 0, "none", payload=payload)
        (sent,) = drv.out[before:]
        assert isinstance(sent, tuple) and sent[0] == "wan0"
        frame = sent[1]
        assert isinstance(frame, bytes) and frame[14 + 40 + UDPH_CHECK:14 + 40 + UDPH_CHECK + 2] == b"\xff\xff"
        outs.append((drv.out, drv.state()))
        if fast:
            assert any(fl.plan.proto == 17 and fl.plan.l4_rewrite for fl in drv.engine._flowcache6.flows.values())
    assert outs[0] == outs[1]
