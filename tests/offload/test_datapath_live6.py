"""The kernel data path's IPv6 branch on real devices: client — router — server namespaces joined by veths, the BPF
program on the router's two devices, IPv6 entries installed from a natbox engine's NAT66 plans for the same flows.

As tests/offload/test_datapath_live.py does for IPv4: the router's IPv6 forwarding is off while offloaded traffic
flows, so whatever reaches the other side went through the program. Every frame captured at the receiver is
checked (natbox.testing.offload6.check_frame6): addresses and ports translated, hop limit decremented, the L4
checksum valid as a full sum or, CHECKSUM_PARTIAL, equal to the pseudo-header sum of the translated addresses."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from natbox.adapters.netns import enter_netns, run_in_netns, temp_netns
from natbox.engine.fastpath import FlowPlan
from natbox.offload.datapath import Datapath, ifindex, probe
from natbox.offload.entry import FlowStats, OffloadKey, offload_entry
from natbox.testing.live import netns_reason, require_programs
from natbox.testing.offload6 import (
    CLIENT6,
    LAN6,
    PORTMAP_RULES6,
    PUBLIC6,
    RULES6,
    SERVER6,
    RouterFlows6,
    capture6,
    check_frame6,
    l4_checksum6,
    received6,
)
from natbox.wire import ethernet, tcp, udp
from natbox.wire.icmpv6 import build_icmpv6
from natbox.wire.ipv6 import build_frag_hdr, build_ipv6
from natbox.wire.layout import ETH_HDR_LEN, ICMP6H_IDENTIFIER, IP6H_LEN, IP6H_NEXTHDR, UDPH_CHECK

pytestmark = pytest.mark.netns

UDP_PORT, TCP_PORT = 5000, 5001
UDP_SEGMENT = 103  # linux/udp.h: the socket option of UDP GSO
NEXTHDR_DEST = 60


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
        self.sh(self.router, "sysctl", "-qw", f"net.ipv6.conf.all.forwarding={int(on)}")

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
    require_programs("clang", "tc", "ethtool", "ip6tables")
    missing = probe()
    if missing is not None:
        pytest.skip(f"offload unavailable: {missing}")
    with temp_netns("nb6", 3) as (client, router, server):
        for ns in (client, router, server):
            run_in_netns(ns, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"])
            run_in_netns(ns, ["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"])
        for ns, dev, peer, addr in ((client, "c0", "eth0", "fd00:1::2/64"), (server, "s0", "eth1", "2001:db8:1::2/64")):
            run_in_netns(ns, ["ip", "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", router])
            run_in_netns(ns, ["ip", "addr", "add", addr, "dev", dev, "nodad"])
            run_in_netns(ns, ["ip", "link", "set", dev, "up"])
            run_in_netns(router, ["ip", "link", "set", peer, "up"])
        run_in_netns(router, ["ip", "addr", "add", "fd00:1::1/64", "dev", "eth0", "nodad"])
        run_in_netns(router, ["ip", "addr", "add", "2001:db8:1::1/64", "dev", "eth1", "nodad"])
        run_in_netns(client, ["ip", "-6", "route", "add", "default", "via", "fd00:1::1"])
        run_in_netns(router, ["ip6tables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth1", "-j", "MASQUERADE"])
        run_in_netns(router, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        run_in_netns(router, ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=1"], check=False)
        macs = (_mac(router, "eth0"), _mac(router, "eth1"), _mac(client, "c0"), _mac(server, "s0"))
        with enter_netns(router):
            dp = Datapath(str(tmp_path / "dp"))
            try:
                dp.attach("eth0")
                dp.attach("eth1")
                yield Lab(client, router, server, macs, dp)
            finally:
                dp.close()
        assert not (tmp_path / "dp").exists()


def _offload_peers(lab: Lab, tx: bool) -> None:
    state = "on" if tx else "off"
    lab.sh(lab.client, "ethtool", "-K", "c0", "tx", state)
    lab.sh(lab.server, "ethtool", "-K", "s0", "tx", state)


def _of(frames: list[tuple[bytes, bool]], proto: int) -> list[tuple[bytes, bool]]:
    return [f for f in frames if f[0][ETH_HDR_LEN + IP6H_NEXTHDR] == proto]


def _sockets(lab: Lab, kind: int) -> tuple[socket.socket, socket.socket]:
    with enter_netns(lab.server):
        srv = socket.socket(socket.AF_INET6, kind)
    with enter_netns(lab.client):
        cli = socket.socket(socket.AF_INET6, kind)
    return srv, cli


@pytest.mark.parametrize("portmap", [False, True], ids=["masquerade", "dnat-snat-ports"])
@pytest.mark.parametrize("tx", [False, True], ids=["full-sums", "partial-sums"])
def test_ipv6_udp_flow_is_carried_translated(lab: Lab, tx: bool, portmap: bool) -> None:
    """A UDP exchange over IPv6 carried by the program alone. With the port-mapping rules the client talks to
    the router's port 6000, DNATed to the server's 5000 and SNATed to a port in 30000-30099."""
    _offload_peers(lab, tx)
    cport = 40000 + os.getpid() % 1000
    flows = RouterFlows6(*lab.macs, rules=PORTMAP_RULES6 if portmap else RULES6)
    dst = ("fd00:1::1", 6000) if portmap else ("2001:db8:1::2", UDP_PORT)
    flows.udp(cport, dst[1], dst=LAN6 if portmap else SERVER6)
    plans = flows.flow_plans(17, cport)
    wan_port = int.from_bytes(plans[0].new_addrs[32:34], "big")
    assert (wan_port != cport) == portmap
    keys = lab.install(plans)
    lab.forwarding(False)  # only the BPF program can carry a packet across
    srv, cli = _sockets(lab, socket.SOCK_DGRAM)
    with srv, cli, capture6(lab.server, "s0") as cap_s, capture6(lab.client, "c0") as cap_c:
        srv.bind(("2001:db8:1::2", UDP_PORT))
        cli.bind(("fd00:1::2", cport))
        srv.settimeout(2)
        cli.settimeout(2)
        for i in range(10):
            cli.sendto(b"x" * (100 + i), dst)
            data, peer = srv.recvfrom(2000)
            assert (data, peer[:2]) == (b"x" * (100 + i), ("2001:db8:1::1", wan_port))
            srv.sendto(data[::-1], peer)
            back, peer = cli.recvfrom(2000)
            assert (back, peer[:2]) == (data[::-1], dst)
        at_server = _of(received6(cap_s), 17)
        at_client = _of(received6(cap_c), 17)
    assert len(at_server) == len(at_client) == 10
    assert any(p for _, p in at_server) == tx  # TX offload on: the veth carries partial sums
    for frame, partial in at_server:
        check_frame6(frame, partial, PUBLIC6, SERVER6)
        assert frame[:12] == lab.macs[3] + lab.macs[1]
    for frame, partial in at_client:
        check_frame6(frame, partial, LAN6 if portmap else SERVER6, CLIENT6)
        assert frame[:12] == lab.macs[2] + lab.macs[0]
    there, home = lab.counters(keys)
    assert (there.packets, home.packets) == (10, 10)
    assert there.bytes == sum(40 + 8 + 100 + i for i in range(10))  # the IPv6 packets' lengths
    assert 0 < there.last_seen_ns <= time.monotonic_ns()
    lab.dp.remove(keys[0])
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
def test_ipv6_tcp_stream_is_carried_translated(lab: Lab, tx: bool) -> None:
    """A real connection: the handshake through the router's kernel NAT66 (which keeps the port), then the
    entries from natbox's plans for the same tuple, forwarding off, and a bulk transfer each way."""
    _offload_peers(lab, tx)
    cport = 41000 + os.getpid() % 1000
    flows = RouterFlows6(*lab.macs)
    flows.tcp(cport, TCP_PORT)
    plans = flows.flow_plans(6, cport)
    lsn, cli = _sockets(lab, socket.SOCK_STREAM)
    up, down = os.urandom(300_000), os.urandom(100_000)
    with lsn, cli, capture6(lab.server, "s0") as cap:
        lsn.bind(("2001:db8:1::2", TCP_PORT))
        lsn.listen(1)
        lsn.settimeout(5)
        cli.settimeout(5)
        cli.bind(("fd00:1::2", cport))
        cli.connect(("2001:db8:1::2", TCP_PORT))
        conn, peer = lsn.accept()
        with conn:
            assert peer[:2] == ("2001:db8:1::1", cport)
            conn.settimeout(5)
            keys = lab.install(plans)
            lab.forwarding(False)
            cli.sendall(up)
            assert _recv_exactly(conn, len(up)) == up
            conn.sendall(down)
            assert _recv_exactly(cli, len(down)) == down
            frames = _of(received6(cap), 6)
    there, home = lab.counters(keys)
    assert there.packets > 0 and home.packets > 0
    assert there.bytes >= len(up) and home.bytes >= len(down)
    assert sum(len(f) - ETH_HDR_LEN for f, _ in frames) >= len(up)
    assert any(p for _, p in frames) == tx
    for frame, partial in frames:
        check_frame6(frame, partial, PUBLIC6, SERVER6)


