"""ipset around the engine (issue #14): a snapshot records `ipset save`, a host file names its sets ([ipsets]
file or text), and the sets are restored before the rules that name them (as `ipset restore` runs before
`iptables-restore` on a real host)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from tests.snapshot.test_snapshot_parse import ADDR, LINK, ROUTE

from natbox.adapters.snapshot import load_host
from natbox.engine.hostfile import HostFileError, host_ipsets, parse_host_toml
from natbox.engine.snapshot import host_from_snapshot
from natbox.ipset.command import IpsetSession
from natbox.ipset.core import IpsetRegistry
from natbox.testing.live import require_programs

# `ipset save` of Linux 6.18 / ipset 7.17 after restoring the two subnets (kernel hash order for this initval)
SETS = """create docker-ext-bridges-v4 hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1b2c3d4e
add docker-ext-bridges-v4 172.18.0.0/16
add docker-ext-bridges-v4 172.17.0.0/16
"""
RULES = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m set --match-set docker-ext-bridges-v4 dst -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -m set --match-set docker-ext-bridges-v4 dst -j DROP
COMMIT
"""


def _has(reg: IpsetRegistry, name: str, elem: str) -> bool:
    rc, _, _ = IpsetSession(reg, 0.0, lambda: 0).run(["test", name, elem])
    return rc == 0


def _save(reg: IpsetRegistry) -> str:
    rc, out, err = IpsetSession(reg, 0.0, lambda: 0).run(["save"])
    assert rc == 0, err
    return out


def test_a_snapshot_with_ipset_save_restores_the_sets_and_the_rules_reference_them() -> None:
    files = {"link.json": LINK, "addr.json": ADDR, "route.json": ROUTE, "iptables.rules": RULES,
             "ipset.save": SETS}
    hf = host_from_snapshot(files, "snap")
    assert hf.ipsets_text == SETS and hf.ipsets_origin == "snap/ipset.save"
    reg = host_ipsets(hf)
    assert reg is not None
    assert _has(reg, "docker-ext-bridges-v4", "172.18.3.4") and not _has(reg, "docker-ext-bridges-v4", "10.0.0.1")
    assert _save(reg) == SETS  # byte for byte what the host saved, initval included
    # both rules hold a reference, so the set cannot be destroyed (ipset's own message)
    rc, _, err = IpsetSession(reg, 0.0, lambda: 0).run(["destroy", "docker-ext-bridges-v4"])
    assert rc == 1 and "in use by a kernel component" in err


def test_a_snapshot_without_ipset_save_has_no_sets() -> None:
    hf = host_from_snapshot({"link.json": LINK, "addr.json": ADDR, "route.json": ROUTE}, "snap")
    assert hf.ipsets_text == "" and host_ipsets(hf) is None


def test_a_host_file_names_its_sets_inline_or_by_file(tmp_path: Path) -> None:
    hf = parse_host_toml(f'[ipsets]\ntext = """{SETS}"""\n', "h.toml")
    reg = host_ipsets(hf)
    assert reg is not None and _has(reg, "docker-ext-bridges-v4", "172.17.0.9")
    (tmp_path / "sets.ipset").write_text(SETS)
    (tmp_path / "rules.v4").write_text(RULES)
    (tmp_path / "h.toml").write_text('[rules]\nfile = "rules.v4"\n[ipsets]\nfile = "sets.ipset"\n')
    hf = load_host(tmp_path / "h.toml")
    assert hf.ipsets_text == SETS and hf.ipsets_origin == str(tmp_path / "sets.ipset")
    reg = host_ipsets(hf)
    assert reg is not None and reg.get("docker-ext-bridges-v4") is not None


