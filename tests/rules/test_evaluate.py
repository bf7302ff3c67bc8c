"""Rule evaluation (ipt_do_table) and each match/target on packets, with a fake XtContext."""

from __future__ import annotations

import itertools
import shlex

import pytest

from natbox.conntrack.conn import Conn
from natbox.conntrack.tuple import ConnTuple
from natbox.nat.range import NatRange, RangeFlags
from natbox.netfilter import CtInfo, CtStatus, Hook, ManipType
from natbox.rules.api import NF_ACCEPT, NF_DROP
from natbox.rules.evaluate import MAX_JUMP_DEPTH, Ruleset
from natbox.rules.model import RESOURCE_PROBLEM, RulesError
from natbox.rules.parser import parse_argv, parse_restore
from natbox.skb import Skb
from natbox.testing.rules_fakes import FakeCtx, icmp, ip, tcp, udp

DOCKER = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 8000 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 8000 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 10000 -j DNAT --to-destination 172.17.0.2:8000
COMMIT
"""
HOST = "198.51.100.1"


def docker() -> Ruleset:
    rs = Ruleset()
    rs.restore(parse_restore(DOCKER))
    return rs


def rules(table: str, *lines: str) -> Ruleset:
    rs = Ruleset()
    for line in lines:
        rs.execute(parse_argv(["-t", table, *shlex.split(line)]))
    return rs


def with_ct(skb: Skb, ctinfo: CtInfo, status: int | None = None, *, timeout: float = 0.0) -> Skb:
    orig = ConnTuple(skb.saddr, 1000, skb.daddr, 80, skb.protocol)
    reply = ConnTuple(skb.daddr, 80, skb.saddr, 1000, skb.protocol)
    ct = Conn(orig, reply, now=0.0, ct_id=1)
    ct.status = status if status is not None else 0
    ct.timeout = timeout
    skb.ct = ct
    skb.ctinfo = ctinfo
    return skb


# --- Docker end to end (§6 walk-through) -----------------------------------------------------------

def test_docker_dnat_from_outside() -> None:
    rs, ctx = docker(), FakeCtx(Hook.PRE_ROUTING, local=(HOST,))
    skb = tcp("198.51.100.7", 40000, HOST, 10000, iif="eth0")
    assert rs.run("nat", Hook.PRE_ROUTING, skb, ctx) == NF_ACCEPT
    want = NatRange(RangeFlags.MAP_IPS | RangeFlags.PROTO_SPECIFIED, ip("172.17.0.2"), ip("172.17.0.2"), 8000, 8000)
    assert ctx.nat_calls == [(want, ManipType.DST)]
    skb2 = tcp("198.51.100.7", 40001, HOST, 10000, iif="eth0")
    skb2.trace = []
    rs.run("nat", Hook.PRE_ROUTING, skb2, ctx)
    assert skb2.trace == [
        "nat PREROUTING #1 -m addrtype --dst-type LOCAL: match -> jump DOCKER",
        "nat DOCKER #1 -i docker0: no match (in is eth0)",
        "nat DOCKER #2 ! -i docker0 -p tcp -m tcp --dport 10000: match -> DNAT --to-destination 172.17.0.2:8000",
        "nat DOCKER: ACCEPT",
    ]


def test_docker_no_dnat_from_the_bridge_or_other_ports() -> None:
    rs, ctx = docker(), FakeCtx(Hook.PRE_ROUTING, local=(HOST,))
    assert rs.run("nat", Hook.PRE_ROUTING, tcp("172.17.0.2", 4000, HOST, 10000, iif="docker0"), ctx) == NF_ACCEPT
    assert rs.run("nat", Hook.PRE_ROUTING, tcp("198.51.100.7", 4000, HOST, 10001, iif="eth0"), ctx) == NF_ACCEPT
    assert ctx.nat_calls == []


def test_docker_output_loopback_not_natted() -> None:
    rs, ctx = docker(), FakeCtx(Hook.LOCAL_OUT, local=(HOST,))
    rs.run("nat", Hook.LOCAL_OUT, tcp("127.0.0.1", 4000, "127.0.0.1", 10000, oif="lo"), ctx)
    assert ctx.nat_calls == []
    rs.run("nat", Hook.LOCAL_OUT, tcp(HOST, 4000, HOST, 10000, oif="lo"), ctx)
    assert len(ctx.nat_calls) == 1


def test_docker_masquerade_only_leaving_the_bridge() -> None:
    rs, ctx = docker(), FakeCtx(Hook.POST_ROUTING)
    rs.run("nat", Hook.POST_ROUTING, udp("172.17.0.2", 5000, "198.51.100.9", 53, oif="eth0"), ctx)
    assert ctx.masq_calls == [NatRange()]
    rs.run("nat", Hook.POST_ROUTING, udp("172.17.0.2", 5000, "172.17.0.3", 53, oif="docker0"), ctx)
    assert len(ctx.masq_calls) == 1


def test_docker_forward_filter() -> None:
    rs, ctx = docker(), FakeCtx(Hook.FORWARD)
    new_in = tcp("198.51.100.7", 40000, "172.17.0.2", 8000, iif="eth0", oif="docker0")
    assert rs.run("filter", Hook.FORWARD, new_in, ctx) == NF_ACCEPT
    other = tcp("198.51.100.7", 40000, "172.17.0.2", 22, iif="eth0", oif="docker0")
    assert rs.run("filter", Hook.FORWARD, other, ctx) == NF_DROP
    fwd = rs.tables["filter"].chains["FORWARD"]
    assert (fwd.packets, fwd.bytes) == (1, len(other.data))
    reply = with_ct(tcp("198.51.100.7", 80, "172.17.0.2", 40000, 0x12, iif="eth0", oif="docker0"),
                    CtInfo.ESTABLISHED_REPLY)
    assert rs.run("filter", Hook.FORWARD, reply, ctx) == NF_ACCEPT
    out = tcp("172.17.0.2", 40000, "198.51.100.7", 80, iif="docker0", oif="eth0")
    assert rs.run("filter", Hook.FORWARD, out, ctx) == NF_ACCEPT
    assert fwd.rules[0].packets == 4  # -j DOCKER-USER counted every packet
    assert rs.tables["filter"].chains["DOCKER"].rules[0].packets == 1


def test_trace_explains_each_rule() -> None:
    rs, ctx = docker(), FakeCtx(Hook.PRE_ROUTING, local=(HOST,))
    skb = tcp("198.51.100.7", 40000, "198.51.100.9", 80, iif="eth0")
    skb.trace = []
    rs.run("nat", Hook.PRE_ROUTING, skb, ctx)
    assert skb.trace == [
        "nat PREROUTING #1 -m addrtype --dst-type LOCAL: no match (198.51.100.9 is UNICAST)",
        "nat PREROUTING: policy ACCEPT",
    ]
    rs2, ctx2 = docker(), FakeCtx(Hook.FORWARD)
    skb2 = tcp("172.17.0.2", 40000, "172.17.0.3", 80, iif="docker0", oif="docker0")
    skb2.trace = []
    assert rs2.run("filter", Hook.FORWARD, skb2, ctx2) == NF_ACCEPT
    assert "filter FORWARD #5 -i docker0 ! -o docker0: no match (out is docker0)" in skb2.trace
    assert skb2.trace[-1] == "filter FORWARD #6 -i docker0 -o docker0: match -> ACCEPT"


# --- chain traversal ---------------------------------------------------------------------------------

def test_goto_returns_to_callers_caller() -> None:
    rs = rules("filter", "-N A", "-N B", "-A A -g B", "-A A -j DROP", "-A B -j RETURN",
               "-A INPUT -j A", "-A INPUT -j REJECT")
    ctx = FakeCtx(Hook.LOCAL_IN)
    # INPUT -> A -> goto B -> RETURN: back to INPUT after the -j A rule, so REJECT, not A's DROP
    assert rs.run("filter", Hook.LOCAL_IN, udp("10.0.0.1", 1, "10.0.0.2", 2), ctx) == NF_DROP
    assert ctx.rejects == ["icmp-port-unreachable"]
    assert rs.tables["filter"].chains["A"].rules[1].packets == 0


def test_return_from_builtin_uses_policy_and_rule_without_target_continues() -> None:
    rs = rules("filter", "-P INPUT DROP", "-A INPUT -p udp", "-A INPUT -j RETURN", "-A INPUT -j ACCEPT")
    skb = udp("10.0.0.1", 1, "10.0.0.2", 2)
    assert rs.run("filter", Hook.LOCAL_IN, skb, FakeCtx(Hook.LOCAL_IN)) == NF_DROP
    chain = rs.tables["filter"].chains["INPUT"]
    assert chain.rules[0].packets == 1 and chain.rules[0].bytes == len(skb.data)
    assert chain.packets == 1


def test_is_trivial() -> None:
    rs = Ruleset()
    assert rs.is_trivial("filter", Hook.LOCAL_IN)
    rs.execute(parse_argv(["-P", "INPUT", "DROP"]))
    assert not rs.is_trivial("filter", Hook.LOCAL_IN)
    assert rs.is_trivial("filter", Hook.PRE_ROUTING)


def test_loops_and_depth_are_refused() -> None:
    # recorded with iptables 1.8.9 (nf_tables): a loop no base chain reaches is accepted; making it
    # reachable is refused with -EMLINK, as a jump deeper than the stack is
    rs = rules("filter", "-N A", "-N B", "-A A -j B")
    rs.execute(parse_argv(["-A", "B", "-j", "A"]))
    with pytest.raises(RulesError) as e:
        rs.execute(parse_argv(["-A", "INPUT", "-j", "A"]))
    assert e.value.exit_code == RESOURCE_PROBLEM
    assert e.value.message == " RULE_APPEND failed (Too many links): rule in chain INPUT"
    names = [f"C{i}" for i in range(MAX_JUMP_DEPTH + 1)]
    rs = rules("filter", *(f"-N {n}" for n in names))
    for a, b in itertools.pairwise(names):
        rs.execute(parse_argv(["-A", a, "-j", b]))
    with pytest.raises(RulesError):
        rs.execute(parse_argv(["-A", "INPUT", "-j", names[0]]))


# --- kernel-side validity (§5.1) -----------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "-t nat -A PREROUTING -j MASQUERADE",
    "-t nat -A INPUT -j DNAT --to-destination 1.2.3.4",
    "-t nat -A OUTPUT -j SNAT --to-source 1.2.3.4",
    "-t filter -A INPUT -j SNAT --to-source 1.2.3.4",
    "-t nat -A POSTROUTING -p tcp -j REDIRECT",
    "-A INPUT -m addrtype --src-type LOCAL --limit-iface-out",
    "-t nat -A POSTROUTING -m addrtype --src-type LOCAL --limit-iface-in -j ACCEPT",
    "-A INPUT -p udp -j REJECT --reject-with tcp-reset",
    "-t mangle -A PREROUTING -j REJECT",
    "-A OUTPUT -m mac --mac-source 00:11:22:33:44:55",
])
def test_checkentry_refusals(line: str) -> None:
    with pytest.raises(RulesError) as e:
        Ruleset().execute(parse_argv(shlex.split(line)))
    assert e.value.exit_code == RESOURCE_PROBLEM
    assert e.value.message.startswith(" RULE_APPEND failed (Invalid argument): rule in chain ")


def test_user_chain_hook_mask_from_jumps() -> None:
    rs = rules("nat", "-N M", "-A M -j MASQUERADE", "-A POSTROUTING -j M")
    with pytest.raises(RulesError):
        rs.execute(parse_argv(["-t", "nat", "-A", "PREROUTING", "-j", "M"]))
    # the refused command left the table unchanged
    assert not rs.tables["nat"].chains["PREROUTING"].rules


# --- matches ------------------------------------------------------------------------------------------

def _match(table: str, hook: Hook, spec: str, skb: Skb, ctx: FakeCtx | None = None) -> bool:
    rs = rules(table, f"-A {hook.chain_name} {spec} -j MARK --set-mark 1" if table == "mangle"
               else f"-A {hook.chain_name} {spec} -j LOG")
    c = ctx or FakeCtx(hook)
    rs.run(table, hook, skb, c)
    return rs.tables[table].chains[hook.chain_name].rules[0].packets == 1


@pytest.mark.parametrize(("spec", "expect"), [
    ("-p tcp --dport 80", True), ("-p tcp --dport 81", False), ("-p tcp ! --dport 81", True),
    ("-p tcp --sport 1024:65535", True), ("-p tcp --sport :1023", False), ("-p tcp --syn", True),
    ("-p tcp --tcp-flags SYN,ACK SYN", True), ("-p tcp ! --syn", False), ("-p tcp --tcp-option 2", True),
    ("-p tcp --tcp-option 3", False), ("-p udp", False), ("! -p udp", True), ("-s 10.1.0.0/16", True),
    ("! -s 10.1.0.0/16", False), ("-d 10.2.0.9", True), ("-s 10.0.2.0/255.0.255.0", True),
    ("-s 10.0.0.0/255.0.255.0", False),
    ("-i eth+", True), ("-i eth1", False), ("! -i eth1", True),
    ("-p tcp -m multiport --dports 22,80:90", True), ("-p tcp -m multiport --sports 22,80", False),
    ("-p tcp -m multiport --ports 40000", True), ("-m comment --comment hello", True), ("-f", False),
])
def test_standard_tcp_multiport(spec: str, expect: bool) -> None:
    skb = tcp("10.1.2.3", 40000, "10.2.0.9", 80, 0x02, options=bytes([2, 4, 5, 0xB4]), iif="eth0")
    assert _match("filter", Hook.LOCAL_IN, spec, skb) is expect


@pytest.mark.parametrize(("spec", "expect"), [
    ("-p icmp --icmp-type echo-request", True), ("-p icmp --icmp-type 8/0", True),
    ("-p icmp --icmp-type 8/1", False), ("-p icmp --icmp-type any", True),
    ("-p icmp ! --icmp-type echo-reply", True), ("-p icmp --icmp-type destination-unreachable", False),
])
def test_icmp(spec: str, expect: bool) -> None:
    assert _match("filter", Hook.LOCAL_IN, spec, icmp("10.0.0.1", "10.0.0.2", 8, 0)) is expect


def test_fragment_flag_matches_later_fragments_only() -> None:
    from natbox.testing.rules_fakes import ipv4

    later = Skb(ipv4("10.0.0.1", "10.0.0.2", 17, bytes(8), frag_off=10))
    first = Skb(ipv4("10.0.0.1", "10.0.0.2", 17, bytes(8), frag_off=0x2000))
    assert _match("filter", Hook.LOCAL_IN, "-f", later)
    assert not _match("filter", Hook.LOCAL_IN, "-f", first)
    # port matches never match a later fragment
    assert not _match("filter", Hook.LOCAL_IN, "-p udp --dport 0", later)


@pytest.mark.parametrize(("spec", "ctinfo", "status", "expect"), [
    ("-m conntrack --ctstate NEW", CtInfo.NEW, 0, True),
    ("-m conntrack --ctstate RELATED,ESTABLISHED", CtInfo.ESTABLISHED_REPLY, 0, True),
    ("-m conntrack --ctstate INVALID", CtInfo.INVALID, 0, True),
    ("-m conntrack ! --ctstate INVALID", CtInfo.NEW, 0, True),
    ("-m conntrack --ctstate DNAT", CtInfo.NEW, CtStatus.DST_NAT, True),
    ("-m conntrack --ctstate SNAT", CtInfo.NEW, CtStatus.DST_NAT, False),
    ("-m conntrack --ctstatus ASSURED", CtInfo.ESTABLISHED, CtStatus.ASSURED | CtStatus.CONFIRMED, True),
    ("-m conntrack --ctstatus SEEN_REPLY", CtInfo.ESTABLISHED, CtStatus.CONFIRMED, False),
    ("-m conntrack --ctdir ORIGINAL", CtInfo.ESTABLISHED, 0, True),
    ("-m conntrack --ctdir REPLY", CtInfo.ESTABLISHED, 0, False),
    ("-m conntrack --ctdir REPLY", CtInfo.ESTABLISHED_REPLY, 0, True),
    ("-m conntrack --ctproto tcp", CtInfo.NEW, 0, True),
    ("-m conntrack --ctorigsrc 10.0.0.0/8", CtInfo.NEW, 0, True),
    ("-m conntrack --ctrepldst 10.0.0.1", CtInfo.NEW, 0, True),
    ("-m conntrack --ctorigdstport 80", CtInfo.NEW, 0, True),
    ("-m conntrack --ctorigdstport 81:90", CtInfo.NEW, 0, False),
    ("-m state --state NEW", CtInfo.NEW, 0, True),
    ("-m state --state ESTABLISHED", CtInfo.RELATED, 0, False),
])
def test_conntrack(spec: str, ctinfo: CtInfo, status: int, expect: bool) -> None:
    skb = tcp("10.0.0.1", 1000, "10.0.0.2", 80)
    if ctinfo != CtInfo.INVALID:
        with_ct(skb, ctinfo, status)
    assert _match("filter", Hook.LOCAL_IN, spec, skb) is expect


def test_conntrack_untracked_and_no_ct() -> None:
    skb = tcp("10.0.0.1", 1000, "10.0.0.2", 80)
    skb.untracked = True
    assert _match("filter", Hook.LOCAL_IN, "-m conntrack --ctstate UNTRACKED", skb)
    # without a ct only a pure state test can match (conntrack_mt: ct == NULL)
    plain = tcp("10.0.0.1", 1000, "10.0.0.2", 80)
    assert not _match("filter", Hook.LOCAL_IN, "-m conntrack --ctstate INVALID --ctproto tcp", plain)


@pytest.mark.parametrize(("spec", "expect"), [
    ("-m addrtype --dst-type LOCAL", True), ("-m addrtype --src-type LOCAL", False),
    ("-m addrtype ! --src-type LOCAL", True), ("-m addrtype --src-type UNICAST --dst-type LOCAL,BROADCAST", True),
])
def test_addrtype(spec: str, expect: bool) -> None:
    ctx = FakeCtx(Hook.PRE_ROUTING, local=(HOST,))
    assert _match("nat", Hook.PRE_ROUTING, spec, tcp("198.51.100.7", 1, HOST, 2), ctx) is expect


def test_mark_match_and_target() -> None:
    rs = rules("mangle", "-A PREROUTING -j MARK --set-xmark 0x10/0xf0", "-A PREROUTING -j MARK --or-mark 0x1",
               "-A PREROUTING -m mark --mark 0x11/0xff -j MARK --and-mark 0xf")
    skb = udp("10.0.0.1", 1, "10.0.0.2", 2)
    skb.mark = 0xFF
    rs.run("mangle", Hook.PRE_ROUTING, skb, FakeCtx())
    # (0xff & ~0xf0) ^ 0x10 = 0x1f; | 1 = 0x1f; 0x1f & 0xff != 0x11 -> third rule does not apply
    assert skb.mark == 0x1F
    skb.mark = 0x01
    rs.run("mangle", Hook.PRE_ROUTING, skb, FakeCtx())
    assert skb.mark == 0x01  # 0x11 matched the third rule: & 0xf


def test_mac() -> None:
    skb = udp("10.0.0.1", 1, "10.0.0.2", 2, iif="eth0")
    skb.src_mac = bytes.fromhex("0000f105a0e0")
    assert _match("filter", Hook.LOCAL_IN, "-m mac --mac-source 00:00:f1:05:a0:e0", skb)
    assert not _match("filter", Hook.LOCAL_IN, "-m mac ! --mac-source 00:00:f1:05:a0:e0", skb)


def test_limit_token_bucket() -> None:
    """1/sec burst 2: two packets pass at once, then one per second (xt_limit credit arithmetic)."""
    rs = rules("filter", "-A INPUT -m limit --limit 1/sec --limit-burst 2 -j ACCEPT", "-A INPUT -j DROP")
    ctx = FakeCtx(Hook.LOCAL_IN, now=100.0)
    skb = udp("10.0.0.1", 1, "10.0.0.2", 2)
    got = [rs.run("filter", Hook.LOCAL_IN, skb, ctx) for _ in range(3)]
    assert got == [NF_ACCEPT, NF_ACCEPT, NF_DROP]
    ctx.set_now(100.5)
    assert rs.run("filter", Hook.LOCAL_IN, skb, ctx) == NF_DROP
    ctx.set_now(101.0)
    assert rs.run("filter", Hook.LOCAL_IN, skb, ctx) == NF_ACCEPT


# --- targets ------------------------------------------------------------------------------------------

def test_snat_dnat_ranges() -> None:
    rs = rules("nat", "-A POSTROUTING -p tcp -j SNAT --to-source 203.0.113.5-203.0.113.9:1024-2047 --random-fully",
               "-A PREROUTING -p tcp -j DNAT --to-destination 10.0.0.1:81-90/85")
    ctx = FakeCtx(Hook.POST_ROUTING)
    rs.run("nat", Hook.POST_ROUTING, tcp("10.0.0.1", 1, "10.0.0.2", 2), ctx)
    assert ctx.nat_calls == [(NatRange(RangeFlags.MAP_IPS | RangeFlags.PROTO_SPECIFIED | RangeFlags.PROTO_RANDOM_FULLY,
                                       ip("203.0.113.5"), ip("203.0.113.9"), 1024, 2047), ManipType.SRC)]
    ctx = FakeCtx(Hook.PRE_ROUTING)
    rs.run("nat", Hook.PRE_ROUTING, tcp("10.0.0.1", 1, "10.0.0.2", 2), ctx)
    flags = RangeFlags.MAP_IPS | RangeFlags.PROTO_SPECIFIED | RangeFlags.PROTO_OFFSET
    assert ctx.nat_calls == [(NatRange(flags, ip("10.0.0.1"), ip("10.0.0.1"), 81, 90, 85), ManipType.DST)]


def test_redirect_prerouting_and_output() -> None:
    rs = rules("nat", "-A PREROUTING -p tcp -j REDIRECT --to-ports 3128", "-A OUTPUT -p tcp -j REDIRECT")
    ctx = FakeCtx(Hook.PRE_ROUTING)
    ctx.iface_addrs["lan0"] = ip("192.168.50.1")
    assert rs.run("nat", Hook.PRE_ROUTING, tcp("192.168.50.7", 1, "198.51.100.9", 80, iif="lan0"), ctx) == NF_ACCEPT
    flags = RangeFlags.MAP_IPS | RangeFlags.PROTO_SPECIFIED
    assert ctx.nat_calls == [(NatRange(flags, ip("192.168.50.1"), ip("192.168.50.1"), 3128, 3128), ManipType.DST)]
    # no address on the input interface: DROP
    assert rs.run("nat", Hook.PRE_ROUTING, tcp("192.168.50.7", 1, "198.51.100.9", 80, iif="lan9"), ctx) == NF_DROP
    ctx = FakeCtx(Hook.LOCAL_OUT)
    rs.run("nat", Hook.LOCAL_OUT, tcp("192.168.50.1", 1, "198.51.100.9", 80), ctx)
    assert ctx.nat_calls == [(NatRange(RangeFlags.MAP_IPS, ip("127.0.0.1"), ip("127.0.0.1")), ManipType.DST)]


def test_netmap() -> None:
    """§5.1: new = (addr & ~mask) | (net & mask); daddr in PREROUTING, saddr in POSTROUTING."""
    rs = rules("nat", "-A PREROUTING -j NETMAP --to 192.168.0.0/16", "-A POSTROUTING -j NETMAP --to 10.9.0.0/16")
    ctx = FakeCtx(Hook.PRE_ROUTING)
    rs.run("nat", Hook.PRE_ROUTING, udp("10.0.0.1", 1, "172.16.5.6", 2), ctx)
    assert ctx.nat_calls == [(NatRange(RangeFlags.MAP_IPS, ip("192.168.5.6"), ip("192.168.5.6")), ManipType.DST)]
    ctx = FakeCtx(Hook.POST_ROUTING)
    rs.run("nat", Hook.POST_ROUTING, udp("10.0.7.8", 1, "172.16.5.6", 2), ctx)
    assert ctx.nat_calls == [(NatRange(RangeFlags.MAP_IPS, ip("10.9.7.8"), ip("10.9.7.8")), ManipType.SRC)]


def test_reject_log_notrack() -> None:
    rs = rules("filter", "-A INPUT -j LOG --log-prefix 'in: ' --log-level 6",
               "-A INPUT -p tcp -j REJECT --reject-with tcp-reset")
    ctx = FakeCtx(Hook.LOCAL_IN)
    assert rs.run("filter", Hook.LOCAL_IN, tcp("10.0.0.1", 1, "10.0.0.2", 2), ctx) == NF_DROP
    assert ctx.logs == [("in: ", 6)]
    assert ctx.rejects == ["tcp-reset"]
    raw = rules("raw", "-A PREROUTING -j CT --notrack", "-A OUTPUT -j NOTRACK")
    ctx = FakeCtx()
    raw.run("raw", Hook.PRE_ROUTING, udp("10.0.0.1", 1, "10.0.0.2", 2), ctx)
    raw.run("raw", Hook.LOCAL_OUT, udp("10.0.0.1", 1, "10.0.0.2", 2), ctx)
    assert ctx.notracked == 2
