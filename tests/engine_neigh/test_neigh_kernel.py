"""NeighTable next to the real kernel, in throwaway network namespaces (skipped without root or tools).

Topology: client (10.77.1.2) -- vc0/vg0 -- gw (10.77.1.1, 10.77.0.1, forwarding) -- vg1/vp1 -- peer.
The gw routes 10.76.0.0/24 via 10.77.0.2; the peer answers ARP for 10.77.0.2 only when the test gives it
that address. tcpdump on the gw's interfaces timestamps what the kernel sends; the same events are run
through a NeighTable and the two sequences are compared (timing within the kernel's timer slack).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from natbox.adapters.netns import have_netns
from natbox.conntrack.tuple import parse_addr
from natbox.engine.host import Host, Interface
from natbox.engine.neigh import NeighParms, NeighTable, Nud, arp_solicit_saddr, format_ip_neigh
from natbox.engine.routing import Fib

pytestmark = pytest.mark.netns

SLACK = 0.3  # jiffies rounding and timer-wheel slack seen on 6.x: about 25 ms per retransmission
_ARP = re.compile(r"^(\d+\.\d+) (\S+) > (\S+), ethertype ARP .*Request who-has (\S+) tell ([\d.]+),")
_IPV4 = r"^(\d+\.\d+) \S+ > \S+, ethertype IPv4 \(0x0800\), length \d+: ([\d.]+) > ([\d.]+): "
_UNREACH = re.compile(_IPV4 + r"ICMP host ([\d.]+) unreachable")
_ECHO = re.compile(_IPV4 + r"ICMP echo request")


def _skip_reason() -> str | None:
    reason = have_netns()
    if reason is not None:
        return reason
    for tool in ("tcpdump", "ping"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


@pytest.fixture(scope="module")
def need_kernel() -> None:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(f"kernel comparison: {reason}")


def sh(*argv: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout)


@dataclass
class Lab:
    gw: str
    client: str
    peer: str

    def ns(self, node: str, *argv: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", node, *argv, check=check, timeout=timeout)


@contextmanager
def lab() -> Iterator[Lab]:
    base = f"nbxneigh{os.getpid()}"
    labx = Lab(base + "g", base + "c", base + "p")
    names = [labx.gw, labx.client, labx.peer]
    try:
        for n in names:
            sh("ip", "netns", "add", n)
        sh("ip", "link", "add", "vg0", "netns", labx.gw, "type", "veth", "peer", "name", "vc0", "netns", labx.client)
        sh("ip", "link", "add", "vg1", "netns", labx.gw, "type", "veth", "peer", "name", "vp1", "netns", labx.peer)
        sh("ip", "-n", labx.gw, "addr", "add", "10.77.1.1/24", "dev", "vg0")
        sh("ip", "-n", labx.gw, "addr", "add", "10.77.0.1/24", "dev", "vg1")
        sh("ip", "-n", labx.client, "addr", "add", "10.77.1.2/24", "dev", "vc0")
        for n, dev in ((labx.gw, "vg0"), (labx.gw, "vg1"), (labx.client, "vc0"), (labx.peer, "vp1")):
            sh("ip", "-n", n, "link", "set", dev, "up")
        for n in names:
            sh("ip", "-n", n, "link", "set", "lo", "up")
        sh("ip", "-n", labx.client, "route", "add", "default", "via", "10.77.1.1")
        sh("ip", "-n", labx.gw, "route", "add", "10.76.0.0/24", "via", "10.77.0.2")
        labx.ns(labx.gw, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        labx.ns(labx.client, "ping", "-c1", "-W2", "10.77.1.1")  # the client and gw know each other
        yield labx
    finally:
        for n in names:
            sh("ip", "netns", "del", n, check=False)


@contextmanager
def capture(labx: Lab, dev: str, bpf: str, out: Path) -> Iterator[Path]:
    """tcpdump -tt -n -e on `dev` in the gw, into `out` (text); stopped with SIGINT afterwards."""
    with out.open("w") as fh:
        proc = subprocess.Popen(["ip", "netns", "exec", labx.gw, "tcpdump", "-i", dev, "-tt", "-n", "-e", "-l",
                                 bpf], stdout=fh, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            proc.stderr.readline()  # "listening on ..."
            yield out
            time.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def model_host() -> tuple[Host, Fib]:
    host = Host(name="gw", ip_forward=True)
    host.add_interface(Interface("vg0", mac=bytes.fromhex("020000000001")))
    host.add_interface(Interface("vg1", mac=bytes.fromhex("020000000101")))
    host.add_address("vg0", parse_addr("10.77.1.1"), 24)
    host.add_address("vg1", parse_addr("10.77.0.1"), 24)
    host.ensure_loopback()
    return host, Fib(host)


def simulate_failure(saddr: int) -> tuple[list[float], list[float], list[int]]:
    """The NeighTable's (request times, failure times, sender IPs) for one packet to a dead next hop at 0."""
    host, fib = model_host()
    tbl: NeighTable[str] = NeighTable()
    target = parse_addr("10.77.0.2")
    reqs, _ = tbl.queue("vg1", target, "echo", 84, 0.0, saddr=saddr)
    times = [0.0] * len(reqs)
    senders = [arp_solicit_saddr(r, host.interfaces["vg1"], fib) for r in reqs]
    fails: list[float] = []
    while (t := tbl.next_deadline()) is not None:
        r, f = tbl.timers(t)
        times += [t] * len(r)
        senders += [arp_solicit_saddr(x, host.interfaces["vg1"], fib) for x in r]
        fails += [t] * len(f)
    assert tbl.state("vg1", target) == Nud.FAILED
    return times, fails, senders