def _send_frames(lab: Lab, frames: list[bytes]) -> None:
    with enter_netns(lab.client):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethernet.ETH_P_IPV6))
    with s:
        s.bind(("c0", 0))
        for f in frames:
            s.send(f)


def test_what_goes_up_to_the_stack(lab: Lab) -> None:
    """SYN, FIN, RST, no ACK, hop limit 1, an extension header (destination options, a fragment header), a UDP
    datagram with a zero checksum, frames not for the router and a packet over the out MTU are not
    redirected (not counted, not forwarded: the router's forwarding is off); a plain ACK is."""
    cport = 42000 + os.getpid() % 1000
    flows = RouterFlows6(*lab.macs)
    flows.tcp(cport, TCP_PORT)
    flows.udp(cport, UDP_PORT)
    tcp_keys = lab.install(flows.flow_plans(6, cport))
    udp_keys = lab.install(flows.flow_plans(17, cport))
    lab.forwarding(False)
    eth = lab.macs[0] + lab.macs[2] + b"\x86\xdd"

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
    with capture6(lab.server, "s0") as cap:
        _send_frames(lab, up)
        assert [f for f, _ in received6(cap) if f[ETH_HDR_LEN + IP6H_NEXTHDR] in (6, 17, 44, NEXTHDR_DEST)] == []
        assert lab.counters(tcp_keys)[0].packets == 0 and lab.counters(udp_keys)[0].packets == 0
        _send_frames(lab, [seg(0x10), seg(0x18)])
        arrived = _of(received6(cap), 6)
    assert len(arrived) == 2 and lab.counters(tcp_keys)[0].packets == 2
    for frame, partial in arrived:
        check_frame6(frame, partial, PUBLIC6, SERVER6)
    # over the MTU: the out device's MTU drops under the packet (the entry still says 1500)
    lab.sh(lab.router, "ip", "link", "set", "eth1", "mtu", "1400")

    def dgram(n: int) -> bytes:
        data = l4_checksum6(CLIENT6, SERVER6, 17, udp.build_udp(CLIENT6, SERVER6, cport, UDP_PORT, b"z" * n))
        return eth + bytes(build_ipv6(CLIENT6, SERVER6, 17, data))

    with capture6(lab.server, "s0") as cap:
        _send_frames(lab, [dgram(1400)])
        assert _of(received6(cap), 17) == []
        assert lab.counters(udp_keys)[0].packets == 0
        _send_frames(lab, [dgram(1000)])
        arrived = _of(received6(cap), 17)
    assert len(arrived) == 1 and lab.counters(udp_keys)[0].packets == 1
    check_frame6(*arrived[0], PUBLIC6, SERVER6)


