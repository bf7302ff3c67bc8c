"""The kernel data path on real devices (natbox.testing.offload_live): client — router — server namespaces joined by
veths, the BPF program on the router's two devices, entries installed from a natbox engine's plans (NAT for IPv4,
NAT66 for IPv6) for the same flows. The tests of what both branches of the program do run for each family
(`lab`); those of one branch's own edges take `lab4` or `lab6`.

The router's own forwarding is switched off while offloaded traffic flows, so whatever reaches the other
side went through the BPF program. Every frame captured at the receiver is checked (natbox.testing.offload's
check_frame, offload6's check_frame6): addresses and ports translated, TTL or hop limit decremented, the IP
checksum valid, and the L4 checksum valid as a full sum, or, for a CHECKSUM_PARTIAL skb (veth with TX checksum
offload on: the packet socket says TP_STATUS_CSUMNOTREADY), equal to the pseudo-header sum of the translated
addresses (the trap issue #16 found: a partial sum written with the pseudo-header flag missing passes on veth
and corrupts a VM's traffic)."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from natbox.adapters.netns import enter_netns
from natbox.testing.offload import CLIENT, PACKET_OUTGOING, PUBLIC, SERVER, capture, check_frame, received
from natbox.testing.offload6 import CLIENT6, PUBLIC6, SERVER6, check_frame6, l4_checksum6
from natbox.testing.offload_live import FAMILIES, IPV4, IPV6, Family, Lab, offload_lab, recv_exactly
from natbox.wire import icmp, ipv4, tcp, udp
from natbox.wire.checksum import internet_checksum
from natbox.wire.icmpv6 import build_icmpv6
from natbox.wire.ipv6 import build_frag_hdr, build_ipv6
from natbox.wire.layout import (
    ETH_HDR_LEN,
    ICMP6H_IDENTIFIER,
    ICMPH_ID,
    IP6H_LEN,
    IP6H_NEXTHDR,
    IPH_CHECK,
    IPH_MIN_LEN,
    IPH_PROTOCOL,
    IPH_SADDR,
    IPH_TTL,
    UDPH_CHECK,
)

pytestmark = pytest.mark.netns

UDP_PORT, TCP_PORT = 5000, 5001
UDP_SEGMENT = 103  # linux/udp.h: the socket option of UDP GSO
NEXTHDR_DEST = 60


def _lab(family: Family, tmp_path: Path) -> contextlib.AbstractContextManager[Lab]:
    return offload_lab(family, tmp_path, "nbo" if family is IPV4 else "nb6",
                       programs=("ethtool", family.iptables))


@pytest.fixture(params=FAMILIES, ids=[f.name for f in FAMILIES])
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    family: Family = request.param
    with _lab(family, tmp_path) as lab:
        yield lab


@pytest.fixture
def lab4(tmp_path: Path) -> Iterator[Lab]:
    with _lab(IPV4, tmp_path) as lab:
        yield lab


@pytest.fixture
def lab6(tmp_path: Path) -> Iterator[Lab]:
    with _lab(IPV6, tmp_path) as lab:
        yield lab


@pytest.mark.parametrize("portmap", [False, True], ids=["masquerade", "dnat-snat-ports"])
@pytest.mark.parametrize("tx", [False, True], ids=["full-sums", "partial-sums"])
def test_udp_flow_is_carried_translated(lab: Lab, tx: bool, portmap: bool) -> None:
    """A UDP exchange carried by the program alone. With the port-mapping rules the client talks to the
    router's port 6000, DNATed to the server's 5000 and SNATed to a port in 30000-30099: both manips
    change addresses and ports."""
    f = lab.family
    lab.offload_peers(tx)
    cport = 40000 + os.getpid() % 1000
    flows = lab.flows(rules=f.portmap_rules if portmap else f.rules)
    dst = (f.lan, 6000) if portmap else (f.server, UDP_PORT)
    flows.udp(cport, dst[1], dst=f.addr(dst[0]))
    plans = flows.flow_plans(17, cport)
    wan_port = int.from_bytes(plans[0].new_addrs[f.port_at], "big")
    assert (wan_port != cport) == portmap
    keys = lab.install(plans)
    lab.forwarding(False)  # only the BPF program can carry a packet across
    srv, cli = lab.sockets(socket.SOCK_DGRAM)
    with srv, cli, lab.capture(lab.server, "s0") as cap_s, lab.capture(lab.client, "c0") as cap_c:
        srv.bind((f.server, UDP_PORT))
        cli.bind((f.client, cport))
        srv.settimeout(2)
        cli.settimeout(2)
        for i in range(10):
            cli.sendto(b"x" * (100 + i), dst)
            data, peer = srv.recvfrom(2000)
            assert (data, peer[:2]) == (b"x" * (100 + i), (f.public, wan_port))
            srv.sendto(data[::-1], peer)
            back, peer = cli.recvfrom(2000)
            assert (back, peer[:2]) == (data[::-1], dst)
        at_server = lab.of(received(cap_s), 17)
        at_client = lab.of(received(cap_c), 17)
    assert len(at_server) == len(at_client) == 10
    assert any(p for _, p in at_server) == tx  # TX offload on: the veth carries partial sums
    for frame, partial in at_server:
        f.check_frame(frame, partial, f.addr(f.public), f.addr(f.server))
        assert frame[:12] == lab.macs[3] + lab.macs[1]
    for frame, partial in at_client:
        f.check_frame(frame, partial, f.addr(dst[0]), f.addr(f.client))
        assert frame[:12] == lab.macs[2] + lab.macs[0]
    there, home = lab.counters(keys)
    assert (there.packets, home.packets) == (10, 10)
    assert there.bytes == sum(f.ip_hlen + 8 + 100 + i for i in range(10))  # the IP packets' lengths
    assert 0 < there.last_seen_ns <= time.monotonic_ns()
    lab.install(plans)  # written again (a new MAC, a new MTU): the counters stay
    assert lab.counters(keys) == [there, home]
    lab.dp.remove(keys[0])  # removed: its counters go with it
    assert set(lab.dp.stats()) == {keys[1]}


@pytest.mark.parametrize("tx", [False, True], ids=["full-sums", "partial-sums-tso"])
def test_tcp_stream_is_carried_translated(lab: Lab, tx: bool) -> None:
    """A real connection: the handshake through the router's kernel NAT (which keeps the port), then the
    entries from natbox's plans for the same tuple, forwarding off, and a bulk transfer each way."""
    f = lab.family
    lab.offload_peers(tx)
    cport = 41000 + os.getpid() % 1000
    flows = lab.flows()
    flows.tcp(cport, TCP_PORT)
    plans = flows.flow_plans(6, cport)
    lsn, cli = lab.sockets(socket.SOCK_STREAM)
    up, down = os.urandom(300_000), os.urandom(100_000)
    with lsn, cli, lab.capture(lab.server, "s0") as cap:
        lsn.bind((f.server, TCP_PORT))
        lsn.listen(1)
        lsn.settimeout(5)
        cli.settimeout(5)
        cli.bind((f.client, cport))
        cli.connect((f.server, TCP_PORT))
        conn, peer = lsn.accept()
        with conn:
            assert peer[:2] == (f.public, cport)
            conn.settimeout(5)
            keys = lab.install(plans)
            lab.forwarding(False)
            cli.sendall(up)
            assert recv_exactly(conn, len(up)) == up
            conn.sendall(down)
            assert recv_exactly(cli, len(down)) == down
            frames = lab.of(received(cap), 6)
    there, home = lab.counters(keys)
    assert there.packets > 0 and home.packets > 0
    assert there.bytes >= len(up) and home.bytes >= len(down)
    assert sum(len(fr) - ETH_HDR_LEN for fr, _ in frames) >= len(up)
    assert any(p for _, p in frames) == tx
    for frame, partial in frames:
        f.check_frame(frame, partial, f.addr(f.public), f.addr(f.server))


