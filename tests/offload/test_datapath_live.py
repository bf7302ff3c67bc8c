"""The kernel data path on real devices: client — router — server namespaces joined by veths, the BPF
program on the router's two devices, entries installed from a natbox engine's plans for the same flows.

The router's own forwarding is switched off while offloaded traffic flows, so whatever reaches the other
side went through the BPF program. Every frame captured at the receiver is checked: addresses and ports
translated, TTL decremented, IP checksum valid, and the L4 checksum valid as a full sum, or, for a
CHECKSUM_PARTIAL skb (veth with TX checksum offload on: the packet socket says TP_STATUS_CSUMNOTREADY),
equal to the pseudo-header sum of the translated addresses (the trap issue #16 found: a partial sum
written with the pseudo-header flag missing passes on veth and corrupts a VM's traffic)."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from natbox.adapters.netns import enter_netns, run_in_netns, temp_netns
from natbox.conntrack.tuple import parse_addr
from natbox.engine.fastpath import FlowPlan
from natbox.offload.datapath import Datapath, ifindex, probe
from natbox.offload.entry import FlowStats, OffloadKey, offload_entry
from natbox.testing.live import netns_reason, require_programs
from natbox.testing.offload import CLIENT, PORTMAP_RULES, PUBLIC, RULES, SERVER, RouterFlows
from natbox.wire import icmp, ipv4, tcp, udp
from natbox.wire.checksum import csum_partial, internet_checksum, pseudo_header_sum
from natbox.wire.layout import (
    ETH_HDR_LEN,
    ICMPH_ID,
    IPH_CHECK,
    IPH_DADDR,
    IPH_MIN_LEN,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_TOT_LEN,
    IPH_TTL,
    TCPH_CHECK,
    UDPH_CHECK,
)

pytestmark = pytest.mark.netns

SOL_PACKET, PACKET_AUXDATA, TP_STATUS_CSUMNOTREADY, PACKET_OUTGOING = 263, 8, 8, 4
_AUX = struct.Struct("=IIIHHHH")
UDP_PORT, TCP_PORT = 5000, 5001
UDP_SEGMENT = 103  # linux/udp.h: the socket option of UDP GSO


@dataclass
class Lab:
    client: str
    router: str
    server: str
    macs: tuple[bytes, bytes, bytes, bytes]  # router eth0, router eth1, client c0, server s0
    dp: Datapath

    def sh(self, ns: str, *argv: str) -> str:
        return run_in_netns(ns, list(argv)).stdout

    def forwarding(self, on: bool) -> None:
        self.sh(self.router, "sysctl", "-qw", f"net.ipv4.ip_forward={int(on)}")

    def install(self, plans: tuple[FlowPlan, FlowPlan]) -> list[OffloadKey]:
        keys = []
        with enter_netns(self.router):
            for plan in plans:
                entry = offload_entry(plan, ifindex)
                assert entry is not None
                self.dp.install(*entry)
                keys.append(entry[0])
        return keys

    def counters(self, keys: list[OffloadKey]) -> list[FlowStats]:
        stats = self.dp.stats()
        return [stats[k] for k in keys]


def _mac(lab_ns: str, dev: str) -> bytes:
    out = run_in_netns(lab_ns, ["cat", f"/sys/class/net/{dev}/address"]).stdout.strip()
    return bytes.fromhex(out.replace(":", ""))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    reason = netns_reason()
    if reason is not None:
        pytest.skip(f"live test: {reason}")
    require_programs("clang", "tc", "ethtool", "iptables")
    missing = probe()
    if missing is not None:
        pytest.skip(f"offload unavailable: {missing}")
    with temp_netns("nbo", 3) as (client, router, server):
        for ns, dev, peer, addr in ((client, "c0", "eth0", "10.0.1.2/24"), (server, "s0", "eth1", "198.51.100.2/24")):
            run_in_netns(ns, ["ip", "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", router])
            run_in_netns(ns, ["ip", "addr", "add", addr, "dev", dev])
            run_in_netns(ns, ["ip", "link", "set", dev, "up"])
            run_in_netns(router, ["ip", "link", "set", peer, "up"])
        run_in_netns(router, ["ip", "addr", "add", "10.0.1.1/24", "dev", "eth0"])
        run_in_netns(router, ["ip", "addr", "add", "198.51.100.1/24", "dev", "eth1"])
        run_in_netns(client, ["ip", "route", "add", "default", "via", "10.0.1.1"])
        run_in_netns(router, ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth1", "-j", "MASQUERADE"])
        run_in_netns(router, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        run_in_netns(router, ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=1"], check=False)
        macs = (_mac(router, "eth0"), _mac(router, "eth1"), _mac(client, "c0"), _mac(server, "s0"))
        with enter_netns(router):
            dp = Datapath(str(tmp_path / "dp"))
            try:
                dp.attach("eth0")
                dp.attach("eth1")
                dp.attach("eth1")  # idempotent
                yield Lab(client, router, server, macs, dp)
            finally:
                dp.close()
        assert not (tmp_path / "dp").exists()


@contextlib.contextmanager
def _capture(ns: str, dev: str) -> Iterator[socket.socket]:
    with enter_netns(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    try:
        s.bind((dev, 0))
        s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        s.settimeout(0.2)
        yield s
    finally:
        s.close()


def _received(s: socket.socket) -> list[tuple[bytes, bool]]:
    """Frames the device received since the socket opened: (frame, CHECKSUM_PARTIAL)."""
    out: list[tuple[bytes, bool]] = []
    while True:
        try:
            data, anc, _flags, addr = s.recvmsg(70000, socket.CMSG_SPACE(_AUX.size))
        except TimeoutError:
            return out
        if addr[2] == PACKET_OUTGOING:
            continue
        status = 0
        for level, kind, value in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA:
                status = _AUX.unpack(value[:_AUX.size])[0]
        out.append((data, bool(status & TP_STATUS_CSUMNOTREADY)))


def _check_frame(frame: bytes, partial: bool, saddr: int, daddr: int, ttl: int = 63) -> int:
    """Assert a translated frame is well formed; its L4 protocol."""
    ip = frame[ETH_HDR_LEN:]
    tot_len = int.from_bytes(ip[IPH_TOT_LEN:IPH_TOT_LEN + 2], "big")
    ip = ip[:tot_len]
    assert int.from_bytes(ip[IPH_SADDR:IPH_SADDR + 4], "big") == saddr
    assert int.from_bytes(ip[IPH_DADDR:IPH_DADDR + 4], "big") == daddr
    assert ip[IPH_TTL] == ttl
    assert internet_checksum(ip[:IPH_MIN_LEN]) == 0, "IP header checksum"
    proto = ip[IPH_PROTOCOL]
    seg = ip[IPH_MIN_LEN:]
    pseudo = pseudo_header_sum(saddr, daddr, proto, len(seg))
    if proto == 1:
        assert internet_checksum(seg) == 0, "ICMP checksum"
    elif partial:  # the field holds the folded, uncomplemented pseudo-header sum
        at = TCPH_CHECK if proto == 6 else UDPH_CHECK
        field = int.from_bytes(seg[at:at + 2], "big")
        assert (field - csum_partial(b"", pseudo)) % 0xFFFF == 0, f"partial checksum {field:#06x}"
    elif proto == 17 and seg[UDPH_CHECK:UDPH_CHECK + 2] == b"\0\0":
        pass  # no checksum
    else:
        assert internet_checksum(seg, pseudo) == 0, "L4 checksum"
    return proto


def _offload_peers(lab: Lab, tx: bool) -> None:
    state = "on" if tx else "off"
    lab.sh(lab.client, "ethtool", "-K", "c0", "tx", state)
    lab.sh(lab.server, "ethtool", "-K", "s0", "tx", state)


@pytest.mark.parametrize("portmap", [False, True], ids=["masquerade", "dnat-snat-ports"])
@pytest.mark.parametrize("tx", [False, True], ids=["full-sums", "partial-sums"])
def test_udp_flow_is_carried_translated(lab: Lab, tx: bool, portmap: bool) -> None:
    """A UDP exchange carried by the program alone. With the port-mapping rules the client talks to the
    router's port 6000, DNATed to the server's 5000 and SNATed to a port in 30000-30099: both manips
    change addresses and ports."""
    _offload_peers(lab, tx)
    cport = 40000 + os.getpid() % 1000
    flows = RouterFlows(*lab.macs, rules=PORTMAP_RULES if portmap else RULES)
    dst = ("10.0.1.1", 6000) if portmap else ("198.51.100.2", UDP_PORT)
    flows.udp(cport, dst[1], dst=parse_addr(dst[0]))
    plans = flows.flow_plans(17, cport)
    wan_port = int.from_bytes(plans[0].new_addrs[8:10], "big")
    assert (wan_port != cport) == portmap
    keys = lab.install(plans)
    lab.forwarding(False)  # only the BPF program can carry a packet across
    with enter_netns(lab.server):
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with enter_netns(lab.client):
        cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with srv, cli, _capture(lab.server, "s0") as cap_s, _capture(lab.client, "c0") as cap_c:
        srv.bind(("198.51.100.2", UDP_PORT))
        cli.bind(("10.0.1.2", cport))
        srv.settimeout(2)
        cli.settimeout(2)
        for i in range(10):
            cli.sendto(b"x" * (100 + i), dst)
            data, peer = srv.recvfrom(2000)
            assert (data, peer) == (b"x" * (100 + i), ("198.51.100.1", wan_port))
            srv.sendto(data[::-1], peer)
            back, peer = cli.recvfrom(2000)
            assert (back, peer) == (data[::-1], dst)
        at_server = [f for f in _received(cap_s) if f[0][ETH_HDR_LEN + IPH_PROTOCOL] == 17]
        at_client = [f for f in _received(cap_c) if f[0][ETH_HDR_LEN + IPH_PROTOCOL] == 17]
    assert len(at_server) == len(at_client) == 10
    assert any(p for _, p in at_server) == tx  # TX offload on: the veth carries partial sums
    for frame, partial in at_server:
        _check_frame(frame, partial, PUBLIC, SERVER)
        assert frame[:12] == lab.macs[3] + lab.macs[1]
    for frame, partial in at_client:
        _check_frame(frame, partial, parse_addr(dst[0]), CLIENT)
        assert frame[:12] == lab.macs[2] + lab.macs[0]
    there, home = lab.counters(keys)
    assert (there.packets, home.packets) == (10, 10)
    assert there.bytes == sum(20 + 8 + 100 + i for i in range(10))
    assert 0 < there.last_seen_ns <= time.monotonic_ns()
    lab.install(plans)  # written again (a new MAC, a new MTU): the counters stay
    assert lab.counters(keys) == [there, home]
    lab.dp.remove(keys[0])  # removed: its counters go with it
    assert set(lab.dp.stats()) == {keys[1]}


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = s.recv(min(65536, n - len(got)))
        if not chunk:
            break
        got += chunk
    return bytes(got)


@pytest.mark.parametrize("tx", [False, True], ids=["full-sums", "partial-sums-tso"])
def test_tcp_stream_is_carried_translated(lab: Lab, tx: bool) -> None:
    """A real connection: the handshake through the router's kernel NAT (which keeps the port), then the
    entries from natbox's plans for the same tuple, forwarding off, and a bulk transfer each way."""
    _offload_peers(lab, tx)
    cport = 41000 + os.getpid() % 1000
    flows = RouterFlows(*lab.macs)
    flows.tcp(cport, TCP_PORT)
    plans = flows.flow_plans(6, cport)
    with enter_netns(lab.server):
        lsn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with enter_netns(lab.client):
        cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    up, down = os.urandom(300_000), os.urandom(100_000)
    with lsn, cli, _capture(lab.server, "s0") as cap:
        cap.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        lsn.bind(("198.51.100.2", TCP_PORT))
        lsn.listen(1)
        lsn.settimeout(5)
        cli.settimeout(5)
        cli.bind(("10.0.1.2", cport))
        cli.connect(("198.51.100.2", TCP_PORT))
        conn, peer = lsn.accept()
        with conn:
            assert peer == ("198.51.100.1", cport)
            conn.settimeout(5)
            keys = lab.install(plans)
            lab.forwarding(False)
            cli.sendall(up)
            assert _recv_exactly(conn, len(up)) == up
            conn.sendall(down)
            assert _recv_exactly(cli, len(down)) == down
            frames = [f for f in _received(cap) if f[0][ETH_HDR_LEN + IPH_PROTOCOL] == 6]
    there, home = lab.counters(keys)
    assert there.packets > 0 and home.packets > 0
    assert there.bytes >= len(up) and home.bytes >= len(down)
    assert sum(len(f) - ETH_HDR_LEN for f, _ in frames) >= len(up)
    assert any(p for _, p in frames) == tx
    for frame, partial in frames:
        _check_frame(frame, partial, PUBLIC, SERVER)


