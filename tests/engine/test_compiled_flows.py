"""Compiled flows (engine/fastpath.py) change nothing but speed: random traffic, identical results.

Hypothesis drives the same random sequence of packets and events through two engines, one with the fast
paths and one without, and compares everything: the frames sent, the drops, the conntrack entries with
their TCP window-tracking state, timeouts and counters, and the engine's statistics. The traffic mixes
what the compiled path handles (in-window ACKs and data, UDP both ways) with everything it must hand
back unchanged: GSO super-packets and partial checksums, segments out of window, SACK blocks, zero
windows, retransmissions, FIN/RST/SYN,
corrupted checksums, TTL 1, oversize packets, zero UDP checksums, time jumps past the timeouts,
deleted entries and rule changes; over SNAT, DNAT and both at once, with accounting and checksum
verification switched on and off.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natbox.adapters.vnet import tx_hdr_ready
from natbox.conntrack.tuple import parse_addr
from natbox.engine import fastpath
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Neighbour
from natbox.engine.output import Emitted
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv, parse_restore
from natbox.testing.compiled_flows import Flow, FlowDriver, Recorder
from natbox.wire import ethernet, ipv4, tcp, udp
from natbox.wire.checksum import internet_checksum, pseudo_header_sum
from natbox.wire.gso import GSO_TCPV4

LAN_MAC = bytes.fromhex("020000000001")
WAN_MAC = bytes.fromhex("020000000101")
SERVER_MAC = bytes.fromhex("02000000aa02")
SERVER = parse_addr("198.51.100.2")
PUBLIC = parse_addr("198.51.100.1")
VIP = parse_addr("198.51.100.9")  # DNATed to SERVER for inside clients: both manips on one flow
INSIDE = parse_addr("10.0.1.50")  # the published server
RULES = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i eth1 -p tcp --dport 8080 -j DNAT --to-destination 10.0.1.50:80
-A PREROUTING -i eth1 -p udp --dport 8053 -j DNAT --to-destination 10.0.1.50:53
-A PREROUTING -i eth0 -d 198.51.100.9 -j DNAT --to-destination 198.51.100.2
-A POSTROUTING -o eth1 -j MASQUERADE
COMMIT
"""


def _engine(fast: bool, acct: bool, checksum: bool) -> Engine:
    host = Host(name="gw", ip_forward=True)
    host.add_interface(Interface("eth0", mac=LAN_MAC))
    host.add_interface(Interface("eth1", mac=WAN_MAC))
    host.add_address("eth0", parse_addr("10.0.0.1"), 16)
    host.add_address("eth1", PUBLIC, 24)
    host.neighbours.append(Neighbour("eth1", SERVER, SERVER_MAC))
    host.conntrack.acct = acct
    host.conntrack.checksum = checksum
    rules = Ruleset()
    rules.restore(parse_restore(RULES, file="test"))
    engine = Engine(host, ruleset=rules, seed=3)
    engine.fast_path = fast
    return engine


