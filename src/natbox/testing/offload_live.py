"""The kernel data path's live lab (tests/offload/test_datapath_live.py, test_newflows_live.py): client —
router — server namespaces joined by veths, the BPF program (natbox.offload.datapath) on the router's two
devices, entries installed from a natbox engine's plans (natbox.testing.offload, offload6) for the same flows.

One lab a family: `IPV4` (client 10.0.1.2/24 — eth0 10.0.1.1, eth1 198.51.100.1/24 — server 198.51.100.2) and
`IPV6` (fd00:1::2/64 — fd00:1::1, 2001:db8:1::1/64 — 2001:db8:1::2), the same shape, so a test of what both
branches of the program do is written once, parametrised by `Family`.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from natbox.adapters.netns import enter_netns, run_in_netns, temp_netns
from natbox.engine.fastpath import FlowPlan
from natbox.offload.datapath import Datapath, ifindex, probe
from natbox.offload.entry import FlowStats, OffloadKey, offload_entry
from natbox.testing import offload, offload6
from natbox.testing.live import netns_reason, require_programs
from natbox.wire import ethernet
from natbox.wire.layout import ETH_HDR_LEN, IP6H_LEN, IP6H_NEXTHDR, IPH_MIN_LEN, IPH_PROTOCOL


@dataclass(frozen=True)
class Family:
    """What the lab's IPv4 and IPv6 runs differ in: addresses (text for sockets and ip, numbers for the wire),
    the router's engine, the frames' layout and checks."""

    name: str
    af: int
    ethertype: int
    client: str
    lan: str  # the router's eth0
    public: str  # the router's eth1
    server: str
    plen: int
    forwarding: str  # the router's sysctl
    iptables: str
    flows: Callable[..., offload.RouterFlowsBase]
    rules: str
    portmap_rules: str
    ip_hlen: int  # the network header's length (no options, no extension headers)
    proto_at: int  # a frame's protocol (IPv4) or next header (IPv6) byte
    port_at: slice  # a FlowPlan's new_addrs: the source port
    check_frame: Callable[[bytes, bool, int, int], int]  # natbox.testing.offload.check_frame, check_frame6
    echo: int  # the echo's protocol

    def addr(self, text: str) -> int:
        return int.from_bytes(socket.inet_pton(self.af, text), "big")

    @property
    def ids(self) -> str:
        return self.name


IPV4 = Family("ipv4", socket.AF_INET, ethernet.ETH_P_IP, "10.0.1.2", "10.0.1.1", "198.51.100.1", "198.51.100.2", 24,
              "net.ipv4.ip_forward", "iptables", offload.RouterFlows, offload.RULES, offload.PORTMAP_RULES,
              IPH_MIN_LEN, ETH_HDR_LEN + IPH_PROTOCOL, slice(8, 10), offload.check_frame, 1)
IPV6 = Family("ipv6", socket.AF_INET6, ethernet.ETH_P_IPV6, "fd00:1::2", "fd00:1::1", "2001:db8:1::1", "2001:db8:1::2",
              64, "net.ipv6.conf.all.forwarding", "ip6tables", offload6.RouterFlows6, offload6.RULES6,
              offload6.PORTMAP_RULES6, IP6H_LEN, ETH_HDR_LEN + IP6H_NEXTHDR, slice(32, 34), offload6.check_frame6, 58)
FAMILIES = (IPV4, IPV6)


@dataclass
class Lab:
    family: Family
    client: str
    router: str
    server: str
    macs: tuple[bytes, bytes, bytes, bytes]  # router eth0, router eth1, client c0, server s0
    dp: Datapath

    def sh(self, ns: str, *argv: str) -> str:
        return run_in_netns(ns, list(argv)).stdout

    def forwarding(self, on: bool) -> None:
        self.sh(self.router, "sysctl", "-qw", f"{self.family.forwarding}={int(on)}")

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

    def flows(self, **kwargs: str) -> offload.RouterFlowsBase:
        """An engine of this router (its MACs) for the family (RouterFlows or RouterFlows6)."""
        return self.family.flows(*self.macs, **kwargs)

    def offload_peers(self, tx: bool) -> None:
        """TX checksum offload (and TSO) of the client's and the server's veth on or off: partial sums or full."""
        state = "on" if tx else "off"
        self.sh(self.client, "ethtool", "-K", "c0", "tx", state)
        self.sh(self.server, "ethtool", "-K", "s0", "tx", state)

    def capture(self, ns: str, dev: str) -> contextlib.AbstractContextManager[socket.socket]:
        """offload.capture of the family's frames."""
        return offload.capture(ns, dev, self.family.ethertype)

    def of(self, frames: list[tuple[bytes, bool]], proto: int) -> list[tuple[bytes, bool]]:
        """The frames of L4 protocol `proto` (IPv6: the fixed header's next header)."""
        return [f for f in frames if f[0][self.family.proto_at] == proto]

    def sockets(self, kind: int) -> tuple[socket.socket, socket.socket]:
        """A socket of the family in the server's namespace and one in the client's."""
        with enter_netns(self.server):
            srv = socket.socket(self.family.af, kind)
        with enter_netns(self.client):
            cli = socket.socket(self.family.af, kind)
        return srv, cli

    def send_frames(self, frames: list[bytes]) -> None:
        """Frames sent as they are from the client's c0."""
        with enter_netns(self.client):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(self.family.ethertype))
        with s:
            s.bind(("c0", 0))
            for f in frames:
                s.send(f)


