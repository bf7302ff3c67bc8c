"""physdev, owner, cgroup and socket evaluated against natbox's host model (no bridges, no socket owners,
listening sockets from the host model), as the kernel's xt modules decide without such information."""

from __future__ import annotations

import shlex

from natbox.netfilter import Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.skb import Skb
from natbox.testing.rules_fakes import FakeCtx, tcp, udp


def hits(table: str, hook: Hook, specs: list[str], skb: Skb, ctx: FakeCtx | None = None) -> list[bool]:
    rs = Ruleset()
    for spec in specs:
        rs.execute(parse_argv(["-t", table, "-A", hook.chain_name, *shlex.split(spec)]))
    rs.run(table, hook, skb, ctx or FakeCtx(hook))
    return [r.packets == 1 for r in rs.tables[table].chains[hook.chain_name].rules]


def test_physdev_matches_only_fully_inverted_rules_without_bridges() -> None:
    skb = tcp("10.0.0.1", 1, "10.0.0.2", 80, iif="eth0", oif="eth1")
    assert hits("filter", Hook.FORWARD, [
        "-m physdev --physdev-in eth0",
        "-m physdev --physdev-is-bridged",
        "-m physdev ! --physdev-is-bridged",
        "-m physdev ! --physdev-in eth0 ! --physdev-is-in",
        "-m physdev ! --physdev-in eth0 --physdev-is-out --physdev-is-bridged",
    ], skb) == [False, False, True, True, False]


def test_owner_without_sockets() -> None:
    skb = tcp("10.0.0.2", 1, "10.0.0.1", 80, oif="eth0")
    assert hits("filter", Hook.LOCAL_OUT, [
        "-m owner --uid-owner 0",
        "-m owner ! --uid-owner 0",
        "-m owner ! --socket-exists",
        "-m owner --socket-exists",
        "-m owner ! --gid-owner 0 --suppl-groups",
        "-m owner ! --uid-owner 0 ! --gid-owner 1-5",
    ], skb) == [False, True, True, False, False, True]


def test_cgroup_never_matches_without_a_socket() -> None:
    skb = tcp("10.0.0.2", 1, "10.0.0.1", 80, oif="eth0")
    assert hits("mangle", Hook.LOCAL_OUT, ["-m cgroup --cgroup 1", "-m cgroup ! --cgroup 1",
                                           "-m cgroup ! --path /"], skb) == [False, False, False]


def test_socket_finds_the_model_listeners_as_wildcard_sockets() -> None:
    ctx = FakeCtx(Hook.PRE_ROUTING)
    ctx.listening = {(6, 22), (17, 53)}
    specs = ["-m socket", "-m socket --nowildcard", "-m socket --nowildcard --transparent",
             "-m socket --nowildcard --restore-skmark"]
    to_ssh = tcp("10.0.0.1", 4000, "10.0.0.2", 22, iif="eth0")
    to_ssh.mark = 7
    assert hits("mangle", Hook.PRE_ROUTING, specs, to_ssh, ctx) == [False, True, True, True]
    assert to_ssh.mark == 0  # restored from the socket, whose mark is 0
    assert hits("mangle", Hook.PRE_ROUTING, specs, udp("10.0.0.1", 4000, "10.0.0.2", 53, iif="eth0"), ctx) == [
        False, True, True, True]
    assert hits("mangle", Hook.PRE_ROUTING, specs, tcp("10.0.0.1", 4000, "10.0.0.2", 80, iif="eth0"), ctx) == [
        False] * 4


def test_rpfilter_routes_the_source_back_through_the_fib() -> None:
    ctx = FakeCtx(Hook.PRE_ROUTING)
    ctx.routes = [(0x0A000000, 24, 1, "eth0"), (0, 0, 1, "eth1"), (0x0A000002, 32, 2, "eth0")]
    specs = ["-m rpfilter", "-m rpfilter --loose", "-m rpfilter --accept-local", "-m rpfilter --invert"]

    def run(src: str, iif: str, dst: str = "10.0.0.2") -> list[bool]:
        return hits("mangle", Hook.PRE_ROUTING, specs, udp(src, 1, dst, 2, iif=iif), ctx)

    assert run("10.0.0.5", "eth0") == [True, True, True, False]
    assert run("10.0.0.5", "eth1") == [False, True, False, True]  # spoofed: the way back is eth0
    assert run("8.8.8.8", "eth1") == [True, True, True, False]
    assert run("10.0.0.2", "eth0") == [False, False, True, True]  # our own address as source
    assert run("10.0.0.7", "lo") == [True, True, True, False]
    assert run("0.0.0.0", "eth1", "255.255.255.255") == [True, True, True, False]  # DHCP discover
    ctx.routes = ctx.routes[:1]
    assert run("192.168.9.9", "eth0") == [False, False, False, True]  # no route back


def test_the_engine_gives_rpfilter_its_fib_and_socket_its_listeners() -> None:
    from natbox.demos.scenarios import _docker_host
    from natbox.engine.engine import Engine
    from natbox.testing.conntrack import tcp as tcp4
    from natbox.wire.ethernet import build_ethernet

    host, _ = _docker_host()
    engine = Engine(host, seed=1, listeners=[(6, 22)])
    for spec in ("-t raw -A PREROUTING -m rpfilter --invert -j DROP",
                 "-t mangle -A PREROUTING -p tcp -m socket --nowildcard -j MARK --set-mark 7",
                 "-t mangle -A INPUT -m mark --mark 7 -j DROP"):
        engine.rules.execute(parse_argv(shlex.split(spec)))
    eth0 = host.interfaces["eth0"].mac

    def arrive(src: str, dport: int) -> list[str]:
        syn = tcp4(src, "45.77.200.180", 4000, dport, 0x02)
        frame = build_ethernet(eth0, bytes.fromhex("067c1688fe87"), 0x0800, syn)
        out = engine.receive(frame, "eth0", 1.0)
        return [f"{d.reason} {d.where}" for d in out.dropped]

    assert arrive("172.17.0.5", 80) == ["rule_drop PREROUTING/raw"]  # the way back is docker0: spoofed on eth0
    assert arrive("8.8.8.8", 80) == []  # routed back through eth0: passes; no socket on 80 (a reset goes out)
    assert arrive("8.8.8.8", 22) == ["rule_drop INPUT/mangle"]  # the listener on 22: marked, dropped in INPUT
