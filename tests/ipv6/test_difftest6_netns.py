"""The IPv6 scenarios (scenarios/ipv6/) on the real kernel and replayed through natbox: the kernel does what
ipv6-semantics.md says ([V] results), and natbox agrees frame by frame and in `conntrack -L`. Needs root,
`ip netns` and ip6tables; every namespace is deleted by run_on_kernel."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest

from natbox.difftest.compare import compare
from natbox.difftest.kernel import KernelRun, kernel_available, run_on_kernel
from natbox.difftest.natbox_side import run_on_natbox
from natbox.difftest.packets import decode_frame, is_compared_frame, l4_checksum_ok
from natbox.difftest.scenario import parse_scenario
from natbox.testing.live import require_programs

pytestmark = pytest.mark.netns

CORPUS6 = Path(__file__).resolve().parents[2] / "scenarios" / "ipv6"
NAMES6 = sorted(p.stem for p in CORPUS6.glob("*.toml"))
RT_LAN, RT_WAN, CLI = "fd00:77::1", "2001:db8:100::1", "fd00:77::2"


@cache
def _kernel(name: str) -> KernelRun:
    why = kernel_available()
    if why is not None:
        pytest.skip(f"kernel side unavailable: {why}")
    require_programs("ip6tables-restore", "ip6tables-save")
    path = CORPUS6 / f"{name}.toml"
    return run_on_kernel(parse_scenario(path.read_text(), str(path)))


def _out(run: KernelRun, iface: str) -> list[dict[str, Any]]:
    frames = [c.frame for c in run.sent(iface) if c.frame[12:14] == b"\x86\xdd" and is_compared_frame(c.frame)]
    for f in frames:
        assert l4_checksum_ok(f), "the router sent a bad checksum"
    return [{n: v for n, v, _ in decode_frame(f)} for f in frames]


def test_corpus6_size() -> None:
    assert len(NAMES6) >= 16


@pytest.mark.parametrize("name", NAMES6)
def test_natbox_agrees_with_linux(name: str) -> None:
    run = _kernel(name)
    assert not run.errors, run.errors
    sc = parse_scenario((CORPUS6 / f"{name}.toml").read_text())
    diffs = compare(run, run_on_natbox(sc, run))
    if diffs and sc.known_failure:
        pytest.xfail(sc.known_failure)
    assert not diffs, "\n".join(str(d) for d in diffs)


def test_kernel_masquerade_ping6() -> None:
    run = _kernel("masq6-ping")
    wan, lan = _out(run, "wan0"), _out(run, "lan0")
    assert wan[0]["ip6.src"] == RT_WAN and wan[0]["icmp6.id"] == 23072 and wan[0]["ip6.hlim"] == 63
    assert lan[0]["ip6.dst"] == CLI and lan[0]["icmp6.type"] == 129
    assert any(ln.startswith("icmpv6   58 ") and "type=128 code=0 id=23072" in ln for ln in run.conntrack)


def test_kernel_router_errors_come_from_the_lan_address() -> None:
    te = _out(_kernel("masq6-hoplimit-exceeded"), "lan0")
    assert [(f["ip6.src"], f["icmp6.type"]) for f in te] == [(RT_LAN, 3), (RT_LAN, 3)]
    ptb = _out(_kernel("masq6-packet-too-big"), "lan0")
    assert ptb[0]["icmp6.type"] == 2 and ptb[0]["icmp6.rest"] == "00000500"  # mtu 1280
    limited = _out(_kernel("masq6-hoplimit-ratelimit"), "lan0")
    assert len(limited) == 6  # §4.3 [V]: a burst of 6
    assert len(_out(_kernel("masq6-ptb-burst"), "lan0")) == 20  # Packet Too Big is never limited


def test_kernel_clash_and_translation() -> None:
    run = _kernel("masq6-udp-clash")
    ports = sorted(int(ln.split("dport=")[-1].split()[0]) for ln in run.conntrack if ln.startswith("udp"))
    assert 40100 in ports and len(set(ports)) == 2
    err = _out(_kernel("masq6-port-unreachable"), "lan0")
    assert err[0]["icmp6.type"] == 1 and err[0]["inner.ip6.src"] == CLI  # the quoted source restored
