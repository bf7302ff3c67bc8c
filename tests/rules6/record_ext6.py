"""Record what the real ip6tables 1.8.9 does with the IPv6 forms of extensions natbox first had for IPv4 only
(recent, hashlimit, connlimit, socket, rpfilter, cluster, ipvs, osf, TEE, TPROXY, HMARK): each line appended
alone in a scratch network namespace, its exit status and messages, and the `-A` line `ip6tables -S` then
prints. Run as root: `python3 tests/rules6/record_ext6.py` writes tests/rules6/data/ext6_1.8.9.json, which
tests/rules6/test_ext6.py compares natbox against (checked in: CI has no ip6tables).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).parent / "data" / "ext6_1.8.9.json"
LINES = (
    "-t filter -A INPUT -m recent --set --name foo --mask ffff:ffff:ffff:ffff::",
    "-t filter -A INPUT -m recent --rcheck --seconds 60 --hitcount 3 --name foo --rsource",
    "-t filter -A INPUT -m recent --update --seconds 30 --reap --mask ffff:: --name bar",
    "-t filter -A INPUT -m recent --set --mask 255.255.255.0",
    "-t filter -A INPUT -m recent --set --mask ffff::1",
    "-t filter -A INPUT ! -m recent --remove --rdest",
    "-t filter -A INPUT -m hashlimit --hashlimit-upto 10/sec --hashlimit-mode srcip --hashlimit-srcmask 64 "
    "--hashlimit-name h1",
    "-t filter -A INPUT -m hashlimit --hashlimit-above 5/min --hashlimit-mode srcip,dstip --hashlimit-srcmask 128 "
    "--hashlimit-dstmask 48 --hashlimit-name h2",
    "-t filter -A INPUT -m hashlimit --hashlimit-upto 1/sec --hashlimit-mode srcip --hashlimit-srcmask 129 "
    "--hashlimit-name h3",
    "-t filter -A INPUT -m hashlimit --hashlimit-upto 1/sec --hashlimit-name h4",
    "-t filter -A INPUT -m hashlimit --hashlimit-upto 1/sec --hashlimit-mode srcip --hashlimit-srcmask "
    "ffff:ffff:ffff:: --hashlimit-name h5",
    "-t filter -A INPUT -m hashlimit --hashlimit-upto 1/sec --hashlimit-mode dstip,dstport --hashlimit-dstmask 0 "
    "--hashlimit-name h6",
    "-t filter -A INPUT -p tcp --syn -m connlimit --connlimit-above 4 --connlimit-mask 64",
    "-t filter -A INPUT -p tcp -m connlimit --connlimit-upto 2 --connlimit-mask 128 --connlimit-daddr",
    "-t filter -A INPUT -p tcp -m connlimit --connlimit-above 2 --connlimit-mask 129",
    "-t filter -A INPUT -p tcp -m connlimit --connlimit-above 2",
    "-t filter -A INPUT -p tcp -m connlimit --connlimit-above 2 --connlimit-mask ffff::",
    "-t filter -A INPUT -p tcp -m connlimit --connlimit-above 2 --connlimit-mask 0",
    "-t filter -A INPUT -m osf --genre Linux",
    "-t mangle -A PREROUTING -m socket",
    "-t mangle -A PREROUTING -m socket --transparent --nowildcard --restore-skmark",
    "-t mangle -A PREROUTING -m rpfilter",
    "-t mangle -A PREROUTING -m rpfilter --loose --validmark --accept-local --invert",
    "-t raw -A PREROUTING -m rpfilter --invert -j DROP",
    "-t filter -A INPUT -m rpfilter",
    "-t mangle -A PREROUTING -m cluster --cluster-total-nodes 2 --cluster-local-node 1 --cluster-hash-seed "
    "0xdeadbeef -j MARK --set-mark 0xffff",
    "-t mangle -A PREROUTING -j TEE --gateway fd00::1",
    "-t mangle -A PREROUTING -j TEE --gateway fd00::1 --oif eth0",
    "-t mangle -A PREROUTING -j TEE --gateway 10.0.0.1",
    "-t mangle -A PREROUTING -p tcp -j TPROXY --on-port 3128 --on-ip fd00::1 --tproxy-mark 0x1/0x1",
    "-t mangle -A PREROUTING -p tcp -j TPROXY --on-port 3128",
    "-t mangle -A PREROUTING -p tcp -j TPROXY --on-port 3128 --on-ip 10.0.0.1",
    "-t mangle -A PREROUTING -j HMARK --hmark-tuple src,dst --hmark-mod 2 --hmark-rnd 1",
    "-t mangle -A PREROUTING -j HMARK --hmark-src-prefix 128 --hmark-dst-prefix 0 --hmark-mod 3 --hmark-rnd 5",
    "-t mangle -A PREROUTING -j HMARK --hmark-src-prefix ffff:ffff:: --hmark-mod 3 --hmark-rnd 5",
    "-t mangle -A PREROUTING -j HMARK --hmark-mod 2 --hmark-src-prefix 129",
)


def _run(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=False)


def main() -> int:
    if os.geteuid() != 0:
        print("record_ext6.py: run as root", file=sys.stderr)
        return 1
    ns = f"r6ext{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    out = []
    try:
        for line in LINES:
            argv = shlex.split(line)
            p = _run(ns, "ip6tables", *argv)
            listed = _run(ns, "ip6tables", "-t", argv[1], "-S").stdout.splitlines()
            out.append({"argv": argv, "rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr,
                        "rules": [x for x in listed if x.startswith("-A ")]})
            for table in ("filter", "mangle", "raw"):
                _run(ns, "ip6tables", "-t", table, "-F")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    OUT.write_text(json.dumps({"ip6tables": "v1.8.9", "kernel": os.uname().release, "lines": out}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
