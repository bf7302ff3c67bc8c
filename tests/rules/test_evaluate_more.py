"""Evaluation of pkttype, length, ttl, iprange, statistic, connmark and CONNMARK (kernel semantics)."""

from __future__ import annotations

import shlex

import pytest

from natbox.conntrack.conn import Conn
from natbox.conntrack.tuple import ConnTuple
from natbox.netfilter import CtInfo, Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.skb import PacketType, Skb
from natbox.testing.rules_fakes import FakeCtx, ipv4, udp


def rules(table: str, *lines: str) -> Ruleset:
    rs = Ruleset()
    for line in lines:
        rs.execute(parse_argv(["-t", table, *shlex.split(line)]))
    return rs


def hits(rs: Ruleset, table: str, hook: Hook, skb: Skb, ctx: FakeCtx | None = None) -> list[int]:
    rs.run(table, hook, skb, ctx or FakeCtx(hook))
    return [r.packets for r in rs.tables[table].chains[hook.chain_name].rules]


def test_pkttype() -> None:
    rs = rules("filter", "-A INPUT -m pkttype --pkt-type broadcast", "-A INPUT -m pkttype ! --pkt-type unicast",
               "-A INPUT -m pkttype --pkt-type multicast")
    skb = udp("10.0.0.1", 1, "10.0.0.255", 2)
    skb.pkt_type = PacketType.BROADCAST
    assert hits(rs, "filter", Hook.LOCAL_IN, skb) == [1, 1, 0]
    # xt_pkttype: a looped-back multicast datagram counts as multicast
    skb = udp("10.0.0.1", 1, "224.0.0.251", 2)
    skb.pkt_type = PacketType.LOOPBACK
    assert hits(rs, "filter", Hook.LOCAL_IN, skb) == [1, 2, 1]


def test_length_is_ip_total_length() -> None:
    rs = rules("filter", "-A INPUT -m length --length 28", "-A INPUT -m length --length 29:",
               "-A INPUT -m length ! --length 0:28")
    assert hits(rs, "filter", Hook.LOCAL_IN, udp("10.0.0.1", 1, "10.0.0.2", 2)) == [1, 0, 0]
    assert hits(rs, "filter", Hook.LOCAL_IN, udp("10.0.0.1", 1, "10.0.0.2", 2, size=2)) == [1, 1, 1]


def test_ttl() -> None:
    rs = rules("filter", "-A INPUT -m ttl --ttl-eq 64", "-A INPUT -m ttl ! --ttl-eq 64",
               "-A INPUT -m ttl --ttl-lt 65", "-A INPUT -m ttl --ttl-gt 64")
    skb = Skb(ipv4("10.0.0.1", "10.0.0.2", 17, bytes(8), ttl=64))
    assert hits(rs, "filter", Hook.LOCAL_IN, skb) == [1, 0, 1, 0]


def test_iprange() -> None:
    rs = rules("filter", "-A INPUT -m iprange --src-range 10.0.0.1-10.0.0.10",
               "-A INPUT -m iprange ! --src-range 10.0.0.1-10.0.0.10 --dst-range 10.0.0.2-10.0.0.2")
    assert hits(rs, "filter", Hook.LOCAL_IN, udp("10.0.0.10", 1, "10.0.0.2", 2)) == [1, 0]
    assert hits(rs, "filter", Hook.LOCAL_IN, udp("10.0.0.11", 1, "10.0.0.2", 2)) == [1, 1]


def test_statistic_nth() -> None:
    """--every 3 --packet 1: the counter starts at (every-1) - packet = 1 and wraps after every-1 = 2, so
    it hits `packet` on the 3rd, 6th... packet (statistic_mt / statistic_mt_check)."""
    rs = rules("filter", "-A INPUT -m statistic --mode nth --every 3 --packet 1 -j DROP")
    skb = udp("10.0.0.1", 1, "10.0.0.2", 2)
    ctx = FakeCtx(Hook.LOCAL_IN)
    verdicts = [rs.run("filter", Hook.LOCAL_IN, skb, ctx) for _ in range(6)]
    assert verdicts == [1, 1, 0, 1, 1, 0]


def test_statistic_random_uses_31_bits() -> None:
    rs = rules("filter", "-A INPUT -m statistic --mode random --probability 0.5 -j DROP")
    ctx = FakeCtx(Hook.LOCAL_IN)
    # 0.5 -> 0x40000000; the draw is masked with 0x7fffffff before comparing
    ctx.randoms = [0x3FFFFFFF, 0x40000000, 0xBFFFFFFF, 0xC0000000]
    skb = udp("10.0.0.1", 1, "10.0.0.2", 2)
    assert [rs.run("filter", Hook.LOCAL_IN, skb, ctx) for _ in range(4)] == [0, 1, 0, 1]


def _ct_skb(mark: int = 0) -> Skb:
    skb = udp("10.0.0.1", 1, "10.0.0.2", 2)
    t = ConnTuple(skb.saddr, 1, skb.daddr, 2, 17)
    skb.ct = Conn(t, ConnTuple(skb.daddr, 2, skb.saddr, 1, 17), now=0.0, ct_id=1)
    skb.ct.mark = mark
    skb.ctinfo = CtInfo.NEW
    return skb


