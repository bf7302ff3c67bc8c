#!/usr/bin/env python3
"""Record what the real ipset 7.17 prints, for tests/ipset/test_cli_reference.py.

Run as root on a host with ipset installed (`apt-get install -y ipset`):
    python3 tests/ipset/data/record_ipset.py
Each case runs in a fresh network namespace (created and deleted here), so the host's sets are untouched.
Hash sets are created with an explicit `initval` so that member order and sizes are reproducible.
The result, ipset_7.17.json, holds for every step the argv, stdin, stdout, stderr and exit code.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

IV = "initval 0x11111111"
CASES: dict[str, list[str]] = {
    "hash_ip": [
        f"create a hash:ip {IV}", "add a 10.0.0.1", "add a 10.0.0.2", "add a 10.0.0.10-10.0.0.13",
        "add a 10.0.1.0/30", "add a 10.0.0.1", "-exist add a 10.0.0.1", "test a 10.0.0.2", "test a 10.0.0.3",
        "del a 10.0.0.2", "del a 10.0.0.2", "-exist del a 10.0.0.2", "list a", "save a", "list -t a",
        "list -n", "-o save list a", "list -terse a", "list a -o save",
    ],
    "hash_ip_opts": [
        f"create b hash:ip hashsize 64 maxelem 3 netmask 24 {IV}", "add b 10.0.0.1", "add b 10.0.0.7",
        "add b 10.0.1.1", "add b 10.0.2.1", "add b 10.0.3.1", "list b", "save",
        f"create c hash:ip counters comment skbinfo {IV}", "add c 10.1.1.1 packets 3 bytes 40 comment \"a b\"",
        "add c 10.1.1.2 comment plain skbmark 0x10 skbprio 1:2 skbqueue 7", "add c 10.1.1.3 skbmark 0x5/0xff",
        "list c", "save c", "add c 10.1.1.4 timeout 5",
    ],
    "hash_net": [
        f"create n hash:net counters {IV}", "add n 10.0.0.0/8", "add n 10.1.0.0/16 nomatch",
        "add n 10.1.2.0/24", "add n 192.168.1.1", "add n 192.168.3.1-192.168.3.6", "add n 0.0.0.0/0",
        "add n 10.0.0.0/33", "test n 10.1.2.3", "test n 10.1.3.3", "test n 10.2.3.4", "test n 10.1.0.0/16",
        "test n 172.16.0.1", "-exist add n 10.1.0.0/16", "test n 10.1.3.3", "list n", "save n",
        "del n 10.0.0.0/8", "del n 10.0.0.0/8", "list n",
    ],
    "hash_ip_port": [
        f"create p hash:ip,port {IV}", "add p 10.0.0.1,udp:53", "add p 10.0.0.1,80",
        "add p 10.0.0.1,icmp:echo-request", "add p 10.0.0.1,icmp:3/4", "add p 10.0.0.2,tcp:http",
        "add p 10.0.0.3,sctp:5", "add p 10.0.0.3,47:0", "add p 10.0.0.4,udp:10-12", "add p 10.0.0.8/31,7",
        "add p 10.0.0.1", "add p 10.0.0.1,tcp:99999", "test p 10.0.0.1,tcp:80", "test p 10.0.0.1,udp:80",
        "list p", "save p",
    ],
    "hash_net_port": [
        f"create np hash:net,port {IV}", "add np 10.0.0.0/24,tcp:80", "add np 10.0.0.0/16,udp:53 nomatch",
        "add np 10.2.0.0/16,5-6", "test np 10.0.0.5,tcp:80", "test np 10.0.3.5,udp:53", "list np", "save np",
    ],
    "hash_ip_port_ip": [
        f"create ppi hash:ip,port,ip timeout 600 {IV}", "add ppi 10.0.0.1,tcp:80,10.0.0.2 timeout 0",
        "add ppi 10.0.0.1,udp:53,10.0.0.3 timeout 0", "test ppi 10.0.0.1,udp:53,10.0.0.3", "list ppi", "save ppi",
    ],
    "hash_ip_port_net": [
        f"create ppn hash:ip,port,net {IV}", "add ppn 10.0.0.1,tcp:80,10.2.0.0/24",
        "add ppn 10.0.0.1,tcp:80,10.2.0.0/16 nomatch", "test ppn 10.0.0.1,tcp:80,10.2.0.5",
        "test ppn 10.0.0.1,tcp:80,10.2.1.5", "list ppn", "save ppn",
    ],
    "hash_net_iface": [
        f"create ni hash:net,iface {IV}", "add ni 10.0.0.0/8,eth0", "add ni 10.0.0.0/8,physdev:eth1",
        "add ni 10.1.0.0/16,eth0 nomatch", "add ni 0.0.0.0/0,lo", "test ni 10.0.0.1,eth0",
        "test ni 10.1.0.1,eth0", "list ni", "save ni",
    ],
    "hash_mac": [f"create m hash:mac {IV}", "add m 00:11:22:33:44:55", "list m"],
    "bitmap_ip": [
        "create bi bitmap:ip range 10.0.0.0/24", "add bi 10.0.0.5", "add bi 10.0.0.1-10.0.0.3",
        "add bi 10.0.1.1", "test bi 10.0.0.2", "list bi", "save bi",
        "create bm bitmap:ip range 10.0.0.0-10.0.255.255 netmask 24 counters comment",
        "add bm 10.0.7.9 packets 1 bytes 2 comment x", "list bm", "save bm",
    ],
    "bitmap_port": [
        "create bp bitmap:port range 0-1024", "add bp 80", "add bp 22", "add bp tcp:443", "add bp 2000",
        "add bp 10-12", "list bp", "save bp", "create bq bitmap:port range 1-10 counters", "list bq",
    ],
    "list_set": [
        f"create a hash:ip {IV}", f"create b hash:net {IV}", "create l list:set size 4", "add l a",
        "add l b before a", "add l nope", "add l l", "test l a", "test l b after a", "list", "save",
        "destroy a", "del l a", "destroy a", "list -n",
    ],
    "admin": [
        f"create a hash:ip {IV}", f"create b hash:ip {IV}", f"create c hash:net {IV}", "add a 10.0.0.1",
        "create a hash:ip", "-exist create a hash:ip initval 0x11111111", "create x hash:foo",
        "swap a c", "swap a b", "list -n", "rename b d", "rename d c", "list -n", "flush d", "list d",
        "flush", "destroy nope", "destroy d", "create e hash:ip", "list -n", "destroy", "list",
        "bogus", "", "list nope", "add nope 10.0.0.1", "create a hash:ip family inet6",
        "create a hash:ip family foo",
    ],
    # 10.0.0.3, 10.0.6.79, 10.0.8.114 and 10.0.9.93 share a bucket under initval 0x11111111 (hashsize 1024):
    # bucket growth, slot reuse and shrinking show in the member order and in "Size in memory"
    "buckets": [
        f"create a hash:ip {IV}", "add a 10.0.0.3", "add a 10.0.6.79", "add a 10.0.8.114", "list -t a",
        "del a 10.0.0.3", "list a", "add a 10.0.9.93", "list a", "del a 10.0.6.79", "del a 10.0.8.114",
        "list a", "add a 10.0.0.0/24", "del a 10.0.0.5", "del a 10.0.0.77", "del a 10.0.0.0/25", "save a",
        "list -t a", "add a 10.0.0.0/26", "list a", "del a 10.0.0.0/24", "list a",
    ],
    "resize": [
        f"create r hash:ip hashsize 64 {IV}", "add r 10.1.0.0/22", "list -t r", "save r",
        f"create s hash:net,port hashsize 64 maxelem 100000 {IV}", "add s 10.2.0.0/24,udp:1-12", "list -t s",
        "save s", f"create t hash:ip hashsize 64 maxelem 10 {IV}", "add t 10.3.0.0/24", "list t",
    ],
    "formats": [
        f"create f hash:ip,port forceadd skbinfo comment counters timeout 0 {IV}",
        "add f 10.0.0.1,icmp:7/0", "add f 10.0.0.1,udplite:9", "add f 10.0.0.1,ah:0", "add f 10.0.0.1,253:0",
        "add f 10.0.0.1,icmp:ping", "add f 10.0.0.1,icmp:pong", "add f 10.0.0.2,tcp:0",
        "add f 10.0.0.3,tcp:1 comment 'with \"quote'", "add f 10.0.0.4,tcp:2 skbmark 0xffffffff/0xffffffff",
        "add f 10.0.0.5,tcp:3 skbprio 10:ff", "add f 10.0.0.6,tcp:4 timeout 100", "list f", "save f",
        "add f 10.0.0.1,gre:5", "add f 10.0.0.1,foo:5", "add f 10.0.0.1,tcp:", "add f 10.0.0.1,",
        "add f 10.0.0.1,tcp:80 bogus", "add f 10.0.0.1,tcp:80 timeout", "add f 10.0.0.1,tcp:80 packets x",
        "add f 10.0.0.1,tcp:80 nomatch", "test f 10.0.0.2,tcp:0", "test f 10.0.0.1",
        "create g bitmap:ip range 10.0.0.0-10.0.0.3 timeout 0 forceadd",
        "create g bitmap:ip", "create g bitmap:ip range 10.0.0.0/8",
        f"create g hash:ip hashsize 100 maxelem 0 {IV}", "list -t g", "create h list:set size 2 timeout 5",
        "add h g", "add h f", "add h g", "list h", "create i hash:ip netmask 33", "create i hash:ip netmask 0",
        "create i hash:net netmask 24", "create j hash:ip bogus", "create j", "add", "add f",
        f"create k hash:net,iface {IV}", "add k 10.0.0.0/8,eth0 nomatch", "add k 10.0.0.0/8,eth0", "list k",
        "test k 10.1.1.1,eth0", "add k 10.0.0.0/8,averylonginterfacename",
    ],
    "more": [
        f"create a hash:ip {IV}", "create b bitmap:ip range 10.0.0.0/28", "add a 10.0.0.1", "add b 10.0.0.2",
        "swap a b", "list", "-exist create a hash:ip maxelem 5", "-exist create b hash:ip timeout 5",
        "-exist create b hash:ip initval 0x5", "create l list:set size 4 timeout 100", "add l a timeout 0",
        "add l b before a", "add l b", "-exist add l b timeout 0", "test l a before b", "test l b before a",
        "test l nope", "add l a after nope", "del l b", "del l b", "list l", "save", "list -t", "-o save list -t",
        "flush l", "list l", f"create n hash:net,iface hashsize 64 bucketsize 2 {IV}",
        "add n 10.0.0.0/8,eth0", "add n 10.0.0.0/8,eth1", "add n 10.0.0.0/8,eth2", "add n 10.0.0.0/8,eth3",
        "list n", "test n 10.1.2.3,eth2", "test n 10.1.2.3,eth9", "del n 10.0.0.0/8,eth1", "list n",
        f"create p hash:ip,port,ip {IV}", "add p 10.0.0.1-10.0.0.2,udp:1-2,10.0.0.9", "list p",
        "add p 10.0.0.0/30,80,10.0.0.0/31", "list -t p", "del p 10.0.0.0/30,80,10.0.0.0/31", "list p",
        "save nope", "list -n nope", "destroy l", "destroy a", "list -n", "flush", "list",
    ],
    "xml": [
        f"create a hash:ip {IV} timeout 50 counters comment", "add a 10.0.0.1 comment \"x y\" packets 2 bytes 3",
        "add a 10.0.0.2 timeout 0", "create b bitmap:port range 1-10", "add b 5", "create l list:set",
        "add l b", f"create n hash:net {IV} skbinfo", "add n 10.0.0.0/8 nomatch skbmark 0x3 skbprio 1:2",
        "-o xml list", "-o json list", "-o xml list -t a", "-o xml list -n", "-o xml save a", "-o plain list b",
    ],
    "restore_exist": [
        "-exist restore", "save", "restore", "-exist restore",
    ],
    "restore": [
        "-file /dev/stdin restore", "list -n", "save", "restore",
    ],
}
STDIN = {
    ("restore_exist", 0): f"create r hash:ip {IV}\nadd r 10.0.0.1\nadd r 10.0.0.1\ncreate r hash:ip {IV}\n",
    ("restore_exist", 2): "add r 10.0.0.2\nflush r\nadd r 10.0.0.3\ndel r 10.0.0.9\n",
    ("restore_exist", 3): "# comment\n\nadd r 10.0.0.4\nadd r 10.0.0.4\nbogus r\n",
    ("restore", 0): f"create r hash:ip {IV}\nadd r 10.0.0.1\nadd r 10.0.0.2 \n",
    ("restore", 3): f"create s hash:net {IV}\nadd s 10.0.0.0/8\nadd s 10.0.0.0/8\nadd s 10.9.9.9\n",
}
OUT = Path(__file__).resolve().parent / "ipset_7.17.json"


def run_case(name: str, steps: list[str]) -> list[dict[str, object]]:
    ns = f"natbox-ipset-rec-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    out: list[dict[str, object]] = []
    try:
        for i, line in enumerate(steps):
            argv = shlex.split(line)
            stdin = STDIN.get((name, i))
            p = subprocess.run(["ip", "netns", "exec", ns, "ipset", *argv], input=stdin or "",
                               capture_output=True, text=True, check=False)
            out.append({"argv": argv, "stdin": stdin, "stdout": p.stdout, "stderr": p.stderr, "rc": p.returncode})
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
    return out


def main() -> int:
    if os.geteuid() != 0:
        print("record_ipset.py: run as root", file=sys.stderr)
        return 1
    version = subprocess.run(["ipset", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    data = {"ipset": version, "kernel": os.uname().release,
            "cases": {name: run_case(name, steps) for name, steps in CASES.items()}}
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
