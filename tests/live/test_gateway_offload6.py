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
from collections.abc import Iterator
from pathlib import Path

import pytest

from natbox.lab.model import Lab
from natbox.testing import gateway_live as gl
from natbox.testing.live import (
    build_lab,
    load_example,
    ns_popen,
    ns_run,
    require_programs,
    run_natbox,
    stop,
    unique_lab_name,
)
from natbox.testing.offload6 import capture6, check_frame6, received6
from natbox.wire.ipv6 import parse_addr6
from natbox.wire.layout import ETH_HDR_LEN, IP6H_NEXTHDR

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("need_netns")]

SERVER = "2001:db8:1::2"
GW_WAN = "2001:db8:1::1"
BULK = 24 << 20  # bytes: enough packets that natbox's share of them is plain


def _script(template: str, **fields: object) -> str:
    return gl.script(template, True, **fields)


@pytest.fixture
def lab() -> Iterator[Lab]:
    gl.require_offload()
    yield from build_lab(load_example("basic6.toml", unique_lab_name("of6")))


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
    gw = gl.offload_gateway(lab, ctl)
    server = client = None
    try:
        with capture6(lab.netns("server"), "eth0") as cap:
            server = gl.start(lab, "server", _script(gl.BULK_SERVER, port=5001))
            client = ns_popen(lab, "client", [sys.executable, "-c",
                                              _script(gl.BULK_CLIENT, n=BULK, dst=SERVER, port=5001, flag=flag)])
            assert client.stdout is not None
            assert client.stdout.readline().decode().strip() == "half"
            halfway = gl.wait_for(ctl, r"offload carried: [1-9]")
            listed = run_natbox("conntrack", "--control", str(ctl), "-L", "-f", "ipv6").stdout
            frames = received6(cap, limit=4000)
        flag.touch()
        out, _ = server.communicate(timeout=60)
        assert client.communicate(timeout=30)[0].decode().strip() == "ok"
        after = gl.wait_for(ctl, r"back to natbox \(fin\)")
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
    carried, seen = gl.carried(after, "bytes"), gl.rx(after)
    assert carried > BULK * 0.9, after  # (in GSO super-packets: veth hands tc ingress 64 KiB skbs)
    assert seen < gl.carried(after) / 4, after  # natbox's sockets saw the handshake, the first packets, the close
    assert "tx_error" not in rest and "engine_error" not in rest and "Traceback" not in rest, rest
    tcp = [(f, p) for f, p in frames if f[ETH_HDR_LEN + IP6H_NEXTHDR] == 6]
    assert sum(len(f) for f, _ in tcp) > BULK // 8, len(tcp)  # a good part of the first half
    for frame, partial in tcp:
        check_frame6(frame, partial, parse_addr6(GW_WAN), parse_addr6(SERVER))
    assert any(p for _, p in tcp) == (tx_csum == "on")


@pytest.mark.parametrize("how", ["-D", "-F"])
def test_deleting_an_offloaded_ipv6_ct_brings_the_flow_back(lab: Lab, tmp_path: Path, how: str) -> None:
    """A UDP exchange over IPv6 is offloaded; `conntrack -D -f ipv6` (or -F) removes its entries, the exchange
    goes on through natbox with a new ct, which is offloaded again."""
    argv = ["-D", "-f", "ipv6", "-p", "udp", "--orig-port-dst", "6002"] if how == "-D" else ["-F", "-f", "ipv6"]
    offloaded, destroyed, got, final = gl.deleted_while_offloaded(lab, tmp_path, True, SERVER, argv)
    assert "1 flows offloaded" in offloaded and "udp src=fd00:1::2 dst=2001:db8:1::2" in offloaded, offloaded
    assert "back to natbox (destroyed)" in destroyed, destroyed
    assert got > 150, got  # the exchange went on: a new ct, offloaded again
    assert re.search(r"installed [2-9]", final) and gl.carried(final) > 100, final


RST_CLIENT = """
import socket, struct, time
c = socket.create_connection(("{dst}", 5004), timeout=20)
for _ in range(50):
    c.sendall(b"r" * 1000); time.sleep(0.02)
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
c.close()  # a reset
print("reset", flush=True)
"""

RST_SERVER = """
import socket
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("::", 5004))
s.listen(1); s.settimeout(20)
print("listening", flush=True)
c, _ = s.accept(); c.settimeout(20)
n = 0
try:
    while b := c.recv(65536):
        n += len(b)
except ConnectionResetError:
    print("reset", n, flush=True)
"""


