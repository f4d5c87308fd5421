#!/usr/bin/env bash
# Install what nvgw needs on a fresh Debian 12 machine (run as root), then
# build the extension. Idempotent, and quiet when there is nothing to do.
# The project lives in a virtual environment at .venv (Debian's Python
# refuses system-wide pip installs).
set -euo pipefail
cd "$(dirname "$0")/.."
# One bootstrap at a time: concurrent pip installs into .venv collide.
exec 9>>/tmp/nvgw-bootstrap.lock
flock 9

APT_PACKAGES=(dpdk dpdk-dev libdpdk-dev pkg-config gcc python3-venv python3-dev iproute2 clang libclang-rt-14-dev)
# A machine just booted may be running its daily apt jobs: wait for the dpkg lock
# instead of failing at once, and retry a download that fails.
APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=5)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get "${APT_OPTS[@]}" update -qq
    apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The lab (scripts/lab.sh, the demo's first choice) also needs these; without them the
# demo says so and runs on virtual ports, so a failure here is a warning.
LAB_PACKAGES=(user-mode-linux iputils-ping ethtool procps)
missing=()
for p in "${LAB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing ${missing[*]} (for the lab)"
    export DEBIAN_FRONTEND=noninteractive
    log=$(mktemp)
    { apt-get "${APT_OPTS[@]}" update -qq &&
      apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1 ||
        { cat "$log" >&2
          echo "bootstrap: warning: could not install ${missing[*]}; the lab will not run" >&2; }
    rm -f "$log"
fi

PY=${PYTHON:-python3}
stamp=.venv/.nvgw-installed
if [[ ! -x .venv/bin/python ]]; then
    echo "bootstrap: creating .venv"
    "$PY" -m venv .venv
fi
if [[ ! -f $stamp || setup.py -nt $stamp || pyproject.toml -nt $stamp ]]; then
    echo "bootstrap: installing nvgw and its test extras into .venv"
    log=$(mktemp)
    # The build tools' majors this was tested with (a new major may change the build)
    if ! { .venv/bin/python -m pip install -q --disable-pip-version-check -U pip \
               "setuptools<85" wheel "Cython>=3,<4" &&
           .venv/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation -e '.[test]'; } >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"; exit 1
    fi
    rm -f "$log"
    touch "$stamp"
fi
# Incremental: rebuilds only what changed in dataplane/ and cext/.
# (grep's own status is dropped, the build's is not: pipefail stops the script)
.venv/bin/python setup.py -q build_ext --inplace 2>&1 | { grep -v "^Compiling\|^\[" || true; }

# Hugepages only when asked (NVGW_HUGEPAGES=count of 2 MB pages): without
# them the gateway runs with --no-huge, which the tests use.
if [[ -n ${NVGW_HUGEPAGES:-} ]]; then
    nr=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
    (( $(cat $nr) >= NVGW_HUGEPAGES )) || echo "$NVGW_HUGEPAGES" > $nr
    grep -qs hugetlbfs /proc/mounts || { mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages; }
fi
