"""-m recent evaluated on packets as xt_recent's recent_mt does, and its lists' lifetime and bounds."""

from __future__ import annotations

import shlex

from natbox.netfilter import Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.rules.xtstate import HZ, XtState
from natbox.rules.xtstate.recent import IP_LIST_TOT
from natbox.skb import Skb
from natbox.testing.rules_fakes import FakeCtx, ip, tcp


def rules(*lines: str) -> Ruleset:
    rs = Ruleset()
    for line in lines:
        rs.execute(parse_argv(shlex.split(line)))
    return rs


def verdicts(rs: Ruleset, ctx: FakeCtx, skbs: list[Skb], times: list[float]) -> list[int]:
    """The first rule of INPUT that each packet hit (0: none), one packet per time."""
    out = []
    chain = rs.tables["filter"].chains["INPUT"].rules
    for skb, t in zip(skbs, times, strict=True):
        ctx.set_now(t)
        before = [r.packets for r in chain]
        rs.run("filter", Hook.LOCAL_IN, skb, ctx)
        hit = [i + 1 for i, (r, b) in enumerate(zip(chain, before, strict=True)) if r.packets > b]
        out.append(hit[0] if hit else 0)
    return out


def syn(src: str = "10.0.0.1", ttl: int = 64) -> Skb:
    skb = tcp(src, 40000, "10.0.0.2", 22, iif="eth0")
    skb.data[8] = ttl
    return skb


UFW_LIMIT = (
    "-A INPUT -p tcp --dport 22 -m recent --set --name DEFAULT --mask 255.255.255.255 --rsource",
    "-A INPUT -p tcp --dport 22 -m recent --update --seconds 30 --hitcount 6 --name DEFAULT "
    "--mask 255.255.255.255 --rsource -j DROP",
    "-A INPUT -p tcp --dport 22 -j ACCEPT",
)


def test_ufw_limit_drops_the_sixth_new_connection_within_30_seconds() -> None:
    rs = rules(*UFW_LIMIT)
    ctx = FakeCtx(Hook.LOCAL_IN)
    rs.run("filter", Hook.LOCAL_IN, syn(), ctx)
    # --set always matches and goes on; --update counts the stamps: 6 hits within 30 s drop
    counts = [r.packets for r in rs.tables["filter"].chains["INPUT"].rules]
    assert counts == [1, 0, 1]
    for i in range(1, 6):
        ctx.set_now(float(i))
        rs.run("filter", Hook.LOCAL_IN, syn(), ctx)
    counts = [r.packets for r in rs.tables["filter"].chains["INPUT"].rules]
    assert counts == [6, 1, 5]  # the 6th packet (6 stamps) is dropped
    # another source is not limited
    rs.run("filter", Hook.LOCAL_IN, syn("10.0.0.9"), ctx)
    assert [r.packets for r in rs.tables["filter"].chains["INPUT"].rules] == [7, 1, 6]
    # 31 s after the 2nd stamp only the later ones count; the update of a dropped packet was a stamp too
    ctx.set_now(40.0)
    rs.run("filter", Hook.LOCAL_IN, syn(), ctx)
    assert [r.packets for r in rs.tables["filter"].chains["INPUT"].rules] == [8, 1, 7]


def test_list_contents_as_proc_prints_them() -> None:
    rs = rules("-A INPUT -m recent --set --name web --mask 255.255.255.0")
    ctx = FakeCtx(Hook.LOCAL_IN)
    verdicts(rs, ctx, [syn("10.0.0.1"), syn("10.0.0.77", ttl=60), syn("10.1.0.1")], [1.0, 2.0, 3.5])
    t = ctx.xt.recent["web"]
    # the mask is applied; the /24 of both first packets is one entry, updated with the 2nd packet's TTL
    assert t.proc_lines() == [
        f"src=10.0.0.0 ttl: 60 last_seen: {2 * HZ} oldest_pkt: 2 {HZ}, {2 * HZ}",
        f"src=10.1.0.0 ttl: 64 last_seen: {int(3.5 * HZ)} oldest_pkt: 1 {int(3.5 * HZ)}",
    ]


def test_rcheck_hitcount_seconds_rttl_and_inversion() -> None:
    rs = rules("-A INPUT -m recent --set",
               "-A INPUT -m recent --rcheck --hitcount 2 -j ACCEPT")
    ctx = FakeCtx(Hook.LOCAL_IN)
    assert verdicts(rs, ctx, [syn(), syn()], [0.0, 1.0]) == [1, 1]
    assert [r.packets for r in rs.tables["filter"].chains["INPUT"].rules] == [2, 1]

    rs = rules("-A INPUT -m recent --rcheck --seconds 10 --rttl -j ACCEPT",
               "-A INPUT -m recent ! --rcheck -j DROP")
    ctx = FakeCtx(Hook.LOCAL_IN)
    ctx.xt.recent.clear()
    # nothing in the list yet: rcheck fails, ! rcheck matches
    assert verdicts(rs, ctx, [syn()], [0.0]) == [2]
    t = ctx.xt.recent["DEFAULT"]
    t.init(ip("10.0.0.1"), 64, 0)
    assert verdicts(rs, ctx, [syn(ttl=64), syn(ttl=63), syn(ttl=64)], [5.0, 5.0, 10.5]) == [1, 0, 0]