FLOWS = [
    # SNAT only: an inside client to the server (MASQUERADE keeps the port: one flow per source port)
    Flow(6, (parse_addr("10.0.1.5"), 40000, b"\x02\x00\x0a\x00\x01\x05", "eth0"),
         (SERVER, 80, SERVER_MAC, "eth1"), (SERVER, 80), (PUBLIC, 40000)),
    # DNAT only: the server reaches the published port
    Flow(6, (SERVER, 5555, SERVER_MAC, "eth1"), (INSIDE, 80, b"\x02\x00\x0a\x00\x01\x32", "eth0"),
         (PUBLIC, 8080), (SERVER, 5555)),
    # DNAT and SNAT: an inside client to the VIP
    Flow(6, (parse_addr("10.0.1.6"), 40001, b"\x02\x00\x0a\x00\x01\x06", "eth0"),
         (SERVER, 443, SERVER_MAC, "eth1"), (VIP, 443), (PUBLIC, 40001)),
    Flow(17, (parse_addr("10.0.1.5"), 40002, b"\x02\x00\x0a\x00\x01\x05", "eth0"),
         (SERVER, 53, SERVER_MAC, "eth1"), (SERVER, 53), (PUBLIC, 40002)),
    Flow(17, (SERVER, 5556, SERVER_MAC, "eth1"), (INSIDE, 53, b"\x02\x00\x0a\x00\x01\x32", "eth0"),
         (PUBLIC, 8053), (SERVER, 5556)),
    Flow(17, (parse_addr("10.0.1.6"), 40003, b"\x02\x00\x0a\x00\x01\x06", "eth0"),
         (SERVER, 53, SERVER_MAC, "eth1"), (VIP, 53), (PUBLIC, 40003)),
    # ICMP echo (the "port" is the id): SNAT only, and DNAT + SNAT
    Flow(1, (parse_addr("10.0.1.5"), 777, b"\x02\x00\x0a\x00\x01\x05", "eth0"),
         (SERVER, 777, SERVER_MAC, "eth1"), (SERVER, 777), (PUBLIC, 777)),
    Flow(1, (parse_addr("10.0.1.6"), 778, b"\x02\x00\x0a\x00\x01\x06", "eth0"),
         (SERVER, 778, SERVER_MAC, "eth1"), (VIP, 778), (PUBLIC, 778)),
]

# a packet: (flow, from the server?, kind, payload length, seq offset, ack offset, window, options, damage)
_KINDS = ["ack", "ack", "ack", "psh", "psh", "ece", "fin", "rst", "syn", "urg"]
_OPTIONS = ["none", "none", "ts", "sack", "sack_far", "junk"]
_DAMAGE = ["none"] * 8 + ["ip_csum", "l4_csum", "ttl1", "oversize", "short", "udp_zero", "ipopt", "frag"]
packet = st.tuples(
    st.integers(0, len(FLOWS) - 1), st.booleans(), st.sampled_from(_KINDS), st.sampled_from([0, 0, 1, 100, 1400]),
    st.sampled_from([0, 0, 0, 0, -1, 1, -70000, 70000, 1 << 31]),
    st.sampled_from([0, 0, 0, 0, -1, 1, 66001, -66001, 1 << 31]),
    st.sampled_from([65535, 65535, 1000, 0, 1]), st.sampled_from(_OPTIONS), st.sampled_from(_DAMAGE),
    st.sampled_from(["none", "none", "partial", "gso"]),
)
event = st.one_of(
    packet.map(lambda p: ("packet", p)),
    st.sampled_from([0.001, 0.5, 2.5, 31.0, 200.0, 301.0]).map(lambda dt: ("time", dt)),
    st.integers(0, len(FLOWS) - 1).map(lambda i: ("delete", i)),
    st.just(("rule", 0)),
    st.just(("mtu", 0)),
)


