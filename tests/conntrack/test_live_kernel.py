"""Differential check against the running kernel (root, `ip netns`, tcpdump and conntrack needed).

Builds three throwaway namespaces (client 10.98.0.2, router 10.98.0.1/10.98.1.1, server 10.98.1.2), sends the
traffic described in test_kernel_capture.py, captures what the router's conntrack saw at PRE_ROUTING, replays
it through natbox and compares `conntrack -L` / `-S` line by line (use= ignored, timeout within 1 s). The
namespaces are deleted afterwards. Skipped when the tools or privileges are missing.

No step waits a fixed time hoping the other side is done: tcpdump's "listening on" line, the server's
"ready", the held connection's "held" are waited for (bounded), and the capture is complete once it holds a
marker datagram sent after the listing (tcpdump hands packets over late under load, and drops what it still
buffers when stopped).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.format import format_conntrack, format_stats, parse_conntrack_line
from natbox.conntrack.table import ConntrackTable
from natbox.testing import paths
from natbox.testing.conntrack import replay_capture as replay
from natbox.testing.conntrack import without_timeout

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# namespace names carry the pid: two runs of the suite on one machine must not meet
NS = tuple(f"nbctl{os.getpid() % 100000}-{x}" for x in "arb")

SERVER = """
import socket, threading
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("10.98.1.2", 5000))
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("10.98.1.2", 8080)); t.listen(8)
held = []
def tcp_loop():
    while True:
        c, _ = t.accept()
        if c.recv(100) == b"close":
            c.close()
        else:
            held.append(c)
threading.Thread(target=tcp_loop, daemon=True).start()
print("ready", flush=True)
while True:
    data, addr = u.recvfrom(2000)
    u.sendto(data, addr)
"""

CLIENT = """
import fcntl, socket, struct, sys, termios, time
sys.path.insert(0, SRC)
import natbox.testing.conntrack as L
A = "10.98.0.2"; B = "10.98.1.2"; X = "10.98.1.77"
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
def send(pkt, dst):
    raw.sendto(bytes(pkt), (dst, 0))
act = sys.argv[1]
# every action returns once the router has seen all of its packets: nothing is in flight at the listing
if act == "icmp":
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); r.settimeout(20)
    send(L.icmp(A, B, 8, ident=4242, seq=1, body=b"x" * 16), B)
    while True:  # the echo reply
        d = r.recv(2000)
        if d[20] == 0 and d[24:26] == (4242).to_bytes(2, "big"):
            break
elif act == "udp_closed":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((A, 40002)); u.sendto(b"hello", (B, 5001))
elif act == "udp_stream":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((A, 48000)); u.settimeout(1)
    u.sendto(b"a", (B, 5000)); u.recvfrom(100); time.sleep(2.2); u.sendto(b"b", (B, 5000)); u.recvfrom(100)
elif act == "tcp_refused":
    s = socket.socket(); s.bind((A, 47001))
    try:
        s.connect((B, 81))
    except OSError:
        pass
elif act == "tcp_close":  # the server closes first (its FIN read as EOF), then we do
    s = socket.socket(); s.bind((A, 40001)); s.connect((B, 8080)); s.send(b"close"); s.settimeout(20)
    assert s.recv(100) == b""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 20))
    s.close()  # with SO_LINGER: returns once our FIN is acknowledged
elif act == "tcp_open":
    s = socket.socket(); s.bind((A, 40000)); s.connect((B, 8080)); s.send(b"hold")
    end = time.time() + 20
    # SIOCOUTQ: bytes not yet sent (autocork may hold them back after send() returned) or not acknowledged
    while struct.unpack("i", fcntl.ioctl(s, termios.TIOCOUTQ, bytes(4)))[0]:
        assert time.time() < end, "hold never acknowledged"
        time.sleep(0.01)
    print("held", flush=True); time.sleep(60)
elif act == "marker":  # sent after the listing: once the capture holds it, it holds everything before
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((A, 40009)); u.sendto(MARK, (B, 5000))
elif act == "raw_unreach":
    send(L.tcp(A, X, 47000, 80, L.SYN, seq=1), X)
    send(L.tcp(A, X, 47002, 80, L.ACK, seq=1, ack=5), X)
    send(L.tcp(A, X, 47003, 80, L.FIN, seq=1), X)
    send(L.tcp(A, X, 47004, 80, L.SYN | L.FIN, seq=1), X)
    send(L.tcp(A, X, 47005, 80, L.RST, seq=1), X)
    send(L.raw(A, X, 253, b"\\x00" * 8), X)
    send(L.icmp(A, X, 0, ident=998), X)
    send(L.udp(A, X, 1, 2, bad_csum=True), X)