@pytest.mark.parametrize(("text", "message"), [
    ('[ipsets]\nfile = "a"\ntext = "b"\n', "h.toml:3: ipsets[0].text: give either file or text, not both"),
    ('[ipsets]\nfiles = "a"\n', "h.toml:2: ipsets[0].files: unknown key (known: file, text)"),
    ("ipsets = 3\n", "h.toml:1: ipsets: must be a table with file or text"),
    ('[ipsets]\ntext = 3\n', "h.toml:2: ipsets[0].text: must be a string"),
])
def test_a_bad_ipsets_table_is_one_line(text: str, message: str) -> None:
    """The messages name file:line and the key, as [rules]'s do."""
    with pytest.raises(HostFileError) as exc:
        parse_host_toml(text, "h.toml")
    assert str(exc.value) == message


def test_sets_ipset_refuses_are_one_line_naming_the_origin() -> None:
    hf = parse_host_toml('[ipsets]\ntext = "create s hash:nope\\n"\n', "h.toml")
    with pytest.raises(HostFileError) as exc:
        host_ipsets(hf)
    assert str(exc.value).startswith("h.toml[ipsets.text]: ipset v7.17: ")
    assert "\n" not in str(exc.value).strip()


def test_a_missing_ipsets_file_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "h.toml").write_text('[ipsets]\nfile = "nope.ipset"\n')
    with pytest.raises(HostFileError) as exc:
        load_host(tmp_path / "h.toml")
    assert "ipsets.file" in str(exc.value) and "nope.ipset" in str(exc.value)


@pytest.mark.netns
def test_a_namespace_snapshot_records_ipset_save(tmp_path: Path) -> None:
    """The kernel's `ipset save` is taken as it is, and restores in natbox byte for byte."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    require_programs("ip", "ipset", "iptables-restore", "iptables-save", "sysctl")
    from natbox.adapters.snapshot import read_snapshot_files, take_snapshot

    ns = f"nbx-snapset-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=20)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ipset", "restore"], input=SETS, text=True, check=True,
                       capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "exec", ns, "iptables-restore"], input=RULES, text=True, check=True,
                       capture_output=True, timeout=20)
        take_snapshot(tmp_path / "snap", netns=ns)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20, check=False)
    files = read_snapshot_files(tmp_path / "snap")
    assert files["ipset.save"] == SETS
    reg = host_ipsets(host_from_snapshot(files, str(tmp_path / "snap")))
    assert reg is not None and _save(reg) == SETS


def test_replay_builds_its_engine_with_the_host_files_sets(tmp_path: Path) -> None:
    """`natbox replay --host h.toml`: the [ipsets] sets are restored before the rules, and -m set sees them."""
    from natbox.cli.replay import ReplayOptions, _build_engine
    from natbox.conntrack.tuple import parse_addr
    from natbox.wire import ethernet, ipv4, udp

    (tmp_path / "sets.ipset").write_text("create blocked hash:ip family inet\nadd blocked 192.168.50.3\n")
    (tmp_path / "rules.v4").write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                                       "-A FORWARD -m set --match-set blocked src -j DROP\nCOMMIT\n")
    (tmp_path / "h.toml").write_text(
        'ip_forward = true\n[[interface]]\nname = "eth0"\naddresses = ["192.168.50.1/24"]\n'
        '[[interface]]\nname = "eth1"\naddresses = ["198.51.100.1/24"]\n'
        '[[neighbour]]\ndev = "eth1"\naddr = "198.51.100.2"\nmac = "02:00:00:00:00:02"\n'
        '[rules]\nfile = "rules.v4"\n[ipsets]\nfile = "sets.ipset"\n')
    engine, _, _ = _build_engine(ReplayOptions(host=str(tmp_path / "h.toml"), inputs=[]), events=False)
    assert engine.ipsets is not None and engine.ipsets.get("blocked") is not None

    def send(src: str) -> int:
        s, d = parse_addr(src), parse_addr("198.51.100.2")
        frame = ethernet.build_ethernet(b"\x00" * 6, b"\x02\x00\x00\x00\x00\x09", ethernet.ETH_P_IP,
                                        ipv4.build_ipv4(s, d, 17, udp.build_udp(s, d, 4000, 53, b"q")))
        return len(engine.receive(bytes(frame), "eth0", 1.0).emitted)

    assert send("192.168.50.2") == 1
    assert send("192.168.50.3") == 0  # in the set: FORWARD drops it
