"""`natbox gateway --offload` on real interfaces: the engine decides, the tc BPF datapath forwards.

The lab of tests/live/test_gateway_live.py (client 10.0.1.2 -- natbox lan0/wan0 MASQUERADE -- server
198.51.100.2). What is checked: a bulk transfer is carried by the kernel (the datapath's counters grow,
natbox's packet sockets see a small fraction of it) and arrives byte-exact, with valid full checksums when
the peers compute them (TX checksum offload off) and partial ones otherwise; `conntrack -L` shows the
entry [OFFLOAD] while it is carried and the FIN brings it back; an ICMP error about an offloaded flow is
translated by natbox; a rule change leaves offloaded flows alone and meets new connections; `conntrack
-D`/`-F` remove the entries and the traffic goes on through natbox; a restart with --state keeps the
connection. Skips, naming what is missing, without clang/tc/bpf().
"""

from __future__ import annotations

import errno
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
from natbox.testing import gateway_live as gl
from natbox.testing.live import (
    build_lab,
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
BULK = 24 << 20  # bytes: enough packets that natbox's share of them is plain


def _script(template: str, **fields: object) -> str:
    return gl.script(template, False, **fields)


@pytest.fixture
def lab() -> Iterator[Lab]:
    gl.require_offload()
    yield from build_lab(load_example("basic.toml", unique_lab_name("off")))


def _bulk(lab: Lab, ctl: Path, tmp_path: Path, port: int) -> tuple[str, str, str]:
    """A BULK transfer; returns the status and `conntrack -L` halfway, and the status after it."""
    flag = tmp_path / f"go{port}"
    server = gl.start(lab, "server", _script(gl.BULK_SERVER, port=port))
    client = ns_popen(lab, "client", [sys.executable, "-c",
                                      _script(gl.BULK_CLIENT, n=BULK, dst=SERVER, port=port, flag=flag)])
    try:
        assert client.stdout is not None
        assert client.stdout.readline().decode().strip() == "half"
        halfway = gl.wait_for(ctl, r"offload carried: [1-9]")
        listed = run_natbox("conntrack", "--control", str(ctl), "-L").stdout
        flag.touch()
        out, _ = server.communicate(timeout=60)
        assert client.communicate(timeout=30)[0].decode().strip() == "ok"
    finally:
        for p in (server, client):
            if p.poll() is None:
                p.kill()
                p.wait()
    peer, n, digest = out.decode().split()
    assert (peer, int(n)) == (GW_WAN, BULK)
    assert digest == hashlib.sha256(random.Random(7).randbytes(BULK)).hexdigest()
    return halfway, listed, gl.wait_for(ctl, r"back to natbox \(fin\)")


@pytest.mark.parametrize("tx_csum", ["on", "off"])
def test_a_bulk_flow_is_carried_by_the_kernel(lab: Lab, tmp_path: Path, tx_csum: str) -> None:
    """The transfer arrives byte-exact; the datapath carried most of its packets and natbox's sockets saw
    few; conntrack showed it [OFFLOAD] halfway and the FIN brought it back. With TX checksum offload off the
    peers send full checksums, which the receiver verifies: a wrong rewrite would lose the data."""
    if tx_csum == "off":
        require_programs("ethtool")
        for node in ("client", "server"):
            ns_run(lab, node, ["ethtool", "-K", "eth0", "tx", "off"])
    ctl = tmp_path / "ctl.sock"
    gw = gl.offload_gateway(lab, ctl)
    try:
        halfway, listed, after = _bulk(lab, ctl, tmp_path, 5001)
    finally:
        rest = stop(gw)
    assert re.search(r"^tcp +6 src=10\.0\.1\.2 dst=198\.51\.100\.2 sport=\d+ dport=5001 src=198\.51\.100\.2 "
                     r"dst=198\.51\.100\.1 sport=\d+ dport=\d+ \[OFFLOAD\] mark=0 use=2$", listed, re.M), listed
    assert "1 flows offloaded, 2 map entries" in halfway, halfway
    carried, seen = gl.carried(after, "bytes"), gl.rx(after)
    assert carried > BULK * 0.9, after  # (in GSO super-packets: veth hands tc ingress 64 KiB skbs)
    assert seen < gl.carried(after) / 4, after  # natbox's sockets saw the handshake, the first packets, the close
    assert "tx_error" not in rest and "engine_error" not in rest


def test_under_filter_rules_the_flow_is_offloaded_after_its_first_packets(lab: Lab, tmp_path: Path) -> None:
    """A stateful FORWARD ruleset (policy DROP): the first packets pass its rules, then the datapath carries the
    flow (as a flowtable's `flow add` would), so the rules' counters stay small."""
    ctl = tmp_path / "ctl.sock"
    gw = gl.offload_gateway(lab, ctl)
    try:
        for argv in (["-P", "FORWARD", "DROP"],
                     ["-A", "FORWARD", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
                     ["-A", "FORWARD", "-p", "tcp", "--dport", "5005", "-j", "ACCEPT"]):
            res = run_natbox("iptables", "--control", str(ctl), *argv)
            assert res.returncode == 0, res.stderr
        _halfway, _listed, after = _bulk(lab, ctl, tmp_path, 5005)
        counted = run_natbox("iptables", "--control", str(ctl), "-nvxL", "FORWARD").stdout
    finally:
        stop(gw)
    assert gl.carried(after, "bytes") > BULK * 0.9, after
    established = re.search(r"^\s+(\d+)\s+\d+ ACCEPT .*ctstate RELATED,ESTABLISHED", counted, re.M)
    assert established and int(established.group(1)) < gl.carried(after) / 4, counted


def test_an_icmp_error_about_an_offloaded_flow_is_translated(lab: Lab, tmp_path: Path) -> None:
    """A UDP flow is offloaded; its server goes away and answers port unreachable, which the datapath passes
    up: natbox translates it back (RELATED to the ct), so the client's socket sees ECONNREFUSED."""
    ctl = tmp_path / "ctl.sock"
    gw = gl.offload_gateway(lab, ctl)
    try:
        echo = gl.start(lab, "server", _script(gl.UDP_ECHO, port=6000, seconds=4))
        pinger = ns_popen(lab, "client", [sys.executable, "-c", _script(gl.UDP_PINGER, sport=40500, dst=SERVER,
                                                                                   port=6000, seconds=8)])
        status = gl.wait_for(ctl, r"1 flows offloaded")
        assert "1 flows offloaded" in status, status
        echo.wait(timeout=10)  # the echo server stops after 4 s: port unreachable from then on
        out, _ = pinger.communicate(timeout=20)
        got, refused = (int(x) for x in out.decode().split())
        assert got > 20 and refused >= 3, out  # (the server's kernel rate-limits its port unreachables)
        assert gl.carried(gl.status(ctl)) > 10
    finally:
        stop(gw)


def test_a_rule_change_meets_new_connections_only(lab: Lab, tmp_path: Path) -> None:
    ctl = tmp_path / "ctl.sock"
    gw = gl.offload_gateway(lab, ctl)
    try:
        echo = gl.start(lab, "server", _script(gl.UDP_ECHO, port=6001, seconds=10))
        pinger = ns_popen(lab, "client", [sys.executable, "-c", _script(gl.UDP_PINGER, sport=40501, dst=SERVER,
                                                                                   port=6001, seconds=6)])
        assert "1 flows offloaded" in gl.wait_for(ctl, r"1 flows offloaded")
        added = run_natbox("iptables", "--control", str(ctl), "-I", "FORWARD", "-p", "udp", "--dport", "6001",
                           "-j", "DROP")
        assert added.returncode == 0, added.stderr
        # a new flow to the same port is dropped; the offloaded one keeps going (the flowtable's behaviour)
        new = ns_python(lab, "client", _script(gl.UDP_PINGER, sport=40502, dst=SERVER, port=6001, seconds=1.5))
        assert new.stdout.decode().split()[0] == "0", new.stdout
        out, _ = pinger.communicate(timeout=20)
        assert int(out.decode().split()[0]) > 200, out  # ~6 s at 100/s with no gap
        echo.kill()
        echo.wait()
    finally:
        stop(gw)


@pytest.mark.parametrize("how", ["-D", "-F"])
def test_deleting_the_ct_brings_the_flow_back_to_natbox(lab: Lab, tmp_path: Path, how: str) -> None:
    argv = ["-D", "-p", "udp", "--orig-port-dst", "6002"] if how == "-D" else ["-F"]
    offloaded, destroyed, got, final = gl.deleted_while_offloaded(lab, tmp_path, False, SERVER, argv)
    assert "1 flows offloaded" in offloaded, offloaded
    assert "back to natbox (destroyed)" in destroyed, destroyed
    assert got > 150, got  # the exchange went on: a new ct, offloaded again
    assert re.search(r"offload: [12] flows offloaded|installed [2-9]", final), final


def test_an_offloaded_connection_survives_a_restart_with_state(lab: Lab, tmp_path: Path) -> None:
    said, out, _status = gl.offloaded_across_a_restart(lab, tmp_path, False, SERVER)
    assert "saved 1 conntrack entries" in said, said
    assert out.split()[-2:] == ["40000", GW_WAN]


def test_tcpdump_still_sees_offloaded_packets(lab: Lab, tmp_path: Path) -> None:
    require_programs("tcpdump")
    ctl = tmp_path / "ctl.sock"
    gw = gl.offload_gateway(lab, ctl)
    dump = None
    lines = b""
    try:
        echo = gl.start(lab, "server", _script(gl.UDP_ECHO, port=6003, seconds=6))
        dump = ns_popen(lab, "gw", ["tcpdump", "-n", "-l", "-i", "lan0", "udp", "port", "6003"])
        time.sleep(1.0)
        pinger = ns_python(lab, "client", _script(gl.UDP_PINGER, sport=40504, dst=SERVER, port=6003, seconds=3))
        assert int(pinger.stdout.decode().split()[0]) > 100
        status = gl.status(ctl)
        carried = gl.carried(status)
        assert carried > 100, status
        echo.kill()
        echo.wait()
    finally:
        if dump is not None:
            dump.terminate()
            lines, _ = dump.communicate(timeout=10)
        stop(gw)
    # tcpdump (ETH_P_ALL, before tc ingress) saw every datagram in and out on lan0, offloaded or not
    assert lines.decode().count("> 198.51.100.2.6003") > 100


def test_a_ping_session_is_carried_by_the_kernel(lab: Lab, tmp_path: Path) -> None:
    """natbox's addition to the flowtable's choice: an echo flow is offloaded once replied, and the rest of
    the session's requests and replies go through the datapath."""
    require_programs("ping")
    ctl = tmp_path / "ctl.sock"
    gw = gl.offload_gateway(lab, ctl)
    try:
        res = ns_run(lab, "client", ["ping", "-c", "30", "-i", "0.05", "-W", "2", SERVER])
        assert b"30 received" in res.stdout, res.stdout
        status = gl.wait_for(ctl, r"offload carried: [1-9]\d+ packets")
    finally:
        stop(gw)
    assert gl.carried(status) >= 40, status  # of the 60 echo messages, all but the first few
    assert "icmp src=10.0.1.2 dst=198.51.100.2" in status, status


def test_a_filter_left_by_a_killed_gateway_is_removed_at_the_next_start(lab: Lab, tmp_path: Path) -> None:
    """SIGKILL leaves the program on the devices, forwarding the flows it held; the next gateway, with
    --offload or without, removes it and says so."""
    gw = gl.offload_gateway(lab, tmp_path / "ctl.sock")
    gw.kill()  # by its own pid: no close()
    gw.wait()
    shown = ns_run(lab, "gw", ["tc", "filter", "show", "dev", "lan0", "ingress"])
    assert b"natbox_offload" in shown.stdout, shown.stdout
    again = ns_popen(lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml"))
    try:
        said = wait_ready(again)
    finally:
        stop(again)
    assert "lan0: removed the offload filter" in said and "wan0: removed the offload filter" in said, said
    assert b"natbox_offload" not in ns_run(lab, "gw", ["tc", "filter", "show", "dev", "lan0", "ingress"]).stdout


def _fill_map(gw: subprocess.Popen[bytes]) -> int:
    """Fill the gateway's flow map to MAX_FLOWS with entries no packet matches (an ifindex no device has),
    through the bpf() system call, as another writer would; returns how many went in. The map is pinned in
    the gateway's private bpffs, in the mount namespace `ip netns exec` made: reached through /proc/PID/root."""
    from natbox.offload import bpf
    from natbox.offload.entry import ACTION_SIZE, KEY_SIZE, MAX_FLOWS, OffloadKey, encode_key

    pinned = Path(f"/proc/{gw.pid}/root/tmp/natbox-offload-{gw.pid}/bpffs/tc/globals/nb_flows")
    flows = bpf.MapFd(bpf.obj_get(str(pinned)), KEY_SIZE, ACTION_SIZE)
    try:
        n = 0
        for i in range(MAX_FLOWS + 1):
            try:
                flows.update(encode_key(OffloadKey(ifindex=0x7FFFFFF0, proto=17, saddr=0x0A000000 + i, daddr=0x0A000001,
                                                   sport=1, dport=1)),
                             bytes(ACTION_SIZE), bpf.BPF_NOEXIST)
            except OSError as e:
                assert e.errno == errno.E2BIG and n == MAX_FLOWS, (e, n)  # full: what natbox will meet
                break
            n += 1
        return n
    finally:
        flows.close()


def test_a_full_map_leaves_new_flows_on_natbox_s_path_and_counts_them(lab: Lab, tmp_path: Path) -> None:
    """With the real map full (E2BIG) a new flow is not offloaded: natbox forwards it itself, every datagram
    answered, `natbox status` counts it under `full`, and no traceback or error line comes of it."""
    ctl = tmp_path / "ctl.sock"
    gw = gl.offload_gateway(lab, ctl)
    try:
        assert _fill_map(gw) == 65536
        echo = gl.start(lab, "server", _script(gl.UDP_ECHO, port=6004, seconds=6))
        pinger = ns_python(lab, "client", _script(gl.UDP_PINGER, sport=40505, dst=SERVER, port=6004, seconds=3))
        got, refused = (int(x) for x in pinger.stdout.decode().split())
        status = gl.status(ctl)
        echo.kill()
        echo.wait()
    finally:
        rest = stop(gw)
    assert got > 100 and refused == 0, pinger.stdout  # ~3 s at 100/s, through natbox
    full = re.search(r"offload: 0 flows offloaded, 0 map entries, .*\bfull (\d+), .*errors 0", status)
    assert full and int(full.group(1)) >= 1, status
    assert gl.carried(status) == 0 and gl.rx(status) >= got, status  # every datagram through natbox
    assert "Traceback" not in rest and "map full" in rest, rest


def test_as_an_unprivileged_user_the_gateway_installs_removes_and_reads_entries(lab: Lab, tmp_path: Path) -> None:
    """--user nobody --offload: the datapath is attached as root, then the gateway runs as nobody with
    CAP_NET_ADMIN only (bounding, effective and ambient: its stop runs tc); through the map descriptors it
    opened as root it still installs entries, reads their counters and removes them, and at the stop its
    filters go."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    ctl = tmp_path / "ctl.sock"
    gw = gl.offload_gateway(lab, ctl, "--user", "nobody")
    echo = None
    try:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{gw.pid}/status").read_text().splitlines())
        assert set(status["Uid"].split()) == {str(nobody.pw_uid)} and status["NoNewPrivs"].strip() == "1"
        net_admin = 1 << 12
        assert [int(status[k], 16) for k in ("CapBnd", "CapPrm", "CapEff", "CapAmb")] == [net_admin] * 4, status
        assert not Path(f"/proc/{gw.pid}/root/tmp/natbox-offload-{gw.pid}").exists()  # sealed before the drop
        echo = gl.start(lab, "server", _script(gl.UDP_ECHO, port=6005, seconds=12))
        pinger = ns_popen(lab, "client", [sys.executable, "-c", _script(gl.UDP_PINGER, sport=40506, dst=SERVER,
                                                                                   port=6005, seconds=6)])
        assert "1 flows offloaded" in gl.wait_for(ctl, r"1 flows offloaded")  # installed as nobody
        assert gl.carried(gl.wait_for(ctl, r"offload carried: [1-9]")) > 0  # the counters read as nobody
        res = run_natbox("conntrack", "--control", str(ctl), "-D", "-p", "udp", "--orig-port-dst", "6005")
        assert res.returncode == 0, res.stderr
        status_text = gl.wait_for(ctl, r"back to natbox \(destroyed\)")
        assert "back to natbox (destroyed)" in status_text, status_text  # removed as nobody
        out, _ = pinger.communicate(timeout=20)
        assert int(out.decode().split()[0]) > 150, out
        assert re.search(r"installed [2-9]", gl.status(ctl))  # the new ct offloaded again
    finally:
        if echo is not None:
            echo.kill()
            echo.wait()
        rest = stop(gw)
    assert gw.returncode == 0 and "Traceback" not in rest and "warning" not in rest, rest
    for dev in ("lan0", "wan0"):  # tc, run as nobody with the ambient CAP_NET_ADMIN, removed the filters
        assert b"natbox_offload" not in ns_run(lab, "gw", ["tc", "filter", "show", "dev", dev, "ingress"]).stdout
