"""nfacct objects: the nfacct 1.0.2 command as recorded on Linux 6.18 in a scratch network namespace
(data/nfacct_1.0.2.json: every command of one session, in order, with its exit status and output), -m nfacct
counting into them (nfnl_acct_update, nfnl_acct_overquota) and the `natbox nfacct` file."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path

import pytest

from natbox.cli.iptables import iptables_main
from natbox.cli.nfacct import nfacct_main
from natbox.netfilter import Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.model import RulesError
from natbox.rules.parser import parse_argv
from natbox.rules.xtstate.nfacct import NfAcct, NfacctSession, load_objects, rule_acct_refs, using_nfacct
from natbox.testing.rules_fakes import FakeCtx, udp

RECORDED = json.loads((Path(__file__).parent / "data" / "nfacct_1.0.2.json").read_text())


def test_the_recorded_session() -> None:
    objects: dict[str, NfAcct] = {}
    session = NfacctSession(objects)
    for rec in RECORDED:
        got = session.run(rec["argv"], rec["stdin"])
        assert got == (rec["rc"], rec["stdout"], rec["stderr"]), rec["argv"]


def test_monitor_is_refused_with_one_line() -> None:
    rc, out, err = NfacctSession({}).run(["monitor"])
    assert (rc, out) == (1, "") and err.count("\n") == 1 and err.startswith("nfacct v1.0.2: ")


def test_objects_a_rule_names_cannot_be_deleted_and_flush_keeps_them() -> None:
    """Recorded: with `-m nfacct --nfacct-name test` in INPUT and OUTPUT, `delete test` is EBUSY and `flush`
    deletes only `other`."""
    objects = {"test": NfAcct("test"), "other": NfAcct("other")}
    refs = rule_acct_refs("-A INPUT -m nfacct --nfacct-name  test\n[0:0] -A OUTPUT -m nfacct --nfacct-name  test\n")
    assert refs == {"test": 2}
    session = NfacctSession(objects, refs)
    assert session.run(["delete", "test"]) == (1, "", "nfacct v1.0.2: error: Device or resource busy\n")
    assert session.run(["flush"]) == (0, "", "")
    assert list(objects) == ["test"]


def _rules(*specs: str) -> Ruleset:
    rs = Ruleset()
    for spec in specs:
        rs.execute(parse_argv(["-A", "INPUT", *shlex.split(spec)]))
    return rs


def test_a_rule_needs_its_object() -> None:
    with pytest.raises(RulesError, match="No such file or directory"):
        _rules("-m nfacct --nfacct-name test")
    with using_nfacct({"other": NfAcct("other")}), pytest.raises(RulesError, match="No such file or directory"):
        _rules("-m nfacct --nfacct-name test")
    with using_nfacct({"test": NfAcct("test")}):
        _rules("-m nfacct --nfacct-name test")


def test_counting_and_quota() -> None:
    """Recorded: two pings over lo with the rule in INPUT and OUTPUT count 8 packets, 672 bytes (84 each).
    Without a quota the rule always matches; with one it matches once the count is past it
    (nfnl_acct_overquota: `now > quota`), and `overquota = yes` shows from the moment it is reached."""
    plain, quota = NfAcct("plain"), NfAcct("q", quota=168, quota_pkts=False)
    with using_nfacct({"plain": plain, "q": quota}):
        rs = _rules("-m nfacct --nfacct-name plain", "-m nfacct --nfacct-name q")
    ctx = FakeCtx(Hook.LOCAL_IN)
    ctx.xt.nfacct.update({"plain": plain, "q": quota})
    rules = rs.tables["filter"].chains["INPUT"].rules
    skb = udp("127.0.0.1", 1, "127.0.0.1", 2, iif="lo", size=84 - 28)
    seen = []
    for _ in range(8):
        rs.run("filter", Hook.LOCAL_IN, skb, ctx)
        seen.append((rules[1].packets, quota.overquota))
    assert plain.line() == "{ pkts = 00000000000000000008, bytes = 00000000000000000672 } = plain;\n"
    assert rules[0].packets == 8
    # the q rule matched from the 3rd packet (252 > 168); the flag was set at the 2nd (168 >= 168)
    assert seen[:4] == [(0, False), (0, True), (1, True), (2, True)]
    assert quota.line().endswith("quota = 00000000000000000168, mode = byte, overquota = yes } = q;\n")
    assert NfacctSession({"q": quota}).run(["get", "q", "reset"])[0] == 0
    assert quota.line().endswith("quota = 00000000000000000168, mode = byte, overquota = no } = q;\n")


def test_the_objects_file_round_trips_quota_lines() -> None:
    text = ("{ pkts = 00000000000000000003, bytes = 00000000000000000100 } = a;\n"
            "{ pkts = 00000000000000000000, bytes = 00000000000000000000, quota = 00000000000000000005, "
            "mode = packet, overquota = yes } = b;\n")
    objects = load_objects(text)
    assert "".join(a.line() for a in objects.values()) == text
    with pytest.raises(ValueError, match="line 1"):
        load_objects("{ pkts = 1 } = x;\n")


def test_natbox_nfacct_and_iptables_share_the_file(tmp_path: Path) -> None:
    acct, rules = tmp_path / "a.nfacct", tmp_path / "r.rules"

    def nfacct(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        rc = nfacct_main(["--acct", str(acct), "--rules", str(rules), *argv], stdout=out, stderr=err)
        return rc, out.getvalue(), err.getvalue()

    def ipt(*argv: str) -> tuple[int, str]:
        err = io.StringIO()
        rc = iptables_main(["--acct", str(acct), *argv], rules_path=str(rules), stdout=io.StringIO(), stderr=err)
        return rc, err.getvalue()

    assert nfacct("add", "test") == (0, "", "")
    assert nfacct("add", "test") == (1, "", "nfacct v1.0.2: error: Device or resource busy\n")
    assert ipt("-A", "INPUT", "-m", "nfacct", "--nfacct-name", "test") == (0, "")
    assert ipt("-A", "INPUT", "-m", "nfacct", "--nfacct-name", "nope") == (
        4, "iptables v1.8.9 (nf_tables):  RULE_APPEND failed (No such file or directory): rule in chain INPUT\n")
    assert nfacct("delete", "test") == (1, "", "nfacct v1.0.2: error: Device or resource busy\n")
    assert nfacct("list") == (0, "{ pkts = 00000000000000000000, bytes = 00000000000000000000 } = test;\n", "")
    assert acct.read_text() == "{ pkts = 00000000000000000000, bytes = 00000000000000000000 } = test;\n"


def test_a_running_gateway_answers_nfacct_and_its_rules_count_into_the_objects() -> None:
    from typing import cast

    from natbox.conntrack.tuple import parse_addr
    from natbox.demos.scenarios import _docker_host
    from natbox.engine.engine import Engine
    from natbox.gateway.commands import Commands
    from natbox.gateway.loop import EventLoop
    from natbox.wire import ipv4, tcp

    host, _ = _docker_host()
    engine = Engine(host, seed=3)
    cmds = Commands(engine, cast(EventLoop, None))

    def run(cmd: str, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        rc = cmds.run_command(cmd, list(argv), io.StringIO(""), out, err)
        return rc, out.getvalue(), err.getvalue()

    assert run("nfacct", "add", "web") == (0, "", "")
    assert run("iptables", "-A", "OUTPUT", "-p", "tcp", "-m", "nfacct", "--nfacct-name", "web") == (0, "", "")
    assert run("iptables", "-A", "OUTPUT", "-m", "nfacct", "--nfacct-name", "nope")[0] == 4
    s, d = parse_addr("45.77.200.180"), parse_addr("8.8.8.8")
    syn = bytes(ipv4.build_ipv4(s, d, 6, tcp.build_tcp(s, d, 40000, 443, seq=1, flags=tcp.SYN), ttl=64))
    engine.send_local(syn, 10.0)
    assert run("nfacct", "get", "web") == (
        0, "{ pkts = 00000000000000000001, bytes = 00000000000000000040 } = web;\n", "")
    assert run("nfacct", "delete", "web") == (1, "", "nfacct v1.0.2: error: Device or resource busy\n")
    assert run("iptables", "-F", "OUTPUT")[0] == 0
    assert run("nfacct", "flush") == (0, "", "")
    assert run("nfacct", "list") == (0, "", "")


def test_sighup_accepts_rules_naming_objects_added_through_the_control_socket(tmp_path: Path) -> None:
    """A reload checks `-m nfacct` rules against the running gateway's objects, those `natbox nfacct add` made
    through the control socket included (nfnetlink_acct's objects outlive an iptables-restore), keeps their
    counters, and still refuses a rule naming an object that exists nowhere."""
    from typing import cast

    from natbox.conntrack.tuple import parse_addr
    from natbox.engine.engine import Engine
    from natbox.gateway.commands import Commands
    from natbox.gateway.config import GatewayConfig
    from natbox.gateway.loop import EventLoop
    from natbox.gateway.state import load, reload
    from natbox.testing.paths import EXAMPLES
    from natbox.wire import ipv4, tcp

    host_file, rules = tmp_path / "host.toml", tmp_path / "r.rules"
    host_file.write_text((EXAMPLES / "masquerade-host.toml").read_text().replace("masquerade.rules", "r.rules"))
    rules.write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    cfg = GatewayConfig(host_file=str(host_file))
    hf, ruleset = load(cfg)
    engine = Engine(hf.host, ruleset=ruleset, seed=3)
    engine.xt_state.nfacct = hf.nfacct
    cmds = Commands(engine, cast(EventLoop, None))

    def run(cmd: str, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        rc = cmds.run_command(cmd, list(argv), io.StringIO(""), out, err)
        return rc, out.getvalue(), err.getvalue()

    s, d = parse_addr("198.51.100.1"), parse_addr("198.51.100.7")

    def syn(sport: int) -> None:
        engine.send_local(bytes(ipv4.build_ipv4(s, d, 6, tcp.build_tcp(s, d, sport, 443, seq=1, flags=tcp.SYN),
                                                ttl=64)), 10.0)

    assert run("nfacct", "add", "web") == (0, "", "")
    syn(40000)  # no rule names it yet: nothing counted
    rules.write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                     "-A OUTPUT -p tcp -m nfacct --nfacct-name web\nCOMMIT\n")
    assert reload(cfg, engine)
    syn(40001)
    assert run("nfacct", "get", "web") == (
        0, "{ pkts = 00000000000000000001, bytes = 00000000000000000040 } = web;\n", "")
    assert run("nfacct", "delete", "web")[0] == 1  # the reloaded rule holds a reference on it
    assert reload(cfg, engine)  # a second reload keeps the object and its counters
    syn(40002)
    assert run("nfacct", "list") == (
        0, "{ pkts = 00000000000000000002, bytes = 00000000000000000080 } = web;\n", "")
    rules.write_text(rules.read_text().replace("--nfacct-name web", "--nfacct-name nope"))
    assert not reload(cfg, engine)  # an object that exists nowhere: refused, the running rules kept
    syn(40003)
    assert run("nfacct", "get", "web")[1].startswith("{ pkts = 00000000000000000003,")
