"""The scenario corpus on the real kernel: what the reference predicts (§4.6, §9, Appendix A), and natbox's
agreement with it (§10). Needs root and `ip netns`; every namespace is deleted by run_on_kernel."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from natbox.difftest.compare import compare
from natbox.difftest.kernel import KernelRun, kernel_available, run_on_kernel
from natbox.difftest.natbox_side import run_on_natbox
from natbox.difftest.packets import decode_frame, ip_checksum_ok, l4_checksum_ok
from natbox.difftest.scenario import parse_scenario
from natbox.testing.live import require_programs

pytestmark = pytest.mark.netns

CORPUS = Path(__file__).resolve().parents[2] / "scenarios"
NAMES = sorted(p.stem for p in CORPUS.glob("*.toml"))
# the corpus plus the regression scenarios the random generator wrote (scenarios/regressions/)
ALL = sorted([*NAMES, *(f"regressions/{p.stem}" for p in (CORPUS / "regressions").glob("*.toml"))])
LAN, WAN, CLI, SRV, RTR_WAN, RTR_LAN = "lan0", "wan0", "192.168.50.2", "198.51.100.2", "198.51.100.1", "192.168.50.1"


@cache
def _kernel(name: str) -> KernelRun:
    path = CORPUS / f"{name}.toml"
    sc = parse_scenario(path.read_text(), str(path))
    if sc.nfacct:  # first, so a machine without nfacct skips naming it (.ci/fresh-machine hides it)
        require_programs("nfacct")
    why = kernel_available()
    if why is not None:
        pytest.skip(f"kernel side unavailable: {why}")
    return run_on_kernel(sc)


def _out(run: KernelRun, iface: str) -> list[dict[str, Any]]:
    frames = [c.frame for c in run.sent(iface) if c.frame[12:14] == b"\x08\x00"]
    for f in frames:
        assert ip_checksum_ok(f) and l4_checksum_ok(f), "the router sent a bad checksum"
    return [{n: v for n, v, _ in decode_frame(f)} for f in frames]


def test_corpus_is_complete() -> None:
    assert len(NAMES) >= 60


def test_masquerade_ping() -> None:
    run = _kernel("masquerade-ping")
    wan, lan = _out(run, WAN), _out(run, LAN)
    assert wan[0]["ip.src"] == RTR_WAN and wan[0]["icmp.id"] == 4242 and wan[0]["ip.ttl"] == 63  # id kept
    assert wan[0]["ip.id"] == 1000  # forwarding keeps the IP ID
    assert lan[0]["ip.dst"] == CLI and lan[0]["icmp.type"] == 0 and lan[0]["icmp.id"] == 4242
    assert len(wan) == len(lan) == 3  # the crafted echo plus two from the pinger, all answered
    assert any("id=4242" in ln and "src=198.51.100.2 dst=198.51.100.1" in ln for ln in run.conntrack)


def test_masquerade_same_sport() -> None:
    run = _kernel("masquerade-udp-same-sport")
    wan = [f for f in _out(run, WAN) if f["ip.proto"] == 17]
    assert [f["ip.src"] for f in wan] == [RTR_WAN] * 3
    assert wan[0]["sport"] == 40010  # the first flow keeps its port (§4.6)
    assert wan[1]["sport"] != 40010  # the second would clash: a random port (Appendix A #1)
    assert wan[2]["sport"] == wan[1]["sport"]  # every later packet of the flow uses the same mapping
    lan = [f for f in _out(run, LAN) if f["ip.proto"] == 17]
    assert sorted((f["ip.dst"], f["dport"]) for f in lan) == [(CLI, 40010), ("192.168.50.3", 40010),
                                                             ("192.168.50.3", 40010)]


def test_masquerade_tcp_session() -> None:
    run = _kernel("masquerade-tcp-session")
    wan = _out(run, WAN)
    assert wan and all(f["ip.src"] == RTR_WAN and f["sport"] == 40100 for f in wan)
    flags = [f["tcp.flags"] for f in wan]
    assert flags[0] == 0x02 and any(fl & 0x01 for fl in flags)  # SYN first, a FIN later
    assert any("sport=40100" in ln and "[ASSURED]" in ln for ln in run.conntrack)
    assert "hello natbox" in " ".join(run.program_output)


def test_dnat_port_forward() -> None:
    run = _kernel("dnat-port-forward")
    lan, wan = _out(run, LAN), _out(run, WAN)
    assert lan[0]["ip.dst"] == CLI and lan[0]["dport"] == 80 and lan[0]["ip.src"] == SRV
    assert all(f["ip.src"] == RTR_WAN and f["sport"] == 8080 for f in wan)
    assert "port forward" in " ".join(run.program_output)


def test_udp_closed_port_icmp_translated() -> None:
    run = _kernel("udp-closed-port")
    lan = _out(run, LAN)
    assert len(lan) == 1
    err = lan[0]  # Appendix A #6: translated, inner header rewritten, checksums ok, TTL 63
    assert (err["icmp.type"], err["icmp.code"]) == (3, 3) and err["ip.dst"] == CLI and err["ip.ttl"] == 63
    assert err["inner.ip.src"] == CLI and err["inner.sport"] == 40200 and err["inner.dport"] == 9999


def test_ttl1_time_exceeded() -> None:
    run = _kernel("ttl1-time-exceeded")
    assert _out(run, WAN) == []
    lan = _out(run, LAN)
    assert [(f["icmp.type"], f["icmp.code"]) for f in lan] == [(11, 0), (11, 0)]
    assert lan[0]["inner.ip.src"] == CLI and lan[0]["inner.dport"] == 33434


def test_bare_fin_leaves_un_natted() -> None:
    run = _kernel("bare-fin-invalid")
    wan = _out(run, WAN)
    assert wan[0]["ip.src"] == CLI and wan[0]["sport"] == 40400  # §9: INVALID is not NATed
    assert not any("sport=40400" in ln for ln in run.conntrack)


def test_dnat_range_clash() -> None:
    run = _kernel("dnat-range-clash")
    assert [f["dport"] for f in _out(run, WAN)] == [5000, 5001]  # lowest free from min (§10: deterministic)


def test_snat_port_range() -> None:
    run = _kernel("snat-port-range")
    wan = [f for f in _out(run, WAN) if f["ip.proto"] == 17]
    assert 20000 <= wan[0]["sport"] <= 20010  # 40600 is outside the range
    # inside the range and free: kept (Appendix A #3) -- unless the first flow's random pick took 20005 (1 in 11)
    assert wan[1]["sport"] == 20005 or wan[0]["sport"] == 20005


def test_ip_forward_off() -> None:
    run = _kernel("ip-forward-off")
    assert _out(run, WAN) == [] and _out(run, LAN) == []
    assert run.conntrack == []  # dropped before confirmation


def test_reject_forward() -> None:
    run = _kernel("reject-forward")
    assert _out(run, WAN) == []
    lan = _out(run, LAN)
    icmp = [f for f in lan if f["ip.proto"] == 1]
    rst = [f for f in lan if f["ip.proto"] == 6]
    assert (icmp[0]["icmp.type"], icmp[0]["icmp.code"]) == (3, 3) and icmp[0]["inner.sport"] == 40800
    assert rst[0]["sport"] == 22 and rst[0]["dport"] == 40801 and rst[0]["tcp.flags"] == 0x14
    assert rst[0]["tcp.ack"] == 123457 and rst[0]["ip.src"] == SRV


def test_fragments_reverse() -> None:
    run = _kernel("fragments-reverse")
    wan = [f for f in _out(run, WAN) if f["ip.proto"] == 17]
    # §9 / Appendix A #14: refragmented in order, same IP ID, TTL-1, 620/620/28
    assert [f["ip.len"] for f in wan] == [620, 620, 28]
    assert [f["ip.frag"] & 0x1FFF for f in wan] == [0, 75, 150]
    assert {f["ip.id"] for f in wan} == {777} and {f["ip.ttl"] for f in wan} == {63}
    assert {f["ip.src"] for f in wan} == {RTR_WAN}


def test_unknown_protocol() -> None:
    run = _kernel("unknown-protocol")
    wan = _out(run, WAN)
    assert wan[0]["ip.proto"] == 253 and wan[0]["ip.src"] == RTR_WAN
    assert any(ln.startswith("unknown  253 ") for ln in run.conntrack)


def test_udp_zero_checksum() -> None:
    run = _kernel("udp-zero-checksum")
    wan = _out(run, WAN)
    assert wan[0]["udp.csum"] == 0 and wan[0]["ip.src"] == RTR_WAN  # Appendix A #7


def test_dnat_ttl1_time_exceeded_from_original_destination() -> None:
    run = _kernel("dnat-ttl1-time-exceeded")
    assert _out(run, WAN) == []
    (err,) = _out(run, LAN)
    # Appendix A #16: the router's ICMP about a DNATed flow leaves with the original destination as source
    assert (err["icmp.type"], err["icmp.code"]) == (11, 0) and err["ip.src"] == "198.51.100.77"
    assert err["inner.ip.dst"] == "198.51.100.77" and err["inner.dport"] == 6000 and err["inner.ip.src"] == CLI
    assert run.conntrack == []  # never confirmed


def test_masquerade_icmp_id_clash() -> None:
    run = _kernel("masquerade-icmp-id-clash")
    requests = [f for f in _out(run, WAN) if f["icmp.type"] == 8]
    assert requests[0]["icmp.id"] == 4242  # the first keeps its id
    assert requests[1]["icmp.id"] != 4242 and requests[2]["icmp.id"] == requests[1]["icmp.id"]  # §9: remapped
    replies = [f for f in _out(run, LAN) if f["icmp.type"] == 0]
    assert [(f["ip.dst"], f["icmp.id"]) for f in replies] == [(CLI, 4242), ("192.168.50.3", 4242),
                                                              ("192.168.50.3", 4242)]


@pytest.mark.parametrize("name", ALL)
def test_natbox_agrees_with_kernel(name: str) -> None:
    """Every scenario agrees, except those marked `known_failure` (natbox bugs): xfail with the reason."""
    run = _kernel(name)
    path = CORPUS / f"{name}.toml"
    sc = parse_scenario(path.read_text(), str(path))
    diffs = compare(run, run_on_natbox(sc, run))
    problems = [str(d) for d in diffs] + [f"kernel run: {e}" for e in run.errors]
    if sc.known_failure is not None and problems:
        pytest.xfail(f"known natbox bug: {sc.known_failure}")
    assert not problems, "\n".join(problems)


def _our_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(f"nbx-dt{os.getpid()}-")]


def test_failed_setup_still_deletes_namespaces() -> None:
    why = kernel_available()
    if why is not None:
        pytest.skip(why)
    text = (CORPUS / "masquerade-ping.toml").read_text().replace("-j MASQUERADE", "-j NO-SUCH-TARGET")
    with pytest.raises(RuntimeError, match="iptables-restore"):
        run_on_kernel(parse_scenario(text, "broken.toml"))
    assert _our_namespaces() == []


def test_servers_are_ended_and_namespaces_deleted() -> None:
    run = _kernel("masquerade-tcp-session")  # started a tcp_server that never exits by itself
    assert run.errors == []
    assert _our_namespaces() == []


def test_saved_run_replays(tmp_path: Path) -> None:
    from natbox.adapters.pcap import iter_capture
    from natbox.adapters.snapshot import load_host
    from natbox.difftest.kernel import save_kernel_run

    run = _kernel("masquerade-ping")
    base = save_kernel_run(run, tmp_path / "run")
    host = load_host(base / "snapshot").host
    assert set(host.interfaces) == {"lo", "lan0", "wan0"} and host.ip_forward
    assert "-A POSTROUTING -o wan0 -j MASQUERADE" in host.rules_text
    got = [(r.ifname, r.data) for r in iter_capture(base / "in.pcapng")]
    assert got == [(c.iface, c.frame) for c in run.received()]
    assert (base / "conntrack.txt").read_text().splitlines() == run.conntrack


def test_replay_learns_the_random_port() -> None:
    run = _kernel("masquerade-udp-same-sport")
    path = CORPUS / "masquerade-udp-same-sport.toml"
    nat = run_on_natbox(parse_scenario(path.read_text(), str(path)), run)
    kernel_port = [f for f in _out(run, WAN) if f["ip.proto"] == 17][1]["sport"]
    # natbox picks its own random port for the clashing flow; the replay maps the kernel's onto it (§10)
    assert list(nat.port_pairs) in ([kernel_port], [])  # [] only if both drew the same port
    assert all(40010 not in pair for pair in nat.port_pairs.items())


# --- what the kernel did in the newer scenarios (the reference's predictions, checked on Linux) ------------


def _ct_has(run: KernelRun, *parts: str) -> bool:
    return any(all(p in ln for p in parts) for ln in run.conntrack)


def test_masquerade_to_ports_stays_in_range() -> None:
    wan = [f for f in _out(_kernel("masquerade-to-ports"), WAN) if f["ip.proto"] == 17]
    assert len(wan) == 4 and all(30000 <= f["sport"] <= 30005 for f in wan)  # §5.2 --to-ports
    assert len({f["sport"] for f in wan[:3]}) == 3 and wan[3]["sport"] == wan[0]["sport"]


def test_snat_port_exhaustion_drops_the_third_flow() -> None:
    run = _kernel("snat-port-exhaustion")
    wan = [f for f in _out(run, WAN) if f["ip.proto"] == 17]
    # two ports for three flows to one destination: the third never leaves (insert_failed, §2.5)
    assert sorted({f["sport"] for f in wan}) == [20000, 20001]
    assert not any(f["payload"] == b"c".hex() for f in wan)


def test_dnat_port_base_offsets_the_port() -> None:
    lan = [f for f in _out(_kernel("dnat-port-base"), LAN) if f["ip.proto"] == 17]
    assert [f["dport"] for f in lan] == [6003, 6010, 6000]  # --to-destination :6000-6010/7000 (rev 2 offset)


def test_reject_with_codes() -> None:
    lan = _out(_kernel("reject-with-icmp-unreachables"), LAN)
    assert [(f["icmp.type"], f["icmp.code"]) for f in lan if f["ip.proto"] == 1] == [(3, 0), (3, 1), (3, 3), (3, 2)]
    rst = [f for f in lan if f["ip.proto"] == 6]
    assert rst[0]["tcp.flags"] == 0x14 and rst[1]["tcp.flags"] == 0x04 and rst[1]["tcp.seq"] == 99  # RFC 793
    lan = _out(_kernel("reject-with-icmp-prohibited"), LAN)
    assert [(f["icmp.type"], f["icmp.code"]) for f in lan] == [(3, 9), (3, 10), (3, 13), (3, 3)]


def test_frag_needed_from_router_carries_mtu() -> None:
    run = _kernel("icmp-frag-needed-small-mtu")
    lan = [f for f in _out(run, LAN) if f["ip.proto"] == 1 and f["ip.src"] == RTR_LAN]  # the router's own
    assert len(lan) == 2 and all((f["icmp.type"], f["icmp.code"]) == (3, 4) for f in lan)
    assert all(int(f["icmp.rest"], 16) & 0xFFFF == 1000 for f in lan)  # next-hop MTU of wan0 (RFC 1191)
    wan = [f for f in _out(run, WAN) if f["ip.proto"] == 17]
    assert len(wan) == 2 and {f["ip.id"] for f in wan} == {1001}  # the non-DF datagram, fragmented


def test_time_exceeded_from_beyond_is_translated() -> None:
    lan = [f for f in _out(_kernel("icmp-time-exceeded-beyond"), LAN) if f["ip.proto"] == 1 and f["icmp.type"] == 11]
    assert len(lan) == 2 and all(f["ip.src"] == "198.51.100.3" and f["inner.ip.src"] == CLI for f in lan)  # §4.9
    assert all(f["inner.sport"] == 48100 and f["ip.dst"] == CLI for f in lan)


def test_nat_flush_stops_tracking() -> None:
    run = _kernel("rules-change-nat-flush-untracks")
    wan = [f for f in _out(run, WAN) if f["ip.proto"] == 17]
    assert wan[0]["ip.src"] == RTR_WAN and all(f["ip.src"] == CLI for f in wan[1:])
    assert not _ct_has(run, "sport=41251")


def test_udp_timeout_sysctls() -> None:
    run = _kernel("udp-timeouts-short")
    assert _ct_has(run, "sport=41001", "[ASSURED]")  # replied and seen again after 2 s: stream timeout
    assert not _ct_has(run, "sport=41000")  # unreplied: 1 s, gone again (at 2.2 s) by the listing at 2.5 s
    assert ":PREROUTING ACCEPT [3:" in run.iptables_save  # three new flows: 41000 twice (it expired), 41001


def test_masquerade_flush_on_address_change() -> None:
    wan = [f for f in _out(_kernel("masquerade-address-change"), WAN) if f["ip.proto"] == 17]
    assert wan[0]["ip.src"] == RTR_WAN and wan[1]["ip.src"] == "198.51.100.6"  # §5.2: the old entry is gone


def test_crafted_tcp_states() -> None:
    # the end hosts drop their own stacks' RSTs, so the crafted segments alone drive the state table (§3.2)
    assert _ct_has(_kernel("tcp-reopen-time-wait"), "ESTABLISHED", "sport=40750", "[ASSURED]")  # reopened
    assert _ct_has(_kernel("tcp-simultaneous-close"), "TIME_WAIT", "sport=40740")
    assert _ct_has(_kernel("tcp-rst-time-wait"), "CLOSE", "sport=40730")
    assert _ct_has(_kernel("tcp-midstream-pickup"), "ESTABLISHED", "sport=40760")  # nf_conntrack_tcp_loose=1
    assert _kernel("tcp-midstream-no-loose").conntrack == []
