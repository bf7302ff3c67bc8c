"""`natbox gateway --offload` carries IPv6 flows in the kernel too: NAT66 through the tc BPF datapath.

The lab is basic6.toml (client fd00:1::2 -- natbox lan0/wan0, ip6tables MASQUERADE -- server 2001:db8:1::2; the
kernel has IPv6 off on lan0/wan0 and natbox answers ND). What is checked, as tests/live/test_gateway_offload.py
does for IPv4: a bulk TCP transfer over IPv6 arrives byte-exact, carried by the kernel (the datapath's counters
grow, natbox's packet sockets see a handful of frames), `conntrack -L -f ipv6` shows it [OFFLOAD] and the FIN
brings it back; every frame the server receives has a valid checksum, full or CHECKSUM_PARTIAL, with the peers'
TX checksum offload on and off (a capture on the server's device). Skips, naming what is missing, without
clang/tc/bpf().
"""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from natbox.lab.model import Lab
from natbox.testing.live import (
    build_lab,
    gateway_argv,
    load_example,
    ns_popen,
    ns_run,
    require_programs,
    run_natbox,
    stop,
    unique_lab_name,
    wait_ready,
)
from natbox.testing.offload6 import capture6, check_frame6, received6
from natbox.testing.paths import LAB_EXAMPLES as EXAMPLES
from natbox.wire.ipv6 import parse_addr6
from natbox.wire.layout import ETH_HDR_LEN, IP6H_NEXTHDR

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("need_netns")]

SERVER = "2001:db8:1::2"
GW_WAN = "2001:db8:1::1"
BULK = 24 << 20  # bytes: enough packets that natbox's share of them is plain

BULK_SERVER = """
import hashlib, socket
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", {port})); s.listen(1); s.settimeout(40)
print("listening", flush=True)
c, peer = s.accept(); c.settimeout(40)
h = hashlib.sha256(); n = 0
while b := c.recv(1 << 16):
    h.update(b); n += len(b)
c.sendall(b"ok"); c.close()
print(peer[0], n, h.hexdigest(), flush=True)
"""

# sends BULK bytes in two halves; between them it waits for a flag file (the test looks at the gateway then)
BULK_CLIENT = """
import os, random, socket, time
data = random.Random(7).randbytes({n})
c = socket.create_connection(("{dst}", {port}), timeout=40)
c.sendall(data[:{n} // 2])
print("half", flush=True)
deadline = time.monotonic() + 40
while not os.path.exists("{flag}") and time.monotonic() < deadline:
    time.sleep(0.05)
c.sendall(data[{n} // 2:]); c.shutdown(socket.SHUT_WR)
print(c.recv(16).decode(), flush=True)
"""


def _require_offload() -> None:
    require_programs("clang", "tc")
    from natbox.offload.datapath import probe

    missing = probe()
    if missing is not None:
        pytest.skip(f"--offload: {missing}")


@pytest.fixture
def lab() -> Iterator[Lab]:
    _require_offload()
    yield from build_lab(load_example("basic6.toml", unique_lab_name("off6")))


def _gateway(lab: Lab, ctl: Path, *extra: str) -> subprocess.Popen[bytes]:
    gw = lab.gateway
    assert gw is not None and gw.host is not None
    proc = ns_popen(lab, "gw", gateway_argv(EXAMPLES / gw.host, *lab.gateway_args(), "--offload", "--control",
                                            str(ctl), *extra))
    said = wait_ready(proc)
    assert "; offload: tc BPF datapath on lan0, wan0" in said, said
    return proc


def _start(lab: Lab, node: str, code: str) -> subprocess.Popen[bytes]:
    proc = ns_popen(lab, node, [sys.executable, "-c", code])
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"listening"
    return proc


def _status(ctl: Path) -> str:
    res = run_natbox("status", "--control", str(ctl))
    assert res.returncode == 0, res.stderr
    return res.stdout