def _send_frames(lab: Lab, frames: list[bytes]) -> None:
    with enter_netns(lab.client):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    with s:
        s.bind(("c0", 0))
        for f in frames:
            s.send(f)


def test_what_goes_up_to_the_stack(lab: Lab) -> None:
    """SYN, FIN, RST, TTL 1, IP options, fragments, a bad header checksum and a packet over the out MTU
    are not redirected (not counted, not forwarded: the router's forwarding is off); a plain ACK is."""
    cport = 42000 + os.getpid() % 1000
    flows = RouterFlows(*lab.macs)
    flows.tcp(cport, TCP_PORT)
    flows.udp(cport, UDP_PORT)
    tcp_keys = lab.install(flows.flow_plans(6, cport))
    udp_keys = lab.install(flows.flow_plans(17, cport))
    lab.forwarding(False)
    eth = lab.macs[0] + lab.macs[2] + b"\x08\x00"

    def seg(flags: int, *, ttl: int = 64, options: bytes = b"", mf: bool = False, frag_offset: int = 0) -> bytes:
        data = tcp.build_tcp(CLIENT, SERVER, cport, TCP_PORT, seq=1013, ack=5013, flags=flags, payload=b"abc")
        return eth + bytes(ipv4.build_ipv4(CLIENT, SERVER, 6, data, ttl=ttl, options=options, mf=mf,
                                           frag_offset=frag_offset))

    bad_sum = bytearray(seg(0x10))
    bad_sum[ETH_HDR_LEN + IPH_CHECK] ^= 0xFF
    up = [seg(0x02), seg(0x11), seg(0x14), seg(0x04), seg(0x10, ttl=1), seg(0x10, options=b"\x01\x01\x01\x00"),
          seg(0x10, mf=True), seg(0x10, frag_offset=8), bytes(bad_sum), seg(0x08),
          b"\xff" * 6 + seg(0x10)[6:], bytes.fromhex("020000000bad") + seg(0x10)[6:]]  # not for the router
    with _capture(lab.server, "s0") as cap:
        _send_frames(lab, up)
        assert [f for f, _ in _received(cap) if f[ETH_HDR_LEN + IPH_PROTOCOL] == 6] == []
        assert lab.counters(tcp_keys)[0].packets == 0
        _send_frames(lab, [seg(0x10), seg(0x18)])
        arrived = [f for f, _ in _received(cap) if f[ETH_HDR_LEN + IPH_PROTOCOL] == 6]
    assert len(arrived) == 2 and lab.counters(tcp_keys)[0].packets == 2
    # over the MTU: the out device's MTU drops under the packet (the entry still says 1500)
    lab.sh(lab.router, "ip", "link", "set", "eth1", "mtu", "1400")
    big = udp.build_udp(CLIENT, SERVER, cport, UDP_PORT, b"z" * 1420)
    small = udp.build_udp(CLIENT, SERVER, cport, UDP_PORT, b"z" * 1000)
    with _capture(lab.server, "s0") as cap:
        _send_frames(lab, [eth + bytes(ipv4.build_ipv4(CLIENT, SERVER, 17, big, df=True))])
        assert [f for f, _ in _received(cap) if f[ETH_HDR_LEN + IPH_PROTOCOL] == 17] == []
        assert lab.counters(udp_keys)[0].packets == 0
        _send_frames(lab, [eth + bytes(ipv4.build_ipv4(CLIENT, SERVER, 17, small, df=True))])
        arrived = [f for f, _ in _received(cap) if f[ETH_HDR_LEN + IPH_PROTOCOL] == 17]
    assert len(arrived) == 1 and lab.counters(udp_keys)[0].packets == 1
    _check_frame(arrived[0], False, PUBLIC, SERVER)
    # a UDP datagram without a checksum keeps none (BPF_F_MARK_MANGLED_0, as udp_manip_pkt)
    nosum = udp.build_udp(CLIENT, SERVER, cport, UDP_PORT, b"no checksum", zero_checksum=True)
    with _capture(lab.server, "s0") as cap:
        _send_frames(lab, [eth + bytes(ipv4.build_ipv4(CLIENT, SERVER, 17, nosum))])
        arrived = [f for f, _ in _received(cap) if f[ETH_HDR_LEN + IPH_PROTOCOL] == 17]
    assert len(arrived) == 1 and lab.counters(udp_keys)[0].packets == 2
    assert arrived[0][ETH_HDR_LEN + IPH_MIN_LEN + UDPH_CHECK:ETH_HDR_LEN + IPH_MIN_LEN + UDPH_CHECK + 2] == b"\0\0"
    _check_frame(arrived[0], False, PUBLIC, SERVER)


