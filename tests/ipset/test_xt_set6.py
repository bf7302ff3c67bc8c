"""`-m set` and `-j SET` in ip6tables rules on IPv6 packets (xt_set.c over the hash_*6_kadt functions,
ip_set_get_ip6_port): inet6 sets match IPv6 packets, sets of the other family never match
(`ip_set_test`'s family check), list:set and bitmap:port are family-less."""

from __future__ import annotations

import pytest

from natbox.ipset import IpsetRegistry, IpsetSession
from natbox.ipset.kadt import AdtOpt, ip_set_add, ip_set_test
from natbox.ipset.scope import using_sets
from natbox.netfilter import NFPROTO_IPV6
from natbox.rules.api import XT_CONTINUE
from natbox.rules.model import Rule, RulesError
from natbox.rules.parser import parse_argv
from natbox.skb import Skb, Skb6
from natbox.testing.rules_fakes import FakeCtx, ipv4
from natbox.wire.ipv6 import NEXTHDR_FRAGMENT, NEXTHDR_ICMP, NEXTHDR_UDP, build_frag_hdr, build_ipv6, parse_addr6


def _sets(*lines: str) -> IpsetRegistry:
    reg = IpsetRegistry()
    s = IpsetSession(reg, 0.0, lambda: 0x1234)
    for line in lines:
        rc, _, err = s.run(line.split())
        assert rc == 0, err
    return reg


def _rule6(reg: IpsetRegistry, argv: str, table: str = "filter") -> Rule:
    with using_sets(reg):
        cmd = parse_argv(["-t", table, "-A", "FORWARD", *argv.split()], family=NFPROTO_IPV6)
    assert cmd.rule is not None
    return cmd.rule


def _udp6(src: str, dst: str, sport: int, dport: int) -> Skb6:
    payload = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + b"\0\x0c\0\0abcd"
    return Skb6(build_ipv6(parse_addr6(src), parse_addr6(dst), NEXTHDR_UDP, payload), iif="lan")


def _ctx(reg: IpsetRegistry, now: float = 0.0) -> FakeCtx:
    ctx = FakeCtx(now=now)
    ctx.sets = reg
    return ctx


def _save(reg: IpsetRegistry, name: str) -> str:
    return IpsetSession(reg, 0.0, lambda: 0).run(["save", name])[1]


def test_hash_net6_matches_the_most_specific_prefix_and_honours_nomatch() -> None:
    reg = _sets("create n hash:net family inet6", "add n fd00::/16", "add n fd00:1::/32 nomatch")
    fn = _rule6(reg, "-m set --match-set n src").matches[0].compile()
    ret = _rule6(reg, "-m set --match-set n src --return-nomatch").matches[0].compile()
    ctx = _ctx(reg)
    assert fn(_udp6("fd00:2::5", "2001:db8::1", 1, 2), ctx)
    assert not fn(_udp6("fd00:1::5", "2001:db8::1", 1, 2), ctx)  # the /32 nomatch entry decides
    assert not fn(_udp6("fd01::5", "2001:db8::1", 1, 2), ctx)
    assert ret(_udp6("fd00:1::5", "2001:db8::1", 1, 2), ctx)


def test_ip_port_and_icmpv6_elements_come_from_the_packet() -> None:
    reg = _sets("create p hash:ip,port family inet6", "add p 2001:db8::1,udp:53",
                "add p 2001:db8::1,icmpv6:echo-request")
    fn = _rule6(reg, "-m set --match-set p dst,dst").matches[0].compile()
    ctx = _ctx(reg)
    assert fn(_udp6("fd00::2", "2001:db8::1", 999, 53), ctx)
    assert not fn(_udp6("fd00::2", "2001:db8::1", 53, 999), ctx)
    echo = bytes((128, 0, 0, 0, 0, 7, 0, 1)) + b"ping"
    skb = Skb6(build_ipv6(parse_addr6("fd00::2"), parse_addr6("2001:db8::1"), NEXTHDR_ICMP, echo), iif="lan")
    assert fn(skb, ctx)


