"""cluster, ipvs and osf evaluated as their kernel modules decide in natbox's model."""

from __future__ import annotations

import shlex

from natbox.conntrack.conn import Conn
from natbox.conntrack.tuple import ConnTuple
from natbox.netfilter import Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.skb import PacketType, Skb
from natbox.testing.rules_fakes import FakeCtx, ip, tcp


def hits(table: str, hook: Hook, specs: list[str], skb: Skb) -> list[bool]:
    rs = Ruleset()
    for spec in specs:
        rs.execute(parse_argv(["-t", table, "-A", hook.chain_name, *shlex.split(spec)]))
    rs.run(table, hook, skb, FakeCtx(hook))
    return [r.packets == 1 for r in rs.tables[table].chains[hook.chain_name].rules]


def _rol(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF


def jhash_final(a: int, b: int, c: int) -> int:
    m = 0xFFFFFFFF
    c ^= b
    c = (c - _rol(b, 14)) & m
    a ^= c
    a = (a - _rol(c, 11)) & m
    b ^= a
    b = (b - _rol(a, 25)) & m
    c ^= b
    c = (c - _rol(b, 16)) & m
    a ^= c
    a = (a - _rol(c, 4)) & m
    b ^= a
    b = (b - _rol(a, 14)) & m
    c ^= b
    c = (c - _rol(b, 24)) & m
    return c


def node_of(src: str, seed: int, total: int) -> int:
    """xt_cluster_hash: jhash_1word of the address as a little-endian kernel loads it, scaled to the nodes."""
    word = int.from_bytes(bytes(int(x) for x in src.split(".")), "little")
    init = (0xDEADBEEF + 4 + seed) & 0xFFFFFFFF
    h = jhash_final((init + word) & 0xFFFFFFFF, init, init)
    return (h * total) >> 32


def with_ct(src: str) -> Skb:
    skb = tcp(src, 1000, "10.0.0.2", 80, iif="eth0")
    t = ConnTuple(ip(src), 1000, ip("10.0.0.2"), 80, 6)
    skb.ct = Conn(t, ConnTuple(t.dst, 80, t.src, 1000, 6), now=0.0, ct_id=1)
    return skb


def test_cluster_splits_connections_by_the_hash_of_the_original_source() -> None:
    specs = ["-m cluster --cluster-total-nodes 3 --cluster-local-node 1 --cluster-hash-seed 0xdeadbeef",
             "-m cluster --cluster-total-nodes 3 --cluster-local-node 2 --cluster-hash-seed 0xdeadbeef",
             "-m cluster --cluster-total-nodes 3 --cluster-local-node 3 --cluster-hash-seed 0xdeadbeef",
             "-m cluster --cluster-total-nodes 3 ! --cluster-local-node 1 --cluster-hash-seed 0xdeadbeef"]
    seen = set()
    for i in range(1, 40):
        src = f"192.168.{i}.{i * 7 % 250}"
        got = hits("mangle", Hook.PRE_ROUTING, specs, with_ct(src))
        node = node_of(src, 0xDEADBEEF, 3)
        assert got == [node == 0, node == 1, node == 2, node != 0]
        seen.add(node)
    assert seen == {0, 1, 2}
    # no ct: no node owns the packet, inverted or not
    assert hits("mangle", Hook.PRE_ROUTING, specs, tcp("10.0.0.1", 1, "10.0.0.2", 2)) == [False] * 4


def test_cluster_turns_multicast_link_frames_to_unicast_addresses_into_host_packets() -> None:
    skb = with_ct("10.0.0.1")
    skb.pkt_type = PacketType.MULTICAST
    hits("mangle", Hook.PRE_ROUTING, ["-m cluster --cluster-total-nodes 2 --cluster-local-node 1 "
                                      "--cluster-hash-seed 1"], skb)
    assert skb.pkt_type == PacketType.HOST


def test_ipvs_and_osf_without_ipvs_or_fingerprints() -> None:
    skb = with_ct("10.0.0.1")
    assert hits("filter", Hook.LOCAL_IN, ["-m ipvs --ipvs", "-m ipvs ! --ipvs", "-m ipvs ! --vport 80",
                                          "-m ipvs ! --vaddr 1.2.3.4/8 --vdir REPLY"], skb) == [
        False, True, False, False]
    assert hits("filter", Hook.LOCAL_IN, ["-p tcp -m osf --genre Linux", "-p tcp -m osf ! --genre Linux"],
                tcp("10.0.0.1", 1, "10.0.0.2", 2)) == [False, False]


def test_rateest_follows_gen_estimator_ewma_on_the_injected_clock() -> None:
    from natbox.rules.xtstate import HZ

    rs = Ruleset()
    for spec in ("-j RATEEST --rateest-name RE1 --rateest-interval 250.0ms --rateest-ewmalog 500.0ms",
                 "-m rateest --rateest RE1 --rateest-gt --rateest-bps 3000Bps",
                 "-m rateest --rateest RE1 --rateest-lt --rateest-pps 5"):
        rs.execute(parse_argv(["-A", "INPUT", *shlex.split(spec)]))
    ctx = FakeCtx(Hook.LOCAL_IN)
    ctx.xt.sync([rs.tables["filter"]], 0.0)
    est = ctx.xt.rateest["RE1"]
    assert (est.intvl_log, est.ewma_log) == (0, 1)
    period = HZ // 4  # est_timer every (HZ/4) << intvl_log jiffies: 62, so 0.248 s
    rules = rs.tables["filter"].chains["INPUT"].rules
    avbps = avpps = 0
    skb = udp_of(1000)
    for k in range(12):  # one 1000-byte datagram per period, just after each tick
        ctx.set_now((k * period + 1) / HZ)
        rs.run("filter", Hook.LOCAL_IN, skb, ctx)
        if k:  # the tick at k*period folded in the previous period's datagram (est_timer, ewma_log 1)
            avbps += ((1000 << 10) >> 1) - (avbps >> 1)
            avpps += ((1 << 10) >> 1) - (avpps >> 1)
        assert est.read(k * period + 1) == ((avbps + 0xF) >> 8, (avpps + 0xF) >> 8)
    # converged to 1000 bytes per quarter second: 4000 B/s (above 3000), 4 packets/s (below 5)
    assert est.read(11 * period + 1) == (3998, 4)
    assert [r.packets for r in rules] == [12, 9, 12]  # above 3000 B/s from the 4th period (2000, 3000, 3500...)
    # idle: the averages decay to nothing and a day of ticks is skipped cheaply
    assert est.read(86400 * HZ) == (0, 0)


def udp_of(size: int) -> Skb:
    from natbox.testing.rules_fakes import udp

    skb = udp("10.0.0.1", 1, "10.0.0.2", 2, iif="eth0", size=size - 28)
    assert len(skb.data) == size
    return skb
