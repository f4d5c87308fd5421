#!/usr/bin/env bash
# Build and run the packet-path fuzzer (libFuzzer, ASan + UBSan).
#   scripts/fuzz.sh [SECONDS]     run for SECONDS (default 600), then report
# Findings are copied to tests/fuzz/regressions/ (replayed by the test suite).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
out=${NVGW_FUZZ_DIR:-/tmp/nvgw-fuzz}
mkdir -p "$out/corpus" "$out/findings"
bin=$out/fuzz_packet
# Instrument our C only; DPDK comes from Debian's shared libraries.
sources=(tests/fuzz/fuzz_packet.c cext/nvgre.c cext/exc.c cext/tables.c cext/rewrite.c
         cext/worker.c cext/drops.c cext/fwd.c)
if [[ ! -x $bin ]] || [[ -n $(find "${sources[@]}" cext/*.h cext/*.def -newer "$bin") ]]; then
    clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -Icext $(pkg-config --cflags libdpdk) "${sources[@]}" \
        $(pkg-config --libs libdpdk) -lrte_net_ring -o "$bin"
fi
.venv/bin/python tests/fuzz/make_corpus.py "$out/corpus"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
"$bin" -max_total_time="$seconds" -max_len=1600 -print_final_stats=1 \
    -artifact_prefix="$out/findings/" "$out/corpus" tests/fuzz/seeds 2>&1 | tail -25
# crash-, leak-, timeout- and oom- inputs are findings; slow-unit- ones only
# mean the machine was busy (each is replayed at normal speed elsewhere).
found=$(find "$out/findings" -type f ! -name 'slow-unit-*' | wc -l)
if ((found)); then
    mkdir -p tests/fuzz/regressions
    find "$out/findings" -type f ! -name 'slow-unit-*' -exec cp {} tests/fuzz/regressions/ \;
    echo "fuzz: $found finding(s) copied to tests/fuzz/regressions/"
    exit 1
fi
