"""The live gateway forwards IPv6: `natbox gateway --adopt` of a kernel NAT66 router (ip6tables MASQUERADE).

The lab has no static neighbours: the end hosts resolve the router by Neighbour Solicitation and natbox
answers (the kernel's IPv6 is off on the adopted devices), and natbox resolves the server by NS itself.
The same traffic runs once through the kernel and once through natbox, and `natbox conntrack --control S
ARGS` must print what conntrack-tools prints for IPv6 entries (`-f ipv6` and the rest), exit status and
messages included. On exit the kernel gets its IPv6 addresses, routes and forwarding back.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from natbox.lab.model import Lab, parse_lab_toml
from natbox.testing import gateway_live as gl
from natbox.testing.conntrack_cli import end_traffic, expect_offloaded, normalise, start_traffic, with_ports
from natbox.testing.live import (
    build_lab,
    gateway_argv,
    gateway_offloads,
    ns_popen,
    ns_run,
    require_programs,
    run_natbox,
    stop,
    unique_lab_name,
    wait_ready,
)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("need_netns"),
              pytest.mark.skipif(shutil.which("conntrack") is None, reason="needs conntrack (conntrack-tools)")]

LAB = """
name = "v6"
ipv6 = true

[[node]]
name = "client"
routes = ["default via fd00:1::1"]

[[node]]
name = "gw"
gateway = true
owned = ["lan0", "wan0"]

[[node]]
name = "server"

[[link]]
a = { node = "client", name = "eth0", addresses = ["fd00:1::2/64"] }
b = { node = "gw", name = "lan0", mac = "02:00:00:00:01:01" }

