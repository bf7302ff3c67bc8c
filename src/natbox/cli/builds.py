"""The two builds of natbox's core, pure Python and compiled (mypyc), and `natbox bench builds`.

`NATBOX_COMPILE=1 pip install .` (setup.py) compiles the sans-IO core into C extensions that sit beside the
.py files of the installed package; Python's import system prefers the extension. `build_name()` says which
one this process runs. `force_pure()` puts a finder first on `sys.meta_path` that loads natbox's modules
from their .py files only, so one compiled install measures both builds.

`natbox bench builds` runs the same workloads in one process per build and run, alternating, and prints
the median of each with the ratio (pure time / compiled time: how many times faster the compiled build is):
- established TCP+UDP flows through `natbox bench`'s MASQUERADE gateway (µs per packet);
- bench/slowpath_bench.py's `gateway` scenario (a TCP connection's 7 packets, a UDP flow's 2) and
  `docker-in` (a TCP connection to a published port), when the checkout's bench/ is there.
The pure side is this interpreter with `force_pure()`; the compiled side is `--compiled PYTHON` (a venv
or its python, e.g. scripts/build-compiled.sh's), else $NATBOX_COMPILED, else this interpreter when its
natbox is compiled.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["build_name", "builds_main", "force_pure", "is_compiled"]

PURE, COMPILED = "pure Python", "compiled (mypyc)"
_PROBE = "natbox.engine.engine"  # a module every compiled build compiles


def is_compiled() -> bool:
    """Whether this process's natbox core is the compiled build (found without importing it)."""
    spec = importlib.util.find_spec(_PROBE)
    return spec is not None and spec.origin is not None and not spec.origin.endswith(".py")


def build_name() -> str:
    """Which build of the core is running: the mypyc extensions or the .py files."""
    return COMPILED if is_compiled() else PURE


class _SourceOnly(importlib.abc.MetaPathFinder):
    """Finds natbox's submodules among .py files only (never a compiled extension beside them)."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("natbox.") or path is None:
            return None
        details = (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, details).find_spec(fullname, target)
            if spec is not None:
                return spec
        return None


def force_pure() -> None:
    """Load natbox's core from its .py files from now on. Call it before anything imports the core."""
    if not any(isinstance(f, _SourceOnly) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceOnly())


# --- one measurement (run in a child process per build) --------------------------------------------------


def _slowpath_module(path: str) -> ModuleType:
    os.environ["NATBOX_INSTALLED"] = "1"  # the bench must measure the natbox this process imports, not src/
    spec = importlib.util.spec_from_file_location("natbox_slowpath_bench", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"natbox bench builds: cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    return mod


def measure(packets: int, flows: int, conns: int, slowpath: str) -> dict[str, object]:
    """One run of the workloads in this process: µs per packet, per connection and per UDP flow."""
    from natbox.cli import bench

    engine, work = bench._workload(flows, packets)
    secs, _sent = bench._run_engine(engine, work)
    out: dict[str, object] = {"build": build_name(), "established": secs / packets * 1e6}
    if slowpath:
        sb = _slowpath_module(slowpath)
        for sc in sb.SCENARIOS:
            if sc.name not in ("gateway", "docker-in"):
                continue
            tf, uf = sb.run_scenario(sc, conns, conns if sc.name == "gateway" else 0, None)
            out[f"{sc.name} tcp"] = sum(tf.us(k) for k in sb.KINDS)
            if uf.count:
                out[f"{sc.name} udp"] = sum(uf.us(k) for k in sb.UDP_KINDS)
    return out


def _child(argv: Sequence[str]) -> int:
    """`python -m natbox.cli.builds --measure PURE|AS-IS PACKETS FLOWS CONNS SLOWPATH`: one JSON line."""
    mode, packets, flows, conns, slowpath = argv
    if mode == "pure":
        force_pure()
    print(json.dumps(measure(int(packets), int(flows), int(conns), slowpath)))
    return 0


# --- natbox bench builds ------------------------------------------------------------------------------------


_ROWS = (("established", "established TCP+UDP, per packet"),
         ("gateway tcp", "slowpath gateway, TCP connection (7 packets)"),
         ("gateway udp", "slowpath gateway, UDP flow (2 packets)"),
         ("docker-in tcp", "slowpath docker-in, TCP connection"))


def _compiled_python(given: str) -> str | None:
    """The interpreter of the compiled build: given (a venv or a python), $NATBOX_COMPILED, or this one."""
    given = given or os.environ.get("NATBOX_COMPILED", "")
    if given:
        p = Path(given)
        return str(p / "bin" / "python") if p.is_dir() else str(p)
    return sys.executable if is_compiled() else None


def _slowpath_file(given: str) -> str:
    """bench/slowpath_bench.py of the checkout: given, in the working directory, or beside src/ (editable)."""
    import natbox

    here = Path(natbox.__file__).resolve().parents[2]  # the checkout, for an editable install
    candidates = [Path(given)] if given else [Path("bench/slowpath_bench.py"), here / "bench" / "slowpath_bench.py"]
    return next((str(c.resolve()) for c in candidates if c.is_file()), "")


def _run_child(python: str, pure: bool, args: argparse.Namespace, slowpath: str) -> dict[str, object]:
    env = dict(os.environ)
    if not pure:
        env.pop("PYTHONPATH", None)  # another install's interpreter: its own natbox, not this src/
    cmd = [python, "-m", "natbox.cli.builds", "--measure", "pure" if pure else "as-is", str(args.packets),
           str(args.flows), str(args.conns), slowpath]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"natbox bench builds: {python} failed: {tail}")
    data = json.loads(res.stdout.strip().splitlines()[-1])
    if not isinstance(data, dict):
        raise SystemExit(f"natbox bench builds: {python} printed no figures")
    return data


