"""A packet IPv6 generates from inside another packet's path (`ip6_local_out` from `icmp6_send`, the TCP reset
of REJECT, echo replies, ND, SYNPROXY's segments) is sent as IPv4's is (`engine/local.py` `LocalSend`, one
definition for both families): at once, its drop recorded, the other packet's hook given back to the rules
after it, and nesting bounded by LOCAL_NESTING_MAX."""

from __future__ import annotations

import pytest
from tests.ipv6.test_engine6 import LAN_MAC, RT_LAN, RT_WAN, SV, WAN_MAC, A, _engine, _udp

from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface, Route6
from natbox.engine.local import LOCAL_NESTING_MAX
from natbox.netfilter import NFPROTO_IPV6, DropReason, Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.rules.printer import save_tables
from natbox.skb import Skb6
from natbox.testing.rules_fakes import rule_packets
from natbox.wire.layout import IP6H_DADDR, IP6H_LEN


def _hook_after_a_nested_send(eng: Engine, datagram: bytes) -> Hook:
    ctx = eng._ctx  # the rules' XtHost, whose hook REDIRECT and NETMAP read
    ctx.hook = Hook.PRE_ROUTING  # a PREROUTING hook is running when the host sends the packet
    eng._out6.queue_local(datagram, None)
    return ctx.hook


def test_an_ipv6_nested_send_gives_the_hook_back() -> None:
    """The generated packet runs LOCAL_OUT and POSTROUTING; the packet whose path it left from goes on in its
    own hook (IPv4's `_send_now` restored it; IPv6's left POSTROUTING for the rest of the outer hook)."""
    eng = _engine()
    assert _hook_after_a_nested_send(eng, _udp(RT_WAN, SV, 5000, 53)) == Hook.PRE_ROUTING


def test_an_ipv6_nested_send_dropped_in_output_gives_the_hook_back() -> None:
    """Dropped at OUTPUT (filter), the generated packet's drop is recorded and the hook is given back."""
    eng = _engine("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                  "-A OUTPUT -p udp -j DROP\nCOMMIT\n")
    assert _hook_after_a_nested_send(eng, _udp(RT_WAN, SV, 5000, 53)) == Hook.PRE_ROUTING
    assert eng.stats["local_nesting_exceeded"] == 0


def test_ipv6_generated_packets_that_cause_more_are_bounded_as_ipv4s() -> None:
    """A generated packet to the host itself that comes back in on lo and makes another, and so on: IPv4 stops
    the chain at LOCAL_NESTING_MAX nested sends and counts it; IPv6 recursed until Python's stack ran out."""
    eng = _engine()
    out6 = eng._out6
    back: list[int] = []

    def looping(skb: Skb6) -> None:  # each packet that comes back in on lo makes another
        back.append(int.from_bytes(skb.data[IP6H_DADDR:IP6H_DADDR + 16], "big"))
        out6.queue_local(_udp(RT_LAN, RT_LAN, 5000, 7), skb)

    out6.loopback_rcv = looping
    eng._ctx.hook = Hook.FORWARD
    out6.queue_local(_udp(RT_LAN, RT_LAN, 5000, 7), None)
    assert back == [RT_LAN] * LOCAL_NESTING_MAX
    assert eng.stats["local_nesting_exceeded"] == 1
    assert eng._ctx.hook == Hook.FORWARD


# --- a route out lo for an address that is not local: a reject route (fib6_is_reject) -----------------------
# Measured on Linux 6.18 in a throwaway namespace (lo up, forwarding on, `ip -6 route add fd00:99::/64 dev lo`):
# a UDP datagram a process sends to fd00:99::5 passes OUTPUT but not POSTROUTING, and an ICMPv6 destination
# unreachable, code 0 (no route), comes back in through INPUT (97 bytes for a 1-byte payload; Ip6OutNoRoutes 1);
# an OUTPUT DNAT to fd00:99::5 does the same; a datagram from another device for fd00:99::5 passes PREROUTING,
# never FORWARD, and its sender gets the ICMPv6 no-route (Ip6InNoRoutes 1). The kernel makes such a route a
# reject route through lo (net/ipv6/route.c fib6_is_reject), whose dst.output is ip6_pkt_discard_out and dst.input
# ip6_pkt_discard. (natbox once let the packet come back in on lo and dropped it in ip6_forward as not
# PACKET_HOST; with lo's packets PACKET_HOST, as Linux has them, it would have been forwarded out lo again.)

LOOPED = A("fd00:99::5")  # behind lo in _lo_engine, and not a local address
NAT6 = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
        "%sCOMMIT\n")
