"""pytest-benchmark for the Python-level pieces of the control path, kept out of the
default run (pyproject: --benchmark-skip; this file is not named test_*.py):

    scripts/bench-pieces.sh          # = scripts/test.sh --benchmark-only -p no:randomly tests/bench_*.py

The per-packet C pieces (bulk lookups, header build, checksum update) are measured in the
gateway itself by scripts/bench.py (cycles per packet, and --profile for where they go);
they have no Python entry point. What is here bounds the control plane: a 1,000-update
batch (the unit of the 100,000 updates/s goal), a policy diff, and the JSON of a batch.
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import bench_workloads as wl                     # noqa: E402
from dataplane.policy import Policy              # noqa: E402

pytestmark = pytest.mark.bench
N = 10_000                                       # records in the policy under test


@pytest.fixture(scope="module")
def doc():
    return wl.policy(N)


@pytest.fixture(scope="module")
def loaded(doc):
    p = Policy(None, wl.PCAP_PORT_MAC, "02:70:63:61:70:01")
    p.load_document(doc)
    return p


def update_batch(alt=1, count=1000):
    per = wl.per_domain(N)
    return [{"op": "set", "kind": "record", **wl.record(N, 1 + k // per, k % per, "encap", alt)}
            for k in range(count)]


def test_validate_batch_of_1000_record_updates(benchmark, loaded):
    ops = update_batch()
    benchmark(loaded.check, ops)


def test_apply_batch_of_1000_record_updates_model_only(benchmark, loaded):
    batches = [update_batch(1), update_batch(0)]
    state = {"i": 0}

    def run():
        state["i"] ^= 1
        loaded.apply(batches[state["i"]])
    benchmark(run)


def test_policy_diff_10k_records_1pct_changed(benchmark, loaded, doc):
    changed = copy.deepcopy(doc)
    for r in changed["records"][: N // 100]:
        r["pa"] = wl.host_pa(999)
    docs = [changed, doc]
    state = {"i": 0}

    def run():
        state["i"] ^= 1
        loaded.load_document(docs[state["i"]])
    benchmark(run)


def test_json_of_a_1000_update_apply_request(benchmark):
    ops = update_batch()

    def run():
        return json.loads(json.dumps({"v": 1, "type": "apply", "ops": ops}).encode())
    benchmark(run)


def test_benchmark_frame_builder_matches_scapy_and_is_fast(benchmark):
    picks = wl.picks(1_000_000, "hairpin", 1000)
    assert all(wl.frame_bytes(1_000_000, "hairpin", p) == bytes(wl.frame(1_000_000, "hairpin", p))
               for p in picks[:5])
    benchmark(lambda: [wl.frame_bytes(1_000_000, "hairpin", p) for p in picks])