def test_icmpv6_echo_round_trip(lab: Lab) -> None:
    """An echo request with natbox's id goes out masqueraded, the server's kernel answers, the reply comes back
    translated to the client (a raw ICMPv6 socket there reads it); the echo's checksum covers the addresses."""
    ident = 0x4000 + os.getpid() % 1000
    flows = RouterFlows6(*lab.macs)
    flows.ping(ident)
    keys = lab.install(flows.flow_plans(58, ident))
    lab.forwarding(False)
    with enter_netns(lab.client):
        raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    with raw, capture6(lab.server, "s0") as cap:
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
        frames = _of(received6(cap), 58)
    requests = [f for f in frames if f[0][ETH_HDR_LEN + IP6H_LEN] == 128]
    assert len(requests) == 3
    for frame, partial in requests:
        check_frame6(frame, partial, PUBLIC6, SERVER6)
    assert [s.packets for s in lab.counters(keys)] == [3, 3]


def test_ipv6_udp_gso_super_packets(lab: Lab) -> None:
    """A UDP_SEGMENT send over IPv6 crosses the veth as one GSO packet: carried whole while its segments fit
    the out MTU, passed up once they do not."""
    _offload_peers(lab, True)
    cport = 44000 + os.getpid() % 1000
    flows = RouterFlows6(*lab.macs)
    flows.udp(cport, UDP_PORT)
    keys = lab.install(flows.flow_plans(17, cport))
    lab.forwarding(False)
    srv, cli = _sockets(lab, socket.SOCK_DGRAM)
    with srv, cli, capture6(lab.server, "s0") as cap:
        srv.bind(("2001:db8:1::2", UDP_PORT))
        srv.settimeout(2)
        cli.bind(("fd00:1::2", cport))
        cli.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 1000)
        payload = os.urandom(10_000)
        cli.sendto(payload, ("2001:db8:1::2", UDP_PORT))
        got = [srv.recv(2000) for _ in range(10)]
        assert b"".join(got) == payload
        frames = _of(received6(cap), 17)
        assert lab.counters(keys)[0].packets == 1  # one GSO packet
        assert [len(f) for f, _ in frames] == [ETH_HDR_LEN + IP6H_LEN + 8 + 10_000]
        check_frame6(*frames[0], PUBLIC6, SERVER6)
        # segments bigger than the out MTU: the program passes the packet up (forwarding is off: dropped)
        lab.sh(lab.router, "ip", "link", "set", "eth1", "mtu", "1400")
        cli.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 1420)
        cli.sendto(payload[:2840], ("2001:db8:1::2", UDP_PORT))
        assert _of(received6(cap), 17) == []
        assert lab.counters(keys)[0].packets == 1