MANGLE6 = ("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
           ":POSTROUTING ACCEPT [0:0]\n%sCOMMIT\n")
# the measurement's counters: the rule lines whose packet counts _counts reads
COUNTED = {"out": "-A OUTPUT -p udp", "post": "-A POSTROUTING -p udp", "pre": "-A PREROUTING -p udp",
           "fwd": "-A FORWARD", "in_udp": "-A INPUT -p udp",
           "in_noroute": "-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 1/0"}
COUNTERS6 = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
             + "".join(COUNTED[k] + "\n" for k in ("in_noroute", "in_udp", "fwd", "out")) + "COMMIT\n"
             + MANGLE6 % (COUNTED["pre"] + "\n" + COUNTED["post"] + "\n"))


def _lo_engine(rules: str) -> tuple[Engine, list[int], Ruleset]:
    """_engine's host with fd00:99::/64 routed to lo (and fd00:98::/64 unreachable); the
    list holds, for each packet that came back in on lo, how many such deliveries were under way (itself
    included)."""
    host = Host(ipv6_forward=True)
    host.add_interface(Interface("lan0", mac=LAN_MAC))
    host.add_interface(Interface("wan0", mac=WAN_MAC))
    host.add_address6("lan0", RT_LAN, 64)
    host.add_address6("wan0", RT_WAN, 64)
    host.routes6.append(Route6(A("fd00:99::"), 64, "lo"))
    host.routes6.append(Route6(A("fd00:98::"), 64, type="unreachable"))
    host.routes6.append(Route6(0, 0, "wan0", gateway=SV))
    rs = Ruleset(NFPROTO_IPV6)
    if rules:
        rs.restore(parse_restore(rules, file="<test>", family=NFPROTO_IPV6))
    eng = Engine(host, ruleset6=rs)
    depths: list[int] = []
    under_way = [0]
    out6 = eng._out6
    rcv = out6.loopback_rcv

    def counted(skb: Skb6) -> None:
        under_way[0] += 1
        depths.append(under_way[0])
        try:
            rcv(skb)
        finally:
            under_way[0] -= 1

    out6.loopback_rcv = counted
    return eng, depths, rs


def _counts(rs: Ruleset) -> dict[str, int]:
    """The packet counts of COUNTED's rules."""
    return rule_packets(rs, COUNTED)


@pytest.mark.parametrize("dnat", [False, True])
def test_a_datagram_sent_to_an_address_behind_lo_passes_output_and_earns_icmpv6_no_route(dnat: bool) -> None:
    """Sent to fd00:99::5, or to an address on wan0's prefix that OUTPUT DNATs to it: OUTPUT counts the datagram,
    POSTROUTING does not (ip6_pkt_discard_out replaces ip6_output), and the ICMPv6 no-route comes back through
    INPUT once, as measured."""
    eng, depths, rs = _lo_engine(COUNTERS6 + (NAT6 % "-A OUTPUT -p udp -j DNAT --to-destination fd00:99::5\n"
                                              if dnat else ""))
    dst = RT_WAN + 0x1000 if dnat else LOOPED
    out = eng.send_local(_udp(RT_LAN, dst, 5000, 7, hlim=255), 1.0)
    assert _counts(rs) == {"out": 1, "post": 0, "pre": 0, "fwd": 0, "in_udp": 0, "in_noroute": 1}
    assert depths == [1]
    assert [(d.reason, d.where) for d in out.dropped] == [(DropReason.NO_ROUTE, "ip6_pkt_discard_out")]
    assert out.emitted == []
    (err,) = out.delivered
    assert err.datagram[IP6H_DADDR:IP6H_DADDR + 16] == RT_LAN.to_bytes(16, "big")
    assert err.datagram[IP6H_LEN:IP6H_LEN + 2] == b"\x01\x00"  # destination unreachable, no route


def test_an_unreachable_route_sends_nothing() -> None:
    """For comparison (measured: `ip -6 route add unreachable fd00:98::/64`): sendto fails with EHOSTUNREACH, no
    packet passes OUTPUT, no ICMPv6 is sent."""
    eng, depths, rs = _lo_engine(COUNTERS6)
    out = eng.send_local(_udp(RT_LAN, A("fd00:98::5"), 5000, 7), 1.0)
    assert _counts(rs)["out"] == 0 and depths == [] and out.delivered == [] and out.emitted == []
    assert [(d.reason, d.where) for d in out.dropped] == [(DropReason.NO_ROUTE, "ip6_route_output")]


