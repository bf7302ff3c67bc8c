"""Replaying real captures: one taken on the LAN side only (--lan-net), hosts modelled without MACs, the
INVALID warning, progress with % and ETA."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from natbox.adapters.pcap import CaptureReader, PcapWriter
from natbox.adapters.snapshot import load_host
from natbox.cli.replay import _Progress
from natbox.demos.captures import START
from natbox.engine.engine import Engine
from natbox.files import read_text
from natbox.replay.split import NO_MAC, synthetic_mac
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.sim.lab import Lab
from natbox.sim.scenario import parse_scenario
from natbox.testing.natpkt import tcp_packet
from natbox.testing.paths import EXAMPLES
from natbox.testing.replay import cli

HOST = str(EXAMPLES / "masquerade-host.toml")


def _frames(path: Path) -> list[bytes]:
    with CaptureReader(path) as r:
        return [bytes(rec.data) for rec in r]


@pytest.fixture(scope="module")
def client_side(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both directions of examples/masquerade-scenario.toml as a capture on the LAN link (eth0) shows them."""
    hf = load_host(EXAMPLES / "masquerade-host.toml")
    rules = Ruleset()
    rules.restore(parse_restore(hf.host.rules_text, file="masquerade.rules"))
    sc = parse_scenario(read_text(EXAMPLES / "masquerade-scenario.toml"), "masquerade-scenario.toml")
    lab = Lab(hf.host, Engine(hf.host, ruleset=rules, seed=sc.seed), seed=sc.seed)
    sc.install(lab)
    lab.run(until=sc.end_time)
    path = tmp_path_factory.mktemp("split") / "client-side.pcap"
    with PcapWriter(path) as w:
        for cap in lab.captures:
            if cap.iface == "eth0":
                w.write(cap.frame, ts=START + cap.time)
    return path


def test_a_lan_side_capture_split_by_lan_net_replays_as_both_sides(client_side: Path, tmp_path: Path) -> None:
    """The replies in a LAN-side capture enter on the WAN as they reached it (the connection's REPLY
    tuple, the hop given back, ICMP errors quoting the NATed packet): what the host sends is what it
    sends when replaying the two sides' own captures, and the conntrack table is the same."""
    split, both = tmp_path / "split", tmp_path / "both"
    code, _o, err = cli(["--host", HOST, "--in", f"eth0={client_side}", "--lan-net", "192.168.50.0/24",
                         "--out", str(split)])
    assert code == 0, err
    assert cli(["--host", HOST, "--in", str(EXAMPLES / "both.pcapng"), "--out", str(both)])[0] == 0
    assert _frames(split / "eth0.out.pcap") == _frames(both / "eth0.out.pcap")
    # on the WAN side the next hop's MAC is not in a LAN capture: everything from the source MAC on agrees
    wan_split, wan_both = _frames(split / "eth1.out.pcap"), _frames(both / "eth1.out.pcap")
    assert len(wan_split) == len(wan_both) == 11
    assert [f[6:] for f in wan_split] == [f[6:] for f in wan_both]
    strip = [line.split(None, 2)[2] for line in (split / "conntrack.txt").read_text().splitlines()]
    assert strip == [line.split(None, 2)[2] for line in (both / "conntrack.txt").read_text().splitlines()]
    stats = (split / "stats.txt").read_text()
    # the gateway's own ICMP time exceeded is in the capture: its output, not an input
    assert "sent by the host itself (--lan-net: its own packets are its output, not input): 1" in stats


def test_without_lan_net_the_replies_are_lost(client_side: Path, tmp_path: Path) -> None:
    code, _o, _e = cli(["--host", HOST, "--in", f"eth0={client_side}", "--out", str(tmp_path / "o")])
    assert code == 0
    assert len(_frames(tmp_path / "o" / "eth0.out.pcap")) < 12


@pytest.mark.parametrize(("argv", "message"), [
    (["--wan-iface", "eth1"], "--wan-iface needs --lan-net"),
    (["--lan-net", "192.168.50.0/24", "--wan-iface", "eth7"], "--wan-iface eth7: the host has no such interface"),
    (["--lan-net", "192.168.500.0/24"], "--lan-net '192.168.500.0/24': want an IPv4 prefix"),
])
def test_lan_net_usage_errors(argv: list[str], message: str, client_side: Path) -> None:
    code, _o, err = cli(["--host", HOST, "--in", f"eth0={client_side}", *argv])
    assert code == 2 and err.startswith(f"natbox replay: {message}"), err


