"""Running a scenario on the real kernel: namespaces, veths, captures, traffic, and what the router reports.

`run_on_kernel(scenario)` builds a router namespace plus one namespace per end host, joined by veth pairs
(several hosts on one router interface meet on a bridge in a switch namespace). Offloads are off, so checksums
on the wire are real; IPv6 and multicast are off and neighbour entries are permanent both ways, so no
ND/ARP/IGMP traffic interleaves. It applies the sysctls and the ruleset in the router, snapshots the router, and
captures every frame on every router interface with AF_PACKET sockets opened inside the router's netns
(`setns(2)` through ctypes; direction from `PACKET_OUTGOING`, kernel timestamps, frames copied into a TPACKET_V2
ring when seen). It sends the traffic, collects `conntrack -L`, `conntrack -S`, `iptables-save -c` (and `nfacct
list` when the scenario declares nfacct objects), and tears it all down. Every wait is bounded, every process is
ended by PID, and the namespaces are deleted in `finally`.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from natbox.adapters.snapshot import read_snapshot_files, take_snapshot
from natbox.difftest.live import LiveNatbox
from natbox.difftest.packets import build_crafted
from natbox.difftest.programs import PROGRAM
from natbox.difftest.scenario import Scenario, Step
from natbox.errors import NatboxError
from natbox.wire.ethernet import ETH_P_ALL

__all__ = ["Captured", "KernelRun", "KernelUnavailable", "kernel_available", "run_on_kernel", "save_kernel_run"]

CMD_TIMEOUT = 15.0  # seconds, any one setup/collection command
PROGRAM_TIMEOUT = 10.0  # seconds, a foreground program step (ping, clients)
# seconds for a server to print "ready": only a bound, the wait ends at that line (or at the server's exit);
# generous so a loaded machine is slow, not wrong (a server starts in about 0.3 s under two busy loops)
SERVER_READY_TIMEOUT = 30.0
MAX_FRAMES = 100_000  # frames kept per run (captures stop growing beyond)
CLONE_NEWNET = 0x40000000
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V2 = 1
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TPACKET2_HDRLEN = 32  # TPACKET_ALIGN(sizeof(struct tpacket2_hdr)); struct sockaddr_ll follows
RING_FRAME_SIZE = 4096  # bytes per ring slot: a 1500-MTU frame plus headers (longer ones are counted truncated)
RING_BLOCK_SIZE = 1 << 16
RING_FRAMES = 1024  # slots per interface: a 4 MiB ring each
PACKET_OUTGOING = 4
ROUTER_MAC = "02:00:00:00:01:{:02x}"  # router interface i (1-based)
HOST_MAC = "02:00:00:00:02:{:02x}"  # end host j (1-based, in the scenario's order)
BRIDGE_MAC = "02:00:00:00:03:{:02x}"  # router bridge k (1-based, in the scenario's order)
HOST_IFACE = "eth0"

def _nodad(addr: str) -> tuple[str, ...]:
    """`nodad` for an IPv6 address: usable at once, no DAD probes in the captures."""
    return ("nodad",) if ":" in addr else ()


def router_mac(index: int) -> str:
    """The MAC of the router's interface number `index` (0-based, in the scenario's order)."""
    return ROUTER_MAC.format(index + 1)


class KernelUnavailable(NatboxError, RuntimeError):
    """Not root, or `ip netns` / iptables / conntrack missing: the kernel side cannot run here."""


@dataclass(frozen=True, slots=True)
class Captured:
    """One frame seen on a router interface."""

    ts: float  # seconds since the run's t0 (kernel timestamp, CLOCK_REALTIME)
    iface: str
    outgoing: bool  # PACKET_OUTGOING: the router sent it
    frame: bytes


@dataclass
class KernelRun:
    """Everything the kernel run observed (times are seconds since t0)."""

    scenario: str
    snapshot: dict[str, str]  # the router's snapshot files, taken after setup and before traffic
    frames: list[Captured] = field(default_factory=list)
    conntrack_time: float = 0.0  # when `conntrack -L` started (its timeouts are of a moment before conntrack_end)
    conntrack_end: float = 0.0
    conntrack: list[str] = field(default_factory=list)  # `conntrack -L` lines
    conntrack_stats: str = ""  # `conntrack -S`
    iptables_save: str = ""  # `iptables-save -c` after the traffic
    ip6tables_save: str = ""  # `ip6tables-save -c` after the traffic (IPv6 scenarios)
    nfacct: str = ""  # `nfacct list` after the traffic (scenarios with router.nfacct)
    program_output: list[str] = field(default_factory=list)  # "step N host run: output" lines
    execs: list[tuple[float, float, list[str]]] = field(default_factory=list)  # (start, end, argv) of exec steps
    errors: list[str] = field(default_factory=list)  # problems while running (not differences)

    def sent(self, iface: str) -> list[Captured]:
        return [c for c in self.frames if c.iface == iface and c.outgoing]

    def received(self) -> list[Captured]:
        return [c for c in self.frames if not c.outgoing]


def kernel_available() -> str | None:
    """None if the kernel side can run here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "iptables-restore", "iptables-save", "conntrack", "sysctl", "ethtool"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=CMD_TIMEOUT,
                      check=False).returncode != 0:
        return "ip netns unavailable"
    return None


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _socket_in(netns: str, iface: str, proto: int) -> socket.socket:
    """An AF_PACKET socket created inside `netns` and bound to `iface` there."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(there)
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
            s.bind((iface, proto))
        finally:
            _setns(here)
    finally:
        os.close(here)
        os.close(there)
    return s


class _Capture:
    """A thread reading AF_PACKET sockets (one per router interface) through TPACKET_V2 rings until stopped.

    A ring, not recvmsg(): `packet_rcv` queues a clone that shares the packet's data, and the kernel may
    rewrite that data afterwards (seen with defragmented datagrams: a queued fragment later read back with
    the NATed output's Ethernet header). `tpacket_rcv` copies the frame into the ring when it is seen.
    """

    def __init__(self, socks: dict[str, socket.socket]) -> None:
        self.socks = socks
        self.frames: list[tuple[float, str, bool, bytes]] = []
        self.truncated = 0
        self._stop = threading.Event()
        self._rings: dict[str, mmap.mmap] = {}
        self._next: dict[str, int] = {}
        req = struct.pack("IIII", RING_BLOCK_SIZE, RING_FRAMES * RING_FRAME_SIZE // RING_BLOCK_SIZE,
                          RING_FRAME_SIZE, RING_FRAMES)
        for name, s in socks.items():
            s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            s.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self._rings[name] = mmap.mmap(s.fileno(), RING_FRAMES * RING_FRAME_SIZE)
            self._next[name] = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _drain(self, name: str) -> None:
        ring = self._rings[name]
        while len(self.frames) < MAX_FRAMES:
            base = self._next[name] * RING_FRAME_SIZE
            status, length, snaplen, mac, _net, sec, nsec = struct.unpack_from("IIIHHII", ring, base)
            if not status & TP_STATUS_USER:
                return
            pkttype = ring[base + TPACKET2_HDRLEN + 10]  # sockaddr_ll.sll_pkttype
            if snaplen < length:
                self.truncated += 1
            self.frames.append((sec + nsec / 1e9, name, pkttype == PACKET_OUTGOING,
                                bytes(ring[base + mac:base + mac + snaplen])))
            struct.pack_into("I", ring, base, TP_STATUS_KERNEL)
            self._next[name] = (self._next[name] + 1) % RING_FRAMES

    def _loop(self) -> None:
        by_fd = {s.fileno(): n for n, s in self.socks.items()}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(by_fd), [], [], 0.05)
            for fd in ready:
                self._drain(by_fd[fd])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        for name, s in self.socks.items():
            self._drain(name)
            self._rings[name].close()
            s.close()


class _Lab:
    """The namespaces of one run, with setup helpers; `close()` ends processes and deletes namespaces."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        tag = f"nbx-dt{os.getpid()}"
        self.tag = tag
        self.router = f"{tag}-r"
        self.ns = {h.name: f"{tag}-{h.name}" for h in sc.hosts}
        self.created: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []
        self.run = KernelRun(sc.name, {})

    def sh(self, *argv: str, netns: str | None = None, stdin: str | None = None, check: bool = True) -> str:
        full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
        p = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=CMD_TIMEOUT, check=False)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(full)}: exit {p.returncode}: {p.stderr.strip()}")
        return p.stdout

    def _netns_add(self, name: str) -> None:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=CMD_TIMEOUT, check=False)
        self.sh("ip", "netns", "add", name)
        self.created.append(name)
        for knob in ("all", "default"):
            if self.sc.uses_ipv6:  # no DAD, RAs or solicitations: nothing but the scenario's traffic
                for key, value in (("disable_ipv6", 0), ("accept_dad", 0), ("accept_ra", 0),
                                   ("router_solicitations", 0)):
                    self.sh("sysctl", "-q", "-w", f"net.ipv6.conf.{knob}.{key}={value}", netns=name)
            else:
                self.sh("sysctl", "-q", "-w", f"net.ipv6.conf.{knob}.disable_ipv6=1", netns=name)
        self.sh("ip", "link", "set", "lo", "up", netns=name)

    def _link_up(self, netns: str, dev: str) -> None:
        self.sh("ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off",
                netns=netns, check=False)  # checksums computed for real; some features are fixed: ignored
        # no IGMP reports (their timing is not the scenario's): multicast off on every link
        self.sh("ip", "link", "set", dev, "multicast", "off", "up", netns=netns)

    def build(self) -> None:
        """Namespaces and links. One host on an interface: a veth straight to it. Several: the router's veth
        and each host's veth meet on a bridge in a switch namespace (`<tag>-sw<i>`)."""
        sc = self.sc
        for name in (self.router, *self.ns.values()):
            self._netns_add(name)
        for k, br in enumerate(sc.bridges):  # STP off (the default), no multicast snooping: no frames of its own
            self.sh("ip", "link", "add", br.name, "address", BRIDGE_MAC.format(k + 1), "type", "bridge",
                    "mcast_snooping", "0", netns=self.router)
            self._link_up(self.router, br.name)
            for a in br.addresses:
                self.sh("ip", "addr", "add", a, "dev", br.name, *_nodad(a), netns=self.router)
        for i, iface in enumerate(sc.interfaces):
            hosts = [h for h in sc.hosts if h.attach == iface.name]
            if not hosts:
                raise RuntimeError(f"router interface {iface.name} has no host attached")
            rmac, mtu = router_mac(i), str(iface.mtu)
            if len(hosts) == 1:
                hns = self.ns[hosts[0].name]
                self.sh("ip", "-n", self.router, "link", "add", iface.name, "address", rmac, "mtu", mtu, "type",
                        "veth", "peer", "name", HOST_IFACE, "address", self.host_mac(hosts[0].name), "mtu", mtu,
                        "netns", hns)
                self._link_up(hns, HOST_IFACE)
            else:
                sw = f"{self.tag}--sw{i}"  # host names are alphanumeric: no clash
                self._netns_add(sw)
                self.sh("ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0", netns=sw)
                self.sh("ip", "link", "set", "br0", "multicast", "off", "up", netns=sw)
                self.sh("ip", "-n", self.router, "link", "add", iface.name, "address", rmac, "mtu", mtu, "type",
                        "veth", "peer", "name", "up0", "mtu", mtu, "netns", sw)
                ports = ["up0"]
                for j, h in enumerate(hosts):
                    self.sh("ip", "-n", sw, "link", "add", f"p{j}", "mtu", mtu, "type", "veth", "peer", "name",
                            HOST_IFACE, "address", self.host_mac(h.name), "mtu", mtu, "netns", self.ns[h.name])
                    self._link_up(self.ns[h.name], HOST_IFACE)
                    ports.append(f"p{j}")
                for port in ports:
                    self.sh("ip", "link", "set", port, "master", "br0", netns=sw)
                    self._link_up(sw, port)
            bridge = sc.bridge_of(iface.name)
            if bridge is not None:  # a bridge port: the hosts behind it are on the bridge's subnet
                self.sh("ip", "link", "set", iface.name, "master", bridge.name, netns=self.router)
            self._link_up(self.router, iface.name)
            for a in iface.addresses:
                self.sh("ip", "addr", "add", a, "dev", iface.name, *_nodad(a), netns=self.router)
            neigh_dev, r_addrs, peers = iface.name, iface.addresses, hosts
            if bridge is not None:
                rmac, neigh_dev, r_addrs = self.bridge_mac(bridge.name), bridge.name, bridge.addresses
                peers = [h for h in sc.hosts if h.attach in bridge.ports]
            for host in hosts:
                hns, hmac = self.ns[host.name], self.host_mac(host.name)
                for a in host.addresses:
                    self.sh("ip", "addr", "add", a, "dev", HOST_IFACE, *_nodad(a), netns=hns)
                    self.sh("ip", "neigh", "replace", a.split("/")[0], "lladdr", hmac, "dev", neigh_dev, "nud",
                            "permanent", netns=self.router)
                for a in r_addrs:
                    self.sh("ip", "neigh", "replace", a.split("/")[0], "lladdr", rmac, "dev", HOST_IFACE, "nud",
                            "permanent", netns=hns)
                for other in peers:  # hosts on one segment know each other too (no ARP in the captures)
                    if other is not host:
                        for a in other.addresses:
                            self.sh("ip", "neigh", "replace", a.split("/")[0], "lladdr", self.host_mac(other.name),
                                    "dev", HOST_IFACE, "nud", "permanent", netns=hns)
                if host.gateway:
                    self.sh("ip", "route", "add", "default", "via", host.gateway, netns=hns)
                if host.gateway6:
                    self.sh("ip", "-6", "route", "add", "default", "via", host.gateway6, netns=hns)
                if host.rules.strip():
                    self.sh("iptables-restore", netns=hns, stdin=host.rules)
        for name, value in sc.sysctls.items():
            self.sh("sysctl", "-q", "-w", f"{name}={value}", netns=self.router)
        for words in sc.nfacct:  # the accounting objects too: a -m nfacct rule may only name one that exists
            self.sh("nfacct", "add", *words, netns=self.router)
        if sc.ipsets.strip():  # the sets first: a rule may only name a set that exists
            self.sh("ipset", "restore", netns=self.router, stdin=sc.ipsets)
        if sc.rules.strip():
            self.sh("iptables-restore", netns=self.router, stdin=sc.rules)
        if sc.rules6.strip():
            self.sh("ip6tables-restore", netns=self.router, stdin=sc.rules6)

    def bridge_mac(self, bridge: str) -> str:
        return BRIDGE_MAC.format(next(i for i, b in enumerate(self.sc.bridges) if b.name == bridge) + 1)

    def host_mac(self, host: str) -> str:
        return HOST_MAC.format(next(i for i, h in enumerate(self.sc.hosts) if h.name == host) + 1)

    def snapshot(self) -> dict[str, str]:
        with tempfile.TemporaryDirectory(prefix="nbx-dt-snap-") as tmp:
            take_snapshot(tmp, netns=self.router)
            files = read_snapshot_files(tmp)
        if self.sc.uses_ipv6:  # the IPv6 side (engine/snapshot.py reads these when present)
            files["route6.json"] = self.sh("ip", "-6", "-j", "route", "show", "table", "main", netns=self.router)
            files["neigh6.json"] = self.sh("ip", "-6", "-j", "neigh", netns=self.router)
            files["ip6tables.rules"] = self.sh("ip6tables-save", "-c", netns=self.router)
            files["sysctl6.txt"] = self.sh("sysctl", "-a", "-r", r"^net\.ipv6\.conf\.all\.forwarding$",
                                           netns=self.router)
        return files

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=2.0)
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=CMD_TIMEOUT, check=False)

    # --- traffic ---------------------------------------------------------------------------------

    def host_iface_index(self, host: str) -> int:
        attach = self.sc.host(host).attach
        return next(i for i, f in enumerate(self.sc.interfaces) if f.name == attach)

    @staticmethod
    def _mac_bytes(mac: str) -> bytes:
        return bytes.fromhex(mac.replace(":", ""))

    def send(self, step: Step, socks: dict[str, socket.socket]) -> None:
        assert step.send is not None
        h = self.sc.host(step.host)
        i = self.host_iface_index(step.host)
        v6 = ":" in str(step.args.get("dst", ""))  # the host's first address of the destination's family
        first = next((a for a in h.addresses if (":" in a) == v6), h.addresses[0])
        src = str(step.args.get("src", first.split("/")[0]))
        dst_mac = router_mac(i)
        bridge = self.sc.bridge_of(h.attach)
        if bridge is not None:  # to a host on the same bridge: its MAC (bridged); else the bridge's (routed)
            dst = str(step.args.get("dst", ""))
            peer = next((o for o in self.sc.hosts if o.attach in bridge.ports
                         and any(a.split("/")[0] == dst for a in o.addresses)), None)
            dst_mac = self.host_mac(peer.name) if peer is not None else self.bridge_mac(bridge.name)
        frames = build_crafted(step.send, step.args, src=src, src_mac=self._mac_bytes(self.host_mac(h.name)),
                               dst_mac=self._mac_bytes(dst_mac), default_id=1000 + step.index)
        for f in frames:
            socks[step.host].send(f)

    def program(self, step: Step) -> None:
        assert step.run is not None
        a = step.args
        where = f"step {step.index} {step.host} {step.run}"
        if step.run == "sleep":
            time.sleep(min(float(a.get("duration", 0.1)), PROGRAM_TIMEOUT))
            return
        args = {"role": step.run, **a}
        if any(":" in addr for addr in self.sc.host(step.host).addresses) and not any(
                "." in addr for addr in self.sc.host(step.host).addresses):
            args.setdefault("v6", True)  # an IPv6-only host: its servers listen on ::
        if "dport" not in args and "port" in args:
            args["dport"] = args["port"]
        argv = [sys.executable, "-c", PROGRAM, json.dumps(args)]
        full = ["ip", "netns", "exec", self.ns[step.host], *argv]
        if step.run.endswith("_server"):
            p = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.procs.append(p)
            assert p.stdout is not None
            ready, _, _ = select.select([p.stdout], [], [], SERVER_READY_TIMEOUT)
            line = p.stdout.readline() if ready else ""
            if line.strip() != "ready":
                why = f"exit {p.returncode}" if p.poll() is not None else f"no ready line in {SERVER_READY_TIMEOUT:g}s"
                self.run.errors.append(f"{where}: server did not start ({why})")
            return
        try:
            out = subprocess.run(full, capture_output=True, text=True, timeout=PROGRAM_TIMEOUT, check=False)
            text = (out.stdout + out.stderr).strip().replace("\n", " | ")
            self.run.program_output.append(f"{where}: exit {out.returncode}: {text[:300]}")
        except subprocess.TimeoutExpired:
            self.run.errors.append(f"{where}: timed out after {PROGRAM_TIMEOUT}s")


