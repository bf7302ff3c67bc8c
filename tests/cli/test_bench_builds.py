"""The two builds (natbox.cli.builds): which one runs, forcing the pure one, `natbox bench builds`, --version.

Run by the pure pass and by .ci/compiled's pass against the compiled build: each test checks the build the
test process itself runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from tests.cli.test_cli_errors import natbox

from natbox.cli.builds import COMPILED, PURE, build_name, is_compiled
from natbox.testing.paths import IMPORT_ROOT, REPO

SLOWPATH = str(REPO / "bench" / "slowpath_bench.py")
SMALL = ("--packets", "4000", "--flows", "20", "--conns", "20", "--repeat", "1", "--slowpath", SLOWPATH)


def _python(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(IMPORT_ROOT))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_build_name_is_the_engine_module_this_process_imported() -> None:
    from natbox.engine import engine

    assert build_name() == (PURE if engine.__file__.endswith(".py") else COMPILED)
    assert is_compiled() == (build_name() == COMPILED)


def test_force_pure_loads_every_core_module_from_its_py_file() -> None:
    out = _python("from natbox.cli.builds import build_name, force_pure\n"
                  "force_pure()\n"
                  "import sys, natbox.engine.engine, natbox.rules.evaluate, natbox.conntrack.table\n"
                  "mods = [m for n, m in sys.modules.items() if n.startswith('natbox.')]\n"
                  "print(build_name(), sorted({m.__file__.rsplit('.', 1)[-1] for m in mods if m.__file__}))\n")
    assert out == f"{PURE} ['py']\n"


@pytest.mark.skipif(is_compiled(), reason="this interpreter is the compiled build: the next test")
def test_bench_builds_pure_column_and_the_missing_compiled_build_named() -> None:
    res = natbox("bench", "builds", *SMALL)
    assert res.returncode == 0, res.stderr
    row = re.search(r"established TCP\+UDP, per packet +(\d+\.\d+) +- +-", res.stdout)
    assert row and float(row.group(1)) > 0, res.stdout
    assert "slowpath gateway, TCP connection" in res.stdout and "no compiled build: give --compiled" in res.stdout
    res = natbox("bench", "builds", *SMALL, "--compiled", "/nonexistent/venv")
    assert res.returncode == 2 and res.stderr == "natbox bench builds: no python at /nonexistent/venv\n", res


@pytest.mark.skipif(not is_compiled(), reason="needs the compiled build (.ci/compiled runs it against one)")
def test_bench_builds_both_columns_with_the_compiled_build() -> None:
    res = natbox("bench", "builds", *SMALL)
    assert res.returncode == 0, res.stderr
    for label in ("established TCP+UDP, per packet", "slowpath gateway, TCP connection (7 packets)",
                  "slowpath gateway, UDP flow (2 packets)", "slowpath docker-in, TCP connection"):
        row = re.search(re.escape(label) + r" +(\d+\.\d+) +(\d+\.\d+) +(\d+\.\d+)×", res.stdout)
        assert row, (label, res.stdout)
        pure, fast, ratio = (float(x) for x in row.groups())
        assert pure > 0 and fast > 0 and abs(ratio - pure / fast) < 0.01, row.group(0)
