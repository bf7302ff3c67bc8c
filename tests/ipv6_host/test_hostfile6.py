"""Host files and snapshots carry IPv6: addresses, routes, neighbours, forwarding and an ip6tables ruleset,
and `natbox replay` (and the gateway's loader) run an engine with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from natbox.adapters.snapshot import SNAPSHOT_COMMANDS, load_host
from natbox.engine.hostfile import HostFileError, parse_host_toml
from natbox.errors import UsageError
from natbox.netfilter import NFPROTO_IPV6
from natbox.wire.ethernet import ETH_P_IPV6, build_ethernet
from natbox.wire.icmpv6 import build_icmpv6_echo
from natbox.wire.ipv6 import format_addr6, parse_addr6

RULES6 = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s fd00:77::/64 -o eth1 -j MASQUERADE
COMMIT
"""

HOST = """name = "gw6"
ip_forward = true
[[interface]]
name = "eth0"
mac = "02:00:00:00:00:01"
addresses = ["192.168.50.1/24", "fd00:77::1/64", "fe80::1/64"]
[[interface]]
name = "eth1"
mac = "02:00:00:00:00:02"
addresses = ["198.51.100.1/24", "2001:db8:100::1/64"]
[[route]]
dst = "default"
via = "2001:db8:100::10"
[[route]]
dst = "2001:db8:300::/48"
type = "unreachable"
[[neighbour]]
dev = "eth1"
addr = "2001:db8:100::10"
mac = "02:5e:00:00:00:10"
[sysctl]
"net.ipv6.conf.all.forwarding" = 1
[rules6]
file = "rules.v6"
"""


def _write(tmp_path: Path, host: str = HOST, rules6: str = RULES6) -> Path:
    (tmp_path / "rules.v6").write_text(rules6)
    p = tmp_path / "gw6.toml"
    p.write_text(host)
    return p


def test_host_file_ipv6_model(tmp_path: Path) -> None:
    hf = load_host(_write(tmp_path))
    host = hf.host
    assert host.ipv6_forward
    assert [f"{format_addr6(a.addr)}/{a.prefixlen}" for a in host.interfaces["eth0"].addresses6] == [
        "fd00:77::1/64", "fe80::1/64"]  # global scope first (addr_list order)
    r_def, r_unr = host.routes6
    assert (r_def.prefixlen, r_def.dev, r_def.gateway, r_def.metric) == (0, "eth1", parse_addr6("2001:db8:100::10"),
                                                                         1024)
    assert (format_addr6(r_unr.dst), r_unr.prefixlen, r_unr.type, r_unr.dev) == ("2001:db8:300::", 48,
                                                                                 "unreachable", None)
    assert [(n.dev, n.addr) for n in host.neighbours] == [("eth1", parse_addr6("2001:db8:100::10"))]
    assert host.rules6_text == RULES6 and hf.rules6_origin == str(tmp_path / "rules.v6")
    assert [a.prefixlen for a in host.interfaces["eth1"].addresses] == [24]


def test_replay_engine_masquerades_ipv6(tmp_path: Path) -> None:
    from natbox.cli.replay import ReplayOptions, _build_engine

    engine, _, _ = _build_engine(ReplayOptions(host=str(_write(tmp_path)), inputs=[]), events=False)
    assert engine.rules6.family == NFPROTO_IPV6 and "nat" in engine.rules6.present
    c1, sv = parse_addr6("fd00:77::2"), parse_addr6("2001:db8:100::10")
    frame = build_ethernet(b"\x02\x00\x00\x00\x00\x01", b"\x02\xc1\x00\x00\x00\x01", ETH_P_IPV6,
                           build_icmpv6_echo(c1, sv, 7, 1, b"ping", reply=False))
    out = engine.receive(bytes(frame), "eth0", 1.0)
    (e,) = out.emitted
    assert e.iface == "eth1" and e.frame[:6] == b"\x02\x5e\x00\x00\x00\x10"
    assert format_addr6(int.from_bytes(e.frame[14 + 8:14 + 24], "big")) == "2001:db8:100::1"
    assert e.frame[14 + 7] == 63  # hop limit decremented


def test_inline_rules6_and_ipv6_forward_key() -> None:
    hf = parse_host_toml('ipv6_forward = true\n[[interface]]\nname = "eth0"\n[rules6]\ntext = """' + RULES6
                         + '"""\n', "h.toml")
    assert hf.host.ipv6_forward and hf.host.rules6_text == RULES6 and hf.rules6_origin == "h.toml[rules6.text]"


