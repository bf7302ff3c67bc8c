"""`natbox replay` on captures: outputs per interface, conntrack/counters/stats files, JSON, pcapng, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natbox.adapters.pcap import CaptureReader, PcapngWriter, PcapWriter
from natbox.render.tcpdump import TcpdumpPrinter, tcpdump_line
from natbox.replay.driver import merge_inputs
from natbox.testing.replay import SERVER_MAC, cli, lab_out, run_lab, write_gateway, write_inputs
from natbox.wire import ethernet, icmp, ipv4


def _lines(path: Path) -> list[str]:
    with CaptureReader(path) as r:
        return [tcpdump_line(rec.data) for rec in r]


@pytest.fixture
def replayed(tmp_path: Path) -> tuple[Path, Path]:
    host = write_gateway(tmp_path)
    lab = run_lab(host)
    inputs = write_inputs(lab, tmp_path)
    out = tmp_path / "out"
    code, _o, err = cli(["--host", str(host), "--in", f"eth0={inputs['eth0']}", "--in", f"eth1={inputs['eth1']}",
                         "--out", str(out), "--jsonl"])
    assert code == 0, err
    return out, host


def test_replay_of_a_lab_capture(replayed: tuple[Path, Path], tmp_path: Path) -> None:
    out, host = replayed
    # MASQUERADE: the source becomes eth1's address; replies are un-NATed back to the client (§5)
    assert _lines(out / "eth1.out.pcap") == [
        f"02:00:00:00:01:01 > {SERVER_MAC}, ethertype IPv4 (0x0800), length 98: 198.51.100.1 > 198.51.100.10: "
        "ICMP echo request, id 7, seq 1, length 64",
        f"02:00:00:00:01:01 > {SERVER_MAC}, ethertype IPv4 (0x0800), length 47: 198.51.100.1.40001 > "
        "198.51.100.10.7: UDP, length 5",
    ]
    assert _lines(out / "eth0.out.pcap") == [
        "02:00:00:00:00:01 > 02:00:00:00:50:02, ethertype IPv4 (0x0800), length 98: 198.51.100.10 > 192.168.50.2: "
        "ICMP echo reply, id 7, seq 1, length 64",
        "02:00:00:00:00:01 > 02:00:00:00:50:02, ethertype IPv4 (0x0800), length 47: 198.51.100.10.7 > "
        "192.168.50.2.40001: UDP, length 5",
    ]
    # the replay of what arrived sends exactly what the live lab's gateway sent
    lab = run_lab(host)
    for iface in ("eth0", "eth1"):
        with CaptureReader(out / f"{iface}.out.pcap") as r:
            assert [rec.data for rec in r] == [c.frame for c in lab_out(lab, iface)]
    # conntrack -L at the last packet (t0 + 1.0003): the echo's entry has 30 s from its reply at t0 + 0.0003
    assert (out / "conntrack.txt").read_text().splitlines() == [
        "icmp     1 29 src=192.168.50.2 dst=198.51.100.10 type=8 code=0 id=7 src=198.51.100.10 dst=198.51.100.1 "
        "type=0 code=0 id=7 mark=0 use=1",
        "udp      17 30 src=192.168.50.2 dst=198.51.100.10 sport=40001 dport=7 src=198.51.100.10 dst=198.51.100.1 "
        "sport=7 dport=40001 mark=0 use=1",
    ]
    assert (out / "conntrack.stderr").read_text() == \
        "conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.\n"
    events = (out / "events.txt").read_text().splitlines()
    assert [e.split()[0] for e in events] == ["[NEW]", "[UPDATE]", "[NEW]", "[UPDATE]"]
    counters = (out / "counters.txt").read_text()
    assert "# iptables -t nat -nvL\n" in counters and "# iptables -t nat -nvxL\n" in counters
    masq = [ln for ln in counters.splitlines() if "MASQUERADE" in ln]
    assert len(masq) == 2 and all(ln.split()[:2] == ["2", "117"] for ln in masq)  # 2 NEW datagrams: 84 + 33 bytes
    stats = (out / "stats.txt").read_text().splitlines()
    assert stats[0].startswith("cpu=0   \tfound=0 invalid=0 insert=0 ")
    assert "inputs 4" in stats and "replayed 4" in stats


def test_packets_jsonl(replayed: tuple[Path, Path]) -> None:
    out, _host = replayed
    recs = [json.loads(line) for line in (out / "packets.jsonl").read_text().splitlines()]
    assert [r["n"] for r in recs] == [1, 2, 3, 4]
    assert [(r["iface"], r["verdict"], r["ct"]) for r in recs] == [
        ("eth0", "forwarded", 1), ("eth1", "forwarded", 1), ("eth0", "forwarded", 2), ("eth1", "forwarded", 2)]
    first = recs[0]
    assert first["source"].endswith("eth0.in.pcap") and first["index"] == 1
    assert first["packet"].endswith("192.168.50.2 > 198.51.100.10: ICMP echo request, id 7, seq 1, length 64")
    assert first["emitted"][0]["iface"] == "eth1"
    assert "198.51.100.1 > 198.51.100.10: ICMP echo request" in first["emitted"][0]["packet"]
    assert "trace" not in first


def test_real_tcpdump_reads_our_pcaps(replayed: tuple[Path, Path]) -> None:
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed")
    out, _host = replayed
    for iface in ("eth0", "eth1"):
        path = out / f"{iface}.out.pcap"
        proc = subprocess.run(["tcpdump", "-nne", "-r", str(path)], capture_output=True, text=True, check=False,
                              env={**os.environ, "TZ": "UTC"})
        assert proc.returncode == 0, proc.stderr
        printer = TcpdumpPrinter()
        with CaptureReader(path) as r:
            ours = [printer.line(rec.data, ts_ns=rec.ts_ns) for rec in r]
        assert proc.stdout.splitlines() == ours and ours


def _frame(src: str, dst: str, seq: int, *, reply: bool = False) -> bytes:
    from natbox.conntrack.tuple import parse_addr

    body = icmp.build_icmp_echo(9, seq, b"x" * 16, reply=reply)
    dgram = ipv4.build_ipv4(parse_addr(src), parse_addr(dst), 1, body, ttl=64)
    return bytes(ethernet.build_ethernet(b"\x02\x00\x00\x00\x00\x01" if src.startswith("192") else
                                         b"\x02\x00\x00\x00\x01\x01", b"\x02\x99\x00\x00\x00\x01",
                                         ethernet.ETH_P_IP, dgram))


def test_pcapng_with_two_interfaces_and_comments(tmp_path: Path) -> None:
    host = write_gateway(tmp_path)
    src = tmp_path / "both.pcapng"
    with PcapngWriter(src) as w:
        w.add_interface("eth0")
        w.add_interface("eth1")
        w.write(_frame("192.168.50.2", "198.51.100.10", 1), interface="eth0", ts=100.0)
        w.write(_frame("198.51.100.10", "198.51.100.1", 1, reply=True), interface="eth1", ts=100.5)
    out = tmp_path / "out.pcapng"
    code, _o, err = cli(["--host", str(host), "--in", str(src), "--pcapng", str(out)])
    assert code == 0, err
    with CaptureReader(out) as r:
        recs = list(r)
    assert [(rec.ifname, rec.comment) for rec in recs] == [
        ("eth1", f"from {src} #1 (input 1) at 100.000000 s; ct 1"),
        ("eth0", f"from {src} #2 (input 2) at 100.500000 s; ct 1"),
    ]
    assert "198.51.100.1 > 198.51.100.10: ICMP echo request, id 9, seq 1" in tcpdump_line(recs[0].data)
    assert "198.51.100.10 > 192.168.50.2: ICMP echo reply, id 9, seq 1" in tcpdump_line(recs[1].data)
    if shutil.which("tshark") is not None:
        proc = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.interface_name",
                               "-e", "frame.comment"], capture_output=True, text=True, check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            assert [ln.split("\t") for ln in proc.stdout.strip().splitlines()] == [
                ["eth1", f"from {src} #1 (input 1) at 100.000000 s; ct 1"],
                ["eth0", f"from {src} #2 (input 2) at 100.500000 s; ct 1"]]


def test_not_a_capture_is_one_line_and_exit_2(tmp_path: Path) -> None:
    host = write_gateway(tmp_path)
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not a capture\n")
    code, out, err = cli(["--host", str(host), "--in", f"eth0={bogus}"])
    assert code == 2 and out == ""
    assert err == f"natbox replay: {bogus}: not a pcap or pcapng file (starts with 0x74686973)\n"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    host = write_gateway(tmp_path)
    code, _o, err = cli(["--host", str(host), "--in", "eth0="])
    assert code == 2 and err.count("\n") == 1 and "want IFACE=FILE" in err
    code, _o, err = cli(["--host", str(host), "--in", "eth9=x.pcap"])
    assert code == 2 and "no interface 'eth9'" in err and "eth0, eth1" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n\n[[interface]]\nname = "eth0"\nmtu = "big"\n')
    code, _o, err = cli(["--host", str(bad), "--in", "eth0=x.pcap"])
    assert code == 2 and err.startswith(f"natbox replay: {bad}:5: interface[0].mtu") and err.count("\n") == 1
    code, _o, err = cli(["--host", str(host)])
    assert code == 2 and "--in" in err  # argparse: one of --in / --scenario is required


def test_foreign_truncated_and_raw_records_are_counted(tmp_path: Path) -> None:
    host = write_gateway(tmp_path)
    frame = _frame("192.168.50.2", "198.51.100.10", 5)
    ppp = tmp_path / "ppp.pcap"
    with PcapWriter(ppp, linktype=9) as w:
        w.write(b"\xff\x03\x00\x21" + frame[14:], ts=1.0)
    cut = tmp_path / "cut.pcap"
    with PcapWriter(cut) as w:
        w.write(frame[:40], ts=2.0, wirelen=len(frame))
    raw = tmp_path / "raw.pcap"
    with PcapWriter(raw, linktype=228) as w:
        w.write(frame[14:], ts=3.0)
    out = tmp_path / "out"
    code, _o, err = cli(["--host", str(host), "--in", f"eth0={ppp}", "--in", f"eth0={cut}", "--in", f"eth0={raw}",
                         "--out", str(out)])
    assert code == 0, err
    stats = (out / "stats.txt").read_text().splitlines()
    assert "foreign link type 9: 1" in stats
    assert "truncated record (caplen < wirelen): 1" in stats
    assert "inputs 3" in stats and "replayed 1" in stats
    # the raw-IPv4 record went through receive_ip and was masqueraded
    assert "198.51.100.1 > 198.51.100.10: ICMP echo request, id 9, seq 5" in _lines(out / "eth1.out.pcap")[0]


@given(st.lists(st.lists(st.integers(0, 10**12), max_size=20).map(sorted), min_size=1, max_size=5))
def test_merge_inputs_is_a_sorted_stable_merge(streams: list[list[int]]) -> None:
    class Rec:
        def __init__(self, ts_ns: int) -> None:
            self.ts_ns = ts_ns

    merged = list(merge_inputs([[Rec(t) for t in s] for s in streams]))  # type: ignore[misc]
    keys = [(m[0], m[1], m[2]) for m in merged]
    assert keys == sorted(keys)
    assert len(merged) == sum(len(s) for s in streams)
    assert all(m[3].ts_ns == m[0] for m in merged)


def _snapshot_dir(tmp: Path) -> Path:
    """A snapshot directory (`natbox snapshot`'s file names, `ip -j` JSON) of the gateway of write_gateway."""
    d = tmp / "snap"
    d.mkdir()
    links = [{"ifindex": 2, "ifname": "eth0", "mtu": 1500, "link_type": "ether", "address": "02:00:00:00:00:01",
              "flags": ["UP"]},
             {"ifindex": 3, "ifname": "eth1", "mtu": 1500, "link_type": "ether", "address": "02:00:00:00:01:01",
              "flags": ["UP"]}]
    addrs = [dict(link, addr_info=[{"family": "inet", "local": local, "prefixlen": 24, "scope": "global"}])
             for link, local in zip(links, ("192.168.50.1", "198.51.100.1"), strict=True)]
    (d / "link.json").write_text(json.dumps(links))
    (d / "addr.json").write_text(json.dumps(addrs))
    (d / "route.json").write_text("[]")
    (d / "neigh.json").write_text(json.dumps([{"dst": "198.51.100.10", "dev": "eth1", "lladdr": SERVER_MAC,
                                               "state": ["PERMANENT"]}]))
    (d / "sysctl.txt").write_text("net.ipv4.ip_forward = 1\n")
    (d / "iptables.rules").write_text("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                                      ":POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n")
    return d


def test_snapshot_directory_as_host(tmp_path: Path) -> None:
    lab = run_lab(write_gateway(tmp_path))
    inputs = write_inputs(lab, tmp_path)
    snap = _snapshot_dir(tmp_path)
    code, out, err = cli(["--host", str(snap), "--in", f"eth0={inputs['eth0']}", "--json"])
    assert code == 0, err
    recs = [json.loads(line) for line in out.splitlines()]
    assert recs[0]["emitted"][0]["packet"].endswith("198.51.100.1 > 198.51.100.10: ICMP echo request, id 7, seq 1, "
                                                    "length 64")
    (snap / "link.json").write_text("{not json")
    code, _o, err = cli(["--host", str(snap), "--in", f"eth0={inputs['eth0']}"])
    assert code == 2 and err.startswith(f"natbox replay: {snap}") and err.count("\n") == 1


def test_classic_pcap_needs_an_interface(tmp_path: Path) -> None:
    host = write_gateway(tmp_path)
    inputs = write_inputs(run_lab(host), tmp_path)
    code, _o, err = cli(["--host", str(host), "--in", str(inputs["eth0"])])
    assert code == 2 and "classic pcap names no interfaces" in err and err.count("\n") == 1


def _udp_frame(sport: int) -> bytes:
    from natbox.conntrack.tuple import parse_addr
    from natbox.wire import udp

    src, dst = parse_addr("192.168.50.2"), parse_addr("198.51.100.10")
    dgram = ipv4.build_ipv4(src, dst, 17, udp.build_udp(src, dst, sport, 53, b"q"), ttl=64)
    return bytes(ethernet.build_ethernet(b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x50\x02",
                                         ethernet.ETH_P_IP, dgram))


def test_capture_timestamps_drive_the_clock(tmp_path: Path) -> None:
    host = write_gateway(tmp_path)
    cap = tmp_path / "t.pcap"
    with PcapWriter(cap) as w:
        w.write(_udp_frame(1000), ts=100.0)
        w.write(_udp_frame(2000), ts=200.0)  # 100 s later: the first flow's 30 s UDP timeout has passed
        w.write(_udp_frame(3000), ts=150.0)  # out of order: counted, the clock stays at 200
    out = tmp_path / "out"
    code, _o, err = cli(["--host", str(host), "--in", f"eth0={cap}", "--out", str(out)])
    assert code == 0, err
    events = (out / "events.txt").read_text().splitlines()
    kinds = [(ln.split()[0], next(f for f in ln.split() if f.startswith("sport="))) for ln in events]
    assert kinds == [("[NEW]", "sport=1000"), ("[DESTROY]", "sport=1000"), ("[NEW]", "sport=2000"),
                     ("[NEW]", "sport=3000")]
    conns = (out / "conntrack.txt").read_text().splitlines()
    # both live flows listed at 200 s: 30 s from their packets (the late one's packet was handled at 200 s)
    assert [c.split()[2] for c in conns] == ["30", "30"]
    assert "timestamps_backwards 1" in (out / "stats.txt").read_text().splitlines()
