"""`-m set` and `-j SET` as iptables 1.8.9 parses, saves and lists them, and as xt_set evaluates them.

The command steps replay tests/ipset/data/iptables_set_1.8.9.json (recorded by record_iptables_set.py in a
namespace with the real iptables and ipset) through `natbox ipset` and `natbox iptables` on files.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from natbox.cli.builds import is_compiled
from natbox.cli.ipset import ipset_main
from natbox.cli.iptables import iptables_main, iptables_save_main
from natbox.ipset import IpsetRegistry, IpsetSession
from natbox.ipset.scope import using_sets
from natbox.ipset.store import ExtArgs
from natbox.rules.api import XT_CONTINUE
from natbox.rules.model import Rule, RulesError
from natbox.rules.parser import parse_argv
from natbox.skb import Skb
from natbox.testing.rules_fakes import FakeCtx, ipv4

DATA = json.loads((Path(__file__).parent / "data" / "iptables_set_1.8.9.json").read_text())


def _run(argv: list[str], tmp: Path) -> tuple[str, str, int]:
    out, err = io.StringIO(), io.StringIO()
    files = ["--sets", str(tmp / "sets"), "--rules", str(tmp / "rules")]
    with using_sets(None):  # the CLI puts the file's sets in scope: leave none behind for other tests
        if argv[0] == "ipset":
            rc = ipset_main([*files, *argv[1:]], stdout=out, stderr=err)
        elif argv[0] == "iptables":
            rc = iptables_main([*files, *argv[1:]], stdout=out, stderr=err)
        else:
            rc = iptables_save_main([*files, *argv[1:]], stdout=out, stderr=err)
    text = out.getvalue()
    if argv[0] == "iptables-save":
        text = "".join(x for x in text.splitlines(keepends=True) if not x.startswith("#"))
    return text, err.getvalue(), rc


def _tables(text: str) -> list[str]:
    """iptables-save text as its table blocks, sorted: natbox prints tables in load order where
    iptables-nft prints mangle before filter (a bug of its own, listed in issue #14)."""
    return sorted("*" + b for b in text.split("*") if b)


def test_commands_match_iptables_and_ipset(tmp_path: Path) -> None:
    for i, step in enumerate(DATA["steps"]):
        argv: list[str] = step["argv"]
        out, err, rc = _run(argv, tmp_path)
        want = step["stdout"]
        if argv[0] == "iptables-save":
            out, want = "".join(_tables(out)), "".join(_tables(want))
        assert (out, err, rc) == (want, step["stderr"], step["rc"]), f"step {i}: {' '.join(argv)}"


def test_conformance_lines_fail_without_sets() -> None:
    """libxt_set.t / libxt_SET.t: with no set foo, every line fails; with it, they parse."""
    lines = ("-A INPUT -m set --match-set foo", "-A INPUT -m set --match-set foo src,dst",
             "-A INPUT -j SET --add-set foo src,dst")
    for line in lines:
        with pytest.raises(RulesError, match=r"foo doesn.t exist|requires two args"):
            parse_argv(line.split())
    with using_sets(_sets("create foo hash:ip,port")):
        assert parse_argv(lines[1].split()).rule is not None
        assert parse_argv(lines[2].split()).rule is not None


def _sets(*lines: str) -> IpsetRegistry:
    reg = IpsetRegistry()
    s = IpsetSession(reg, 0.0, lambda: 0x1234)
    for line in lines:
        rc, _, err = s.run(line.split())
        assert rc == 0, err
    return reg


def _rule(reg: IpsetRegistry, argv: str) -> Rule:
    with using_sets(reg):
        cmd = parse_argv(["-A", "FORWARD", *argv.split()])
    assert cmd.rule is not None
    return cmd.rule


def _udp(src: str, dst: str, sport: int, dport: int) -> Skb:
    payload = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + b"\0\x0c\0\0abcd"
    return Skb(ipv4(src, dst, 17, payload), iif="eth0")


def _ctx(reg: IpsetRegistry, now: float = 0.0) -> FakeCtx:
    ctx = FakeCtx(now=now)
    ctx.sets = reg
    return ctx


def test_match_set_src_dst_and_inversion() -> None:
    reg = _sets("create ipp hash:ip,port", "add ipp 10.0.0.1,udp:53")
    fn = _rule(reg, "-m set --match-set ipp src,dst").matches[0].compile()
    inv = _rule(reg, "-m set ! --match-set ipp src,dst").matches[0].compile()
    ctx = _ctx(reg)
    assert fn(_udp("10.0.0.1", "10.0.0.9", 999, 53), ctx)
    assert not fn(_udp("10.0.0.1", "10.0.0.9", 53, 999), ctx)
    assert inv(_udp("10.0.0.1", "10.0.0.9", 53, 999), ctx)
    short = _rule(reg, "-m set --match-set ipp src").matches[0].compile()
    assert not short(_udp("10.0.0.1", "10.0.0.9", 999, 53), ctx)  # fewer dimensions than the set: 0


def test_nomatch_and_return_nomatch() -> None:
    reg = _sets("create n hash:net", "add n 10.0.0.0/8", "add n 10.1.0.0/16 nomatch")
    plain = _rule(reg, "-m set --match-set n src").matches[0].compile()
    ret = _rule(reg, "-m set --match-set n src --return-nomatch").matches[0].compile()
    ctx = _ctx(reg)
    assert plain(_udp("10.2.0.1", "1.1.1.1", 1, 2), ctx) and not plain(_udp("10.1.0.1", "1.1.1.1", 1, 2), ctx)
    assert ret(_udp("10.1.0.1", "1.1.1.1", 1, 2), ctx) and not ret(_udp("10.2.0.1", "1.1.1.1", 1, 2), ctx)


def test_counters_update_then_match() -> None:
    reg = _sets("create c hash:ip counters", "add c 10.0.0.1")
    gt = _rule(reg, "-m set --match-set c src --packets-gt 2").matches[0].compile()
    skip = _rule(reg, "-m set --match-set c src ! --update-counters").matches[0].compile()
    ctx = _ctx(reg)
    pkt = _udp("10.0.0.1", "10.0.0.2", 1, 2)
    assert [gt(pkt, ctx) for _ in range(4)] == [False, False, True, True]
    assert skip(pkt, ctx)
    assert "add c 10.0.0.1 packets 4 bytes 128\n" in IpsetSession(reg, 0, lambda: 0).run(["save"])[1]


def test_list_set_matches_its_members() -> None:
    reg = _sets("create a hash:ip", "create b hash:net", "add b 10.9.0.0/16", "create l list:set", "add l a",
                "add l b")
    fn = _rule(reg, "-m set --match-set l src").matches[0].compile()
    ctx = _ctx(reg)
    assert fn(_udp("10.9.1.1", "10.0.0.2", 1, 2), ctx) and not fn(_udp("10.8.1.1", "10.0.0.2", 1, 2), ctx)


def test_set_target_adds_with_timeout_and_deletes() -> None:
    reg = _sets("create t hash:ip,port timeout 60", "create d hash:ip", "add d 10.0.0.9")
    tg = _rule(reg, "-j SET --add-set t src,dst --timeout 10 --del-set d dst").target
    assert tg is not None
    fn = tg.compile()
    assert fn(_udp("10.0.0.1", "10.0.0.9", 5, 7), _ctx(reg, now=100.0)) == XT_CONTINUE
    saved = IpsetSession(reg, 104.5, lambda: 0).run(["save"])[1]
    assert "add t 10.0.0.1,udp:7 timeout 5\n" in saved and "add d " not in saved
    # without --exist a second packet does not refresh the timeout; with it, it does
    fn(_udp("10.0.0.1", "10.0.0.9", 5, 7), _ctx(reg, now=105.0))
    assert "timeout 4\n" in IpsetSession(reg, 105.5, lambda: 0).run(["save", "t"])[1]
    ex = _rule(reg, "-j SET --add-set t src,dst --exist").target
    assert ex is not None
    ex.compile()(_udp("10.0.0.1", "10.0.0.9", 5, 7), _ctx(reg, now=106.0))
    assert "timeout 59\n" in IpsetSession(reg, 106.5, lambda: 0).run(["save", "t"])[1]


def test_hash_net_target_add_uses_the_most_specific_prefix() -> None:
    reg = _sets("create n hash:net", "add n 10.0.0.0/24", "add n 10.0.0.0/16")
    tg = _rule(reg, "-j SET --add-set n src").target
    assert tg is not None
    tg.compile()(_udp("10.7.7.7", "1.1.1.1", 1, 2), _ctx(reg))
    assert "add n 10.7.7.0/24\n" in IpsetSession(reg, 0, lambda: 0).run(["save", "n"])[1]


def test_map_set_sets_the_mark_from_skbinfo() -> None:
    reg = _sets("create m hash:ip skbinfo", "add m 10.0.0.2 skbmark 0x50/0xf0")
    with using_sets(reg):
        cmd = parse_argv(["-t", "mangle", "-A", "FORWARD", "-j", "SET", "--map-set", "m", "dst", "--map-mark"])
    assert cmd.rule is not None and cmd.rule.target is not None
    skb = _udp("10.0.0.1", "10.0.0.2", 1, 2)
    skb.mark = 0x10F
    cmd.rule.target.compile()(skb, _ctx(reg))
    assert skb.mark == 0x15F


@pytest.mark.skipif(is_compiled(),
                    reason="interpreted only: counts probes through a dict subclass whose get() compiled code "
                           "bypasses (PyDict_GetItem)")
@pytest.mark.parametrize("n", [10, 100_000])
def test_lookup_cost_does_not_grow_with_the_set(n: int) -> None:
    """O(1) in set size: the work per lookup is the same dict probes for 10 and 100,000 members."""
    reg = IpsetRegistry()
    s = IpsetSession(reg, 0.0, lambda: 7)
    s.run(["create", "big", "hash:net", "maxelem", "200000"])
    big = reg.find("big")
    ext = ExtArgs()
    for i in range(n):
        big.add((0x0A000000 + (i << 8), 24), ext, 0.0, False)
    assert len(big.entries(0.0)) == n
    probes = 0
    orig = big.index  # type: ignore[attr-defined]

    class Counting(dict):  # type: ignore[type-arg]
        def get(self, key, default=None):  # type: ignore[no-untyped-def]
            nonlocal probes
            probes += 1
            return super().get(key, default)

    big.index = Counting(orig)  # type: ignore[attr-defined]
    fn = _rule(reg, "-m set --match-set big src").matches[0].compile()
    assert fn(_udp("10.0.5.1", "1.1.1.1", 1, 2), _ctx(reg))
    assert probes == 1
