"""Live benchmark: the kernel's NAT and natbox's gateway on the same namespace topology, in one run.

    sudo python bench/live_bench.py [--time 5] [--repeat 3] [--only kernel|natbox|offload|bare] [--no-bare]
                                    [--no-offload]
                                    [--gateway-arg=--no-ring ...] [--patched-csum]

Topology (src/natbox/lab/examples/basic.toml, lab name "nbench"): client 10.0.1.2 -- gw (lan0 10.0.1.1,
wan0 198.51.100.1, MASQUERADE 10.0.1.0/24 out of wan0) -- server 198.51.100.2.

* kernel: lan0/wan0 get the kernel addresses, ip_forward=1, `iptables -t nat -A POSTROUTING -s
  10.0.1.0/24 -o wan0 -j MASQUERADE` in the gw namespace.
* natbox: the same interfaces without kernel addresses, forwarding off, `natbox gateway basic-gw.toml`.
* offload: the same with `--offload`: established flows are carried by natbox's tc BPF datapath.
* bare: the floor, bench/bare_forwarder.py on the same interfaces: natbox's I/O (rings, vnet headers, one
  sendmsg per frame) with Ethernet addresses rewritten and nothing else (no NAT: the server routes
  10.0.1.0/24 back through the gateway, both peers get static neighbour entries for it). natbox/bare is
  the engine's share of the cost; bare/kernel is what a Python AF_PACKET forwarder can reach at all here.

Measured for each: iperf3 TCP with 1 and 4 streams (Gbit/s, receiver side), UDP 64-byte datagrams
(packets/s received, sender unlimited), new TCP connections per second (a Python client connects and
closes in a loop for --time seconds, one connection at a time, against CONN_PORTS listeners whose
server accepts and closes), ping RTT (ms, average of 20), and in IPv6 beside them: iperf3 TCP with 1 stream
from fd00:1::2 to 2001:db8:1::2 (`tcp6_gbps`) and ping6 RTT (`ping6_ms`), through the kernel's NAT66 (ip6tables
MASQUERADE, net.ipv6.conf.all.forwarding=1) and natbox's (basic6-gw.toml's [rules6]); the lab is
basic6.toml, basic.toml dual-stack (--no-ipv6: IPv4 only; the bare forwarder has no IPv6 figures). With
--repeat N each figure is the median of N
runs (on a small, shared machine single runs vary by a third). Prints natbox/kernel ratios.
`--patched-csum` runs the gateway with an O(n) `natbox.wire.checksum.csum_partial` (int % 0xFFFF),
to show what the engine-side fix proposed in the report buys; it changes nothing in the source tree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))

from natbox.adapters.netns import run  # noqa: E402
from natbox.lab.builder import lab_down, lab_up  # noqa: E402
from natbox.lab.model import Lab, parse_lab_toml  # noqa: E402

EXAMPLES = SRC / "natbox" / "lab" / "examples"
SERVER = "198.51.100.2"
SERVER6 = "2001:db8:1::2"
IPV6 = {"on": True}  # measure the IPv6 figures (off for --no-ipv6 and for the bare forwarder)
PATCH = """
import sys
import natbox.wire.checksum as c
def csum_partial(data, initial=0):
    v = int.from_bytes(data, "big") << (8 if len(data) & 1 else 0)
    return initial + ((v % 0xFFFF) or 0xFFFF) if v else initial
