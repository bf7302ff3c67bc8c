"""Helpers of the live gateway tests (tests/live/test_gateway_live*.py, test_gateway_offload*.py): the programs
the end hosts run, for either family, and the gateway's status read through its control socket.

A program is a template for `script`: `{af}` and `{any}` are the family's socket.AF_* and wildcard address, the
other fields the caller's (`{dst}`, `{port}`...). A server prints "listening" once it is (`start` waits for it).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from natbox.lab.model import Lab
from natbox.testing.live import gateway_argv, ns_popen, require_programs, run_natbox, stop, wait_ready

# a 1 MiB (or {n} bytes) TCP transfer: the server takes {clients} connections one after the other and prints,
# for each, the peer's address, the byte count and the data's sha256; the client sends random.Random(7)'s bytes
TCP_SERVER = """
import hashlib, socket
s = socket.socket({af}); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{any}", {port})); s.listen(2); s.settimeout(25)
print("listening", flush=True)
for _ in range({clients}):
    c, peer = s.accept(); c.settimeout(25)
    h = hashlib.sha256(); n = 0
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        h.update(b); n += len(b)
    c.sendall(b"ok"); c.close()
    print(peer[0], n, h.hexdigest(), flush=True)
"""
TCP_CLIENT = """
import random, socket
data = random.Random(7).randbytes({n})
c = socket.create_connection(("{dst}", {port}), timeout=25)
c.sendall(data); c.shutdown(socket.SHUT_WR)
print(c.recv(16).decode(), flush=True)
"""

# the offload tests' bulk transfer: as TCP_SERVER with one client and longer timeouts
BULK_SERVER = """
import hashlib, socket
s = socket.socket({af}); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{any}", {port})); s.listen(1); s.settimeout(40)
print("listening", flush=True)
c, peer = s.accept(); c.settimeout(40)
h = hashlib.sha256(); n = 0
while b := c.recv(1 << 16):
    h.update(b); n += len(b)
c.sendall(b"ok"); c.close()
print(peer[0], n, h.hexdigest(), flush=True)
"""
# sends {n} bytes in two halves; between them it waits for a flag file (the test looks at the gateway then)
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

# 100 datagrams a second for {seconds} s, each waiting up to 1 s for its echo: prints the echoes and the refusals
UDP_PINGER = """
import socket, time
s = socket.socket({af}, socket.SOCK_DGRAM); s.bind(("{any}", {sport})); s.settimeout(1)
s.connect(("{dst}", {port}))
got = refused = 0
deadline = time.monotonic() + {seconds}
while time.monotonic() < deadline:
    s.send(b"x" * 100)
    try:
        s.recv(2048); got += 1
    except ConnectionRefusedError:
        refused += 1
    except TimeoutError:
        pass
    time.sleep(0.01)
print(got, refused, flush=True)
"""
UDP_ECHO = """
import socket, time
s = socket.socket({af}, socket.SOCK_DGRAM); s.bind(("{any}", {port})); s.settimeout(1)
print("listening", flush=True)
deadline = time.monotonic() + {seconds}
while time.monotonic() < deadline:
    try:
        data, peer = s.recvfrom(4096)
    except TimeoutError:
        continue
    s.sendto(data, peer)
"""

# a connection across a gateway restart: {sends} KiB, then (once the flag file is there) {sends} KiB more; the
# server prints the byte count and the peer's address
RESTART_SERVER = """
import socket
s = socket.socket({af}); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("{any}", 5003))
s.listen(1); s.settimeout(40)
print("listening", flush=True)
c, peer = s.accept(); c.settimeout(40)
total = 0
while data := c.recv(65536):
    total += len(data)
c.sendall(b"ok"); c.close()
print(total, peer[0], flush=True)
"""
RESTART_CLIENT = """
import os, socket, time
s = socket.create_connection(("{dst}", 5003), timeout=20, source_address=("{any}", 41000))
for i in range({sends}):
    s.sendall(b"a" * 1000); time.sleep(0.01)
print("sent1", flush=True)
deadline = time.monotonic() + 40
while not os.path.exists("{flag}") and time.monotonic() < deadline:
    time.sleep(0.05)
for i in range({sends}):
    s.sendall(b"b" * 1000); time.sleep(0.01)