def test_udp_gso_super_packets(lab: Lab) -> None:
    """A UDP_SEGMENT send crosses the veth as one GSO packet: carried whole while its segments fit the out
    MTU (bpf_check_mtu with BPF_MTU_CHK_SEGS), passed up once they do not."""
    f = lab.family
    lab.offload_peers(True)
    cport = 44000 + os.getpid() % 1000
    flows = lab.flows()
    flows.udp(cport, UDP_PORT)
    keys = lab.install(flows.flow_plans(17, cport))
    lab.forwarding(False)
    srv, cli = lab.sockets(socket.SOCK_DGRAM)
    with srv, cli, lab.capture(lab.server, "s0") as cap:
        srv.bind((f.server, UDP_PORT))
        srv.settimeout(2)
        cli.bind((f.client, cport))
        cli.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 1000)
        payload = os.urandom(10_000)
        cli.sendto(payload, (f.server, UDP_PORT))
        got = [srv.recv(2000) for _ in range(10)]
        assert b"".join(got) == payload
        frames = lab.of(received(cap), 17)
        assert lab.counters(keys)[0].packets == 1  # one GSO packet
        assert [len(fr) for fr, _ in frames] == [ETH_HDR_LEN + f.ip_hlen + 8 + 10_000]
        f.check_frame(*frames[0], f.addr(f.public), f.addr(f.server))
        # segments bigger than the out MTU: the program passes the packet up (forwarding is off: dropped)
        lab.sh(lab.router, "ip", "link", "set", "eth1", "mtu", "1400")
        cli.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 1420)
        cli.sendto(payload[:2840], (f.server, UDP_PORT))
        assert lab.of(received(cap), 17) == []
        assert lab.counters(keys)[0].packets == 1


