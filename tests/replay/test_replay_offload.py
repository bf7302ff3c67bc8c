"""`natbox replay --offload` / `natbox explain --offload`: the kernel datapath of `gateway --offload`, modelled
offline (engine/offload_model.py). A TCP connection through examples/masquerade-host.toml (MASQUERADE, a
stateful FORWARD chain) is replayed with and without it: with it, the flow is offloaded once established, its
next packets are carried (explained as offloaded, the same frames leaving), the FIN brings it back, and the
FORWARD rule that counts established packets counts exactly the carried ones fewer."""

from __future__ import annotations

import io
import re
from pathlib import Path

from natbox.adapters.pcap import PcapWriter
from natbox.cli.replay import main_for
from natbox.conntrack.tuple import parse_addr
from natbox.testing.paths import EXAMPLES
from natbox.wire import ethernet, ipv4, tcp

HOST = EXAMPLES / "masquerade-host.toml"
CLIENT, SERVER, GW_WAN = parse_addr("192.168.50.2"), parse_addr("198.51.100.10"), parse_addr("198.51.100.1")
LAN_MAC, WAN_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000101")
CLIENT_MAC, SERVER_MAC = bytes.fromhex("0200000000c2"), bytes.fromhex("0200000000aa")
SPORT, DPORT, C_ISN, S_ISN = 41000, 80, 1000, 5000
ROUNDS = 10  # data segments each way


def _captures(tmp: Path) -> tuple[Path, Path]:
    """lan.pcap (what the client sends, on eth0) and wan.pcap (what the server sends, on eth1)."""
    lan, wan = tmp / "lan.pcap", tmp / "wan.pcap"
    t = 1_700_000_000_000_000_000
    step = 1_000_000  # 1 ms
    c_seq, s_seq = C_ISN, S_ISN
    with PcapWriter(str(lan)) as lw, PcapWriter(str(wan)) as ww:
        def client(flags: int, payload: bytes = b"") -> None:
            nonlocal t, c_seq
            seg = tcp.build_tcp(CLIENT, SERVER, SPORT, DPORT, seq=c_seq, ack=s_seq if flags & tcp.ACK else 0,
                                flags=flags, window=65000, payload=payload)
            t += step
            lw.write(ethernet.build_ethernet(LAN_MAC, CLIENT_MAC, ethernet.ETH_P_IP,
                                             ipv4.build_ipv4(CLIENT, SERVER, 6, seg)), ts_ns=t)
            c_seq += len(payload) + (1 if flags & (tcp.SYN | tcp.FIN) else 0)

        def server(flags: int, payload: bytes = b"") -> None:
            nonlocal t, s_seq
            seg = tcp.build_tcp(SERVER, GW_WAN, DPORT, SPORT, seq=s_seq, ack=c_seq, flags=flags, window=65000,
                                payload=payload)
            t += step
            ww.write(ethernet.build_ethernet(WAN_MAC, SERVER_MAC, ethernet.ETH_P_IP,
                                             ipv4.build_ipv4(SERVER, GW_WAN, 6, seg)), ts_ns=t)
            s_seq += len(payload) + (1 if flags & (tcp.SYN | tcp.FIN) else 0)

        client(tcp.SYN)
        server(tcp.SYN | tcp.ACK)
        client(tcp.ACK)
        for i in range(ROUNDS):
            client(tcp.ACK | tcp.PSH, b"q" * (100 + i))
            server(tcp.ACK | tcp.PSH, b"r" * (200 + i))
        client(tcp.ACK | tcp.FIN)
        server(tcp.ACK | tcp.FIN)
        client(tcp.ACK)
    return lan, wan


