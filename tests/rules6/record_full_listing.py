"""Record what the real ip6tables 1.8.9 prints for data/docker6_counters.rules (Docker's IPv6 ruleset of
ipv6-semantics.md §6 with counters, NPTv6 and other IPv6 rules) loaded with `ip6tables-restore -c` in a
scratch network namespace: every listing form per table and both save forms. Writes
data/docker6_listings.json for test_full_listing6.py. Run as root: `python3 tests/rules6/record_full_listing.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"
FORMS = (["-S"], ["-v", "-S"], ["-L"], ["-nL"], ["-nvL"], ["-L", "-v"], ["-nvxL"], ["-nL", "--line-numbers"],
         ["-vnL", "--line-numbers", "-x"], ["-S", "INPUT"], ["-L", "DOCKER"], ["-nvL", "INPUT", "3"])


def main() -> int:
    ns = f"r6full{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    out: dict[str, object] = {}
    try:
        run = ["ip", "netns", "exec", ns]
        text = (DATA / "docker6_counters.rules").read_text()
        subprocess.run([*run, "ip6tables-restore", "-c"], input=text, text=True, check=True)
        for table in ("mangle", "filter", "nat"):
            for form in FORMS:
                if table != "filter" and form[-1] in ("INPUT", "DOCKER", "3"):
                    continue
                p = subprocess.run([*run, "ip6tables", "-t", table, *form], capture_output=True, text=True,
                                   check=False)
                out[f"{table} {' '.join(form)}"] = [p.returncode, p.stdout]
        for form in ([], ["-c"], ["-t", "nat"]):
            p = subprocess.run([*run, "ip6tables-save", *form], capture_output=True, text=True, check=True)
            out[f"save {' '.join(form)}"] = [0, "".join(x + "\n" for x in p.stdout.splitlines() if x[:1] != "#")]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    (DATA / "docker6_listings.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