def builds_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="natbox bench builds",
                                description="The same workloads in the pure and the compiled build, side by side.")
    p.add_argument("--compiled", default="", metavar="VENV|PYTHON",
                   help="the compiled build's venv or python (default $NATBOX_COMPILED, or this one if compiled)")
    p.add_argument("--packets", type=int, default=200_000, help="established packets per run (default 200,000)")
    p.add_argument("--flows", type=int, default=1000, help="TCP flows and as many UDP flows (default 1000)")
    p.add_argument("--conns", type=int, default=1000,
                   help="slowpath TCP connections and UDP flows per scenario and run (default 1000)")
    p.add_argument("--repeat", type=int, default=3, help="runs per build, alternating; medians (default 3)")
    p.add_argument("--slowpath", default="", metavar="FILE", help="bench/slowpath_bench.py (default: the checkout's)")
    args = p.parse_args(list(argv))
    compiled = _compiled_python(args.compiled)
    if compiled is not None and not Path(compiled).is_file():
        sys.stderr.write(f"natbox bench builds: no python at {compiled}\n")
        return 2
    slowpath = _slowpath_file(args.slowpath)
    print(f"natbox bench builds: {args.packets:,} established packets over {args.flows} + {args.flows} flows; "
          f"slowpath {args.conns:,} connections/flows per scenario; medians of {args.repeat}, alternating")
    if not slowpath:
        print("  (bench/slowpath_bench.py not found: run from the checkout or give --slowpath; established only)")
    runs: dict[str, list[dict[str, object]]] = {PURE: [], COMPILED: []}
    for _ in range(max(1, args.repeat)):
        runs[PURE].append(_run_child(sys.executable, True, args, slowpath))
        if compiled is not None:
            got = _run_child(compiled, False, args, slowpath)
            if got.get("build") != COMPILED:
                sys.stderr.write(f"natbox bench builds: {compiled} runs the {got.get('build')} build, not the "
                                 "compiled one\n")
                return 2
            runs[COMPILED].append(got)
    print(f"  {'µs':<46} {PURE:>12} {COMPILED:>17} {'speed-up':>9}")
    for key, label in _ROWS:
        pure = [float(str(r[key])) for r in runs[PURE] if key in r]
        if not pure:
            continue
        fast = [float(str(r[key])) for r in runs[COMPILED] if key in r]
        pm = statistics.median(pure)
        if fast:
            fm = statistics.median(fast)
            print(f"  {label:<46} {pm:12.2f} {fm:17.2f} {pm / fm:8.2f}×")
        else:
            print(f"  {label:<46} {pm:12.2f} {'-':>17} {'-':>9}")
    if compiled is None:
        print("  no compiled build: give --compiled VENV (scripts/build-compiled.sh VENV, or a venv where "
              "`NATBOX_COMPILE=1 pip install .` ran) or set NATBOX_COMPILED")
    else:
        print(f"  compiled build: {compiled}   (aim: speed-up >= 1.5 on established flows and the slow path)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--measure":
        sys.exit(_child(sys.argv[2:]))
    sys.exit(builds_main(sys.argv[1:]))