def test_unresolvable_next_hop_matches_the_kernel(need_kernel: None, tmp_path: Path) -> None:
    """3 broadcast requests 1 s apart, ICMP host unreachable to the sender ~3 s after the first."""
    with lab() as labx, capture(labx, "vg1", "arp", tmp_path / "arp.txt") as arp_txt, \
            capture(labx, "vg0", "icmp", tmp_path / "icmp.txt") as icmp_txt:
        ping = labx.ns(labx.client, "ping", "-c1", "-W6", "10.76.0.5", check=False, timeout=15)
        assert "Destination Host Unreachable" in ping.stdout
        neigh = labx.ns(labx.gw, "ip", "neigh", "show").stdout
    arps = [m.groups() for line in arp_txt.read_text().splitlines() if (m := _ARP.match(line))]
    unreach = [m.groups() for line in icmp_txt.read_text().splitlines() if (m := _UNREACH.match(line))]
    echo = [m.groups() for line in icmp_txt.read_text().splitlines() if (m := _ECHO.match(line))]
    assert len(echo) == 1
    t0 = float(echo[0][0])
    kernel_times = [float(a[0]) - t0 for a in arps]
    sim_times, sim_fails, sim_senders = simulate_failure(parse_addr("10.77.1.2"))

    assert len(kernel_times) == len(sim_times) == 3
    for k, s in zip(kernel_times, sim_times, strict=True):
        assert abs(k - s) < SLACK, (kernel_times, sim_times)
    assert all(a[2] == "ff:ff:ff:ff:ff:ff" for a in arps)  # broadcast while INCOMPLETE
    assert [parse_addr(a[4]) for a in arps] == sim_senders  # "tell 10.77.0.1": inet_select_addr
    assert len(unreach) == 1 and len(sim_fails) == 1
    assert unreach[0][1:] == ("10.77.1.1", "10.77.1.2", "10.76.0.5")
    assert abs(float(unreach[0][0]) - t0 - sim_fails[0]) < SLACK
    # `ip neigh` prints the FAILED entry without lladdr (iproute2 adds a trailing space)
    sim_tbl: NeighTable[str] = NeighTable()
    sim_tbl.queue("vg1", parse_addr("10.77.0.2"), "x", 84, 0.0)
    sim_tbl.timers(10.0)
    assert [line.rstrip() for line in neigh.splitlines() if " dev vg1 " in line] == format_ip_neigh(sim_tbl.show())