class _Driver(FlowDriver):
    """Sends the same traffic to an engine, tracking each flow's sequence numbers as real ends would."""

    def __init__(self, engine: Engine, views: bool = False) -> None:
        super().__init__(engine, FLOWS)
        self.views = views  # frames go in as memoryviews of a buffer reused for the next frame (the ring)

    def frame(self, flow: Flow, back: bool, datagram: bytes | bytearray) -> tuple[bytes, str]:
        src = flow.server if back else flow.client
        mac = WAN_MAC if src[3] == "eth1" else LAN_MAC
        return bytes(ethernet.build_ethernet(mac, src[2], ethernet.ETH_P_IP, datagram)), src[3]

    def send(self, frame: bytes, iface: str, gso: int = 0, partial: bool = False) -> None:
        buf = bytearray(frame)
        res = self.engine.receive(memoryview(buf) if self.views else frame, iface, self.now,
                                  gso_type=GSO_TCPV4 if gso else 0, gso_size=gso, partial=partial)
        self.record(res)
        buf[:] = bytes(len(buf))  # the slot is reused: nothing may still read it

    def open(self) -> None:
        """Handshakes for the TCP flows, a request and an answer for the UDP ones."""
        for i, f in enumerate(FLOWS):
            s, sp, d, dp = self.l3(f, False)
            bs, bsp, bd, bdp = self.l3(f, True)
            if f.proto == 1:
                self.segment(i, False, "ack", 8, 0, 0, 0, "none", "none")
                self.segment(i, True, "ack", 8, 0, 0, 0, "none", "none")
            elif f.proto == 6:
                c, r = self.seq[i]
                opts = bytes((2, 4, 5, 180, 4, 2, 3, 3, 7, 1))  # MSS, SACK_PERM, WSCALE 7
                self.send(*self.frame(f, False, ipv4.build_ipv4(s, d, 6, tcp.build_tcp(
                    s, d, sp, dp, seq=c, flags=tcp.SYN, options=opts))))
                self.send(*self.frame(f, True, ipv4.build_ipv4(bs, bd, 6, tcp.build_tcp(
                    bs, bd, bsp, bdp, seq=r, ack=c + 1, flags=tcp.SYN | tcp.ACK, options=opts))))
                self.seq[i] = [c + 1, r + 1]
                self.segment(i, False, "ack", 0, 0, 0, 512, "none", "none")
            else:
                self.segment(i, False, "ack", 10, 0, 0, 0, "none", "none")
                self.segment(i, True, "ack", 10, 0, 0, 0, "none", "none")

    def segment(self, i: int, back: bool, kind: str, length: int, dseq: int, dack: int, win: int, opt: str,
                damage: str, offload: str = "none") -> None:
        f = FLOWS[i]
        if offload == "gso" and f.proto == 6:
            length = 3000
        s, sp, d, dp = self.l3(f, back)
        payload = bytes((i * 7 + n) & 0xFF for n in range(length))
        if f.proto == 1:
            itype = (13 if kind == "rst" else 8) if not back else (14 if kind == "rst" else 0)
            body = bytearray((itype, 0, 0, 0)) + sp.to_bytes(2, "big") + (dseq & 0xFFFF).to_bytes(2, "big") + payload
            body[2:4] = internet_checksum(body).to_bytes(2, "big")
            seg = bytes(body)
        elif f.proto == 17:
            seg = udp.build_udp(s, d, sp, dp, payload, zero_checksum=damage == "udp_zero")
        else:
            mine, theirs = (1, 0) if back else (0, 1)
            seq = (self.seq[i][mine] + dseq) & 0xFFFFFFFF
            ack = (self.seq[i][theirs] + dack) & 0xFFFFFFFF
            flags = {"ack": tcp.ACK, "psh": tcp.ACK | tcp.PSH, "ece": tcp.ACK | 0x40 | 0x80, "fin": tcp.ACK | tcp.FIN,
                     "rst": tcp.RST | tcp.ACK, "syn": tcp.SYN, "urg": tcp.ACK | 0x20}[kind]
            options = {"none": b"", "ts": bytes((1, 1, 8, 10)) + bytes(8),
                       "sack": bytes((1, 1, 5, 10)) + ((ack - 200) & 0xFFFFFFFF).to_bytes(4, "big")
                       + ((ack - 100) & 0xFFFFFFFF).to_bytes(4, "big"),
                       "sack_far": bytes((1, 1, 5, 10)) + ack.to_bytes(4, "big")
                       + ((ack + 5_000_000) & 0xFFFFFFFF).to_bytes(4, "big"),
                       "junk": bytes((1, 9, 1, 0))}[opt]
            seg = tcp.build_tcp(s, d, sp, dp, seq=seq, ack=ack, flags=flags, window=win, options=options,
                                payload=payload)
            if dseq == 0 and damage == "none":
                self.seq[i][mine] = (seq + length + (1 if flags & (tcp.SYN | tcp.FIN) else 0)) & 0xFFFFFFFF
        dgram = ipv4.build_ipv4(s, d, f.proto, seg, ttl=1 if damage == "ttl1" else 64, ident=length * 31 + i,
                                df=True, options=bytes((1, 1, 1, 0)) if damage == "ipopt" else b"",
                                mf=damage == "frag")
        if damage == "ip_csum":
            dgram[10] ^= 0x40
        elif damage == "l4_csum":
            dgram[20 + {6: 16, 17: 6, 1: 2}[f.proto]] ^= 0x01
        elif damage == "oversize":
            dgram = ipv4.build_ipv4(s, d, f.proto, bytes(seg) + bytes(1500), df=True)
        partial = offload != "none" and f.proto != 1
        if partial:  # the sender leaves the pseudo-header sum in the checksum field (CHECKSUM_PARTIAL)
            cpos = 20 + (16 if f.proto == 6 else 6)
            if damage != "l4_csum":
                total = pseudo_header_sum(s, d, f.proto, len(dgram) - 20)
                total = (total & 0xFFFF) + (total >> 16)
                dgram[cpos:cpos + 2] = ((total & 0xFFFF) + (total >> 16)).to_bytes(2, "big")
        frame, iface = self.frame(f, back, dgram)
        if damage == "short":
            frame = frame[:-3]
        self.send(frame, iface, 1000 if offload == "gso" and f.proto == 6 else 0, partial)

    def apply(self, ev: tuple[str, object]) -> bool:
        kind, _arg = ev
        if kind == "rule":
            self.engine.rules.execute(parse_argv(["-t", "nat", "-I", "POSTROUTING", "-p", "icmp", "-j", "ACCEPT"]))
        elif kind == "mtu":
            self.engine.host.interfaces["eth1"].mtu = 1000 if self.engine.host.interfaces["eth1"].mtu == 1500 else 1500
        else:
            return super().apply(ev)
        return True

    def state(self) -> list[object]:
        return [self.conntrack_rows(), dict(self.engine.stats), self.engine.table.stats.as_dict(),
                sorted(self.engine.neighs.show())]