@pytest.mark.parametrize(("snippet", "message"), [
    ('[[interface]]\nname = "eth0"\naddresses = ["fd00::1/129"]\n',
     "h.toml:3: interface[0].addresses: bad IPv6 prefix 'fd00::1/129' (want addr/len)"),
    ('[[interface]]\nname = "eth0"\naddresses = ["fd00::1/64"]\n[[route]]\ndst = "fd00:1::1/64"\ndev = "eth0"\n',
     "h.toml:5: route[0].dst: 'fd00:1::1/64' has host bits set"),
    ('[[interface]]\nname = "eth0"\naddresses = ["fd00::1/64"]\n[[route]]\ndst = "default"\nvia = "2001:db8::1"\n',
     "h.toml:6: route[0].via: gateway 2001:db8::1 is not on any interface's IPv6 prefix (No route to host)"),
    ('[[interface]]\nname = "eth0"\n[[route]]\ndst = "::/0"\nvia = "fe80::1"\n',
     "h.toml:5: route[0].via: a link-local gateway fe80::1 needs dev"),
    ('[[interface]]\nname = "eth0"\n[[route]]\ndst = "::/0"\ndev = "eth0"\ntable = "local"\n',
     "h.toml:6: route[0].table: IPv6 routes are in table main only"),
    ('[rules6]\nfile = 3\n', "h.toml:2: rules6[0].file: must be a string"),
    ('[rules6]\nfiles = "x"\n', "h.toml:2: rules6[0].files: unknown key (known: file, text)"),
    ('[sysctl]\n"net.ipv6.conf.all.forwarding" = 2\n',
     "h.toml:2: sysctl[0].net.ipv6.conf.all.forwarding: net.ipv6.conf.all.forwarding must be 0 or 1, not '2'"),
])
def test_ipv6_errors_are_file_line_one_liners(snippet: str, message: str) -> None:
    with pytest.raises(HostFileError) as exc:
        parse_host_toml(snippet, "h.toml")
    assert str(exc.value) == message


def test_bad_rules6_named_by_replay(tmp_path: Path) -> None:
    from natbox.cli.replay import ReplayOptions, _build_engine

    p = _write(tmp_path, rules6="*nat\n-A POSTROUTING -j NOPE\nCOMMIT\n")
    with pytest.raises(UsageError) as exc:
        _build_engine(ReplayOptions(host=str(p), inputs=[]), events=False)
    assert str(exc.value).startswith(str(tmp_path / "rules.v6") + ":")
    assert "\n" not in str(exc.value).strip()


def test_snapshot_records_the_ipv6_files() -> None:
    assert SNAPSHOT_COMMANDS["ip6tables.rules"] == ["ip6tables-save", "-c"]
    assert SNAPSHOT_COMMANDS["route6.json"][:3] == ["ip", "-6", "-j"]
    assert "net\\.ipv6\\.conf\\.all\\.forwarding" in SNAPSHOT_COMMANDS["sysctl6.txt"][-1]


def test_natbox_replay_of_an_ipv6_capture(tmp_path: Path) -> None:
    """`natbox replay --host gw6.toml --in eth0=lan6.pcap`: the summary prints the MASQUERADEd ICMPv6 echo
    as tcpdump would, and --out/--pcapng writes it (pcapng read back)."""
    import io

    from natbox.adapters.pcap import CaptureReader
    from natbox.adapters.pcap_write import PcapWriter
    from natbox.cli.replay import main_for

    host = _write(tmp_path)
    c1, sv = parse_addr6("fd00:77::2"), parse_addr6("2001:db8:100::10")
    with PcapWriter(tmp_path / "lan6.pcap") as w:
        w.write(bytes(build_ethernet(b"\x02\x00\x00\x00\x00\x01", b"\x02\xc1\x00\x00\x00\x01", ETH_P_IPV6,
                                     build_icmpv6_echo(c1, sv, 7, 1, b"ping", reply=False))), ts=1_700_000_000.0)
    out, err = io.StringIO(), io.StringIO()
    rc = main_for(["--host", str(host), "--in", f"eth0={tmp_path / 'lan6.pcap'}"], prog="natbox replay",
                  explain_cmd=False, stdout=out, stderr=err)
    assert rc == 0, err.getvalue()
    assert "(0x86dd), length 66: 2001:db8:100::1 > 2001:db8:100::10: ICMP6, echo request, id " in out.getvalue()
    assert "src=fd00:77::2 dst=2001:db8:100::10 type=128 code=0 id=7" in out.getvalue()
    (tmp_path / "out").mkdir()
    rc = main_for(["--host", str(host), "--in", f"eth0={tmp_path / 'lan6.pcap'}", "--out", str(tmp_path / "out"),
                   "--pcapng", str(tmp_path / "out" / "all.pcapng"), "-q"], prog="natbox replay",
                  explain_cmd=False, stdout=io.StringIO(), stderr=err)
    assert rc == 0, err.getvalue()
    frames = [bytes(r.data) for r in CaptureReader(tmp_path / "out" / "all.pcapng")]
    assert len(frames) == 1 and frames[0][12:14] == b"\x86\xdd"
    assert frames[0][14 + 24:14 + 40] == sv.to_bytes(16, "big")


def test_gateway_loads_rules6_and_forwards_ipv6_under_adopt(tmp_path: Path) -> None:
    from natbox.gateway.config import GatewayConfig
    from natbox.gateway.state import load

    host = str(_write(tmp_path))
    hf, _ = load(GatewayConfig(host_file=host))
    assert hf.host.ipv6_forward and hf.ruleset6 is not None and "nat" in hf.ruleset6.present
    hf, _ = load(GatewayConfig(host_file=host, adopt=True))  # --adopt withdraws the kernel's IPv6: natbox forwards
    assert hf.host.ipv6_forward and hf.ruleset6 is not None and "nat" in hf.ruleset6.present
