"""`natbox difftest SCENARIO...`: run each scenario on the kernel and through natbox, and compare.

A SCENARIO is a TOML file (see `natbox.difftest.scenario`) or a directory of them. Prints a report per
scenario and closes with `N passed, N failed` (plus xfail/xpass counts for known failures).
Exit 0 if all passed, 1 if any failed, 2 on bad usage or
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
from natbox.difftest.natbox_side import natbox_run_from_live, run_on_natbox
from natbox.difftest.report import RandomSummary, ScenarioResult, write_report
from natbox.difftest.scenario import Scenario, ScenarioError, parse_scenario

__all__ = ["cli_difftest", "load_scenarios", "run_and_judge", "run_scenario"]

USAGE = """usage: natbox difftest [-v] [--keep DIR] [--report FILE] SCENARIO.toml|DIR...

  -v          also print what the programs of each scenario printed
  --live      also run each scenario with live natbox as the router in the same namespaces (natbox gateway
              --adopt) and compare that run with the kernel's too (scenarios with `ip` steps: replay only)
  --keep DIR  save each kernel run under DIR/<scenario>/ (snapshot/, in.pcapng, out.pcapng, conntrack.txt,
              iptables-save.txt): `natbox replay --host DIR/<scenario>/snapshot --in DIR/<scenario>/in.pcapng`
  --report F  write a JSON summary and a Markdown report: F.json and F.md (F's suffix picks which is F)
  --random N  also run N random scenarios (natbox.difftest.generator; --seed S, default 0); the smallest
              that differs is written to --regressions DIR (default scenarios/regressions) and fails the run

A scenario with `known_failure = "reason"` that differs is XFAIL (not a failure); one that agrees is XPASS.
The last line is `N passed, N failed` (then `, N xfail`, `, N xpass` when there are any).
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


def live_capable(sc: Scenario) -> bool:
    """Whether a live natbox run can mirror every step (`ip` commands on the router are not mirrored)."""
    return all(step.exec is None or step.exec[0] in ("iptables", "conntrack") for step in sc.steps)


def run_scenario(sc: Scenario, *, live: bool = False) -> tuple[KernelRun, list[Difference]]:
    """Run on the kernel, then compare with natbox replaying the kernel router's inputs; with `live`, also
    run the same namespaces with live natbox as the router (`gateway --adopt`) and compare that too."""
    kernel = run_on_kernel(sc)
    diffs = compare(kernel, run_on_natbox(sc, kernel))
    if live:
        live_run = run_on_kernel(sc, natbox_router=True)
        diffs += [Difference(d.kind, f"live {d.where}", d.kernel, d.natbox, d.detail)
                  for d in compare(kernel, natbox_run_from_live(live_run), live=True)]
    return kernel, diffs


def _take(args: list[str], flag: str) -> str | None:
    """Remove `flag VALUE` from args; returns VALUE (None if absent). Raises ValueError if VALUE is missing."""
    if flag not in args:
        return None
    i = args.index(flag)
    if i + 1 >= len(args):
        raise ValueError(f"{flag} needs a value")
    value = args[i + 1]
    del args[i:i + 2]
    return value


def run_and_judge(sc: Scenario, keep: str | None = None, *, live: bool = False
                  ) -> tuple[ScenarioResult, KernelRun | None]:
    """Run one scenario on both sides and classify it (pass / fail / xfail / xpass)."""
    t = time.monotonic()
    try:
        kernel, diffs = run_scenario(sc, live=live and live_capable(sc))
    except (KernelUnavailable, RuntimeError, OSError) as exc:
        res = ScenarioResult(sc.name, sc.origin, sc.description, "fail", time.monotonic() - t,
                             problems=[f"the kernel run failed: {exc}"], reason=sc.known_failure or "")
        return res, None
    took = time.monotonic() - t
    if keep is not None:
        save_kernel_run(kernel, Path(keep) / sc.name)
    problems = [f"kernel run: {e}" for e in kernel.errors]
    bad = bool(diffs or problems)
    if sc.known_failure is not None:
        status = "xfail" if bad else "xpass"
    else:
        status = "fail" if bad else "pass"
    res = ScenarioResult(sc.name, sc.origin, sc.description, status, took, len(kernel.frames),
                         len(kernel.conntrack), diffs, problems, sc.known_failure or "")
    return res, kernel


def _print_result(r: ScenarioResult, kernel: KernelRun | None, verbose: bool) -> None:
    if r.status == "pass":
        print(f"ok   {r.name} ({r.frames} frames, {r.conntrack} conntrack entries, {r.seconds:.1f}s)")
    elif r.status == "xpass":
        print(f"XPASS {r.name} ({r.seconds:.1f}s): agrees now; remove known_failure ({r.reason})")
    else:
        head = "XFAIL" if r.status == "xfail" else "FAIL"
        print(f"{head} {r.name} ({len(r.differences)} differences, {r.seconds:.1f}s)"
              + (f": known failure: {r.reason}" if r.status == "xfail" else ""))
        for p in r.problems:
            print(f"  {p}")
        for d in r.differences[:MAX_DIFFS_SHOWN]:
            print("  " + str(d).replace("\n", "\n  "))
        if len(r.differences) > MAX_DIFFS_SHOWN:
            print(f"  ... {len(r.differences) - MAX_DIFFS_SHOWN} more")
    if verbose and kernel is not None:
        for line in kernel.program_output:
            print(f"  {line}")


def cli_difftest(argv: Sequence[str]) -> int:
    args = list(argv)
    verbose = "-v" in args
    args = [a for a in args if a != "-v"]
    try:
        keep = _take(args, "--keep")
        live = "--live" in args
        if live:
            args.remove("--live")
        report = _take(args, "--report")
        random_n = _take(args, "--random")
        seed = int(_take(args, "--seed") or "0")
        regressions = _take(args, "--regressions") or "scenarios/regressions"
        examples = int(random_n) if random_n is not None else 0
    except ValueError as exc:
        sys.stderr.write(f"natbox difftest: {exc}\n" + USAGE)
        return 2
    if (not args and not examples) or (args and args[0] in ("-h", "--help")):
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
    results: list[ScenarioResult] = []
    for sc in scenarios:
        res, kernel = run_and_judge(sc, keep, live=live)
        results.append(res)
        _print_result(res, kernel, verbose)
    rand = _run_random(examples, seed, regressions) if examples else None
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "xfail", "xpass")}
    tail = "".join(f", {counts[s]} {s}" for s in ("xfail", "xpass") if counts[s])
    if rand is not None:
        tail += f"; random: {rand.cases} runs, {rand.differing} differing"
    print(f"{counts['pass'] + counts['xpass']} passed, {counts['fail']} failed{tail}")
    if report is not None:
        jpath, mpath = write_report(results, report, rand)
        print(f"report: {jpath} {mpath}")
    return 0 if counts["fail"] == 0 and (rand is None or not rand.differing) else 1


def _run_random(examples: int, seed: int, regressions: str) -> RandomSummary:
    from natbox.difftest.generator import explore

    seen = [0, 0]

    def on_case(_text: str, diffs: list[Difference]) -> None:
        seen[0] += 1
        seen[1] += bool(diffs)

    t = time.monotonic()
    found = explore(examples, seed=seed, out_dir=regressions, on_case=on_case)
    took = time.monotonic() - t
    summary = RandomSummary(seen[0], examples, seed, took, seen[1])
    if found is not None:
        summary.regression, summary.reproduced = str(found.path), found.reproduced
        print(f"RANDOM differs: smallest case written to {found.path}")
        for d in found.differences[:MAX_DIFFS_SHOWN]:
            print("  " + str(d).replace("\n", "\n  "))
    else:
        print(f"ok   random: {examples} examples agree ({took:.1f}s)")
    return summary


if __name__ == "__main__":
    sys.exit(cli_difftest(sys.argv[1:]))
