#!/usr/bin/env bash
# The whole test suite: lint, types, tests. This is the command README.md and CI run.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff"
python3 -m ruff check src tests $( [ -d bench ] && echo bench )
echo "== mypy --strict"
python3 -m mypy --strict src/natbox
# Each test directory is checked on its own: several have a conftest.py (module names would clash).
python3 -m mypy --strict tests/*.py $(find bench -name '*.py' 2>/dev/null)
for d in tests/*/; do
    python3 -m mypy --strict "$d"
done
echo "== pytest"
python3 -m pytest "$@"
