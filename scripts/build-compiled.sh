#!/usr/bin/env bash
# Build natbox with its sans-IO core compiled by mypyc and install it into a virtual environment.
#
#   scripts/build-compiled.sh VENV [--test]
#
# VENV is created when missing (python3 -m venv). The build runs on a copy of the tree in a temporary
# directory through scripts/setup_compiled.py, so no .so file ever lands in src/ (it would shadow the .py files
# of the editable install). --test also installs pytest and hypothesis so the suite can run against the build:
#   cd /tmp && VENV/bin/python -m pytest -p no:cacheprovider REPO/tests --ignore=REPO/tests/live ...
# with PYTHONPATH unset (it must not point at src/). `natbox bench` prints which build it runs.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 VENV [--test]" >&2; exit 2; }
venv=$1
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q mypy setuptools wheel
[ "${2:-}" = "--test" ] && "$py" -m pip install -q pytest hypothesis
cp -r "$root/src" "$root/README.md" "$work/"
cp "$root/pyproject.toml" "$work/project.toml"  # the project table only: setup.py, not hatchling, builds this
cp "$root/scripts/setup_compiled.py" "$work/setup.py"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
(cd "$work" && PYTHONPATH= "$py" -m pip wheel -q --no-build-isolation --no-deps -w "$work/dist" .)
"$py" -m pip install -q --force-reinstall --no-deps "$work"/dist/natbox-*.whl
PYTHONPATH= "$py" -c 'import natbox.engine.engine as e; assert e.__file__.endswith(".so"), e.__file__; print("natbox compiled:", e.__file__)'
