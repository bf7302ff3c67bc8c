"""A packet IPv6 generates from inside another packet's path (`ip6_local_out` from `icmp6_send`, the TCP reset
of REJECT, echo replies, ND, SYNPROXY's segments) is sent as IPv4's is (`engine/local.py` `LocalSend`, one
definition for both families): at once, its drop recorded, the other packet's hook given back to the rules
after it, and nesting bounded by LOCAL_NESTING_MAX."""

from __future__ import annotations

from tests.ipv6.test_engine6 import RT_LAN, RT_WAN, SV, _engine, _udp

from natbox.engine.engine import Engine
from natbox.engine.local import LOCAL_NESTING_MAX
from natbox.netfilter import Hook
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
