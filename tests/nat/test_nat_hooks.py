"""nf_nat_ipv4_fn (§1.3, §4.1), ICMP error translation (§4.9), MASQUERADE and its flushes (§5.2),
REDIRECT and NETMAP (§5.1)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from natbox.conntrack.conn import Conn
from natbox.conntrack.tuple import ConnTuple
from natbox.nat.masquerade import (
    masq_addr_removed,
    masq_device_down,
    masquerade,
    netmap_addr,
    netmap_range,
    redirect_range,
)
from natbox.nat.range import NatRange, RangeFlags
from natbox.netfilter import CtInfo, CtStatus, DropReason, Hook, ManipType
from natbox.skb import Skb
from natbox.testing.natpkt import (
    GRE,
    ICMP,
    TCP,
    UDP,
    A,
    Lab,
    gre_packet,
    icmp_echo,
    icmp_error,
    ip_csum_ok,
    l4_csum_ok,
    masq,
    snat_to,
    tuple_of,
    udp_packet,
)
from natbox.wire.checksum import internet_checksum

S = A("203.0.113.2")
ROUTER = A("203.0.113.1")
C2 = A("192.168.50.2")


def skb_of(data: bytearray, ct: Conn | None, ctinfo: CtInfo, *, oif: str = "eth1") -> Skb:
    skb = Skb(data)
    skb.ct = ct
    skb.ctinfo = ctinfo
    skb.oif = oif
    skb.trace = []
    return skb


def run(lab: Lab, skb: Skb, hook: Hook, chain: Callable[[Skb], int] | None = None) -> int:
    calls: list[Skb] = []

    def run_chain(s: Skb) -> int:
        calls.append(s)
        return chain(s) if chain is not None else 1

    verdict = lab.nat.nf_nat_inet_fn(skb, hook, now=lab.now, table=lab.table, rnd=lab.rnd, run_chain=run_chain)
    skb.mark = len(calls)  # how many times the nat chain ran (for the assertions)
    return verdict


def no_chain(s: Skb) -> int:
    raise AssertionError("the nat chain must not run")


# --- nf_nat_ipv4_fn ------------------------------------------------------------------------------------


def test_no_ct_is_accepted_unchanged() -> None:
    lab = Lab()
    data = udp_packet(C2, 1000, S, 53)
    skb = skb_of(bytearray(data), None, CtInfo.INVALID)
    assert run(lab, skb, Hook.POST_ROUTING, no_chain) == 1
    assert skb.data == data


def test_first_packet_runs_the_chain_later_packets_do_not() -> None:
    lab = Lab()
    ct = lab.conn(ConnTuple(C2, 40000, S, 80, UDP))
    pre = skb_of(udp_packet(C2, 40000, S, 80, b"a"), ct, CtInfo.NEW)
    assert run(lab, pre, Hook.PRE_ROUTING) == 1 and pre.mark == 1  # chain ACCEPT → DST null binding
    assert ct.has(CtStatus.DST_NAT_DONE) and not ct.has(CtStatus.DST_NAT)

    def snat_rule(s: Skb) -> int:
        return lab.setup(ct, masq(), ManipType.SRC, s.trace)

    assert run(lab, pre, Hook.POST_ROUTING, snat_rule) == 1 and pre.mark == 1
    assert tuple_of(pre.data)[:2] == (ROUTER, 40000)
    lab.table.insert(ct, lab.now)
    # A second ORIGINAL packet before any reply is still ctinfo NEW: the bindings exist, no chain runs.
    again = skb_of(udp_packet(C2, 40000, S, 80, b"b"), ct, CtInfo.NEW)
    assert run(lab, again, Hook.PRE_ROUTING, no_chain) == 1
    assert run(lab, again, Hook.POST_ROUTING, no_chain) == 1
    assert tuple_of(again.data) == ConnTuple(ROUTER, 40000, S, 80, UDP)
    assert l4_csum_ok(again.data) and ip_csum_ok(again.data)
    # The reply is un-NATed at PREROUTING (DST manip of a REPLY packet uses SRC_NAT).
    reply = skb_of(udp_packet(S, 80, ROUTER, 40000, b"c"), ct, CtInfo.ESTABLISHED_REPLY)
    assert run(lab, reply, Hook.PRE_ROUTING, no_chain) == 1
    assert tuple_of(reply.data) == ConnTuple(S, 80, C2, 40000, UDP)
    assert run(lab, reply, Hook.POST_ROUTING, no_chain) == 1
    assert tuple_of(reply.data) == ConnTuple(S, 80, C2, 40000, UDP)
    assert any(line.startswith("PREROUTING nat: destination 203.0.113.1:40000 -> 192.168.50.2:40000")
               for line in reply.trace or [])


def test_chain_without_binding_gets_a_null_binding_and_drop_is_returned() -> None:
    lab = Lab()
    ct = lab.conn(ConnTuple(C2, 40000, S, 80, TCP))
    skb = skb_of(udp_packet(C2, 40000, S, 80), ct, CtInfo.NEW)
    assert run(lab, skb, Hook.POST_ROUTING, lambda s: 0) == 0
    assert not ct.has(CtStatus.SRC_NAT_DONE)
    assert lab.nat.drop_reason is None  # a rule's DROP
    assert run(lab, skb, Hook.POST_ROUTING, lambda s: 1) == 1
    assert ct.has(CtStatus.SRC_NAT_DONE)
    assert any(line.startswith("null binding (SNAT to the current source 192.168.50.2") for line in skb.trace or [])


def test_loopback_ct_with_both_bindings_skips_the_chains() -> None:
    lab = Lab()
    ct = lab.flow(ConnTuple(A("127.0.0.1"), 5000, A("127.0.0.1"), 80, TCP))
    assert ct.status & CtStatus.NAT_DONE_MASK == CtStatus.NAT_DONE_MASK
    skb = skb_of(udp_packet(A("127.0.0.1"), 5000, A("127.0.0.1"), 80), ct, CtInfo.NEW, oif="lo")
    assert run(lab, skb, Hook.PRE_ROUTING, no_chain) == 1
    assert run(lab, skb, Hook.LOCAL_IN, no_chain) == 1


def test_masquerade_oif_change_kills_the_ct() -> None:
    lab = Lab()
    ct = lab.conn(ConnTuple(C2, 40000, S, 80, UDP))
    lab.null(ct, ManipType.DST)
    first = skb_of(udp_packet(C2, 40000, S, 80), ct, CtInfo.NEW, oif="eth1")

    def masq_rule(s: Skb) -> int:
        return masquerade(s, ct, NatRange(), "eth1", ROUTER, nat=lab.nat, now=lab.now, table=lab.table, rnd=lab.rnd)

    assert run(lab, first, Hook.POST_ROUTING, masq_rule) == 1
    assert ct.masq_index == "eth1"
    lab.table.insert(ct, lab.now)
    same = skb_of(udp_packet(C2, 40000, S, 80), ct, CtInfo.ESTABLISHED, oif="eth1")
    assert run(lab, same, Hook.POST_ROUTING, no_chain) == 1
    reply_elsewhere = skb_of(udp_packet(S, 80, ROUTER, 40000), ct, CtInfo.ESTABLISHED_REPLY, oif="eth9")
    assert run(lab, reply_elsewhere, Hook.POST_ROUTING, no_chain) == 1  # only ORIGINAL packets are checked
    moved = skb_of(udp_packet(C2, 40000, S, 80), ct, CtInfo.ESTABLISHED, oif="eth2")
    assert run(lab, moved, Hook.POST_ROUTING, no_chain) == 0
    assert lab.nat.drop_reason == DropReason.NAT_OIF_CHANGED
    assert len(lab.table) == 0 and ct.has(CtStatus.DYING)
    assert len(lab.nat) == 0


# --- ICMP error translation ------------------------------------------------------------------------------


def test_port_unreachable_to_the_masquerade_address() -> None:
    # [V] exp. 6: the client received outer S → 192.168.50.2, inner 192.168.50.2.44001 > S.5999 with its
    # original TTL 63, checksums OK.
    lab = Lab()
    ct = lab.flow(ConnTuple(C2, 44001, S, 5999, UDP), snat=masq())
    assert ct.reply == ConnTuple(S, 5999, ROUTER, 44001, UDP)
    as_sent = udp_packet(ROUTER, 44001, S, 5999, b"hello", ttl=63)  # what S received
    err = icmp_error(S, ROUTER, 3, 3, as_sent, keep=len(as_sent))
    skb = skb_of(err, ct, CtInfo.RELATED_REPLY)
    assert run(lab, skb, Hook.PRE_ROUTING, no_chain) == 1
    data = skb.data
    assert data[12:16] == S.to_bytes(4, "big") and data[16:20] == C2.to_bytes(4, "big")
    inner = data[28:]
    assert tuple_of(inner) == ConnTuple(C2, 44001, S, 5999, UDP)
    assert inner[8] == 63
    assert ip_csum_ok(data) and internet_checksum(data[20:]) == 0  # outer IP and ICMP checksums
    assert ip_csum_ok(inner) and l4_csum_ok(inner)  # inner IP and UDP checksums
    assert data[24:28] == b"\x00\x00\x00\x00"  # the error's unused word is untouched
    # POSTROUTING: SRC manip of a REPLY packet needs DST_NAT, which this ct does not have.
    before = bytes(data)
    assert run(lab, skb, Hook.POST_ROUTING, no_chain) == 1
    assert bytes(skb.data) == before


def test_router_generated_time_exceeded_for_a_dnated_packet() -> None:
    # [V] exp. 16: client → 203.0.113.1:7777 (TTL 1), DNATed; the ICMP time-exceeded arrived with outer source
    # = the original destination 203.0.113.1 and the inner header restored.
    lab = Lab()
    srv = A("172.17.0.2")
    ct = lab.flow(ConnTuple(C2, 5000, ROUTER, 7777, UDP), dnat=NatRange(RangeFlags.MAP_IPS, srv, srv))
    dnated = udp_packet(C2, 5000, srv, 7777, b"x", ttl=1)
    err = icmp_error(A("192.168.50.1"), C2, 11, 0, dnated, keep=len(dnated))
    skb = skb_of(err, ct, CtInfo.RELATED_REPLY)
    assert run(lab, skb, Hook.LOCAL_OUT, no_chain) == 1
    assert run(lab, skb, Hook.POST_ROUTING, no_chain) == 1
    data = skb.data
    assert data[12:16] == ROUTER.to_bytes(4, "big") and data[16:20] == C2.to_bytes(4, "big")
    assert tuple_of(data[28:]) == ConnTuple(C2, 5000, ROUTER, 7777, UDP)
    assert ip_csum_ok(data) and internet_checksum(data[20:]) == 0 and l4_csum_ok(data[28:])


def test_icmp_error_with_bad_checksum_or_too_short_is_dropped() -> None:
    lab = Lab()
    ct = lab.flow(ConnTuple(C2, 44001, S, 5999, UDP), snat=masq())
    err = icmp_error(S, ROUTER, 3, 3, udp_packet(ROUTER, 44001, S, 5999))
    err[22] ^= 0xFF
    assert run(lab, skb_of(err, ct, CtInfo.RELATED_REPLY), Hook.PRE_ROUTING, no_chain) == 0
    assert lab.nat.drop_reason == DropReason.NAT_ICMP_BAD
    short = icmp_error(S, ROUTER, 3, 3, udp_packet(ROUTER, 44001, S, 5999), keep=12)
    assert run(lab, skb_of(short, ct, CtInfo.RELATED_REPLY), Hook.PRE_ROUTING, no_chain) == 0


def test_icmp_redirect_is_dropped_when_the_flow_is_nated() -> None:
    lab = Lab()
    nated = lab.flow(ConnTuple(C2, 44001, S, 5999, UDP), snat=masq())
    plain = lab.flow(ConnTuple(C2, 44002, A("192.168.50.9"), 5999, UDP))
    redirect = icmp_error(A("192.168.50.1"), C2, 5, 1, udp_packet(C2, 44002, A("192.168.50.9"), 5999))
    assert run(lab, skb_of(bytearray(redirect), plain, CtInfo.RELATED_REPLY), Hook.PRE_ROUTING, no_chain) == 1
    assert run(lab, skb_of(bytearray(redirect), nated, CtInfo.RELATED_REPLY), Hook.PRE_ROUTING, no_chain) == 0
    assert lab.nat.drop_reason == DropReason.NAT_REDIRECT_DROPPED


# --- MASQUERADE ---------------------------------------------------------------------------------------------


def test_masquerade_binds_to_the_chosen_address_with_rule_ports_and_flags() -> None:
    lab = Lab()
    ct = lab.conn(ConnTuple(C2, 43002, S, 80, TCP))
    lab.null(ct, ManipType.DST)
    skb = skb_of(udp_packet(C2, 43002, S, 80), ct, CtInfo.NEW)
    rule = NatRange(RangeFlags.PROTO_SPECIFIED, 0, 0, 30000, 30005)
    assert masquerade(skb, ct, rule, "eth1", ROUTER, nat=lab.nat, now=lab.now, table=lab.table, rnd=lab.rnd) == 1
    assert ct.reply.dst == ROUTER and 30000 <= ct.reply.dport <= 30005
    assert ct.masq_index == "eth1"
    assert "MASQUERADE: source address 203.0.113.1 of eth1 (inet_select_addr)" in (skb.trace or [])


def test_masquerade_without_address_drops_and_zero_source_is_left_alone() -> None:
    lab = Lab()
    ct = lab.conn(ConnTuple(C2, 1, S, 80, TCP))
    skb = skb_of(udp_packet(C2, 1, S, 80), ct, CtInfo.NEW)
    assert masquerade(skb, ct, NatRange(), "eth1", None, nat=lab.nat, now=lab.now, table=lab.table,
                      rnd=lab.rnd) == 0
    assert lab.nat.drop_reason == DropReason.NAT_NO_ADDRESS
    assert skb.note == "MASQUERADE: eth1 ate my IP address"
    zero = lab.conn(ConnTuple(0, 68, A("255.255.255.255"), 67, UDP))
    skb0 = skb_of(udp_packet(0, 68, A("255.255.255.255"), 67), zero, CtInfo.NEW)
    assert masquerade(skb0, zero, NatRange(), "eth1", ROUTER, nat=lab.nat, now=lab.now, table=lab.table,
                      rnd=lab.rnd) == 1
    assert not zero.has(CtStatus.SRC_NAT_DONE) and zero.masq_index is None


def _masq_flow(lab: Lab, sport: int, dev: str, addr: int) -> Conn:
    ct = lab.conn(ConnTuple(C2, sport, S, 80, UDP))
    lab.null(ct, ManipType.DST)
    skb = skb_of(udp_packet(C2, sport, S, 80), ct, CtInfo.NEW)
    masquerade(skb, ct, NatRange(), dev, addr, nat=lab.nat, now=lab.now, table=lab.table, rnd=lab.rnd)
    lab.table.insert(ct, lab.now)
    return ct


def test_device_down_flushes_only_its_masquerade_entries() -> None:
    # [V] exp. 11: after `link set down` the MASQUERADE entries were gone; an SNAT entry via another
    # interface remained.
    lab = Lab()
    _masq_flow(lab, 1000, "eth1", ROUTER)
    _masq_flow(lab, 1001, "eth1", ROUTER)
    other = _masq_flow(lab, 1002, "eth2", A("198.51.100.1"))
    snat = lab.flow(ConnTuple(C2, 1003, S, 80, UDP), snat=snat_to("203.0.113.1"))
    assert masq_device_down("eth1", table=lab.table, now=lab.now) == 2
    assert set(lab.table) == {other, snat}


def test_address_removal_flushes_entries_using_that_address() -> None:
    # [V] exp. 11: removing an unused secondary removed nothing; removing the primary removed the entries.
    lab = Lab()
    a = _masq_flow(lab, 1000, "eth1", ROUTER)
    b = _masq_flow(lab, 1001, "eth1", A("203.0.113.5"))
    assert masq_addr_removed("eth1", A("203.0.113.77"), table=lab.table, now=lab.now) == 0
    assert masq_addr_removed("eth2", ROUTER, table=lab.table, now=lab.now) == 0
    assert masq_addr_removed("eth1", ROUTER, table=lab.table, now=lab.now) == 1
    assert set(lab.table) == {b}
    assert a.has(CtStatus.DYING)
    # The dead entry's mapping is not reused afterwards (bysource is self-cleaning).
    assert lab.nat.find_appropriate_src(ConnTuple(C2, 1000, S, 81, UDP), masq(), a) is None


# --- REDIRECT and NETMAP ------------------------------------------------------------------------------------


def test_redirect_ranges() -> None:
    rule = NatRange(RangeFlags.PROTO_SPECIFIED, 0, 0, 3128, 3128)
    out = redirect_range(rule, Hook.LOCAL_OUT, None)
    assert out == NatRange(RangeFlags.PROTO_SPECIFIED | RangeFlags.MAP_IPS, A("127.0.0.1"), A("127.0.0.1"),
                           3128, 3128)
    assert redirect_range(rule, Hook.PRE_ROUTING, None) is None
    lab = Lab()
    rng = redirect_range(rule, Hook.PRE_ROUTING, A("192.168.50.1"))
    assert rng is not None
    # [V] §5.1: LAN REDIRECT gave reply src=192.168.50.1 sport=3128.
    ct = lab.flow(ConnTuple(C2, 40000, S, 80, TCP), dnat=rng)
    assert ct.reply == ConnTuple(A("192.168.50.1"), 3128, C2, 40000, TCP)
    plain = redirect_range(NatRange(), Hook.PRE_ROUTING, A("192.168.50.1"))
    assert plain is not None
    ct2 = Lab().flow(ConnTuple(C2, 40000, S, 80, TCP), dnat=plain)
    assert ct2.reply.sport == 80  # no --to-ports: the port is unchanged


@pytest.mark.parametrize(
    ("hook", "expected"),
    [(Hook.PRE_ROUTING, "10.1.5.7"), (Hook.LOCAL_OUT, "10.1.5.7"),
     (Hook.POST_ROUTING, "10.1.0.9"), (Hook.LOCAL_IN, "10.1.0.9")],
)
def test_netmap_arithmetic(hook: Hook, expected: str) -> None:
    rule = NatRange(RangeFlags.MAP_IPS, A("10.1.0.0"), A("10.1.255.255"))  # --to 10.1.0.0/16
    assert netmap_addr(rule, hook, A("172.16.0.9"), A("192.168.5.7")) == A(expected)
    rng = netmap_range(rule, hook, A("172.16.0.9"), A("192.168.5.7"))
    assert rng.min_addr == rng.max_addr == A(expected) and rng.flags & RangeFlags.MAP_IPS


def test_netmap_binding_preserves_ports() -> None:
    rule = NatRange(RangeFlags.MAP_IPS, A("198.51.100.0"), A("198.51.100.255"))  # --to 198.51.100.0/24
    lab = Lab()
    orig = ConnTuple(A("192.168.50.23"), 40000, S, 80, TCP)
    rng = netmap_range(rule, Hook.POST_ROUTING, orig.src, orig.dst)
    ct = lab.flow(orig, snat=rng)
    assert ct.reply == ConnTuple(S, 80, A("198.51.100.23"), 40000, TCP)


def test_time_exceeded_about_a_remapped_ping_restores_the_inner_echo_id() -> None:
    lab = Lab(4)
    lab.flow(ConnTuple(A("192.168.50.3"), 4242, S, 8 << 8, ICMP), snat=masq())
    ct = lab.flow(ConnTuple(C2, 4242, S, 8 << 8, ICMP), snat=masq())
    mapped = ct.reply.sport
    assert mapped != 4242
    as_sent = icmp_echo(ROUTER, S, mapped, payload=b"abcdefgh")
    err = icmp_error(A("198.51.100.254"), ROUTER, 11, 0, as_sent, keep=28)
    skb = skb_of(err, ct, CtInfo.RELATED_REPLY)
    assert run(lab, skb, Hook.PRE_ROUTING, no_chain) == 1
    data = skb.data
    assert data[16:20] == C2.to_bytes(4, "big")
    inner = data[28:]
    assert inner[12:16] == C2.to_bytes(4, "big")
    assert int.from_bytes(inner[24:26], "big") == 4242  # the embedded echo's id is un-NATed too
    assert ip_csum_ok(data) and ip_csum_ok(inner) and internet_checksum(data[20:]) == 0


def test_truncated_headers_of_a_nated_flow_drop_the_packet() -> None:
    lab = Lab()
    gre = ConnTuple(C2, 0, ROUTER, 0, GRE)
    ct = lab.flow(gre, dnat=NatRange(RangeFlags.MAP_IPS, S, S))
    assert ct.has(CtStatus.DST_NAT)
    ok = skb_of(gre_packet(C2, ROUTER, version=0), ct, CtInfo.ESTABLISHED)
    assert run(lab, ok, Hook.PRE_ROUTING, no_chain) == 1
    assert ok.data[16:20] == S.to_bytes(4, "big")
    v2 = skb_of(gre_packet(C2, ROUTER, version=2), ct, CtInfo.ESTABLISHED)
    assert run(lab, v2, Hook.PRE_ROUTING, no_chain) == 0
    assert lab.nat.drop_reason == DropReason.NAT_MANIP_FAILED
