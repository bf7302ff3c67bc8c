"""`natbox difftest SCENARIO...`: run each scenario on the kernel and through natbox, and compare.

A SCENARIO is a TOML file (see `natbox.difftest.scenario`) or a directory of them. Prints a report per
scenario and closes with `N passed, N failed` (plus xfail/xpass counts for known failures).
Exit 0 if all passed, 1 if any failed, 2 on bad usage or
when the kernel side cannot run here (not root, no `ip netns`).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from natbox.cli.common import parse, parser
from natbox.conntrack.format import parse_conntrack_line
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
from natbox.errors import NatboxError
from natbox.files import check_parent_dir, read_text

__all__ = ["build_parser", "cli_difftest", "load_scenarios", "run_and_judge", "run_scenario"]

DESCRIPTION = """\
Run each scenario on the Linux kernel (network namespaces: root) and through natbox, and compare what
the router did: every frame it sent, its conntrack table, its rule counters. A SCENARIO is a TOML file
(natbox.difftest.scenario; see scenarios/README.md) or a directory of them."""
EPILOG = """\
Each scenario prints `ok NAME` or `FAIL NAME` with its differences. A scenario with
`known_failure = "reason"` that differs is XFAIL (not a failure); one that agrees is XPASS. The last line
is `N passed, N failed` (then `, N xfail`, `, N xpass` when there are any).

--random N runs N random scenarios (natbox.difftest.generator, seeded by --seed); the smallest one that
differs is written to --regressions DIR and fails the run.

exit status: 0 all agreed; 1 a scenario differed; 2 bad usage, a scenario file that cannot be used, no
scenario given or found, or the kernel side cannot run here (not root, no `ip netns`, no iptables).

example: natbox difftest scenarios/   |   natbox difftest --report out/difftest.md scenarios/snat-*.toml"""
USAGE = ("usage: natbox difftest [-v] [--live [--offload]] [--keep DIR] [--report FILE] [--random N] "
         "SCENARIO.toml|DIR...\n")
MAX_DIFFS_SHOWN = 20  # per scenario in the report


def load_scenarios(paths: Sequence[str]) -> list[Scenario]:
    """The scenarios of the files and directories (their *.toml) named; ScenarioError (one line naming
    the file) for a file that cannot be read or used, or a directory without scenarios."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.glob("*.toml") if f.is_file())
            if not found:
                raise ScenarioError(f"{p}: no scenario files (*.toml) in this directory")
            files.extend(found)
        else:
            files.append(p)
    return [parse_scenario(read_text(f, error=ScenarioError), str(f)) for f in files]


def live_capable(sc: Scenario) -> bool:
    """Whether a live natbox run can mirror every step (of the `ip` commands on the router, only `ip addr`
    ones are: the gateway's control socket changes its addresses; `ip link` is not mirrored) and be
    compared with a separate kernel run: not when the rules draw random numbers (`-m statistic --mode
    random`), whose outcomes only the replay can make follow the kernel's (natbox.difftest.draws), nor when the
    router has a bridge (the gateway opens packet sockets on devices; the kernel's bridge would still own the
    ports' frames)."""
    if "--mode random" in sc.rules:
        return False
    if sc.bridges:  # the live gateway cannot own bridge ports: the kernel's bridge would forward their frames
        return False
    return all(step.exec is None or step.exec[0] in ("iptables", "ip6tables", "conntrack")
               or list(step.exec[:2]) == ["ip", "addr"] for step in sc.steps)


def run_scenario(sc: Scenario, *, live: bool = False, offload: bool = False) -> tuple[KernelRun, list[Difference]]:
    """Run on the kernel, then compare with natbox replaying the kernel router's inputs; with `live`, also
    run the same namespaces with live natbox as the router (`gateway --adopt`, with `offload`: `--offload`)
    and compare that too."""
    kernel = run_on_kernel(sc)
    diffs = compare(kernel, run_on_natbox(sc, kernel))
    if live:
        live_run = run_on_kernel(sc, natbox_router=True, gateway_args=("--offload",) if offload else ())
        diffs += [Difference(d.kind, f"live {d.where}", d.kernel, d.natbox, d.detail)
                  for d in compare(kernel, natbox_run_from_live(live_run, kernel), live=True)
                  if not (offload and offload_documented(d))]
    return kernel, diffs


_COUNTED = re.compile(r"^\[(\d+):(\d+)\] (.*)$")  # a rule: [packets:bytes] -A ...
_POLICY = re.compile(r"^(:\S+ \S+) \[(\d+):(\d+)\]$")  # a built-in chain: :NAME POLICY [packets:bytes]


