"""`natbox gateway` on real interfaces: client -- natbox (MASQUERADE) -- server in network namespaces.

The lab is src/natbox/lab/examples/basic.toml (client 10.0.1.2, gateway lan0 10.0.1.1 / wan0 198.51.100.1,
server 198.51.100.2) with the gateway's host file basic-gw.toml: `-A POSTROUTING -s 10.0.1.0/24 -o wan0
-j MASQUERADE`. What the server sees must be what Linux's MASQUERADE produces: the gateway's wan0
address as source, the client's source port kept when free (§ nf_nat_masquerade, get_unique_tuple).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from natbox.lab.model import Lab
from natbox.testing import gateway_live as gl
from natbox.testing.live import (
    build_lab,
    env,
    gateway_argv,
    load_example,
    ns_popen,
    ns_python,
    ns_run,
    require_programs,
    run_natbox,
    stop,
    unique_lab_name,
    wait_ready,
)
from natbox.testing.paths import LAB_EXAMPLES as EXAMPLES

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("need_netns")]

SERVER = "198.51.100.2"
GW_WAN = "198.51.100.1"
TRANSFER = 1 << 20  # 1 MiB

UDP_SERVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5002)); s.settimeout(20)
print("listening", flush=True)
data, peer = s.recvfrom(2048)
s.sendto(b"reply:" + data, peer)
print(peer[0], peer[1], flush=True)
"""

UDP_CLIENT = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 40123)); s.settimeout(5)
for _ in range(3):
    s.sendto(b"hello", ("{dst}", 5002))
    try:
        print(s.recvfrom(2048)[0].decode(), flush=True)
        break
    except TimeoutError:
        pass
"""


def _tcp_server(port: int) -> str:
    """gl.TCP_SERVER for one client: it prints the peer's address, the byte count and the sha256."""
    return gl.script(gl.TCP_SERVER, False, port=port, clients=1)


def _tcp_client(n: int, dst: str, port: int) -> str:
    return gl.script(gl.TCP_CLIENT, False, n=n, dst=dst, port=port)


@pytest.fixture
def basic_lab() -> Iterator[Lab]:
    yield from build_lab(load_example("basic.toml", unique_lab_name("gw")))


