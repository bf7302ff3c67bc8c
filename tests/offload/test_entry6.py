"""IPv6 map entries from the engine's IPv6 plans (natbox/offload/entry.py, engine/fastpath6.py), no kernel needed.

As tests/offload/test_entry.py does for IPv4: the entries come from real FlowPlans (a NAT66 router fed UDP,
TCP and ICMPv6 echo flows), and a Python model of what natbox_offload.bpf.c's IPv6 branch does with an entry
(addresses, ports or echo id, hop limit, MACs, the csum helpers' by-difference updates) applied to the flow's
next packet must give the frame the engine itself forwards. For CHECKSUM_PARTIAL packets the checksum field
must become the pseudo-header sum of the rewritten packet, what the sender would have left there."""

from __future__ import annotations

from dataclasses import replace

import pytest

from natbox.netfilter import NFPROTO_IPV4, NFPROTO_IPV6
from natbox.offload.entry import (
    ACTION6_SIZE,
    KEY6_SIZE,
    KEY_SIZE,
    OffloadAction,
    OffloadKey,
    decode_action,
    decode_key,
    encode_action,
    encode_key,
    offload_entry,
)
from natbox.testing.offload6 import (
    CLIENT6,
    LAN6,
    PORTMAP_RULES6,
    PUBLIC6,
    RULES6,
    SERVER6,
    RouterFlows6,
    datagram6,
)
from natbox.testing.offload_model import INDEX, MACS, entry_of, fed, rewrite_l4, same
from natbox.wire.checksum import csum_fold
from natbox.wire.ipv6 import pseudo6_sum
from natbox.wire.layout import (
    ETH_HDR_LEN,
    ICMP6H_CKSUM,
    ICMP6H_IDENTIFIER,
    IP6H_HOP_LIMIT,
    IP6H_LEN,
    IP6H_SADDR,
    TCPH_CHECK,
    UDPH_CHECK,
)

IP, L4 = ETH_HDR_LEN, ETH_HDR_LEN + IP6H_LEN
CHECK_AT = {17: L4 + UDPH_CHECK, 6: L4 + TCPH_CHECK, 58: L4 + ICMP6H_CKSUM}


def test_entries_from_a_masqueraded_ipv6_flow() -> None:
    r = fed(RouterFlows6(*MACS))
    orig, reply = r.flow_plans(17, 40000)
    assert orig.family == NFPROTO_IPV6
    k, a = entry_of(orig)
    assert k == OffloadKey(2, 17, CLIENT6, SERVER6, 40000, 5000, NFPROTO_IPV6)
    assert (a.oif, a.mtu, a.dst_mac, a.src_mac, a.family) == (3, 1500, MACS[3], MACS[1], NFPROTO_IPV6)
    assert (a.saddr, a.daddr, a.sport, a.dport, a.l3_diff, a.l4_rewrite) == (PUBLIC6, SERVER6, 40000, 5000, 0, True)
    assert a.l4_addr_diff and not a.l4_port_diff  # MASQUERADE kept the port
    k, a = entry_of(reply)
    assert k == OffloadKey(3, 17, SERVER6, PUBLIC6, 5000, 40000, NFPROTO_IPV6)
    assert (a.oif, a.dst_mac, a.src_mac, a.saddr, a.daddr) == (2, MACS[2], MACS[0], SERVER6, CLIENT6)
    # ICMPv6 echo: the id in sport, type << 8 | code in dport; its checksum covers the pseudo-header
    k, a = entry_of(r.flow_plans(58, 0x4242)[0])
    assert k == OffloadKey(2, 58, CLIENT6, SERVER6, 0x4242, 128 << 8, NFPROTO_IPV6)
    assert (a.sport, a.dport, a.saddr) == (0x4242, 0, PUBLIC6) and a.l4_addr_diff
    k, _ = entry_of(r.flow_plans(58, 0x4242)[1])
    assert k == OffloadKey(3, 58, SERVER6, PUBLIC6, 0x4242, 129 << 8, NFPROTO_IPV6)


def test_ipv6_plans_the_data_path_cannot_carry() -> None:
    plan = fed(RouterFlows6(*MACS)).flow_plans(6, 40001)[0]
    assert offload_entry(replace(plan, neigh_synthetic=True), INDEX.__getitem__) is None
    assert offload_entry(replace(plan, dst_mac=b""), INDEX.__getitem__) is None  # resolved per packet
    assert offload_entry(replace(plan, match=b""), INDEX.__getitem__) is None
    assert offload_entry(replace(plan, match=plan.match[:12]), INDEX.__getitem__) is None  # an IPv4-sized match
    assert offload_entry(plan, {"eth0": 2, "eth1": 0}.__getitem__) is None
    assert offload_entry(replace(plan, proto=1), INDEX.__getitem__) is None  # ICMP is IPv4's