def _carried(status: str, what: str = "packets") -> int:
    m = re.search(r"offload carried: (\d+) packets, (\d+) bytes", status)
    assert m, status
    return int(m.group(1 if what == "packets" else 2))


def _rx(status: str) -> int:
    m = re.search(r"\brx=(\d+)", status)
    return int(m.group(1)) if m else 0


def _wait_for(ctl: Path, pattern: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = _status(ctl)
        if re.search(pattern, status) or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


@pytest.mark.parametrize("tx_csum", ["on", "off"])
def test_an_ipv6_bulk_flow_through_nat66_is_carried_by_the_kernel(lab: Lab, tmp_path: Path, tx_csum: str) -> None:
    """The transfer arrives byte-exact from the masqueraded address; the datapath carried most of it and
    natbox's sockets saw few frames; `conntrack -L -f ipv6` showed it [OFFLOAD] halfway and the FIN brought
    it back. Every TCP frame the server's device received is checked: address, hop limit, and the checksum,
    which with TX offload on is mostly CHECKSUM_PARTIAL (the field must be the NATed pseudo-header's sum) and
    with it off a full sum."""
    if tx_csum == "off":
        require_programs("ethtool")
        for node in ("client", "server"):
            ns_run(lab, node, ["ethtool", "-K", "eth0", "tx", "off"])
    ctl, flag = tmp_path / "ctl.sock", tmp_path / "go"
    gw = _gateway(lab, ctl)
    server = client = None
    try:
        with capture6(lab.netns("server"), "eth0") as cap:
            server = _start(lab, "server", BULK_SERVER.format(port=5001))
            client = ns_popen(lab, "client", [sys.executable, "-c", BULK_CLIENT.format(n=BULK, dst=SERVER, port=5001,
                                                                                       flag=flag)])
            assert client.stdout is not None
            assert client.stdout.readline().decode().strip() == "half"
            halfway = _wait_for(ctl, r"offload carried: [1-9]")
            listed = run_natbox("conntrack", "--control", str(ctl), "-L", "-f", "ipv6").stdout
            frames = received6(cap, limit=4000)
        flag.touch()
        out, _ = server.communicate(timeout=60)
        assert client.communicate(timeout=30)[0].decode().strip() == "ok"
        after = _wait_for(ctl, r"back to natbox \(fin\)")
    finally:
        for p in (server, client):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        rest = stop(gw)
    peer, n, digest = out.decode().split()
    assert (peer, int(n)) == (GW_WAN, BULK)
    assert digest == hashlib.sha256(random.Random(7).randbytes(BULK)).hexdigest()
    assert re.search(r"^tcp +6 src=fd00:1::2 dst=2001:db8:1::2 sport=\d+ dport=5001 src=2001:db8:1::2 "
                     r"dst=2001:db8:1::1 sport=5001 dport=\d+ \[OFFLOAD\] mark=0 use=2$", listed, re.M), listed
    assert "1 flows offloaded, 2 map entries" in halfway, halfway
    assert "back to natbox (fin)" in after, after
    carried, seen = _carried(after, "bytes"), _rx(after)
    assert carried > BULK * 0.9, after  # (in GSO super-packets: veth hands tc ingress 64 KiB skbs)
    assert seen < _carried(after) / 4, after  # natbox's sockets saw the handshake, the first packets, the close
    assert "tx_error" not in rest and "engine_error" not in rest and "Traceback" not in rest, rest
    tcp = [(f, p) for f, p in frames if f[ETH_HDR_LEN + IP6H_NEXTHDR] == 6]
    assert sum(len(f) for f, _ in tcp) > BULK // 8, len(tcp)  # a good part of the first half
    for frame, partial in tcp:
        check_frame6(frame, partial, parse_addr6(GW_WAN), parse_addr6(SERVER))
    assert any(p for _, p in tcp) == (tx_csum == "on")
