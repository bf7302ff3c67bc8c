"""Fuzz campaigns too long for CI: `python3 bench/fuzz.py --frames 10000000 --files 20000`.

Frames go through the engine's three paths (compiled flows, the second tier, the traced slow path) and
damaged files through every command that reads one (natbox.testing.fuzz says what is generated and what is
checked). Prints each campaign's counts and ends with `0 exceptions` (exit 0) or the first failures (exit 1).
The campaigns are deterministic for a seed: a failure is reproduced by running the same seed again.
"""

from __future__ import annotations

import argparse
import sys
import time

from natbox.testing.fuzz import fuzz_frames
from natbox.testing.fuzz_files import fuzz_files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000_000, help="frames through the engines (default 10M)")
    ap.add_argument("--files", type=int, default=20_000, help="damaged files through the command line")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.monotonic()

    def progress(n: int) -> None:
        rate = n / max(time.monotonic() - t0, 1e-9)
        print(f"  {n:,} frames, {rate:,.0f}/s", file=sys.stderr, flush=True)

    frames = fuzz_frames(args.frames, args.seed, progress=progress)
    t1 = time.monotonic()
    print(frames.summary("frames") + f" in {t1 - t0:.0f} s")
    files = fuzz_files(args.files, args.seed)
    print(files.summary("files") + f" in {time.monotonic() - t1:.0f} s")
    for failure in (frames.failures + files.failures)[:10]:
        print("---\n" + failure)
    total = frames.exceptions + files.exceptions
    broken = frames.violations + files.violations
    print(f"{total} exceptions, {broken} broken invariants")
    return 0 if total == 0 and broken == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
