"""Differential check of IpDefrag, ip_do_fragment and icmp_send against the running kernel.

A three-namespace veth lab (sender 10.99.1.2 → router with MASQUERADE → receiver 10.99.2.2) gets
crafted frames through an AF_PACKET socket; what the router forwards or sends back is compared with
natbox's model of the same sequence. Needs root and `ip`; the namespaces are deleted afterwards.

An exchange ends when a marker sent after the frames comes through (a datagram to the receiver, or an echo
reply from the router; for what the reassembly timer sends, once the queues expired), not after a fixed
time: on a loaded machine the sender may still be starting when a fixed window has closed. The sender stays
on one CPU so that its frames reach the router in order.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from natbox.engine.defrag import IP_DEFRAG_CONNTRACK_IN, IcmpOnExpire, IpDefrag
from natbox.netfilter import NfVerdict
from natbox.wire.ethernet import build_ethernet, mac_from_str
from natbox.wire.icmp import build_icmp_echo, build_icmp_error
from natbox.wire.ipv4 import build_ipv4, ip_fragment, ip_rcv_options, str_to_addr
from natbox.wire.udp import build_udp

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# namespace names carry the pid: two runs of the suite on one machine must not meet
NS = tuple(f"nbxd{os.getpid() % 100000}-{x}" for x in "arb")
FRAG_TIME = 2
MARKER = b"natbox-defrag-marker"
MARKER_DEADLINE = 30.0  # seconds an exchange may take on a loaded machine before it fails
A, B, R = str_to_addr("10.99.1.2"), str_to_addr("10.99.2.2"), str_to_addr("10.99.1.1")

RECV = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.settimeout(0.1)
print("ready", flush=True)
end = time.time() + float(sys.argv[2])
marker = bytes.fromhex(sys.argv[3])  # receive until a frame carrying it (left out)
out = []
while time.time() < end:
    try:
        f, addr = s.recvfrom(70000)
    except socket.timeout:
        continue
    if addr[2] != 4 and f[12:14] == b"\x08\x00":
        if marker in f:
            break
        out.append(f[14:].hex())
else:
    sys.exit("no marker within the deadline")
print(json.dumps(out), flush=True)
"""

SEND = r"""
import os, socket, sys, time
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one CPU's backlog: the router gets the frames in order
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for line in sys.stdin:
    s.send(bytes.fromhex(line.strip()))
    time.sleep(0.005)
"""


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


class Lab:
    def __init__(self) -> None:
        for ns in NS:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "nbxd-va", "netns", NS[0], "type", "veth", "peer", "name", "nbxd-r0", "netns", NS[1])
        sh("ip", "link", "add", "nbxd-vb", "netns", NS[2], "type", "veth", "peer", "name", "nbxd-r1", "netns", NS[1])
        for ns, dev, addr in ((NS[0], "nbxd-va", "10.99.1.2/24"), (NS[1], "nbxd-r0", "10.99.1.1/24"),
                              (NS[1], "nbxd-r1", "10.99.2.1/24"), (NS[2], "nbxd-vb", "10.99.2.2/24")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", NS[0], "route", "add", "default", "via", "10.99.1.1")
        sh("ip", "-n", NS[2], "route", "add", "default", "via", "10.99.2.1")
        # short reassembly timeout so that the queues one case leaves behind are gone before the next
        self.sysctl("net.ipv4.ip_forward=1", f"net.ipv4.ipfrag_time={FRAG_TIME}")
        sh("ip", "netns", "exec", NS[1], "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "nbxd-r1",
           "-j", "MASQUERADE")
        mac_b = sh("ip", "-n", NS[2], "-br", "link", "show", "nbxd-vb").split()[2]
        sh("ip", "-n", NS[1], "neigh", "replace", "10.99.2.2", "lladdr", mac_b, "dev", "nbxd-r1")
        self.router_mac = mac_from_str(sh("ip", "-n", NS[1], "-br", "link", "show", "nbxd-r0").split()[2])
        self.mac_a = mac_from_str(sh("ip", "-n", NS[0], "-br", "link", "show", "nbxd-va").split()[2])

    def sysctl(self, *settings: str) -> None:
        sh("ip", "netns", "exec", NS[1], "sysctl", "-qw", *settings)

    def frag_mem(self) -> int:
        for line in sh("ip", "netns", "exec", NS[1], "cat", "/proc/net/sockstat").splitlines():
            if line.startswith("FRAG:"):
                return int(line.split()[-1])
        return -1

    def wait_frag_mem_zero(self) -> None:
        """Until the router holds no fragment queue (each expires FRAG_TIME after it was made)."""
        deadline = time.monotonic() + FRAG_TIME + 15
        while (mem := self.frag_mem()) != 0:
            assert time.monotonic() < deadline, f"fragment queues still hold {mem} bytes"
            time.sleep(0.1)

    def exchange(self, datagrams: list[bytearray], *, back: bool = False, after_expiry: bool = False) -> list[bytes]:
        """Send from the sender; return the IPv4 datagrams seen at the receiver (or back at the sender) until
        the marker sent after them arrives. `after_expiry`: the marker only once the router's fragment queues
        expired (for what the reassembly timer sends: ip_expire sends its ICMP before it frees the queue)."""
        ns, dev = (NS[0], "nbxd-va") if back else (NS[2], "nbxd-vb")
        # back: an echo request to the router, whose reply follows any error it sent before
        marker = (build_ipv4(A, R, 1, build_icmp_echo(0x6E62, 1, MARKER)) if back
                  else build_ipv4(A, B, 17, build_udp(A, B, 40099, 5999, MARKER)))
        rx = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", RECV, dev, str(MARKER_DEADLINE),
                               MARKER.hex()], stdout=subprocess.PIPE, text=True)
        assert rx.stdout is not None
        assert rx.stdout.readline().strip() == "ready"
        if after_expiry:
            self._send(datagrams)
            self.wait_frag_mem_zero()
            self._send([marker])
        else:
            self._send([*datagrams, marker])
        said = rx.communicate()[0]
        assert rx.returncode == 0, f"the receiver saw no marker within {MARKER_DEADLINE} s"
        out = json.loads(said)
        return [bytes.fromhex(h) for h in out]

    def _send(self, datagrams: list[bytearray]) -> None:
        frames = "".join(build_ethernet(self.router_mac, self.mac_a, 0x0800, d).hex() + "\n" for d in datagrams)
        subprocess.run(["ip", "netns", "exec", NS[0], "python3", "-c", SEND, "nbxd-va"], input=frames, text=True,
                       check=True)

    def close(self) -> None:
        for ns in NS:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("iptables") is None:
        pytest.skip("needs root, ip and iptables")
    try:
        lab = Lab()
    except (subprocess.CalledProcessError, OSError) as exc:
        subprocess.run(["ip", "netns", "del", NS[0]], capture_output=True, check=False)
        pytest.skip(f"cannot build the netns lab: {exc}")
    try:
        yield lab
    finally:
        lab.close()


