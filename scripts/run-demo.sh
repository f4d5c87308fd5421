#!/usr/bin/env bash
# Set up, then run the demo: the article's Red/Blue example.
#
# First choice, the lab (scripts/lab.py): the gateway on af_packet ports between two
# real Linux NVGRE hosts (user-mode-linux guests with gretap) and the tenants'
# on-premises hosts on VLANs, policy through nvgw-mgmt; it pings and moves 10 MB each
# way per tenant, tries the forbidden paths, live-migrates Red's VM during a transfer,
# prints who reached whom and the counters per tenant, and tears everything down.
#
# Where the lab cannot start (not root, no network namespaces, user-mode-linux not
# installed, ...) it says why and runs the embedded default (config/demo.toml) on
# virtual ports instead: DURATION seconds (default 5; 0 runs until Ctrl-C), then the
# counters per port, worker, tenant (VSID) and drop reason. NVGW_DEMO=virtual skips
# the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if [[ ${NVGW_DEMO:-lab} != virtual ]]; then
    if why=$(.venv/bin/python scripts/lab.py check 2>&1); then
        set +e
        .venv/bin/python scripts/lab.py demo --dir "${NVGW_LAB_DIR:-/tmp/nvgw-lab-demo}" --tag demo
        rc=$?
        set -e
        (( rc != 2 )) && exit $rc          # 2: the lab could not start; fall back
        echo "run-demo: the lab could not start (above); running on virtual ports instead"
    else
        echo "run-demo: the lab cannot run here: $why"
        echo "run-demo: running the embedded default on virtual ports instead"
    fi
fi
work=${NVGW_DEMO_DIR:-/tmp/nvgw-demo}
mkdir -p "$work"
.venv/bin/python scripts/demo_traffic.py "$work"
cp config/redblue-policy.json "$work/"
duration=${DURATION:-5}
cp config/demo.toml "$work/"
args=(--config "$work/demo.toml")
[[ $duration != 0 ]] && args+=(--duration "$duration")    # seconds, 2.5 too
cd "$work"
exec "$OLDPWD/.venv/bin/nvgw-dataplane" "${args[@]}"
