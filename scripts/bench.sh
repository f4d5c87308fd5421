#!/usr/bin/env bash
# The nvgw benchmark (scripts/bench.py): testpmd io-forward and the gateway side by side,
# then the control plane. Results in $NVGW_BENCH_DIR (default /tmp/nvgw-bench):
# results.json, results.md, results.png. Arguments go to bench.py (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python scripts/bench.py "$@"
