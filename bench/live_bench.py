"""Live benchmark: the kernel's NAT and natbox's gateway on the same namespace topology, in one run.

    sudo python bench/live_bench.py [--time 5] [--repeat 3] [--cc cubic] [--compiled VENV] [--no-bare] [--no-offload]
                                    [--only SIDE,...: kernel,natbox,offload,offnew,natbox-c,offload-c,offnew-c,bare]
                                    [--no-offload-new] [--no-ipv6] [--metrics conn,ping,...]
                                    [--json FILE] [--gateway-arg=--no-ring ...] [--patched-csum]

Topology (src/natbox/lab/examples/basic6.toml, lab "lbn" + the pid in base 36): client 10.0.1.2 -- gw (lan0 10.0.1.1,
wan0 198.51.100.1, MASQUERADE 10.0.1.0/24 out of wan0) -- server 198.51.100.2, dual-stack (fd00:1::2 --
gw -- 2001:db8:1::2, MASQUERADE fd00:1::/64 out of wan0); --no-ipv6: basic.toml, IPv4 only.

* kernel: lan0/wan0 get the kernel addresses, ip_forward=1, `iptables -t nat -A POSTROUTING -s
  10.0.1.0/24 -o wan0 -j MASQUERADE` in the gw namespace (and NAT66: ip6tables MASQUERADE, IPv6 forwarding).
* natbox: the same interfaces without kernel addresses, forwarding off, `natbox gateway basic6-gw.toml`
  (pure Python, this checkout's src/).
* offload: the same with `--offload`: established flows are carried by natbox's tc BPF datapath (IPv6
  flows by the gateway's Python path until the BPF program has an IPv6 branch).
* offnew: `--offload-new`: the datapath also opens new TCP connections from templates of natbox's decisions
  and copies their packets to natbox (gateway/newconn.py); --no-offload-new skips it.
* natbox-c, offload-c, offnew-c (with --compiled VENV): the same gateways run by VENV's python, whose natbox is
  the compiled (mypyc) build, without PYTHONPATH. Each gateway's `natbox --version` is printed first, and
  a VENV that is not a compiled build is refused. The build (about 7 minutes of CPU on 2 cores):
      scripts/build-compiled.sh /tmp/natbox-compiled     # = NATBOX_COMPILE=1 pip install . into that venv
  It is a copy of the tree at build time: rebuild it after changing src/.
* bare: the floor, bench/bare_forwarder.py on the same interfaces: natbox's I/O (rings, vnet headers, one
  sendmsg per frame) with Ethernet addresses rewritten and nothing else (no NAT: the server routes
  10.0.1.0/24 back through the gateway, both peers get static neighbour entries for it). natbox/bare is
  the engine's share of the cost; bare/kernel is what a Python AF_PACKET forwarder can reach at all here.

Measured for each: iperf3 TCP with 1 and 4 streams (Gbit/s, receiver side), UDP 64-byte datagrams
(packets/s received, sender unlimited), new TCP connections per second (a Python client connects and
closes in a loop for --time seconds, one connection at a time, against CONN_PORTS listeners whose
server accepts and closes), ping: one run of PING_COUNT requests PING_INTERVAL apart (one echo flow);
`ping_ms` is the average RTT of all its replies (`ping_n` of them; the first cross natbox's slow path,
before the echo flow is compiled or offloaded), `ping_est_ms` and `ping_est_p90_ms` the median and the 90th
percentile of the replies after the first PING_WARM (`ping_est_n` of them: an established flow, what issue
#16's aim "ping on an established flow <= 1.1x" is about; 25 replies 50 ms apart gave 1.13x and 1.72x in
two quiet runs, too few to settle it); in IPv6 beside them: iperf3 TCP with 1 stream from fd00:1::2 to
2001:db8:1::2 (`tcp6_gbps`) and ping6 (`ping6_ms`, `ping6_est_ms`, `ping6_est_p90_ms`, `ping6_n`,
`ping6_est_n`) through the kernel's NAT66 and natbox's (basic6-gw.toml's [rules6]). With --repeat N the run is N
rounds, each measuring every side once in turn, and each figure is the median of its N rounds (on a small,
shared machine single runs vary by a third; interleaved, a drift of the host's speed weighs on every side
alike; the spread over the rounds and the load averages are printed). Prints every side's figures, their
ratios to the kernel, and issue #16's aims (TCP 1 and 4 streams >= 0.95, UDP 64-byte packets/s >= 1.0,
ping on an established flow <= 1.1x, new connections/s >= 0.3) met or not for each natbox column. A 0
comes with iperf3's reason on stderr.
`--patched-csum` runs the pure gateway with an O(n) `natbox.wire.checksum.csum_partial` (int % 0xFFFF),
to show what the engine-side fix proposed in the report buys; it changes nothing in the source tree.
"""

