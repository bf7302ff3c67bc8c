"""`natbox conntrack --control S ARGS` against the real `conntrack ARGS` (conntrack-tools 1.4.7).

The same lab and traffic run once with the kernel's router and once with natbox adopting that router:
a replied UDP exchange, a UDP datagram to a closed port and a TCP connection held ESTABLISHED. For
each command line — filters, output formats, and the ones conntrack refuses — natbox must print what
conntrack prints: the same lines (sorted; timeouts, ids and `use` normalised), the same messages and
the same exit status.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from natbox.lab.model import Lab
from natbox.testing.conntrack_cli import end_traffic, expect_offloaded, normalise, start_traffic, with_ports
from natbox.testing.live import (
    build_lab,
    gateway_argv,
    gateway_offloads,
    load_example,
    ns_popen,
    ns_run,
    run_natbox,
    stop,
    unique_lab_name,
    wait_ready,
)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("need_netns"),
              pytest.mark.skipif(shutil.which("conntrack") is None, reason="needs conntrack (conntrack-tools)")]

SERVER = "198.51.100.2"

OK_ARGS = [
    ["-L"], ["-L", "conntrack"], ["-L", "-p", "tcp", "--dport", "5001"], ["-L", "-p", "tcp", "--dport", "80"],
    ["-L", "-p", "udp"], ["-L", "-p", "17", "--sport", "CLIENT_PORT"], ["-L", "-p", "udp", "--reply-port-src", "5999"],
    ["-L", "-s", "10.0.1.2", "-p", "udp", "--dport", "5002"], ["-L", "-d", "198.51.100.0/24"],
    ["-L", "--orig-src", "10.0.1.0/25"], ["-L", "-r", "198.51.100.2"], ["-L", "-q", "198.51.100.1"],
    ["-L", "-q", "10.0.1.2"], ["-L", "-p", "tcp", "--state", "ESTABLISHED"], ["-L", "-p", "tcp", "--state", "CLOSE"],
    ["-L", "-u", "ASSURED"], ["-L", "-u", "UNREPLIED"], ["-L", "-u", "SEEN_REPLY"], ["-L", "-n"], ["-L", "-g"],
    ["-L", "-j"], ["-L", "-n", "198.51.100.1"], ["-L", "-m", "0"], ["-L", "-m", "1"], ["-L", "-p", "udp", "-p", "tcp"],
    ["-L", "-s", "10.9.9.9", "-s", "10.0.1.2"], ["-L", "-f", "ipv6"], ["-L", "-f", "ipv4", "-p", "udp"],
    ["-L", "-o", "extended"], ["-L", "-o", "xml", "-p", "udp"], ["-L", "-o", "xml", "-p", "tcp"], ["-L", "-o", "xml"],
    ["-L", "-o", "xml", "-p", "99"], ["-L", "-o", "save"], ["-L", "-o", "id", "-p", "udp"],
    ["-L", "-o", "extended,id"], ["-L", "-o", "timestamp", "-p", "tcp"], ["-D", "-p", "tcp", "--dport", "9"],
]
BAD_ARGS = [
    ["-L", "--dport", "80"], ["-L", "-p", "foo"], ["-L", "-s", "foo"], ["-L", "-s", "10.0.0.1/33"],
    ["-L", "-o", "bogus"], ["-L", "-o", "save,xml"], ["-L", "-p", "tcp", "--state", "FOO"], ["-C", "-p", "udp"],
    ["-S", "-s", "1.1.1.1"], ["-F", "-p", "udp"], ["-L", "-D"], ["-L", "-u", "FOO"], ["-L", "-p"], ["-L", "extra"],
    ["-L", "--bogus"], ["-L", "-p", "udp", "--state", "ESTABLISHED"], ["-C", "-o", "xml"], ["-L", "-e", "NEW"],
    ["-E", "-p", "foo"], ["-E", "-s", "10.0.0.1/40"], ["-E", "--dport", "80"],
]


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from build_lab(load_example("basic.toml", unique_lab_name("ct")))


def test_natbox_conntrack_prints_what_conntrack_prints(lab: Lab, tmp_path: Path) -> None:
    for argv in (["ip", "addr", "add", "10.0.1.1/24", "dev", "lan0"], ["ip", "addr", "add", "198.51.100.1/24",
                 "dev", "wan0"], ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                 ["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.0.1.0/24", "-o", "wan0", "-j", "MASQUERADE"]):
        assert ns_run(lab, "gw", argv).returncode == 0, argv
    client, servers = start_traffic(lab, SERVER, 0)
    try:
        kernel: dict[tuple[str, ...], tuple[int, str, str]] = {}
        for args in OK_ARGS + BAD_ARGS:
            res = ns_run(lab, "gw", ["conntrack", *with_ports(args, 0)])
            kernel[tuple(args)] = (res.returncode, res.stdout.decode(), res.stderr.decode())
    finally:
        end_traffic(client, servers)
    assert ns_run(lab, "gw", ["conntrack", "-F"]).returncode == 0
    path = tmp_path / "ctl.sock"
    gw = ns_popen(lab, "gw", [a for a in gateway_argv(Path("HOST"), "--adopt", "--control", str(path)) if a != "HOST"])
    try:
        wait_ready(gw)
        client, servers = start_traffic(lab, SERVER, 10)
        try:
            ours: dict[tuple[str, ...], tuple[int, str, str]] = {}
            for args in OK_ARGS + BAD_ARGS:
                done = run_natbox("conntrack", "--control", str(path), *with_ports(args, 10))
                ours[tuple(args)] = (done.returncode, done.stdout, done.stderr)
        finally:
            end_traffic(client, servers)
    finally:
        stop(gw)
    assert len(normalise(kernel[("-L",)][1], 0)) == 3  # the traffic made its three entries
    for args in OK_ARGS + BAD_ARGS:
        (krc, kout, kerr), (nrc, nout, nerr) = kernel[tuple(args)], ours[tuple(args)]
        what = " ".join(args)
        assert nrc == krc, (what, kerr, nerr)
        assert nerr == kerr, (what, kerr, nerr)
        want = normalise(kout, 0)
        if gateway_offloads():  # docs/differences.md, "Flow offload": offloaded entries listed [OFFLOAD]
            want = expect_offloaded(want, normalise(nout, 10))
        assert normalise(nout, 10) == want, (what, kout, nout)
    if gateway_offloads():  # the held TCP connection is ESTABLISHED and ASSURED: offloaded
        assert "[OFFLOAD]" in ours[("-L", "-p", "tcp", "--dport", "5001")][1]
