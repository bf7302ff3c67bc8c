"""`natbox difftest SCENARIO...`: run each scenario on the kernel and through natbox, and compare.

A SCENARIO is a TOML file (see `natbox.difftest.scenario`) or a directory of them. Prints a report per
scenario and closes with `N passed, N failed`. Exit 0 if all passed, 1 if any failed, 2 on bad usage or
when the kernel side cannot run here (not root, no `ip netns`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from natbox.difftest.compare import Difference, compare
from natbox.difftest.kernel import (
    KernelRun,
    KernelUnavailable,
    cleanup_stale,
    kernel_available,
    run_on_kernel,
    save_kernel_run,
)
from natbox.difftest.natbox_side import run_on_natbox
from natbox.difftest.scenario import Scenario, ScenarioError, parse_scenario

__all__ = ["cli_difftest", "load_scenarios", "run_scenario"]

USAGE = """usage: natbox difftest [-v] [--keep DIR] SCENARIO.toml|DIR...

  -v          also print what the programs of each scenario printed
  --keep DIR  save each kernel run under DIR/<scenario>/ (snapshot/, in.pcapng, out.pcapng, conntrack.txt,
              iptables-save.txt): `natbox replay --host DIR/<scenario>/snapshot --in DIR/<scenario>/in.pcapng`
"""
MAX_DIFFS_SHOWN = 20  # per scenario in the report


def load_scenarios(paths: Sequence[str]) -> list[Scenario]:
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("*.toml")) if p.is_dir() else [p])
    out = []
    for f in files:
        try:
            text = f.read_text()
        except OSError as exc:
            raise ScenarioError(f"{f}: {exc.strerror or exc}") from None
        out.append(parse_scenario(text, str(f)))
    return out


def run_scenario(sc: Scenario) -> tuple[KernelRun, list[Difference]]:
    kernel = run_on_kernel(sc)
    natbox = run_on_natbox(sc, kernel)
    return kernel, compare(kernel, natbox)


def cli_difftest(argv: Sequence[str]) -> int:
    args = list(argv)
    verbose = "-v" in args
    args = [a for a in args if a != "-v"]
    keep: str | None = None
    if "--keep" in args:
        i = args.index("--keep")
        if i + 1 >= len(args):
            sys.stderr.write("natbox difftest: --keep needs a directory\n" + USAGE)
            return 2
        keep = args[i + 1]
        del args[i:i + 2]
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0 if args else 2
    try:
        scenarios = load_scenarios(args)
    except ScenarioError as exc:
        sys.stderr.write(f"natbox difftest: {exc}\n")
        return 2
    why = kernel_available()
    if why is not None:
        sys.stderr.write(f"natbox difftest: cannot run on the kernel here: {why}\n")
        return 2
    cleanup_stale()  # namespaces of earlier runs that were killed (only those of dead processes)
    passed = failed = 0
    for sc in scenarios:
        t = time.monotonic()
        try:
            kernel, diffs = run_scenario(sc)
        except (KernelUnavailable, RuntimeError, OSError) as exc:
            failed += 1
            print(f"FAIL {sc.name}: the kernel run failed: {exc}")
            continue
        took = time.monotonic() - t
        if keep is not None:
            save_kernel_run(kernel, Path(keep) / sc.name)
        problems = [f"kernel run: {e}" for e in kernel.errors]
        if diffs or problems:
            failed += 1
            print(f"FAIL {sc.name} ({len(diffs)} differences, {took:.1f}s)")
            for p in problems:
                print(f"  {p}")
            for d in diffs[:MAX_DIFFS_SHOWN]:
                print("  " + str(d).replace("\n", "\n  "))
            if len(diffs) > MAX_DIFFS_SHOWN:
                print(f"  ... {len(diffs) - MAX_DIFFS_SHOWN} more")
        else:
            passed += 1
            print(f"ok   {sc.name} ({len(kernel.frames)} frames, {len(kernel.conntrack)} conntrack entries, "
                  f"{took:.1f}s)")
        if verbose:
            for line in kernel.program_output:
                print(f"  {line}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(cli_difftest(sys.argv[1:]))