def test_a_reset_of_an_offloaded_ipv6_connection_goes_through_natbox(lab: Lab, tmp_path: Path) -> None:
    """The datapath passes the RST up: natbox tears the flow down (nf_flow_state_check) and forwards it, NATed,
    so the server's socket sees the reset."""
    ctl = tmp_path / "ctl.sock"
    gw = gl.offload_gateway(lab, ctl)
    try:
        server = gl.start(lab, "server", RST_SERVER)
        client = ns_popen(lab, "client", [sys.executable, "-c", RST_CLIENT.format(dst=SERVER)])
        assert "1 flows offloaded" in gl.wait_for(ctl, r"1 flows offloaded")
        assert client.communicate(timeout=30)[0].decode().strip() == "reset"
        out, _ = server.communicate(timeout=30)
        status = gl.wait_for(ctl, r"back to natbox \(rst\)")
    finally:
        stop(gw)
    assert out.decode().split()[0] == "reset" and int(out.decode().split()[1]) == 50_000, out
    assert "back to natbox (rst)" in status and gl.carried(status) > 20, status


PMTU_CLIENT = """
import socket, time
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_MTU = 23, 2, 24
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(("::", 40600)); s.settimeout(1)
s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
s.connect(("{dst}", 6004))
def exchange(n, size):
    got = 0
    for _ in range(n):
        try:
            s.send(b"s" * size)
            s.recv(4096); got += 1
        except OSError:  # (a timeout; once, the EMSGSIZE the Packet Too Big left on the connected socket)
            pass
        time.sleep(0.01)
    return got
small = exchange(30, 100)
print("small", small, flush=True)
input()
s.send(b"b" * 1450)  # over the gateway's wan0 MTU: the datapath passes it up, natbox answers Packet Too Big
time.sleep(0.5)
try:
    s.send(b"b" * 1450)
    big = "sent"
except OSError as e:
    big = f"errno{{e.errno}}"
print("big", big, s.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU), flush=True)
print("after", exchange(30, 100), flush=True)
"""


def test_a_packet_over_the_out_mtu_gets_packet_too_big_and_the_flow_stays_offloaded(lab: Lab, tmp_path: Path) -> None:
    """wan0's MTU is 1400 (the gateway reads it from the device at start). A UDP exchange is offloaded; then
    the client sends a 1450-byte datagram: the datapath passes it up (bpf_check_mtu), natbox's IPv6 path sends
    Packet Too Big with MTU 1400 (ip6_pkt_too_big), the client's kernel lowers its path MTU (the next send of
    that size fails with EMSGSIZE), and the flow's small datagrams go on through the datapath."""
    for node, dev in (("gw", "wan0"), ("server", "eth0")):
        assert ns_run(lab, node, ["ip", "link", "set", dev, "mtu", "1400"]).returncode == 0
    ctl = tmp_path / "ctl.sock"
    gw = gl.offload_gateway(lab, ctl)
    client = None
    try:
        echo = gl.start(lab, "server", _script(gl.UDP_ECHO, port=6004, seconds=20))
        client = subprocess.Popen(["ip", "netns", "exec", lab.netns("client"), sys.executable, "-c",
                                   PMTU_CLIENT.format(dst=SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        assert client.stdout is not None and client.stdin is not None
        assert client.stdout.readline().decode().split() == ["small", "30"]
        before = gl.wait_for(ctl, r"offload carried: [1-9]")
        assert "1 flows offloaded" in before, before
        client.stdin.write(b"\n")
        client.stdin.flush()
        big = client.stdout.readline().decode().split()
        after = client.stdout.readline().decode().split()
        status = gl.status(ctl)
        echo.kill()
        echo.wait()
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        rest = stop(gw)
    assert big == ["big", "errno90", "1400"], big  # EMSGSIZE: the PTB reached the client's kernel
    assert after[0] == "after" and int(after[1]) >= 28, after
    assert "1 flows offloaded" in status and gl.carried(status) > gl.carried(before), status
    assert "Traceback" not in rest, rest


def test_an_offloaded_ipv6_connection_survives_a_restart_with_state(lab: Lab, tmp_path: Path) -> None:
    """The gateway stops while an IPv6 connection is offloaded (its entries go with the datapath) and starts
    again from its saved state: the connection goes on through the same NAT66 binding and is offloaded again."""
    said, out, status = gl.offloaded_across_a_restart(lab, tmp_path, True, SERVER)
    assert "saved" in said and "conntrack entries" in said, said
    assert out.split()[-2:] == ["40000", GW_WAN]
    assert re.search(r"installed [1-9]", status) and gl.carried(status) > 0, status  # offloaded again
