#!/usr/bin/env bash
# Set up, then run the gateway on the embedded default (config/demo.toml):
# the Red/Blue demo policy on virtual ports, DURATION seconds (default 5;
# 0 runs until Ctrl-C), then print the counters per port, worker, tenant
# (VSID) and drop reason.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
work=${NVGW_DEMO_DIR:-/tmp/nvgw-demo}
mkdir -p "$work"
.venv/bin/python scripts/demo_traffic.py "$work"
cp config/redblue-policy.json "$work/"
duration=${DURATION:-5}
cp config/demo.toml "$work/"
args=(--config "$work/demo.toml")
(( duration > 0 )) && args+=(--duration "$duration")
cd "$work"
exec "$OLDPWD/.venv/bin/nvgw-dataplane" "${args[@]}"