# --- one branch's own edges ---------------------------------------------------------------------------------

def test_what_goes_up_to_the_stack(lab4: Lab) -> None:
    """SYN, FIN, RST, TTL 1, IP options, fragments, a bad header checksum and a packet over the out MTU
    are not redirected (not counted, not forwarded: the router's forwarding is off); a plain ACK is."""
    cport = 42000 + os.getpid() % 1000
    flows = lab4.flows()
    flows.tcp(cport, TCP_PORT)
    flows.udp(cport, UDP_PORT)
    tcp_keys = lab4.install(flows.flow_plans(6, cport))
    udp_keys = lab4.install(flows.flow_plans(17, cport))
    lab4.forwarding(False)
    eth = lab4.macs[0] + lab4.macs[2] + b"\x08\x00"

    def seg(flags: int, *, ttl: int = 64, options: bytes = b"", mf: bool = False, frag_offset: int = 0) -> bytes:
        data = tcp.build_tcp(CLIENT, SERVER, cport, TCP_PORT, seq=1013, ack=5013, flags=flags, payload=b"abc")
        return eth + bytes(ipv4.build_ipv4(CLIENT, SERVER, 6, data, ttl=ttl, options=options, mf=mf,
                                           frag_offset=frag_offset))

    bad_sum = bytearray(seg(0x10))
    bad_sum[ETH_HDR_LEN + IPH_CHECK] ^= 0xFF
    up = [seg(0x02), seg(0x11), seg(0x14), seg(0x04), seg(0x10, ttl=1), seg(0x10, options=b"\x01\x01\x01\x00"),
          seg(0x10, mf=True), seg(0x10, frag_offset=8), bytes(bad_sum), seg(0x08),
          b"\xff" * 6 + seg(0x10)[6:], bytes.fromhex("020000000bad") + seg(0x10)[6:]]  # not for the router
    with capture(lab4.server, "s0") as cap:
        lab4.send_frames(up)
        assert [f for f, _ in received(cap) if f[ETH_HDR_LEN + IPH_PROTOCOL] == 6] == []
        assert lab4.counters(tcp_keys)[0].packets == 0
        lab4.send_frames([seg(0x10), seg(0x18)])
        arrived = [f for f, _ in received(cap) if f[ETH_HDR_LEN + IPH_PROTOCOL] == 6]
    assert len(arrived) == 2 and lab4.counters(tcp_keys)[0].packets == 2
    # over the MTU: the out device's MTU drops under the packet (the entry still says 1500)
    lab4.sh(lab4.router, "ip", "link", "set", "eth1", "mtu", "1400")
    big = udp.build_udp(CLIENT, SERVER, cport, UDP_PORT, b"z" * 1420)
    small = udp.build_udp(CLIENT, SERVER, cport, UDP_PORT, b"z" * 1000)
    with capture(lab4.server, "s0") as cap:
        lab4.send_frames([eth + bytes(ipv4.build_ipv4(CLIENT, SERVER, 17, big, df=True))])
        assert [f for f, _ in received(cap) if f[ETH_HDR_LEN + IPH_PROTOCOL] == 17] == []
        assert lab4.counters(udp_keys)[0].packets == 0
        lab4.send_frames([eth + bytes(ipv4.build_ipv4(CLIENT, SERVER, 17, small, df=True))])
        arrived = [f for f, _ in received(cap) if f[ETH_HDR_LEN + IPH_PROTOCOL] == 17]
    assert len(arrived) == 1 and lab4.counters(udp_keys)[0].packets == 1
    check_frame(arrived[0], False, PUBLIC, SERVER)
    # a UDP datagram without a checksum keeps none (BPF_F_MARK_MANGLED_0, as udp_manip_pkt)
    nosum = udp.build_udp(CLIENT, SERVER, cport, UDP_PORT, b"no checksum", zero_checksum=True)
    with capture(lab4.server, "s0") as cap:
        lab4.send_frames([eth + bytes(ipv4.build_ipv4(CLIENT, SERVER, 17, nosum))])
        arrived = [f for f, _ in received(cap) if f[ETH_HDR_LEN + IPH_PROTOCOL] == 17]
    assert len(arrived) == 1 and lab4.counters(udp_keys)[0].packets == 2
    assert arrived[0][ETH_HDR_LEN + IPH_MIN_LEN + UDPH_CHECK:ETH_HDR_LEN + IPH_MIN_LEN + UDPH_CHECK + 2] == b"\0\0"
    check_frame(arrived[0], False, PUBLIC, SERVER)


