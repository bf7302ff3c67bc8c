"""Record how the real ip6tables 1.8.9 lists rules: for each line of data/listing_rules.txt (`TABLE CHAIN RULE`,
`#` comments), in a scratch network namespace, `ip6tables -t TABLE -A CHAIN RULE`'s exit status and message,
then the rule as `-S`, `-L`, `-nL` and `-v -C` print it. Writes data/listing_recorded.json, which
test_listing6.py compares natbox's ip6tables against. Run as root: `python3 tests/rules6/record_listing.py`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"


def _run(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=False)


def _rows(text: str) -> list[str]:
    return text.splitlines()[2:]


def main() -> int:
    ns = f"r6lst{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    out: list[dict[str, object]] = []
    try:
        for line in (DATA / "listing_rules.txt").read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            table, chain, rule = line.split(" ", 2)
            argv = shlex.split(rule)
            p = _run(ns, "ip6tables", "-t", table, "-A", chain, *argv)
            rec: dict[str, object] = {"table": table, "chain": chain, "rule": rule, "rc": p.returncode,
                                      "stderr": p.stderr}
            if p.returncode == 0:
                t = ["ip6tables", "-t", table]
                rec["S"] = [x for x in _run(ns, *t, "-S", chain).stdout.splitlines() if x.startswith("-A")]
                rec["L"] = _rows(_run(ns, *t, "-L", chain).stdout)
                rec["nL"] = _rows(_run(ns, *t, "-nL", chain).stdout)
                rec["vC"] = _run(ns, *t, "-v", "-C", chain, *argv).stdout
            _run(ns, "ip6tables", "-t", table, "-F")
            out.append(rec)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    (DATA / "listing_recorded.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
