"""Map entries from the engine's plans (natbox/offload/entry.py), no kernel needed.

The entries come from real FlowPlans (a router engine fed UDP, TCP and ICMP echo flows). A Python model of
what natbox_offload.bpf.c does with an entry (the csum helpers' by-difference updates) applied to the
flow's next packet must give the frame the engine itself forwards, for full and CHECKSUM_PARTIAL sums."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from natbox.offload import entry as entry_mod
from natbox.offload.datapath import SOURCE
from natbox.offload.entry import (
    ACTION6_SIZE,
    ACTION_SIZE,
    KEY6_SIZE,
    KEY_SIZE,
    MAX_FLOWS,
    STATS_SIZE,
    FlowStats,
    OffloadAction,
    OffloadKey,
    decode_action,
    decode_key,
    decode_stats,
    encode_action,
    encode_key,
    offload_entry,
)
from natbox.testing.offload import CLIENT, LAN_ADDR, PORTMAP_RULES, PUBLIC, RULES, SERVER, RouterFlows
from natbox.testing.offload_model import INDEX, MACS, by_diff, entry_of, fed, rewrite_l4, same
from natbox.wire import ethernet, icmp, ipv4, tcp, udp
from natbox.wire.checksum import csum_partial, pseudo_header_sum
from natbox.wire.layout import (
    ETH_HDR_LEN,
    ICMPH_CHECKSUM,
    ICMPH_ID,
    IPH_CHECK,
    IPH_MIN_LEN,
    IPH_SADDR,
    IPH_TTL,
    TCPH_CHECK,
    UDPH_CHECK,
)

IP, L4 = ETH_HDR_LEN, ETH_HDR_LEN + IPH_MIN_LEN


def test_entries_from_a_masqueraded_flow() -> None:
    r = fed(RouterFlows(*MACS))
    orig, reply = r.flow_plans(17, 40000)
    k, a = entry_of(orig)
    assert k == OffloadKey(2, 17, CLIENT, SERVER, 40000, 5000)
    assert (a.oif, a.mtu, a.dst_mac, a.src_mac) == (3, 1500, MACS[3], MACS[1])
    assert (a.saddr, a.daddr, a.sport, a.dport, a.l4_rewrite) == (PUBLIC, SERVER, 40000, 5000, True)
    k, a = entry_of(reply)
    assert k == OffloadKey(3, 17, SERVER, PUBLIC, 5000, 40000)
    assert (a.oif, a.dst_mac, a.src_mac, a.saddr, a.daddr) == (2, MACS[2], MACS[0], SERVER, CLIENT)
    # ICMP echo: the id in sport, type << 8 | code in dport
    k, a = entry_of(r.flow_plans(1, 0x4242)[0])
    assert k == OffloadKey(2, 1, CLIENT, SERVER, 0x4242, 8 << 8)
    assert (a.sport, a.dport, a.l4_addr_diff) == (0x4242, 0, 0)
    k, _ = entry_of(r.flow_plans(1, 0x4242)[1])
    assert k == OffloadKey(3, 1, SERVER, PUBLIC, 0x4242, 0)


def test_plans_the_data_path_cannot_carry() -> None:
    plan = fed(RouterFlows(*MACS)).flow_plans(6, 40001)[0]
    assert offload_entry(replace(plan, neigh_synthetic=True), INDEX.__getitem__) is None
    assert offload_entry(replace(plan, dst_mac=b""), INDEX.__getitem__) is None  # resolved per packet
    assert offload_entry(replace(plan, match=b""), INDEX.__getitem__) is None
    assert offload_entry(plan, {"eth0": 2, "eth1": 0}.__getitem__) is None
    assert offload_entry(replace(plan, proto=47), INDEX.__getitem__) is None


def test_encodings_round_trip_and_sizes() -> None:
    r = fed(RouterFlows(*MACS))
    for proto, port in ((17, 40000), (6, 40001), (1, 0x4242)):
        for plan in r.flow_plans(proto, port):
            k, a = entry_of(plan)
            assert len(encode_key(k)) == KEY_SIZE and decode_key(encode_key(k)) == k
            assert len(encode_action(a)) == ACTION_SIZE and decode_action(encode_action(a)) == a
    # the key's addresses and ports are in network order, the ifindex in the machine's
    raw = encode_key(OffloadKey(7, 6, 0x0A000102, 0xC6336402, 0x1234, 80))
    assert raw[4:16] == bytes.fromhex("0a000102c633640212340050") and raw[16] == 6
    assert int.from_bytes(raw[:4], "little" if raw[0] == 7 else "big") == 7
    # per-CPU values are summed, the last-seen time is the latest
    two = b"".join(x.to_bytes(8, "little") for x in (3, 300, 50, 4, 400, 40))
    if decode_stats(two[:STATS_SIZE]).packets != 3:  # a big-endian machine
        two = b"".join(x.to_bytes(8, "big") for x in (3, 300, 50, 4, 400, 40))
    assert decode_stats(two) == FlowStats(7, 700, 50)


def test_c_source_matches_the_layouts() -> None:
    src = SOURCE.read_text()
    sizes = dict(re.findall(r"_Static_assert\(sizeof\(struct (\w+)\) == (\d+)", src))
    assert {k: int(v) for k, v in sizes.items()} == {"nb_key": KEY_SIZE, "nb_action": ACTION_SIZE,
                                                     "nb_stats": STATS_SIZE, "nb_key6": KEY6_SIZE,
                                                     "nb_action6": ACTION6_SIZE}
    offsets = dict(re.findall(r"offsetof\(struct nb_action, (\w+)\) == (\d+)", src))
    assert {k: int(v) for k, v in offsets.items()} == {"saddr": 20, "l3_diff": 32, "flags": 44}
    offsets6 = dict(re.findall(r"offsetof\(struct nb_action6, (\w+)\) == (\d+)", src))
    assert {k: int(v) for k, v in offsets6.items()} == {"saddr": 20, "l4_addr_diff": 56, "flags": 64}
    assert re.search(rf"#define NB_MAX_FLOWS {MAX_FLOWS}\b", src)
    assert re.search(rf"#define NB_F_L4_REWRITE {entry_mod.F_L4_REWRITE}\b", src)


# --- a model of the BPF program's rewrite ---------------------------------------------------------------

def _bpf(frame: bytes, a: OffloadAction, proto: int, partial: bool) -> bytearray:
    f = bytearray(frame)
    f[0:12] = a.dst_mac + a.src_mac
    f[IP + IPH_SADDR:IP + IPH_SADDR + 8] = a.saddr.to_bytes(4, "big") + a.daddr.to_bytes(4, "big")
    f[IP + IPH_TTL] -= 1
    at = IP + IPH_CHECK
    f[at:at + 2] = by_diff(int.from_bytes(f[at:at + 2], "big"), a.l3_diff).to_bytes(2, "big")
    csum_at = L4 + {1: ICMPH_CHECKSUM, 6: TCPH_CHECK, 17: UDPH_CHECK}[proto]
    rewrite_l4(f, a, L4, csum_at, L4 + ICMPH_ID if proto == 1 else None, proto == 17, partial)
    return f


def _datagram(src: int, dst: int, proto: int, sport: int, dport: int, seq: int, ack: int, partial: bool) -> bytes:
    if proto == 17:
        seg = bytearray(udp.build_udp(src, dst, sport, dport, b"payload!"))
    elif proto == 6:
        seg = bytearray(tcp.build_tcp(src, dst, sport, dport, seq=seq, ack=ack, payload=b"more"))
    else:
        seg = bytearray(icmp.build_icmp_echo(sport, 9, b"ping", reply=src != CLIENT))
    if partial:  # what a sender with checksum offload hands over: the pseudo-header sum, uncomplemented
        at = TCPH_CHECK if proto == 6 else UDPH_CHECK
        pseudo = csum_partial(b"", pseudo_header_sum(src, dst, proto, len(seg)))
        seg[at:at + 2] = ((pseudo & 0xFFFF) + (pseudo >> 16)).to_bytes(2, "big")
    return bytes(ipv4.build_ipv4(src, dst, proto, seg))


# ICMP is never CHECKSUM_PARTIAL (icmp_push_reply, ping_v4_push_pending_frames: the checksum in full), so
# there is no partial ICMP case
@pytest.mark.parametrize(("proto", "portmap", "partial"), [
    pytest.param(proto, portmap, partial, id=f"{name}-{'partial' if partial else 'full'}")
    for proto, portmap, name in ((17, False, "udp"), (6, False, "tcp"), (1, False, "icmp"),
                                 (17, True, "udp-dnat-snat-ports"), (6, True, "tcp-dnat-snat-ports"))
    for partial in (False, True) if proto != 1 or not partial])
def test_bpf_rewrite_gives_the_engines_frame(proto: int, portmap: bool, partial: bool) -> None:
    """The flow's next packet each way: the model of the program applied to the entry of its plan gives
    the engine's own frame. With the port-mapping rules both manips change addresses and ports."""
    r = RouterFlows(*MACS, rules=PORTMAP_RULES if portmap else RULES)
    cport = 40000
    dst, dport = (LAN_ADDR, 6000 if proto == 17 else 6001) if portmap else (SERVER, 5000 if proto == 17 else 5001)
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
    l4_check = L4 + {17: UDPH_CHECK, 6: TCPH_CHECK, 1: ICMPH_CHECKSUM}[proto]
    out = _datagram(CLIENT, dst, proto, cport, dport, 1013, 5013, partial)
    sent = r.feed(out, True, partial=partial)
    same(_bpf(r.frame(out, True), to_server, proto, partial), sent, [IP + IPH_CHECK, l4_check])
    s, d, sp, dp = r.translated(sent)
    back = _datagram(d, s, proto, dp, sp, 5013, 1017, partial)
    same(_bpf(r.frame(back, False), to_client, proto, partial), r.feed(back, False, partial=partial),
          [IP + IPH_CHECK, l4_check])


def test_udp_without_a_checksum_keeps_none() -> None:
    r = fed(RouterFlows(*MACS))
    for plan in r.flow_plans(17, 40000):
        _, a = entry_of(plan)
        out = plan.direction == 0
        src, dst, sp, dp = (CLIENT, SERVER, 40000, 5000) if out else (SERVER, PUBLIC, 5000, 40000)
        seg = udp.build_udp(src, dst, sp, dp, b"none", zero_checksum=True)
        mac = (MACS[0], MACS[2]) if out else (MACS[1], MACS[3])
        frame = bytes(ethernet.build_ethernet(*mac, ethernet.ETH_P_IP, bytes(ipv4.build_ipv4(src, dst, 17, seg))))
        result = r.engine.receive(frame, "eth0" if out else "eth1", r.now)
        r.now += 0.01
        ours = _bpf(frame, a, 17, False)
        assert ours[L4 + UDPH_CHECK:L4 + UDPH_CHECK + 2] == b"\0\0"
        same(ours, bytes(result.emitted[0].frame), [IP + IPH_CHECK])