c.csum_partial = csum_partial
from natbox.cli.gateway import cli_gateway
sys.exit(cli_gateway(sys.argv[1:]))
"""


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(SRC) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def ns(lab: Lab, node: str, *argv: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", lab.netns(node), *argv], capture_output=True, text=True,
                          timeout=timeout, check=check, env=env())


def iperf(lab: Lab, seconds: float, *args: str, server: str = SERVER) -> dict[str, Any]:
    srv = subprocess.Popen(["ip", "netns", "exec", lab.netns("server"), "iperf3", "-s", "-1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        res = ns(lab, "client", "iperf3", "-c", server, "-t", str(seconds), "-J", *args, timeout=seconds + 30)
        data: dict[str, Any] = json.loads(res.stdout or "{}")
    except (ValueError, subprocess.TimeoutExpired):
        data = {}
    finally:
        srv.terminate()
        srv.wait(5)
    return data


def tcp_gbps(lab: Lab, seconds: float, streams: int) -> float:
    data = iperf(lab, seconds, "-P", str(streams))
    try:
        return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9
    except (KeyError, TypeError):
        return 0.0


def udp_pps(lab: Lab, seconds: float) -> float:
    data = iperf(lab, seconds, "-u", "-l", "64", "-b", "0")
    try:
        s = data["end"]["sum"]
        return float(s["packets"] - s["lost_packets"]) / float(s["seconds"])
    except (KeyError, TypeError, ZeroDivisionError):
        return 0.0


def measure6(lab: Lab, seconds: float) -> dict[str, float]:
    """The IPv6 figures: iperf3 TCP, 1 stream, to SERVER6 (Gbit/s) and ping6 RTT (ms); NaN when IPv6 is off."""
    if not IPV6["on"]:
        return {"tcp6_gbps": float("nan"), "ping6_ms": float("nan")}
    data = iperf(lab, seconds, "-6", server=SERVER6)
    try:
        gbps = float(data["end"]["sum_received"]["bits_per_second"]) / 1e9
    except (KeyError, TypeError):
        gbps = 0.0
    res = ns(lab, "client", "ping", "-6", "-q", "-c", "20", "-i", "0.05", "-W", "2", SERVER6)
    m = re.search(r"= [\d.]+/([\d.]+)/", res.stdout)
    return {"tcp6_gbps": gbps, "ping6_ms": float(m.group(1)) if m else float("nan")}


def ping_ms(lab: Lab) -> float:
    res = ns(lab, "client", "ping", "-q", "-c", "20", "-i", "0.05", "-W", "2", SERVER)
    m = re.search(r"= [\d.]+/([\d.]+)/", res.stdout)
    return float(m.group(1)) if m else float("nan")


CONN_PORTS = 16  # listening ports: 16 x the ephemeral range of 4-tuples, so TIME_WAIT never runs out of ports
CONN_SERVER = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in range(5300, 5300 + int(sys.argv[1])):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(4096); s.setblocking(False); sel.register(s, selectors.EVENT_READ)
print("listening", flush=True)
while True:
    for key, _ in sel.select(1.0):
        try:
            while True:
                c, _ = key.fileobj.accept(); c.close()
        except BlockingIOError:
            pass
"""
CONN_CLIENT = """
import socket, sys, time
seconds, ports, server = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ok = failed = i = 0
end = time.monotonic() + seconds
start = time.monotonic()
while time.monotonic() < end:
    s = socket.socket(); s.settimeout(1.0)
    try:
        s.connect((server, 5300 + i % ports)); ok += 1
    except OSError:
        failed += 1
    s.close(); i += 1
print(ok, failed, time.monotonic() - start)
"""