def _run(fast: bool, acct: bool, checksum: bool, events: list[tuple[str, object]],
         views: bool = False) -> tuple[list[object], list[object]]:
    drv = _Driver(_engine(fast, acct, checksum), views)
    drv.open()
    for ev in events:
        assert drv.apply(ev), ev
    return drv.out, drv.state()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(event, max_size=60), acct=st.booleans(), checksum=st.booleans())
def test_random_traffic_is_identical_with_and_without_compiled_flows(
    events: list[tuple[str, object]], acct: bool, checksum: bool
) -> None:
    slow = _run(False, acct, checksum, events)
    fast = _run(True, acct, checksum, events)
    assert fast[0] == slow[0]
    assert fast[1] == slow[1]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(event, max_size=60), acct=st.booleans(), checksum=st.booleans())
def test_frames_given_as_views_give_the_same_result(
    events: list[tuple[str, object]], acct: bool, checksum: bool
) -> None:
    """The gateway hands long frames over as views of its receive ring and reuses the slot once the
    output is sent: a compiled flow then returns the payload as `Emitted.tail`. With every frame a
    view (VIEW_MIN 0) and each buffer zeroed right after its call, frame + tail and all state equal
    the slow path's from bytes."""
    slow = _run(False, acct, checksum, events)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fastpath, "VIEW_MIN", 0)
        viewed = _run(True, acct, checksum, events, views=True)
    assert viewed[0] == slow[0]
    assert viewed[1] == slow[1]


def test_views_leave_the_payload_in_place() -> None:
    """A long frame of a compiled flow given as a view: only the headers are copied, the payload is
    the very view (no copy), and the slow path copies what it keeps."""
    drv = _Driver(_engine(True, False, True), views=False)
    drv.open()
    for _ in range(3):
        drv.segment(0, False, "psh", 3000, 0, 0, 65535, "none", "none", "gso")
        drv.segment(0, True, "ack", 0, 0, 0, 65535, "none", "none")
    captured: list[Emitted] = []
    drv.engine = Recorder(drv.engine, captured)  # type: ignore[assignment]
    drv.views = True
    drv.segment(0, False, "psh", 3000, 0, 0, 65535, "none", "none", "gso")
    (e,) = captured
    assert e.tail is not None and len(e.tail) == 3000 and len(e.frame) == 54  # Ethernet, IP, TCP headers
    assert tx_hdr_ready(e.frame, e.gso_type, e.gso_size) is not None  # the gateway sends them as they are
    assert e.tail.obj is not None and not isinstance(e.tail.obj, bytes)  # a view of the caller's buffer