def udp_segment(dport: int, size: int, dst: int = B) -> bytes:
    return build_udp(A, dst, 40000, dport, bytes((i * 3) & 0xFF for i in range(size - 8)))


def frag(ident: int, offset: int, payload: bytes, *, mf: bool, dst: int = B) -> bytearray:
    return build_ipv4(A, dst, 17, payload, ident=ident, mf=mf, frag_offset=offset)


def model(datagrams: list[bytearray]) -> list[NfVerdict]:
    d = IpDefrag()
    return [d.add(bytearray(x), 0.0, IP_DEFRAG_CONNTRACK_IN).verdict for x in datagrams]


def geometry(pieces: list[bytes] | list[bytearray]) -> list[tuple[int, int, int]]:
    return [((p[2] << 8) | p[3], (p[4] << 8) | p[5], (p[6] << 8) | p[7]) for p in pieces]


def test_section9_experiment(lab: Lab) -> None:
    dg = build_ipv4(A, B, 17, udp_segment(5001, 1208), ident=777)
    sent = list(reversed(ip_fragment(dg, 620)))
    got = [p for p in lab.exchange(sent) if p[9] == 17]
    d = IpDefrag()
    results = [d.add(bytearray(p), 0.0) for p in sent]
    done = results[-1]
    assert done.datagram is not None
    ours = ip_fragment(done.datagram, 1500, frag_max_size=done.frag_max_size, frag_list=done.frag_list)
    assert geometry(got) == geometry(ours) == [(620, 777, 0x2000), (620, 777, 0x204B), (28, 777, 0x96)]


