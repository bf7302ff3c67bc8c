"""ip6tables rules in the engine's IPv6 path: a ruleset parsed as ip6tables (Ruleset(NFPROTO_IPV6)) filters,
logs (the kernel's IPv6 LOG line) and rejects forwarded IPv6 packets."""

from __future__ import annotations

import struct

from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Route6
from natbox.rules.evaluate import Ruleset
from natbox.rules.model import NFPROTO_IPV6
from natbox.rules.parser import parse_restore
from natbox.wire.ethernet import ETH_P_IPV6, build_ethernet
from natbox.wire.icmpv6 import build_icmpv6_echo
from natbox.wire.ipv6 import build_ipv6, parse_addr6

LAN_MAC, WAN_MAC = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
C1_MAC, SV_MAC = b"\x02\xc1\x00\x00\x00\x01", b"\x02\x5e\x00\x00\x00\x10"
C1, C2, RT_LAN = parse_addr6("fd00:77::2"), parse_addr6("fd00:77::3"), parse_addr6("fd00:77::1")
SV, RT_WAN = parse_addr6("2001:db8:100::10"), parse_addr6("2001:db8:100::1")

RULES = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -s fd00:77::2/128 -p ipv6-icmp -m icmp6 --icmpv6-type echo-request -j LOG --log-prefix "ping6: "
-A FORWARD -s fd00:77::3/128 -p udp -m udp --dport 53 -j REJECT --reject-with icmp6-adm-prohibited
-A FORWARD -s fd00:77::/64 -m hl --hl-lt 10 -j DROP
COMMIT
"""


def _engine() -> Engine:
    host = Host(ipv6_forward=True)
    host.add_interface(Interface("lan0", mac=LAN_MAC))
    host.add_interface(Interface("wan0", mac=WAN_MAC))
    host.add_address6("lan0", RT_LAN, 64)
    host.add_address6("wan0", RT_WAN, 64)
    host.routes6.append(Route6(0, 0, "wan0", gateway=SV))
    rs = Ruleset(NFPROTO_IPV6)
    rs.restore(parse_restore(RULES, file="<test>", family=NFPROTO_IPV6))
    return Engine(host, ruleset6=rs)


def _frame(datagram: bytes | bytearray) -> bytes:
    return bytes(build_ethernet(LAN_MAC, C1_MAC, ETH_P_IPV6, datagram))


def _udp(src: int, dst: int, dport: int, hlim: int = 64) -> bytes:
    return bytes(build_ipv6(src, dst, 17, struct.pack("!HHHH", 40000, dport, 8, 0), hop_limit=hlim))


def test_log_line_of_a_forwarded_echo_request() -> None:
    eng = _engine()
    out = eng.receive(_frame(build_icmpv6_echo(C1, SV, 7, 1, b"x" * 8, reply=False)), "lan0", 1.0)
    assert [e.iface for e in out.emitted] == ["wan0"]
    [log] = out.logs
    assert log.text == (
        "ping6: IN=lan0 OUT=wan0 MAC=02:00:00:00:00:01:02:c1:00:00:00:01:86:dd "
        "SRC=fd00:0077:0000:0000:0000:0000:0000:0002 DST=2001:0db8:0100:0000:0000:0000:0000:0010 LEN=56 TC=0 "
        "HOPLIMIT=63 FLOWLBL=0 PROTO=ICMPv6 TYPE=128 CODE=0 ID=7 SEQ=1 ")


def test_reject_answers_with_icmpv6_administratively_prohibited() -> None:
    eng = _engine()
    out = eng.receive(_frame(_udp(C2, SV, 53)), "lan0", 1.0)
    assert not [e for e in out.emitted if e.iface == "wan0"]
    [err] = [e.frame[14:] for e in out.emitted if e.iface == "lan0"]
    assert err[6] == 58 and int.from_bytes(err[24:40], "big") == C2
    assert (err[40], err[41]) == (1, 1)  # destination unreachable, administratively prohibited


def test_hop_limit_match_sees_the_decremented_hop_limit() -> None:
    """FORWARD runs after ip6_forward took one off the hop limit: 10 arrives as 9 < 10 and is dropped."""
    eng = _engine()
    assert [e.iface for e in eng.receive(_frame(_udp(C1, SV, 9, hlim=10)), "lan0", 1.0).emitted] == []
    assert [e.iface for e in eng.receive(_frame(_udp(C1, SV, 9, hlim=11)), "lan0", 1.1).emitted] == ["wan0"]
