"""Properties: tuple inversion, table uniqueness after random traffic, no exceptions on any bytes."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natbox.conntrack.core import get_tuple, nf_conntrack_confirm, nf_conntrack_in
from natbox.conntrack.format import format_conntrack, parse_conntrack_line
from natbox.conntrack.table import ConntrackTable
from natbox.conntrack.tuple import ICMP_INVMAP, ConnTuple, invert
from natbox.netfilter import CtInfo, CtStatus, Hook
from natbox.skb import Skb
from natbox.testing.conntrack import Box, ip4
from natbox.wire.checksum import internet_checksum

u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 2**16 - 1)


@st.composite
def invertible_tuples(draw: st.DrawFn) -> ConnTuple:
    proto = draw(st.sampled_from([6, 17, 136, 132, 1, 47, 253, 0, 50]))
    if proto == 1:
        itype = draw(st.sampled_from(sorted(ICMP_INVMAP)))
        return ConnTuple(draw(u32), draw(u16), draw(u32), (itype << 8) | draw(st.integers(0, 255)), 1)
    if proto in (6, 17, 136, 132, 47):
        return ConnTuple(draw(u32), draw(u16), draw(u32), draw(u16), proto)
    return ConnTuple(draw(u32), 0, draw(u32), 0, proto)


@given(invertible_tuples())
def test_invert_is_an_involution(tup: ConnTuple) -> None:
    inv = invert(tup)
    assert inv is not None
    assert invert(inv) == tup
    assert (inv.src, inv.dst) == (tup.dst, tup.src)


ADDRS = ["10.0.0.2", "10.0.0.3", "10.0.1.2", "198.51.100.7"]


@st.composite
def packets(draw: st.DrawFn) -> bytearray:
    src, dst = draw(st.sampled_from(ADDRS)), draw(st.sampled_from(ADDRS))
    proto = draw(st.sampled_from([6, 17, 1, 253]))
    sport, dport = draw(st.sampled_from([1, 2, 53, 80])), draw(st.sampled_from([1, 2, 53, 80]))
    if proto == 6:
        flags = draw(st.sampled_from([0x02, 0x12, 0x10, 0x11, 0x04, 0x14, 0x18]))
        seg = struct.pack("!HHIIBBHHH", sport, dport, draw(u32), draw(u32), 5 << 4, flags, draw(u16), 0, 0)
    elif proto == 17:
        seg = struct.pack("!HHHH", sport, dport, 8, 0)
    elif proto == 1:
        body = bytearray(struct.pack("!BBHHH", draw(st.sampled_from([0, 8, 3, 11, 13])), 0, 0, sport, 1))
        body[2:4] = internet_checksum(body).to_bytes(2, "big")
        seg = bytes(body)
    else:
        seg = b""
    return ip4(src, dst, proto, seg)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(packets(), st.booleans(), st.booleans(), st.booleans()), max_size=40))
def test_no_two_confirmed_entries_share_a_tuple(steps: list[tuple[bytearray, bool, bool, bool]]) -> None:
    box = Box(table=ConntrackTable(max_entries=12))
    box.cfg.checksum = False
    box.cfg.tcp_be_liberal = True
    pending: list[Skb] = []
    now = 100.0
    for data, do_confirm, defer, nat in steps:
        skb = Skb(bytearray(data))
        nf_conntrack_in(skb, Hook.LOCAL_OUT, now, box.table, box.cfg)
        if nat and skb.ct is not None and not skb.ct.confirmed:
            # pretend a NAT helper rewrote the reply tuple's destination port
            r = skb.ct.tuples[1]
            skb.ct.tuples[1] = ConnTuple(r.src, r.sport, r.dst, (r.dport + 1) & 0xFFFF, r.proto)
        if defer:
            pending.append(skb)  # confirm later: lets unconfirmed cts of one flow race
        elif do_confirm:
            nf_conntrack_confirm(skb, now, box.table)
        now += 0.5
    for skb in pending:
        nf_conntrack_confirm(skb, now, box.table)
    seen: dict[ConnTuple, int] = {}
    for conn in list(box.table):
        keys = [conn.tuples[1]] if conn.status & CtStatus.NAT_CLASH else list(conn.tuples)
        for key in keys:  # (a self-connection's two tuples may be equal: that is one ct)
            assert seen.get(key, conn.ct_id) == conn.ct_id, f"{key} held by #{seen[key]} and #{conn.ct_id}"
            seen[key] = conn.ct_id
    # the allocation-time bound: only cts allocated while others were pending confirm can exceed it
    # (the kernel counts unconfirmed cts too; natbox runs one packet from conntrack to confirm at a time)
    assert len(box.table) <= 12 + len(pending)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120), st.sampled_from(list(Hook)))
def test_random_bytes_never_raise(data: bytes, hook: Hook) -> None:
    box = Box()
    skb = Skb(bytearray(data))
    verdict = nf_conntrack_in(skb, hook, 1.0, box.table, box.cfg)
    assert verdict in (0, 1)
    nf_conntrack_confirm(skb, 1.0, box.table)
    get_tuple(skb)


@st.composite
def ipv4_with_random_payload(draw: st.DrawFn) -> bytearray:
    proto = draw(st.sampled_from([1, 6, 17, 47, 136, 253]))
    payload = draw(st.binary(max_size=80))
    pkt = ip4(draw(st.sampled_from(ADDRS)), draw(st.sampled_from(ADDRS)), proto, payload,
              frag=draw(st.sampled_from([0, 0, 0x2000, 0x0001])))
    if draw(st.booleans()):
        pkt[0] = 0x40 | draw(st.integers(0, 15))  # any IHL
    return pkt


@settings(max_examples=600, deadline=None)
@given(st.lists(ipv4_with_random_payload(), min_size=1, max_size=6), st.booleans())
def test_valid_looking_ipv4_with_random_l4_never_raises(pkts: list[bytearray], checksum: bool) -> None:
    box = Box()
    box.cfg.checksum = checksum
    for i, data in enumerate(pkts):
        sent = box.send(data, 10.0 + i)
        assert sent.verdict in (0, 1)
        if sent.ct is not None:
            assert sent.ctinfo != CtInfo.INVALID
            line = format_conntrack(sent.ct, 10.0 + i)
            assert parse_conntrack_line(line)["protonum"] == sent.ct.original.proto
        else:
            assert sent.ctinfo == CtInfo.INVALID
