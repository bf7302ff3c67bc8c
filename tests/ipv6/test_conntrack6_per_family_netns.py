"""IPv6 UDP to a closed port (issue #14's leftover): `conntrack -L` shows no IPv6 entry when no ip6tables rule
needs conntrack, on Linux and in natbox, for the same reason: the conntrack hooks are registered per family
(`nf_ct_netns_get(net, NFPROTO_IPV4)` by the IPv4 nat table; natbox's hooks6 track only while
`rules6.needs_conntrack()`). The server's ICMPv6 port unreachable does not destroy an entry: once an ip6tables
rule needs conntrack, the next datagram's entry stays [UNREPLIED] after its error, as the IPv4 one does.
Needs root, `ip netns`, iptables and ip6tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from natbox.difftest.compare import compare
from natbox.difftest.kernel import kernel_available, run_on_kernel
from natbox.difftest.natbox_side import run_on_natbox
from natbox.difftest.packets import decode_frame
from natbox.difftest.scenario import parse_scenario
from natbox.testing.live import require_programs

pytestmark = pytest.mark.netns
SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "ipv6" / "conntrack6-per-family-closed-port.toml"


def test_untracked_until_an_ip6tables_rule_needs_conntrack_and_errors_destroy_nothing() -> None:
    why = kernel_available()
    if why is not None:
        pytest.skip(f"kernel side unavailable: {why}")
    require_programs("ip6tables", "ip6tables-restore", "ip6tables-save")
    sc = parse_scenario(SCENARIO.read_text(), str(SCENARIO))
    run = run_on_kernel(sc)
    assert run.errors == []
    # the server's three port unreachables all reached the client (the IPv4 one translated back)
    errors = [{n: v for n, v, _ in decode_frame(c.frame)} for c in run.sent("lan0")]
    assert sorted(e.get("inner.sport", 0) for e in errors if e.get("icmp6.type") == 1 or e.get("icmp.type") == 3) \
        == [40303, 40304, 40305]
    ports = sorted(int(t.split("=")[1]) for ln in run.conntrack for t in ln.split() if t.startswith("sport="))
    assert ports == [40304, 40305, 45999, 45999]  # no entry for 40303: sent before any IPv6 rule needed conntrack
    assert all("[UNREPLIED]" in ln for ln in run.conntrack)
    nat = run_on_natbox(sc, run)
    assert compare(run, nat) == []
    assert not any("sport=40303" in ln for ln in nat.conntrack)
