"""Untrusted packets never raise: every match and target on arbitrary transport bytes."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from natbox.netfilter import CtInfo, Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.skb import Skb
from natbox.testing.rules_fakes import FakeCtx

RULES = """*filter
-A INPUT -p tcp -m tcp --sport 1:100 --dport 80 --tcp-flags SYN,ACK SYN
-A INPUT -p tcp -m tcp --tcp-option 2
-A INPUT -p udp -m udp --dport 53
-A INPUT -p icmp -m icmp --icmp-type 3/4
-A INPUT -p tcp -m multiport --ports 22,80:90
-A INPUT -p udp -m multiport --dports 5,6
-m conntrack --ctstate NEW --ctproto tcp --ctorigdstport 80 --ctexpire 1:100
-A INPUT -m state --state ESTABLISHED
-A INPUT -m addrtype --src-type LOCAL --limit-iface-in
-A INPUT -m length --length 20:40 -m ttl --ttl-lt 3 -m pkttype --pkt-type broadcast
-A INPUT -m iprange --src-range 10.0.0.1-10.0.0.5 -m mac --mac-source 00:11:22:33:44:55
-A INPUT -m limit --limit 1/sec -m statistic --mode random --probability 0.3 -m mark --mark 1/1
-A INPUT -m connmark --mark 0 -j LOG
-A INPUT -f -j ACCEPT
-A INPUT -j REJECT
COMMIT
""".replace("\n-m conntrack", "\n-A INPUT -m conntrack")


@settings(max_examples=400, deadline=None)
@given(proto=st.sampled_from([1, 6, 17, 47, 0, 255]), payload=st.binary(max_size=64),
       frag=st.integers(0, 0xFFFF), ttl=st.integers(0, 255))
def test_arbitrary_payloads_never_raise(proto: int, payload: bytes, frag: int, ttl: int) -> None:
    rs = Ruleset()
    rs.restore(parse_restore(RULES))
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, frag, ttl, proto, 0,
                      bytes([10, 0, 0, 3]), bytes([10, 0, 0, 9]))
    skb = Skb(bytearray(hdr + payload), iif="eth0")
    skb.ctinfo = CtInfo.INVALID
    skb.trace = []
    verdict = rs.run("filter", Hook.LOCAL_IN, skb, FakeCtx(Hook.LOCAL_IN))
    assert verdict in (0, 1)
    assert skb.trace
