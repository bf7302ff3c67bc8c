#!/usr/bin/env bash
# The whole test suite: lint, types, tests. This is the command README.md and CI run.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff"
python3 -m ruff check src tests $( [ -d bench ] && echo bench )
echo "== mypy --strict"
python3 -m mypy --strict src/natbox
# The tests and benchmarks as one program: their shared helpers are the natbox.testing package, so no folder
# is put on sys.path and module names (tests.replay.test_scenario, ...) come from the paths.
python3 -m mypy --strict --explicit-package-bases tests $(find bench -name '*.py' 2>/dev/null)
echo "== pytest"
python3 -m pytest "$@"
