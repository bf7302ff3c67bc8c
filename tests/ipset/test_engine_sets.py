"""ipset rules acting on packets through the engine: Engine.ipsets is what `-m set` and `-j SET` see."""

from __future__ import annotations

from natbox.conntrack.tuple import parse_addr
from natbox.demos.scenarios import DOCKER_RULES, _docker_host
from natbox.engine.engine import Engine
from natbox.ipset import IpsetRegistry, IpsetSession
from natbox.ipset.scope import using_sets
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ipv4, tcp

HOST_IP = "45.77.200.180"
EXTRA = """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -j SET --add-set seen dst,dst --exist
-A OUTPUT -m set --match-set blocked dst -j DROP
COMMIT
"""


def _syn(src: str, dst: str, sport: int, dport: int) -> bytes:
    s, d = parse_addr(src), parse_addr(dst)
    seg = tcp.build_tcp(s, d, sport, dport, seq=1, ack=0, flags=tcp.SYN, window=64240)
    return bytes(ipv4.build_ipv4(s, d, 6, seg, ttl=64))


def test_set_rules_drop_and_record_packets_in_the_engine() -> None:
    reg = IpsetRegistry()
    s = IpsetSession(reg, 0.0, lambda: 1)
    for line in ("create blocked hash:net", "add blocked 8.8.8.0/24", "create seen hash:ip,port timeout 30"):
        assert s.run(line.split())[0] == 0
    host, _ = _docker_host()
    rs = Ruleset()
    with using_sets(reg):
        rs.restore(parse_restore(DOCKER_RULES + EXTRA, file="rules"))
    engine = Engine(host, ruleset=rs, seed=3)
    engine.ipsets = reg
    out = engine.send_local(_syn(HOST_IP, "8.8.8.8", 40000, 443), 10.0)
    assert not out.emitted
    out = engine.send_local(_syn(HOST_IP, "8.8.4.4", 40001, 443), 10.0)
    assert [e.iface for e in out.emitted] == ["eth0"]
    saved = IpsetSession(reg, 10.5, lambda: 1).run(["save", "seen"])[1]
    assert "add seen 8.8.8.8,tcp:443 timeout 29\n" in saved and "add seen 8.8.4.4,tcp:443 timeout 29\n" in saved
    engine.ipsets = None  # no sets: -m set never matches, SET does nothing
    out = engine.send_local(_syn(HOST_IP, "8.8.8.8", 40002, 443), 11.0)
    assert [e.iface for e in out.emitted] == ["eth0"]


def test_a_running_gateway_answers_ipset_and_its_rules_use_the_sets() -> None:
    import io
    from typing import cast

    from natbox.gateway.commands import Commands
    from natbox.gateway.loop import EventLoop

    host, _ = _docker_host()
    engine = Engine(host, seed=3)
    cmds = Commands(engine, cast(EventLoop, None))

    def run(cmd: str, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        rc = cmds.run_command(cmd, list(argv), io.StringIO(""), out, err)
        return rc, out.getvalue(), err.getvalue()

    assert run("ipset", "create", "blocked", "hash:net", "initval", "0x1")[0] == 0
    assert run("ipset", "add", "blocked", "8.8.8.0/24")[0] == 0
    assert run("iptables", "-A", "OUTPUT", "-m", "set", "--match-set", "blocked", "dst", "-j", "DROP")[0] == 0
    assert run("iptables", "-A", "OUTPUT", "-m", "set", "--match-set", "nope", "dst")[0] == 2
    assert run("ipset", "destroy", "blocked") == (
        1, "", "ipset v7.17: Set cannot be destroyed: it is in use by a kernel component\n")
    assert "References: 1\n" in run("ipset", "list", "-t", "blocked")[1]
    out = engine.send_local(_syn(HOST_IP, "8.8.8.8", 40000, 443), 10.0)
    assert not out.emitted
    assert run("iptables", "-F", "OUTPUT")[0] == 0
    assert run("ipset", "destroy", "blocked")[0] == 0