def mac_of(ns: str, dev: str) -> bytes:
    out = run_in_netns(ns, ["cat", f"/sys/class/net/{dev}/address"]).stdout.strip()
    return bytes.fromhex(out.replace(":", ""))


def recv_exactly(s: socket.socket, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = s.recv(min(65536, n - len(got)))
        if not chunk:
            break
        got += chunk
    return bytes(got)


@contextlib.contextmanager
def offload_lab(family: Family, workdir: Path, prefix: str, *, masquerade: bool = True, new_flows: bool = False,
                programs: tuple[str, ...] = ("ethtool",)) -> Iterator[Lab]:
    """The lab (skips the test when namespaces, `programs`, clang, tc or the kernel's BPF are missing): the
    router forwarding, with the kernel's own MASQUERADE out of eth1 (`masquerade`: the handshakes a test makes
    through the kernel before it installs entries) or, without, not forwarding at all; the program (the
    new-connections build with `new_flows`) on eth0 and eth1, its private bpffs under `workdir`, removed after."""
    reason = netns_reason()
    if reason is not None:
        pytest.skip(f"live test: {reason}")
    require_programs("clang", "tc", *programs, *((family.iptables,) if masquerade else ()))
    missing = probe()
    if missing is not None:
        pytest.skip(f"offload unavailable: {missing}")
    f = family
    with temp_netns(prefix, 3) as (client, router, server):
        if f is IPV6:
            for ns in (client, router, server):
                run_in_netns(ns, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"])
                run_in_netns(ns, ["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"])
        nodad = ["nodad"] if f is IPV6 else []
        for ns, dev, peer, addr in ((client, "c0", "eth0", f.client), (server, "s0", "eth1", f.server)):
            run_in_netns(ns, ["ip", "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", router])
            run_in_netns(ns, ["ip", "addr", "add", f"{addr}/{f.plen}", "dev", dev, *nodad])
            run_in_netns(ns, ["ip", "link", "set", dev, "up"])
            run_in_netns(router, ["ip", "link", "set", peer, "up"])
        run_in_netns(router, ["ip", "addr", "add", f"{f.lan}/{f.plen}", "dev", "eth0", *nodad])
        run_in_netns(router, ["ip", "addr", "add", f"{f.public}/{f.plen}", "dev", "eth1", *nodad])
        run_in_netns(client, ["ip", "-6" if f is IPV6 else "-4", "route", "add", "default", "via", f.lan])
        if masquerade:
            run_in_netns(router, [f.iptables, "-t", "nat", "-A", "POSTROUTING", "-o", "eth1", "-j", "MASQUERADE"])
            run_in_netns(router, ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=1"], check=False)
        run_in_netns(router, ["sysctl", "-qw", f"{f.forwarding}={int(masquerade)}"])
        macs = (mac_of(router, "eth0"), mac_of(router, "eth1"), mac_of(client, "c0"), mac_of(server, "s0"))
        with enter_netns(router):
            dp = Datapath(str(workdir / "dp"), new_flows=new_flows)
            try:
                dp.attach("eth0")
                dp.attach("eth1")
                dp.attach("eth1")  # idempotent
                yield Lab(f, client, router, server, macs, dp)
            finally:
                dp.close()
        assert not (workdir / "dp").exists()