def run_on_kernel(sc: Scenario, *, natbox_router: bool = False, gateway_args: tuple[str, ...] = ()) -> KernelRun:
    """Run the scenario on the real kernel (root and `ip netns` needed; see the module docstring).

    With `natbox_router`, the same namespaces are built with the kernel router, then natbox takes it over
    (`natbox gateway --adopt`) before the traffic: the run then records what live natbox did, with its
    conntrack table and counters read through its control socket (exec steps go to natbox the same way;
    `ip` steps are not mirrored and make the run an error); `gateway_args` are added to its command line
    (`--offload`).
    """
    why = kernel_available()
    if why is None and sc.ipsets.strip() and shutil.which("ipset") is None:
        why = "ipset not installed (the scenario restores ipsets)"
    if why is None and sc.nfacct and shutil.which("nfacct") is None:
        why = "nfacct not installed (the scenario declares nfacct objects)"
    if why is not None:
        raise KernelUnavailable(why)
    lab = _Lab(sc)
    run = lab.run
    cap: _Capture | None = None
    send_socks: dict[str, socket.socket] = {}
    gateway: LiveNatbox | None = None
    try:
        lab.build()
        run.snapshot = lab.snapshot()
        cap = _Capture({f.name: _socket_in(lab.router, f.name, ETH_P_ALL) for f in sc.interfaces})
        send_socks = {h.name: _socket_in(lab.ns[h.name], HOST_IFACE, 0) for h in sc.hosts}
        if natbox_router:
            gateway = LiveNatbox(lab.router, gateway_args)
        t0 = time.time()
        cap.start()
        for step in sc.steps:
            delay = t0 + step.at - time.time()
            if delay > 0:
                time.sleep(delay)
            if step.exec is not None:
                start = time.time() - t0
                try:
                    if gateway is not None:
                        gateway.exec(list(step.exec))
                    else:
                        lab.sh(*step.exec, netns=lab.router)
                except RuntimeError as exc:
                    run.errors.append(f"step {step.index} exec: {exc}")
                run.execs.append((start, time.time() - t0, list(step.exec)))
            elif step.send is not None:
                lab.send(step, send_socks)
            else:
                lab.program(step)
        time.sleep(sc.settle)
        run.conntrack_time = time.time() - t0
        ct = gateway.natbox("conntrack", "-L") if gateway else lab.sh("conntrack", "-L", netns=lab.router)
        run.conntrack_end = time.time() - t0
        if gateway is not None:
            run.conntrack_stats = gateway.natbox("conntrack", "-S")
            run.iptables_save = gateway.natbox("iptables-save", "-c")
            if sc.uses_ipv6:
                run.ip6tables_save = gateway.natbox("ip6tables-save", "-c")
            if sc.nfacct:
                run.nfacct = gateway.natbox("nfacct", "list")
        else:
            run.conntrack_stats = lab.sh("conntrack", "-S", netns=lab.router)
            run.iptables_save = lab.sh("iptables-save", "-c", netns=lab.router)
            if sc.uses_ipv6:
                run.ip6tables_save = lab.sh("ip6tables-save", "-c", netns=lab.router)
            if sc.nfacct:
                run.nfacct = lab.sh("nfacct", "list", netns=lab.router)
        run.conntrack = [ln for ln in ct.splitlines() if ln.strip()]
        cap.stop()
        run.frames = [Captured(ts - t0, name, out, data) for ts, name, out, data in sorted(cap.frames)]
        if cap.truncated:
            run.errors.append(f"{cap.truncated} frames longer than the capture ring's {RING_FRAME_SIZE}-byte slots")
        cap = None
    except RuntimeError as exc:
        if gateway is None:
            raise
        run.errors.append(str(exc))
    finally:
        if cap is not None:
            cap.stop()
        for s in send_socks.values():
            s.close()
        if gateway is not None:
            gateway.stop()
        lab.close()
    return run


