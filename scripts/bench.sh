#!/usr/bin/env bash
# The nvgw benchmark (scripts/bench.py): testpmd io-forward and the gateway side by side,
# then the control plane. Results in $NVGW_BENCH_DIR (default /tmp/nvgw-bench):
# results.json, results.md, results.png. Arguments go to bench.py (--help).
# Reserves NVGW_HUGEPAGES 2 MB hugepages first (default 1100: one 2048 MB EAL at a
# time, testpmd or the gateway, as a production box runs); NVGW_HUGEPAGES=0 and
# --memory no-huge measure without them.
set -euo pipefail
cd "$(dirname "$0")/.."
NVGW_HUGEPAGES=${NVGW_HUGEPAGES:-1100} scripts/bootstrap.sh
exec .venv/bin/python scripts/bench.py "$@"