def test_icmp_echo_round_trip(lab: Lab) -> None:
    """An echo request with natbox's id goes out SNATed, the server's kernel answers, the reply comes back
    translated to the client (a raw ICMP socket there reads it)."""
    ident = 0x4000 + os.getpid() % 1000
    flows = RouterFlows(*lab.macs)
    flows.ping(ident)
    keys = lab.install(flows.flow_plans(1, ident))
    lab.forwarding(False)
    with enter_netns(lab.client):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    with raw, _capture(lab.server, "s0") as cap:
        raw.settimeout(2)
        for seq in range(3):
            raw.sendto(icmp.build_icmp_echo(ident, seq, b"natbox"), ("198.51.100.2", 0))
            while True:
                data, _ = raw.recvfrom(2000)
                if data[IPH_MIN_LEN] == 0:  # an echo reply
                    break
            assert int.from_bytes(data[IPH_SADDR:IPH_SADDR + 4], "big") == SERVER
            assert int.from_bytes(data[IPH_MIN_LEN + ICMPH_ID:IPH_MIN_LEN + ICMPH_ID + 2], "big") == ident
            assert data[IPH_TTL] == 63 and internet_checksum(data[IPH_MIN_LEN:]) == 0
        frames = [f for f, _ in _received(cap) if f[ETH_HDR_LEN + IPH_PROTOCOL] == 1]
    assert len(frames) == 3
    for frame in frames:
        _check_frame(frame, False, PUBLIC, SERVER)
    assert [s.packets for s in lab.counters(keys)] == [3, 3]


