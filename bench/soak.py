"""Soak benchmark: the live gateway for ten minutes under churn, reloads, flushes and control-socket abuse.

    sudo python bench/soak.py [--minutes 10] [--rate 40] [--flush-every 30]

Topology: src/natbox/lab/examples/basic.toml (lab "nbsoak"): client 10.0.1.2 -- gw (natbox gateway
basic-gw.toml, MASQUERADE) -- server 198.51.100.2, in network namespaces this script creates and deletes.
While it runs:

* churn: the client opens short TCP connections (connect, 64 bytes each way, close) and short UDP flows
  (a new source port each, one datagram each way) at --rate of each per second, to a server that echoes;
* ping: the client pings the server every 0.2 s the whole time (the latency a user of the NAT feels);
* every 30 s (--flush-every): `conntrack -F` through the control socket; half way between two flushes a
  SIGHUP reload of the host file (apart, so a failure can be told to follow one or the other);
* abuse of the control socket, a few clients at a time: half-open requests, a slowloris (a byte a second),
  deeply nested JSON, an oversized request, idle connections, an `-E` subscriber that never reads.

Printed at the end: the gateway's RSS after warm-up (WARM_UP: 2 minutes, at most half the run) and at the
end (each the peak of a minute, PEAK_WINDOW), with their ratio (aim: flat within 5 %) and the series every
30 s; connections and UDP exchanges completed and failed (aim: 0 failed); ping percentiles and loss; how
many flushes, reloads and abusive clients there were. Each failed exchange is listed with its time and
the nearest flush or reload.

An exchange in flight when `conntrack -F` runs is reported as "raced a flush", apart from the failures:
Linux loses it too. The flush takes the ct away between the request and the reply, so the reply is not
un-NATed and reaches the router itself: UDP earns the server a port unreachable and the client never gets
its answer; TCP's next segment from the server is picked up as a new connection to the router, which
resets it, and then either the client's retransmission (picked up again, MASQUERADEd to the same port) is
reset by the server (ConnectionResetError about 0.2 s in: one RTO), or the client, its request already
acknowledged, waits for an answer that never comes (TimeoutError after 3 s; its FIN then creates no ct
and leaves un-NATed). tests/live/test_gateway_live.py shows it on the kernel and on natbox for UDP
(test_a_flush_between_request_and_reply_loses_the_reply_on_the_kernel_as_on_natbox), and
scenarios/conntrack-flush-udp-in-flight.toml, conntrack-flush-tcp-in-flight.toml and
conntrack-flush-tcp-answer-lost.toml (`natbox difftest`, also --live) give both routers the same packets.
"In flight" is: a flush began no later than RACE_WINDOW after the exchange began and ended no earlier
than it began. A reload never counts: it keeps every ct, as on Linux
(test_a_reload_between_request_and_reply_keeps_the_exchange).

Every loop is bounded in time; the namespaces are deleted at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))

from natbox.lab.builder import lab_down, lab_up  # noqa: E402
from natbox.lab.model import Lab, parse_lab_toml  # noqa: E402

EXAMPLES = SRC / "natbox" / "lab" / "examples"
SERVER = "198.51.100.2"
# With the control-socket abuse running, the gateway's RSS climbs about 7 MiB in its first two minutes and then
# stays (72.6 MiB at 30 s, 79.3 at 120 s, 79.4 at 240 s); without the abusive clients it is flat from 30 s
# (67.1 -> 67.9 MiB at 210 s). Measured at 60 s (a tenth of 10 minutes), it read as 7 % of growth.
WARM_UP = 120.0
# RSS also moves by up to 6 MiB from one sample to the next, down as well as up (74.1 MiB at 120 s, 78.6 at
# 150 s, 74.2 at 210 s in one run), so one sample against another compares that noise: the soak compares the
# peak of the minute after the warm-up with the peak of the last minute (a leak raises the peaks).
PEAK_WINDOW = 60.0
RACE_WINDOW = 0.5  # s: an exchange crosses the gateway in about a millisecond; a flush this close raced it

ECHO_SERVER = """
import selectors, socket
sel = selectors.DefaultSelector()
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("0.0.0.0", 7000))
t.listen(1024); t.setblocking(False); sel.register(t, selectors.EVENT_READ, "tcp")
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 7001)); u.setblocking(False)
sel.register(u, selectors.EVENT_READ, "udp")
print("listening", flush=True)
while True:
    for key, _ in sel.select(1.0):
        if key.data == "tcp":
            try:
                c, _ = t.accept()
            except BlockingIOError:
                continue
            c.setblocking(False); sel.register(c, selectors.EVENT_READ, "conn")
        elif key.data == "udp":
            try:
                data, addr = u.recvfrom(2048); u.sendto(data, addr)
            except BlockingIOError:
                pass
        else:
            c = key.fileobj
            try:
                data = c.recv(2048)
            except (BlockingIOError, ConnectionError):
                data = b""
            if data:
                try:
                    c.send(data)
                except OSError:
                    pass
            else:
                sel.unregister(c); c.close()
