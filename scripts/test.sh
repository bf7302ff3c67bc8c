#!/usr/bin/env bash
# The whole test suite: lint, types, tests. This is the command README.md and CI run.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff"
python3 -m ruff check src tests bench
echo "== mypy --strict"
python3 -m mypy --strict
echo "== pytest"
python3 -m pytest "$@"
