#!/usr/bin/env python3
"""Benchmark `natbox replay`: packets per second of a replay next to the engine alone.

    python bench/replay_bench.py [--packets 1000000] [--flows 1000] [--keep DIR]

Generates a capture pair (eth0: LAN clients' UDP requests, eth1: the server's replies to the masqueraded
address) of --packets packets through a MASQUERADE gateway, then measures, on the same packets:

1. engine alone: `engine.receive(frame, iface, now)` in a loop over frames already in memory;
2. replay, driver only: reading both pcaps, merging by time, feeding the engine (no output sinks);
3. replay with --out: the full `natbox replay --out DIR` (per-interface pcaps, events, conntrack...);
4. the same with --jsonl (packets.jsonl too).

A script, not a test (minutes at the default size).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from natbox.adapters.pcap import CaptureReader, PcapWriter
from natbox.cli.replay import ReplayOptions, load_host_file, run
from natbox.engine.engine import Engine
from natbox.replay.driver import Replayer, Source
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ethernet, ipv4, udp

HOST = """\
name = "bench"
ip_forward = true

[[interface]]
name = "eth0"
mac = "02:00:00:00:00:01"
addresses = ["192.168.0.1/16"]

[[interface]]
name = "eth1"
mac = "02:00:00:00:01:01"
addresses = ["198.51.100.1/24"]

[[neighbour]]
dev = "eth1"
addr = "198.51.100.10"
mac = "02:00:00:00:fe:fe"

[rules]
text = '''
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o eth1 -j MASQUERADE
COMMIT
'''
"""
GW0 = bytes.fromhex("020000000001")
GW1 = bytes.fromhex("020000000101")
SERVER_MAC = bytes.fromhex("02000000fefe")
SERVER = 0xC633640A  # 198.51.100.10
PUBLIC = 0xC6336401  # 198.51.100.1
STEP = 0.00001  # seconds between packets (100,000 packets/s of capture time)


def flow_frames(flows: int) -> list[tuple[bytes, bytes]]:
    """(request on eth0, reply on eth1) for each flow: client 192.168.(f>>8).(f&255)+1, sport 10000+f."""
    out = []
    for f in range(flows):
        client = 0xC0A80000 | ((f >> 8) << 8) | ((f & 0xFF) + 1) if f & 0xFF != 0xFF else 0xC0A80000 | (f >> 8) << 8 | 2
        sport = 10000 + f
        cmac = b"\x02\x42" + client.to_bytes(4, "big")
        req = ipv4.build_ipv4(client, SERVER, 17, udp.build_udp(client, SERVER, sport, 53, b"q" * 32), ttl=64)
        rep = ipv4.build_ipv4(SERVER, PUBLIC, 17, udp.build_udp(SERVER, PUBLIC, 53, sport, b"r" * 64), ttl=60)
        out.append((bytes(ethernet.build_ethernet(GW0, cmac, ethernet.ETH_P_IP, req)),
                    bytes(ethernet.build_ethernet(GW1, SERVER_MAC, ethernet.ETH_P_IP, rep))))
    return out


def packets(n: int, frames: list[tuple[bytes, bytes]]) -> Iterator[tuple[float, str, bytes]]:
    """Requests and replies alternating per flow round: round r sends every flow's request (r even) or
    reply (r odd)."""
    flows = len(frames)
    t = 1_700_000_000.0
    for i in range(n):
        rnd, f = divmod(i, flows)
        t += STEP
        if rnd & 1:
            yield t, "eth1", frames[f][1]
        else:
            yield t, "eth0", frames[f][0]


def make_engine(host_path: str, *, events: bool = False) -> Engine:
    hf = load_host_file(host_path)
    rs = Ruleset()
    rs.restore(parse_restore(hf.host.rules_text, file="bench"))
    return Engine(hf.host, ruleset=rs, seed=1, events=events)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--flows", type=int, default=1000)
    ap.add_argument("--keep", metavar="DIR", help="keep the generated captures and outputs in DIR")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="natbox-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    host = work / "host.toml"
    host.write_text(HOST)
    frames = flow_frames(args.flows)

    t0 = time.perf_counter()
    with PcapWriter(work / "eth0.pcap", nanosecond=True) as w0, PcapWriter(work / "eth1.pcap", nanosecond=True) as w1:
        for ts, iface, frame in packets(args.packets, frames):
            (w0 if iface == "eth0" else w1).write(frame, ts=ts)
    print(f"generated {args.packets:,} packets ({args.flows} flows) in {time.perf_counter() - t0:.1f} s "
          f"({(work / 'eth0.pcap').stat().st_size + (work / 'eth1.pcap').stat().st_size:,} bytes)")

    engine = make_engine(str(host))
    t0 = time.perf_counter()
    for ts, iface, frame in packets(args.packets, frames):
        engine.receive(frame, iface, ts)
    alone = time.perf_counter() - t0
    print(f"engine alone (frames in memory):  {args.packets / alone:>10,.0f} packets/s  ({alone:.1f} s)")

    engine = make_engine(str(host))
    rep = Replayer(engine, [Source("eth0.pcap", "eth0"), Source("eth1.pcap", "eth1")])
    t0 = time.perf_counter()
    with CaptureReader(work / "eth0.pcap") as r0, CaptureReader(work / "eth1.pcap") as r1:
        rep.run([r0, r1])
    driver = time.perf_counter() - t0
    print(f"replay, driver only (no outputs): {rep.packets / driver:>10,.0f} packets/s  ({driver:.1f} s, "
          f"{rep.fed:,} replayed)")

    opts = ReplayOptions(host=str(host), inputs=[("eth0", str(work / "eth0.pcap")), ("eth1", str(work / "eth1.pcap"))],
                         out=str(work / "out"))
    err = io.StringIO()
    t0 = time.perf_counter()
    run(opts, stdout=io.StringIO(), stderr=err)
    full = time.perf_counter() - t0
    print(f"natbox replay --out DIR:          {args.packets / full:>10,.0f} packets/s  ({full:.1f} s)")
    opts.out, opts.jsonl = str(work / "out-jsonl"), True
    t0 = time.perf_counter()
    run(opts, stdout=io.StringIO(), stderr=err)
    full = time.perf_counter() - t0
    print(f"natbox replay --out DIR --jsonl:  {args.packets / full:>10,.0f} packets/s  ({full:.1f} s)")
    if not args.keep:
        for p in sorted(work.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        os.rmdir(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
