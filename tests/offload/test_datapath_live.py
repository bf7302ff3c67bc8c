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
from natbox.engine.fastpath import FlowPlan
from natbox.offload.datapath import Datapath, ifindex, probe
from natbox.offload.entry import FlowStats, OffloadKey, offload_entry
from natbox.testing.live import netns_reason, require_programs
from natbox.testing.offload import CLIENT, PUBLIC, SERVER, RouterFlows
from natbox.wire.checksum import csum_partial, internet_checksum, pseudo_header_sum
from natbox.wire.layout import (
    ETH_HDR_LEN,
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


@pytest.mark.parametrize("tx", [False, True], ids=["full-sums", "partial-sums"])
def test_udp_flow_is_carried_translated(lab: Lab, tx: bool) -> None:
    _offload_peers(lab, tx)
    cport = 40000 + os.getpid() % 1000
    flows = RouterFlows(*lab.macs)
    flows.udp(cport, UDP_PORT)
    keys = lab.install(flows.flow_plans(17, cport))
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
            cli.sendto(b"x" * (100 + i), ("198.51.100.2", UDP_PORT))
            data, peer = srv.recvfrom(2000)
            assert (data, peer) == (b"x" * (100 + i), ("198.51.100.1", cport))
            srv.sendto(data[::-1], peer)
            back, peer = cli.recvfrom(2000)
            assert (back, peer) == (data[::-1], ("198.51.100.2", UDP_PORT))
        at_server = [f for f in _received(cap_s) if f[0][ETH_HDR_LEN + IPH_PROTOCOL] == 17]
        at_client = [f for f in _received(cap_c) if f[0][ETH_HDR_LEN + IPH_PROTOCOL] == 17]
    assert len(at_server) == len(at_client) == 10
    assert any(p for _, p in at_server) == tx  # TX offload on: the veth carries partial sums
    for frame, partial in at_server:
        _check_frame(frame, partial, PUBLIC, SERVER)
        assert frame[:12] == lab.macs[3] + lab.macs[1]
    for frame, partial in at_client:
        _check_frame(frame, partial, SERVER, CLIENT)
        assert frame[:12] == lab.macs[2] + lab.macs[0]
    there, home = lab.counters(keys)
    assert (there.packets, home.packets) == (10, 10)
    assert there.bytes == sum(20 + 8 + 100 + i for i in range(10))
    assert 0 < there.last_seen_ns <= time.monotonic_ns()