from __future__ import annotations

import argparse
import json
import math
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
# the TCP senders' congestion control (iperf3 -C; --cc, "" for the host's default): pinned, because the host's
# default decides what a TCP figure measures. Linux's default is cubic; a host set to bbr paces one stream
# below what the path carries (9-12 Gbit/s with 30 % of both CPUs idle, where cubic ran 15-23 on the same
# machine and hour), and the ratio then follows bbr's estimate of the path more than the path's cost
TCP_CC = {"name": "cubic"}
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
        if data.get("error") or not data:  # said, so that a 0 in the table has its reason
            print(f"live_bench: iperf3 {' '.join(args)}: {data.get('error') or res.stderr.strip() or 'no output'}",
                  file=sys.stderr, flush=True)
    except (ValueError, subprocess.TimeoutExpired) as e:
        print(f"live_bench: iperf3 {' '.join(args)}: {type(e).__name__}", file=sys.stderr, flush=True)
        data = {}
    finally:
        srv.terminate()
        srv.wait(5)
    return data


def _host_cc() -> str:
    try:
        return Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    except OSError:
        return "unknown"


def cc_args() -> list[str]:
    """iperf3's option for TCP_CC (none: the host's default)."""
    return ["-C", TCP_CC["name"]] if TCP_CC["name"] else []


def tcp_gbps(lab: Lab, seconds: float, streams: int) -> float:
    data = iperf(lab, seconds, "-P", str(streams), *cc_args())
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
        return {"tcp6_gbps": float("nan")} | no_ping("ping6")
    data = iperf(lab, seconds, "-6", *cc_args(), server=SERVER6)
    try:
        gbps = float(data["end"]["sum_received"]["bits_per_second"]) / 1e9
    except (KeyError, TypeError):
        gbps = 0.0
    return {"tcp6_gbps": gbps} | ping(lab, "-6", SERVER6)


PING_COUNT = 200  # echo requests per ping run: about 2 s at PING_INTERVAL
PING_INTERVAL = "0.01"  # seconds between requests (below 0.2 s needs root, which the bench has)
PING_WARM = 5  # replies left out of the established figures: the echo flow's first packets are its NEW one and
# those before it is compiled (natbox) or offloaded (--offload), which take natbox's slow path
PING_FIGURES = ("ms", "est_ms", "est_p90_ms", "n", "est_n")  # after "ping_" (IPv4) or "ping6_"


def no_ping(prefix: str) -> dict[str, float]:
    """The ping figures not measured: NaN each."""
    return {f"{prefix}_{name}": float("nan") for name in PING_FIGURES}


def ping_figures(output: str, prefix: str) -> dict[str, float]:
    """The figures of one ping run's output (`prefix`: "ping" or "ping6"): the average RTT of all replies
    (`_ms`, as ping's summary gives it), the median and 90th percentile of the replies after the first
    PING_WARM (`_est_ms`, `_est_p90_ms`: an established flow), and how many replies each has (`_n`,
    `_est_n`). RTTs in ms; NaN for a figure without enough replies (a percentile needs two)."""
    rtts = [float(t) for t in re.findall(r"time=([\d.]+) ms", output)]
    est = rtts[PING_WARM:]
    nan = float("nan")
    return {f"{prefix}_ms": statistics.fmean(rtts) if rtts else nan,
            f"{prefix}_est_ms": statistics.median(est) if est else nan,
            f"{prefix}_est_p90_ms": statistics.quantiles(est, n=10)[8] if len(est) > 1 else nan,
            f"{prefix}_n": float(len(rtts)), f"{prefix}_est_n": float(len(est))}


def ping(lab: Lab, family: str, server: str) -> dict[str, float]:
    """One `ping` run of PING_COUNT requests PING_INTERVAL apart (one echo flow: ping keeps its id) from the
    client: `ping_figures` of it."""
    res = ns(lab, "client", "ping", family, "-c", str(PING_COUNT), "-i", PING_INTERVAL, "-W", "2", server)
    return ping_figures(res.stdout, "ping6" if family == "-6" else "ping")


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


