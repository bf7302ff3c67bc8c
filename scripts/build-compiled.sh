#!/usr/bin/env bash
# Build natbox with its sans-IO core compiled by mypyc and install it into a virtual environment.
#
#   scripts/build-compiled.sh VENV [--test]
#
# The same build as `NATBOX_COMPILE=1 pip install .` (setup.py, scripts/build_backend.py), into VENV (created
# when missing), on a copy of the tree in a temporary directory, so no build/ or .so file lands in the
# checkout. --test also installs pytest and hypothesis so the suite can run against the build (.ci/compiled):
#   cd /tmp && PYTHONPATH= VENV/bin/python -m pytest -p no:cacheprovider REPO/tests --ignore=REPO/tests/live ...
# PYTHONPATH must not point at src/. `natbox --version` and `natbox bench` say which build runs. About 7
# minutes of CPU on 2 cores: one ~1M-line C file.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 VENV [--test]" >&2; exit 2; }
venv=$1
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --disable-pip-version-check mypy 'setuptools>=77' wheel
[ "${2:-}" = "--test" ] && "$py" -m pip install -q --disable-pip-version-check pytest hypothesis
(cd "$root" && tar cf - --exclude=__pycache__ --exclude='*.so' src scenarios README.md pyproject.toml setup.py \
    MANIFEST.in scripts/build_backend.py) | tar xf - -C "$work"
(cd "$work" && PYTHONPATH= NATBOX_COMPILE=1 "$py" -m pip wheel -q --disable-pip-version-check \
    --no-build-isolation --no-deps -w "$work/dist" .)
"$py" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$work"/dist/natbox-*.whl
PYTHONPATH= "$py" -c 'import natbox.engine.engine as e; assert e.__file__.endswith(".so"), e.__file__; print("natbox compiled:", e.__file__)'
