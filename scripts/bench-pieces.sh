#!/usr/bin/env bash
# pytest-benchmark of the control path's Python pieces (tests/bench_*.py), kept out of the
# default test run. Extra arguments go to pytest (e.g. --benchmark-json=out.json).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/test.sh --benchmark-only -p no:randomly tests/bench_*.py "$@"
