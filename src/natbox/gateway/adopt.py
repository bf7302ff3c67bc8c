"""--adopt: take over the router the kernel runs in this namespace, and give it back afterwards.

natbox snapshots the namespace (interfaces, addresses, routes, sysctls, `iptables-save -c`, and the IPv6
side: addresses, `ip -6 route`, net.ipv6.conf.all.forwarding, `ip6tables-save -c`), withdraws the addresses
and forwarding from the kernel so that only natbox answers, runs the gateway on that snapshot, and gives
everything back to the kernel when natbox stops, whatever the reason.

IPv4: the kernel's addresses on the adopted devices are flushed (so it answers no ARP for them) and
net.ipv4.ip_forward is 0. IPv6: net.ipv6.conf.all.forwarding is 0 (`ip6_forward` drops, ipv6-semantics.md
§1.3) and each adopted device gets net.ipv6.conf.DEV.disable_ipv6=1: `ipv6_rcv` then drops every IPv6
packet on it (`idev->cnf.disable_ipv6`) and `addrconf_ifdown` removes all its addresses, link-local ones
included, and their solicited-node memberships, so the kernel sends no NA, no ICMPv6 error, no MLD report
and no Router Solicitation there; natbox alone answers Neighbour Discovery (engine/ndisc.py) for every
address of the snapshot (link-local ones too) and resolves its next hops by NS. AF_PACKET sees and sends
the frames regardless (packet_rcv sits before ipv6_rcv, dev_queue_xmit after the IPv6 stack). Giving
back sets disable_ipv6 to what it was (the kernel regenerates the link-local addresses), the forwarding
sysctls, then the global addresses and the routes.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from natbox.adapters.snapshot import take_snapshot
from natbox.gateway.config import GatewayConfig
from natbox.gateway.kernel import read_sysctl, write_sysctl
from natbox.gateway.log import ERR, say

__all__ = ["Withdrawn", "run_adopted"]

IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
IPV6_CONF = "/proc/sys/net/ipv6/conf/{}/{}"  # device ("all" too), knob


def _routes(family: str) -> list[str]:
    """`ip -4|-6 route show table main|default` lines that the kernel did not make itself (connected
    prefixes, fe80::/64 and multicast routes come back with the addresses)."""
    routes = []
    for table in ("main", "default"):
        out = subprocess.run(["ip", family, "route", "show", "table", table], capture_output=True, text=True,
                             check=False).stdout
        routes += [f"{line} table {table}" for line in out.splitlines() if line and "proto kernel" not in line]
    return routes


@dataclass
class Withdrawn:
    """What --adopt took from the kernel, to give it back: addresses, the routes that go with them,
    net.ipv4.ip_forward, and the IPv6 side (global addresses, routes, the forwarding sysctls and each
    adopted device's disable_ipv6)."""

    addresses: list[tuple[str, str]]  # (device, a.b.c.d/len), in the kernel's order
    routes: list[str]  # `ip -4 route show table main|default` lines that the kernel did not make itself
    ip_forward: str
    addresses6: list[tuple[str, str]] = field(default_factory=list)  # (device, addr/len), not link-local
    routes6: list[str] = field(default_factory=list)  # `ip -6 route show ...` lines, as `routes`
    ipv6_forward: str = "0"  # net.ipv6.conf.all.forwarding
    ipv6_devices: dict[str, tuple[str, str]] = field(default_factory=dict)  # dev: (disable_ipv6, forwarding)

    @property
    def devices(self) -> list[str]:
        return sorted({dev for dev, _ in self.addresses} | {dev for dev, _ in self.addresses6})

    @staticmethod
    def capture(addr_json: object, skip: set[str]) -> Withdrawn:
        addresses: list[tuple[str, str]] = []
        addresses6: list[tuple[str, str]] = []
        ipv6_devices: dict[str, tuple[str, str]] = {}
        for link in addr_json if isinstance(addr_json, list) else []:
            if not isinstance(link, dict) or link.get("ifname") in skip or link.get("ifname") == "lo":
                continue
            dev = str(link["ifname"])
            infos = link.get("addr_info", [])
            infos = [a for a in (infos if isinstance(infos, list) else []) if isinstance(a, dict)]
            addresses += [(dev, f"{a['local']}/{a['prefixlen']}") for a in infos if a.get("family") == "inet"]
            addresses6 += [(dev, f"{a['local']}/{a['prefixlen']}") for a in infos
                           if a.get("family") == "inet6" and a.get("scope") != "link"]
            disabled = read_sysctl(IPV6_CONF.format(dev, "disable_ipv6"))
            if disabled == "0":  # IPv6 on: the kernel would answer ND and forward there
                ipv6_devices[dev] = (disabled, read_sysctl(IPV6_CONF.format(dev, "forwarding")) or "0")
        ipv6_forward = (read_sysctl(IPV6_CONF.format("all", "forwarding")) or "0").strip()
        return Withdrawn(addresses, _routes("-4"), (read_sysctl(IP_FORWARD) or "0").strip(), addresses6,
                         _routes("-6") if ipv6_devices else [], ipv6_forward, ipv6_devices)

    def withdraw(self) -> None:
        for dev in sorted({dev for dev, _ in self.addresses}):
            subprocess.run(["ip", "-4", "addr", "flush", "dev", dev], capture_output=True, check=False)
        write_sysctl(IP_FORWARD, "0")
        if self.ipv6_devices:
            write_sysctl(IPV6_CONF.format("all", "forwarding"), "0")
        for dev in self.ipv6_devices:
            write_sysctl(IPV6_CONF.format(dev, "disable_ipv6"), "1")

    def give_back(self) -> None:
        for dev, prefix in self.addresses:
            subprocess.run(["ip", "addr", "add", prefix, "dev", dev], capture_output=True, check=False)
        for route in self.routes:
            subprocess.run(["ip", "route", "add", *route.split()], capture_output=True, check=False)
        write_sysctl(IP_FORWARD, self.ip_forward)
        if not self.ipv6_devices:
            return
        for dev, (disabled, _) in self.ipv6_devices.items():
            write_sysctl(IPV6_CONF.format(dev, "disable_ipv6"), disabled)
        write_sysctl(IPV6_CONF.format("all", "forwarding"), self.ipv6_forward)  # sets every device's too
        for dev, (_, forwarding) in self.ipv6_devices.items():
            write_sysctl(IPV6_CONF.format(dev, "forwarding"), forwarding)
        for dev, prefix in self.addresses6:
            subprocess.run(["ip", "-6", "addr", "add", prefix, "dev", dev, "nodad"], capture_output=True,
                           check=False)  # nodad: usable at once, as before the adoption
        for route in self.routes6:
            subprocess.run(["ip", "-6", "route", "add", *route.split()], capture_output=True, check=False)


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
            f"(ip_forward was {saved.ip_forward})"
            + (f"; IPv6 on {', '.join(saved.ipv6_devices)} (net.ipv6.conf.all.forwarding was "
               f"{saved.ipv6_forward})" if saved.ipv6_devices else ""))
        try:
            return run(cfg)
        finally:
            saved.give_back()
            say("--adopt: addresses, routes and forwarding given back to the kernel")
