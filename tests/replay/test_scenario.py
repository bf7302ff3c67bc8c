"""Scenario files: parsing errors name file:line and the key; the examples run and give Linux's results;
DNS queries and answers are RFC 1035 messages; `natbox explain` shows the DNAT rule and binding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natbox.adapters.pcap import CaptureReader
from natbox.render.tcpdump import tcpdump_line
from natbox.sim.scenario import ScenarioError, build_dns_query, dns_answer, parse_scenario
from natbox.testing.paths import EXAMPLES
from natbox.testing.replay import cli

MASQ_HOST = str(EXAMPLES / "masquerade-host.toml")
MASQ_SCENARIO = str(EXAMPLES / "masquerade-scenario.toml")
DOCKER_HOST = str(EXAMPLES / "docker-host.toml")
DOCKER_SCENARIO = str(EXAMPLES / "docker-scenario.toml")


def _lines(path: Path) -> list[str]:
    with CaptureReader(path) as r:
        return [tcpdump_line(rec.data, eflag=False) for rec in r]


def test_masquerade_scenario(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _o, err = cli(["--host", MASQ_HOST, "--scenario", MASQ_SCENARIO, "--out", str(out)])
    assert code == 0, err
    # conntrack -L at t = 10 s (duration). UDP entries: 30 s (nf_conntrack_udp_timeout) from their last
    # packet; the echo's 30 s from its last reply (1.0003); TCP closed normally sits in TIME_WAIT (120 s from
    # the last ACK at 3.0011); the reset answer to the SYN to port 81 killed its entry (tcp_packet: a RST as
    # the only reply), and the TTL-1 ping was dropped before confirmation.
    assert (out / "conntrack.txt").read_text().splitlines() == [
        "icmp     1 21 src=192.168.50.2 dst=198.51.100.10 type=8 code=0 id=7 src=198.51.100.10 dst=198.51.100.1 "
        "type=0 code=0 id=7 mark=0 use=1",
        "udp      17 22 src=192.168.50.2 dst=198.51.100.53 sport=53000 dport=53 src=198.51.100.53 dst=198.51.100.1 "
        "sport=53 dport=53000 mark=0 use=1",
        "tcp      6 113 TIME_WAIT src=192.168.50.2 dst=198.51.100.10 sport=40000 dport=80 src=198.51.100.10 "
        "dst=198.51.100.1 sport=80 dport=40000 [ASSURED] mark=0 use=1",
        "udp      17 24 src=192.168.50.2 dst=198.51.100.10 sport=40001 dport=7 src=198.51.100.10 dst=198.51.100.1 "
        "sport=7 dport=40001 mark=0 use=1",
        "udp      17 25 src=192.168.50.2 dst=198.51.100.10 sport=40002 dport=9999 [UNREPLIED] src=198.51.100.10 "
        "dst=198.51.100.1 sport=9999 dport=40002 mark=0 use=1",
    ]
    eth0 = _lines(out / "eth0.out.pcap")
    eth1 = _lines(out / "eth1.out.pcap")
    # the DNS query leaves masqueraded, its answer (A record, authoritative) comes back to the client
    assert "IP 198.51.100.1.53000 > 198.51.100.53.53: 4660+ A? example.com. (29)" in eth1
    assert "IP 198.51.100.53.53 > 192.168.50.2.53000: 4660*- 1/0/0 A 198.51.100.10 (45)" in eth0
    # the port unreachable is translated back to the client (§4.9)
    assert "IP 198.51.100.10 > 192.168.50.2: ICMP 198.51.100.10 udp port 9999 unreachable, length 43" in eth0
    # TTL 1: time exceeded from the address of the interface the packet came in on (icmp_send)
    assert "IP 192.168.50.1 > 192.168.50.2: ICMP time exceeded in-transit, length 92" in eth0
    assert not any("id 8" in ln for ln in eth1)
    stats = (out / "stats.txt").read_text().splitlines()
    assert "ttl_exceeded 1" in stats


def test_docker_explain_names_the_dnat_rule_and_binding() -> None:
    code, out, err = cli(["--host", DOCKER_HOST, "--scenario", DOCKER_SCENARIO, "--json"], explain=True)
    assert code == 0, err
    recs = [json.loads(line) for line in out.splitlines()]
    syn = next(r for r in recs if "114.246.99.100.60677 > 45.77.200.180.10000: Flags [S]" in r["packet"])
    trace = syn["trace"]
    rule = "nat DOCKER #2 ! -i docker0 -p tcp -m tcp --dport 10000: match -> DNAT --to-destination 172.17.0.2:8000"
    assert any(step.startswith(rule) for step in trace)
    ct = syn["ct"]
    assert any(step.startswith(f"DNAT: ct #{ct} 45.77.200.180:10000 -> 172.17.0.2:8000") for step in trace)
    assert syn["verdict"] == "forwarded" and syn["emitted"][0]["iface"] == "docker0"
    assert "114.246.99.100.60677 > 172.17.0.2.8000: Flags [S]" in syn["emitted"][0]["packet"]
    # the text form of that packet alone, without colour
    code, text, _err = cli(["--host", DOCKER_HOST, "--scenario", DOCKER_SCENARIO, "--packet", str(syn["n"]),
                            "--color", "never"], explain=True)
    assert code == 0
    lines = text.splitlines()
    assert lines[0].startswith(f"#{syn['n']} 00:00:02.000100 in eth0 (docker-scenario.toml #{syn['n']}): IP ")
    assert any(ln.strip().startswith(rule) for ln in lines)
    assert lines[-1].startswith(f"  => sent on docker0 (ct #{ct}): IP 114.246.99.100.60677 > 172.17.0.2.8000")
    assert "\x1b[" not in text
    code, coloured, _err = cli(["--host", DOCKER_HOST, "--scenario", DOCKER_SCENARIO, "--packet", str(syn["n"]),
                                "--color", "always"], explain=True)
    assert "\x1b[32m  => sent on docker0" in coloured


def test_docker_replay_summary() -> None:
    code, out, err = cli(["--host", DOCKER_HOST, "--scenario", DOCKER_SCENARIO, "--color", "never"])
    assert code == 0, err
    assert "# tcpdump -nne -i docker0" in out and "# conntrack -L" in out
    # TIME_WAIT (120 s) from the last ACK at 2.0011 s, listed at 10 s
    assert ("tcp      6 112 TIME_WAIT src=114.246.99.100 dst=45.77.200.180 sport=60677 dport=10000 src=172.17.0.2 "
            "dst=114.246.99.100 sport=8000 dport=60677 [ASSURED] mark=0 use=1") in out.splitlines()


BAD_CASES = [
    ('[[host]]\nname = "a"\ninterface = "eth0"\naddress = "10.0.0.2/24"\ncolour = "red"\n',
     "f.toml:5: host[0].colour: unknown key"),
    ('[[host]]\nname = "a"\ninterface = "eth0"\naddress = "10.0.0.300/24"\n',
     "f.toml:4: host[0].address: bad address '10.0.0.300/24'"),
    ('[[host]]\nname = "a"\ninterface = "eth0"\naddress = "10.0.0.2/24"\n\n[[action]]\nat = 1\nfrom = "b"\n'
     'ping = "10.0.0.1"\n', "f.toml:8: action[0].from: no host named 'b' (hosts: a)"),
    ('[[host]]\nname = "a"\ninterface = "eth0"\naddress = "10.0.0.2/24"\n\n[[action]]\nat = 1\nfrom = "a"\n'
     'dns = "example.com"\n', "f.toml:6: action[0].server: a dns action needs server"),
    ('[[host]]\nname = "a"\ninterface = "eth0"\naddress = "10.0.0.2/24"\n\n[[action]]\nat = 1\nfrom = "a"\n'
     'udp = "10.0.0.1"\n', "f.toml:9: action[0].udp: udp must be \"a.b.c.d:port\""),
    ('[[action]]\nat = 1\nfrom = "a"\n', "f.toml:1: action[0]: give exactly one of ping, tcp, udp, dns"),
    ('duration = "long"\n', "f.toml:1: duration: duration must be a number >= 0"),
    ('[[host]\n', "f.toml:1:"),
]


@pytest.mark.parametrize(("text", "message"), BAD_CASES)
def test_scenario_errors_name_file_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "f.toml")
    assert str(info.value).startswith(message)


def test_unknown_interface_is_reported_with_its_line(tmp_path: Path) -> None:
    sc = tmp_path / "s.toml"
    sc.write_text('duration = 1\n\n[[host]]\nname = "a"\ninterface = "wlan0"\naddress = "10.0.0.2/24"\n')
    code, _o, err = cli(["--host", MASQ_HOST, "--scenario", str(sc)])
    assert code == 2
    assert err == (f"natbox replay: {sc}:3: host[0].interface: the host has no interface 'wlan0' "
                   "(it has: eth0, eth1)\n")


def test_dns_messages() -> None:
    q = build_dns_query(0x1234, "example.com")
    # RFC 1035 §4.1: header (id, RD, QDCOUNT 1), QNAME as labels, QTYPE A, QCLASS IN
    assert q == bytes.fromhex("123401000001000000000000") + b"\x07example\x03com\x00" + b"\x00\x01\x00\x01"
    a = dns_answer(q, {"example.com": 0xC6336401})
    assert a is not None
    assert a[:12] == bytes.fromhex("1234850000010001") + b"\x00\x00\x00\x00"  # QR AA RD, NOERROR, 1 answer
    assert a[12:12 + len(q) - 12] == q[12:]
    assert a[-16:] == bytes.fromhex("c00c00010001") + (300).to_bytes(4, "big") + bytes.fromhex("0004c6336401")
    nx = dns_answer(build_dns_query(7, "nowhere.test"), {"example.com": 1})
    assert nx is not None and nx[3] & 0x0F == 3 and nx[6:8] == b"\x00\x00"  # NXDOMAIN, no answer


@given(st.binary(max_size=80))
def test_dns_answer_never_raises(data: bytes) -> None:
    dns_answer(data, {"a.b": 1})


def test_explain_of_a_packet_whose_ttl_runs_out() -> None:
    code, out, err = cli(["--host", MASQ_HOST, "--scenario", MASQ_SCENARIO, "--color", "never"], explain=True)
    assert code == 0, err
    blocks = out.split("\n#")
    ttl1 = next(b for b in blocks if "ICMP echo request, id 8, seq 1" in b.splitlines()[0])
    lines = ttl1.splitlines()
    # ip_forward: TTL <= 1 → ICMP time exceeded (type 11 code 0) to the sender, packet dropped (§1.2)
    assert "    icmp_send: ICMP type 11 code 0 to 192.168.50.2" in lines
    assert "  => dropped at ip_forward: ttl_exceeded (ttl 1)" in lines
    sent = [ln for ln in lines if ln.startswith("  => sent on eth0")]
    assert len(sent) == 1 and "IP 192.168.50.1 > 192.168.50.2: ICMP time exceeded in-transit" in sent[0]
    # every packet of the run is explained, in order
    heads = [b.splitlines()[0] for b in blocks]
    assert heads[0].startswith("#1 00:00:00.000100 in eth0 (masquerade-scenario.toml #1): IP 192.168.50.2 > ")
    assert [int(h.lstrip("#").split()[0]) for h in heads] == list(range(1, len(heads) + 1))
