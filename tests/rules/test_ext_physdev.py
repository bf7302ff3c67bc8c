"""`-m physdev` on packets with bridge netfilter information (xt_physdev.c `physdev_mt`), with a fake context."""

from __future__ import annotations

import shlex

from natbox.netfilter import Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.skb import NfBridge, Skb
from natbox.testing.rules_fakes import FakeCtx, udp


def hits(hook: Hook, specs: list[str], skb: Skb) -> list[bool]:
    rs = Ruleset()
    for spec in specs:
        rs.execute(parse_argv(["-A", hook.chain_name, *shlex.split(spec)]))
    rs.run("filter", hook, skb, FakeCtx(hook))
    return [r.packets == 1 for r in rs.tables["filter"].chains[hook.chain_name].rules]


def _bridged(physin: str, physout: str) -> Skb:
    skb = udp("10.1.0.10", 1000, "10.1.0.20", 53, iif="br0", oif="br0")
    skb.nf_bridge = NfBridge(physin, physout)
    return skb


def test_bridged_packet_in_forward() -> None:
    skb = _bridged("veth-a", "veth-b")
    assert hits(Hook.FORWARD, [
        "-m physdev --physdev-in veth-a",
        "-m physdev --physdev-in veth-b",
        "-m physdev ! --physdev-in veth-b",
        "-m physdev --physdev-out veth-b --physdev-is-bridged",
        "-m physdev --physdev-in veth+ --physdev-out veth-+",
        "-m physdev --physdev-in veth",  # no '+': the whole name must match
        "-m physdev --physdev-is-bridged",
        "-m physdev ! --physdev-is-bridged",
        "-m physdev --physdev-is-in --physdev-is-out",
        "-m physdev ! --physdev-is-out",
        "-m physdev ! --physdev-out veth-a --physdev-is-bridged",
    ], skb) == [True, False, True, True, True, False, True, False, True, False, True]


def test_routed_packet_that_came_in_by_a_port() -> None:
    """Delivered or routed after entering by a port: physindev set, no physoutdev. `--physdev-out` then never
    matches, inverted or not, and `! --physdev-is-bridged` does."""
    skb = _bridged("veth-a", "")
    assert hits(Hook.FORWARD, [
        "-m physdev --physdev-in veth-a",
        "-m physdev --physdev-is-in",
        "-m physdev ! --physdev-is-out",
        "-m physdev ! --physdev-is-bridged",
        "-m physdev --physdev-is-bridged",
        "-m physdev --physdev-out veth-b",
        "-m physdev ! --physdev-out veth-b",
    ], skb) == [True, True, True, True, False, False, False]


def test_physdev_in_is_skipped_without_an_input_port() -> None:
    """physdev_mt compares --physdev-in only when there is a physindev (here: none, as for a packet whose
    nf_bridge has only an output port); with none, the option does not decide."""
    skb = _bridged("", "veth-b")
    assert hits(Hook.FORWARD, ["-m physdev --physdev-in veth-a", "-m physdev ! --physdev-is-in",
                               "-m physdev --physdev-is-in"], skb) == [True, True, False]


def test_unbridged_packet_matches_only_inverted_options() -> None:
    skb = udp("10.1.0.10", 1000, "8.8.8.8", 53, iif="eth0", oif="eth1")
    assert hits(Hook.FORWARD, ["-m physdev --physdev-in eth0", "-m physdev ! --physdev-in eth0",
                               "-m physdev ! --physdev-is-in ! --physdev-out x"], skb) == [False, True, True]