def test_compiled_flows_carry_steady_traffic() -> None:
    """The differential test above would pass vacuously if nothing were compiled: steady traffic on every
    flow must be forwarded by compiled flows (the engine's packet counter advances, the slow path's
    per-packet path is not taken)."""
    drv = _Driver(_engine(True, False, True))
    drv.open()
    for _ in range(3):  # the second packet of each direction compiles the flow (the first confirms state)
        for i in range(len(FLOWS)):
            drv.segment(i, False, "psh", 100, 0, 0, 65535, "ts", "none")
            drv.segment(i, True, "ack", 0, 0, 0, 65535, "none", "none")
    engine = drv.engine
    assert len(engine._flowcache.flows) == 2 * len(FLOWS)
    recorder = Recorder(engine, [])
    drv.engine = recorder  # type: ignore[assignment]
    before = len(drv.out)
    for i in range(len(FLOWS)):
        drv.segment(i, False, "psh", 100, 0, 0, 65535, "sack", "none")
        drv.segment(i, True, "ack", 0, 0, 0, 65535, "none", "none")
    assert recorder.calls == 2 * len(FLOWS) and recorder.slow == 0
    assert len(drv.out) - before == 2 * len(FLOWS)
    # and something unusual still takes the slow path
    drv.segment(0, False, "fin", 0, 0, 0, 65535, "none", "none")
    assert recorder.slow == 1


def _steady(fast: bool) -> tuple[list[object], list[object]]:
    drv = _Driver(_engine(fast, True, True))
    drv.open()
    for round_ in range(4):
        for i in range(len(FLOWS)):
            drv.segment(i, False, "psh", 100 + round_, round_ if FLOWS[i].proto == 1 else 0, 0, 65535, "ts", "none")
            drv.segment(i, True, "ack", round_, round_ if FLOWS[i].proto == 1 else 0, 0, 65535, "none", "none",
                        "partial" if round_ == 2 else "none")
    return drv.out, drv.state()


def test_steady_traffic_on_every_flow_is_identical() -> None:
    """Every flow kind (TCP, UDP, ICMP echo; SNAT, DNAT, both) in steady state, where the compiled path
    carries nearly every packet, compared with the slow path byte for byte."""
    assert _steady(True) == _steady(False)



def _replaced(fast: bool) -> tuple[list[object], int]:
    drv = _Driver(_engine(fast, False, True))
    drv.open()
    for _ in range(3):
        for i in range(len(FLOWS)):
            drv.segment(i, False, "psh", 100, 0, 0, 65535, "ts", "none")
            drv.segment(i, True, "ack", 0, 0, 0, 65535, "none", "none")
    assert drv.engine._flowcache.flows or not fast
    dropping = Ruleset()
    dropping.restore(parse_restore("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                                   "-A FORWARD -j DROP\nCOMMIT\n", file="test"))
    drv.engine.rules = dropping  # a reload
    before = len(drv.out)
    for i in range(len(FLOWS)):
        drv.segment(i, False, "psh", 100, 0, 0, 65535, "ts", "none")
    return drv.out[before:], dropping.tables["filter"].chains["FORWARD"].rules[0].packets


def test_a_ruleset_put_in_place_of_another_stops_its_compiled_flows() -> None:
    """`engine.rules = other` (a reload) with a filter table dropping forwarded packets: compiled flows
    give way to the new FORWARD chain exactly as the slow path does. Rulesets once counted their versions
    from 0, so this one (restored in as many steps as the first) had the first one's version, and the plans,
    stamped with the version, stayed in use: the DROP rule counted 0 packets instead of 6."""
    fast, slow = _replaced(True), _replaced(False)
    assert slow[1] == 6  # the forwarded packets (the ICMP echo flows to the gateway's own VIP are not)
    assert fast == slow