s.shutdown(socket.SHUT_WR)
print(s.recv(16).decode(), flush=True)
"""


def script(template: str, v6: bool, **fields: object) -> str:
    """A program of the family (`v6`) with its fields filled in."""
    return template.format(af="socket.AF_INET6" if v6 else "socket.AF_INET", any="::" if v6 else "0.0.0.0", **fields)


def start(lab: Lab, node: str, code: str) -> subprocess.Popen[bytes]:
    """A server program on `node`, once it says it is listening."""
    proc = ns_popen(lab, node, [sys.executable, "-c", code])
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"listening"
    return proc


def require_offload() -> None:
    """Skip, saying what is missing, unless `--offload` can run here (clang, tc, the kernel's BPF)."""
    require_programs("clang", "tc")
    from natbox.offload.datapath import probe

    missing = probe()
    if missing is not None:
        pytest.skip(f"--offload: {missing}")


def offload_gateway(lab: Lab, ctl: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`natbox gateway --offload` of the lab's gateway node with control socket `ctl`, once it is ready."""
    gw = lab.gateway
    assert gw is not None and gw.host is not None
    proc = ns_popen(lab, "gw", gateway_argv(Path(lab.filename).parent / gw.host, *lab.gateway_args(), "--offload",
                                            "--control", str(ctl), *extra))
    said = wait_ready(proc)
    assert "; offload: tc BPF datapath on lan0, wan0" in said, said
    return proc


def status(ctl: Path) -> str:
    """`natbox status` of the gateway behind `ctl`."""
    res = run_natbox("status", "--control", str(ctl))
    assert res.returncode == 0, res.stderr
    return res.stdout


def carried(text: str, what: str = "packets") -> int:
    """The packets (or bytes) the offload datapath carried, from a status."""
    m = re.search(r"offload carried: (\d+) packets, (\d+) bytes", text)
    assert m, text
    return int(m.group(1 if what == "packets" else 2))


def rx(text: str) -> int:
    """The frames natbox's own packet sockets received, from a status."""
    m = re.search(r"\brx=(\d+)", text)
    return int(m.group(1)) if m else 0


def wait_for(ctl: Path, pattern: str, timeout: float = 5.0) -> str:
    """The gateway's status once it matches `pattern` (or after `timeout` seconds, as it is then)."""
    deadline = time.monotonic() + timeout
    while True:
        text = status(ctl)
        if re.search(pattern, text) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def offloaded_across_a_restart(lab: Lab, tmp_path: Path, v6: bool, dst: str) -> tuple[str, str, str]:
    """A connection to `dst` (RESTART_CLIENT: 20 KB before the restart, 20 KB after) offloaded by `natbox gateway
    --offload --state`, the gateway stopped once the flow is offloaded and started again from its saved state:
    what the first gateway said at its stop, what the server printed, and the second gateway's status once the
    connection ended (the client got the server's "ok")."""
    ctl, state, flag = tmp_path / "ctl.sock", tmp_path / "ct.json", tmp_path / "go"
    gw = offload_gateway(lab, ctl, "--state", str(state))
    server = client = None
    try:
        server = start(lab, "server", script(RESTART_SERVER, v6))
        client = ns_popen(lab, "client", [sys.executable, "-c", script(RESTART_CLIENT, v6, sends=20, dst=dst,
                                                                          flag=flag)])
        assert client.stdout is not None
        assert client.stdout.readline().decode().strip() == "sent1"
        assert "1 flows offloaded" in wait_for(ctl, r"1 flows offloaded")
        said = stop(gw)
        gw = offload_gateway(lab, ctl, "--state", str(state))
        flag.touch()
        out, _ = server.communicate(timeout=40)
        assert client.communicate(timeout=20)[0].decode().strip() == "ok"
        return said, out.decode(), status(ctl)
    finally:
        for p in (server, client):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        stop(gw)


def deleted_while_offloaded(lab: Lab, tmp_path: Path, v6: bool, dst: str,
                            delete: list[str]) -> tuple[str, str, int, str]:
    """A UDP exchange with `dst` (UDP_PINGER from port 40503 to an echo on 6002, 5 s) offloaded by `natbox gateway
    --offload`, then `natbox conntrack DELETE...` (-D or -F) while it goes on: the gateway's status once the flow
    was offloaded, once it came back to natbox (destroyed), the echoes the pinger got, and the status at its end."""
    ctl = tmp_path / "ctl.sock"
    gw = offload_gateway(lab, ctl)
    try:
        echo = start(lab, "server", script(UDP_ECHO, v6, port=6002, seconds=10))
        pinger = ns_popen(lab, "client", [sys.executable, "-c", script(UDP_PINGER, v6, sport=40503, dst=dst, port=6002,
                                                                          seconds=5)])
        offloaded = wait_for(ctl, r"1 flows offloaded")
        res = run_natbox("conntrack", "--control", str(ctl), *delete)
        assert res.returncode == 0, res.stderr
        destroyed = wait_for(ctl, r"back to natbox \(destroyed\)")
        out, _ = pinger.communicate(timeout=20)
        final = status(ctl)
        echo.kill()
        echo.wait()
        return offloaded, destroyed, int(out.decode().split()[0]), final
    finally:
        stop(gw)