def offload_documented(d: Difference) -> bool:
    """Whether a live --offload difference is one docs/differences.md lists for offloaded flows: an iptables
    counter that did not see the packets the datapath carried (fewer, the rule the same), or a conntrack entry
    listed as ctnetlink lists an offloaded one (no timeout, no state, [OFFLOAD], use=2) for the same tuples."""
    if d.kind == "counters":
        k, n = _COUNTED.match(d.kernel), _COUNTED.match(d.natbox)
        if k and n:
            return k.group(3) == n.group(3) and int(n.group(1)) <= int(k.group(1))
        k, n = _POLICY.match(d.kernel), _POLICY.match(d.natbox)
        return bool(k and n and k.group(1) == n.group(1) and int(n.group(2)) <= int(k.group(2)))
    if d.kind != "conntrack" or "[OFFLOAD]" not in d.natbox or d.kernel == "(no entry)":
        return False
    try:
        k_ct, n_ct = parse_conntrack_line(d.kernel), parse_conntrack_line(d.natbox)
    except ValueError:
        return False
    same = ("src", "dst", "dport")  # the NAT'd source port of a reply may be natbox's own random choice
    return (k_ct["proto"] == n_ct["proto"] and all(k_ct["orig"].get(f) == n_ct["orig"].get(f) for f in same)
            and all(k_ct["reply"].get(f) == n_ct["reply"].get(f) for f in ("src", "dst", "sport"))
            and n_ct["timeout"] is None and n_ct["state"] is None)


def run_and_judge(sc: Scenario, keep: str | None = None, *, live: bool = False, offload: bool = False
                  ) -> tuple[ScenarioResult, KernelRun | None]:
    """Run one scenario on both sides and classify it (pass / fail / xfail / xpass)."""
    t = time.monotonic()
    try:
        kernel, diffs = run_scenario(sc, live=live and live_capable(sc), offload=offload)
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


def build_parser() -> argparse.ArgumentParser:
    p = parser("natbox difftest", DESCRIPTION, EPILOG)
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="a scenario file (TOML) or a directory of them")
    p.add_argument("-v", "--verbose", action="store_true", help="also print what the programs of each scenario printed")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only the scenarios that did not agree (FAIL, XFAIL, XPASS) and the last line")
    p.add_argument("--live", action="store_true",
                   help="also run each scenario with live natbox as the router in the same namespaces (natbox "
                        "gateway --adopt) and compare that run with the kernel's too (scenarios with `ip` steps or "
                        "`-m statistic --mode random` rules: replay only)")
    p.add_argument("--offload", action="store_true",
                   help="with --live: run the live natbox with --offload (docs/differences.md lists what differs)")
    p.add_argument("--keep", metavar="DIR",
                   help="save each kernel run under DIR/<scenario>/ (snapshot/, in.pcapng, out.pcapng, "
                        "conntrack.txt, iptables-save.txt): then `natbox replay --host DIR/<scenario>/snapshot "
                        "--in DIR/<scenario>/in.pcapng` replays it")
    p.add_argument("--report", metavar="FILE",
                   help="write a JSON summary and a Markdown report: FILE.json and FILE.md (FILE's suffix picks "
                        "which one is FILE); its directory must exist")
    p.add_argument("--random", type=int, default=0, metavar="N", help="also run N random scenarios")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the random scenarios (default 0)")
    p.add_argument("--regressions", default="scenarios/regressions", metavar="DIR",
                   help="where the smallest differing random scenario is written (default scenarios/regressions)")
    return p


def cli_difftest(argv: Sequence[str]) -> int:
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    if not args.scenarios and not args.random:
        sys.stderr.write("natbox difftest: no scenario given (a file or a directory; try scenarios/)\n" + USAGE)
        return 2
    keep: str | None = args.keep
    report: str | None = args.report
    live: bool = args.live
    offload: bool = args.offload
    if offload and not live:
        sys.stderr.write("natbox difftest: --offload needs --live\n" + USAGE)
        return 2
    try:
        if report is not None:
            check_parent_dir(report, "--report")
        if keep is not None:
            check_parent_dir(keep.rstrip("/") or "/", "--keep")
        scenarios = load_scenarios(args.scenarios)
    except NatboxError as exc:
        sys.stderr.write(f"natbox difftest: {exc}\n")
        return 2
    examples: int = args.random
    seed: int = args.seed
    regressions: str = args.regressions
    verbose: bool = args.verbose
    why = kernel_available()
    if why is not None:
        sys.stderr.write(f"natbox difftest: cannot run on the kernel here: {why}\n")
        return 2
    cleanup_stale()  # namespaces of earlier runs that were killed (only those of dead processes)
    results: list[ScenarioResult] = []
    for sc in scenarios:
        res, kernel = run_and_judge(sc, keep, live=live, offload=offload)
        results.append(res)
        if not (args.quiet and res.status == "pass"):
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
