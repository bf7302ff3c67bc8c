"""The ipset model beyond the recorded outputs: timeouts on the injected clock, resizing, prefix lookups,
save/restore round trips, references."""

from __future__ import annotations

import pytest

from natbox.ipset import IpsetRegistry, IpsetSession
from natbox.ipset.store import HashSet


def _run(reg: IpsetRegistry, line: str, now: float = 0.0, stdin: str = "") -> tuple[int, str, str]:
    return IpsetSession(reg, now, lambda: 0x2468ACE1).run(line.split(), stdin)


def test_timeouts_follow_the_injected_clock() -> None:
    reg = IpsetRegistry()
    assert _run(reg, "create t hash:ip timeout 10 initval 0x1")[0] == 0
    _run(reg, "add t 10.0.0.1", now=100.0)
    _run(reg, "add t 10.0.0.2 timeout 0", now=100.0)
    _run(reg, "add t 10.0.0.3 timeout 3", now=100.0)
    out = _run(reg, "save t", now=100.5)[1]
    assert "add t 10.0.0.1 timeout 9\n" in out and "add t 10.0.0.2 timeout 0\n" in out
    assert "add t 10.0.0.3 timeout 2\n" in out
    assert _run(reg, "test t 10.0.0.3", now=102.9)[0] == 0
    assert _run(reg, "test t 10.0.0.3", now=103.0)[0] == 1  # expired at 100 + 3
    # an expired element is added again without -exist; the remaining time never shows as 0
    assert _run(reg, "add t 10.0.0.3 timeout 5", now=104.0)[0] == 0
    assert "add t 10.0.0.3 timeout 1\n" in _run(reg, "save t", now=108.99)[1]
    assert "10.0.0.1" not in _run(reg, "save t", now=110.0)[1]
    assert "10.0.0.2" in _run(reg, "save t", now=10**9)[1]


def test_full_buckets_double_the_table_and_keep_every_member() -> None:
    reg = IpsetRegistry()
    _run(reg, "create big hash:ip hashsize 64 initval 0x5")
    rc, _, err = _run(reg, "add big 10.1.0.0/22")  # 1024 addresses into 64 buckets of at most 12
    assert rc == 0, err
    s = reg.find("big")
    assert isinstance(s, HashSet)
    assert s.bits > 6 and len(s.entries(0.0)) == 1024
    assert all(len(b.slots) <= s.bucketsize for b in s.buckets.values())
    head = _run(reg, "list -t big")[1]
    assert f"hashsize {1 << s.bits} " in head and "Number of entries: 1024\n" in head


def test_delete_shrinks_buckets_back_to_the_empty_size() -> None:
    reg = IpsetRegistry()
    _run(reg, "create a hash:ip initval 0x11111111")
    empty = _run(reg, "list -t a")[1]
    _run(reg, "add a 10.0.0.0/24")
    _run(reg, "del a 10.0.0.0/24")
    assert _run(reg, "list -t a")[1] == empty


def test_hash_net_most_specific_prefix_wins_and_nomatch_excludes() -> None:
    reg = IpsetRegistry()
    _run(reg, "create n hash:net initval 0x7")
    _run(reg, "add n 10.0.0.0/8")
    _run(reg, "add n 10.1.0.0/16 nomatch")
    _run(reg, "add n 10.1.1.0/24")
    s = reg.find("n")
    assert isinstance(s, HashSet) and s.nets == [24, 16, 8]
    assert _run(reg, "test n 10.1.1.9")[0] == 0
    assert _run(reg, "test n 10.1.2.9")[0] == 1
    assert _run(reg, "test n 10.1.2.9 nomatch")[0] == 0  # test with nomatch inverts (ip_set_enomatch)
    assert _run(reg, "test n 10.2.0.1")[0] == 0
    _run(reg, "del n 10.1.1.0/24")
    assert s.nets == [16, 8]


@pytest.mark.parametrize("create, adds", [
    ("hash:ip counters comment", ["10.0.0.1 comment \"x y\"", "10.0.0.2 packets 5 bytes 9"]),
    ("hash:net skbinfo", ["10.0.0.0/8 skbmark 0x1/0xf", "10.2.0.0/16 nomatch skbprio 1:2 skbqueue 3"]),
    ("hash:ip,port timeout 50", ["10.0.0.1,udp:53", "10.0.0.1,icmp:ping timeout 0"]),
    ("hash:net,port", ["10.0.0.0/24,tcp:22", "10.0.0.0/25,udp:1-3"]),
    ("hash:ip,port,ip", ["10.0.0.1,tcp:80,10.0.0.9"]),
    ("hash:ip,port,net", ["10.0.0.1,tcp:80,10.9.0.0/16 nomatch"]),
    ("hash:net,iface", ["10.0.0.0/8,eth0", "0.0.0.0/0,physdev:br0"]),
    ("hash:mac", ["00:11:22:aa:bb:cc"]),
    ("bitmap:ip range 10.0.0.0/16 netmask 24", ["10.0.3.4", "10.0.9.0/23"]),
    ("bitmap:port range 1-100 counters", ["80", "tcp:1-3"]),
])
def test_save_restores_to_the_same_sets(create: str, adds: list[str]) -> None:
    from shlex import split
    reg = IpsetRegistry()
    s = IpsetSession(reg, 10.0, lambda: 0xABCDEF01)
    assert s.run(split(f"create x {create}"))[0] == 0
    for a in adds:
        rc, _, err = s.run(split(f"add x {a}"))
        assert rc == 0, err
    saved = s.run(["save"])[1]
    listed = s.run(["list"])[1]
    reg2 = IpsetRegistry()
    s2 = IpsetSession(reg2, 10.0, lambda: 0)
    assert s2.run(["restore"], saved)[0] == 0
    assert s2.run(["save"])[1] == saved
    assert s2.run(["list"])[1] == listed


def test_list_set_members_are_referenced() -> None:
    reg = IpsetRegistry()
    _run(reg, "create a hash:ip initval 0x1")
    _run(reg, "create l list:set")
    _run(reg, "add l a")
    assert reg.find("a").ref == 1
    rc, _, err = _run(reg, "destroy")
    assert rc == 1 and "in use by a kernel component" in err
    _run(reg, "rename a b")  # refused: in use
    assert reg.get("a") is not None
    _run(reg, "flush l")
    assert reg.find("a").ref == 0
    assert _run(reg, "destroy")[0] == 0 and reg.ordered() == []


def test_inet6_sets_hold_ipv6_elements_and_refuse_ipv4_ones() -> None:
    reg = IpsetRegistry()
    assert _run(reg, "create x hash:net family inet6")[0] == 0
    assert _run(reg, "add x fd00:1::/48")[0] == 0
    rc, _, err = _run(reg, "add x 10.0.0.0/8")
    assert rc == 1 and "resolving to IPv6 address failed" in err
    s = reg.find("x")
    assert s.family == 10 and [e.elem for e in s.entries(0.0)] == [(0xFD000001 << 96, 48)]
    assert s.lookup((0xFD000001 << 96 | 5, 128), 0.0, True) is not None


def test_restore_reports_the_line_and_keeps_what_came_before() -> None:
    reg = IpsetRegistry()
    rc, _, err = _run(reg, "restore", stdin="create a hash:ip\nadd a 10.0.0.1\nadd b 10.0.0.1\n")
    assert rc == 1 and err == "ipset v7.17: Error in line 3: The set with the given name does not exist\n"
    assert reg.get("a") is not None
