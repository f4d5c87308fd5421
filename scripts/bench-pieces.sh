#!/usr/bin/env bash
# pytest-benchmark of the pieces (tests/bench_*.py: the per-packet C of tests/pieces.c and
# the control path's Python), kept out of the default test run. Extra arguments go to
# pytest (e.g. --benchmark-json=out.json: each C piece's cycles an operation in extra_info).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/test.sh --benchmark-only -p no:randomly tests/bench_*.py "$@"
