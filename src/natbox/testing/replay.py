"""Helpers of the replay tests: a MASQUERADE gateway written as a host file, Lab traffic recorded as pcaps,
and running the CLI in-process."""

from __future__ import annotations

import io
from pathlib import Path

from natbox.adapters.pcap import PcapWriter
from natbox.cli.replay import load_host_file, main_for
from natbox.engine.engine import Engine
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.sim.lab import CapturedFrame, Lab

CLIENT_MAC = "02:00:00:00:50:02"
SERVER_MAC = "02:00:00:00:fe:fe"

# eth0: LAN 192.168.50.0/24, eth1: uplink 198.51.100.0/24; the server's MAC is known (a warm ARP cache), so
# an offline replay sends to the same MAC the lab's pre-resolved neighbour table gives.
GATEWAY_TOML = f"""\
name = "gw"
ip_forward = true

[[interface]]
name = "eth0"
mac = "02:00:00:00:00:01"
addresses = ["192.168.50.1/24"]

[[interface]]
name = "eth1"
mac = "02:00:00:00:01:01"
addresses = ["198.51.100.1/24"]

[[neighbour]]
dev = "eth1"
addr = "198.51.100.10"
mac = "{SERVER_MAC}"

[[neighbour]]
dev = "eth0"
addr = "192.168.50.2"
mac = "{CLIENT_MAC}"

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


def write_gateway(tmp: Path) -> Path:
    p = tmp / "gw.toml"
    p.write_text(GATEWAY_TOML)
    return p


def run_lab(host_path: Path) -> Lab:
    """A client pings the server once and sends one UDP datagram to its echo port, through the gateway."""
    hf = load_host_file(str(host_path))
    ruleset = Ruleset()
    ruleset.restore(parse_restore(hf.host.rules_text, file="gw"))
    engine = Engine(hf.host, ruleset=ruleset, seed=1)
    lab = Lab(hf.host, engine, seed=1, start=1_700_000_000.0)
    client = lab.add_host("client", "eth0", "192.168.50.2/24", gateway="192.168.50.1", mac=CLIENT_MAC)
    server = lab.add_host("server", "eth1", "198.51.100.10/24", mac=SERVER_MAC)
    server.listen_udp[7] = None
    t0 = lab.now
    lab.at(t0, lambda: client.ping("198.51.100.10", ident=7, seq=1))
    lab.at(t0 + 1.0, lambda: client.udp_send("198.51.100.10", 7, b"hello", sport=40001))
    lab.run(until=t0 + 1.0003)
    return lab


def write_inputs(lab: Lab, tmp: Path) -> dict[str, Path]:
    """What arrived at the gateway on each interface, one pcap per interface."""
    paths: dict[str, Path] = {}
    for iface in ("eth0", "eth1"):
        p = paths[iface] = tmp / f"{iface}.in.pcap"
        with PcapWriter(p, nanosecond=True) as w:
            for cap in lab.on(iface):
                if cap.direction == "in":
                    w.write(cap.frame, ts=cap.time)
    return paths


def lab_out(lab: Lab, iface: str) -> list[CapturedFrame]:
    return [c for c in lab.on(iface) if c.direction == "out"]


def cli(argv: list[str], *, explain: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    prog = "natbox explain" if explain else "natbox replay"
    code = main_for(argv, prog=prog, explain_cmd=explain, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()
