"""`natbox gateway --offload-new` on real interfaces: new TCP connections opened by the BPF program from the
engine's templates, natbox tracking them from the ring buffer's copies.

The lab of test_gateway_offload (client 10.0.1.2 -- natbox lan0/wan0 MASQUERADE -- server 198.51.100.2). A
client connects, sends a line and closes, again and again; the server answers each. Checked: every
connection succeeds; the first one made the template and the program opened the rest (`created`), natbox
agreed with every binding; `conntrack -L` lists every connection with its state as the kernel's
conntrack would have it after such an exchange (TIME_WAIT) and the original port kept; MASQUERADE's counter
is what natbox's own path gives (one packet per connection); a rule change stops the templates at once and
the next connections take natbox's path. Skips, naming what is missing, without clang/tc/bpf()/libbpf.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from natbox.lab.model import Lab
from natbox.testing.live import (
    build_lab,
    gateway_argv,
    load_example,
    ns_popen,
    ns_python,
    require_programs,
    run_natbox,
    stop,
    unique_lab_name,
    wait_ready,
)
from natbox.testing.paths import LAB_EXAMPLES as EXAMPLES

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("need_netns")]

SERVER = "198.51.100.2"
PORT = 5301

LINE_SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {port})); s.listen(64); s.settimeout(60)
print("listening", flush=True)
while True:
    c, peer = s.accept(); c.settimeout(5)
    if {line}:
        data = c.recv(64)
        c.sendall(data.upper())
    if {wait_close}:  # the client ends the connection (its RST): no FIN from here
        try:
            c.recv(64)
        except OSError:
            pass
    c.close()
"""

LINE_CLIENT = """
import socket, struct
ok = 0
for i in range({n}):
    c = socket.socket(); c.settimeout(3)
    if {reset}:  # close with a RST: no TIME_WAIT on the client, so the same port can connect again at once
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.bind(("10.0.1.2", {first} + i))
    c.connect(("{dst}", {port}))
    if {line}:
        c.sendall(b"hello %d" % i)
        assert c.recv(64) == b"HELLO %d" % i
    if {eof}:  # the server's FIN first: this side closes second and keeps no TIME_WAIT
        assert c.recv(64) == b""
    c.close(); ok += 1
print(ok, flush=True)
"""


def _require() -> None:
    require_programs("clang", "tc")
    from natbox.offload.datapath import probe

    missing = probe()
    if missing is not None:
        pytest.skip(f"--offload-new: {missing}")
    import ctypes.util

    if ctypes.util.find_library("bpf") is None:
        pytest.skip("--offload-new: libbpf not found (Debian package libbpf1)")


@pytest.fixture
def lab() -> Iterator[Lab]:
    _require()
    yield from build_lab(load_example("basic.toml", unique_lab_name("onw")))


def _status(ctl: Path) -> str:
    res = run_natbox("status", "--control", str(ctl))
    assert res.returncode == 0, res.stderr
    return res.stdout


def _figure(status: str, name: str) -> int:
    m = re.search(rf"offload-new: .*\b{name} (\d+)", status)
    assert m, status
    return int(m.group(1))


def _connections(lab: Lab, n: int, first: int, *, reset: bool = False, eof: bool = False,
                 line: bool = True) -> None:
    res = ns_python(lab, "client", LINE_CLIENT.format(n=n, first=first, dst=SERVER, port=PORT, reset=reset,
                                                      eof=eof, line=line), timeout=120)
    assert res.returncode == 0 and res.stdout.decode().split() == [str(n)], res.stderr.decode()


