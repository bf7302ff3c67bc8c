#!/usr/bin/env python3
"""Record what iptables 1.8.9 prints for `-m set` and `-j SET` rules (with ipset 7.17 sets), for
tests/ipset/test_xt_set.py.

Run as root with iptables and ipset installed: python3 tests/ipset/data/record_iptables_set.py
The steps run in one fresh network namespace (created and deleted here); iptables-save's comment lines
(dates) are left out.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

STEPS = [
    "ipset create foo hash:ip initval 0x1", "ipset create bar hash:net,port initval 0x2", "ipset create ls list:set",
    "ipset create m hash:ip skbinfo initval 0x3", "ipset create averyveryveryverylongsetname0123 hash:ip",
    "iptables -A INPUT -m set --match-set nope src",
    "iptables -A INPUT -m set --match-set foo",
    "iptables -A INPUT -m set --match-set foo src",
    "iptables -A INPUT -m set ! --match-set foo dst -j DROP",
    "iptables -A FORWARD -m set --match-set bar src,dst --return-nomatch ! --update-counters "
    "! --update-subcounters --packets-gt 5 --bytes-lt 100 -j ACCEPT",
    "iptables -A FORWARD -m set --match-set bar dst,src ! --packets-eq 3 --bytes-eq 7",
    "iptables -A FORWARD -m set --match-set ls src,src,dst --packets-lt 9 --bytes-gt 1",
    "iptables -A FORWARD -m set --match-set foo src,dst",
    "iptables -A FORWARD -m set --match-set bar src,dst,src",
    "iptables -A FORWARD -m set --match-set averyveryveryverylongsetname0123 src",
    "iptables -A FORWARD -m set --match-set foo src --update-counters --update-subcounters",
    "iptables -A FORWARD -j SET --add-set foo src",
    "iptables -A FORWARD -j SET --add-set foo src --exist --timeout 100",
    "iptables -A FORWARD -j SET --del-set bar src,dst",
    "iptables -A FORWARD -j SET --add-set foo dst --del-set bar src,dst",
    "iptables -t mangle -A FORWARD -j SET --map-set m dst --map-mark --map-prio --map-queue",
    "iptables -t mangle -A PREROUTING -j SET --map-set m src --map-mark",
    "iptables -t mangle -A PREROUTING -j SET --map-set m src --map-prio",
    "iptables -A FORWARD -j SET --map-set m dst --map-mark",
    "iptables -A FORWARD -j SET",
    "iptables -A FORWARD -j SET --del-set foo src --exist",
    "iptables -A FORWARD -j SET --del-set foo src --timeout 5",
    "iptables -A FORWARD -j SET --add-set foo src --map-mark",
    "iptables -t mangle -A FORWARD -j SET --map-set m src",
    "iptables -A FORWARD -j SET --add-set foo src --add-set foo dst",
    "iptables -A FORWARD -m set --match-set foo src --packets-eq 1 --packets-gt 2",
    "iptables -A FORWARD -m set --match-set foo src --bytes-lt 1 --bytes-gt 2",
    "iptables -A FORWARD -m set --match-set foo src --match-set bar src",
    "iptables -A FORWARD -m set --match-set foo sr",
    "iptables -A FORWARD -m set --match-set foo src,dst,src,dst,src,dst,src",
    "iptables -A FORWARD -m set --match-set foo src --packets-eq x",
    "iptables -A FORWARD -m set --return-nomatch",
    "iptables -S", "iptables-save", "iptables -L -n", "iptables -L -n -v", "iptables -t mangle -L -n",
    "iptables -L", "iptables -t mangle -S",
    "ipset list -t foo", "ipset destroy foo", "ipset destroy ls", "ipset rename foo foo2", "ipset swap foo ls",
    "iptables -F", "iptables -t mangle -F", "ipset destroy foo", "ipset list -n",
]
OUT = Path(__file__).resolve().parent / "iptables_set_1.8.9.json"


def main() -> int:
    if os.geteuid() != 0:
        print("record_iptables_set.py: run as root", file=sys.stderr)
        return 1
    ns = f"natbox-xtset-rec-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    steps: list[dict[str, object]] = []
    try:
        for line in STEPS:
            argv = shlex.split(line)
            p = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=False)
            out = p.stdout
            if argv[0] == "iptables-save":
                out = "".join(x for x in out.splitlines(keepends=True) if not x.startswith("#"))
            steps.append({"argv": argv, "stdout": out, "stderr": p.stderr, "rc": p.returncode})
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
    version = subprocess.run(["iptables", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    OUT.write_text(json.dumps({"iptables": version, "kernel": os.uname().release, "steps": steps}, indent=1)
                   + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
