"""ipset rules acting on packets through the engine: Engine.ipsets is what `-m set` and `-j SET` see."""

from __future__ import annotations

from pathlib import Path

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


HOST6 = '''name = "gw6"
[[interface]]
name = "eth0"
mac = "02:00:00:00:00:01"
addresses = ["fd00:77::1/64"]
[[interface]]
name = "eth1"
mac = "02:00:00:00:00:02"
addresses = ["2001:db8:100::1/64"]
[[route]]
dst = "default"
via = "2001:db8:100::10"
[[neighbour]]
dev = "eth1"
addr = "2001:db8:100::10"
mac = "02:5e:00:00:00:10"
[sysctl]
"net.ipv6.conf.all.forwarding" = 1
[ipsets]
text = """
create blocked6 hash:net family inet6 hashsize 1024 maxelem 65536 bucketsize 12 initval 0x11111111
add blocked6 fd00:77::/64
add blocked6 fd00:77::2 nomatch
create seen6 hash:ip family inet6 hashsize 1024 maxelem 65536 bucketsize 12 initval 0x11111111
"""
[rules6]
text = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m set --match-set blocked6 src -j DROP
-A FORWARD -j SET --add-set seen6 src
COMMIT
"""
'''


def test_a_host_file_carries_inet6_sets_for_its_ip6tables_rules(tmp_path: Path) -> None:
    """[ipsets] with family inet6 sets and [rules6] naming them: `natbox replay`'s engine forwards fd00:77::2
    (nomatch) and records it in seen6, drops fd00:77::3; the ip6tables rules hold references on the sets."""
    from natbox.cli.replay import ReplayOptions, _build_engine
    from natbox.wire.ethernet import ETH_P_IPV6, build_ethernet
    from natbox.wire.icmpv6 import build_icmpv6_echo
    from natbox.wire.ipv6 import parse_addr6

    p = tmp_path / "gw6.toml"
    p.write_text(HOST6)
    engine, _, _ = _build_engine(ReplayOptions(host=str(p), inputs=[]), events=False)
    reg = engine.ipsets
    assert reg is not None and reg.find("blocked6").ref == 1 and reg.find("seen6").ref == 1
    sv = parse_addr6("2001:db8:100::10")

    def ping(src: str) -> int:
        frame = build_ethernet(b"\x02\x00\x00\x00\x00\x01", b"\x02\xc1\x00\x00\x00\x01", ETH_P_IPV6,
                               build_icmpv6_echo(parse_addr6(src), sv, 7, 1, b"ping", reply=False))
        return len(engine.receive(bytes(frame), "eth0", 1.0).emitted)

    assert ping("fd00:77::2") == 1 and ping("fd00:77::3") == 0
    saved = IpsetSession(reg, 1.0, lambda: 1).run(["save", "seen6"])[1]
    assert saved.endswith("add seen6 fd00:77::2\n")


def test_sighup_accepts_rules_naming_sets_created_through_the_control_socket(tmp_path: Path) -> None:
    """A reload checks `-m set` rules against the running gateway's sets, those `natbox ipset create` made
    through the control socket included (ip_set's sets outlive an iptables-restore), keeps them with their
    members, adds the host file's sets of new names with theirs (timeouts on the gateway's clock), links a
    new list:set to the running member set, and refuses a rule naming a set that exists nowhere, leaving the
    running sets as they were. References are the rules' only: none is left on a set no rule names."""
    import io
    from typing import cast

    from natbox.gateway.commands import Commands
    from natbox.gateway.config import GatewayConfig
    from natbox.gateway.loop import EventLoop
    from natbox.gateway.state import load, reload
    from natbox.testing.paths import EXAMPLES

    host_file, rules = tmp_path / "host.toml", tmp_path / "r.rules"
    base = (EXAMPLES / "masquerade-host.toml").read_text().replace("masquerade.rules", "r.rules")
    host_file.write_text(base)
    head = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    rules.write_text(head + "COMMIT\n")
    cfg = GatewayConfig(host_file=str(host_file))
    hf, ruleset = load(cfg)
    engine = Engine(hf.host, ruleset=ruleset, seed=3)
    engine.ipsets = hf.sets
    cmds = Commands(engine, cast(EventLoop, None))

    def run(cmd: str, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        rc = cmds.run_command(cmd, list(argv), io.StringIO(""), out, err)
        return rc, out.getvalue(), err.getvalue()

    def sent(dst: str, sport: int) -> bool:
        return bool(engine.send_local(_syn("198.51.100.1", dst, sport, 443), 10.0).emitted)

    def sets_file(text: str) -> None:
        host_file.write_text(base + '\n[ipsets]\ntext = """\n' + text + '"""\n')

    assert run("ipset", "create", "c", "hash:ip")[0] == 0
    assert run("ipset", "add", "c", "198.51.100.7")[0] == 0
    rules.write_text(head + "-A OUTPUT -m set --match-set c dst -j DROP\nCOMMIT\n")
    assert reload(cfg, engine)
    assert not sent("198.51.100.7", 40000) and sent("198.51.100.8", 40001)
    assert "References: 1\n" in run("ipset", "list", "-t", "c")[1]
    # the file's c (empty) leaves the running one as it is; g and the list:set l are new, l's member is the
    # running c
    sets_file("create c hash:ip\ncreate g hash:ip timeout 600\nadd g 198.51.100.8\n"
              "create l list:set size 8\nadd l c\n")
    rules.write_text(head + "-A OUTPUT -m set --match-set l dst -j DROP\n"
                     "-A OUTPUT -m set --match-set g dst -j DROP\nCOMMIT\n")
    assert reload(cfg, engine)
    assert not sent("198.51.100.7", 40002) and not sent("198.51.100.8", 40003) and sent("198.51.100.9", 40004)
    assert run("ipset", "list", "-n") == (0, "c\ng\nl\n", "")
    assert run("ipset", "test", "g", "198.51.100.8")[0] == 0  # its timeout runs from the reload, not from 0
    assert "References: 1\n" in run("ipset", "list", "-t", "c")[1]  # l's member, no rule's
    sets_file("create h hash:ip\n")
    rules.write_text(head + "-A OUTPUT -m set --match-set nope dst -j DROP\nCOMMIT\n")
    assert not reload(cfg, engine)  # refused: the running rules and sets kept, h not added
    assert run("ipset", "list", "-n") == (0, "c\ng\nl\n", "")
    assert not sent("198.51.100.7", 40005)
    rules.write_text(head + "COMMIT\n")
    assert reload(cfg, engine)
    assert run("ipset", "destroy", "l") == (0, "", "")
    assert run("ipset", "destroy", "c") == (0, "", "")  # no rule and no list holds it now
    assert run("ipset", "list", "-n") == (0, "g\nh\n", "")
