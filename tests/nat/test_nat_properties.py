"""Properties of NAT over random flows (hypothesis, seeded RNG inside each example)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from natbox.conntrack.tuple import ConnTuple, invert
from natbox.nat.range import NatRange, RangeFlags
from natbox.netfilter import CtInfo, Hook, ManipType
from natbox.skb import Skb
from natbox.testing.natpkt import (
    ICMP,
    TCP,
    UDP,
    Lab,
    icmp_echo,
    ip_csum_ok,
    l4_csum_ok,
    tcp_packet,
    tuple_of,
    udp_packet,
)

addrs = st.integers(0x0A000001, 0x0A0000FF) | st.integers(0xC0A83201, 0xC0A83210)  # small pools: clashes happen
ports = st.integers(1, 65535)
few_ports = st.sampled_from([53, 80, 100, 700, 40000, 40001, 65535])


def packet_for(t: ConnTuple, *, reply: bool = False) -> bytearray:
    if t.proto == TCP:
        return tcp_packet(t.src, t.sport, t.dst, t.dport, b"data", flags=0x10)
    if t.proto == UDP:
        return udp_packet(t.src, t.sport, t.dst, t.dport, b"data")
    return icmp_echo(t.src, t.dst, t.sport, reply=reply)


@st.composite
def nat_ranges(draw: st.DrawFn, proto: int) -> NatRange | None:
    if draw(st.booleans()):
        return None
    lo = draw(addrs)
    hi = lo + draw(st.integers(0, 3))
    flags = RangeFlags.MAP_IPS | draw(st.sampled_from([RangeFlags(0), RangeFlags.PROTO_RANDOM, RangeFlags.PERSISTENT]))
    if proto != ICMP and draw(st.booleans()):
        plo = draw(ports)
        phi = min(65535, plo + draw(st.integers(0, 20)))
        return NatRange(flags | RangeFlags.PROTO_SPECIFIED, lo, hi, plo, phi)
    return NatRange(flags, lo, hi)


@st.composite
def flows(draw: st.DrawFn) -> tuple[ConnTuple, NatRange | None, NatRange | None]:
    proto = draw(st.sampled_from([TCP, UDP, ICMP]))
    src, dst = draw(addrs), draw(addrs)
    if proto == ICMP:
        orig = ConnTuple(src, draw(few_ports), dst, 8 << 8, ICMP)
    else:
        orig = ConnTuple(src, draw(few_ports), dst, draw(few_ports), proto)
    return orig, draw(nat_ranges(proto)), draw(nat_ranges(proto))


def through_hooks(lab: Lab, skb: Skb, hooks: tuple[Hook, Hook], chains: dict[Hook, NatRange | None]) -> int:
    for hook in hooks:
        rng = chains.get(hook)

        def run_chain(s: Skb, rng: NatRange | None = rng, hook: Hook = hook) -> int:
            assert s.ct is not None
            if rng is None:
                return 1
            return lab.setup(s.ct, rng, ManipType.for_hook(hook))

        verdict = lab.nat.nf_nat_inet_fn(skb, hook, now=lab.now, table=lab.table, rnd=lab.rnd, run_chain=run_chain)
        if verdict != 1:
            return verdict
    return 1


@settings(max_examples=300, deadline=None)
@given(st.lists(flows(), min_size=1, max_size=12), st.integers(0, 2**32 - 1))
def test_reply_packets_are_un_nated_to_the_original_tuple(
    specs: list[tuple[ConnTuple, NatRange | None, NatRange | None]], seed: int,
) -> None:
    lab = Lab(seed)
    for orig, dnat, snat in specs:
        if lab.table.lookup(orig, lab.now) is not None:
            continue  # that packet would belong to an existing ct
        ct = lab.conn(orig)
        skb = Skb(packet_for(orig))
        skb.ct, skb.ctinfo = ct, CtInfo.NEW
        assert through_hooks(lab, skb, (Hook.PRE_ROUTING, Hook.POST_ROUTING),
                             {Hook.PRE_ROUTING: dnat, Hook.POST_ROUTING: snat}) == 1
        # On the wire the packet is what the reply tuple inverted says.
        assert tuple_of(skb.data) == invert(ct.reply)
        assert ip_csum_ok(skb.data) and l4_csum_ok(skb.data)
        if lab.table.clash(ct, lab.now) is not None:
            continue  # confirm would drop it
        lab.table.insert(ct, lab.now)
        back = Skb(packet_for(ct.reply, reply=True))
        back.ct, back.ctinfo = ct, CtInfo.ESTABLISHED_REPLY
        assert through_hooks(lab, back, (Hook.PRE_ROUTING, Hook.POST_ROUTING), {}) == 1
        expected = invert(ct.original)
        assert expected is not None
        assert tuple_of(back.data) == expected
        assert ip_csum_ok(back.data) and l4_csum_ok(back.data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([1000, 1001, 20000, 20003])), min_size=1, max_size=30),
       st.integers(1, 8), st.sampled_from([RangeFlags(0), RangeFlags.PROTO_RANDOM]), st.integers(0, 2**32 - 1))
def test_setup_info_avoids_used_tuples_unless_the_range_is_exhausted(
    clients: list[tuple[int, int]], width: int, extra: RangeFlags, seed: int,
) -> None:
    lab = Lab(seed)
    nat_addr, server = 0xCB007101, 0xCB007102
    lo, hi = 20000, 20000 + width
    rng = NatRange(RangeFlags.MAP_IPS | RangeFlags.PROTO_SPECIFIED | extra, nat_addr, nat_addr, lo, hi)
    for host, sport in clients:
        orig = ConnTuple(0xC0A83202 + host, sport, server, 53, UDP)
        if lab.table.lookup(orig, lab.now) is not None:
            continue
        ct = lab.flow(orig, snat=rng)
        reply = ct.reply
        assert reply.dst == nat_addr and lo <= reply.dport <= hi
        if ct.confirmed:
            continue
        # It clashes: then every port of the range must be taken for this destination.
        for p in range(lo, hi + 1):
            assert lab.table.lookup(ConnTuple(server, 53, nat_addr, p, UDP), lab.now) is not None