GATEWAY = {"pid": 0}  # the gateway process measured now (run_side), 0 for the kernel's side: conn_cpu_us


def _cpu_times(pid: int) -> tuple[float, float]:
    """utime and stime of process `pid` (/proc/PID/stat fields 14 and 15, clock ticks) in seconds, NaN when it
    is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick
    except (OSError, IndexError, ValueError):
        return float("nan"), float("nan")


def _host_busy() -> float:
    """Seconds of CPU time the whole machine spent busy (every CPU: /proc/stat's first line less idle and
    iowait), NaN when unreadable."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def conn_rate(lab: Lab, seconds: float) -> dict[str, float]:
    """New TCP connections per second: connect + close, one at a time, from the client namespace; and
    `conn_cpu_us`, the gateway process's CPU time (user + system) across the run per connection made
    (NaN for the kernel): natbox is one process on one core, so this is what limits --offload-new."""
    nan = float("nan")
    srv = subprocess.Popen(["ip", "netns", "exec", lab.netns("server"), sys.executable, "-c", CONN_SERVER,
                            str(CONN_PORTS)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert srv.stdout is not None
        if srv.stdout.readline().strip() != "listening":
            return {"conn_per_s": 0.0, "conn_cpu_us": nan}
        pid = GATEWAY["pid"]
        user0, sys0 = _cpu_times(pid) if pid else (nan, nan)
        busy0 = _host_busy()
        res = ns(lab, "client", sys.executable, "-c", CONN_CLIENT, str(seconds), str(CONN_PORTS), SERVER,
                 timeout=seconds + 30)
        user1, sys1 = _cpu_times(pid) if pid else (nan, nan)
        busy = _host_busy() - busy0
        ok, failed, elapsed = res.stdout.split()
        if int(failed):
            print(f"live_bench: {failed} connections failed", file=sys.stderr)
        made = int(ok)
        per_conn = (user1 - user0 + sys1 - sys0) * 1e6 / made if made else nan
        # the whole machine's CPU per connection (every process and softirq): what the client and server pay too
        host = busy * 1e6 / max(made, 1)
        if pid:
            user, system = (user1 - user0) * 1e6 / max(made, 1), (sys1 - sys0) * 1e6 / max(made, 1)
            print(f"live_bench: conn: {made / float(elapsed):.0f}/s, natbox_cpu_us_per_conn {per_conn:.1f} "
                  f"(user {user:.1f}, system {system:.1f}), host_cpu_us_per_conn {host:.1f}", flush=True)
        else:
            print(f"live_bench: conn: {made / float(elapsed):.0f}/s, host_cpu_us_per_conn {host:.1f}", flush=True)
        return {"conn_per_s": int(ok) / float(elapsed), "conn_cpu_us": per_conn}
    except (ValueError, subprocess.TimeoutExpired):
        return {"conn_per_s": 0.0, "conn_cpu_us": nan}
    finally:
        srv.terminate()
        srv.wait(5)


def _retry(fn: Callable[[], float]) -> float:
    """One retry when iperf3 reports nothing (its one-shot server occasionally misses the start)."""
    value = fn()
    return value if value > 0 else fn()


WANTED: set[str] = set()  # --metrics: the figures measured (every one when empty): tcp1 tcp4 udp64 conn ping ipv6


def measure(lab: Lab, seconds: float) -> dict[str, float]:
    """Every figure (or those --metrics names) once (--repeat: once per round, one_round)."""
    want = WANTED or {"tcp1", "tcp4", "udp64", "conn", "ping", "ipv6"}
    nan = float("nan")
    return ({"tcp1_gbps": _retry(lambda: tcp_gbps(lab, seconds, 1)) if "tcp1" in want else nan,
             "tcp4_gbps": _retry(lambda: tcp_gbps(lab, seconds, 4)) if "tcp4" in want else nan,
             "udp64_pps": _retry(lambda: udp_pps(lab, seconds)) if "udp64" in want else nan}
            | (conn_rate(lab, seconds) if "conn" in want else {"conn_per_s": nan, "conn_cpu_us": nan})
            | (ping(lab, "-4", SERVER) if "ping" in want else no_ping("ping"))
            | (measure6(lab, seconds) if "ipv6" in want else {"tcp6_gbps": nan} | no_ping("ping6")))


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


LAB_PREFIX = "lbn"  # the lab of a run is LAB_PREFIX + its pid in base 36 (lab names: at most 8 of [a-z0-9])
_LAB_NS = re.compile(r"^nbx-" + LAB_PREFIX + r"([0-9a-z]{1,5})-gw\b")


def bench_lab_name(pid: int) -> str:
    """The lab name of the live_bench run `pid`: its own namespaces, so that two runs at once (two helpers'
    runs, say) do not tear each other's lab down (each used to start with `lab_down` of one shared name)."""
    digits = ""
    while True:
        pid, d = divmod(pid, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + digits
        if not pid:
            return LAB_PREFIX + digits


def other_runs(lab: Lab) -> list[int]:
    """The pids of other live_bench runs whose labs exist now. The lab of a run that is gone (killed) is
    removed; so is this run's own name, should a stale lab hold it."""
    res = run(["ip", "netns", "list"], check=False)
    running = []
    for line in res.stdout.splitlines():
        m = _LAB_NS.match(line)
        if m is None:
            continue
        pid = int(m.group(1), 36)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b""
        if pid != os.getpid() and b"live_bench" in cmdline:
            running.append(pid)
        else:  # its namespaces by name (every lab of live_bench has the same nodes)
            own, lab.name = lab.name, LAB_PREFIX + m.group(1)
            lab_down(lab)
            lab.name = own
    return running


LOG_TAIL = 20  # lines of a side's log printed when it fails or measures a 0
READY_TIMEOUT = 120.0  # seconds a gateway may take to say `ready:` (clang builds the BPF program for --offload)


def side_log(name: str) -> Path:
    """Where the stderr of side `name`'s process goes while it runs (kept after the run)."""
    return Path(f"/tmp/live_bench-{name}-{os.getpid()}.log")


def _tail(log: Path, n: int = LOG_TAIL) -> list[str]:
    try:
        return log.read_text(errors="replace").splitlines()[-n:]
    except OSError as e:
        return [f"({log}: {e.strerror})"]


def _wait_ready(proc: subprocess.Popen[str], log: Path, ready: str, timeout: float) -> str | None:
    """The first line of `log` that holds `ready`, once `proc` wrote it; None when `proc` exited or `timeout`
    seconds passed first."""
    deadline = time.monotonic() + timeout
    while True:
        exited = proc.poll() is not None  # before reading: what it wrote before exiting is read
        line = next((ln for ln in _tail(log, 10_000) if ready in ln), None)
        if line is not None or exited or time.monotonic() > deadline:
            return line
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def run_side(lab: Lab, name: str, argv: list[str], seconds: float, ready: str | None,
             environ: dict[str, str] | None = None) -> dict[str, float] | None:
    """Measure with `argv` running in the gw namespace (a gateway or the bare forwarder), from /, with
    `environ` (default: env(), this checkout's src/ first). Its stderr goes to side_log(name) as it runs (a
    pipe read only at the end held what a gateway said mid-run, and a full pipe would block it); when the side
    does not start, fails or measures a 0, the log's last LOG_TAIL lines are printed."""
    log = side_log(name)
    print(f"live_bench: {name}: stderr to {log}", flush=True)
    with log.open("w") as out:  # the child has its own descriptor for it
        proc = subprocess.Popen(["ip", "netns", "exec", lab.netns("gw"), *argv], stderr=out, text=True,
                                env=environ if environ is not None else env(), cwd="/")
    GATEWAY["pid"] = proc.pid  # `ip netns exec` execs the command: this is the gateway (conn_cpu_us)
    result: dict[str, float] | None = None
    started = False
    try:
        if ready is not None:
            line = _wait_ready(proc, log, ready, READY_TIMEOUT)
            if line is None:
                print(f"live_bench: {name} did not start (exit status {proc.poll()})", file=sys.stderr)
                return None
            print(line.strip(), flush=True)
        else:
            time.sleep(1.0)
        started = True
        result = measure(lab, seconds)
    finally:
        GATEWAY["pid"] = 0
        _stop(proc)
        if result is None or 0 in result.values():
            what = "did not start" if not started else "failed" if result is None else "measured a 0"
            print(f"live_bench: {name} {what}: the last {LOG_TAIL} lines of {log}:", *_tail(log), sep="\n",
                  file=sys.stderr, flush=True)
        else:  # the gateway's last words (`stopped: ...`, its counters)
            print(*_tail(log, 1), sep="\n", flush=True)
    print(f"{name}:", result, f"(load average {_load()})", flush=True)
    return result


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# --- the natbox gateways measured: (column, offload, compiled) --------------------------------------------------

GATEWAYS = (("natbox", "", False), ("offload", "--offload", False), ("offnew", "--offload-new", False),
            ("natbox-c", "", True), ("offload-c", "--offload", True), ("offnew-c", "--offload-new", True))
SIDES = ("kernel", "natbox", "offload", "offnew", "natbox-c", "offload-c", "offnew-c", "bare")
BUILDS: dict[str, str] = {}  # each gateway column's `natbox --version` (in --json's output)


def compiled_python(given: str) -> str:
    """The python of a compiled build: a venv (its bin/python) or the interpreter itself."""
    p = Path(given)
    return str(p / "bin" / "python") if p.is_dir() else str(p)


def compiled_env() -> dict[str, str]:
    """The environment of the compiled build's gateway: no PYTHONPATH (its venv's own natbox, not src/)."""
    e = dict(os.environ)
    e.pop("PYTHONPATH", None)
    return e


def build_of(python: str, environ: dict[str, str]) -> str:
    """`natbox --version` of the natbox `python` imports with `environ` (it names the build)."""
    res = subprocess.run([python, "-m", "natbox", "--version"], env=environ, capture_output=True, text=True,
                         cwd="/", check=False, timeout=60)
    return res.stdout.strip() or f"no natbox: {(res.stderr.strip().splitlines() or ['?'])[-1]}"


# --- the figures printed ---------------------------------------------------------------------------------------

# conn_cpu_us: the gateway's CPU µs per connection (conn_rate); ping*: PING_FIGURES (ping_figures)
METRICS = ("tcp1_gbps", "tcp4_gbps", "udp64_pps", "conn_per_s", *(f"ping_{f}" for f in PING_FIGURES), "tcp6_gbps",
           *(f"ping6_{f}" for f in PING_FIGURES), "conn_cpu_us")
# issue #16's aims for the natbox columns, as ratios to the kernel's NAT: (metric, at least?, bound)
AIMS = (("tcp1_gbps", True, 0.95), ("tcp4_gbps", True, 0.95), ("udp64_pps", True, 1.0), ("ping_est_ms", False, 1.1),
        ("conn_per_s", True, 0.3))


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def report(results: dict[str, dict[str, float]], loads: dict[str, str],
           runs: dict[str, list[dict[str, float]]] | None = None) -> None:
    """The figures of every side measured, their ratios to the kernel (and natbox's to the bare floor),
    issue #16's aims met or not per natbox column, and (with rounds) the aims' figures' spread."""
    sides = [side for side in SIDES if side in results]
    if not sides:
        print("live_bench: nothing was measured", file=sys.stderr)
        return
    get = {side: results[side] for side in sides}
    print(f"\n{'metric':<17}" + "".join(f"{side:>14}" for side in sides))
    for key in METRICS:
        print(f"{key:<17}" + "".join(f"{get[side].get(key, float('nan')):>14.3f}" for side in sides))
    print("load average (1, 5, 15 min) after each side: " + "; ".join(f"{s} {loads[s]}" for s in sides if s in loads))
    pairs = [(side, "kernel") for side in sides if side != "kernel"]
    pairs += [(side, "bare") for side in ("natbox", "natbox-c") if side in get and "bare" in get]
    if "kernel" in get and len(pairs) > 0:
        print(f"\n{'ratio':<17}" + "".join(f"{a + '/' + b:>18}" for a, b in pairs))
        for key in METRICS:
            print(f"{key:<17}" + "".join(f"{_ratio(get[a].get(key, float('nan')), get[b][key]):>18.3f}"
                                         for a, b in pairs if b in get))
    columns = [side for side, _off, _comp in GATEWAYS if side in get]
    if "kernel" not in get or not columns:
        return
    print("\naims (issue #16), ratio to the kernel's NAT" + "".join(f"{side:>16}" for side in columns))
    for key, at_least, bound in AIMS:
        cells = []
        for side in columns:
            r = _ratio(get[side].get(key, float("nan")), get["kernel"][key])
            met = r >= bound if at_least else r <= bound
            cells.append(f"{'-':>16}" if math.isnan(r) else f"{r:>7.2f} {'met' if met else 'not met':>8}")
        label = f"{key} {'>=' if at_least else '<='} {bound}"
        print(f"{label:<43}" + "".join(cells))
    if runs and max(len(r) for r in runs.values()) > 1:
        head = "".join(f"{side:>21}" for side in ["kernel", *columns])
        print("\nspread over the rounds (min..max; each round's below)\n" + " " * 17 + head)
        measured = [key for key, _at_least, _bound in AIMS
                    if any(not math.isnan(r[key]) for side_runs in runs.values() for r in side_runs)]
        for key in measured:
            cells = []
            for side in ["kernel", *columns]:
                values = [r[key] for r in runs.get(side, [])]
                cells.append(f"{f'{min(values):.4g}..{max(values):.4g}':>21}" if values else f"{'-':>21}")
            print(f"{key:<17}" + "".join(cells))
        for key in measured:
            for side in ["kernel", *columns]:
                print(f"  {key} {side}: " + " ".join(f"{r[key]:.4g}" for r in runs.get(side, [])))
    print(f"(ping_est_ms, ping_est_p90_ms: median and 90th percentile RTT of an established echo flow's replies, "
          f"ping_est_n of them (the replies of a {PING_COUNT}-request run {PING_INTERVAL} s apart after the first "
          f"{PING_WARM}); ping_ms: the average of all ping_n replies, the first through natbox's slow path; "
          "ping6_*: the same in IPv6)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--time", type=float, default=5.0, help="seconds per iperf3 run")
    ap.add_argument("--gateway-arg", action="append", default=[], help="extra natbox gateway argument")
    ap.add_argument("--patched-csum", action="store_true", help="gateway with an O(n) csum_partial")
    ap.add_argument("--only", type=_sides, metavar="SIDE[,SIDE...]",
                    help=f"measure only these sides (of {', '.join(SIDES)})")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare forwarder (the floor)")
    ap.add_argument("--no-offload", action="store_true", help="skip natbox --offload (the tc BPF datapath)")
    ap.add_argument("--no-offload-new", action="store_true", help="skip natbox --offload-new (new connections too)")
    ap.add_argument("--metrics", default="", help="measure only these: comma-separated tcp1,tcp4,udp64,conn,ping,ipv6")
    ap.add_argument("--compiled", default="", metavar="VENV",
                    help="also the compiled build's gateway (columns natbox-c, offload-c): a venv where "
                         "`NATBOX_COMPILE=1 pip install .` ran, or its python")
    ap.add_argument("--cc", default=TCP_CC["name"], metavar="NAME",
                    help="the TCP senders' congestion control (iperf3 -C); '' for the host's default")
    ap.add_argument("--repeat", type=int, default=1, help="rounds (each measures every side once); figures are medians")
    ap.add_argument("--no-ipv6", action="store_true", help="IPv4 only (no tcp6_gbps/ping6_ms)")
    ap.add_argument("--json", default="", metavar="FILE", help="also write the figures to FILE as JSON")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("live_bench: needs root (network namespaces)", file=sys.stderr)
        return 1
    WANTED.update(m for m in args.metrics.split(",") if m)
    TCP_CC["name"] = args.cc
    gateways = gateway_runs(args)
    if gateways is None:
        return 2
    IPV6["on"] = not args.no_ipv6
    lab_file = "basic.toml" if args.no_ipv6 else "basic6.toml"
    lab = parse_lab_toml((EXAMPLES / lab_file).read_text(), str(EXAMPLES / lab_file))
    lab.name = bench_lab_name(os.getpid())
    for pid in other_runs(lab):
        print(f"live_bench: warning: another live_bench (pid {pid}) is running: its traffic and CPU disturb these "
              "figures", file=sys.stderr, flush=True)
    lab_up(lab)
    runs: dict[str, list[dict[str, float]]] = {}
    failed: list[str] = []
    loads: dict[str, str] = {"start": _load()}
    ipv6 = IPV6["on"]
    print(f"live_bench: load average {loads['start']} at the start; TCP congestion control "
          f"{args.cc or 'the host default'} (host default {_host_cc()})", flush=True)
    try:
        for round_no in range(1, max(1, args.repeat) + 1):
            if args.repeat > 1:
                print(f"live_bench: round {round_no} of {args.repeat}", flush=True)
            one_round(lab, args, gateways, runs, failed, loads)
            IPV6["on"] = ipv6
    finally:
        run(["ip", "netns", "list"], check=False)
        lab_down(lab)
    results = {side: median_of(side_runs) for side, side_runs in runs.items()}
    report(results, loads, runs)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "rounds": runs, "load": loads, "builds": BUILDS,
                                               "tcp_cc": args.cc or _host_cc(),
                                               "argv": sys.argv[1:]}, indent=1) + "\n")
    return 1 if failed else 0