[[link]]
a = { node = "gw", name = "wan0", mac = "02:00:00:00:02:01" }
b = { node = "server", name = "eth0", addresses = ["2001:db8:1::2/64"] }
"""
SERVER = "2001:db8:1::2"
TRANSFER = 1 << 20  # bytes
KERNEL_ROUTER = [
    ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"],
    ["ip", "addr", "add", "fd00:1::1/64", "dev", "lan0", "nodad"],
    ["ip", "addr", "add", "2001:db8:1::1/64", "dev", "wan0", "nodad"],
    ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
    ["ip6tables", "-t", "nat", "-A", "POSTROUTING", "-s", "fd00:1::/64", "-o", "wan0", "-j", "MASQUERADE"],
]

OK_ARGS = [
    ["-L"], ["-L", "-f", "ipv6"], ["-L", "-f", "ipv6x", "-p", "udp"], ["-L", "-f", "ipv4"],
    ["-L", "-f", "ipv6", "-p", "tcp", "--dport", "5001"], ["-L", "-f", "ipv6", "-p", "udp", "--sport", "CLIENT_PORT"],
    ["-L", "-f", "ipv6", "-s", "fd00:1::2"], ["-L", "-f", "ipv6", "-d", "2001:db8::/32"],
    ["-L", "-f", "ipv6", "-s", "fd00:1::/120"], ["-L", "-f", "ipv6", "-r", SERVER],
    ["-L", "-f", "ipv6", "-q", "2001:db8:1::1"],
    ["-L", "-f", "ipv6", "--orig-src", "fd00:1::2", "-p", "udp", "--dport", "5002"],
    ["-L", "-f", "ipv6", "-p", "tcp", "--state", "ESTABLISHED"], ["-L", "-f", "ipv6", "-u", "UNREPLIED"],
    ["-L", "-f", "ipv6", "-o", "extended"], ["-L", "-f", "ipv6", "-o", "xml", "-p", "udp"],
    ["-L", "-f", "ipv6", "-o", "save"], ["-L", "-f", "ipv6", "-o", "id", "-p", "udp"], ["-L", "-f", "ipv6", "-n"],
    ["-L", "-f", "ipv6", "-g"], ["-D", "-f", "ipv6", "-p", "tcp", "--dport", "9"],
    ["-L", "-f", "ipv6", "-s", "fd00:1::3"], ["-L", "-s", "fd00:1::2"], ["-L", "-d", "::/0"], ["-L", "-j"],
    ["-L", "-f", "ipv6", "-n"], ["-L", "-f", "ipv6", "-g", SERVER], ["-L", "-n", "2001:db8:1::1"],
]
BAD_ARGS = [["-L", "-f", "inet6"], ["-L", "-f", "inet"], ["-L", "-f", "ipv6", "-s", "10.0.0.1"],
            ["-L", "-f", "ipv6", "-s", "fd00::/129"], ["-L", "-f", "ipx"],
            ["-L", "-s", "fd00::zz"], ["-L", "-s", "10.0.0.1", "-f", "ipv6"], ["-L", "-f", "ipv6", "-f", "ipv4"],
            ["-L", "-s", "fd00:1::2", "-r", "10.1.1.1"], ["-L", "-f", "ipv6", "-g", "10.0.0.1"]]
# run last, in this order: they change the table
CHANGING_ARGS = [["-D", "-f", "ipv6", "-p", "udp", "--dport", "5999"], ["-L", "-f", "ipv6"], ["-F", "-f", "ipv6"],
                 ["-L"]]


@pytest.fixture
def lab() -> Iterator[Lab]:
    model = parse_lab_toml(LAB, "test_gateway_live6.py")
    model.name = unique_lab_name("v6")
    yield from build_lab(model)


def _ask(lab: Lab, path: Path | None, args: list[str], off: int) -> tuple[int, str, str]:
    if path is None:
        res = ns_run(lab, "gw", ["conntrack", *with_ports(args, off)])
        return res.returncode, res.stdout.decode(), res.stderr.decode()
    done = run_natbox("conntrack", "--control", str(path), *with_ports(args, off))
    return done.returncode, done.stdout, done.stderr


def _collect(lab: Lab, path: Path | None, off: int) -> dict[tuple[str, ...], tuple[int, str, str]]:
    client, servers = start_traffic(lab, SERVER, off)
    try:
        ping = ns_run(lab, "client", ["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", SERVER])
        assert ping.returncode == 0, ping.stdout.decode() + ping.stderr.decode()
        return {tuple(args): _ask(lab, path, args, off) for args in OK_ARGS + BAD_ARGS + CHANGING_ARGS}
    finally:
        end_traffic(client, servers)


def test_adopted_ipv6_router_forwards_answers_nd_and_lists_conntrack_as_conntrack(lab: Lab, tmp_path: Path) -> None:
    require_programs("ip6tables", "ping")
    for argv in KERNEL_ROUTER:
        assert ns_run(lab, "gw", argv).returncode == 0, argv
    kernel = _collect(lab, None, 0)
    assert ns_run(lab, "gw", ["conntrack", "-F"]).returncode == 0
    for node in ("client", "server"):  # forget the kernel router's MAC: natbox must answer the NS itself
        ns_run(lab, node, ["ip", "-6", "neigh", "flush", "dev", "eth0"])
    path = tmp_path / "ctl.sock"
    gw = ns_popen(lab, "gw", [a for a in gateway_argv(Path("HOST"), "--adopt", "--control", str(path)) if a != "HOST"])
    try:
        said = wait_ready(gw)
        assert "IPv6 on lan0, wan0 (net.ipv6.conf.all.forwarding was 1)" in said, said
        assert "inet6" not in ns_run(lab, "gw", ["ip", "-6", "addr", "show", "dev", "lan0"]).stdout.decode()
        ours = _collect(lab, path, 10)
        kernel_after = ns_run(lab, "gw", ["conntrack", "-L", "-f", "ipv6"])
        status = run_natbox("status", "--control", str(path))
    finally:
        rest = stop(gw)
    assert "given back to the kernel" in rest and "Traceback" not in rest, rest
    assert kernel_after.stdout.decode().strip() == "", "the kernel tracked IPv6 while natbox held the router"
    assert status.stdout.count("2001:db8:1::2 dev wan0 lladdr") == 1, status.stdout  # (from the snapshot)
    assert "fd00:1::1/64" in status.stdout, status.stdout
    assert len(normalise(kernel[("-L", "-f", "ipv6")][1], 0)) == 3  # UDP echo, TCP, ping
    for args in OK_ARGS + BAD_ARGS + CHANGING_ARGS:
        (krc, kout, kerr), (nrc, nout, nerr) = kernel[tuple(args)], ours[tuple(args)]
        what = " ".join(args)
        assert nrc == krc, (what, kerr, nerr)
        assert nerr == kerr, (what, kerr, nerr)
        want = normalise(kout, 0)
        if gateway_offloads():  # docs/differences.md, "Flow offload": offloaded entries listed [OFFLOAD]
            want = expect_offloaded(want, normalise(nout, 10))
        assert normalise(nout, 10) == want, (what, kout, nout)
    if gateway_offloads():  # the held TCP connection is ESTABLISHED and ASSURED: offloaded
        assert "[OFFLOAD]" in ours[("-L", "-f", "ipv6", "-p", "tcp", "--dport", "5001")][1]
    # given back: the kernel holds its addresses and forwards IPv6 again
    assert "fd00:1::1/64" in ns_run(lab, "gw", ["ip", "-6", "addr", "show", "dev", "lan0"]).stdout.decode()
    assert ns_run(lab, "gw", ["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.decode().strip() == "1"
    ping = ns_run(lab, "client", ["ping", "-6", "-c", "1", "-W", "3", SERVER])
    assert ping.returncode == 0, ping.stdout.decode()
    assert "src=fd00:1::2" in ns_run(lab, "gw", ["conntrack", "-L", "-f", "ipv6"]).stdout.decode()


def _example(name: str, prefix: str) -> Iterator[Lab]:
    from natbox.testing.live import load_example

    yield from build_lab(load_example(name, unique_lab_name(prefix)))


@pytest.fixture
def basic6_lab() -> Iterator[Lab]:
    yield from _example("basic6.toml", "b6")


@pytest.fixture
def qemu6_lab() -> Iterator[Lab]:
    yield from _example("qemu6.toml", "q6")


def _gateway(lab: Lab, *extra: str) -> subprocess.Popen[bytes]:
    gw = lab.gateway
    assert gw is not None and gw.host is not None
    proc = ns_popen(lab, "gw", gateway_argv(Path(lab.filename).parent / gw.host, *lab.gateway_args(), *extra))
    wait_ready(proc)
    return proc


def _transfer(lab: Lab, clients: list[str]) -> list[str]:
    """Each client sends TRANSFER bytes to the server over IPv6; the peers the server saw."""
    import hashlib
    import random

    server = gl.start(lab, "server", gl.script(gl.TCP_SERVER, True, port=5001, clients=len(clients)))
    for node in clients:
        client = gl.script(gl.TCP_CLIENT, True, n=TRANSFER, dst=SERVER, port=5001)
        done = ns_run(lab, node, [sys.executable, "-c", client], timeout=60)
        assert done.stdout.decode().strip() == "ok", done.stderr.decode()
    out, _ = server.communicate(timeout=30)
    expected = hashlib.sha256(random.Random(7).randbytes(TRANSFER)).hexdigest()
    peers = []
    for line in out.decode().splitlines():
        peer, n, digest = line.split()
        assert (int(n), digest) == (TRANSFER, expected)
        peers.append(peer)
    return peers


def test_dual_stack_lab_both_families_through_natbox(basic6_lab: Lab, tmp_path: Path) -> None:
    """basic6.toml: natbox holds both families' addresses (the kernel has IPv6 off on lan0/wan0): ping and
    ping6 from the client, a 1 MiB TCP transfer over IPv6 masqueraded to 2001:db8:1::1 (GSO, in place)."""
    require_programs("ping")
    proc = _gateway(basic6_lab, "--control", str(tmp_path / "ctl.sock"))
    try:
        for dst in ("198.51.100.2", SERVER, "fd00:1::1"):
            res = ns_run(basic6_lab, "client", ["ping", "-c", "2", "-i", "0.2", "-W", "2", dst])
            assert res.returncode == 0, dst + res.stdout.decode() + res.stderr.decode()
        assert _transfer(basic6_lab, ["client"]) == ["2001:db8:1::1"]
        status = run_natbox("status", "--control", str(tmp_path / "ctl.sock"))
        # the lab has no static neighbours: natbox resolved the server by its own Neighbour Solicitation
        assert re.search(r"2001:db8:1::2 dev wan0 lladdr [0-9a-f:]+ (REACHABLE|STALE|DELAY)", status.stdout), status
    finally:
        rest = stop(proc)
    assert "stopped:" in rest and "Traceback" not in rest, rest
    # the transfer crossed as GSO super-packets, left from the receive ring where they arrived (zero copy)
    assert "rx_gso=" in rest and "rx_in_place=" in rest and "tx_error" not in rest, rest


def test_qemu6_two_vms_snat66(qemu6_lab: Lab) -> None:
    """qemu6.toml: natbox holds two TAPs (two VMs, fd00:2::15 and fd00:3::15); both reach the server SNATed
    to 2001:db8:1::1."""
    require_programs("ping")
    proc = _gateway(qemu6_lab)
    try:
        for vm in ("vm1", "vm2"):
            res = ns_run(qemu6_lab, vm, ["ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER])
            assert res.returncode == 0, vm + res.stdout.decode() + res.stderr.decode()
        assert _transfer(qemu6_lab, ["vm1", "vm2"]) == ["2001:db8:1::1", "2001:db8:1::1"]
    finally:
        rest = stop(proc)
    assert "stopped:" in rest and "Traceback" not in rest, rest