def test_local_source_on_another_device_is_the_sender_ip(need_kernel: None, tmp_path: Path) -> None:
    """arp_announce 0: `ping -I 10.77.1.1` through vg1 asks "tell 10.77.1.1" (arp_solicit)."""
    with lab() as labx, capture(labx, "vg1", "arp", tmp_path / "arp.txt") as arp_txt:
        labx.ns(labx.gw, "ping", "-c1", "-W5", "-I", "10.77.1.1", "10.77.0.2", check=False, timeout=15)
    arps = [m.groups() for line in arp_txt.read_text().splitlines() if (m := _ARP.match(line))]
    _times, _fails, senders = simulate_failure(parse_addr("10.77.1.1"))
    assert len(arps) == 3
    assert [parse_addr(a[4]) for a in arps] == senders == [parse_addr("10.77.1.1")] * 3


@pytest.mark.slow
def test_stale_entry_probes_by_unicast_then_fails_like_the_kernel(need_kernel: None, tmp_path: Path) -> None:
    """STALE used → DELAY → PROBE after delay_first_probe_time: ucast_solicit unicast requests
    retrans_time apart, then FAILED. Shortened with the per-device sysctls (same code path)."""
    with lab() as labx:
        # REACHABLE lasts [2, 6) s: past `used + delay_first_probe_time` (the ping's echo), so the entry goes
        # STALE and not DELAY when it expires (neigh_timer_handler)
        labx.ns(labx.gw, "sysctl", "-qw", "net.ipv4.neigh.vg1.base_reachable_time_ms=4000",
                "net.ipv4.neigh.vg1.delay_first_probe_time=1")
        sh("ip", "-n", labx.peer, "addr", "add", "10.77.0.2/24", "dev", "vp1")
        link = sh("ip", "-n", labx.peer, "link", "show", "vp1").stdout
        found = re.search(r"link/ether ([0-9a-f:]{17})", link)
        assert found is not None
        mac = found.group(1)
        labx.ns(labx.gw, "ping", "-c1", "-W2", "10.77.0.2")
        sh("ip", "-n", labx.peer, "addr", "del", "10.77.0.2/24", "dev", "vp1")  # no more replies
        for _ in range(150):  # REACHABLE lasts [2, 6) s here, then STALE
            if "STALE" in labx.ns(labx.gw, "ip", "neigh", "show", "10.77.0.2", "dev", "vg1").stdout:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the entry never went STALE: "
                        + labx.ns(labx.gw, "ip", "neigh", "show", "10.77.0.2", "dev", "vg1").stdout.strip())
        with capture(labx, "vg1", "arp or icmp", tmp_path / "vg1.txt") as txt:
            labx.ns(labx.gw, "ping", "-c1", "-W1", "10.77.0.2", check=False)
            deadline = time.monotonic() + 15  # the probes end after about 4 s: FAILED one retrans_time later
            while "FAILED" not in (state := labx.ns(labx.gw, "ip", "neigh", "show", "10.77.0.2", "dev", "vg1").stdout):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
    lines = txt.read_text().splitlines()
    echo = [float(m.group(1)) for line in lines if (m := _ECHO.match(line))]
    arps = [m.groups() for line in lines if (m := _ARP.match(line))]
    assert len(echo) == 1
    kernel = [float(a[0]) - echo[0] for a in arps]

    tbl: NeighTable[str] = NeighTable(NeighParms(base_reachable_time=1.0, delay_first_probe_time=1.0))
    target = parse_addr("10.77.0.2")
    tbl.queue("vg1", target, "first", 84, -10.0)
    tbl.confirm("vg1", target, bytes.fromhex(mac.replace(":", "")), -10.0)
    tbl.timers(-5.0)
    assert tbl.state("vg1", target) == Nud.STALE
    assert tbl.lookup("vg1", target, 0.0) is not None  # the echo leaves with the cached MAC: DELAY
    sim: list[tuple[float, bytes | None]] = []
    while (t := tbl.next_deadline()) is not None:
        sim += [(t, r.dst_mac) for r in tbl.timers(t)[0]]
    assert tbl.state("vg1", target) == Nud.FAILED

    assert len(kernel) == len(sim) == 3
    for k, (s, dst) in zip(kernel, sim, strict=True):
        assert abs(k - s) < SLACK, (kernel, sim)
        assert dst is not None
    assert all(a[2] == mac for a in arps)  # unicast to the cached MAC
    assert "FAILED" in state