@pytest.fixture
def gateway(basic_lab: Lab) -> Iterator[subprocess.Popen[bytes]]:
    proc = ns_popen(basic_lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml"))
    wait_ready(proc)
    yield proc
    stop(proc)


@pytest.mark.skipif(shutil.which("ping") is None, reason="needs ping (iputils-ping)")
def test_ping_through_gateway(basic_lab: Lab, gateway: subprocess.Popen[bytes]) -> None:
    res = ns_run(basic_lab, "client", ["ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER])
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    assert b"3 received" in res.stdout
    # the gateway's own address answers too (the engine's local stack: icmp echo reply)
    res = ns_run(basic_lab, "client", ["ping", "-c", "1", "-W", "2", "10.0.1.1"])
    assert res.returncode == 0


@pytest.mark.parametrize("mode", [(), ("--no-ring",), ("--complete-csum",), ("--no-vnet-hdr",),
                                  ("--no-vnet-hdr", "--no-ring")], ids=lambda m: " ".join(m) or "default")
def test_tcp_1mib_byte_exact(basic_lab: Lab, mode: tuple[str, ...]) -> None:
    if "--no-vnet-hdr" in mode:
        require_programs("ethtool")
        # without vnet headers a TSO super-packet cannot be told from a frame: the peers segment in software
        for node in ("client", "server"):
            ns_run(basic_lab, node, ["ethtool", "-K", "eth0", "tso", "off", "gso", "off"])
    proc = ns_popen(basic_lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml", *mode))
    try:
        wait_ready(proc)
        server = gl.start(basic_lab, "server", _tcp_server(5001))
        client = ns_python(basic_lab, "client", _tcp_client(n=TRANSFER, dst=SERVER, port=5001), timeout=60)
        out, _err = server.communicate(timeout=30)
    finally:
        rest = stop(proc)
    assert client.returncode == 0, client.stderr.decode()
    assert client.stdout.decode().strip() == "ok"
    peer, n, digest = out.decode().split()
    expected = hashlib.sha256(random.Random(7).randbytes(TRANSFER)).hexdigest()
    assert (int(n), digest) == (TRANSFER, expected)
    assert peer == GW_WAN  # MASQUERADE: the server sees the gateway's wan0 address
    if "--no-vnet-hdr" not in mode:
        assert "rx_gso=" in rest  # the transfer crossed as GSO super-packets
    else:
        assert "rx_csum_completed=" in rest  # TP_STATUS_CSUMNOTREADY frames finished by the adapter
    if not mode:
        assert "rx_in_place=" in rest  # and left from the receive ring where they arrived (zero copy)
    assert "tx_oversize" not in rest and "tx_error" not in rest


def test_udp_request_reply(basic_lab: Lab, gateway: subprocess.Popen[bytes]) -> None:
    server = gl.start(basic_lab, "server", UDP_SERVER)
    client = ns_python(basic_lab, "client", UDP_CLIENT.format(dst=SERVER))
    out, _err = server.communicate(timeout=30)
    assert client.stdout.decode().strip() == "reply:hello"
    peer, port = out.decode().split()
    assert peer == GW_WAN
    assert int(port) == 40123  # the source port is kept when it is free (nf_nat_used_tuple)


def test_refuses_when_kernel_would_fight(basic_lab: Lab) -> None:
    ns_run(basic_lab, "gw", ["ip", "addr", "add", "10.0.1.1/24", "dev", "lan0"])
    ns_run(basic_lab, "gw", ["sysctl", "-qw", "net.ipv4.conf.lan0.forwarding=1"])
    proc = ns_run(basic_lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml", "--duration", "1"))
    assert proc.returncode == 2
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "refusing to start" in lines[0] and "lan0" in lines[0] and "forwarding" in lines[0]


def test_refuses_model_address_on_kernel(basic_lab: Lab) -> None:
    ns_run(basic_lab, "gw", ["ip", "addr", "add", "198.51.100.1/24", "dev", "wan0"])
    proc = ns_run(basic_lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml", "--duration", "1"))
    assert proc.returncode == 2
    assert "wan0" in proc.stderr.decode() and "198.51.100.1/24" in proc.stderr.decode()


def test_sigterm_stops_cleanly(basic_lab: Lab) -> None:
    proc = ns_popen(basic_lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml"))
    wait_ready(proc)
    start = time.monotonic()
    rest = stop(proc)
    assert proc.returncode == 0
    assert time.monotonic() - start < 3
    assert "stopped:" in rest


@pytest.fixture
def qemu_lab() -> Iterator[Lab]:
    yield from build_lab(load_example("qemu.toml", unique_lab_name("qm")))


def test_qemu_like_tap(qemu_lab: Lab) -> None:
    """natbox holds the TAP's fd (as qemu would); the TAP's kernel side is the VM's eth0 in another
    namespace. The VM reaches the server through natbox's MASQUERADE."""
    gw = qemu_lab.gateway
    assert gw is not None and gw.host is not None
    proc = ns_popen(qemu_lab, "gw", gateway_argv(Path(qemu_lab.filename).parent / gw.host,
                                                 *qemu_lab.gateway_args()))
    try:
        wait_ready(proc)
        server = gl.start(qemu_lab, "server", _tcp_server(5001))
        client = ns_python(qemu_lab, "vm", _tcp_client(n=TRANSFER, dst=SERVER, port=5001), timeout=60)
        out, _ = server.communicate(timeout=30)
        assert client.stdout.decode().strip() == "ok", client.stderr.decode()
        peer, n, digest = out.decode().split()
        assert (int(n), digest) == (TRANSFER, hashlib.sha256(random.Random(7).randbytes(TRANSFER)).hexdigest())
        assert peer == GW_WAN
    finally:
        rest = stop(proc)
    assert "stopped:" in rest


@pytest.fixture
def docker_lab() -> Iterator[Lab]:
    yield from build_lab(load_example("docker.toml", unique_lab_name("dk")))


def test_docker_like_bridge(docker_lab: Lab) -> None:
    """natbox owns the bridge (docker0's role): containers reach the server masqueraded, and the
    published port 198.51.100.1:8080 reaches c1:80 (DNAT), with Docker's FORWARD policy DROP."""
    gw = docker_lab.gateway
    assert gw is not None and gw.host is not None
    proc = ns_popen(docker_lab, "gw", gateway_argv(Path(docker_lab.filename).parent / gw.host))
    try:
        wait_ready(proc)
        expected = hashlib.sha256(random.Random(7).randbytes(TRANSFER)).hexdigest()
        # outbound from c2: masqueraded to the gateway's wan0 address
        server = gl.start(docker_lab, "server", _tcp_server(5001))
        client = ns_python(docker_lab, "c2", _tcp_client(n=TRANSFER, dst=SERVER, port=5001), timeout=60)
        out, _ = server.communicate(timeout=30)
        assert client.stdout.decode().strip() == "ok", client.stderr.decode()
        assert out.decode().split() == [GW_WAN, str(TRANSFER), expected]
        # inbound to the published port: DNAT to c1:80; c1 sees the server's own address
        server = gl.start(docker_lab, "c1", _tcp_server(80))
        client = ns_python(docker_lab, "server", _tcp_client(n=TRANSFER, dst=GW_WAN, port=8080), timeout=60)
        out, _ = server.communicate(timeout=30)
        assert client.stdout.decode().strip() == "ok", client.stderr.decode()
        assert out.decode().split() == [SERVER, str(TRANSFER), expected]
        # container to container across the bridge: the kernel bridge forwards it, natbox is not involved
        res = ns_run(docker_lab, "c1", ["ping", "-c", "1", "-W", "2", "172.17.0.3"]) if shutil.which("ping") else None
        assert res is None or res.returncode == 0
    finally:
        rest = stop(proc)
    assert "stopped:" in rest


def test_control_socket_lists_conntrack(basic_lab: Lab, tmp_path: Path) -> None:
    """After a masqueraded UDP exchange the table holds the entry conntrack -L would show on Linux:
    original client -> server, reply server -> the gateway's wan0 address, source port kept."""
    import socket

    path = tmp_path / "ctl.sock"
    proc = ns_popen(basic_lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml", "--control", str(path)))
    try:
        wait_ready(proc)
        server = gl.start(basic_lab, "server", UDP_SERVER)
        client = ns_python(basic_lab, "client", UDP_CLIENT.format(dst=SERVER))
        server.communicate(timeout=30)
        assert client.stdout.decode().strip() == "reply:hello"

        def ask(cmd: str) -> str:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(str(path))
                s.sendall(cmd.encode())
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
                return b"".join(chunks).decode()

        lines = [ln for ln in ask("conntrack").splitlines() if ln.startswith("udp")]
        assert len(lines) == 1
        assert ("src=10.0.1.2 dst=198.51.100.2 sport=40123 dport=5002 "
                "src=198.51.100.2 dst=198.51.100.1 sport=5002 dport=40123") in lines[0]
        assert "rx=" in ask("stats")
        assert "unknown command" in ask("bogus")
    finally:
        stop(proc)
    assert not path.exists()


def test_plain_mode_warns_about_peer_tso(basic_lab: Lab) -> None:
    """Without vnet headers a peer's TSO super-packet is just an oversize frame: the gateway says so."""
    proc = ns_popen(basic_lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml", "--no-vnet-hdr"))
    try:
        wait_ready(proc)
        server = gl.start(basic_lab, "server", _tcp_server(5001))
        ns_python(basic_lab, "client", "import socket,sys\ntry:\n c = socket.create_connection(('198.51.100.2', "
                  "5001), timeout=3); c.sendall(bytes(1 << 20))\nexcept OSError: pass\n", timeout=30)
        server.kill()
        server.communicate()
    finally:
        rest = stop(proc)
    assert "without GSO information" in rest and "lan0" in rest


def test_warns_about_kernel_addresses_elsewhere(basic_lab: Lab) -> None:
    """arp_ignore=0 (Linux's default): the kernel answers ARP for any of its addresses on any interface,
    natbox's included; the gateway starts but says so."""
    ns_run(basic_lab, "gw", ["ip", "link", "add", "mgmt0", "type", "veth", "peer", "name", "mgmt1"])
    ns_run(basic_lab, "gw", ["ip", "addr", "add", "10.9.9.1/24", "dev", "mgmt0"])
    proc = ns_run(basic_lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml", "--duration", "0.2"))
    assert proc.returncode == 0
    assert "the kernel has mgmt0 10.9.9.1/24" in proc.stderr.decode()


def test_iptables_and_conntrack_against_the_live_gateway(basic_lab: Lab, tmp_path: Path) -> None:
    """`natbox iptables|iptables-save|conntrack --control SOCKET` act on the running gateway: a rule added
    while it runs applies to new traffic (as in Linux), and the live tables are listed as the tools would."""
    path, host = tmp_path / "ctl.sock", tmp_path / "gw.toml"
    # the first exchange's entry (a reply seen, UDP_CT_UNREPLIED still: 30 s by default) must outlive the checks
    # below on a loaded machine, the last of which counts it
    host.write_text((EXAMPLES / "basic-gw.toml").read_text().replace(
        "[rules]", '[sysctl]\n"net.netfilter.nf_conntrack_udp_timeout" = 600\n\n[rules]'))
    proc = ns_popen(basic_lab, "gw", gateway_argv(host, "--control", str(path)))
    try:
        wait_ready(proc)
        server = gl.start(basic_lab, "server", UDP_SERVER)
        client = ns_python(basic_lab, "client", UDP_CLIENT.format(dst=SERVER))
        server.communicate(timeout=30)
        assert client.stdout.decode().strip() == "reply:hello"
        listed = run_natbox("conntrack", "--control", str(path), "-L")
        assert listed.returncode == 0
        assert "src=198.51.100.2 dst=198.51.100.1 sport=5002 dport=40123" in listed.stdout
        assert "1 flow entries have been shown." in listed.stderr
        timeout = re.match(r"udp\s+17\s+(\d+) ", listed.stdout)  # the host file's udp_timeout, not 30 s
        assert "[OFFLOAD]" in listed.stdout or (timeout is not None and int(timeout[1]) > 500), listed.stdout
        nat = run_natbox("iptables", "--control", str(path), "-t", "nat", "-nvL", "POSTROUTING")
        assert nat.returncode == 0 and "MASQUERADE" in nat.stdout
        assert re.search(r"^\s+1\s+\d+ MASQUERADE", nat.stdout, re.M), nat.stdout  # one connection
        # a refused command is refused as iptables would, and changes nothing
        bad = run_natbox("iptables", "--control", str(path), "-t", "nat", "-A", "PREROUTING", "-j", "DROP")
        assert bad.returncode == 2 and 'The "nat" table is not intended for filtering' in bad.stderr
        # block UDP to port 5002 from now on: new traffic is dropped
        added = run_natbox("iptables", "--control", str(path), "-I", "FORWARD", "-p", "udp", "--dport", "5002",
                       "-j", "DROP")
        assert added.returncode == 0, added.stderr
        saved = run_natbox("iptables-save", "--control", str(path), "-t", "filter")
        assert "-A FORWARD -p udp -m udp --dport 5002 -j DROP" in saved.stdout
        server = gl.start(basic_lab, "server", UDP_SERVER)
        client = ns_python(basic_lab, "client",  # its 3 datagrams dropped: 1 s for each reply that never comes
                           UDP_CLIENT.format(dst=SERVER).replace("40123", "40124").replace("settimeout(5)",
                                                                                            "settimeout(1)"))
        assert client.stdout.decode().strip() == ""
        server.kill()
        server.wait()
        counted = run_natbox("iptables", "--control", str(path), "-nvxL", "FORWARD")
        assert re.search(r"^\s+3\s+\d+ DROP", counted.stdout, re.M), counted.stdout
        assert path.stat().st_mode & 0o777 == 0o600  # the control socket is its owner's only
        status = run_natbox("status", "--control", str(path))
        assert status.returncode == 0 and "conntrack: 1 entries" in status.stdout, status.stdout
        assert "wan0" in status.stdout or "eth1" in status.stdout or "198.51.100.1/24" in status.stdout
        as_json = run_natbox("status", "--control", str(path), "--json")
        data = json.loads(as_json.stdout)  # the same figures, as one object
        assert data["conntrack"]["entries"] == 1 and data["conntrack"]["max"] > 0
        assert "198.51.100.1/24" in {a for i in data["interfaces"] for a in i["addresses"]}
        assert data["loop"]["loop"] and data["engine_counters"] is not None
        assert run_natbox("status", "--control", str(path), "--bogus").returncode == 2
        flushed = run_natbox("conntrack", "--control", str(path), "-F")
        assert flushed.returncode == 0
        assert run_natbox("conntrack", "--control", str(path), "-C").stdout.strip() == "0"
    finally:
        stop(proc)


def test_established_tcp_survives_a_gateway_restart(basic_lab: Lab, tmp_path: Path) -> None:
    """SIGTERM saves the conntrack table (--state), the next start restores it: the connection opened
    before the restart goes on afterwards with the same mapping (issue: restart keeps TCP alive)."""
    state, flag = tmp_path / "ct.json", tmp_path / "go"
    argv = gateway_argv(EXAMPLES / "basic-gw.toml", "--state", str(state))
    gw = ns_popen(basic_lab, "gw", argv)
    server = client = None
    try:
        wait_ready(gw)
        server = gl.start(basic_lab, "server", gl.script(gl.RESTART_SERVER, False))
        client = ns_popen(basic_lab, "client", [sys.executable, "-c",
                                                gl.script(gl.RESTART_CLIENT, False, sends=1, dst=SERVER, flag=flag)])
        assert client.stdout is not None
        assert client.stdout.readline().decode().strip() == "sent1"
        time.sleep(0.3)  # let the ACK of the first half come back
        rest = stop(gw)
        assert "saved 1 conntrack entries" in rest, rest
        gw = ns_popen(basic_lab, "gw", argv)
        said = wait_ready(gw)
        assert "restored 1 conntrack entries" in said, said
        flag.touch()
        out, _ = server.communicate(timeout=40)
        total, peer = out.decode().split()[-2:]
        assert (total, peer) == ("2000", GW_WAN)
        assert client.communicate(timeout=20)[0].decode().strip() == "ok"
    finally:
        for p in (server, client):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        rest = stop(gw)
    assert "restored" not in rest  # (said at start, not at stop)


TWO_DATAGRAMS_SERVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5004)); s.settimeout(20)
print("listening", flush=True)
for _ in range(2):
    data, peer = s.recvfrom(2048)
    s.sendto(b"reply:" + data, peer)
    print(peer[0], peer[1], data.decode(), flush=True)
"""

SAME_PORT_CLIENT = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 40200)); s.settimeout(5)
for _ in range(3):
    s.sendto(b"{name}", ("{dst}", 5004))
    try:
        print(s.recvfrom(2048)[0].decode(), flush=True)
        break
    except TimeoutError:
        pass
"""


def test_two_inside_hosts_with_the_same_source_port(docker_lab: Lab) -> None:
    """c1 and c2 both send from UDP port 40200: the first keeps it on the outside, the second is moved to
    another port of its class, and each reply comes back to the container that asked (§4.6)."""
    gw = docker_lab.gateway
    assert gw is not None and gw.host is not None
    proc = ns_popen(docker_lab, "gw", gateway_argv(Path(docker_lab.filename).parent / gw.host))
    try:
        wait_ready(proc)
        server = gl.start(docker_lab, "server", TWO_DATAGRAMS_SERVER)
        first = ns_python(docker_lab, "c1", SAME_PORT_CLIENT.format(name="c1", dst=SERVER))
        second = ns_python(docker_lab, "c2", SAME_PORT_CLIENT.format(name="c2", dst=SERVER))
        out, _ = server.communicate(timeout=30)
        assert first.stdout.decode().strip() == "reply:c1"
        assert second.stdout.decode().strip() == "reply:c2"
        seen = [line.split() for line in out.decode().splitlines()[-2:]]
        assert seen[0] == [GW_WAN, "40200", "c1"]
        assert seen[1][0] == GW_WAN and seen[1][2] == "c2"
        assert seen[1][1] != "40200" and int(seen[1][1]) >= 1024
    finally:
        stop(proc)


def test_icmp_error_is_translated_back_to_the_inside_host(basic_lab: Lab, gateway: subprocess.Popen[bytes]) -> None:
    """UDP to a closed port: the server's port unreachable, sent to the masquerade address, reaches the
    client translated (outer and inner headers), so the client's own socket sees ECONNREFUSED (§4.9)."""
    code = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.connect(("{SERVER}", 5999))
for _ in range(3):
    s.send(b"anyone?")
    try:
        s.recv(100)
    except ConnectionRefusedError:
        print("refused", flush=True)
        break
    except TimeoutError:
        pass
"""
    res = ns_python(basic_lab, "client", code)
    assert res.stdout.decode().strip() == "refused", res.stderr.decode()


HAIRPIN_RULES = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 198.51.100.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
-A POSTROUTING -s 172.17.0.0/16 ! -o br0 -j MASQUERADE
-A POSTROUTING -s 172.17.0.0/16 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
COMMIT
"""


def test_hairpin_through_the_public_address(docker_lab: Lab, tmp_path: Path) -> None:
    """c2 reaches c1 through the gateway's public address: DNAT back onto the bridge plus the hairpin
    MASQUERADE, so c1 answers the gateway (172.17.0.1) and the reply is un-NATed to c2 (§8)."""
    gw = docker_lab.gateway
    assert gw is not None and gw.host is not None
    rules = tmp_path / "hairpin.rules"
    rules.write_text(HAIRPIN_RULES)
    proc = ns_popen(docker_lab, "gw", gateway_argv(Path(docker_lab.filename).parent / gw.host,
                                                    "--rules", str(rules)))
    try:
        wait_ready(proc)
        expected = hashlib.sha256(random.Random(7).randbytes(4096)).hexdigest()
        server = gl.start(docker_lab, "c1", _tcp_server(80))
        client = ns_python(docker_lab, "c2", _tcp_client(n=4096, dst=GW_WAN, port=8080), timeout=60)
        out, _ = server.communicate(timeout=30)
        assert client.stdout.decode().strip() == "ok", client.stderr.decode()
        assert out.decode().split() == ["172.17.0.1", "4096", expected]
    finally:
        stop(proc)


STREAM_SERVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5005)); s.settimeout(30)
print("listening", flush=True)
n = 0
while n < 40:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
    n += 1
print(n, flush=True)
"""

STREAM_CLIENT = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 40300)); s.settimeout(1)
got = 0
for i in range(40):
    s.sendto(str(i).encode(), ("{dst}", 5005))
    try:
        s.recvfrom(64); got += 1
    except TimeoutError:
        pass
    time.sleep(0.1)
print(got, flush=True)
"""


def test_a_connection_deleted_while_traffic_flows_is_tracked_anew(basic_lab: Lab, tmp_path: Path) -> None:
    """`conntrack -D` on a live UDP flow: the entry goes, the next datagram creates a new one (a new NAT
    decision, as in Linux after a delete), and the exchange carries on."""
    path = tmp_path / "ctl.sock"


    proc = ns_popen(basic_lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml", "--control", str(path)))
    try:
        wait_ready(proc)
        server = gl.start(basic_lab, "server", STREAM_SERVER)
        client = ns_popen(basic_lab, "client", [sys.executable, "-c", STREAM_CLIENT.format(dst=SERVER)])
        time.sleep(1.5)
        before = run_natbox("conntrack", "--control", str(path), "-L")
        old_id = [ln for ln in before.stdout.splitlines() if "dport=5005" in ln]
        assert len(old_id) == 1
        deleted = run_natbox("conntrack", "--control", str(path), "-D", "-p", "udp", "--dport", "5005")
        assert deleted.returncode == 0 and "1 flow entries have been deleted." in deleted.stderr
        assert "sport=40300 dport=5005" in deleted.stdout
        time.sleep(1.0)
        again = run_natbox("conntrack", "--control", str(path), "-L")
        assert len([ln for ln in again.stdout.splitlines() if "dport=5005" in ln]) == 1  # tracked anew
        out, _ = client.communicate(timeout=30)
        assert int(out.decode().strip()) >= 38  # at most a datagram or two in flight during the delete
        server.communicate(timeout=30)
        nothing = run_natbox("conntrack", "--control", str(path), "-D", "-s", "10.99.99.99")
        assert nothing.returncode == 1 and "0 flow entries have been deleted." in nothing.stderr
    finally:
        stop(proc)


def test_sighup_reloads_the_host_file_and_rules(basic_lab: Lab, tmp_path: Path) -> None:
    """SIGHUP: the gateway reads its host file and rules again; a new rule applies to new traffic."""
    host = tmp_path / "gw.toml"
    host.write_text((EXAMPLES / "basic-gw.toml").read_text())
    rules = tmp_path / "gw.rules"
    base = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
            "-A POSTROUTING -o wan0 -j MASQUERADE\nCOMMIT\n")
    rules.write_text(base)
    ctl = str(tmp_path / "ctl.sock")
    proc = ns_popen(basic_lab, "gw", gateway_argv(host, "--rules", str(rules), "--control", ctl))
    try:
        wait_ready(proc)
        server = gl.start(basic_lab, "server", UDP_SERVER)
        client = ns_python(basic_lab, "client", UDP_CLIENT.format(dst=SERVER))
        server.communicate(timeout=30)
        assert client.stdout.decode().strip() == "reply:hello"
        rules.write_text(base + "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                         "-A FORWARD -p udp --dport 5002 -j DROP\nCOMMIT\n")
        proc.send_signal(signal.SIGHUP)
        assert proc.stderr is not None
        assert "SIGHUP: reloaded" in proc.stderr.readline().decode()
        server = gl.start(basic_lab, "server", UDP_SERVER)
        sent = ns_python(basic_lab, "client", "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                         f"s.bind(('0.0.0.0', 40125)); s.sendto(b'hello', ('{SERVER}', 5002))")
        assert sent.returncode == 0, sent.stderr
        # the datagram is dropped: the new rule counts it (waited for, not a reply timed out on), the server
        # never sees it
        deadline = time.monotonic() + 15
        while not re.search(r"^\s*1\s+\d+\s+DROP\b", (counted := run_natbox(
                "iptables", "--control", ctl, "-nvxL", "FORWARD")).stdout, re.M):
            assert time.monotonic() < deadline, counted.stdout + counted.stderr
            time.sleep(0.1)
        server.kill()
        assert server.communicate()[0] == b""
    finally:
        stop(proc)


def test_privileges_are_dropped_after_the_devices_are_open(basic_lab: Lab, tmp_path: Path) -> None:
    """--user nobody: the gateway forwards as before, running as nobody; its control socket still answers."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    path = tmp_path / "ctl.sock"
    argv = gateway_argv(EXAMPLES / "basic-gw.toml", "--control", str(path), "--user", "nobody")
    proc = ns_popen(basic_lab, "gw", argv)
    try:
        said = wait_ready(proc)
        assert f"running as nobody (uid {nobody.pw_uid}" in said, said
        status = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
        assert set(status["Uid"].split()) == {str(nobody.pw_uid)}
        assert status["NoNewPrivs"].strip() == "1"  # PR_SET_NO_NEW_PRIVS
        # --offload and --offload-new keep CAP_NET_ADMIN (their stop runs tc; docs/differences.md, `--user`)
        kept = 1 << 12 if {"--offload", "--offload-new"} & set(argv) else 0
        assert int(status["CapBnd"], 16) == kept and int(status["CapEff"], 16) == kept  # bounding set dropped
        server = gl.start(basic_lab, "server", UDP_SERVER)
        client = ns_python(basic_lab, "client", UDP_CLIENT.format(dst=SERVER))
        server.communicate(timeout=30)
        assert client.stdout.decode().strip() == "reply:hello"
        listed = run_natbox("conntrack", "--control", str(path), "-L")
        assert "dport=5002" in listed.stdout, listed.stderr
    finally:
        rest = stop(proc)
    # the stop completes as nobody: no traceback, exit 0, the devices closed and the counters reported
    assert proc.returncode == 0 and "Traceback" not in rest and "stopped:" in rest, rest


def test_adopt_takes_over_a_kernel_router_and_gives_it_back(basic_lab: Lab, tmp_path: Path) -> None:
    """--adopt: the gateway namespace is a working kernel router (addresses, ip_forward, MASQUERADE);
    natbox takes it over as it is (the kernel keeps no address there and tracks nothing new), and on
    SIGTERM gives addresses, routes and forwarding back, after which the kernel routes again."""
    require_programs("iptables", "conntrack")
    path = tmp_path / "ctl.sock"
    for argv in (["ip", "addr", "add", "10.0.1.1/24", "dev", "lan0"], ["ip", "addr", "add", "198.51.100.1/24", "dev",
                 "wan0"], ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                 ["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.0.1.0/24", "-o", "wan0", "-j", "MASQUERADE"]):
        assert ns_run(basic_lab, "gw", argv).returncode == 0, argv

    def exchange(sport: int) -> str:
        server = gl.start(basic_lab, "server", UDP_SERVER)
        client = ns_python(basic_lab, "client", UDP_CLIENT.format(dst=SERVER).replace("40123", str(sport)))
        server.communicate(timeout=30)
        return client.stdout.decode().strip()

    def kernel_conntrack() -> str:
        return ns_run(basic_lab, "gw", ["conntrack", "-L"]).stdout.decode()

    assert exchange(41001) == "reply:hello"  # the kernel routes
    assert "sport=41001" in kernel_conntrack()
    argv = [a for a in gateway_argv(Path("HOST"), "--adopt", "--control", str(path)) if a != "HOST"]
    proc = ns_popen(basic_lab, "gw", argv)
    try:
        said = wait_ready(proc)
        assert "--adopt: took lan0, wan0 from the kernel (ip_forward was 1)" in said, said
        assert "inet " not in ns_run(basic_lab, "gw", ["ip", "-4", "addr", "show", "dev", "lan0"]).stdout.decode()
        assert exchange(41002) == "reply:hello"  # now through natbox
        assert "sport=41002" not in kernel_conntrack()
        listed = run_natbox("conntrack", "--control", str(path), "-L")
        assert "sport=41002 dport=5002" in listed.stdout, listed.stderr
        nat = run_natbox("iptables", "--control", str(path), "-t", "nat", "-S", "POSTROUTING")
        assert "-A POSTROUTING -s 10.0.1.0/24 -o wan0 -j MASQUERADE" in nat.stdout  # the kernel's ruleset
    finally:
        rest = stop(proc)
    assert "given back to the kernel" in rest
    assert "inet 10.0.1.1/24" in ns_run(basic_lab, "gw", ["ip", "-4", "addr", "show", "dev", "lan0"]).stdout.decode()
    assert ns_run(basic_lab, "gw", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.decode().strip() == "1"
    assert exchange(41003) == "reply:hello"  # the kernel routes again
    assert "sport=41003" in kernel_conntrack()


def test_kernel_and_natbox_give_the_same_conntrack_entries_for_the_same_traffic(basic_lab: Lab,
                                                                                 tmp_path: Path) -> None:
    """The same lab and traffic, once with the kernel's NAT and once with natbox (--adopt of that very
    router): `conntrack -L` beside `natbox conntrack -L`, compared as §10 says (sorted, timeouts within
    kernel-2..kernel+1, use= ignored)."""
    from natbox.conntrack.format import parse_conntrack_line

    require_programs("iptables", "conntrack")
    path = tmp_path / "ctl.sock"
    for argv in (["ip", "addr", "add", "10.0.1.1/24", "dev", "lan0"], ["ip", "addr", "add", "198.51.100.1/24", "dev",
                 "wan0"], ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                 ["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.0.1.0/24", "-o", "wan0", "-j", "MASQUERADE"]):
        assert ns_run(basic_lab, "gw", argv).returncode == 0, argv
    # Both runs must carry the same packets. With tail loss probes on, a router a few ms late with the server's
    # FIN (natbox descheduled on a busy machine; the kernel forwards in softirq) makes the server retransmit
    # it (PTO = 2 * srtt + 2 jiffies), the client acknowledges it twice, and the server, whose passive-close
    # socket is gone after the first ACK, answers the second with an RST: TIME_WAIT -> CLOSE on the kernel
    # too (scenarios/tcp-close-retransmitted-fin-rst.toml). Without TLP a retransmission waits for the RTO
    # (200 ms at least), far beyond any scheduling delay.
    for node in ("client", "server"):
        assert ns_run(basic_lab, node, ["sysctl", "-qw", "net.ipv4.tcp_early_retrans=0"]).returncode == 0

    def traffic(off: int) -> None:
        server = gl.start(basic_lab, "server", UDP_SERVER)
        client = ns_python(basic_lab, "client", UDP_CLIENT.format(dst=SERVER).replace("40123", str(42001 + off)))
        server.communicate(timeout=30)
        assert client.stdout.decode().strip() == "reply:hello"
        server = gl.start(basic_lab, "server", _tcp_server(5001))
        client = ns_python(basic_lab, "client", _tcp_client(n=20000, dst=SERVER, port=5001).replace(
            "timeout=25)", f"timeout=25, source_address=('0.0.0.0', {42002 + off}))"))
        server.communicate(timeout=30)
        assert client.stdout.decode().strip() == "ok", client.stderr.decode()
        closed = ns_python(basic_lab, "client", f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", {42003 + off})); s.connect(("{SERVER}", 5999))
s.send(b"x")
""")
        assert closed.returncode == 0
        time.sleep(0.5)

    def entries(text: str, off: int) -> list[dict[str, object]]:
        """The lines of this traffic, client ports shifted back by `off` (the second run's ports)."""
        out = []
        for line in text.splitlines():
            d = parse_conntrack_line(line)
            orig, reply = d["orig"], d["reply"]
            assert isinstance(orig, dict) and isinstance(reply, dict)
            if not 42000 + off <= orig.get("sport", 0) < 42010 + off:
                continue
            orig["sport"] -= off
            reply["dport"] -= off
            out.append(d)
        return sorted(out, key=lambda d: str(d["orig"]))

    traffic(0)
    kernel = entries(ns_run(basic_lab, "gw", ["conntrack", "-L"]).stdout.decode(), 0)
    assert ns_run(basic_lab, "gw", ["conntrack", "-F"]).returncode == 0
    argv = [a for a in gateway_argv(Path("HOST"), "--adopt", "--control", str(path)) if a != "HOST"]
    proc = ns_popen(basic_lab, "gw", argv)
    try:
        wait_ready(proc)
        traffic(10)
        listed = run_natbox("conntrack", "--control", str(path), "-L")
        ours = entries(listed.stdout, 10)
    finally:
        stop(proc)
    assert len(kernel) == len(ours) == 3
    for k, n in zip(kernel, ours, strict=True):
        kt, nt = k.pop("timeout"), n.pop("timeout")
        assert isinstance(kt, int) and isinstance(nt, int)
        # §10 tolerance (kernel-2..kernel+1 for one moment), widened both ways: the two runs list their tables
        # at different delays after their traffic
        assert kt - 5 <= nt <= kt + 4, (k, n)
        k.pop("use")
        n.pop("use")
        assert n == k


HELD_UDP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5002)); s.settimeout(20)
print("listening", flush=True)
data, peer = s.recvfrom(2048)
print("got", flush=True)
sys.stdin.readline()  # the test changes the router while the exchange is in flight
s.sendto(b"reply:" + data, peer)
"""

ONE_UDP_REQUEST = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", {sport})); s.settimeout(3)
s.sendto(b"hello", ("{dst}", 5002))
try:
    print(s.recvfrom(2048)[0].decode(), flush=True)
except TimeoutError:
    print("timeout", flush=True)
"""


def _exchange_around(lab: Lab, sport: int, change: Callable[[], None]) -> str:
    """One UDP request and its reply, with `change` run on the router after the request crossed it and
    before the reply does (the server holds its reply until then)."""
    server = subprocess.Popen(["ip", "netns", "exec", lab.netns("server"), sys.executable, "-c", HELD_UDP_SERVER],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env())
    assert server.stdin is not None and server.stdout is not None
    try:
        assert server.stdout.readline().strip() == b"listening"
        client = ns_popen(lab, "client", [sys.executable, "-c", ONE_UDP_REQUEST.format(sport=sport, dst=SERVER)])
        assert server.stdout.readline().strip() == b"got"
        change()
        server.stdin.write(b"\n")
        server.stdin.flush()
        out, _err = client.communicate(timeout=30)
        return out.decode().strip()
    finally:
        server.kill()
        server.wait()


def test_a_flush_between_request_and_reply_loses_the_reply_on_the_kernel_as_on_natbox(basic_lab: Lab,
                                                                                     tmp_path: Path) -> None:
    """`conntrack -F` while a UDP exchange is in flight: the reply finds no ct, so nothing un-NATs it; it is
    addressed to the router itself, which has no socket there, and the client never gets it. The kernel
    does this (the router run by the kernel, `conntrack -F` in its namespace) and natbox does the same
    (--adopt of that router, `natbox conntrack -F` on its control socket). bench/soak.py, which flushes every
    30 s under churn, reports such exchanges apart from failures."""
    require_programs("iptables", "conntrack")
    path = tmp_path / "ctl.sock"
    for argv in (["ip", "addr", "add", "10.0.1.1/24", "dev", "lan0"], ["ip", "addr", "add", "198.51.100.1/24", "dev",
                 "wan0"], ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                 ["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.0.1.0/24", "-o", "wan0", "-j", "MASQUERADE"]):
        assert ns_run(basic_lab, "gw", argv).returncode == 0, argv

    def kernel_flush() -> None:
        assert ns_run(basic_lab, "gw", ["conntrack", "-F"]).returncode == 0

    def natbox_flush() -> None:
        res = run_natbox("conntrack", "--control", str(path), "-F")
        assert res.returncode == 0, res.stderr

    assert _exchange_around(basic_lab, 43001, lambda: None) == "reply:hello"  # the kernel routes
    assert _exchange_around(basic_lab, 43002, kernel_flush) == "timeout"
    argv = [a for a in gateway_argv(Path("HOST"), "--adopt", "--control", str(path)) if a != "HOST"]
    proc = ns_popen(basic_lab, "gw", argv)
    try:
        wait_ready(proc)
        assert _exchange_around(basic_lab, 43003, lambda: None) == "reply:hello"
        assert _exchange_around(basic_lab, 43004, natbox_flush) == "timeout"
    finally:
        stop(proc)


def test_a_reload_between_request_and_reply_keeps_the_exchange(basic_lab: Lab) -> None:
    """SIGHUP (the soak's other periodic change) while a UDP exchange is in flight: the ruleset is replaced
    for new connections only and the ct stays, so the reply comes back, as after iptables-restore on Linux."""
    proc = ns_popen(basic_lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml"))
    try:
        wait_ready(proc)

        def reload() -> None:
            proc.send_signal(signal.SIGHUP)
            assert proc.stderr is not None
            assert "SIGHUP: reloaded" in proc.stderr.readline().decode()

        assert _exchange_around(basic_lab, 43011, reload) == "reply:hello"
    finally:
        stop(proc)


def _wait_status(path: Path, pattern: str, timeout: float = 30.0) -> str:
    """`natbox status` polled until it matches `pattern` (a condition, not a fixed sleep); the last status."""
    deadline = time.monotonic() + timeout
    while True:
        status = run_natbox("status", "--control", str(path)).stdout
        if re.search(pattern, status) or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def _wait_lines(lines: list[str], done: Callable[[list[str]], bool], timeout: float = 30.0) -> None:
    """Wait until `done(lines)` holds for the lines a reader thread appends, or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while not done(list(lines)) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_conntrack_events_from_the_live_gateway(basic_lab: Lab, tmp_path: Path) -> None:
    """`natbox conntrack --control PATH -E` prints [NEW] and [UPDATE] lines as conntrack -E would. The
    listener is known to be subscribed when the gateway's status counts it (`listeners 1`), and the traffic's
    events are waited for as they arrive: no fixed sleeps, so a loaded machine only makes it slower."""
    path = tmp_path / "ctl.sock"
    proc = ns_popen(basic_lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml", "--control", str(path)))
    events = None
    got: list[str] = []
    reader = None
    try:
        wait_ready(proc)
        events = subprocess.Popen([sys.executable, "-m", "natbox", "conntrack", "--control", str(path), "-E"],
                                  env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout = events.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: got.extend(stdout), daemon=True)
        reader.start()
        status = _wait_status(path, r"listeners 1\b")
        assert re.search(r"listeners 1\b", status), status
        server = gl.start(basic_lab, "server", UDP_SERVER)
        client = ns_python(basic_lab, "client", UDP_CLIENT.format(dst=SERVER).replace("40123", "40400"))
        server.communicate(timeout=30)
        assert client.stdout.decode().strip() == "reply:hello"
        _wait_lines(got, lambda ls: any(ln.startswith(" [UPDATE]") and "sport=40400" in ln for ln in ls))
    finally:
        stop(proc)  # the gateway closes the subscription: the listener ends
    assert events is not None and reader is not None
    events.wait(timeout=20)
    reader.join(timeout=20)
    assert events.stderr is not None
    out, err = "".join(got), events.stderr.read()
    lines = [ln for ln in out.splitlines() if "sport=40400" in ln]
    assert lines and lines[0].startswith("    [NEW] udp      17 30 src=10.0.1.2 dst=198.51.100.2 sport=40400 "
                                         "dport=5002 [UNREPLIED] src=198.51.100.2 dst=198.51.100.1 sport=5002 "
                                         "dport=40400"), (out, err)
    assert any(ln.startswith(" [UPDATE] udp      17 30 src=10.0.1.2") and "[UNREPLIED]" not in ln for ln in lines), out


def test_control_path_is_replaced_only_when_it_is_a_stale_socket(basic_lab: Lab, tmp_path: Path) -> None:
    """--control PATH refuses a regular file and a socket someone listens on (one line, exit 2, the file
    kept); a stale socket left by a gateway that is gone is replaced."""
    import socket

    path = tmp_path / "ctl.sock"
    path.write_text("precious")
    res = ns_run(basic_lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml", "--control", str(path), "--duration", "1"))
    lines = res.stderr.decode().strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "not a socket" in lines[0], lines
    assert path.read_text() == "precious"
    path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen(1)
        res = ns_run(basic_lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml", "--control", str(path),
                                                   "--duration", "1"))
        lines = res.stderr.decode().strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and "listening" in lines[0], lines
    assert path.exists()  # stale now: nobody listens
    proc = ns_popen(basic_lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml", "--control", str(path)))
    try:
        wait_ready(proc)
        assert run_natbox("conntrack", "--control", str(path), "-C").stdout.strip() == "0"
    finally:
        stop(proc)
    assert not path.exists()


def test_adopting_a_router_that_does_not_forward_warns(basic_lab: Lab) -> None:
    """--adopt of a namespace with net.ipv4.ip_forward=0 builds a router that forwards nothing, as the kernel
    did not: natbox says so on stderr instead of silently dropping everything."""
    require_programs("iptables-save")  # --adopt snapshots the namespace
    for argv in (["ip", "addr", "add", "10.0.1.1/24", "dev", "lan0"], ["ip", "addr", "add", "198.51.100.1/24", "dev",
                 "wan0"], ["sysctl", "-qw", "net.ipv4.ip_forward=0"]):
        assert ns_run(basic_lab, "gw", argv).returncode == 0, argv
    argv = [a for a in gateway_argv(Path("HOST"), "--adopt", "--duration", "1") if a != "HOST"]
    res = ns_run(basic_lab, "gw", argv)
    err = res.stderr.decode()
    assert res.returncode == 0, err
    warning = [ln for ln in err.splitlines() if "ip_forward=0" in ln]
    assert len(warning) == 1 and warning[0].startswith("natbox gateway: warning: --adopt:"), err
    assert ns_run(basic_lab, "gw", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.decode().strip() == "0"


def test_sigterm_to_natbox_lab_gateway_stops_the_gateway(tmp_path: Path) -> None:
    """`natbox lab FILE gateway` becomes the gateway (exec): a SIGTERM sent to the process that was started
    stops the gateway itself cleanly, and nothing of natbox stays behind holding the interfaces."""
    name = unique_lab_name("lt")
    lab_file = tmp_path / "basic.toml"
    lab_file.write_text((EXAMPLES / "basic.toml").read_text().replace('name = "basic"', f'name = "{name}"'))
    (tmp_path / "basic-gw.toml").write_text((EXAMPLES / "basic-gw.toml").read_text())
    for lab in build_lab(load_example("basic.toml", name)):
        proc = subprocess.Popen([sys.executable, "-m", "natbox", "lab", str(lab_file), "gateway"], env=env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_ready(proc)
            # the process started is the gateway now, inside the lab's gw namespace
            assert Path(f"/proc/{proc.pid}/ns/net").resolve() != Path("/proc/self/ns/net").resolve()
            assert "gateway" in Path(f"/proc/{proc.pid}/cmdline").read_text()
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0 and "stopped:" in err.decode(), err.decode()
        left = subprocess.run(["ip", "netns", "pids", lab.netns("gw")], capture_output=True, text=True,
                              check=False).stdout.split()
        assert left == [], left  # no process left in the gateway's namespace
