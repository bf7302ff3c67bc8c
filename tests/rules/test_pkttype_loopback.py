"""`-m pkttype` on what the host sends itself through lo: PACKET_HOST ("unicast"), as on Linux.

Measured on Linux 6.18 in a throwaway namespace: with `-i lo -m pkttype --pkt-type unicast|broadcast|multicast`
in INPUT (iptables and ip6tables) and `-o lo ...` in OUTPUT, `ping -c 2 127.0.0.1` and `ping -c 2 ::1` count
4 packets on the unicast rules and none on the others. `loopback_xmit` leaves a locally made skb's type
(PACKET_HOST) as it is; natbox marked it PACKET_LOOPBACK, which `-m pkttype` reads as broadcast. (IPv6 could
follow only once a route out lo for an address that is not local was the reject route Linux makes of it,
fib6_is_reject: tests/ipv6/test_local_send6.py.)
"""

from __future__ import annotations

import pytest

from natbox.engine.engine import Engine
from natbox.engine.host import Host
from natbox.netfilter import NFPROTO_IPV4, NFPROTO_IPV6
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.testing.rules_fakes import rule_packets
from natbox.wire import ipv4, ipv6
from natbox.wire.checksum import internet_checksum
from natbox.wire.icmp import build_icmp_echo

RULES = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" + "".join(
    f"-A {chain} -{flag} lo -m pkttype --pkt-type {kind}\n"
    for chain, flag in (("INPUT", "i"), ("OUTPUT", "o")) for kind in ("unicast", "broadcast", "multicast")
) + "COMMIT\n"


def _ruleset(family: int) -> Ruleset:
    rs = Ruleset(family)
    rs.restore(parse_restore(RULES, file="<test>", family=family))
    return rs


def _echo4(seq: int) -> bytes:
    return bytes(ipv4.build_ipv4(0x7F000001, 0x7F000001, 1, build_icmp_echo(0x1234, seq, b"ping"), ttl=64))


def _echo6(seq: int) -> bytes:
    icmp = bytearray(b"\x80\x00\x00\x00\x12\x34" + seq.to_bytes(2, "big") + b"ping")
    icmp[2:4] = internet_checksum(icmp, ipv6.pseudo6_sum(1, 1, 58, len(icmp))).to_bytes(2, "big")
    return bytes(ipv6.build_ipv6(1, 1, 58, icmp))


@pytest.mark.parametrize("family", [NFPROTO_IPV4, NFPROTO_IPV6])
def test_what_the_host_sends_itself_over_lo_is_unicast(family: int) -> None:
    v6 = family == NFPROTO_IPV6
    rs = _ruleset(family)
    engine = Engine(Host(), ruleset6=rs) if v6 else Engine(Host(), ruleset=rs)
    for seq in (1, 2):  # a request and its reply, each out of OUTPUT and in through INPUT
        engine.send_local(_echo6(seq) if v6 else _echo4(seq), float(seq))
    rules = {(chain, kind): f"-A {chain} -{flag} lo -m pkttype --pkt-type {kind}"
             for chain, flag in (("INPUT", "i"), ("OUTPUT", "o")) for kind in ("unicast", "broadcast", "multicast")}
    counts = rule_packets(rs, {f"{chain} {kind}": rule for (chain, kind), rule in rules.items()})
    assert counts == {f"{chain} {kind}": 4 if kind == "unicast" else 0 for chain, kind in rules}, counts