@contextmanager
def _gateway(lab: Lab, tmp_path: Path, *, wait_close: bool = False, line: bool = True) -> Iterator[Path]:
    """`natbox gateway --offload-new` on the lab's gw and LINE_SERVER on its server: the control socket. At the
    end both stop, and the gateway must have said no traceback."""
    ctl = tmp_path / "ctl.sock"
    gw = ns_popen(lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml", "--offload-new", "--control", str(ctl)))
    said = wait_ready(gw)
    assert "with new connections" in said, said
    server = ns_popen(lab, "server", [sys.executable, "-c", LINE_SERVER.format(port=PORT, wait_close=wait_close,
                                                                               line=line)])
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"listening"
        yield ctl
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        err = stop(gw)
    assert "Traceback" not in err, err


def _listed(ctl: Path) -> list[str]:
    """`conntrack -L`'s lines of connections to PORT."""
    listed = run_natbox("conntrack", "--control", str(ctl), "-L", "-p", "tcp", "--dport", str(PORT)).stdout
    return [line for line in listed.splitlines() if f"dport={PORT}" in line]


def _masq_packets(ctl: Path) -> str:
    """MASQUERADE's packet count in `iptables -t nat -nvxL POSTROUTING`."""
    counted = run_natbox("iptables", "--control", str(ctl), "-t", "nat", "-nvxL", "POSTROUTING").stdout
    masq = [line.split()[0] for line in counted.splitlines() if "MASQUERADE" in line]
    assert masq, counted
    return masq[0]


def test_new_connections_are_opened_by_the_datapath_and_tracked_by_natbox(lab: Lab, tmp_path: Path) -> None:
    with _gateway(lab, tmp_path) as ctl:
        _connections(lab, 40, 41000)
        status = _status(ctl)
        assert _figure(status, "templates") == 1
        assert _figure(status, "created") >= 35, status  # the first made the template; ARP may delay one more
        assert _figure(status, "disagree") == 0 and _figure(status, "bad_events") == 0, status
        assert _figure(status, "fed") >= 35 * 6, status
        lines = _listed(ctl)
        assert len(lines) == 40, lines
        for line in lines:
            sport = re.search(r"sport=(\d+)", line)
            assert sport and f"dport={sport.group(1)} " in line + " ", line  # MASQUERADE kept the port
            assert " TIME_WAIT " in line and "[ASSURED]" in line, line
        assert _masq_packets(ctl) == "40"  # one packet (the SYN) per connection, as natbox's own path

        # a rule change: the templates go at once, the next connections take natbox's own path
        created = _figure(status, "created")
        res = run_natbox("iptables", "--control", str(ctl), "-t", "nat", "-I", "POSTROUTING", "-m", "mark",
                         "--mark", "7", "-j", "RETURN")
        assert res.returncode == 0, res.stderr
        _connections(lab, 10, 42000)
        status = _status(ctl)
        assert "offload-new: 0 templates (none made: nat POSTROUTING: -m mark)" in status, status
        assert _figure(status, "created") == created, status
        assert len(_listed(ctl)) == 50


def _reconnect(lab: Lab, tmp_path: Path, *, fin: bool) -> tuple[str, str, list[str], str]:
    """12 connections from ports 43000.., then 12 more from the same ports at once (the client keeps no
    TIME_WAIT: it closes second after the server's FIN, no data exchanged, or with a RST after a line and
    its answer). natbox's cts of the first still hold the tuples; the second's SYNs reopen them (conntrack's
    TCP reopen). natbox's status before and after, the `conntrack -L` lines, MASQUERADE's packet count."""
    with _gateway(lab, tmp_path, wait_close=not fin, line=not fin) as ctl:
        _connections(lab, 12, 43000, reset=not fin, eof=fin, line=not fin)
        before = _status(ctl)
        _connections(lab, 12, 43000, reset=not fin, eof=fin, line=not fin)
        return before, _status(ctl), _listed(ctl), _masq_packets(ctl)


def test_a_connection_reopened_after_a_fin_close_is_opened_by_the_datapath(lab: Lab, tmp_path: Path) -> None:
    """Connected and closed with FINs (IP_CT_TCP_FLAG_CLOSE_INIT), no data (a flow that carried data was offloaded
    as an established one and is not marked): natbox marks the closed cts' tuples NB_CT_REOPEN once their
    entries are gone, and the program opens the second connections itself, claiming over the marks; natbox's
    copy of each SYN reopens the ct (engine/template.py `open_copy`)."""
    before, after, lines, masq = _reconnect(lab, tmp_path, fin=True)
    assert _figure(before, "created") >= 10 and _figure(before, "handed") == 0, before
    # a SYN may come before the previous close's copies were drained (its tuples not marked yet): handed then
    opened = _figure(after, "created") - _figure(before, "created")
    assert opened >= 10 and opened + _figure(after, "handed") == 12, (before, after)
    assert _figure(after, "disagree") == 0 and _figure(after, "errors") == 0, after
    assert len(lines) == 12 and all(" TIME_WAIT " in line and "[ASSURED]" in line for line in lines), lines
    assert masq == "24"  # each SYN counted once, as natbox's own path counts it


def test_a_connection_natbox_reopens_is_handed_to_the_datapath(lab: Lab, tmp_path: Path) -> None:
    """Ended by the client's RST alone (no FIN: a SYN reopens such a ct only while the RST was its last packet,
    so natbox does not mark it): each second SYN goes up, natbox's own path reopens the ct and hands the rest
    of the connection to the program (`handed`), whose copies bring the ct to its end."""
    before, after, lines, masq = _reconnect(lab, tmp_path, fin=False)
    assert _figure(before, "created") >= 10 and _figure(before, "handed") == 0, before
    assert _figure(after, "created") == _figure(before, "created"), after  # none opened by the program
    assert _figure(after, "handed") == 12, after
    assert _figure(after, "disagree") == 0 and _figure(after, "errors") == 0, after
    # every packet after each reopened SYN came as a copy (SYN/ACK, ACK, the line, its answer, the RST)
    assert _figure(after, "fed") - _figure(before, "fed") >= 12 * 5, (before, after)
    assert len(lines) == 12 and all(" CLOSE " in line for line in lines), lines
    assert masq == "24"  # each SYN once: the reopened ones on natbox's own path