def test_per_protocol_packet_sockets_see_only_what_goes_up(lab: Lab) -> None:
    """Where a gateway's own packet socket stands: an ETH_P_ALL one (a tap, as tcpdump's) receives a copy of
    every frame before tc ingress runs, offloaded ones included; one bound to ETH_P_IP is served after tc
    (ptype_base) and receives only what the program passed up — the binding for natbox's own sockets."""
    cport = 43000 + os.getpid() % 1000
    flows = RouterFlows(*lab.macs)
    flows.udp(cport, UDP_PORT)
    keys = lab.install(flows.flow_plans(17, cport))
    lab.forwarding(False)
    eth = lab.macs[0] + lab.macs[2] + b"\x08\x00"
    carried = eth + bytes(ipv4.build_ipv4(CLIENT, SERVER, 17, udp.build_udp(CLIENT, SERVER, cport, UDP_PORT, b"c")))
    punted = eth + bytes(ipv4.build_ipv4(CLIENT, SERVER, 17, udp.build_udp(CLIENT, SERVER, cport, UDP_PORT, b"p"),
                                         ttl=1))
    with enter_netns(lab.router):
        tap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
        ip_only = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    with tap, ip_only:
        for s in (tap, ip_only):
            s.bind(("eth0", 0))
            s.settimeout(0.2)
        _send_frames(lab, [carried, punted])

        def seen(s: socket.socket) -> list[bytes]:
            got = []
            with contextlib.suppress(TimeoutError):
                while True:
                    data, addr = s.recvfrom(2000)
                    if addr[2] != PACKET_OUTGOING and data[ETH_HDR_LEN + IPH_PROTOCOL] == 17:
                        got.append(data)
            return got

        assert seen(tap) == [carried, punted]
        assert seen(ip_only) == [punted]
    assert lab.counters(keys)[0].packets == 1


