"""SYNPROXY against the kernel (scenarios/synproxy-forward.toml): what Linux's segments look like, and the
replay's cookie normalisation (natbox.difftest.seqmap) that lets natbox's be compared with them."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest

from natbox.conntrack.tuple import parse_addr
from natbox.difftest.compare import compare
from natbox.difftest.kernel import KernelRun, kernel_available, run_on_kernel
from natbox.difftest.natbox_side import run_on_natbox
from natbox.difftest.packets import decode_frame
from natbox.difftest.scenario import parse_scenario
from natbox.difftest.seqmap import SynproxyOffsets, options_agree
from natbox.wire import ethernet, ipv4, tcp
from natbox.wire.checksum import l4_checksum
from natbox.wire.layout import ETH_HDR_LEN, IPH_MIN_LEN
from natbox.wire.tcp import parse_tcp, parse_tcp_options

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "synproxy-forward.toml"
SCENARIO6 = SCENARIO.parent / "ipv6" / "synproxy6-forward.toml"
CLI, SRV = "192.168.50.2", "198.51.100.2"


@cache
def _run() -> KernelRun:
    why = kernel_available()
    if why is not None:
        pytest.skip(f"kernel side unavailable: {why}")
    return run_on_kernel(parse_scenario(SCENARIO.read_text(), str(SCENARIO)))


@cache
def _run6() -> KernelRun:
    if kernel_available() is not None:
        pytest.skip(f"kernel side unavailable: {kernel_available()}")
    return run_on_kernel(parse_scenario(SCENARIO6.read_text(), str(SCENARIO6)))


def _tcp_out(run: KernelRun, iface: str) -> list[dict[str, Any]]:
    return [{n: v for n, v, _ in decode_frame(c.frame)} for c in run.sent(iface)
            if c.frame[12:14] == b"\x08\x00" and c.frame[ETH_HDR_LEN + 9] == 6]


@pytest.mark.netns
def test_the_kernel_answers_and_splices_as_natbox_does() -> None:
    run = _run()
    lan, wan = _tcp_out(run, "lan0"), _tcp_out(run, "wan0")
    synack = lan[0]
    # the cookie SYN-ACK: window 0, ID 0, TTL 64, MSS 1460, SACK-permitted + TS, wscale 7; the TSval's low
    # bits hold the client's wscale and SACK bit
    assert (synack["tcp.flags"], synack["tcp.win"], synack["ip.id"], synack["ip.ttl"]) == (0x12, 0, 0, 64)
    opts = synack["tcp.options"]
    assert opts.startswith("020405b40402080a") and opts.endswith("01030307")
    assert int(opts[16:24], 16) & 0x10
    # the SYN to the server relays the cookie in its ack field, from the client's address
    syn = wan[0]
    assert (syn["ip.src"], syn["tcp.flags"], syn["tcp.ack"]) == (CLI, 0x02, synack["tcp.seq"])
    # after the server's SYN-ACK: the ACK to the server, whose TSecr the hook moves by tsoff a second time
    ack, update = wan[1], lan[1]
    assert ack["tcp.flags"] == 0x10 and update["tcp.flags"] == 0x10 and update["tcp.seq"] == synack["tcp.seq"] + 1
    # the SYN without timestamps gets the MSS alone
    assert any(f["sport"] == 80 and f["dport"] == 41000 and f["tcp.options"] == "020405b4" for f in lan)
    assert any("ESTABLISHED" in ln or "TIME_WAIT" in ln for ln in run.conntrack)


@pytest.mark.netns
@pytest.mark.parametrize(("path", "flows"), [(SCENARIO, 2), (SCENARIO6, 1)], ids=["ipv4", "ipv6"])
def test_natbox_agrees_once_the_cookies_are_mapped(path: Path, flows: int) -> None:
    run = _run() if path == SCENARIO else _run6()
    sc = parse_scenario(path.read_text(), str(path))
    nb = run_on_natbox(sc, run)
    # each flow got its own cookies on each side: the comparison below is not vacuous
    assert len(nb.synproxy_offsets) == flows and all(d for d, _t in nb.synproxy_offsets.values())
    diffs = compare(run, nb)
    assert not diffs, "\n".join(str(d) for d in diffs)


def _frame(src: str, dst: str, sport: int, dport: int, *, seq: int, ack: int, flags: int, opts: bytes) -> bytes:
    s, d = parse_addr(src), parse_addr(dst)
    seg = tcp.build_tcp(s, d, sport, dport, seq=seq, ack=ack, flags=flags, window=100, options=opts)
    return bytes(ethernet.build_ethernet(b"\x02" * 6, b"\x04" * 6, ethernet.ETH_P_IP, ipv4.build_ipv4(s, d, 6, seg)))


def test_offsets_are_learned_from_the_synacks_and_rewrite_the_client_side() -> None:
    ts = tcp.tcp_opt_nop() + tcp.tcp_opt_nop()
    k = _frame(SRV, CLI, 80, 4000, seq=5000, ack=11, flags=tcp.SYN | tcp.ACK, opts=ts + tcp.tcp_opt_timestamps(900, 7))
    n = _frame(SRV, CLI, 80, 4000, seq=3000, ack=11, flags=tcp.SYN | tcp.ACK, opts=ts + tcp.tcp_opt_timestamps(100, 7))
    offsets = SynproxyOffsets()
    offsets.learn(k, k)  # the same numbers: no cookie of its own
    assert not offsets.flows
    offsets.learn(k, n)
    assert offsets.flows == {(parse_addr(CLI), 4000, parse_addr(SRV), 80): (2000, 800)}
    client = _frame(CLI, SRV, 4000, 80, seq=11, ack=5001, flags=tcp.ACK,
                    opts=ts + tcp.tcp_opt_timestamps(8, 900) + ts + tcp.tcp_opt_sack([(5001, 5010)]))
    ip = offsets.rewrite_input(client)[ETH_HDR_LEN:]
    th = parse_tcp(ip[IPH_MIN_LEN:])
    assert th is not None and (th.seq, th.ack) == (11, 3001)
    assert parse_tcp_options(ip[IPH_MIN_LEN + 20:IPH_MIN_LEN + th.doff])[2:] == [("TS", (8, 100)), ("nop", ()),
                                                                                  ("nop", ()), ("sack", (3001, 3010))]
    assert l4_checksum(parse_addr(CLI), parse_addr(SRV), 6, ip[IPH_MIN_LEN:]) == 0
    assert offsets.of(k) == offsets.of(client) == (2000, 800)
    # the comparison's tolerance: exactly the flow's offsets, nothing else
    assert options_agree("0101080a00000384" + "00000007", "0101080a00000064" + "00000007", (2000, 800))
    assert not options_agree("0101080a00000385" + "00000007", "0101080a00000064" + "00000007", (2000, 800))
    assert not options_agree("020405b4", "02040578", (2000, 800))
