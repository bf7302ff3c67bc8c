"""`natbox gateway --offload`: IPv6 traffic the datapath does not carry is read from a ring, as IPv4's is.

Under --offload every device has one packet socket per ethertype (gateway.ports.ProtocolPort). The IPv6 one
has a TPACKET_V2 ring of its own with zero-copy reads, as the IPv4 one (it used to read with recv, a copy per
frame). The lab is basic6.toml (client fd00:1::2 / 10.0.1.2 -- natbox lan0/wan0 -- server 2001:db8:1::2 /
198.51.100.2). Checked: the IPv4 and the IPv6 socket of each device have a ring mapped into the gateway
(/proc/net/packet of its namespace: protocol and inode; /proc/PID/maps: socket:[inode]); with the IPv6 flow map
full (filled to MAX_FLOWS through bpf(), as another writer would) a bulk IPv6 TCP transfer is forwarded by
natbox itself, byte-exact, its GSO frames (longer than a slot of these compact rings: 1 MB each) read whole
from the socket queue (`rx_copied`) and handed out in place from reused buffers (`rx_in_place`) without a ring
reset, while an IPv4 flow beside it is still offloaded (its map is not full). Skips, naming what is
missing, without clang/tc/bpf().
"""

from __future__ import annotations

import errno
import hashlib
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from natbox.lab.model import Lab
from natbox.testing.gateway_live import (
    BULK_CLIENT,
    BULK_SERVER,
    UDP_ECHO,
    UDP_PINGER,
    offload_gateway,
    require_offload,
    script,
    start,
    wait_for,
)
from natbox.testing.live import build_lab, load_example, ns_python, ns_run, stop, unique_lab_name

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("need_netns")]

SERVER6, SERVER = "2001:db8:1::2", "198.51.100.2"
BULK = 8 << 20  # bytes through natbox's own IPv6 path


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_offload()
    yield from build_lab(load_example("basic6.toml", unique_lab_name("or6")))


def _port_counter(status: str, dev: str, name: str) -> int:
    m = re.search(rf"\b{dev}:\S*\b{name}=(\d+)", status)
    return int(m.group(1)) if m else 0


def _ring_protocols(lab: Lab, pid: int) -> dict[str, set[str]]:
    """The ethertypes (hex, as /proc/net/packet shows them) of the gateway's packet sockets that have a ring
    mapped into it, per device (the packet sockets of its namespace, matched by inode to its mappings)."""
    table = ns_run(lab, "gw", ["cat", "/proc/net/packet"]).stdout.decode().splitlines()
    mapped = set(re.findall(r"socket:\[(\d+)\]", Path(f"/proc/{pid}/maps").read_text()))
    names = {str(i): n for n, i in ((n, _ifindex(lab, n)) for n in ("lan0", "wan0"))}
    rings: dict[str, set[str]] = {"lan0": set(), "wan0": set()}
    for line in table[1:]:  # sk RefCnt Type Proto Iface R Rmem User Inode
        cols = line.split()
        if len(cols) >= 9 and cols[8] in mapped and cols[4] in names:
            rings[names[cols[4]]].add(cols[3].lower())
    return rings


def _ring_sizes(pid: int) -> list[int]:
    """The sizes of the packet sockets' mappings (rings) in the gateway's address space."""
    sizes = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if "socket:[" in line:
            start, end = line.split()[0].split("-")
            sizes.append(int(end, 16) - int(start, 16))
    return sizes


def _ifindex(lab: Lab, dev: str) -> int:
    out = ns_run(lab, "gw", ["cat", f"/sys/class/net/{dev}/ifindex"]).stdout.decode().strip()
    return int(out)


def _fill_map6(pid: int) -> int:
    """Fill the gateway's IPv6 flow map (nb_flows6) with entries no packet matches; how many went in."""
    from natbox.netfilter import NFPROTO_IPV6
    from natbox.offload import bpf
    from natbox.offload.entry import ACTION6_SIZE, KEY6_SIZE, MAX_FLOWS, OffloadKey, encode_key

    pinned = Path(f"/proc/{pid}/root/tmp/natbox-offload-{pid}/bpffs/tc/globals/nb_flows6")
    flows = bpf.MapFd(bpf.obj_get(str(pinned)), KEY6_SIZE, ACTION6_SIZE)
    try:
        n = 0
        for i in range(MAX_FLOWS + 1):
            key = OffloadKey(ifindex=0x7FFFFFF0, proto=17, saddr=(0xFD99 << 112) + i, daddr=0xFD99 << 112, sport=1,
                             dport=1, family=NFPROTO_IPV6)
            try:
                flows.update(encode_key(key), bytes(ACTION6_SIZE), bpf.BPF_NOEXIST)
            except OSError as e:
                assert e.errno == errno.E2BIG and n == MAX_FLOWS, (e, n)
                break
            n += 1
        return n
    finally:
        flows.close()


def test_ipv6_frames_natbox_forwards_under_offload_are_read_from_a_ring(lab: Lab, tmp_path: Path) -> None:
    ctl, flag = tmp_path / "ctl.sock", tmp_path / "go"
    flag.touch()  # BULK_CLIENT sends both halves at once
    gw = offload_gateway(lab, ctl)
    server = echo = None
    try:
        rings = _ring_protocols(lab, gw.pid)
        assert rings == {"lan0": {"0800", "86dd"}, "wan0": {"0800", "86dd"}}, rings  # ARP's reads plainly
        assert _ring_sizes(gw.pid) == [1 << 20] * 4  # compact rings: slots of the MTU (not 17.8 MB each)
        assert _fill_map6(gw.pid) == 65536
        server = start(lab, "server", script(BULK_SERVER, True, port=5601))
        client = ns_python(lab, "client", script(BULK_CLIENT, True, n=BULK, dst=SERVER6, port=5601, flag=flag),
                           timeout=90)
        assert client.returncode == 0, client.stderr.decode()
        assert client.stdout.decode().split() == ["half", "ok"], client.stdout
        out, _ = server.communicate(timeout=30)
        want = hashlib.sha256(random.Random(7).randbytes(BULK)).hexdigest()
        assert out.decode().split()[1:] == [str(BULK), want]  # byte-exact through natbox's own IPv6 path

        echo = start(lab, "server", script(UDP_ECHO, False, port=6011, seconds=8))
        pinger = ns_python(lab, "client", script(UDP_PINGER, False, sport=40601, dst=SERVER, port=6011, seconds=2))
        got, refused = map(int, pinger.stdout.decode().split())
        assert got > 100 and refused == 0, pinger.stdout
        text = wait_for(ctl, r"1 flows offloaded")
    finally:
        for proc in (server, echo):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        rest = stop(gw)
    assert "Traceback" not in rest, rest
    assert "IPv6 map full" in text and "IPv4 map full" not in text, text
    assert "1 flows offloaded" in text, text  # the IPv4 flow, though IPv6's map is full
    for dev in ("lan0", "wan0"):
        assert _port_counter(text, dev, "rx_ring_reset") == 0, text
    # the client's data segments arrive on lan0 as GSO frames: each read whole from the IPv6 socket's queue (its
    # ring's slots hold MTU frames) and handed to natbox in place, from a reused buffer
    assert _port_counter(text, "lan0", "rx_copied") > 100, text
    assert _port_counter(text, "lan0", "rx_in_place") > 100, text
    assert _port_counter(text, "lan0", "rx_gso") > 100, text