def test_icmp_echo_round_trip(lab4: Lab) -> None:
    """An echo request with natbox's id goes out SNATed, the server's kernel answers, the reply comes back
    translated to the client (a raw ICMP socket there reads it)."""
    ident = 0x4000 + os.getpid() % 1000
    flows = lab4.flows()
    flows.ping(ident)
    keys = lab4.install(flows.flow_plans(1, ident))
    lab4.forwarding(False)
    with enter_netns(lab4.client):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    with raw, capture(lab4.server, "s0") as cap:
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
        frames = [f for f, _ in received(cap) if f[ETH_HDR_LEN + IPH_PROTOCOL] == 1]
    assert len(frames) == 3
    for frame in frames:
        check_frame(frame, False, PUBLIC, SERVER)
    assert [s.packets for s in lab4.counters(keys)] == [3, 3]


def test_per_protocol_packet_sockets_see_only_what_goes_up(lab4: Lab) -> None:
    """Where a gateway's own packet socket stands: an ETH_P_ALL one (a tap, as tcpdump's) receives a copy of
    every frame before tc ingress runs, offloaded ones included; one bound to ETH_P_IP is served after tc
    (ptype_base) and receives only what the program passed up — the binding for natbox's own sockets."""
    cport = 43000 + os.getpid() % 1000
    flows = lab4.flows()
    flows.udp(cport, UDP_PORT)
    keys = lab4.install(flows.flow_plans(17, cport))
    lab4.forwarding(False)
    eth = lab4.macs[0] + lab4.macs[2] + b"\x08\x00"
    carried = eth + bytes(ipv4.build_ipv4(CLIENT, SERVER, 17, udp.build_udp(CLIENT, SERVER, cport, UDP_PORT, b"c")))
    punted = eth + bytes(ipv4.build_ipv4(CLIENT, SERVER, 17, udp.build_udp(CLIENT, SERVER, cport, UDP_PORT, b"p"),
                                         ttl=1))
    with enter_netns(lab4.router):
        tap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
        ip_only = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    with tap, ip_only:
        for s in (tap, ip_only):
            s.bind(("eth0", 0))
            s.settimeout(0.2)
        lab4.send_frames([carried, punted])

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
    assert lab4.counters(keys)[0].packets == 1