def save_kernel_run(run: KernelRun, dest: str | os.PathLike[str]) -> Path:
    """Write a kernel run to `dest`: `snapshot/` (a host for `natbox replay --host`), `in.pcapng` (what the
    router received; interface names are the router's), `out.pcapng` (what it sent), `conntrack.txt`,
    `conntrack-stats.txt`, `iptables-save.txt`, `programs.txt` (and `nfacct.txt`: `nfacct list` after the traffic,
when the scenario has nfacct objects). Times in the captures are seconds
    since the run's t0."""
    from natbox.adapters.pcap import PcapngWriter

    base = Path(dest)
    (base / "snapshot").mkdir(parents=True, exist_ok=True)
    for name, text in run.snapshot.items():
        (base / "snapshot" / name).write_text(text)
    for fname, outgoing in (("in.pcapng", False), ("out.pcapng", True)):
        with PcapngWriter(base / fname) as w:
            for c in run.frames:
                if c.outgoing == outgoing:
                    w.write(c.frame, interface=c.iface, ts=c.ts)
    (base / "conntrack.txt").write_text("".join(f"{ln}\n" for ln in run.conntrack))
    (base / "conntrack-stats.txt").write_text(run.conntrack_stats)
    (base / "iptables-save.txt").write_text(run.iptables_save)
    if run.nfacct:
        (base / "nfacct.txt").write_text(run.nfacct)
    (base / "programs.txt").write_text("".join(f"{ln}\n" for ln in run.program_output + run.errors))
    return base


def cleanup_stale(prefix: str = "nbx-dt") -> list[str]:
    """Namespaces left by a killed run of this process id's naming scheme (only `nbx-dt<pid>-*` of dead PIDs)."""
    removed: list[str] = []
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=CMD_TIMEOUT,
                         check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=CMD_TIMEOUT, check=False)
            removed.append(name)
    return removed