def test_a_datagram_from_another_device_for_an_address_behind_lo_is_not_forwarded() -> None:
    """From wan0 to fd00:99::5: PREROUTING counts it, FORWARD does not, and the sender gets the ICMPv6 no-route
    (ip6_pkt_discard), as measured."""
    eng, depths, rs = _lo_engine(COUNTERS6)
    out = eng.receive_ip(_udp(SV, LOOPED, 5000, 7), "wan0", 1.0)
    assert _counts(rs) == {"out": 0, "post": 0, "pre": 1, "fwd": 0, "in_udp": 0, "in_noroute": 0}
    assert depths == []
    assert [(d.reason, d.where) for d in out.dropped] == [(DropReason.NO_ROUTE, "ip6_route_input")]
    (err,) = out.emitted
    assert err.iface == "wan0"
    ip6 = err.frame[14:]
    assert ip6[IP6H_DADDR:IP6H_DADDR + 16] == SV.to_bytes(16, "big") and ip6[IP6H_LEN:IP6H_LEN + 2] == b"\x01\x00"


def test_addrtype_calls_an_address_behind_lo_unreachable() -> None:
    """`match_lookup_rt6`: a route with RTF_REJECT is XT_ADDRTYPE_UNREACHABLE (measured: `-m addrtype --dst-type
    UNREACHABLE` in OUTPUT counts the datagram sent to fd00:99::5, `--dst-type LOCAL` does not)."""
    rules = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
             "-A OUTPUT -p udp -m addrtype --dst-type UNREACHABLE\n-A OUTPUT -p udp -m addrtype --dst-type LOCAL\n"
             "COMMIT\n")
    eng, _depths, rs = _lo_engine(rules)
    eng.send_local(_udp(RT_LAN, LOOPED, 5000, 7), 1.0)
    saved = save_tables(rs.saved_tables(), "D", counters=True)
    assert "[1:53] -A OUTPUT -p udp -m addrtype --dst-type UNREACHABLE" in saved, saved
    assert "[0:0] -A OUTPUT -p udp -m addrtype --dst-type LOCAL" in saved, saved


def test_a_tee_copy_to_a_gateway_behind_lo_ends() -> None:
    """-j TEE in PREROUTING with its gateway behind lo: the packet to this host comes back in on lo; its copy,
    routed by the reject route, passes LOCAL_OUT and is discarded by ip6_pkt_discard_out with an ICMPv6 no-route
    to the sender; the port unreachable the packet earns comes back in on lo too, and its copy is discarded with
    no error about an error. (The kernel's lo packets come back later, by netif_rx's backlog, so the order
    differs: this proves only that natbox's nested sends end.)"""
    eng, depths, _rs = _lo_engine(MANGLE6 % "-A PREROUTING -j TEE --gateway fd00:99::1\n")
    out = eng.send_local(_udp(RT_LAN, RT_WAN, 5000, 7, hlim=255), 1.0)
    assert depths == [1, 2, 2], depths
    assert [(d.reason, d.where) for d in out.dropped] == [(DropReason.NO_ROUTE, "ip6_pkt_discard_out")] * 2
    assert out.emitted == []
    assert [d.action for d in out.delivered] == ["icmpv6 to the local stack", "icmpv6 to the local stack",
                                                 "udp port 7 closed: port unreachable sent"]


def test_a_host_udp_datagram_from_and_to_the_loopback_address_gets_a_port_unreachable_on_lo() -> None:
    """[V] Linux 6.18: a UDP socket ::1 -> ::1:9 (closed) gets ECONNREFUSED: `icmp6_send` refuses only an
    unspecified or multicast source (RFC 4443 2.4), not ::1, as IPv4's `__icmp_send` does not refuse 127/8."""
    eng = _engine("")
    datagram = _udp(1, 1, 40000, 9)
    out = eng.send_local(datagram, 1.0)
    assert out.emitted == [] and out.dropped == []
    (err,) = [d.datagram for d in out.delivered if d.datagram[6] == 58]
    assert int.from_bytes(err[8:24], "big") == 1 and int.from_bytes(err[24:40], "big") == 1
    assert (err[40], err[41]) == (1, 4)  # destination unreachable, port unreachable
    assert err[48:] == datagram