def test_udp_gso_super_packets(lab: Lab) -> None:
    """A UDP_SEGMENT send crosses the veth as one GSO packet: carried whole while its segments fit the out
    MTU (bpf_check_mtu with BPF_MTU_CHK_SEGS), passed up once they do not."""
    _offload_peers(lab, True)
    cport = 44000 + os.getpid() % 1000
    flows = RouterFlows(*lab.macs)
    flows.udp(cport, UDP_PORT)
    keys = lab.install(flows.flow_plans(17, cport))
    lab.forwarding(False)
    with enter_netns(lab.server):
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with enter_netns(lab.client):
        cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with srv, cli, _capture(lab.server, "s0") as cap:
        srv.bind(("198.51.100.2", UDP_PORT))
        srv.settimeout(2)
        cli.bind(("10.0.1.2", cport))
        cli.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 1000)
        payload = os.urandom(10_000)
        cli.sendto(payload, ("198.51.100.2", UDP_PORT))
        got = [srv.recv(2000) for _ in range(10)]
        assert b"".join(got) == payload
        frames = [f for f in _received(cap) if f[0][ETH_HDR_LEN + IPH_PROTOCOL] == 17]
        assert lab.counters(keys)[0].packets == 1  # one GSO packet
        assert [len(f) for f, _ in frames] == [ETH_HDR_LEN + IPH_MIN_LEN + 8 + 10_000]
        _check_frame(*frames[0], PUBLIC, SERVER)
        # segments bigger than the out MTU: the program passes the packet up (forwarding is off: dropped)
        lab.sh(lab.router, "ip", "link", "set", "eth1", "mtu", "1400")
        cli.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 1450)
        cli.sendto(payload[:2900], ("198.51.100.2", UDP_PORT))
        assert [f for f in _received(cap) if f[0][ETH_HDR_LEN + IPH_PROTOCOL] == 17] == []
        assert lab.counters(keys)[0].packets == 1
