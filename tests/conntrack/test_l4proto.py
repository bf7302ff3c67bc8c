"""The per-protocol records (`struct nf_conntrack_l4proto`, `struct nf_nat_l4proto`) and the facts they pin."""

from __future__ import annotations

import pytest

from natbox.conntrack import core
from natbox.conntrack.config import ConntrackConfig
from natbox.conntrack.conn import Conn, TcpConntrack
from natbox.conntrack.l4proto import ALLOW_CLASH, GENERIC, L4PROTOS, PORT_PROTOS, nf_ct_l4proto_find
from natbox.conntrack.proto.udp import udp_packet
from natbox.conntrack.table import ConntrackTable
from natbox.conntrack.tuple import ConnTuple, invert
from natbox.nat.l4proto import NAT_L4PROTOS, nf_nat_l4proto_find
from natbox.netfilter import (
    IPPROTO_DCCP,
    IPPROTO_GRE,
    IPPROTO_ICMP,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPPROTO_UDPLITE,
    CtInfo,
    CtStatus,
    Hook,
    TcpState,
)
from natbox.skb import Skb
from natbox.testing.conntrack import A, B, Box, icmp, raw, tcp, udp
from natbox.testing.natpkt import Lab
from natbox.wire.sctp import build_init, build_sctp

T0 = 1000.0


def test_allow_clash_is_the_kernels() -> None:
    # Linux 6.x `.allow_clash = true`: nf_conntrack_l4proto_udp, _udplite and (since 6.5) _gre. ICMP has it only
    # from a 2026 nf-next patch; TCP and the generic tracker never.
    assert {IPPROTO_UDP, IPPROTO_UDPLITE, IPPROTO_GRE} == ALLOW_CLASH
    assert not nf_ct_l4proto_find(IPPROTO_ICMP).allow_clash
    assert not nf_ct_l4proto_find(IPPROTO_TCP).allow_clash
    assert not nf_ct_l4proto_find(250).allow_clash
    assert core.ALLOW_CLASH is ALLOW_CLASH  # confirm's clash resolution reads the same records


def _pair(proto: int, orig: ConnTuple, lab: Lab) -> tuple[Conn, Conn]:
    """A confirmed ct without NAT and a new ct that is its reverse-direction twin (the SMP race of
    nf_nat_used_tuple_new): the new ct's reply tuple is the existing ct's original."""
    reply = invert(orig)
    assert reply is not None
    existing = lab.conn(reply)
    lab.table.insert(existing, lab.now)
    new = lab.conn(orig)
    return existing, new


@pytest.mark.parametrize(("proto", "orig", "taken"), [
    (IPPROTO_UDP, ConnTuple(1, 1000, 2, 53, IPPROTO_UDP), False),
    (IPPROTO_GRE, ConnTuple(1, 7, 2, 9, IPPROTO_GRE), False),
    (IPPROTO_TCP, ConnTuple(1, 1000, 2, 80, IPPROTO_TCP), True),
    (IPPROTO_ICMP, ConnTuple(1, 77, 2, 0 << 8, IPPROTO_ICMP), True),
])
def test_nat_used_tuple_new_asks_the_conntrack_record(proto: int, orig: ConnTuple, taken: bool) -> None:
    # nf_nat_used_tuple_new: a non-NAT reverse twin is no clash only when nf_nat_allow_clash() (the conntrack
    # record's .allow_clash) says so. ICMP used to be in a NAT-only set of its own.
    lab = Lab()
    existing, new = _pair(proto, orig, lab)
    assert existing.tuples[0] == new.tuples[1]
    clash = lab.nat._used_new(orig, new, lab.now, lab.table)
    assert (clash is existing) is taken
    assert (clash is None) is not taken


def test_records_describe_the_tuples_conntrack_builds() -> None:
    box = Box()
    cases = [
        (tcp(A, B, 1234, 80, 0x02), IPPROTO_TCP, True),
        (udp(A, B, 1234, 53), IPPROTO_UDP, True),
        (icmp(A, B, 8, ident=42), IPPROTO_ICMP, False),
        # an SCTP INIT (the tracker refuses a packet without chunks)
        (raw(A, B, IPPROTO_SCTP, build_sctp(1234, 80, 0, build_init(1, 7))), IPPROTO_SCTP, True),
        (raw(A, B, IPPROTO_DCCP, b"\x04\xd2\x00\x50" + b"\x00" * 12), IPPROTO_DCCP, False),
        (raw(A, B, 250), 250, False),
    ]
    for data, proto, ports in cases:
        t = core.get_tuplepr(data, 0)
        assert t is not None and t.proto == proto
        l4 = nf_ct_l4proto_find(proto)
        assert (proto in PORT_PROTOS) is ports is l4.ports
        assert (t.sport != 0) is (ports or proto == IPPROTO_ICMP)
        assert l4.invert_tuple(t) == invert(t)
        sent = box.send(data, T0)
        assert sent.ctinfo == CtInfo.NEW and sent.ct is not None and sent.ct.tuples[0] == t
    assert nf_ct_l4proto_find(IPPROTO_DCCP) is GENERIC  # no DCCP tracker since Linux 6.16


