"""Conntrack zones (-j CT --zone): the zone is part of the key a tuple is looked up under
(`nf_ct_key_equal` → `nf_ct_zone_equal`), so one tuple in two zones is two connections."""

from __future__ import annotations

import shlex

from natbox.conntrack.core import nf_conntrack_confirm, nf_conntrack_in
from natbox.conntrack.format import format_conntrack, format_proc
from natbox.netfilter import CtInfo, Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.skb import Skb
from natbox.testing.conntrack import A, B, Box, t, udp
from natbox.testing.rules_fakes import FakeCtx


def _send(box: Box, data: bytearray, zone: int, now: float = 1.0) -> Skb:
    skb = Skb(bytearray(data))
    skb.ct_zone = zone
    assert nf_conntrack_in(skb, Hook.PRE_ROUTING, now, box.table, box.cfg) == 1
    if skb.ct is not None:
        nf_conntrack_confirm(skb, now, box.table)
    return skb


def test_one_tuple_in_two_zones_is_two_connections() -> None:
    box = Box()
    a = _send(box, udp(A, B, 1000, 53), 1)
    b = _send(box, udp(A, B, 1000, 53), 2)
    c = _send(box, udp(A, B, 1000, 53), 0)
    assert a.ct is not None and b.ct is not None and c.ct is not None
    assert len({id(a.ct), id(b.ct), id(c.ct)}) == 3 and [x.ctinfo for x in (a, b, c)] == [CtInfo.NEW] * 3
    assert sorted(ct.zone for ct in box.entries(1.0)) == [0, 1, 2]
    # a reply finds its own zone's entry only
    r = _send(box, udp(B, A, 53, 1000), 2)
    assert r.ct is b.ct and r.ctinfo == CtInfo.ESTABLISHED_REPLY
    assert format_conntrack(b.ct, 1.0).endswith("mark=0 zone=2 use=1")
    assert "zone=0" not in format_conntrack(c.ct, 1.0)
    assert format_proc(b.ct, 1.0).endswith("mark=0 zone=2 use=2")
    # deletion unhashes the zone's keys
    box.table.delete(b.ct, 1.0)
    assert box.table.lookup((*t(A, 1000, B, 53, 17), 2), 1.0) is None
    assert box.table.lookup(t(A, 1000, B, 53, 17), 1.0) is not None


def test_icmp_errors_are_related_in_their_zone() -> None:
    from natbox.testing.conntrack import icmp_error

    box = Box()
    orig = _send(box, udp(A, B, 1000, 53), 3)
    err = icmp_error(B, A, 3, 3, udp(A, B, 1000, 53))
    assert _send(box, err, 3).ct is orig.ct
    assert _send(box, err, 0).ct is None  # zone 0 holds no such connection: INVALID


def test_the_ct_target_attaches_the_zone_once() -> None:
    rs = Ruleset()
    for line in ("-t raw -A PREROUTING -j CT --zone 9", "-t raw -A PREROUTING -j CT --zone 10",
                 "-t raw -A OUTPUT -j CT --notrack", "-t raw -A OUTPUT -j CT --zone 4"):
        rs.execute(parse_argv(shlex.split(line)))
    skb = Skb(udp(A, B, 1, 2))
    rs.run("raw", Hook.PRE_ROUTING, skb, FakeCtx(Hook.PRE_ROUTING))
    assert skb.ct_zone == 9  # xt_ct_target leaves a packet that has a template alone
    out = Skb(udp(A, B, 1, 2))
    ctx = FakeCtx(Hook.LOCAL_OUT)
    rs.run("raw", Hook.LOCAL_OUT, out, ctx)
    assert ctx.notracked == 1


def test_a_one_way_zone_keys_one_tuple_only() -> None:
    """-j CT --zone-orig 7 / --zone-reply 8 (conntrack -L recorded on Linux 6.18: scenarios/ct-zone-one-direction)."""
    box = Box()
    orig_only = 7 | 1 << 16  # NF_CT_ZONE_DIR_ORIG above the id
    a = _send(box, udp(A, B, 1000, 53), orig_only)
    # the reply, with no template (zone 0), finds it: its reply tuple is keyed in zone 0
    r = _send(box, udp(B, A, 53, 1000), 0)
    assert a.ct is not None and r.ct is a.ct and r.ctinfo == CtInfo.ESTABLISHED_REPLY
    assert " dport=53 zone-orig=7 src=" in format_conntrack(a.ct, 1.0)
    assert format_proc(a.ct, 1.0).endswith("mark=0 use=2") and "zone-orig=7 " in format_proc(a.ct, 1.0)
    # the original direction without the template is another connection
    assert _send(box, udp(A, B, 1000, 53), 0).ct is not a.ct
    reply_only = 8 | 2 << 16
    b = _send(box, udp(A, B, 2000, 53), reply_only)
    assert _send(box, udp(B, A, 53, 2000), 0).ct is not b.ct  # its reply tuple is keyed in zone 8
    assert b.ct is not None and "dport=2000 zone-reply=8 mark=0 use=1" in format_conntrack(b.ct, 1.0)
