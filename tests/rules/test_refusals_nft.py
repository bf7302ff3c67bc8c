"""Refusals and acceptances recorded with the real iptables v1.8.9 (nf_tables) on Linux 6.18 in a scratch network
namespace: libipt_DNAT.c's port parser (REDIRECT's shifted ranges, trailing text), the order of addrtype's final
checks, icmp's mandatory --icmp-type, and checkentry hook tests (addrtype, physdev, policy, SET) that nft_compat
runs with the hook of the rule's own base chain only, while static `.hooks` (mac) follow every jump."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import pytest

from natbox.cli.iptables import iptables_main

HEAD = "iptables v1.8.9 (nf_tables): "
TRY = "Try `iptables -h' or 'iptables --help' for more information.\n"
EINVAL = HEAD + " RULE_APPEND failed (Invalid argument): rule in chain {}\n"


def run(path: Path, cmd: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = iptables_main(shlex.split(cmd), rules_path=str(path), stdout=out, stderr=err)
    return rc, err.getvalue()


@pytest.mark.parametrize(("cmd", "rc", "stderr"), [
    ("-t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 42-1234/567", 2,
     HEAD + "Shifted portmap ranges not supported with this kernel\n" + TRY),
    ("-t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 42-1234/http", 2,
     HEAD + "Shifted portmap ranges not supported with this kernel\n" + TRY),
    ("-t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 42-1234/5x", 2,
     HEAD + "Shifted portmap ranges not supported with this kernel\n" + TRY),
    ("-t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 42/567", 2, HEAD + "Garbage after port value: `/567'\n" + TRY),
    ("-t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 42-1234/", 2, HEAD + "Port `' not valid\n" + TRY),
    ("-t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 42-1234/x", 2, HEAD + "Port `x' not valid\n" + TRY),
    ("-t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 42-1234/0", 2, HEAD + "Port `0' not valid\n" + TRY),
    ("-t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 42-1234x", 2, HEAD + "Garbage after port range: `x'\n" + TRY),
    ("-t nat -A POSTROUTING -p tcp -j MASQUERADE --to-ports 42-1234/x", 2, HEAD + "Port `x' not valid\n" + TRY),
    ("-t nat -A POSTROUTING -p tcp -j MASQUERADE --to-ports 42-1234x", 2,
     HEAD + "Garbage after port range: `x'\n" + TRY),
    ("-t nat -A PREROUTING -p tcp -j DNAT --to-destination 1.2.3.4:42-1234/567", 0, ""),
    ("-t nat -A POSTROUTING -p tcp -j SNAT --to-source 1.2.3.4:42-1234/567", 0, ""),
    ("-A INPUT -m addrtype --limit-iface-in --limit-iface-out", 2,
     HEAD + "addrtype: you must specify --src-type or --dst-type\n" + TRY),
    ("-A INPUT -m addrtype --limit-iface-in", 2, HEAD + "addrtype: you must specify --src-type or --dst-type\n" + TRY),
    ("-A INPUT -m addrtype --src-type LOCAL --limit-iface-in --limit-iface-out", 2,
     HEAD + 'addrtype: option "--limit-iface-in" cannot be used together with "--limit-iface-out".\n\n' + TRY),
    ("-A INPUT -m addrtype --src-type LOCAL --limit-iface-out", 4, EINVAL.format("INPUT")),
    ("-A INPUT -m icmp", 2, HEAD + 'icmp: option "--icmp-type" must be specified\n\n' + TRY),
    ("-A INPUT -p icmp -m icmp", 2, HEAD + 'icmp: option "--icmp-type" must be specified\n\n' + TRY),
    ("-A INPUT -m icmp ! --icmp-type 3", 4, EINVAL.format("INPUT")),
    ("-A INPUT -m policy --dir out --pol none", 4, EINVAL.format("INPUT")),
    ("-A INPUT -m physdev --physdev-out eth0", 0, ""),
    ("-A OUTPUT -m physdev --physdev-out eth0", 4, EINVAL.format("OUTPUT")),
])
def test_recorded(tmp_path: Path, cmd: str, rc: int, stderr: str) -> None:
    assert run(tmp_path / "r", cmd) == (rc, stderr)


def test_checkentry_hooks_see_only_the_rules_own_base_chain(tmp_path: Path) -> None:
    """In a user-defined chain nft_compat's checkentry sees no hook: reached from INPUT or OUTPUT, these rules
    stay (the recorded session, in its order); the jump to a chain holding `-m mac` from OUTPUT is refused,
    mac's hooks being the xt_match's static `.hooks`."""
    path = tmp_path / "r"
    for cmd in ("-N X", "-A X -m addrtype --src-type LOCAL --limit-iface-out", "-A INPUT -j X",
                "-A X -m addrtype --src-type LOCAL --limit-iface-out", "-A X -m policy --dir out --pol none",
                "-N Y", "-A OUTPUT -j Y", "-A Y -m physdev --physdev-out eth0",
                "-A Y -m addrtype --src-type LOCAL --limit-iface-in", "-N Z",
                "-A Z -m mac --mac-source 00:11:22:33:44:55"):
        assert run(path, cmd) == (0, ""), cmd
    assert run(path, "-A OUTPUT -j Z") == (4, EINVAL.format("OUTPUT"))
    out = io.StringIO()
    assert iptables_main(["-S"], rules_path=str(path), stdout=out, stderr=io.StringIO()) == 0
    assert out.getvalue() == (
        "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-N X\n-N Y\n-N Z\n-A INPUT -j X\n-A OUTPUT -j Y\n"
        "-A X -m addrtype --src-type LOCAL --limit-iface-out\n-A X -m addrtype --src-type LOCAL --limit-iface-out\n"
        "-A X -m policy --dir out --pol none\n-A Y -m physdev --physdev-out eth0\n"
        "-A Y -m addrtype --src-type LOCAL --limit-iface-in\n-A Z -m mac --mac-source 00:11:22:33:44:55\n")


def test_a_restored_user_chain_is_checked_the_same_way(tmp_path: Path) -> None:
    """iptables-restore validates the whole table at COMMIT: the same rules in a user chain load."""
    from natbox.cli.iptables import iptables_restore_main

    text = ("*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:Y - [0:0]\n-A OUTPUT -j Y\n"
            "-A Y -m physdev --physdev-out eth0\n-A Y -m addrtype --src-type LOCAL --limit-iface-in\nCOMMIT\n")
    err = io.StringIO()
    assert iptables_restore_main([], rules_path=str(tmp_path / "r"), stdin=io.StringIO(text), stdout=io.StringIO(),
                                 stderr=err) == 0, err.getvalue()


def test_set_map_prio_in_a_user_chain(tmp_path: Path) -> None:
    """SET's --map-prio hook test is in set_target_v3_checkentry: refused in mangle PREROUTING, taken in a user
    chain PREROUTING jumps to (recorded with `ipset create s hash:ip`)."""
    from natbox.cli.ipset import ipset_main
    from natbox.ipset.scope import using_sets

    files = ["--sets", str(tmp_path / "sets"), "--rules", str(tmp_path / "rules")]

    def ipt(cmd: str) -> tuple[int, str]:
        err = io.StringIO()
        rc = iptables_main([*files, *shlex.split(cmd)], stdout=io.StringIO(), stderr=err)
        return rc, err.getvalue()

    with using_sets(None):  # the CLI puts the file's sets in scope: leave none behind for other tests
        assert ipset_main([*files, "create", "s", "hash:ip"], stdout=io.StringIO(), stderr=io.StringIO()) == 0
        for cmd in ("-t mangle -N Y", "-t mangle -A PREROUTING -j Y",
                    "-t mangle -A Y -j SET --map-set s src --map-prio",
                    "-t mangle -A OUTPUT -j SET --map-set s src --map-prio"):
            assert ipt(cmd) == (0, ""), cmd
        assert ipt("-t mangle -A PREROUTING -j SET --map-set s src --map-prio") == (4, EINVAL.format("PREROUTING"))