def test_connmark_match_needs_a_ct() -> None:
    rs = rules("filter", "-A INPUT -m connmark --mark 0x5/0xf", "-A INPUT -m connmark ! --mark 0x5/0xf")
    assert hits(rs, "filter", Hook.LOCAL_IN, _ct_skb(0x25)) == [1, 0]
    assert hits(rs, "filter", Hook.LOCAL_IN, udp("10.0.0.1", 1, "10.0.0.2", 2)) == [1, 0]


@pytest.mark.parametrize(("spec", "ctmark", "skbmark", "want_ct", "want_skb"), [
    ("--set-mark 5", 0xF0, 0, 5, 0),
    ("--set-xmark 0x5/0xf0", 0xFF, 0, 0x0A, 0),  # (0xff & ~0xf0) ^ 5
    ("--save-mark", 0x1, 0x7, 0x7, 0x7),
    ("--save-mark --nfmask 0xff --ctmask 0xf", 0x123, 0x3456, 0x176, 0x3456),  # (ct & ~0xf) ^ (skb & 0xff)
    ("--restore-mark", 0x9, 0x2, 0x9, 0x9),
    ("--restore-mark --nfmask 0xff --ctmask 0xf", 0x1234, 0xABCD, 0x1234, 0xAB04),  # (skb & ~0xff) ^ (ct & 0xf)
])
def test_connmark_target(spec: str, ctmark: int, skbmark: int, want_ct: int, want_skb: int) -> None:
    rs = rules("mangle", f"-A PREROUTING -j CONNMARK {spec}")
    skb = _ct_skb(ctmark)
    skb.mark = skbmark
    rs.run("mangle", Hook.PRE_ROUTING, skb, FakeCtx())
    assert skb.ct is not None
    assert (skb.ct.mark, skb.mark) == (want_ct, want_skb)


def _with_valid_header_checksum(skb: Skb) -> Skb:
    from natbox.wire.checksum import internet_checksum

    skb.data[10:12] = b"\x00\x00"
    c = internet_checksum(skb.data[:20])
    skb.data[10:12] = c.to_bytes(2, "big")
    return skb


def test_ttl_and_dscp_targets_keep_the_header_checksum_valid() -> None:
    from natbox.wire.checksum import internet_checksum

    rs = rules("mangle", "-A PREROUTING -j TTL --ttl-dec 5", "-A PREROUTING -j DSCP --set-dscp-class EF",
               "-A POSTROUTING -j TTL --ttl-inc 250")
    skb = _with_valid_header_checksum(Skb(ipv4("10.0.0.1", "10.0.0.2", 17, bytes(8), ttl=3)))
    skb.data[1] = 0x01  # ECN bits survive a DSCP rewrite
    skb = _with_valid_header_checksum(skb)
    rs.run("mangle", Hook.PRE_ROUTING, skb, FakeCtx())
    assert skb.data[8] == 0  # saturates at 0
    assert skb.data[1] == (0x2E << 2) | 0x01
    assert internet_checksum(skb.data[:20]) == 0
    rs.run("mangle", Hook.POST_ROUTING, skb, FakeCtx(Hook.POST_ROUTING))
    assert skb.data[8] == 250
    assert internet_checksum(skb.data[:20]) == 0


def test_trace_target_switches_tracing_on() -> None:
    rs = rules("raw", "-A PREROUTING -p udp -j TRACE")
    skb = udp("10.0.0.1", 1, "10.0.0.2", 2)
    rs.run("raw", Hook.PRE_ROUTING, skb, FakeCtx())
    assert skb.trace == ["raw PREROUTING #1 -p udp: match -> TRACE", "raw PREROUTING: TRACE continues",
                         "raw PREROUTING: policy ACCEPT"]


def test_helper_match_without_helpers() -> None:
    rs = rules("filter", "-A INPUT -m helper --helper ftp", "-A INPUT -m helper ! --helper ftp")
    assert hits(rs, "filter", Hook.LOCAL_IN, _ct_skb()) == [0, 1]


def test_quota_spends_bytes() -> None:
    """xt_quota: a packet that fits is subtracted and matches; one that does not zeroes the budget."""
    rs = rules("filter", "-A INPUT -m quota --quota 60 -j ACCEPT", "-A INPUT -j DROP")
    skb = udp("10.0.0.1", 1, "10.0.0.2", 2)  # 28 bytes
    ctx = FakeCtx(Hook.LOCAL_IN)
    assert [rs.run("filter", Hook.LOCAL_IN, skb, ctx) for _ in range(3)] == [1, 1, 0]
    small = Skb(ipv4("10.0.0.1", "10.0.0.2", 17, b""))  # 20 bytes: the budget was zeroed, so no match
    assert rs.run("filter", Hook.LOCAL_IN, small, ctx) == 0
