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
from natbox.skb import Skb6
from natbox.wire.layout import IP6H_DADDR


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


# --- loops through lo: bounded without IPv4's LOOPBACK_DEPTH_MAX ------------------------------------------
# IPv4's loopback_xmit refuses past LOOPBACK_DEPTH_MAX nested deliveries on lo; IPv6's output has no such count,
# and needs none: a packet that comes back in on lo is either delivered to the local stack (whose answers are
# generated packets, bounded by LOCAL_NESTING_MAX above) or routed to be forwarded, and ip6_forward forwards only
# what was addressed to this host at the link layer (PACKET_HOST), never a looped-back packet. So a route, or a
# DNAT in OUTPUT, that sends a packet out lo for an address that is not local, and a TEE whose gateway lies
# behind lo, end after one pass (the TEE copy makes no copy of itself: nf_skb_duplicated), even with hop limit
# 255 where forwarding through lo again and again would have taken 255 passes.

LOOPED = A("fd00:99::5")  # behind lo in _lo_engine, and not a local address
NAT6 = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
        "%sCOMMIT\n")
MANGLE6 = ("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
           ":POSTROUTING ACCEPT [0:0]\n%sCOMMIT\n")


def _lo_engine(rules: str) -> tuple[Engine, list[int]]:
    """_engine's host with fd00:99::/64 routed to lo; the list holds, for each packet that came back in on lo,
    how many such deliveries were under way (itself included)."""
    host = Host(ipv6_forward=True)
    host.add_interface(Interface("lan0", mac=LAN_MAC))
    host.add_interface(Interface("wan0", mac=WAN_MAC))
    host.add_address6("lan0", RT_LAN, 64)
    host.add_address6("wan0", RT_WAN, 64)
    host.routes6.append(Route6(A("fd00:99::"), 64, "lo"))
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
    return eng, depths


@pytest.mark.parametrize("rules", ["", NAT6 % "-A OUTPUT -p udp -j DNAT --to-destination fd00:99::5\n"])
def test_a_packet_sent_out_lo_for_an_address_not_local_comes_back_once_and_is_not_forwarded(rules: str) -> None:
    eng, depths = _lo_engine(rules)
    dst = LOOPED if not rules else RT_WAN + 0x1000  # on wan0's prefix, DNATed behind lo
    out = eng.send_local(_udp(RT_LAN, dst, 5000, 7, hlim=255), 1.0)
    assert depths == [1]
    assert [(d.reason, d.where) for d in out.dropped] == [(DropReason.OTHERHOST, "ip6_forward")]
    assert out.emitted == [] and out.delivered == []


def test_a_tee_copy_to_a_gateway_behind_lo_ends() -> None:
    """-j TEE in PREROUTING with its gateway behind lo: the packet (to this host) and its copy each come back in
    on lo and are delivered, each earning a port unreachable that comes back too; the copy, sent at once while
    nf_skb_duplicated is set, makes no copy when it passes PREROUTING. (The kernel's copy comes back later, by
    netif_rx's backlog, so its kernel bound is another matter: this proves only that natbox's nested sends end.)"""
    eng, depths = _lo_engine(MANGLE6 % "-A PREROUTING -j TEE --gateway fd00:99::1\n")
    out = eng.send_local(_udp(RT_LAN, RT_WAN, 5000, 7, hlim=255), 1.0)
    assert max(depths) == 3 and len(depths) == 5, depths
    assert out.dropped == [] and out.emitted == []
    assert [d.action for d in out.delivered].count("udp port 7 closed: port unreachable sent") == 2


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