"""


MARK = b"natbox-capture-marker"
WAIT = 20.0  # seconds any one of the conditions above may take on a loaded machine


def _wait_line(proc: subprocess.Popen[bytes], stream: str, text: bytes) -> None:
    """Read `proc`'s stdout or stderr until it said `text` (at most WAIT seconds). Unbuffered reads: a
    buffered readline could take two lines at once and leave select() nothing more to report."""
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    assert pipe is not None
    deadline = time.monotonic() + WAIT
    seen = b""
    while text not in seen and time.monotonic() < deadline:
        if select.select([pipe], [], [], max(deadline - time.monotonic(), 0))[0]:
            chunk = os.read(pipe.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    assert text in seen, f"no {text!r} from {proc.args!r} within {WAIT} s: {seen!r}"


def _wait_marker(pcap: Path) -> None:
    marker = MARK.hex()
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if pcap.exists() and pcap.stat().st_size >= 24 and any(str(h).endswith(marker) for _, h in _read_pcap(pcap)):
            return
        time.sleep(0.05)
    raise AssertionError(f"the capture lacks the marker datagram after {WAIT} s")


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=30)


def _nx(ns: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return _run("ip", "netns", "exec", ns, *cmd)


def _read_pcap(path: Path) -> list[list[object]]:
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    nano = magic == 0xA1B23C4D
    linktype = struct.unpack("<I", data[20:24])[0]
    off, out = 24, []
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack("<IIII", data[off : off + 16])
        off += 16
        frame = data[off : off + incl]
        off += incl
        if linktype == 276:  # LINUX_SLL2
            proto, ip = struct.unpack("!H", frame[0:2])[0], frame[20:]
        elif linktype == 113:  # LINUX_SLL
            proto, ip = struct.unpack("!H", frame[14:16])[0], frame[16:]
        else:
            pytest.skip(f"unexpected pcap link type {linktype}")
        if proto == 0x0800:
            tot = struct.unpack("!H", ip[2:4])[0]
            out.append([sec + frac / (1e9 if nano else 1e6), bytes(ip[:tot]).hex()])
    return out


def _setup() -> None:
    cmds = [
        *(["ip", "netns", "add", n] for n in NS),
        ["ip", "link", "add", "nbctl-a0", "netns", NS[0], "type", "veth", "peer", "name", "nbctl-ra",
         "netns", NS[1]],
        ["ip", "link", "add", "nbctl-b0", "netns", NS[2], "type", "veth", "peer", "name", "nbctl-rb",
         "netns", NS[1]],
        ["ip", "-n", NS[0], "addr", "add", "10.98.0.2/24", "dev", "nbctl-a0"],
        ["ip", "-n", NS[1], "addr", "add", "10.98.0.1/24", "dev", "nbctl-ra"],
        ["ip", "-n", NS[1], "addr", "add", "10.98.1.1/24", "dev", "nbctl-rb"],
        ["ip", "-n", NS[2], "addr", "add", "10.98.1.2/24", "dev", "nbctl-b0"],
        *(["ip", "-n", n, "link", "set", "lo", "up"] for n in NS),
        ["ip", "-n", NS[0], "link", "set", "nbctl-a0", "up"],
        ["ip", "-n", NS[2], "link", "set", "nbctl-b0", "up"],
        ["ip", "-n", NS[1], "link", "set", "nbctl-ra", "up"],
        ["ip", "-n", NS[1], "link", "set", "nbctl-rb", "up"],
        ["ip", "-n", NS[0], "route", "add", "default", "via", "10.98.0.1"],
        ["ip", "-n", NS[2], "route", "add", "default", "via", "10.98.1.1"],
        # checksum offload off (as the reference lab did): otherwise captured TCP/UDP checksums are partial
        ["ip", "netns", "exec", NS[0], "ethtool", "-K", "nbctl-a0", "tx", "off", "rx", "off"],
        ["ip", "netns", "exec", NS[2], "ethtool", "-K", "nbctl-b0", "tx", "off", "rx", "off"],
        ["ip", "netns", "exec", NS[1], "ethtool", "-K", "nbctl-ra", "tx", "off", "rx", "off"],
        ["ip", "netns", "exec", NS[1], "ethtool", "-K", "nbctl-rb", "tx", "off", "rx", "off"],
        ["ip", "netns", "exec", NS[1], "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        ["ip", "netns", "exec", NS[1], "iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate",
         "INVALID,NEW,ESTABLISHED,RELATED", "-j", "ACCEPT"],
    ]
    for cmd in cmds:
        res = _run(*cmd)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip()}")


def _teardown() -> None:
    for n in NS:
        _run("ip", "netns", "del", n)


@pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(x) for x in ("ip", "tcpdump", "conntrack", "iptables", "ethtool")),
    reason="needs root, ip, tcpdump, conntrack, iptables and ethtool",
)
def test_live_kernel_conntrack_list_matches(tmp_path: Path) -> None:
    _teardown()
    try:
        _setup()
    except RuntimeError as exc:
        _teardown()
        pytest.skip(f"cannot build the namespaces: {exc}")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        (tmp_path / "server.py").write_text(SERVER)
        client = f"SRC = {str(paths.SRC)!r}\nMARK = {MARK!r}\n" + CLIENT
        (tmp_path / "client.py").write_text(client)
        pcap = tmp_path / "cap.pcap"
        procs.append(subprocess.Popen(
            # immediate mode hands each packet over at once; its ring has one slot per snaplen bytes of the
            # buffer (-B KiB), so a small snaplen: 2 MiB of 256 KiB slots dropped packets while tcpdump waited
            # for a CPU
            ["ip", "netns", "exec", NS[1], "tcpdump", "-i", "any", "-Q", "in", "-U", "--immediate-mode",
             "-s", "2048", "-B", "4096", "-w", str(pcap), "ip"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        _wait_line(procs[-1], "stderr", b"listening on")
        procs.append(subprocess.Popen(["ip", "netns", "exec", NS[2], sys.executable, str(tmp_path / "server.py")],
                                      stdout=subprocess.PIPE))
        _wait_line(procs[-1], "stdout", b"ready")
        for act in ("icmp", "udp_closed", "udp_stream", "tcp_refused", "tcp_close", "raw_unreach"):
            res = _nx(NS[0], sys.executable, str(tmp_path / "client.py"), act)
            assert res.returncode == 0, (act, res.stderr)
        procs.append(subprocess.Popen(["ip", "netns", "exec", NS[0], sys.executable, str(tmp_path / "client.py"),
                                       "tcp_open"], stdout=subprocess.PIPE))
        _wait_line(procs[-1], "stdout", b"held")
        now = time.time()
        listing = _nx(NS[1], "conntrack", "-L").stdout
        later = time.time()  # the kernel printed its timeouts somewhere between `now` and `later`
        stats = _nx(NS[1], "conntrack", "-S").stdout
        _nx(NS[0], sys.executable, str(tmp_path / "client.py"), "marker")
        _wait_marker(pcap)
        procs[0].send_signal(signal.SIGINT)
        procs[0].wait(5)
        assert procs[0].stderr is not None
        said = procs[0].stderr.read().decode()
        assert re.search(r"^0 packets dropped by kernel$", said, re.M), said
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        _teardown()
    (tmp_path / "kernel.json").write_text(json.dumps({"list": listing, "stats": stats, "now": now, "later": later}))
    table = ConntrackTable()
    replay(_read_pcap(pcap), table, ConntrackConfig(), now)  # the marker, sent after `later`, is left out
    # sorted without the timeout: two entries whose timeouts differ by one second between the sides (allowed
    # below) would otherwise sort in different orders
    mine = sorted((format_conntrack(c, now) for c in table.live(now)), key=without_timeout)
    theirs = sorted((line for line in listing.splitlines() if line), key=without_timeout)
    assert [without_timeout(x) for x in mine] == [without_timeout(x) for x in theirs]
    mine_later = sorted((format_conntrack(c, later) for c in table.live(now)), key=without_timeout)
    for a, a_later, b in zip(mine, mine_later, theirs, strict=True):
        # the kernel printed at some moment between `now` and `later` (however long `conntrack -L` took), so its
        # timeout lies between ours at those two moments, give or take the one jiffy of truncation its clock has
        ta, ta_later, tb = (parse_conntrack_line(x)["timeout"] for x in (a, a_later, b))
        if ta is None or ta_later is None or tb is None:
            assert ta is tb is None, (a, b)
        else:
            assert ta_later - 1 <= tb <= ta + 1, (a, a_later, b)
    cpu_lines = [line for line in stats.splitlines() if line.startswith("cpu=")]
    totals = {k: sum(int(part.split("=")[1]) for line in cpu_lines for part in line.split()
                     if part.startswith(k + "=")) for k in ("invalid", "drop", "insert_failed", "error")}
    assert totals == {k: getattr(table.stats, k) for k in totals}
    assert format_stats(table.stats).startswith("cpu=0   \tfound=0 invalid=")
