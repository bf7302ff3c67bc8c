"""Building and tearing down a lab: the `ip`/`sysctl`/`ethtool` commands, planned then run.

`plan_up(lab)` is the list of argv lists that build the lab, in order (namespaces, bridges, TAPs, veth
pairs created directly inside their namespaces, sysctls, addresses, links up, routes); `lab_up` runs them
and, if one fails, tears down what was built. `lab_down` deletes the namespaces (their devices go with them).
"""

from __future__ import annotations

from collections.abc import Sequence

from natbox.adapters import netns
from natbox.lab.model import Lab

__all__ = ["lab_down", "lab_exec_argv", "lab_status", "lab_up", "plan_down", "plan_up"]


def _ip(ns: str, *args: str) -> list[str]:
    return ["ip", "-n", ns, *args]


def _sysctl(ns: str, key: str, value: str) -> list[str]:
    return netns.netns_exec_argv(ns, ["sysctl", "-qw", f"{key}={value}"])


def _addr(ns: str, addr: str, dev: str) -> list[str]:
    """`ip addr add`; an IPv6 address `nodad` (usable at once, no duplicate address detection wait)."""
    return _ip(ns, "addr", "add", addr, "dev", dev, *(["nodad"] if ":" in addr else []))


def plan_up(lab: Lab) -> list[list[str]]:
    """Every command that builds `lab`, in order (namespaces must not exist yet)."""
    cmds: list[list[str]] = []
    for node in lab.nodes:
        ns = lab.netns(node)
        cmds.append(["ip", "netns", "add", ns])
        cmds.append(_ip(ns, "link", "set", "lo", "up"))
        if not lab.ipv6:
            cmds.append(_sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1"))
            cmds.append(_sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1"))
    ups: list[list[str]] = []
    addrs: list[list[str]] = []
    for br in lab.bridges:
        ns = lab.netns(br.node)
        cmds.append(_ip(ns, "link", "add", br.name, "type", "bridge"))
        if br.mtu:
            cmds.append(_ip(ns, "link", "set", br.name, "mtu", str(br.mtu)))
        addrs += [_addr(ns, a, br.name) for a in br.addresses]
        ups.append(_ip(ns, "link", "set", br.name, "up"))
    for tap in lab.taps:
        ns = lab.netns(tap.node)
        cmds.append(_ip(ns, "tuntap", "add", "dev", tap.name, "mode", "tap", *(["vnet_hdr"] if tap.vnet_hdr else [])))
        if tap.mtu:
            cmds.append(_ip(ns, "link", "set", tap.name, "mtu", str(tap.mtu)))
        if tap.mac:
            cmds.append(_ip(ns, "link", "set", tap.name, "address", tap.mac))
        addrs += [_addr(ns, a, tap.name) for a in tap.addresses]
        ups.append(_ip(ns, "link", "set", tap.name, "up"))
    for link in lab.links:
        a, b = link.a, link.b
        nsa, nsb = lab.netns(a.node), lab.netns(b.node)
        cmds.append(_ip(nsa, "link", "add", a.name, "type", "veth", "peer", "name", b.name, "netns", nsb))
        for end, ns in ((a, nsa), (b, nsb)):
            if end.mtu:
                cmds.append(_ip(ns, "link", "set", end.name, "mtu", str(end.mtu)))
            if end.mac:
                cmds.append(_ip(ns, "link", "set", end.name, "address", end.mac))
            if end.bridge:
                cmds.append(_ip(ns, "link", "set", end.name, "master", end.bridge))
            if end.offloads:
                cmds.append(netns.netns_exec_argv(
                    ns, ["ethtool", "-K", end.name, *[w for k, v in end.offloads.items() for w in (k, v)]]))
            addrs += [_addr(ns, x, end.name) for x in end.addresses]
            ups.append(_ip(ns, "link", "set", end.name, "up"))
    for node in lab.nodes:  # after the devices exist, so per-device sysctls (conf.DEV.*) apply
        cmds += [_sysctl(lab.netns(node), key, value) for key, value in lab.nodes[node].sysctls.items()]
    cmds += addrs + ups
    for nd in lab.nodes.values():
        cmds += [_ip(lab.netns(nd.name), *(["-6"] if ":" in r else []), "route", "add", *r.split())
                 for r in nd.routes]
    return cmds


def plan_down(lab: Lab) -> list[list[str]]:
    """Delete persistent TAPs, then every namespace of the lab (veths and bridges die with them)."""
    cmds = [_ip(lab.netns(t.node), "tuntap", "del", "dev", t.name, "mode", "tap") for t in lab.taps]
    return cmds + [["ip", "netns", "del", lab.netns(n)] for n in lab.nodes]


def lab_status(lab: Lab) -> dict[str, bool]:
    """Which of the lab's namespaces exist."""
    return {n: netns.netns_exists(lab.netns(n)) for n in lab.nodes}


def lab_up(lab: Lab) -> None:
    """Build the lab; on any failure tear down what was built and raise NetnsError."""
    existing = [n for n, up in lab_status(lab).items() if up]
    if existing:
        raise netns.NetnsError(f"lab {lab.name} is already (partly) up: namespace {lab.netns(existing[0])} "
                               f"exists (natbox lab FILE down first)")
    try:
        for argv in plan_up(lab):
            netns.run(argv)
    except netns.NetnsError:
        lab_down(lab)
        raise


def lab_down(lab: Lab) -> list[str]:
    """Tear the lab down; ignore what is already gone. Returns the namespaces that were deleted."""
    deleted: list[str] = []
    for argv in plan_down(lab):
        if argv[:3] == ["ip", "netns", "del"]:
            if netns.delete_netns(argv[3]):
                deleted.append(argv[3])
        elif netns.netns_exists(argv[2]):
            netns.run(argv, check=False)
    return deleted


def lab_exec_argv(lab: Lab, node: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` inside `node`'s namespace."""
    if node not in lab.nodes:
        raise netns.NetnsError(f"lab {lab.name} has no node {node!r} (nodes: {', '.join(lab.nodes)})")
    return netns.netns_exec_argv(lab.netns(node), argv)
