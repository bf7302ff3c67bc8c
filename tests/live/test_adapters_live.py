"""Namespaces, AF_PACKET sockets and TAP devices on the real kernel (root only; skipped otherwise).

The bridge tests run a trivial forwarder (no engine: every frame from one port goes out of the other)
through `EventLoop`, so the adapters are checked on their own: two hosts on one subnet talk through it.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from natbox.adapters import netns
from natbox.adapters.packet_socket import PacketSocket, interface_mac
from natbox.adapters.tuntap import TapDevice
from natbox.gateway.loop import EventLoop, Port
from natbox.lab.builder import lab_down, lab_up
from natbox.lab.model import Lab, parse_lab_toml
from natbox.testing.live import env, ns_python, require_programs, unique_lab_name

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("need_netns")]

BRIDGE_LAB = """
name = "{name}"
[[node]]
name = "a"
[[node]]
name = "fw"
gateway = true
owned = ["p0", "p1"]
[[node]]
name = "b"
[[link]]
a = {{ node = "a", name = "eth0", addresses = ["10.0.5.1/24"]{off} }}
b = {{ node = "fw", name = "p0" }}
[[link]]
a = {{ node = "fw", name = "p1" }}
b = {{ node = "b", name = "eth0", addresses = ["10.0.5.2/24"]{off} }}
"""


# --- namespaces ------------------------------------------------------------------------------------

def test_temp_netns_cleaned_up() -> None:
    with netns.temp_netns("nbx-t", 2) as names:
        assert len(set(names)) == 2
        assert all(netns.netns_exists(n) for n in names)
        out = netns.run_in_netns(names[0], ["ip", "-br", "link"]).stdout
        assert out.split()[0] == "lo" and len(out.strip().splitlines()) == 1
    assert not any(netns.netns_exists(n) for n in names)


def test_temp_netns_cleaned_up_on_error() -> None:
    kept: list[str] = []
    with pytest.raises(RuntimeError), netns.temp_netns("nbx-t") as names:
        kept += names
        raise RuntimeError("boom")
    assert kept and not netns.netns_exists(kept[0])


def test_enter_netns_and_back() -> None:
    before = {name for _i, name in socket.if_nameindex()}
    with netns.temp_netns("nbx-t") as (name,):
        netns.run_in_netns(name, ["ip", "link", "add", "nbxv0", "type", "veth", "peer", "name", "nbxv1"])
        with netns.enter_netns(name):
            inside = {n for _i, n in socket.if_nameindex()}
        assert inside == {"lo", "nbxv0", "nbxv1"}
        assert {n for _i, n in socket.if_nameindex()} == before
    with pytest.raises(netns.NetnsError):
        netns.create_netns("bad name!")


# --- AF_PACKET on a veth pair ----------------------------------------------------------------------

@pytest.fixture
def veth_ns() -> Iterator[str]:
    with netns.temp_netns("nbx-t") as (name,):
        netns.run_in_netns(name, ["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        netns.run_in_netns(name, ["ip", "link", "set", "v0", "up"])
        netns.run_in_netns(name, ["ip", "link", "set", "v1", "up"])
        yield name


@pytest.mark.parametrize(("ring", "vnet"), [(False, False), (True, False), (False, True), (True, True)])
def test_packet_socket_roundtrip(veth_ns: str, ring: bool, vnet: bool) -> None:
    with netns.enter_netns(veth_ns):
        tx = PacketSocket("v0", ring=ring, vnet_hdr=vnet)
        rx = PacketSocket("v1", ring=ring, vnet_hdr=vnet)
        mac1 = interface_mac("v1")
    try:
        frames = [mac1 + bytes.fromhex("020000000001") + b"\x88\xb5" + bytes([i]) * (60 + i) for i in range(5)]
        for f in frames:
            assert tx.send(f)
        got: list[bytes] = []
        deadline = time.monotonic() + 3
        while len(got) < 5 and time.monotonic() < deadline:
            rx.wait(0.2)
            got += [bytes(f) for f, _gt, _gs, _p in rx.recv_batch(64) if f[12:14] == b"\x88\xb5"]
        assert got == frames
        # our own transmissions are not read back (PACKET_IGNORE_OUTGOING / PACKET_OUTGOING skipped)
        time.sleep(0.1)
        assert [f for f, *_ in tx.recv_batch(64) if f[12:14] == b"\x88\xb5"] == []
    finally:
        tx.close()
        rx.close()


@pytest.mark.parametrize(("vnet", "zero_copy"), [(False, False), (True, False), (True, True)])
def test_ring_frames_longer_than_a_slot(veth_ns: str, vnet: bool, zero_copy: bool) -> None:
    """A ring's slots hold the device's MTU (a page for 1500: 1 MB for 256 slots) without vnet headers, and with
    them in a compact ring (--offload's sockets; the default's slots hold a 64 KiB GSO frame, 17.8 MB). A
    longer frame (here: the MTU raised to 9000 after the socket was made) is read whole from the socket queue
    (PACKET_COPY_THRESH, TP_STATUS_COPY), in order with the frames around it; none is cut short. With
    zero_copy it is a view of a reused read buffer, valid until the next read."""
    from natbox.adapters.packet_socket import COPY_POOL, RING_SLOT_MAX

    with netns.enter_netns(veth_ns):
        tx = PacketSocket("v0", vnet_hdr=vnet)
        rx = PacketSocket("v1", ring=True, vnet_hdr=vnet, zero_copy=zero_copy, complete_csum=not zero_copy,
                          compact_ring=True)
        gso_ring = PacketSocket("v1", ring=True, vnet_hdr=True)
        mac1 = interface_mac("v1")
        for dev in ("v0", "v1"):
            netns.run_in_netns(veth_ns, ["ip", "link", "set", dev, "mtu", "9000"])
    try:
        assert gso_ring._slot_size == RING_SLOT_MAX
        assert rx._slot_size == 4096 and rx._slots * rx._slot_size == 1 << 20
        sizes = [100, 8000, 200, 4100, 9000, 60] + [5000] * (COPY_POOL + 2)  # more long ones than read buffers
        frames = [mac1 + bytes.fromhex("020000000001") + b"\x88\xb5" + bytes([i]) * n for i, n in enumerate(sizes)]
        for f in frames:
            assert tx.send(f)
        got: list[bytes] = []
        deadline = time.monotonic() + 3
        while len(got) < len(frames) and time.monotonic() < deadline:
            rx.wait(0.2)
            got += [bytes(f) for f, _gt, _gs, _p in rx.recv_batch(64) if f[12:14] == b"\x88\xb5"]
        assert got == frames
        long_ones = sum(len(f) + 76 > 4096 for f in frames)
        assert rx.stats["rx_copied"] == long_ones and rx.stats["rx_truncated"] == rx.stats["rx_copy_lost"] == 0
        # at most COPY_POOL of them in place per read (the rest: bytes of their own)
        assert (0 < rx.stats["rx_in_place"] <= long_ones) if zero_copy else rx.stats["rx_in_place"] == 0
    finally:
        tx.close()
        rx.close()
        gso_ring.close()


def test_ring_hole_is_skipped(veth_ns: str) -> None:
    """A slot the kernel moved past without handing it over (its status still TP_STATUS_KERNEL) must not
    stall the reader for good: after RING_STALL_READS empty reads it goes on at the next ready slot."""
    from natbox.adapters.packet_socket import RING_STALL_READS

    with netns.enter_netns(veth_ns):
        tx = PacketSocket("v0")
        rx = PacketSocket("v1", ring=True, vnet_hdr=True, promisc=True)
    try:
        frames = [b"\x02" * 6 + b"\x04" * 6 + b"\x88\xb5" + bytes([i]) * 60 for i in range(3)]
        for f in frames:
            assert tx.send(f)
        time.sleep(0.2)
        assert rx._mm is not None
        rx._mm[rx._slot * rx._slot_size:rx._slot * rx._slot_size + 4] = bytes(4)  # the hole: slot 0 never handed over
        got: list[bytes] = []
        for _ in range(RING_STALL_READS + 1):
            got += [bytes(f) for f, *_ in rx.recv_batch(64) if f[12:14] == b"\x88\xb5"]
        assert got in (frames[1:], frames)  # slot 0 held frames[0] (or a frame of the kernel's own, e.g. IPv6 ND)
        assert rx.stats["rx_ring_resync"] == 1
        for f in frames:  # and the ring goes on working
            assert tx.send(f)
        deadline = time.monotonic() + 3
        more: list[bytes] = []
        while len(more) < 3 and time.monotonic() < deadline:
            rx.wait(0.2)
            more += [bytes(f) for f, *_ in rx.recv_batch(64) if f[12:14] == b"\x88\xb5"]
        assert more == frames
    finally:
        tx.close()
        rx.close()


def test_packet_socket_bounded_read(veth_ns: str) -> None:
    with netns.enter_netns(veth_ns):
        tx = PacketSocket("v0")
        rx = PacketSocket("v1", promisc=True)
    try:
        for i in range(20):
            tx.send(b"\x02" * 6 + b"\x04" * 6 + b"\x88\xb5" + bytes([i]) * 50)
        time.sleep(0.2)
        first = rx.recv_batch(8)
        assert len(first) == 8  # never more than asked
    finally:
        tx.close()
        rx.close()


# --- a trivial forwarder (no engine) ---------------------------------------------------------------

@dataclass
class _Em:
    iface: str
    frame: bytes
    gso_type: int = 0
    gso_size: int = 0
    partial: bool = False
    tail: memoryview | None = None


@dataclass
class _Out:
    emitted: list[_Em] = field(default_factory=list)


class _Bridge:
    """Each frame out of the other port as it came: a GSO packet whole, a partial checksum as it is (no
    header changed, so its pseudo-header sum is still right)."""

    def receive(self, frame: bytes | memoryview, iface: str, now: float, *, gso_type: int = 0, gso_size: int = 0,
                partial: bool = False) -> _Out:
        return _Out([_Em("p1" if iface == "p0" else "p0", bytes(frame), gso_type, gso_size, partial)])

    def next_deadline(self) -> float | None:
        return None

    def handle_timers(self, now: float) -> _Out:
        return _Out()


def _bridge_lab(offloads_off: bool) -> Lab:
    off = ', offloads = { tso = "off", gso = "off", tx = "off" }' if offloads_off else ""
    name = unique_lab_name("br" if offloads_off else "bv")
    return parse_lab_toml(BRIDGE_LAB.format(name=name, off=off), "<bridge>")


TCP_PAIR_SERVER = """
import hashlib, socket
s = socket.socket(); s.bind(("10.0.5.2", 5003)); s.listen(1); s.settimeout(20)
print("listening", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while (b := c.recv(65536)):
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"""
TCP_PAIR_CLIENT = """
import random, socket
c = socket.create_connection(("10.0.5.2", 5003), timeout=20)
c.sendall(random.Random(3).randbytes(4 << 20)); c.close()
"""


@pytest.mark.parametrize(("vnet", "ring"), [(False, False), (False, True), (True, False), (True, True)])
def test_bridge_forwarder_tcp(vnet: bool, ring: bool) -> None:
    """4 MiB of TCP between two namespaces through the adapters, byte-exact. With vnet headers the
    veths keep TSO on and the frames cross as GSO super-packets with partial checksums."""
    if not vnet:
        require_programs("ethtool")  # the lab turns the veths' offloads off
    lab = _bridge_lab(offloads_off=not vnet)
    lab_down(lab)
    lab_up(lab)
    try:
        with netns.enter_netns(lab.netns("fw")):
            ports: dict[str, Port] = {n: PacketSocket(n, vnet_hdr=vnet, ring=ring, promisc=True,
                                                      complete_csum=False) for n in ("p0", "p1")}
        loop = EventLoop(_Bridge(), ports, mtus={"p0": 1500, "p1": 1500})
        thread = threading.Thread(target=loop.run, kwargs={"duration": 30}, daemon=True)
        thread.start()
        server = subprocess.Popen(["ip", "netns", "exec", lab.netns("b"), sys.executable, "-c", TCP_PAIR_SERVER],
                                  stdout=subprocess.PIPE, env=env())
        assert server.stdout is not None and server.stdout.readline().strip() == b"listening"
        client = ns_python(lab, "a", TCP_PAIR_CLIENT, timeout=30)
        assert client.returncode == 0, client.stderr.decode()
        out, _ = server.communicate(timeout=30)
        loop.stop()
        thread.join(5)
        n, digest = out.decode().split()
        assert (int(n), digest) == (4 << 20, hashlib.sha256(random.Random(3).randbytes(4 << 20)).hexdigest())
        stats = ports["p0"].stats  # type: ignore[attr-defined]
        if vnet:
            assert stats["rx_gso"] > 0 and stats["rx_partial"] > 0
        else:
            assert stats["rx_gso"] == 0
        loop.close()
    finally:
        lab_down(lab)


# --- TAP ---------------------------------------------------------------------------------------------

def test_tap_in_other_namespace() -> None:
    """A TAP opened while inside the "VM" namespace: natbox keeps the fd, the VM sees the device."""
    require_programs("ping")  # the VM's ping makes it ARP
    with netns.temp_netns("nbx-t") as (vm,):
        tap = TapDevice("nbxtap0", vnet_hdr=True, netns=vm)
        try:
            netns.run_in_netns(vm, ["ip", "addr", "add", "10.0.9.2/24", "dev", "nbxtap0"])
            netns.run_in_netns(vm, ["ip", "link", "set", "nbxtap0", "up"])
            assert "nbxtap0" not in {n for _i, n in socket.if_nameindex()}
            # the VM ARPs for 10.0.9.1: the request reaches natbox's fd
            subprocess.run(["ip", "netns", "exec", vm, "ping", "-c", "1", "-W", "1", "10.0.9.1"],
                           capture_output=True, check=False, timeout=10)
            got = tap.recv_batch(64)
            arps = [f for f, *_ in got if f[12:14] == b"\x08\x06"]
            assert arps and arps[0][:6] == b"\xff" * 6 and arps[0][38:42] == bytes([10, 0, 9, 1])
            # a frame written to the fd arrives on the VM's device
            vm_mac = bytes.fromhex(netns.run_in_netns(vm, ["cat", "/sys/class/net/nbxtap0/address"])
                                   .stdout.strip().replace(":", ""))
            assert tap.send(vm_mac + b"\x02" * 6 + b"\x88\xb5" + b"hi" * 30)
            deadline = time.monotonic() + 3
            rx = "0"
            while time.monotonic() < deadline and rx == "0":
                rx = netns.run_in_netns(vm, ["cat", "/sys/class/net/nbxtap0/statistics/rx_packets"]).stdout.strip()
            assert int(rx) >= 1
        finally:
            tap.close()
    assert os.path.exists("/dev/net/tun")
