"""What the kernel of this namespace does on the interfaces natbox is to own, and the rules that make
natbox refuse to start when the kernel would fight it (answer ARP for natbox's addresses, route its
traffic a second time)."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Sequence

from natbox.engine.host import Host, Interface
from natbox.gateway.config import GatewayConfig
from natbox.gateway.log import ERR, say
from natbox.wire.ipv6 import format_addr6

__all__ = ["all_kernel_addresses", "check_kernel", "iface_exists", "kernel_addresses", "kernel_conflicts",
           "kernel_conflicts6", "read_sysctl", "write_sysctl"]


def _ip_json(argv: list[str]) -> list[dict[str, object]]:
    try:
        proc = subprocess.run(["ip", "-j", *argv], capture_output=True, text=True, timeout=10, check=False)
        data = json.loads(proc.stdout or "[]")
    except (OSError, subprocess.TimeoutExpired, ValueError, RecursionError):
        return []
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def _inet(link: dict[str, object], family_default: str | None) -> list[str]:
    infos = link.get("addr_info", [])
    return [f"{a['local']}/{a.get('prefixlen', 32)}" for a in (infos if isinstance(infos, list) else [])
            if isinstance(a, dict) and "local" in a
            and (family_default is None or a.get("family", family_default) == "inet")]


def kernel_addresses(ifname: str) -> list[str]:
    """The kernel's IPv4 addresses on `ifname` (`ip -j -4 addr show dev IFNAME`)."""
    return [a for link in _ip_json(["-4", "addr", "show", "dev", ifname]) for a in _inet(link, "inet")]


def all_kernel_addresses() -> list[tuple[str, str]]:
    """(interface, "a.b.c.d/len") for every kernel IPv4 address in this namespace."""
    return [(str(link.get("ifname", "?")), a) for link in _ip_json(["-4", "addr", "show"])
            for a in _inet(link, None)]


def read_sysctl(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def write_sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(value)
    except OSError as exc:
        say(f"warning: cannot write {path}: {exc.strerror or exc}")


def kernel_conflicts(ifname: str, model_addrs: Sequence[str], kernel_addrs: Sequence[str],
                     forwarding: bool) -> str | None:
    """Why the kernel would fight natbox on `ifname`, or None. `model_addrs`/`kernel_addrs` are
    "a.b.c.d/len" strings; `forwarding` is net.ipv4.conf.IFNAME.forwarding."""
    if not kernel_addrs:
        return None
    if forwarding:
        return (f"{ifname} has kernel address {kernel_addrs[0]} and net.ipv4.conf.{ifname}.forwarding=1: "
                f"the kernel would route natbox's traffic too (ip addr flush dev {ifname}, or forwarding=0)")
    model_ips = {a.split("/")[0] for a in model_addrs}
    clash = [a for a in kernel_addrs if a.split("/")[0] in model_ips]
    if clash:
        return (f"{ifname} has kernel address {clash[0]}, which the model gives natbox: the kernel would "
                f"answer ARP and reset natbox's connections (ip addr del {clash[0]} dev {ifname})")
    return None


def kernel_conflicts6(iface: Interface, ipv6_forward: bool) -> str | None:
    """Why the kernel's IPv6 would fight natbox on `iface` (the model gives it IPv6 addresses, or natbox
    forwards IPv6), or None: IPv6 on there (disable_ipv6=0) with forwarding on, or one of natbox's addresses
    held by the kernel (it would answer Neighbour Solicitations and reset natbox's connections)."""
    name = iface.name
    if read_sysctl(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6") != "0" or not (iface.addresses6 or ipv6_forward):
        return None
    if ipv6_forward and read_sysctl(f"/proc/sys/net/ipv6/conf/{name}/forwarding") == "1":
        return (f"{name} has IPv6 on and net.ipv6.conf.{name}.forwarding=1: the kernel would route natbox's "
                f"IPv6 traffic too (sysctl net.ipv6.conf.{name}.disable_ipv6=1, or --adopt)")
    kernel6 = {a.split("/")[0] for link in _ip_json(["-6", "addr", "show", "dev", name]) for a in _inet(link, None)}
    clash = [format_addr6(a.addr) for a in iface.addresses6 if format_addr6(a.addr) in kernel6]
    if clash:
        return (f"{name} has kernel address {clash[0]}, which the model gives natbox: the kernel would answer "
                f"Neighbour Solicitations and reset natbox's connections (ip -6 addr del {clash[0]} dev {name})")
    return None


def iface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def check_kernel(cfg: GatewayConfig, host: Host, owned: list[Interface]) -> bool:
    """Say why natbox must not start here (False), or warn about what the kernel will still do (True)."""
    for name in cfg.tap_netns:
        if name not in host.interfaces or host.interfaces[name].kind != "tap":
            say(f"--tap-netns {name}: the model has no tap interface {name!r}", ERR)
            return False
    for iface in owned:
        if iface.kind == "tap" and iface.name in cfg.tap_netns:
            continue  # its kernel side is in another namespace (the "VM"): nothing of ours there
        exists = iface_exists(iface.name)
        if iface.kind != "tap" and not exists:
            say(f"{iface.name}: no such interface in this namespace (the model's interfaces must exist, "
                "except kind = \"tap\" ones, which natbox creates)", ERR)
            return False
        if not exists:
            continue
        kaddrs = kernel_addresses(iface.name)
        fwd = read_sysctl(f"/proc/sys/net/ipv4/conf/{iface.name}/forwarding") == "1"
        why = kernel_conflicts(iface.name, [str(a) for a in iface.addresses], kaddrs, fwd)
        why = why or kernel_conflicts6(iface, host.ipv6_forward)
        if why is not None and not cfg.force:
            say(f"refusing to start: {why}")
            return False
        if why is None and kaddrs:
            say(f"warning: {iface.name} has kernel address {kaddrs[0]} (forwarding off): the kernel will "
                "answer traffic for it alongside natbox")
    owned_names = {i.name for i in owned}
    others = [f"{name} {addr}" for name, addr in all_kernel_addresses() if name not in owned_names and name != "lo"]
    if others and read_sysctl("/proc/sys/net/ipv4/conf/all/arp_ignore") in (None, "0"):
        say(f"warning: the kernel has {others[0]} on an interface natbox does not own; with "
            "net.ipv4.conf.all.arp_ignore=0 it answers ARP for it on natbox's interfaces too")
    return True