def test_a_later_fragment_has_no_port() -> None:
    """ip_set_get_ip6_port: a non-first fragment gives no port, so a port set cannot match it."""
    reg = _sets("create p hash:ip,port family inet6", "add p 2001:db8::1,udp:53")
    fn = _rule6(reg, "-m set --match-set p dst,dst").matches[0].compile()
    frag = build_frag_hdr(NEXTHDR_UDP, 8, False, 0x1234) + bytes(8)
    skb = Skb6(build_ipv6(parse_addr6("fd00::2"), parse_addr6("2001:db8::1"), NEXTHDR_FRAGMENT, frag), iif="lan")
    assert skb.is_later_fragment and not fn(skb, _ctx(reg))


def test_a_set_of_the_other_family_is_refused_and_never_matches() -> None:
    """libxt_set's get_set_byname refuses a set of the other family (recorded with ip6tables-restore 1.8.9:
    "The protocol family of set lan4 is IPv4, which is not applicable."); a list:set may hold both families
    and ip_set_test skips the members of the other one; bitmap:port is family-less."""
    reg = _sets("create v4 hash:ip", "add v4 10.0.0.1", "create v6 hash:ip family inet6", "add v6 fd00::1",
                "create ports bitmap:port range 0-1024", "add ports 53", "create l list:set", "add l v4",
                "add l v6")
    ctx = _ctx(reg)
    with pytest.raises(RulesError, match=r"^The protocol family of set v4 is IPv4, which is not applicable.\n$"):
        _rule6(reg, "-m set --match-set v4 src")
    with pytest.raises(RulesError, match=r"^The protocol family of set v6 is IPv6, which is not applicable.\n$"), \
            using_sets(reg):
        parse_argv(["-A", "FORWARD", "-j", "SET", "--add-set", "v6", "src"])
    ports = _rule6(reg, "-m set --match-set ports dst").matches[0].compile()
    assert ports(_udp6("fd00::1", "fd00::9", 1, 53), ctx)
    lst = _rule6(reg, "-m set --match-set l src").matches[0].compile()
    assert lst(_udp6("fd00::1", "fd00::9", 1, 53), ctx)  # the inet member is skipped, the inet6 one matches
    assert not lst(_udp6("fd00::2", "fd00::9", 1, 53), ctx)
    lst4 = _rule4(reg, "-m set --match-set l src").matches[0].compile()
    assert lst4(Skb(ipv4("10.0.0.1", "10.0.0.2", 17, b"\0\x01\0\x35\0\x0c\0\0abcd"), iif="eth0"), ctx)
    assert ip_set_test(reg.find("v4"), _udp6("fd00::1", "fd00::9", 1, 53), AdtOpt((True,)), 0.0) == 0


def _rule4(reg: IpsetRegistry, argv: str) -> Rule:
    with using_sets(reg):
        cmd = parse_argv(["-A", "FORWARD", *argv.split()])
    assert cmd.rule is not None
    return cmd.rule


def test_set_target_adds_ipv6_elements() -> None:
    reg = _sets("create t hash:ip,port family inet6 timeout 60", "create n hash:net family inet6",
                "add n fd00::/64", "create v4 hash:ip")
    tg = _rule6(reg, "-j SET --add-set t src,dst --timeout 10").target
    assert tg is not None
    assert tg.compile()(_udp6("fd00::7", "2001:db8::1", 5, 7), _ctx(reg, now=100.0)) == XT_CONTINUE
    assert "add t fd00::7,udp:7 timeout 10\n" in IpsetSession(reg, 100.0, lambda: 0).run(["save", "t"])[1]
    tg2 = _rule6(reg, "-j SET --add-set n dst --del-set n src").target
    assert tg2 is not None
    tg2.compile()(_udp6("fd00::7", "2001:db8:1:2:3::9", 5, 7), _ctx(reg))
    assert _save(reg, "n").endswith("add n 2001:db8:1:2::/64\n")  # the most specific stored prefix, as for inet
    assert "fd00::/64" not in _save(reg, "n")  # --del-set took the source's /64
    assert ip_set_add(reg.find("v4"), _udp6("fd00::7", "2001:db8::1", 5, 7), AdtOpt((True,)), 0.0) == -1
