"""The example captures shipped in examples/: lan.pcap, wan.pcap and both.pcapng.

They are what the gateway of examples/masquerade-host.toml receives while examples/masquerade-scenario.toml
runs in natbox's simulator (a LAN client pings, resolves a name, fetches a page, uses UDP echo, hits closed
ports): `lan.pcap` what arrives on eth0, `wan.pcap` what arrives on eth1 (the replies, addressed to the
ports natbox's MASQUERADE chose with seed 1), `both.pcapng` the two in one file with interface names eth0
and eth1, `client-side.pcap` both directions on eth0, as a capture taken on the LAN (or on the client)
holds them. Replaying them through the same host gives the scenario's result again:

    natbox replay --host examples/masquerade-host.toml --in eth0=examples/lan.pcap --in eth1=examples/wan.pcap
    natbox replay --host examples/masquerade-host.toml --in examples/both.pcapng
    natbox replay --host examples/masquerade-host.toml --in eth0=examples/client-side.pcap --lan-net 192.168.50.0/24

Deterministic (simulated time, seeded choices, fixed timestamps from START): `python -m natbox.demos.captures
examples/` rewrites them byte for byte; tests/demos checks that the shipped files are current.
"""

from __future__ import annotations

import sys
from pathlib import Path

from natbox.adapters.pcap import PcapngWriter, PcapWriter
from natbox.adapters.snapshot import load_host
from natbox.engine.engine import Engine
from natbox.engine.hostfile6 import rules6_ruleset
from natbox.files import read_text
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.sim.lab import Lab
from natbox.sim.scenario import parse_scenario

__all__ = ["CAPTURES", "START", "write_example_captures"]

START = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC: the captures' time 0
CAPTURES = {"lan.pcap": "eth0", "wan.pcap": "eth1", "both.pcapng": "", "client-side.pcap": "eth0 both ways"}
HOST = "masquerade-host.toml"
SCENARIO = "masquerade-scenario.toml"


def write_example_captures(examples: Path, dest: Path | None = None) -> list[Path]:
    """Run examples/masquerade-scenario.toml through examples/masquerade-host.toml and write what the host
    received as the CAPTURES files in `dest` (default: `examples`). Returns the paths written."""
    dest = examples if dest is None else dest
    hf = load_host(examples / HOST)
    ruleset = Ruleset()
    ruleset.restore(parse_restore(hf.host.rules_text, file=hf.host.rules_origin))
    scenario = parse_scenario(read_text(examples / SCENARIO), SCENARIO)
    engine = Engine(hf.host, ruleset=ruleset, ruleset6=rules6_ruleset(hf.host.rules6_text, hf.rules6_origin),
                    seed=scenario.seed)
    engine.listeners = set(hf.listen)
    lab = Lab(hf.host, engine, seed=scenario.seed)
    scenario.install(lab)
    lab.run(until=scenario.end_time)
    received = [c for c in lab.captures if c.direction == "in"]
    written: list[Path] = []
    for name, iface in CAPTURES.items():
        path = dest / name
        if iface == "eth0 both ways":  # what a capture on the LAN link (or on the client) holds
            with PcapWriter(path) as w:
                for cap in lab.captures:
                    if cap.iface == "eth0":
                        w.write(cap.frame, ts=START + cap.time)
        elif iface:
            with PcapWriter(path) as w:
                for cap in received:
                    if cap.iface == iface:
                        w.write(cap.frame, ts=START + cap.time)
        else:
            with PcapngWriter(path, nanosecond=False) as ng:
                for name_ in ("eth0", "eth1"):
                    ng.add_interface(name_)
                for cap in received:
                    ng.write(cap.frame, interface=cap.iface, ts=START + cap.time)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_example_captures(Path(sys.argv[1] if len(sys.argv) > 1 else "examples")):
        print(p)