"""

CHURN_CLIENT = """
import socket, sys, time
seconds, rate, server = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
tcp_ok = tcp_failed = udp_ok = udp_failed = 0
start = time.monotonic(); end = start + seconds; i = 0
def failed(kind, t0, why, sock):  # CLOCK_MONOTONIC is the same in every network namespace: the soak compares times
    try:
        port = sock.getsockname()[1]
    except OSError:
        port = 0
    print("fail", kind, repr(t0), repr(time.monotonic()), why.replace(" ", "_"), port, flush=True)
while time.monotonic() < end:
    due = start + i / rate
    pause = due - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    i += 1
    s = socket.socket(); s.settimeout(3.0)
    t0 = time.monotonic()
    try:
        s.connect((server, 7000)); s.sendall(b"x" * 64); got = b""
        while len(got) < 64:
            chunk = s.recv(64 - len(got))
            if not chunk:
                break
            got += chunk
        if len(got) == 64:
            tcp_ok += 1
        else:
            tcp_failed += 1
            failed("tcp", t0, f"short:{len(got)}", s)
    except OSError as exc:
        tcp_failed += 1
        failed("tcp", t0, type(exc).__name__, s)
    finally:
        s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3.0)
    t0 = time.monotonic()
    try:
        u.sendto(b"y" * 32, (server, 7001)); data, _ = u.recvfrom(64)
        udp_ok += data == b"y" * 32
        if data != b"y" * 32:
            udp_failed += 1
            failed("udp", t0, "wrong-data", u)
    except OSError as exc:
        udp_failed += 1
        failed("udp", t0, type(exc).__name__, u)
    finally:
        u.close()
print(tcp_ok, tcp_failed, udp_ok, udp_failed, flush=True)
"""


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(SRC) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def netns_popen(lab: Lab, node: str, *argv: str, stdout: int | None = None,
                stderr: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", lab.netns(node), *argv], text=True, env=env(), stdout=stdout,
                            stderr=stderr)


def rss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def control(path: str, request: bytes, timeout: float = 10.0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


class Abuser:
    """Misbehaving control clients, a few at a time, each closed after a while (all bounded in time)."""

    def __init__(self, path: str, end: float) -> None:
        self.path, self.end = path, end
        self.made = 0
        self.errors = 0

    def _client(self, kind: str) -> None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5.0)
                s.connect(self.path)
                self.made += 1
                if kind == "half-open":
                    s.sendall(b'{"cmd": "conntrack", "argv": ["-L"')
                    time.sleep(3.0)
                elif kind == "slowloris":
                    for b in b'{"cmd": "stats"}'[:8]:
                        s.sendall(bytes([b]))
                        time.sleep(1.0)
                elif kind == "nested":
                    s.sendall(b'{"a":' + b"[" * 100_000)
                    s.shutdown(socket.SHUT_WR)
                    s.recv(4096)
                elif kind == "oversized":
                    with contextlib.suppress(OSError):
                        s.sendall(b" " * (5 * 1024 * 1024))
                elif kind == "idle":
                    time.sleep(4.0)
                elif kind == "events":  # subscribe and never read
                    s.sendall(json.dumps({"cmd": "conntrack", "argv": ["-E"]}).encode())
                    s.shutdown(socket.SHUT_WR)
                    time.sleep(6.0)
        except OSError:
            self.errors += 1

    def run(self) -> None:
        kinds = ["half-open", "slowloris", "nested", "oversized", "idle", "events"]
        i = 0
        while time.monotonic() < self.end - 10:
            threads = [threading.Thread(target=self._client, args=(kinds[(i + k) % len(kinds)],), daemon=True)
                       for k in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(15)
            i += 3
            time.sleep(2.0)


@dataclass(frozen=True)
class Failure:
    """One exchange the churn client saw fail: tcp or udp, when it began and ended (CLOCK_MONOTONIC), why."""

    kind: str
    t0: float
    t_end: float
    why: str
    sport: int  # the client's port (0 if it had none yet)


def raced_a_flush(f: Failure, events: list[tuple[float, float, str]]) -> bool:
    """Whether a `conntrack -F` ran while the exchange's packets were crossing the gateway."""
    return any(kind == "flush" and start <= f.t0 + RACE_WINDOW and stop >= f.t0 for start, stop, kind in events)


