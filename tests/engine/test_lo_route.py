"""IPv4: a route out lo for addresses that are not local delivers what the host sends there to the host itself.

Measured on Linux 6.18 in a throwaway namespace (lo up, ip_forward 1, `ip route add 10.99.0.0/24 dev lo`): a UDP
datagram a process sends to 10.99.0.5:7 (29 bytes) passes OUTPUT, POSTROUTING, PREROUTING and INPUT once each,
never FORWARD, and no ICMP port unreachable comes back; an OUTPUT DNAT of 10.1.0.7 to 10.99.0.5 does the same.
(A datagram from another device for 10.99.0.5 is forwarded out lo and back, once per TTL, 63 times for TTL 64,
then earns a time exceeded: natbox stops it at LOOPBACK_DEPTH_MAX, a known difference, not tested here.)
`__mkroute_output` makes a route out a loopback device RTCF_LOCAL (its dst.input is `ip_local_deliver`), and
`loopback_xmit` keeps the route on the skb, so it is delivered whatever its destination; the port unreachable's
source would be 10.99.0.5 (`__icmp_send` takes iph->daddr for an RTCF_LOCAL route), which
`ip_route_output_key_hash` refuses as not local.
"""

from __future__ import annotations

import pytest

from natbox.conntrack.tuple import parse_addr
from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Route
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.testing.rules_fakes import rule_packets
from natbox.wire import ipv4
from natbox.wire.udp import build_udp

LAN = parse_addr("10.1.0.1")
COUNTED = {"out": "-A OUTPUT -p udp", "post": "-A POSTROUTING -p udp", "pre": "-A PREROUTING -p udp",
           "fwd": "-A FORWARD", "in_udp": "-A INPUT -p udp", "in_icmp": "-A INPUT -p icmp",
           "out_icmp": "-A OUTPUT -p icmp"}
RULES = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
         + "".join(COUNTED[k] + "\n" for k in ("in_udp", "in_icmp", "fwd", "out", "out_icmp")) + "COMMIT\n"
         "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
         ":POSTROUTING ACCEPT [0:0]\n" + COUNTED["pre"] + "\n" + COUNTED["post"] + "\n%sCOMMIT\n"
         "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
         "-A OUTPUT -d 10.1.0.7/32 -p udp -j DNAT --to-destination 10.99.0.5\nCOMMIT\n")


def _engine(listeners: tuple[tuple[int, int], ...] = (), mangle: str = "") -> tuple[Engine, Ruleset]:
    host = Host(ip_forward=True)
    host.add_interface(Interface("lan0", mac=b"\x02\x00\x00\x00\x00\x01"))
    host.add_address("lan0", LAN, 24)
    host.routes.append(Route(parse_addr("10.99.0.0"), 24, "lo"))
    rs = Ruleset()
    rs.restore(parse_restore(RULES % mangle, file="<test>"))
    return Engine(host, ruleset=rs, listeners=listeners), rs


def _counts(rs: Ruleset) -> dict[str, int]:
    """The packet counts of COUNTED's rules."""
    return rule_packets(rs, COUNTED)


@pytest.mark.parametrize("dst", ["10.99.0.5", "10.1.0.7"])
def test_a_datagram_sent_out_a_route_through_lo_is_delivered_to_the_host_without_an_error(dst: str) -> None:
    """Straight to 10.99.0.5, or DNATed there in OUTPUT: delivered once (RTCF_LOCAL), not forwarded, no ICMP."""
    eng, rs = _engine()
    d = parse_addr(dst)
    out = eng.send_local(bytes(ipv4.build_ipv4(LAN, d, 17, build_udp(LAN, d, 5000, 7, b"x"), ttl=64)), 1.0)
    assert _counts(rs) == {"out": 1, "post": 1, "pre": 1, "fwd": 0, "in_udp": 1, "in_icmp": 0, "out_icmp": 0}
    assert out.dropped == [] and out.emitted == []
    (got,) = out.delivered
    assert got.datagram[16:20] == parse_addr("10.99.0.5").to_bytes(4, "big") and len(got.datagram) == 29


def test_a_listener_gets_what_is_sent_out_a_route_through_lo() -> None:
    """With a socket on the port, the datagram is the socket's (ip_local_deliver)."""
    eng, _rs = _engine(listeners=((17, 7),))
    d = parse_addr("10.99.0.5")
    out = eng.send_local(bytes(ipv4.build_ipv4(LAN, d, 17, build_udp(LAN, d, 5000, 7, b"x"), ttl=64)), 1.0)
    assert [x.action for x in out.delivered] == ["socket udp:7"]


def test_a_tee_copy_to_a_gateway_behind_lo_is_delivered_to_the_host() -> None:
    """Measured: `-t mangle -A OUTPUT -d 10.1.0.2 -p udp -j TEE --gateway 10.99.0.1` and a datagram to 10.1.0.2
    (on lan0): OUTPUT and POSTROUTING count 2 (the datagram and its copy), PREROUTING and INPUT 1 (the copy,
    back in on lo and delivered: nf_dup_ipv4's route out lo is RTCF_LOCAL), FORWARD 0, no ICMP sent."""
    eng, rs = _engine(mangle="-A OUTPUT -d 10.1.0.2/32 -p udp -j TEE --gateway 10.99.0.1\n")
    d = parse_addr("10.1.0.2")
    out = eng.send_local(bytes(ipv4.build_ipv4(LAN, d, 17, build_udp(LAN, d, 5000, 7, b"x"), ttl=64)), 1.0)
    assert _counts(rs) == {"out": 2, "post": 2, "pre": 1, "fwd": 0, "in_udp": 1, "in_icmp": 0, "out_icmp": 0}
    assert [e.iface for e in out.emitted] == ["lan0"] and out.dropped == []
    (got,) = out.delivered
    assert got.datagram[16:20] == d.to_bytes(4, "big")