def _run(args: list[str], *, explain: bool = False) -> str:
    out, err = io.StringIO(), io.StringIO()
    code = main_for(args, prog="natbox explain" if explain else "natbox replay", explain_cmd=explain,
                    stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    return out.getvalue()


def _established_counter(summary: str) -> tuple[int, int]:
    m = re.search(r"^\s+(\d+)\s+(\d+) ACCEPT .*ctstate RELATED,ESTABLISHED$", summary, re.M)
    assert m, summary
    return int(m.group(1)), int(m.group(2))


def test_a_replay_with_offload_carries_the_established_packets_past_the_hooks(tmp_path: Path) -> None:
    lan, wan = _captures(tmp_path)
    common = ["--host", str(HOST), "--in", f"eth0={lan}", "--in", f"eth1={wan}"]
    _run([*common, "--out", str(tmp_path / "plain")])
    summary_plain = _run(common)
    summary = _run([*common, "--offload"])
    m = re.search(r"^offload: (\d+) packets \((\d+) bytes\) carried by the datapath, 0 flows offloaded at the end$",
                  summary, re.M)
    assert m, summary
    carried, carried_bytes = int(m.group(1)), int(m.group(2))
    # offloaded at the reply direction's first established packet; the rest of the data (both ways) is carried
    assert carried == 2 * ROUNDS - 2, summary
    assert re.search(r"flow offload: ct #1 installed in the datapath, both directions \(eth0 <-> eth1\)", summary)
    assert re.search(r"flow offload: ct #1 back to the slow path \(fin\), its entries removed; the datapath carried "
                     rf"{ROUNDS - 1} \+ {ROUNDS - 1} packets of it", summary)
    packets, nbytes = _established_counter(summary_plain)
    assert _established_counter(summary) == (packets - carried, nbytes - carried_bytes)
    # the same frames leave either way (the plan's rewrite is the slow path's), and the ct ends the same
    _run([*common, "--offload", "--out", str(tmp_path / "with")])
    for name in ("eth0.out.pcap", "eth1.out.pcap", "conntrack.txt"):
        assert (tmp_path / "with" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes(), name
    assert (tmp_path / "with" / "counters.txt").read_text() != (tmp_path / "plain" / "counters.txt").read_text()


def test_explain_with_offload_marks_the_carried_packets_and_says_when_the_flow_went_and_came_back(
        tmp_path: Path) -> None:
    lan, wan = _captures(tmp_path)
    text = _run(["--host", str(HOST), "--in", f"eth0={lan}", "--in", f"eth1={wan}", "--offload"], explain=True)
    packets = re.split(r"\n(?=#\d+ )", text.strip())
    assert len(packets) == 3 + 2 * ROUNDS + 3
    steps = [p.splitlines()[1:] for p in packets]
    added = [i for i, s in enumerate(steps) if any("installed in the datapath" in line for line in s)]
    assert added == [4]  # the server's first data segment: both directions planned, the flow offloaded
    assert any(line.strip().startswith("nft_flow_offload: ct 1 offloaded") for line in steps[4])
    for s in steps[5:3 + 2 * ROUNDS]:  # every later data segment: one step, offloaded, and sent
        assert s[0].strip().startswith("offloaded: ct #1 ") and "no hook, rule, LOG or NFLOG sees it" in s[0], s
        assert len(s) == 2 and s[1].startswith("  => sent on "), s
    fin = steps[3 + 2 * ROUNDS]
    assert fin[0].strip().startswith("flow offload: ct #1 back to the slow path (fin)"), fin
    assert any("filter FORWARD" in line for line in fin)  # back on the slow path: the rules see it again
    assert not any(line.strip().startswith("offloaded:") for s in steps[3 + 2 * ROUNDS:] for line in s)


def test_offload_with_a_scenario_is_a_usage_error() -> None:
    err = io.StringIO()
    code = main_for(["--host", str(HOST), "--scenario", "x.toml", "--offload"], prog="natbox replay",
                    explain_cmd=False, stdout=io.StringIO(), stderr=err)
    assert code == 2 and "--offload models the datapath for captures" in err.getvalue()