def test_update_reap_and_remove() -> None:
    rs = rules("-A INPUT -m recent --update --seconds 2 --reap -j ACCEPT",
               "-A INPUT -m recent --remove -j DROP")
    ctx = FakeCtx(Hook.LOCAL_IN)
    verdicts(rs, ctx, [syn("10.9.9.9")], [0.0])  # creates the DEFAULT list
    t = ctx.xt.recent["DEFAULT"]
    t.init(ip("10.0.0.5"), 0, 0)
    t.init(ip("10.0.0.1"), 0, 0)
    # 10.0.0.1 seen at 0 s: at 1 s --update matches (and stamps); the oldest entry (10.0.0.5) is not reaped
    assert verdicts(rs, ctx, [syn()], [1.0]) == [1]
    assert list(t.entries) == [ip("10.0.0.5"), ip("10.0.0.1")]
    # at 5 s 10.0.0.1 is too old: no update, the reap drops the oldest (10.0.0.5), --remove drops 10.0.0.1
    assert verdicts(rs, ctx, [syn()], [5.0]) == [2]
    assert list(t.entries) == []


def test_list_is_bounded_lru() -> None:
    rs = rules("-A INPUT -m recent --set")
    ctx = FakeCtx(Hook.LOCAL_IN)
    srcs = [f"10.0.{i // 200}.{i % 200 + 1}" for i in range(IP_LIST_TOT + 5)]
    verdicts(rs, ctx, [syn(s) for s in srcs], [float(i) for i in range(len(srcs))])
    t = ctx.xt.recent["DEFAULT"]
    assert len(t.entries) == IP_LIST_TOT
    assert next(iter(t.entries)) == ip(srcs[5])  # the five least recently seen were evicted


def test_stamps_ring_holds_the_hitcount_rounded_up_to_a_power_of_two() -> None:
    rs = rules("-A INPUT -m recent --update --hitcount 5")
    st = XtState()
    st.sync([rs.tables["filter"]])
    t = st.recent["DEFAULT"]
    assert t.nstamps_max_mask == 7
    e = t.init(ip("10.0.0.1"), 0, 100)
    for now in range(101, 120):
        t.update(e, now)
    assert e.nstamps == 8 and sorted(e.stamps) == list(range(112, 120))
    # a rule wanting a larger ring (--set asks for 32 stamps) flushes the list and grows it (recent_mt_check)
    rs.execute(parse_argv(shlex.split("-A INPUT -m recent --set")))
    st.sync([rs.tables["filter"]])
    assert t.nstamps_max_mask == 31 and t.entries == {}


def test_sync_keeps_named_lists_and_drops_the_rest() -> None:
    rs = rules("-A INPUT -m recent --set --name a", "-A INPUT -m recent --set --name b")
    st = XtState()
    st.sync([rs.tables["filter"]])
    st.recent["a"].init(1, 0, 0)
    rs.execute(parse_argv(["-D", "INPUT", "2"]))
    st.sync([rs.tables["filter"]])
    assert list(st.recent) == ["a"] and len(st.recent["a"].entries) == 1
    rs.execute(parse_argv(["-F"]))
    st.sync([rs.tables["filter"]])
    assert st.recent == {}


def test_forwarded_packets_count_the_ttl_before_forwarding() -> None:
    rs = Ruleset()
    rs.execute(parse_argv(["-A", "FORWARD", "-m", "recent", "--set"]))
    ctx = FakeCtx(Hook.FORWARD)
    skb = syn(ttl=63)
    skb.oif = "eth1"
    rs.run("filter", Hook.FORWARD, skb, ctx)
    assert ctx.xt.recent["DEFAULT"].entries[ip("10.0.0.1")].ttl == 64


def test_engine_keeps_the_lists_while_rules_name_them_and_status_shows_them() -> None:
    import io
    from typing import cast

    from natbox.conntrack.tuple import parse_addr
    from natbox.demos.scenarios import _docker_host
    from natbox.engine.engine import Engine
    from natbox.gateway.commands import Commands
    from natbox.gateway.loop import EventLoop
    from natbox.wire import ipv4
    from natbox.wire import tcp as wtcp

    class Loop:
        def counters(self) -> dict[str, dict[str, int]]:
            return {}

        def report(self) -> str:
            return "idle"

    host, _ = _docker_host()
    engine = Engine(host, seed=3)
    cmds = Commands(engine, cast(EventLoop, Loop()))

    def run(*argv: str) -> int:
        return cmds.run_command("iptables", list(argv), io.StringIO(""), io.StringIO(), io.StringIO())

    assert run("-A", "OUTPUT", "-m", "recent", "--set", "--name", "out", "--rdest") == 0
    s, d = parse_addr("45.77.200.180"), parse_addr("8.8.8.8")
    seg = wtcp.build_tcp(s, d, 40000, 443, seq=1, ack=0, flags=wtcp.SYN, window=64240)
    engine.send_local(bytes(ipv4.build_ipv4(s, d, 6, seg, ttl=64)), 2.0)
    assert engine.xt_state.recent["out"].proc_lines() == [
        f"src=8.8.8.8 ttl: 64 last_seen: {2 * HZ} oldest_pkt: 1 {2 * HZ}"]
    text = cmds.status()
    assert f"xt_recent/out: 1 entries\n  src=8.8.8.8 ttl: 64 last_seen: {2 * HZ} oldest_pkt: 1 {2 * HZ}\n" in text
    assert run("-A", "OUTPUT", "-j", "RATEEST", "--rateest-name", "up", "--rateest-interval", "1s",
               "--rateest-ewmalog", "8s") == 0
    assert "\nrate estimator up: 0 bytes/s, 0 packets/s\n" in cmds.status()
    assert run("-F", "OUTPUT") == 0  # the last rule naming the list is gone: so is the list
    assert engine.xt_state.recent == {} and engine.xt_state.rateest == {}
    assert "xt_recent" not in cmds.status()
