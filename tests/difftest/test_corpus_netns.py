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

pytestmark = pytest.mark.netns

CORPUS = Path(__file__).resolve().parents[2] / "scenarios"
NAMES = sorted(p.stem for p in CORPUS.glob("*.toml"))
LAN, WAN, CLI, SRV, RTR_WAN, RTR_LAN = "lan0", "wan0", "192.168.50.2", "198.51.100.2", "198.51.100.1", "192.168.50.1"


@cache
def _kernel(name: str) -> KernelRun:
    why = kernel_available()
    if why is not None:
        pytest.skip(f"kernel side unavailable: {why}")
    path = CORPUS / f"{name}.toml"
    return run_on_kernel(parse_scenario(path.read_text(), str(path)))


def _out(run: KernelRun, iface: str) -> list[dict[str, Any]]:
    frames = [c.frame for c in run.sent(iface) if c.frame[12:14] == b"\x08\x00"]
    for f in frames:
        assert ip_checksum_ok(f) and l4_checksum_ok(f), "the router sent a bad checksum"
    return [{n: v for n, v, _ in decode_frame(f)} for f in frames]


def test_corpus_is_complete() -> None:
    assert len(NAMES) >= 10


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
    assert wan[1]["sport"] == 20005  # inside the range and free: kept (Appendix A #3)


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


@pytest.mark.parametrize("name", NAMES)
def test_natbox_agrees_with_kernel(name: str) -> None:
    run = _kernel(name)
    path = CORPUS / f"{name}.toml"
    diffs = compare(run, run_on_natbox(parse_scenario(path.read_text(), str(path)), run))
    assert not diffs, "\n".join(str(d) for d in diffs)


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