def test_what_goes_up_to_the_stack_ipv6(lab6: Lab) -> None:
    """SYN, FIN, RST, no ACK, hop limit 1, an extension header (destination options, a fragment header), a UDP
    datagram with a zero checksum, frames not for the router and a packet over the out MTU are not
    redirected (not counted, not forwarded: the router's forwarding is off); a plain ACK is."""
    cport = 42000 + os.getpid() % 1000
    flows = lab6.flows()
    flows.tcp(cport, TCP_PORT)
    flows.udp(cport, UDP_PORT)
    tcp_keys = lab6.install(flows.flow_plans(6, cport))
    udp_keys = lab6.install(flows.flow_plans(17, cport))
    lab6.forwarding(False)
    eth = lab6.macs[0] + lab6.macs[2] + b"\x86\xdd"

    def seg(flags: int, *, hop: int = 64, ext: bytes = b"", ext_type: int = 0) -> bytes:
        data = l4_checksum6(CLIENT6, SERVER6, 6, tcp.build_tcp(CLIENT6, SERVER6, cport, TCP_PORT, seq=1013, ack=5013,
                                                               flags=flags, payload=b"abc"))
        return eth + bytes(build_ipv6(CLIENT6, SERVER6, ext_type if ext else 6, ext + data, hop_limit=hop))

    dest_opts = bytes((6, 0, 1, 4, 0, 0, 0, 0))  # next header TCP, 8 bytes, PadN
    frag = build_frag_hdr(6, 0, True, 0x1234)
    nosum = bytearray(udp.build_udp(CLIENT6, SERVER6, cport, UDP_PORT, b"no checksum"))
    nosum[UDPH_CHECK:UDPH_CHECK + 2] = b"\0\0"
    up = [seg(0x02), seg(0x11), seg(0x14), seg(0x04), seg(0x10, hop=1), seg(0x10, ext=dest_opts,
          ext_type=NEXTHDR_DEST), seg(0x10, ext=frag, ext_type=44), seg(0x08),
          b"\xff" * 6 + seg(0x10)[6:], bytes.fromhex("020000000bad") + seg(0x10)[6:],  # not for the router
          eth + bytes(build_ipv6(CLIENT6, SERVER6, 17, bytes(nosum)))]
    with lab6.capture(lab6.server, "s0") as cap:
        lab6.send_frames(up)
        assert [f for f, _ in received(cap) if f[ETH_HDR_LEN + IP6H_NEXTHDR] in (6, 17, 44, NEXTHDR_DEST)] == []
        assert lab6.counters(tcp_keys)[0].packets == 0 and lab6.counters(udp_keys)[0].packets == 0
        lab6.send_frames([seg(0x10), seg(0x18)])
        arrived = lab6.of(received(cap), 6)
    assert len(arrived) == 2 and lab6.counters(tcp_keys)[0].packets == 2
    for frame, partial in arrived:
        check_frame6(frame, partial, PUBLIC6, SERVER6)
    # over the MTU: the out device's MTU drops under the packet (the entry still says 1500)
    lab6.sh(lab6.router, "ip", "link", "set", "eth1", "mtu", "1400")

    def dgram(n: int) -> bytes:
        data = l4_checksum6(CLIENT6, SERVER6, 17, udp.build_udp(CLIENT6, SERVER6, cport, UDP_PORT, b"z" * n))
        return eth + bytes(build_ipv6(CLIENT6, SERVER6, 17, data))

    with lab6.capture(lab6.server, "s0") as cap:
        lab6.send_frames([dgram(1400)])
        assert lab6.of(received(cap), 17) == []
        assert lab6.counters(udp_keys)[0].packets == 0
        lab6.send_frames([dgram(1000)])
        arrived = lab6.of(received(cap), 17)
    assert len(arrived) == 1 and lab6.counters(udp_keys)[0].packets == 1
    check_frame6(*arrived[0], PUBLIC6, SERVER6)


def test_icmpv6_echo_round_trip(lab6: Lab) -> None:
    """An echo request with natbox's id goes out masqueraded, the server's kernel answers, the reply comes back
    translated to the client (a raw ICMPv6 socket there reads it); the echo's checksum covers the addresses."""
    ident = 0x4000 + os.getpid() % 1000
    flows = lab6.flows()
    flows.ping(ident)
    keys = lab6.install(flows.flow_plans(58, ident))
    lab6.forwarding(False)
    with enter_netns(lab6.client):
        raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    with raw, lab6.capture(lab6.server, "s0") as cap:
        raw.settimeout(2)
        for seq in range(3):
            # the kernel fills in an ICMPv6 raw socket's checksum
            raw.sendto(build_icmpv6(CLIENT6, SERVER6, 128, 0, ident.to_bytes(2, "big") + seq.to_bytes(2, "big"),
                                    b"natbox"), ("2001:db8:1::2", 0))
            while True:
                data, peer = raw.recvfrom(2000)
                if data[0] == 129:  # an echo reply
                    break
            assert peer[0] == "2001:db8:1::2"
            assert int.from_bytes(data[ICMP6H_IDENTIFIER:ICMP6H_IDENTIFIER + 2], "big") == ident
        frames = lab6.of(received(cap), 58)
    requests = [f for f in frames if f[0][ETH_HDR_LEN + IP6H_LEN] == 128]
    assert len(requests) == 3
    for frame, partial in requests:
        check_frame6(frame, partial, PUBLIC6, SERVER6)
    assert [s.packets for s in lab6.counters(keys)] == [3, 3]


