#!/usr/bin/env python3
"""Record what the real ipset 7.17 prints for sets of family inet6, for tests/ipset/test_reference6.py.

Run as root on a host with ipset installed: `python3 tests/ipset/data/record_ipset6.py`. Each case runs in a
fresh network namespace (record_ipset.run_case), hash sets with an explicit `initval`, so member order and
sizes are reproducible. The result, ipset6_7.17.json, has the same shape as ipset_7.17.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_ipset import run_case  # type: ignore[import-not-found]

IV = "initval 0x11111111"
F6 = f"family inet6 {IV}"
CASES: dict[str, list[str]] = {
    "hash_ip6": [
        f"create a hash:ip {F6}", "add a fd00::1", "add a fd00::2", "add a fd00::1-fd00::3", "add a fd00::/64",
        "add a fd00::5/128", "add a 10.0.0.1", "add a ::ffff:1.2.3.4", "add a ::1.2.3.4",
        "add a 2001:db8:0:0:1:0:0:1", "add a ::", "add a fd00::1", "-exist add a fd00::1", "test a fd00::2",
        "test a fd00::9", "test a fd00::5/128", "test a fd00::5/127", "list a", "save a", "del a fd00::2",
        "del a fd00::2", "list -t a", "-o xml list a", "add a FD00::A", "add a fd00:::1", "add a fd00::1%lo",
    ],
    "hash_ip6_netmask": [
        f"create b hash:ip family inet6 netmask 64 {IV}", "add b fd00:1::1", "add b fd00:1::2", "add b ::1",
        "add b fd00:2::/48", "test b fd00:1::77", "list b", "save b",
        f"create c hash:ip family inet6 netmask 128 {IV}", "list -t c",
        "create d hash:ip family inet6 netmask 129", "create d hash:ip family inet6 netmask 0",
        f"create e hash:ip family inet6 hashsize 64 maxelem 3 counters comment skbinfo timeout 0 {IV}",
        "add e fd00::1 packets 3 bytes 40 comment \"a b\"", "add e fd00::2 skbmark 0x10 skbprio 1:2 skbqueue 7",
        "add e fd00::3 timeout 5", "add e fd00::4", "list e", "save e",
    ],
    "hash_net6": [
        f"create n hash:net family inet6 counters {IV}", "add n fd00::/8", "add n fd00:1::/32 nomatch",
        "add n fd00:1:2::/48", "add n ::/0", "add n fd00::1/129", "add n fd00::1-fd00::4", "add n 2001:db8::1",
        "add n 2001:db8::1/128", "add n fd00:9::1/64", "test n fd00:1:2::3", "test n fd00:1:3::3",
        "test n fd00:1::/32", "test n fd00:1:2::/48", "test n 2001:db8::1", "test n 2001:db8::2", "list n",
        "save n", "del n fd00::/8", "del n fd00::/8", "list n",
    ],
    "hash_ip6_port": [
        f"create p hash:ip,port {F6}", "add p fd00::1,udp:53", "add p fd00::1,80", "add p fd00::1,icmpv6:echo-request",
        "add p fd00::1,ipv6-icmp:ping", "add p fd00::1,icmpv6:1/4", "add p fd00::1,icmpv6:200/9",
        "add p fd00::1,icmp:echo-request", "test p fd00::1,icmp:echo-request", "add p fd00::1,icmpv6:bogus",
        "add p fd00::1,icmpv6:neigbour-solicitation", "add p fd00::2,tcp:10-12", "add p fd00::3,gre:0",
        "add p fd00::3,58:0", "add p fd00::4/127,tcp:5", "add p fd00::4/128,tcp:5", "add p fd00::1-fd00::2,tcp:5",
        "test p fd00::1,udp:53", "test p fd00::1,icmpv6:echo-request", "list p", "save p",
        f"create p4 hash:ip,port {IV}", "add p4 10.0.0.1,icmpv6:echo-request", "add p4 10.0.0.1,ipv6-icmp:1/2",
        "add p4 10.0.0.1,icmp:bogus", "list p4",
    ],
    "hash_net6_port": [
        f"create np hash:net,port {F6}", "add np fd00::/64,tcp:80", "add np fd00::/32,udp:53 nomatch",
        "add np fd00::1-fd00::2,tcp:1", "add np fd00::7,tcp:1", "add np ::/0,tcp:1", "add np fd00::/48,tcp:2-3",
        "test np fd00::5,tcp:80", "test np fd00:0:1::5,udp:53", "test np fd00::5,tcp:3", "list np", "save np",
    ],
    "hash_ip6_port_ip": [
        f"create ppi hash:ip,port,ip family inet6 timeout 600 {IV}", "add ppi fd00::1,tcp:80,fd00::2 timeout 0",
        "add ppi fd00::1,udp:53,fd00::3/64 timeout 0", "add ppi fd00::1,udp:53,fd00::3/128 timeout 0",
        "add ppi fd00::1,udp:53,10.0.0.1", "test ppi fd00::1,tcp:80,fd00::2", "list ppi", "save ppi",
    ],
    "hash_ip6_port_net": [
        f"create ppn hash:ip,port,net {F6}", "add ppn fd00::1,tcp:80,fd00:2::/64",
        "add ppn fd00::1,tcp:80,fd00:2::/48 nomatch", "add ppn fd00::1,tcp:80,fd00:3::1-fd00:3::2",
        "add ppn fd00::1,tcp:81,fd00:3::1", "test ppn fd00::1,tcp:80,fd00:2::5",
        "test ppn fd00::1,tcp:80,fd00:2:0:1::5", "list ppn", "save ppn",
    ],
    "hash_net6_iface": [
        f"create ni hash:net,iface {F6}", "add ni fd00::/8,eth0", "add ni fd00::/8,physdev:eth1",
        "add ni fd00:1::/16,eth0 nomatch", "add ni ::/0,lo", "add ni fd00:5::1,eth5", "test ni fd00::1,eth0",
        "test ni fd00:5::1,eth5", "test ni 2001::1,lo", "list ni", "save ni",
    ],
    "family_options": [
        "create bi bitmap:ip range fd00::/120 family inet6", "create m hash:mac family inet6",
        "create l list:set family inet6", f"create x hash:ip -6 {IV}", f"create y hash:ip -4 {IV}",
        f"create z hash:ip family ipv6 {IV}", f"create z2 hash:ip family any {IV}",
        f"create z3 hash:ip family inet6 family inet {IV}", f"create z4 hash:net,iface family ipv4 {IV}",
        "list -t x", "list -t y", "list -t z", "list -t z4", "add x fd00::1", "swap x y", "swap x z",
        "list x", "create l list:set", "add l x", "add l y", "list l", f"-exist create x hash:ip {IV}",
        f"-exist create x hash:ip family inet6 {IV}", f"-exist create y hash:ip family inet6 {IV}", "list -n",
    ],
    "sizes6": [
        f"create s1 hash:ip {F6}", f"create s2 hash:net {F6}", f"create s3 hash:ip,port {F6}",
        f"create s4 hash:net,port {F6}", f"create s5 hash:ip,port,ip {F6}", f"create s6 hash:ip,port,net {F6}",
        f"create s7 hash:net,iface {F6}", "add s1 fd00::1", "add s2 fd00::/64", "add s3 fd00::1,1",
        "add s4 fd00::/64,1", "add s5 fd00::1,1,fd00::2", "add s6 fd00::1,1,fd00::/64", "add s7 fd00::/64,eth0",
        "list -t",
    ],
    "resize6": [
        f"create r hash:ip family inet6 hashsize 64 {IV}", "restore", "list -t r", "save r",
    ],
    "restore6": [
        "restore", "save", "list -n",
    ],
}
STDIN = {
    ("resize6", 1): "".join(f"add r fd00::{i:x}\n" for i in range(1, 400)),
    ("restore6", 0): (f"create r hash:net family inet6 hashsize 1024 maxelem 65536 {IV}\nadd r fd00::/64\n"
                      f"add r fd00::1\ncreate q hash:ip,port family inet6 {IV}\nadd q fd00::9,udp:5\n"
                      "add q fd00::9,icmpv6:2/0\n"),
}
OUT = Path(__file__).resolve().parent / "ipset6_7.17.json"


def main() -> int:
    if os.geteuid() != 0:
        print("record_ipset6.py: run as root", file=sys.stderr)
        return 1
    import record_ipset

    record_ipset.STDIN.clear()
    record_ipset.STDIN.update(STDIN)
    version = subprocess.run(["ipset", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    data = {"ipset": version, "kernel": os.uname().release,
            "cases": {name: run_case(name, steps) for name, steps in CASES.items()}}
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
