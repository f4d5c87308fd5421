#!/usr/bin/env bash
# Build and run the fuzzers for a bounded time each:
#   packet        the packet path in C (libFuzzer, ASan + UBSan): tests/fuzz/fuzz_packet.c
#   mgmt_client   nvgw-mgmt's client requests (atheris): tests/fuzz/fuzz_mgmt_client.py
#   mgmt_gateway  nvgw-mgmt's gateway messages (atheris): tests/fuzz/fuzz_mgmt_gateway.py
#   agent         the gateway's agent, down to the C tables (atheris): tests/fuzz/fuzz_agent.py
#   policy        policy documents and batches (atheris): tests/fuzz/fuzz_policy.py
#   parse_customer, parse_provider, encap, rewrite, route, htab, rtab
#                 the per-packet C functions, route selection and the exact-match table,
#                 no EAL (libFuzzer, ASan + UBSan): tests/fuzz/fuzz_frame.c, one binary
#                 per entry point
#
#   scripts/fuzz.sh [SECONDS] [TARGET ...]   each TARGET (default: all) for SECONDS
#                                            (default 600), one after another
# Findings are copied to tests/fuzz/regressions/TARGET-* (replayed by the test suite);
# the exit status is 1 when there was one. NVGW_FUZZ_DIR: where binaries, corpora and
# findings live (default /tmp/nvgw-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
frame_targets=(parse_customer parse_provider encap rewrite route htab rtab)
all=(packet mgmt_client mgmt_gateway agent policy "${frame_targets[@]}")
((${#targets[@]})) || targets=("${all[@]}")
out=${NVGW_FUZZ_DIR:-/tmp/nvgw-fuzz}
march=${NVGW_MARCH:-native}     # as setup.py builds the gateway

# A harness binary is rebuilt when a source is newer or it was built for another -march.
stale() {
    local bin=$1; shift
    [[ ! -x $bin ]] || [[ $(cat "$bin.march" 2>/dev/null) != "$march" ]] ||
        [[ -n $(find "$@" cext/*.h cext/*.def -newer "$bin") ]]
}
mkdir -p "$out"

fuzz_packet() {
    mkdir -p "$out/corpus" "$out/findings/packet"
    bin=$out/fuzz_packet
    # Instrument our C only; DPDK comes from Debian's shared libraries.
    sources=(tests/fuzz/fuzz_packet.c cext/nvgre.c cext/exc.c cext/tables.c cext/htab.c cext/rtab.c cext/rewrite.c
             cext/worker.c cext/drops.c cext/fwd.c)
    if stale "$bin" "${sources[@]}"; then
        clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
            -Icext $(pkg-config --cflags libdpdk) -march="$march" "${sources[@]}" \
            $(pkg-config --libs libdpdk) -lrte_net_ring -o "$bin"
        echo "$march" > "$bin.march"
    fi
    .venv/bin/python tests/fuzz/make_corpus.py "$out/corpus"
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
    "$bin" -max_total_time="$seconds" -max_len=1600 -print_final_stats=1 \
        -artifact_prefix="$out/findings/packet/" "$out/corpus" tests/fuzz/seeds 2>&1 | tail -25
}

# The per-packet functions of cext/frame.h, rewrite.c and pkt.h: DPDK's headers only, no
# DPDK library, no EAL. The entry point is chosen at compile time (-DENTRY_PARSE_CUSTOMER...).
fuzz_frame() {
    local t=$1 bin=$out/fuzz_frame_$1
    local sources=(tests/fuzz/fuzz_frame.c cext/rewrite.c cext/drops.c cext/htab.c cext/rtab.c)
    mkdir -p "$out/corpus-$t" "$out/findings/$t"
    if stale "$bin" "${sources[@]}"; then
        clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
            -Icext $(pkg-config --cflags libdpdk) -march="$march" -DENTRY_${t^^} "${sources[@]}" -o "$bin"
        echo "$march" > "$bin.march"
    fi
    .venv/bin/python tests/fuzz/make_frame_corpus.py "$t" "$out/corpus-$t"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    "$bin" -max_total_time="$seconds" -max_len=1600 -print_final_stats=1 \
        -artifact_prefix="$out/findings/$t/" "$out/corpus-$t" 2>&1 | tail -25
}

# The Python harnesses: atheris (libFuzzer's engine, coverage of our Python modules).
fuzz_python() {
    local t=$1
    mkdir -p "$out/corpus-$t" "$out/findings/$t"
    .venv/bin/python tests/fuzz/make_mgmt_corpus.py "$t" "$out/corpus-$t"
    .venv/bin/python tests/fuzz/make_mgmt_corpus.py --dict "$t" "$out/mgmt.dict"
    # The harnesses' scratch (key pairs, SQLite stores) lives in $out: libFuzzer ends the
    # process with exit(), and Python's cleanups do not run.
    rm -rf "$out/tmp-$t" && mkdir -p "$out/tmp-$t"
    # -timeout: one input of a few messages takes milliseconds; a minute is a hang.
    TMPDIR=$out/tmp-$t .venv/bin/python "tests/fuzz/fuzz_$t.py" -max_total_time="$seconds" -max_len=4096 \
        -timeout=60 -print_final_stats=1 -dict="$out/mgmt.dict" \
        -artifact_prefix="$out/findings/$t/" "$out/corpus-$t" 2>&1 |
        grep -Ev '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)|^INFO: Instrumenting' | tail -40
}

status=0
for t in "${targets[@]}"; do
    [[ " ${all[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target $t (${all[*]})" >&2; exit 2; }
done
for t in "${targets[@]}"; do
    echo "== fuzz $t: ${seconds}s"
    rm -rf "$out/findings/$t"       # earlier ones are in tests/fuzz/regressions already
    rc=0
    if [[ $t == packet ]]; then fuzz_packet || rc=$?
    elif [[ " ${frame_targets[*]} " == *" $t "* ]]; then fuzz_frame "$t" || rc=$?
    else fuzz_python "$t" || rc=$?; fi
    # crash-, leak-, timeout- and oom- inputs are findings; slow-unit- ones only
    # mean the machine was busy (each is replayed at normal speed elsewhere).
    found=$(find "$out/findings/$t" -type f ! -name 'slow-unit-*' | wc -l)
    if ((found)); then
        mkdir -p tests/fuzz/regressions
        for f in $(find "$out/findings/$t" -type f ! -name 'slow-unit-*'); do
            cp "$f" "tests/fuzz/regressions/$t-$(basename "$f")"
        done
        echo "fuzz $t: $found finding(s) copied to tests/fuzz/regressions/$t-*"
        status=1
    elif ((rc)); then
        echo "fuzz $t: the fuzzer failed (exit status $rc) without a finding" >&2
        status=1
    fi
done
exit $status