class Drain:
    """Read a process's output lines as they come, so it never blocks on a full pipe: ping prints a line per
    reply, and 64 KiB of them (about 1,050, 3.5 minutes at -i 0.2) would stop it until the end of the run;
    the gateway's stderr (a line per reload and per refused control client) would stop the gateway."""

    def __init__(self, proc: subprocess.Popen[str], stream: IO[str] | None = None) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._stream = stream if stream is not None else proc.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._stream is not None
        for line in self._stream:
            self.lines.append(line.rstrip("\n"))

    def wait(self, timeout: float) -> list[str]:
        """The lines, once the process has ended (or `timeout` passed)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        self._thread.join(5.0)
        return self.lines


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=40.0, help="new TCP connections and UDP flows per second")
    ap.add_argument("--flush-every", type=float, default=30.0, help="seconds between conntrack flushes (and "
                    "between reloads, which come half way between two flushes)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("soak: needs root (network namespaces)", file=sys.stderr)
        return 1
    seconds = args.minutes * 60
    lab = parse_lab_toml((EXAMPLES / "basic.toml").read_text(), str(EXAMPLES / "basic.toml"))
    lab.name = "nbsoak"
    lab_down(lab)
    lab_up(lab)
    sock = f"/run/natbox-soak-{os.getpid()}.sock"
    procs: list[subprocess.Popen[str]] = []
    try:
        gw = netns_popen(lab, "gw", sys.executable, "-m", "natbox", "gateway", str(EXAMPLES / "basic-gw.toml"),
                         "--control", sock, stderr=subprocess.PIPE)
        procs.append(gw)
        gw_lines = Drain(gw, gw.stderr)
        deadline = time.monotonic() + 30
        while not os.path.exists(sock) and time.monotonic() < deadline and gw.poll() is None:
            time.sleep(0.1)
        if not os.path.exists(sock):
            time.sleep(0.5)
            print("soak: the gateway did not start: " + " / ".join(gw_lines.lines[-5:]), file=sys.stderr)
            return 1
        server = netns_popen(lab, "server", sys.executable, "-c", ECHO_SERVER, stdout=subprocess.PIPE)
        procs.append(server)
        assert server.stdout is not None
        server.stdout.readline()
        start = time.monotonic()
        end = start + seconds
        ping = netns_popen(lab, "client", "ping", "-n", "-i", "0.2", "-W", "2", "-w", str(int(seconds)), SERVER,
                           stdout=subprocess.PIPE)
        procs.append(ping)
        churn = netns_popen(lab, "client", sys.executable, "-c", CHURN_CLIENT, str(seconds - 5), str(args.rate),
                            SERVER, stdout=subprocess.PIPE)
        procs.append(churn)
        ping_lines, churn_lines = Drain(ping), Drain(churn)
        abuser = Abuser(sock, end)
        threading.Thread(target=abuser.run, daemon=True).start()
        rss_samples: list[tuple[float, int]] = []
        events: list[tuple[float, float, str]] = []  # (start, end, "flush" | "reload") on CLOCK_MONOTONIC
        every = args.flush_every
        next_flush, next_reload = start + every, start + every * 1.5
        next_sample = start + 1.0
        while time.monotonic() < end and gw.poll() is None:
            time.sleep(max(0.0, min(next_sample, next_flush, next_reload) - time.monotonic()))
            now = time.monotonic()
            if now >= next_sample:
                next_sample += 1.0
                rss_samples.append((now - start, rss_kib(gw.pid)))
            if now >= next_flush:
                next_flush += every
                try:
                    control(sock, json.dumps({"cmd": "conntrack", "argv": ["-F"]}).encode())
                    events.append((now, time.monotonic(), "flush"))
                except OSError as exc:
                    print(f"soak: flush failed: {exc}", file=sys.stderr)
            if now >= next_reload:
                next_reload += every
                gw.send_signal(signal.SIGHUP)
                events.append((now, time.monotonic(), "reload"))
        flushes = sum(kind == "flush" for _, _, kind in events)
        reloads = sum(kind == "reload" for _, _, kind in events)
        rss_samples.append((time.monotonic() - start, rss_kib(gw.pid)))
        alive = gw.poll() is None
        if not alive:
            said = "\n".join(gw_lines.lines)
            print(f"soak: the gateway exited ({gw.returncode}):\n{said[-3000:]}", file=sys.stderr)
            churn.terminate()
            ping.terminate()
        churn_out = churn_lines.wait(max(0.0, end - time.monotonic()) + 30)
        ping_out = "\n".join(ping_lines.wait(max(0.0, end - time.monotonic()) + 30))
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        lab_down(lab)
        if os.path.exists(sock):
            os.unlink(sock)
    rtts = [float(m) for m in re.findall(r"time=([\d.]+) ms", ping_out)]
    sent = re.search(r"(\d+) packets transmitted, (\d+) received", ping_out)
    loss = (1 - int(sent.group(2)) / int(sent.group(1))) * 100 if sent and int(sent.group(1)) else float("nan")
    counts = churn_out[-1].split() if churn_out else []
    tcp_ok, tcp_failed, udp_ok, udp_failed = (int(x) for x in counts) if len(counts) == 4 else (0, -1, 0, -1)
    failures = [Failure(w[1], float(w[2]), float(w[3]), w[4], int(w[5]))
                for w in (ln.split() for ln in churn_out if ln.startswith("fail "))]
    raced = [f for f in failures if raced_a_flush(f, events)]
    for f in failures:
        near = min(events, key=lambda e: abs(e[0] - f.t0), default=None)
        where = f"{near[2]} at {near[0] - f.t0:+.3f} s" if near else "no flush or reload"
        print(f"failed {f.kind} exchange from port {f.sport} at {f.t0 - start:.3f} s ({f.why}, after "
              f"{f.t_end - f.t0:.3f} s; nearest: "
              f"{where}){' - raced a flush' if f in raced else ''}")
    tcp_raced = sum(f.kind == "tcp" for f in raced)
    udp_raced = sum(f.kind == "udp" for f in raced)
    tcp_failed -= tcp_raced
    udp_failed -= udp_raced
    print(f"gateway alive at the end: {alive}")
    every_30s = [f"{t:.0f}s:{kib / 1024:.1f}" for t, kib in rss_samples if int(t) % 30 == 0]
    print("RSS every 30 s (MiB): " + " ".join(every_30s))
    warm_at, window = min(WARM_UP, seconds / 2), min(PEAK_WINDOW, seconds / 4)
    rss_warm = max((kib for t, kib in rss_samples if warm_at <= t < warm_at + window), default=0)
    rss_end = max((kib for t, kib in rss_samples if t >= rss_samples[-1][0] - window), default=0)
    print(f"RSS (peak of {window:.0f} s): {rss_warm / 1024:.1f} MiB after warm-up, {rss_end / 1024:.1f} MiB at "
          f"the end, ratio {rss_end / rss_warm if rss_warm else float('nan'):.3f} (aim: within 5 %)")
    print(f"TCP connections: {tcp_ok} completed, {tcp_failed} failed, {tcp_raced} raced a flush; UDP exchanges: "
          f"{udp_ok} completed, {udp_failed} failed, {udp_raced} raced a flush")
    print(f"ping: {len(rtts)} replies, loss {loss:.1f} %, p50 {percentile(rtts, 50):.3f} ms, "
          f"p90 {percentile(rtts, 90):.3f} ms, p99 {percentile(rtts, 99):.3f} ms, max {max(rtts, default=0):.3f} ms, "
          f"mean {statistics.fmean(rtts) if rtts else float('nan'):.3f} ms")
    warned = [ln for ln in gw_lines.lines if ln.removeprefix("natbox gateway: ").startswith(("warning", "error"))]
    print(f"gateway stderr: {len(gw_lines.lines)} lines, {len(warned)} warnings or errors"
          + (f" (the first: {warned[0][:200]})" if warned else ""))
    print(f"flushes {flushes}, reloads {reloads}, abusive control clients {abuser.made} "
          f"({abuser.errors} refused or cut off)")
    steady = rss_warm and abs(rss_end / rss_warm - 1) <= 0.05
    return 0 if alive and steady and tcp_failed == 0 and udp_failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