def _sides(text: str) -> list[str]:
    """--only's value: sides of SIDES, comma-separated."""
    sides = [side for side in text.split(",") if side]
    bad = [side for side in sides if side not in SIDES]
    if bad or not sides:
        raise argparse.ArgumentTypeError(f"not a side: {','.join(bad) or text!r} (sides: {', '.join(SIDES)})")
    return sides


def _named(args: argparse.Namespace, side: str) -> bool:
    """Did --only name `side`?"""
    return args.only is not None and side in args.only


def median_of(side_runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over a side's rounds."""
    return {key: statistics.median(r[key] for r in side_runs) for key in side_runs[0]}


def one_round(lab: Lab, args: argparse.Namespace, gateways: list[tuple[str, list[str], dict[str, str]]],
              runs: dict[str, list[dict[str, float]]], failed: list[str], loads: dict[str, str]) -> None:
    """Every side once, in SIDES order, each figure measured once; appended to `runs`. The rounds interleave
    the sides, so that a machine that drifts (a shared host: steal time, turbo) drifts under all of them
    alike: run side by side, each side's repeats together, the kernel's were all measured first, and the
    ratios moved with the drift. A side that fails is not measured again (`failed`)."""
    if args.only is None or "kernel" in args.only:
        natbox_mode(lab)  # from an earlier round's last side
        kernel_mode(lab)
        runs.setdefault("kernel", []).append(measure(lab, args.time))
        loads["kernel"] = _load()
        print("kernel:", runs["kernel"][-1], f"(load average {loads['kernel']})", flush=True)
    for side, argv, environ in gateways:
        if side in failed:
            continue
        natbox_mode(lab)
        res = run_side(lab, side, argv, args.time, "ready:", environ)
        if res is None:  # did not start (said on stderr): the other sides are still measured
            failed.append(side)
            continue
        runs.setdefault(side, []).append(res)
        loads[side] = _load()
    if "bare" not in failed and (_named(args, "bare") or (args.only is None and not args.no_bare)):
        natbox_mode(lab)
        client_mac, server_mac = bare_mode(lab)
        IPV6["on"] = False  # the bare forwarder answers no ND
        res = run_side(lab, "bare", [sys.executable, str(ROOT / "bench" / "bare_forwarder.py"), "lan0", client_mac,
                                     "wan0", server_mac, str(10 * args.time + 60)], args.time, None)
        if res is None:
            failed.append("bare")
        else:
            runs.setdefault("bare", []).append(res)
            loads["bare"] = _load()


def gateway_runs(args: argparse.Namespace) -> list[tuple[str, list[str], dict[str, str]]] | None:
    """The natbox gateways to measure, in order: (column, argv, environment), each named
    with its `natbox --version`; None (and a line on stderr) when --compiled is not a compiled build."""
    runs = []
    for side, offload, compiled in GATEWAYS:
        skipped = args.no_offload_new if offload == "--offload-new" else args.no_offload
        named = _named(args, side)
        if (args.only is not None and not named) or (offload and skipped and not named):
            continue
        if compiled and not args.compiled:
            if named:
                print(f"live_bench: {side} needs --compiled VENV", file=sys.stderr)
                return None
            continue
        python, environ = (compiled_python(args.compiled), compiled_env()) if compiled else (sys.executable, env())
        version = BUILDS[side] = build_of(python, environ)
        print(f"live_bench: {side}: {version} ({python})", flush=True)
        if compiled and "compiled" not in version:
            print(f"live_bench: {args.compiled} is not a compiled build of natbox: {version}", file=sys.stderr)
            return None
        host = str(EXAMPLES / ("basic-gw.toml" if args.no_ipv6 else "basic6-gw.toml"))
        prog = [sys.executable, "-c", PATCH] if args.patched_csum and side == "natbox" else [python, "-m",
                                                                                             "natbox.cli.gateway"]
        runs.append((side, [*prog, host, *([offload] if offload else []), *args.gateway_arg], environ))
    return runs


if __name__ == "__main__":
    sys.exit(main())