def test_ipv6_encodings_round_trip_and_sizes() -> None:
    r = fed(RouterFlows6(*MACS))
    for proto, port in ((17, 40000), (6, 40001), (58, 0x4242)):
        for plan in r.flow_plans(proto, port):
            k, a = entry_of(plan)
            assert len(encode_key(k)) == KEY6_SIZE and decode_key(encode_key(k)) == k
            assert len(encode_action(a)) == ACTION6_SIZE and decode_action(encode_action(a)) == a
    raw = encode_key(OffloadKey(7, 6, LAN6, SERVER6, 0x1234, 80, NFPROTO_IPV6))
    assert raw[4:36] == LAN6.to_bytes(16, "big") + SERVER6.to_bytes(16, "big")
    assert raw[36:41] == bytes.fromhex("1234005006") and raw[41:] == b"\0\0\0"
    # the same numbers as an IPv4 key are another key, of another map
    assert len(encode_key(OffloadKey(7, 6, 1, 2, 0x1234, 80, NFPROTO_IPV4))) == KEY_SIZE


# --- a model of the BPF program's IPv6 rewrite -------------------------------------------------------------

def _bpf6(frame: bytes, a: OffloadAction, proto: int, partial: bool) -> bytearray:
    f = bytearray(frame)
    f[0:12] = a.dst_mac + a.src_mac
    f[IP + IP6H_SADDR:IP + IP6H_LEN] = a.saddr.to_bytes(16, "big") + a.daddr.to_bytes(16, "big")
    f[IP + IP6H_HOP_LIMIT] -= 1
    rewrite_l4(f, a, L4, CHECK_AT[proto], L4 + ICMP6H_IDENTIFIER if proto == 58 else None, proto == 17, partial)
    return f


def _partial_ok(ours: bytes | bytearray, proto: int, at: int) -> None:
    """A CHECKSUM_PARTIAL packet's field after the rewrite is its new pseudo-header sum, folded."""
    ip = ours[IP:]
    saddr = int.from_bytes(ip[IP6H_SADDR:IP6H_SADDR + 16], "big")
    daddr = int.from_bytes(ip[IP6H_SADDR + 16:IP6H_LEN], "big")
    want = ~csum_fold(pseudo6_sum(saddr, daddr, proto, len(ip) - IP6H_LEN)) & 0xFFFF
    assert int.from_bytes(ours[at:at + 2], "big") % 0xFFFF == want % 0xFFFF


# ICMPv6 is never CHECKSUM_PARTIAL (icmpv6_push_pending_frames: the checksum in full), so there is no partial
# ICMPv6 case
@pytest.mark.parametrize(("proto", "portmap", "partial"), [
    pytest.param(proto, portmap, partial, id=f"{name}-{'partial' if partial else 'full'}")
    for proto, portmap, name in ((17, False, "udp"), (6, False, "tcp"), (58, False, "icmpv6"),
                                 (17, True, "udp-dnat-snat-ports"), (6, True, "tcp-dnat-snat-ports"))
    for partial in (False, True) if proto != 58 or not partial])
def test_bpf_ipv6_rewrite_gives_the_engines_frame(proto: int, portmap: bool, partial: bool) -> None:
    """The flow's next packet each way: the model of the program applied to the entry of its plan gives the
    engine's own frame (partial: the same frame but for the checksum, which is the new pseudo-header sum).
    With the port-mapping rules both manips change addresses and ports."""
    r = RouterFlows6(*MACS, rules=PORTMAP_RULES6 if portmap else RULES6)
    cport = 40000
    dst, dport = (LAN6, 6000 if proto == 17 else 6001) if portmap else (SERVER6, 5000 if proto == 17 else 5001)
    if proto == 17:
        r.udp(cport, dport, dst=dst)
    elif proto == 6:
        r.tcp(cport, dport, dst=dst)
    else:
        r.ping(cport)
    orig, reply = r.flow_plans(proto, cport)
    _, to_server = entry_of(orig)
    _, to_client = entry_of(reply)
    if portmap:
        assert to_server.sport != cport and to_server.l4_port_diff and to_client.l4_port_diff
    at = CHECK_AT[proto]
    seq, ack = (1013, 5013) if proto == 6 else (9, 0)
    out = datagram6(CLIENT6, dst, proto, cport, dport if proto != 58 else seq, seq=seq, ack=ack, payload=b"more")
    sent = r.feed(out, True)
    ours = _bpf6(r.frame(out, True), to_server, proto, False)
    same(ours, sent, [at])
    if partial:
        part = datagram6(CLIENT6, dst, proto, cport, dport, seq=seq, ack=ack, payload=b"more", partial=True)
        moved = _bpf6(r.frame(part, True), to_server, proto, True)
        _partial_ok(moved, proto, at)
        assert moved[:at] + moved[at + 2:] == sent[:at] + sent[at + 2:]
    s, d, sp, dp = r.translated(sent)
    back = datagram6(d, s, proto, dp, sp if proto != 58 else seq, seq=5013, ack=1017, payload=b"back",
                     reply=proto == 58)
    received = r.feed(back, False)
    same(_bpf6(r.frame(back, False), to_client, proto, False), received, [at])
    if partial:
        part = datagram6(d, s, proto, dp, sp, seq=5013, ack=1017, payload=b"back", partial=True)
        moved = _bpf6(r.frame(part, False), to_client, proto, True)
        _partial_ok(moved, proto, at)
        assert moved[:at] + moved[at + 2:] == received[:at] + received[at + 2:]