@pytest.mark.parametrize(
    "sequence",
    [
        # in order: 0-8, 8-16 form one run, so 0-16 is a duplicate and the datagram completes
        lambda s: [frag(801, 0, s[0:8], mf=True), frag(801, 8, s[8:16], mf=True),
                   frag(801, 0, s[0:16], mf=True), frag(801, 16, s[16:24], mf=False)],
        # reverse order: separate runs, 0-16 overlaps two of them, the queue is dropped
        lambda s: [frag(802, 16, s[16:24], mf=False), frag(802, 8, s[8:16], mf=True),
                   frag(802, 0, s[0:16], mf=True), frag(802, 0, s[0:8], mf=True)],
        # 64 fragments from the same source in between: ipfrag_max_dist purges the queue
        lambda s: [frag(901, 0, s[0:16], mf=True)] + [frag(2000 + i, 0, bytes(8), mf=True) for i in range(64)]
        + [frag(901, 16, s[16:24], mf=False)],
        # 63 in between: still reassembled
        lambda s: [frag(902, 0, s[0:16], mf=True)] + [frag(3000 + i, 0, bytes(8), mf=True) for i in range(63)]
        + [frag(902, 16, s[16:24], mf=False)],
    ],
    ids=["dup-in-run", "overlap-across-runs", "max-dist-64", "max-dist-63"],
)
def test_queue_insert_and_max_dist(lab: Lab, sequence: object) -> None:
    sent = sequence(udp_segment(5002, 24))  # type: ignore[operator]
    ident = (sent[0][4] << 8) | sent[0][5]
    forwarded = [p for p in lab.exchange(sent) if ((p[4] << 8) | p[5]) == ident and p[9] == 17]
    assert bool(forwarded) == (NfVerdict.ACCEPT in model(sent))


def test_memory_limit_no_eviction(lab: Lab) -> None:
    lab.wait_frag_mem_zero()  # earlier cases' queues expire
    lab.sysctl("net.ipv4.ipfrag_low_thresh=4096", "net.ipv4.ipfrag_high_thresh=8192")
    try:
        seg = udp_segment(5008, 24)
        sent = [frag(4000 + i, 0, bytes(16), mf=True) for i in range(100)]
        sent += [frag(5000, 0, seg[0:16], mf=True), frag(5000, 16, seg[16:24], mf=False)]
        got = [p for p in lab.exchange(sent) if p[9] == 17]
        d = IpDefrag(high_thresh=8192)
        for p in sent:
            d.add(bytearray(p), 0.0)
        assert got == [] and lab.frag_mem() == d.mem == 8256
    finally:
        lab.wait_frag_mem_zero()
        lab.sysctl("net.ipv4.ipfrag_high_thresh=4194304", "net.ipv4.ipfrag_low_thresh=3145728")


def test_expiry_icmp_only_for_local_destination(lab: Lab) -> None:
    for dst, ident in ((B, 950), (R, 951)):
        head = frag(ident, 0, udp_segment(5006, 24, dst)[0:16], mf=True, dst=dst)
        back = [p for p in lab.exchange([head], back=True, after_expiry=True) if p[9] == 1]
        d = IpDefrag()
        d.add(head, 0.0)
        (expired,) = d.expire(30.0)
        assert expired.icmp == IcmpOnExpire.IF_LOCAL and expired.head == bytes(head)
        if dst == R:  # RTN_LOCAL: "fragment reassembly time exceeded" quoting the first fragment
            assert len(back) == 1
            assert back[0][20:] == build_icmp_error(11, 1, expired.head)
        else:
            assert back == []


def test_icmp_errors_from_forwarding(lab: Lab) -> None:
    sh("ip", "-n", NS[1], "link", "set", "nbxd-r1", "mtu", "1000")
    try:
        ttl1 = build_ipv4(A, B, 17, udp_segment(5009, 1208), ident=990, ttl=1)
        big_df = build_ipv4(A, B, 17, udp_segment(5010, 1380), ident=991, df=True)
        for dg, expect in ((ttl1, build_icmp_error(11, 0, ttl1)), (big_df, build_icmp_error(3, 4, big_df, info=1000))):
            back = [p for p in lab.exchange([dg], back=True) if p[9] == 1]
            assert len(back) == 1 and len(back[0]) == 576
            assert back[0][20:] == expect
    finally:
        sh("ip", "-n", NS[1], "link", "set", "nbxd-r1", "mtu", "1500")


def test_ip_options_checked_after_routing(lab: Lab) -> None:
    """`ip_rcv_options`: malformed options get ICMP PARAMETERPROB (pointer << 24); source routes are
    dropped silently (accept_source_route all=0)."""
    bad_rr = build_ipv4(A, B, 17, udp_segment(5011, 16), ident=992, options=bytes((7, 7, 3, 0, 0, 0, 0)))
    opts, reason, pointer = ip_rcv_options(bad_rr)
    assert opts is None and reason is not None and pointer == 22
    back = [p for p in lab.exchange([bad_rr], back=True) if p[9] == 1]
    assert len(back) == 1 and back[0][20:] == build_icmp_error(12, 0, bad_rr, info=pointer << 24)

    lsrr = build_ipv4(A, B, 17, udp_segment(5012, 16), ident=993, options=bytes((131, 7, 4, 10, 99, 2, 2)))
    opts, reason, pointer = ip_rcv_options(lsrr)
    assert opts is not None and opts.srr and reason is not None and pointer == 0
    assert [p for p in lab.exchange([lsrr]) if p[9] == 17] == []
    assert [p for p in lab.exchange([lsrr], back=True) if p[9] == 1] == []