def test_lan_net_needs_a_wan_interface(client_side: Path, tmp_path: Path) -> None:
    host = tmp_path / "h.toml"
    host.write_text('[[interface]]\nname = "eth0"\naddresses = ["192.168.50.1/24"]\n')
    code, _o, err = cli(["--host", str(host), "--in", f"eth0={client_side}", "--lan-net", "192.168.50.0/24"])
    assert code == 2 and "the host has no default route; say where replies enter with --wan-iface" in err


NO_MAC_HOST = """\
name = "nomac"
ip_forward = true
[[interface]]
name = "eth0"
addresses = ["192.168.50.1/24"]
[[interface]]
name = "eth1"
addresses = ["198.51.100.1/24"]
[[route]]
dst = "default"
via = "198.51.100.254"
[rules]
text = '''
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o eth1 -j MASQUERADE
COMMIT
'''
"""


def test_interfaces_without_a_mac_send_from_a_stable_synthetic_mac(tmp_path: Path) -> None:
    host = tmp_path / "nomac.toml"
    host.write_text(NO_MAC_HOST)
    out = tmp_path / "o"
    code, _o, err = cli(["--host", str(host), "--in", f"eth0={EXAMPLES / 'lan.pcap'}",
                         "--in", f"eth1={EXAMPLES / 'wan.pcap'}", "--out", str(out)])
    assert code == 0, err
    for iface in ("eth0", "eth1"):
        frames = _frames(out / f"{iface}.out.pcap")
        assert frames
        mac = synthetic_mac("nomac", iface)
        assert mac != NO_MAC and mac[0] == 0x02  # locally administered, unicast
        assert {f[6:12] for f in frames} == {mac}
    assert synthetic_mac("nomac", "eth0") == synthetic_mac("nomac", "eth0") != synthetic_mac("nomac", "eth1")


def _invalid_capture(tmp_path: Path) -> Path:
    """A LAN client's TCP segment with SYN and FIN set: conntrack marks it INVALID (tcp_error)."""
    seg = tcp_packet(0xC0A83202, 40000, 0xC633640A, 80, flags=0x03)
    path = tmp_path / "invalid.pcap"
    with PcapWriter(path) as w:
        for i in range(3):
            w.write(b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x50\x02\x08\x00" + bytes(seg), ts=START + i)
    return path


def test_a_warning_names_invalid_packets_forwarded_without_nat(tmp_path: Path) -> None:
    host = tmp_path / "nomac.toml"
    host.write_text(NO_MAC_HOST)
    code, _o, err = cli(["--host", str(host), "--in", f"eth0={_invalid_capture(tmp_path)}", "--quiet"])
    assert code == 0
    assert "warning: 3 packets conntrack marked INVALID were forwarded without NAT" in err
    assert "-m conntrack --ctstate INVALID -j DROP" in err


def test_no_invalid_warning_when_the_ruleset_drops_them(tmp_path: Path) -> None:
    host = tmp_path / "drop.toml"
    host.write_text(NO_MAC_HOST.replace("'''\n*nat", "'''\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
                                        ":OUTPUT ACCEPT [0:0]\n-A FORWARD -m conntrack --ctstate INVALID -j DROP\n"
                                        "COMMIT\n*nat"))
    code, _o, err = cli(["--host", str(host), "--in", f"eth0={_invalid_capture(tmp_path)}", "--quiet"])
    assert code == 0 and "INVALID" not in err, err


def test_progress_shows_share_read_and_eta() -> None:
    out = io.StringIO()
    readers = cast(Any, [SimpleNamespace(bytes_read=250), SimpleNamespace(bytes_read=0)])
    progress = _Progress(out, readers, total_bytes=1000)
    progress.start -= 10.0  # ten seconds in, a quarter read: 30 s to go
    progress.last -= 10.0
    progress(cast(Any, SimpleNamespace(packets=5000)))
    text = out.getvalue()
    assert text.startswith("\rreplaying: 5,000 packets, 500 packets/s, 25% read, ETA 0:30"), text
    progress.clear()
    assert out.getvalue().endswith("\r\x1b[K")


def test_progress_erases_with_spaces_on_a_dumb_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    out = io.StringIO()
    progress = _Progress(out, cast(Any, [SimpleNamespace(bytes_read=10)]), total_bytes=100)
    progress.last -= 1.0
    progress(cast(Any, SimpleNamespace(packets=1024)))
    progress.clear()
    line = out.getvalue().split("\r")[1]
    assert out.getvalue().endswith("\r" + " " * len(line) + "\r") and "\x1b" not in out.getvalue()
