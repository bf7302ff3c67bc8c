"""Scenarios with nfacct objects (issue #14): `router.nfacct` is created with the real `nfacct add` before the
rules on the kernel side; the router's snapshot records `nfacct list`, from which natbox's replay (and live natbox
through --adopt) makes the same objects; both sides' `nfacct list` after the traffic are compared byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.snapshot.test_snapshot_parse import ADDR, LINK, ROUTE

from natbox.difftest.cli import live_capable, run_scenario
from natbox.difftest.compare import compare_nfacct
from natbox.difftest.kernel import KernelRun, kernel_available
from natbox.difftest.natbox_side import build_engine
from natbox.difftest.scenario import ScenarioError, parse_scenario
from natbox.rules.model import RulesError
from natbox.rules.printer import save_rule
from natbox.rules.xtstate.nfacct import format_list
from natbox.testing.live import require_programs

CORPUS = Path(__file__).resolve().parents[2] / "scenarios"
NFACCT_SCENARIOS = ["nfacct-forward-count", "nfacct-quota"]
LISTED = ("{ pkts = 00000000000000000002, bytes = 00000000000000000120 } = fwd;\n"
          "{ pkts = 00000000000000000000, bytes = 00000000000000000000, quota = 00000000000000000003, mode = packet, "
          "overquota = no } = cap;\n")
RULES = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
         "[2:120] -A FORWARD -m nfacct --nfacct-name fwd\nCOMMIT\n")
HEAD = '[[router.interface]]\nname = "a"\n[router]\n'


def _scenario(name: str) -> str:
    return (CORPUS / f"{name}.toml").read_text()


def test_the_nfacct_scenarios_declare_their_objects() -> None:
    quota = parse_scenario(_scenario("nfacct-quota"), "nfacct-quota.toml")
    assert quota.nfacct == [["cap-pkts", "packet", "3"], ["cap-bytes", "byte", "210"], ["idle", "packet", "10"]]
    assert "--nfacct-name cap-pkts -j DROP" in quota.rules
    count = parse_scenario(_scenario("nfacct-forward-count"), "nfacct-forward-count.toml")
    assert [o[0] for o in count.nfacct] == ["lan-out", "wan-in", "to-router", "unused"]


@pytest.mark.parametrize(("value", "message"), [
    ("3", r"router.nfacct: must be list"),
    ("[3]", r"router.nfacct\[0\]: must be str"),
    ('["a b"]', r"router.nfacct\[0\]: 'a b': write NAME or NAME byte\|packet QUOTA"),
    ('["a bytes 3"]', r"write NAME or NAME byte\|packet QUOTA"),
    ('["a byte -3"]', r"write NAME or NAME byte\|packet QUOTA"),
    ('["a byte 18446744073709551616"]', r"write NAME or NAME byte\|packet QUOTA"),
    (f'["{"n" * 32}"]', r"name 'n{32}' must be 1..31 printable characters"),
    ('["a", "a packet 1"]', r"router.nfacct\[1\]: object 'a' declared twice"),
])
def test_bad_nfacct_entries_are_refused_naming_the_entry(value: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(HEAD.replace("[router]\n", f"[router]\nnfacct = {value}\n"), "x.toml")


def test_the_replay_engine_gets_the_snapshots_objects_and_its_rules_count_into_them() -> None:
    run = KernelRun("s", {"link.json": LINK, "addr.json": ADDR, "route.json": ROUTE, "iptables.rules": RULES,
                          "nfacct.list": LISTED})
    engine = build_engine(run)
    assert format_list(engine.xt_state.nfacct) == LISTED  # counters and quotas as the kernel listed them
    rule = engine.rules.tables["filter"].chains["FORWARD"].rules[0]
    assert save_rule("FORWARD", rule, counters=True) == "[2:120] -A FORWARD -m nfacct --nfacct-name  fwd"


def test_a_rule_naming_an_object_the_snapshot_lacks_is_refused() -> None:
    run = KernelRun("s", {"link.json": LINK, "addr.json": ADDR, "route.json": ROUTE, "iptables.rules": RULES})
    with pytest.raises(RulesError, match="No such file or directory"):
        build_engine(run)


def test_nfacct_lists_are_compared_line_by_line() -> None:
    assert compare_nfacct(LISTED, LISTED) == []
    other = LISTED.replace("00000000000000000120", "00000000000000000121")
    (d,) = compare_nfacct(LISTED, other)
    assert d.kind == "nfacct" and d.where == "nfacct list line 1" and d.natbox.endswith("121 } = fwd;")
    (gone,) = compare_nfacct(LISTED, LISTED.splitlines(keepends=True)[0])
    assert gone.where == "nfacct list line 2" and gone.natbox == "(no line)"


@pytest.mark.netns
@pytest.mark.parametrize("name", NFACCT_SCENARIOS)
def test_kernel_replay_and_live_natbox_agree_on_nfacct(name: str) -> None:
    """The real nfacct objects counted by the kernel's xt_nfacct, natbox's replay and live natbox (gateway
    --adopt) list the same counters, quotas and overquota flags."""
    require_programs("nfacct", "iptables-restore")  # first: a machine without nfacct skips naming it
    why = kernel_available()
    if why is not None:
        pytest.skip(f"kernel side unavailable: {why}")
    sc = parse_scenario(_scenario(name), f"{name}.toml")
    assert live_capable(sc)
    kernel, diffs = run_scenario(sc, live=True)
    assert not diffs, "\n".join(str(d) for d in diffs[:10])
    assert kernel.errors == []
    listed = kernel.nfacct.splitlines()
    assert len(listed) == len(sc.nfacct)
    if name == "nfacct-quota":  # the kernel's own figures: 5 counted (2 dropped past 3), 4 x 70 bytes
        assert listed[0].startswith("{ pkts = 00000000000000000005, bytes = 00000000000000000190, quota = "
                                    "00000000000000000003, mode = packet, overquota = yes }")
        assert listed[1].startswith("{ pkts = 00000000000000000004, bytes = 00000000000000000280, quota = "
                                    "00000000000000000210, mode = byte, overquota = yes }")
        assert "overquota = no } = idle;" in listed[2]
    else:
        assert listed[3] == "{ pkts = 00000000000000000000, bytes = 00000000000000000000 } = unused;"
        assert "pkts = 00000000000000000000" not in listed[0]


def test_natbox_replay_of_a_saved_snapshot_counts_into_its_objects(tmp_path: Path) -> None:
    """`natbox replay --host DIR` (a `difftest --keep` run's snapshot/): the objects nfacct.list recorded are made
    before the rules, and the rules count into them."""
    from natbox.cli.replay import ReplayOptions, _build_engine
    from natbox.conntrack.tuple import parse_addr
    from natbox.wire import ethernet, ipv4, udp

    snap = tmp_path / "snap"
    snap.mkdir()
    for name, text in (("link.json", LINK), ("addr.json", ADDR), ("route.json", ROUTE), ("iptables.rules", RULES),
                       ("nfacct.list", LISTED), ("sysctl.txt", "net.ipv4.ip_forward = 1\n")):
        (snap / name).write_text(text)
    engine, _, _ = _build_engine(ReplayOptions(host=str(snap), inputs=[]), events=False)
    s, d = parse_addr("10.8.0.2"), parse_addr("10.9.0.7")  # v0's subnet to a neighbour on br0
    dgram = ipv4.build_ipv4(s, d, 17, udp.build_udp(s, d, 4000, 53, b"x" * 12))
    engine.receive(bytes(ethernet.build_ethernet(bytes.fromhex("ae78e59dd433"), bytes.fromhex("020000000009"),
                                                 ethernet.ETH_P_IP, dgram)), "v0", 1.0)
    fwd = engine.xt_state.nfacct["fwd"]
    assert (fwd.pkts, fwd.bytes) == (3, 120 + len(dgram))