def test_timeouts_and_early_drop_are_per_protocol() -> None:
    cfg = ConntrackConfig()
    cfg.udp_timeout, cfg.udp_timeout_stream, cfg.gre_timeout_stream = 31, 121, 181
    assert L4PROTOS[IPPROTO_UDP].timeouts(cfg) == (31, 121)
    assert L4PROTOS[IPPROTO_GRE].timeouts(cfg) == (30, 181)
    assert L4PROTOS[IPPROTO_TCP].timeouts(cfg)[TcpState.ESTABLISHED] == cfg.tcp_timeout_established
    assert GENERIC.timeouts(cfg) == (cfg.generic_timeout,)
    ct = Conn(ConnTuple(1, 1, 2, 2, IPPROTO_TCP), ConnTuple(2, 2, 1, 1, IPPROTO_TCP), now=0.0, ct_id=1)
    ct.tcp = TcpConntrack()
    ct.tcp.state = TcpState.TIME_WAIT
    can = L4PROTOS[IPPROTO_TCP].can_early_drop
    assert can is not None and can(ct)
    assert all(p.can_early_drop is None for n, p in L4PROTOS.items() if n not in (IPPROTO_TCP, IPPROTO_SCTP))


def test_every_conntrack_protocol_with_a_manip_part_has_a_nat_record() -> None:
    for proto in PORT_PROTOS:
        assert nf_nat_l4proto_find(proto).has_ports
    assert nf_nat_l4proto_find(IPPROTO_ICMP).key == "id"
    assert nf_nat_l4proto_find(IPPROTO_GRE).key == "key"
    assert not nf_nat_l4proto_find(IPPROTO_DCCP).key  # 6.17+ NAT leaves DCCP ports alone
    assert set(NAT_L4PROTOS) >= set(L4PROTOS)


def test_nf_conntrack_max_zero_is_unlimited() -> None:
    # __nf_conntrack_alloc: `if (nf_conntrack_max && unlikely(ct_count > nf_conntrack_max))`
    box = Box(table=ConntrackTable(max_entries=0))
    for port in range(1, 51):
        sent = box.send(udp(A, B, port, 53), T0)
        assert sent.verdict == 1 and sent.ctinfo == CtInfo.NEW
    assert len(box.table) == 50
    assert box.table.stats.drop == 0 and box.table.stats.early_drop == 0


@pytest.mark.parametrize("seen_reply", [False, True])
@pytest.mark.parametrize("assured", [False, True])
@pytest.mark.parametrize("clash", [False, True])
@pytest.mark.parametrize("late", [False, True])
def test_udp_packet_is_the_kernels_table(seen_reply: bool, assured: bool, clash: bool, late: bool) -> None:
    """§3.3: 30 s until a reply; with one, 30 s within the first 2 s and then 120 s and ASSURED (never for a
    NAT_CLASH entry, whose FIXED_TIMEOUT also keeps its deadline). The SEEN_REPLY refresh is the fast paths'
    udp_packet_seen_reply."""
    cfg = ConntrackConfig()
    cfg.acct = True
    orig = ConnTuple(1, 1000, 2, 53, IPPROTO_UDP)
    ct = Conn(orig, invert(orig) or orig, now=T0, ct_id=1)
    ct.status = int(CtStatus.CONFIRMED)
    for bit, on in ((CtStatus.SEEN_REPLY, seen_reply), (CtStatus.ASSURED, assured),
                    (CtStatus.NAT_CLASH | CtStatus.FIXED_TIMEOUT, clash)):
        if on:
            ct.status |= int(bit)
    ct.timeout = T0 + 1
    now = T0 + (2.5 if late else 1.0)
    data = udp(A, B, 1000, 53)
    assert udp_packet(ct, Skb(bytearray(data)), 20, 0, Hook.FORWARD, now, cfg) == 1
    if clash:
        want_timeout = T0 + 1
    elif seen_reply and late:
        want_timeout = now + 120
    else:
        want_timeout = now + 30
    assert ct.timeout == want_timeout
    assert bool(ct.status & CtStatus.ASSURED) == (assured or (seen_reply and late and not clash))
    assert ct.acct_packets == [1, 0] and ct.acct_bytes == [len(data), 0]
