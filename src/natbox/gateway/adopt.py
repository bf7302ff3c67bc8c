"""--adopt: take over the router the kernel runs in this namespace, and give it back afterwards.

natbox snapshots the namespace (interfaces, addresses, routes, sysctls, `iptables-save -c`), withdraws
the addresses and forwarding from the kernel so that only natbox answers, runs the gateway on that
snapshot, and gives everything back to the kernel when natbox stops, whatever the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from natbox.adapters.snapshot import take_snapshot
from natbox.gateway.config import GatewayConfig
from natbox.gateway.kernel import read_sysctl, write_sysctl
from natbox.gateway.log import ERR, say

__all__ = ["Withdrawn", "run_adopted"]

IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


@dataclass
class Withdrawn:
    """What --adopt took from the kernel, to give it back: addresses, the routes that go with them, and
    net.ipv4.ip_forward."""

    addresses: list[tuple[str, str]]  # (device, a.b.c.d/len), in the kernel's order
    routes: list[str]  # `ip -4 route show table main|default` lines that the kernel did not make itself
    ip_forward: str

    @property
    def devices(self) -> list[str]:
        return sorted({dev for dev, _ in self.addresses})

    @staticmethod
    def capture(addr_json: object, skip: set[str]) -> Withdrawn:
        addresses: list[tuple[str, str]] = []
        for link in addr_json if isinstance(addr_json, list) else []:
            if not isinstance(link, dict) or link.get("ifname") in skip or link.get("ifname") == "lo":
                continue
            infos = link.get("addr_info", [])
            addresses += [(str(link["ifname"]), f"{a['local']}/{a['prefixlen']}")
                          for a in (infos if isinstance(infos, list) else [])
                          if isinstance(a, dict) and a.get("family") == "inet"]
        routes = []
        for table in ("main", "default"):
            out = subprocess.run(["ip", "-4", "route", "show", "table", table], capture_output=True, text=True,
                                 check=False).stdout
            routes += [f"{line} table {table}" for line in out.splitlines() if line and "proto kernel" not in line]
        ip_forward = (read_sysctl(IP_FORWARD) or "0").strip()
        return Withdrawn(addresses, routes, ip_forward)

    def withdraw(self) -> None:
        for dev in self.devices:
            subprocess.run(["ip", "-4", "addr", "flush", "dev", dev], capture_output=True, check=False)
        write_sysctl(IP_FORWARD, "0")

    def give_back(self) -> None:
        for dev, prefix in self.addresses:
            subprocess.run(["ip", "addr", "add", prefix, "dev", dev], capture_output=True, check=False)
        for route in self.routes:
            subprocess.run(["ip", "route", "add", *route.split()], capture_output=True, check=False)
        write_sysctl(IP_FORWARD, self.ip_forward)


def _links(tmp: str) -> tuple[list[dict[str, object]], object]:
    with open(os.path.join(tmp, "link.json"), encoding="utf-8") as f:
        links = json.load(f)
    with open(os.path.join(tmp, "addr.json"), encoding="utf-8") as f:
        addrs = json.load(f)
    return [link for link in links if isinstance(link, dict)] if isinstance(links, list) else [], addrs


def run_adopted(cfg: GatewayConfig, run: Callable[[GatewayConfig], int]) -> int:
    """Snapshot this namespace's router, withdraw it from the kernel, `run(cfg)` on the snapshot, give it
    back. A router whose kernel does not forward (ip_forward=0) is adopted as it is, with a warning:
    natbox then forwards nothing either, as the kernel did not."""
    with tempfile.TemporaryDirectory(prefix="natbox-adopt-") as tmp:
        try:
            take_snapshot(tmp)
            links, addrs = _links(tmp)
        except (OSError, ValueError, RecursionError) as exc:
            say(f"--adopt: cannot read this namespace's setup: {exc}", ERR)
            return 1
        cfg.not_owned = {str(link["ifname"]) for link in links if link.get("master")}  # bridge ports
        saved = Withdrawn.capture(addrs, cfg.not_owned)
        cfg.host_file = tmp
        if saved.ip_forward != "1":
            say(f"warning: --adopt: net.ipv4.ip_forward={saved.ip_forward or '?'} in this namespace: the adopted "
                "router forwards nothing (only traffic to and from its own addresses); set net.ipv4.ip_forward=1 "
                "before --adopt to route")
        saved.withdraw()
        say(f"--adopt: took {', '.join(saved.devices) or 'nothing'} from the kernel "
            f"(ip_forward was {saved.ip_forward})")
        try:
            return run(cfg)
        finally:
            saved.give_back()
            say("--adopt: addresses, routes and forwarding given back to the kernel")
