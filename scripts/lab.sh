#!/usr/bin/env bash
# The nvgw lab: scripts/lab.sh up|demo|down|check (see scripts/lab.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python scripts/lab.py "$@"
