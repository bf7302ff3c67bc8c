"""Record what the real ip6tables 1.8.9 does with every `.t` line (libip6t_*.t, libxt_*.t), one line at a time in
a scratch network namespace: exit status and the `-A` line ip6tables-save then prints for the chain.

Run as root: `python3 tests/rules6/record_ip6tables.py` writes tests/rules6/data/ip6tables_t.json, which
tests/rules6/test_conformance6.py compares natbox against (the recording is checked in: CI has no ip6tables).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from natbox.testing.rules_conformance import T6_DIR, T_DIR, read_t

OUT = Path(__file__).parent / "data" / "ip6tables_t.json"


def _run(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=False)


def main() -> int:
    ns = f"r6rec{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    out: dict[str, dict[str, list[object]]] = {}
    try:
        files = sorted(T6_DIR.glob("*.t")) + sorted(T_DIR.glob("libxt_*.t"))
        for path in files:
            rec: dict[str, list[object]] = {}
            for case in read_t(path).cases:
                for chain in case.chains:
                    p = _run(ns, "ip6tables", "-t", case.table, "-A", chain, *shlex.split(case.rule))
                    line = ""
                    if p.returncode == 0:
                        save = _run(ns, "ip6tables-save", "-t", case.table).stdout.splitlines()
                        rules = [x for x in save if x.startswith(f"-A {chain} ") or x == f"-A {chain}"]
                        line = rules[-1] if rules else ""
                    rec[f"{case.lineno}:{chain}"] = [p.returncode, line, p.stderr.strip()]
                    _run(ns, "ip6tables", "-t", case.table, "-F")
                    _run(ns, "ip6tables", "-t", case.table, "-X")
            out[path.name] = rec
            print(path.name, len(rec), file=sys.stderr)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    OUT.write_text(json.dumps(out, indent=0, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
