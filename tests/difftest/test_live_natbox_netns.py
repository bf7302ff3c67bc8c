"""Live natbox against the kernel: the same namespaces and traffic, once with the kernel as the router and
once with natbox (`natbox gateway --adopt` of that router), compared as §10 says (issue: "builds the
scenario's topology twice ... once with the Linux kernel as the router and once with natbox")."""

from __future__ import annotations

from pathlib import Path

import pytest

from natbox.difftest.cli import live_capable, run_scenario
from natbox.difftest.kernel import kernel_available
from natbox.difftest.scenario import parse_scenario

pytestmark = pytest.mark.netns
CORPUS = Path(__file__).resolve().parents[2] / "scenarios"
# a cross-section: ICMP, UDP, TCP, clashes, DNAT, ICMP errors both ways, REJECT, fragments, a rule change
LIVE = ["masquerade-ping", "masquerade-udp-same-sport", "masquerade-tcp-session", "clash-udp-three-hosts",
        "dnat-port-forward", "dnat-range-clash", "udp-closed-port", "ttl1-time-exceeded", "reject-forward",
        "fragments-reverse", "docker-proxy-published-port", "hairpin-dnat-masquerade", "rules-change-live",
        # IPv6 (the gateway forwards it and answers ND once --adopt withdrew the kernel's IPv6): ping6, a UDP
        # clash, TCP, Packet Too Big translated back, fragments, NPTv6, DNAT, an ip6tables rule change
        "ipv6/masq6-ping", "ipv6/masq6-udp-clash", "ipv6/masq6-tcp", "ipv6/masq6-ptb-translated",
        "ipv6/frag6-reverse-natted", "ipv6/npt6-snpt-dnpt", "ipv6/dnat6-port-forward", "ipv6/masq6-rule-flushed",
        # `ip addr` steps, mirrored through the gateway's control socket
        "ipv6/masq6-newest-address", "masquerade-address-change"]


@pytest.mark.parametrize("name", LIVE)
def test_live_natbox_agrees_with_the_kernel(name: str) -> None:
    why = kernel_available()
    if why is not None:
        pytest.skip(f"kernel side unavailable: {why}")
    path = CORPUS / f"{name}.toml"
    sc = parse_scenario(path.read_text(), str(path))
    assert live_capable(sc)
    _kernel, diffs = run_scenario(sc, live=True)
    assert not diffs, "\n".join(str(d) for d in diffs[:10])
