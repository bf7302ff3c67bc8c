"""The kernel data path alone (natbox.offload) against the kernel's own NAT, on the same namespaces.

    sudo python bench/offload_bench.py [--time 4] [--repeat 3] [--cc cubic]

client 10.0.1.2 -- router (eth0 10.0.1.1, eth1 198.51.100.1, MASQUERADE out of eth1, ip_forward on) --
server 198.51.100.2 running `iperf3 -s`. The entries come from a natbox engine's plans for the flows the
runs use (iperf3 --cport 45000.. for TCP 1 and 4 streams and UDP, `ping -e 0x4242`), as the gateway would
install them; natbox itself is not in the path, so this is what the BPF program costs against the kernel's
netfilter path (natbox's own share is bench/live_bench.py's --offload column). Both modes alternate in
each round; each figure is the median of --repeat rounds; `carried` is the packets the program redirected
during the measurement (0 would mean the kernel carried everything). `tcp1 v6`: one TCP stream over IPv6
(client fd00:1::2 -- router fd00:1::1, 2001:db8:1::1, ip6tables MASQUERADE -- server 2001:db8:1::2), NAT66
by the kernel against the program's IPv6 branch. TCP runs use --cc (default cubic) whatever the host's
default is.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from natbox.adapters.netns import enter_netns, run_in_netns, temp_netns
from natbox.offload.datapath import Datapath, ifindex, probe
from natbox.offload.entry import OffloadAction, OffloadKey, offload_entry
from natbox.testing.offload import RouterFlows
from natbox.testing.offload6 import RouterFlows6

CPORT = 45000  # iperf3 --cport: the client ports of the data streams (4 for -P 4)
PING_ID = 0x4242
SERVER = "198.51.100.2"
SERVER6 = "2001:db8:1::2"
TCP_CC = {"name": "cubic"}  # iperf3 -C for the TCP runs (--cc; live_bench.py's TCP_CC says why it is pinned)


def _iperf(client: str, secs: float, args: list[str], server: str = SERVER) -> dict[str, dict[str, dict[str, float]]]:
    out = subprocess.run(["ip", "netns", "exec", client, "iperf3", "-J", "-c", server, "-t", str(secs),
                          "--cport", str(CPORT), *args], capture_output=True, text=True, timeout=120, check=True)
    doc: dict[str, dict[str, dict[str, float]]] = json.loads(out.stdout)
    return doc


def _cc() -> list[str]:
    return ["-C", TCP_CC["name"]] if TCP_CC["name"] else []


def tcp_gbits(client: str, secs: float, streams: int) -> float:
    return _iperf(client, secs, ["-P", str(streams), *_cc()])["end"]["sum_received"]["bits_per_second"] / 1e9


def tcp6_gbits(client: str, secs: float) -> float:
    return _iperf(client, secs, _cc(), SERVER6)["end"]["sum_received"]["bits_per_second"] / 1e9


def udp_kpps(client: str, secs: float) -> float:
    s = _iperf(client, secs, ["-u", "-l", "18", "-b", "0"])["end"]["sum"]  # 18 bytes: 64-byte frames
    return (s["packets"] - s["lost_packets"]) / s["seconds"] / 1e3


def ping_us(client: str, _secs: float) -> float:
    out = subprocess.run(["ip", "netns", "exec", client, "ping", "-e", str(PING_ID), "-c", "100", "-i", "0.01",
                          "-q", SERVER], capture_output=True, text=True, timeout=60, check=True).stdout
    return float(out.rsplit("=", 1)[1].split("/")[1]) * 1000  # rtt min/avg/max/mdev = ...: the average


METRICS: dict[str, Callable[[str, float], float]] = {
    "tcp1 Gbit/s": lambda c, t: tcp_gbits(c, t, 1),
    "tcp4 Gbit/s": lambda c, t: tcp_gbits(c, t, 4),
    "udp64 kpps": udp_kpps,
    "ping us": ping_us,
    "tcp1 v6 Gbit/s": tcp6_gbits,
}


def _lab(client: str, router: str, server: str) -> tuple[bytes, bytes, bytes, bytes]:
    for ns, dev, peer, addr in ((client, "c0", "eth0", "10.0.1.2/24"), (server, "s0", "eth1", "198.51.100.2/24")):
        run_in_netns(ns, ["ip", "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", router])
        run_in_netns(ns, ["ip", "addr", "add", addr, "dev", dev])
        run_in_netns(ns, ["ip", "link", "set", dev, "up"])
        run_in_netns(router, ["ip", "link", "set", peer, "up"])
    run_in_netns(router, ["ip", "addr", "add", "10.0.1.1/24", "dev", "eth0"])
    run_in_netns(router, ["ip", "addr", "add", "198.51.100.1/24", "dev", "eth1"])
    run_in_netns(client, ["ip", "route", "add", "default", "via", "10.0.1.1"])
    run_in_netns(router, ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth1", "-j", "MASQUERADE"])
    run_in_netns(router, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    run_in_netns(router, ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=1"])
    for ns, dev, addr in ((client, "c0", "fd00:1::2/64"), (server, "s0", "2001:db8:1::2/64"),
                          (router, "eth0", "fd00:1::1/64"), (router, "eth1", "2001:db8:1::1/64")):
        run_in_netns(ns, ["ip", "addr", "add", addr, "dev", dev, "nodad"])
    run_in_netns(client, ["ip", "-6", "route", "add", "default", "via", "fd00:1::1"])
    run_in_netns(router, ["ip6tables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth1", "-j", "MASQUERADE"])
    run_in_netns(router, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])

    def mac(ns: str, dev: str) -> bytes:
        return bytes.fromhex(run_in_netns(ns, ["cat", f"/sys/class/net/{dev}/address"]).stdout.strip().replace(":", ""))

    return mac(router, "eth0"), mac(router, "eth1"), mac(client, "c0"), mac(server, "s0")


def _entries(router: str, macs: tuple[bytes, bytes, bytes, bytes]) -> list[tuple[OffloadKey, OffloadAction]]:
    flows = RouterFlows(*macs)
    found = []
    for port in range(CPORT, CPORT + 4):
        flows.tcp(port, 5201)
        flows.udp(port, 5201)
        found += [(6, port), (17, port)]
    flows.ping(PING_ID)
    found.append((1, PING_ID))
    flows6 = RouterFlows6(*macs)
    flows6.tcp(CPORT, 5201)
    entries = []
    with enter_netns(router):
        for plan in [p for proto, port in found for p in flows.flow_plans(proto, port)] + [
                *flows6.flow_plans(6, CPORT)]:
            entry = offload_entry(plan, ifindex)
            if entry is None:
                raise SystemExit(f"no entry for the plan {plan}")
            entries.append(entry)
    return entries


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time", type=float, default=4.0, help="seconds per iperf3 run")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (each figure is their median)")
    ap.add_argument("--cc", default=TCP_CC["name"], metavar="NAME",
                    help="the TCP senders' congestion control (iperf3 -C); '' for the host's default")
    args = ap.parse_args()
    TCP_CC["name"] = args.cc
    missing = probe()
    if missing is not None:
        print(f"offload_bench: {missing}", file=sys.stderr)
        return 2
    cache = tempfile.mkdtemp(prefix="natbox-offload-bench-")  # the BPF object, built once
    results: dict[str, dict[str, list[float]]] = {"kernel": {}, "offload": {}}
    with temp_netns("nbob", 3) as (client, router, server):
        macs = _lab(client, router, server)
        entries = _entries(router, macs)
        srv = subprocess.Popen(["ip", "netns", "exec", server, "iperf3", "-s"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            for _ in range(args.repeat):
                for mode in ("kernel", "offload"):
                    dp: Datapath | None = None
                    if mode == "offload":
                        with enter_netns(router):
                            dp = Datapath(cache)
                            dp.attach("eth0")
                            dp.attach("eth1")
                        for key, action in entries:
                            dp.install(key, action)
                    try:
                        for name, measure in METRICS.items():
                            before = sum(s.packets for s in dp.stats().values()) if dp else 0
                            results[mode].setdefault(name, []).append(measure(client, args.time))
                            if dp is not None:
                                carried = sum(s.packets for s in dp.stats().values()) - before
                                results[mode].setdefault(f"{name} carried", []).append(carried)
                            time.sleep(0.3)
                    finally:
                        if dp is not None:
                            with enter_netns(router):
                                dp.close()
        finally:
            srv.terminate()
            srv.wait()
    print(f"{'':22} {'kernel':>10} {'offload':>10} {'ratio':>6}   (medians of {args.repeat})")
    for name in METRICS:
        k, o = statistics.median(results["kernel"][name]), statistics.median(results["offload"][name])
        moved = statistics.median(results["offload"][f"{name} carried"])
        print(f"{name:22} {k:10.2f} {o:10.2f} {o / k:6.2f}   carried {moved:.0f} packets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