def conn_rate(lab: Lab, seconds: float) -> float:
    """New TCP connections per second: connect + close, one at a time, from the client namespace."""
    srv = subprocess.Popen(["ip", "netns", "exec", lab.netns("server"), sys.executable, "-c", CONN_SERVER,
                            str(CONN_PORTS)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert srv.stdout is not None
        if srv.stdout.readline().strip() != "listening":
            return 0.0
        res = ns(lab, "client", sys.executable, "-c", CONN_CLIENT, str(seconds), str(CONN_PORTS), SERVER,
                 timeout=seconds + 30)
        ok, failed, elapsed = res.stdout.split()
        if int(failed):
            print(f"live_bench: {failed} connections failed", file=sys.stderr)
        return int(ok) / float(elapsed)
    except (ValueError, subprocess.TimeoutExpired):
        return 0.0
    finally:
        srv.terminate()
        srv.wait(5)


def _retry(fn: Callable[[], float]) -> float:
    """One retry when iperf3 reports nothing (its one-shot server occasionally misses the start)."""
    value = fn()
    return value if value > 0 else fn()


def measure(lab: Lab, seconds: float, repeat: int = 1) -> dict[str, float]:
    """Every figure once, or the median of `repeat` runs."""
    runs = [{"tcp1_gbps": _retry(lambda: tcp_gbps(lab, seconds, 1)),
             "tcp4_gbps": _retry(lambda: tcp_gbps(lab, seconds, 4)),
             "udp64_pps": _retry(lambda: udp_pps(lab, seconds)), "conn_per_s": conn_rate(lab, seconds),
             "ping_ms": ping_ms(lab)} | measure6(lab, seconds) for _ in range(max(1, repeat))]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def kernel_mode(lab: Lab) -> None:
    ns(lab, "gw", "ip", "addr", "add", "10.0.1.1/24", "dev", "lan0", check=True)
    ns(lab, "gw", "ip", "addr", "add", "198.51.100.1/24", "dev", "wan0", check=True)
    ns(lab, "gw", "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)
    ns(lab, "gw", "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.0.1.0/24", "-o", "wan0", "-j",
       "MASQUERADE", check=True)
    if IPV6["on"]:  # NAT66: IPv6 on lan0/wan0 (basic6.toml turns it off there for natbox), forwarding, MASQUERADE
        for dev in ("lan0", "wan0"):
            ns(lab, "gw", "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=0", check=True)
        ns(lab, "gw", "ip", "addr", "add", "fd00:1::1/64", "dev", "lan0", "nodad", check=True)
        ns(lab, "gw", "ip", "addr", "add", "2001:db8:1::1/64", "dev", "wan0", "nodad", check=True)
        ns(lab, "gw", "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", check=True)
        ns(lab, "gw", "ip6tables", "-t", "nat", "-A", "POSTROUTING", "-s", "fd00:1::/64", "-o", "wan0", "-j",
           "MASQUERADE", check=True)


def natbox_mode(lab: Lab) -> None:
    ns(lab, "gw", "iptables", "-t", "nat", "-F")
    ns(lab, "gw", "sysctl", "-qw", "net.ipv4.ip_forward=0", check=True)
    ns(lab, "gw", "ip", "addr", "flush", "dev", "lan0")
    ns(lab, "gw", "ip", "addr", "flush", "dev", "wan0")
    for node in ("client", "server"):  # forget the kernel gateway's MAC (the interfaces keep it anyway)
        ns(lab, node, "ip", "neigh", "flush", "all")
        ns(lab, node, "ip", "-6", "neigh", "flush", "all")
    if IPV6["on"]:  # the kernel's IPv6 off on natbox's devices: natbox answers ND (as --adopt leaves it)
        ns(lab, "gw", "ip6tables", "-t", "nat", "-F")
        ns(lab, "gw", "sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")
        for dev in ("lan0", "wan0"):
            ns(lab, "gw", "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")


def _mac(lab: Lab, node: str, dev: str) -> str:
    return ns(lab, node, "cat", f"/sys/class/net/{dev}/address", check=True).stdout.strip()


def bare_mode(lab: Lab) -> tuple[str, str]:
    """Static neighbour entries and the return route the bare forwarder needs (it answers no ARP and
    does no NAT). Returns the client's and the server's MAC."""
    ns(lab, "client", "ip", "neigh", "replace", "10.0.1.1", "lladdr", _mac(lab, "gw", "lan0"), "dev", "eth0",
       check=True)
    ns(lab, "server", "ip", "neigh", "replace", "198.51.100.1", "lladdr", _mac(lab, "gw", "wan0"), "dev",
       "eth0", check=True)
    ns(lab, "server", "ip", "route", "replace", "10.0.1.0/24", "via", "198.51.100.1", check=True)
    return _mac(lab, "client", "eth0"), _mac(lab, "server", "eth0")


def run_side(lab: Lab, name: str, argv: list[str], seconds: float, ready: str | None,
             repeat: int) -> dict[str, float] | None:
    """Measure with `argv` running in the gw namespace (a gateway or the bare forwarder)."""
    proc = subprocess.Popen(["ip", "netns", "exec", lab.netns("gw"), *argv], stderr=subprocess.PIPE, text=True,
                            env=env())
    assert proc.stderr is not None
    if ready is not None:
        line = proc.stderr.readline()
        if ready not in line:
            print(f"live_bench: {name} did not start: {line}{proc.stderr.read()}", file=sys.stderr)
            return None
        print(line.strip(), flush=True)
    else:
        time.sleep(1.0)
    try:
        result = measure(lab, seconds, repeat)
    finally:
        proc.terminate()
        print(proc.communicate(timeout=10)[1].strip(), flush=True)
    print(f"{name}:", result, flush=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--time", type=float, default=5.0, help="seconds per iperf3 run")
    ap.add_argument("--gateway-arg", action="append", default=[], help="extra natbox gateway argument")
    ap.add_argument("--patched-csum", action="store_true", help="gateway with an O(n) csum_partial")
    ap.add_argument("--only", choices=("kernel", "natbox", "offload", "bare"), help="measure one side only")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare forwarder (the floor)")
    ap.add_argument("--no-offload", action="store_true", help="skip natbox --offload (the tc BPF datapath)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per figure; the median is printed")
    ap.add_argument("--no-ipv6", action="store_true", help="IPv4 only (no tcp6_gbps/ping6_ms)")
    args = ap.parse_args()
    IPV6["on"] = not args.no_ipv6
    lab_file, host_file = ("basic.toml", "basic-gw.toml") if args.no_ipv6 else ("basic6.toml", "basic6-gw.toml")
    if os.geteuid() != 0:
        print("live_bench: needs root (network namespaces)", file=sys.stderr)
        return 1
    lab = parse_lab_toml((EXAMPLES / lab_file).read_text(), str(EXAMPLES / lab_file))
    lab.name = "nbench"
    lab_down(lab)
    lab_up(lab)
    results: dict[str, dict[str, float]] = {}
    try:
        if args.only in (None, "kernel"):
            kernel_mode(lab)
            results["kernel"] = measure(lab, args.time, args.repeat)
            print("kernel:", results["kernel"], flush=True)
        if args.only in (None, "natbox"):
            natbox_mode(lab)
            host = str(EXAMPLES / host_file)
            prog = [sys.executable, "-c", PATCH] if args.patched_csum else [sys.executable, "-m", "natbox.cli.gateway"]
            res = run_side(lab, "natbox", [*prog, host, *args.gateway_arg], args.time, "ready:", args.repeat)
            if res is None:
                return 1
            results["natbox"] = res
        if args.only == "offload" or (args.only is None and not args.no_offload):
            natbox_mode(lab)
            host = str(EXAMPLES / "basic-gw.toml")
            ipv6, IPV6["on"] = IPV6["on"], False  # IPv4 only: --offload's IPv6 socket has no vnet headers (GSO)
            res = run_side(lab, "offload", [sys.executable, "-m", "natbox.cli.gateway", host, "--offload",
                                            *args.gateway_arg], args.time, "ready:", args.repeat)
            IPV6["on"] = ipv6
            if res is not None:
                results["offload"] = res
        if args.only == "bare" or (args.only is None and not args.no_bare):
            natbox_mode(lab)
            client_mac, server_mac = bare_mode(lab)
            IPV6["on"] = False  # the bare forwarder answers no ND
            res = run_side(lab, "bare", [sys.executable, str(ROOT / "bench" / "bare_forwarder.py"), "lan0", client_mac,
                                         "wan0", server_mac, str(args.repeat * (10 * args.time + 60))], args.time,
                           None, args.repeat)
            if res is not None:
                results["bare"] = res
    finally:
        run(["ip", "netns", "list"], check=False)
        lab_down(lab)
    print(f"\n{'metric':<12}{'kernel':>14}{'natbox':>14}{'offload':>14}{'bare':>14}{'natbox/kernel':>16}"
          f"{'offload/kernel':>16}{'bare/kernel':>14}{'natbox/bare':>14}")
    for key in ("tcp1_gbps", "tcp4_gbps", "udp64_pps", "conn_per_s", "ping_ms", "tcp6_gbps", "ping6_ms"):
        k, n, o, b = (results.get(side, {}).get(key, float("nan")) for side in ("kernel", "natbox", "offload", "bare"))
        print(f"{key:<12}{k:>14.3f}{n:>14.3f}{o:>14.3f}{b:>14.3f}{_ratio(n, k):>16.3f}{_ratio(o, k):>16.3f}"
              f"{_ratio(b, k):>14.3f}{_ratio(n, b):>14.3f}")
    return 0


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


if __name__ == "__main__":
    sys.exit(main())
