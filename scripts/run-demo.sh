#!/usr/bin/env bash
# Set up, then run the gateway on the embedded default (config/demo.toml):
# virtual ports, DURATION seconds (default 5; 0 runs until Ctrl-C), then
# print the counters.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
work=${NVGW_DEMO_DIR:-/tmp/nvgw-demo}
mkdir -p "$work"
.venv/bin/python scripts/demo_traffic.py "$work/demo-traffic.pcap"
duration=${DURATION:-5}
args=(--config "$PWD/config/demo.toml")
(( duration > 0 )) && args+=(--duration "$duration")
cd "$work"
exec "$OLDPWD/.venv/bin/nvgw-dataplane" "${args[@]}"
