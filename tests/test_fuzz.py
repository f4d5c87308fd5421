"""The fuzzers: a CI-sized smoke run of each, and every kept finding replayed
(tests/fuzz/regressions/TARGET-*). Longer runs: scripts/fuzz.sh SECONDS [TARGET ...].

- packet: the packet path in C (libFuzzer, ASan, UBSan), 20 s;
- mgmt_client, mgmt_gateway, agent, policy: the management channel (atheris), 4 s
  each, then each harness replays its seed corpus and its kept findings once: every
  input must pass the harness's invariants (see each tests/fuzz/fuzz_*.py);
- parse_customer, parse_provider, encap, rewrite, route, htab, rtab: the per-packet C
  functions, route selection and the exact-match tables without EAL
  (tests/fuzz/fuzz_frame.c), 3 s each, then its seeds and kept findings replayed;
  parse_provider twice, built for this CPU and for corei7."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REGRESSIONS = ROOT / "tests/fuzz/regressions"
MGMT_TARGETS = ("mgmt_client", "mgmt_gateway", "agent", "policy")
SMOKE_SECONDS = 4


def fuzz_sh(tmp_path, seconds, target, march=None):
    env = dict(os.environ, NVGW_FUZZ_DIR=str(tmp_path))
    if march:
        env["NVGW_MARCH"] = march
    p = subprocess.run([str(ROOT / "scripts/fuzz.sh"), str(seconds), target], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    runs = [line for line in p.stdout.splitlines()
            if line.startswith("stat::number_of_executed_units")]
    assert len(runs) == 1, p.stdout
    return int(runs[0].split(":")[-1]), p.stdout


def test_fuzzer_smoke_run_finds_nothing(tmp_path):
    runs, out = fuzz_sh(tmp_path, 20, "packet")
    assert runs > 10_000, out
    regressions = sorted(REGRESSIONS.glob("packet-*"))
    if regressions:
        r = subprocess.run([str(tmp_path / "fuzz_packet"), *map(str, regressions)],
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"))
        assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("target", MGMT_TARGETS)
def test_mgmt_fuzzer_smoke_run_finds_nothing(tmp_path, target):
    runs, out = fuzz_sh(tmp_path, SMOKE_SECONDS, target)
    # A few hundred inputs a second on an idle machine; a busy one does fewer.
    assert runs > 100, out


@pytest.mark.parametrize("target", MGMT_TARGETS)
def test_mgmt_seeds_and_regressions_replay(tmp_path, target):
    seeds = tmp_path / "seeds"
    subprocess.run([sys.executable, str(ROOT / "tests/fuzz/make_mgmt_corpus.py"), target,
                    str(seeds)], check=True, timeout=60)
    inputs = sorted(seeds.iterdir()) + sorted(REGRESSIONS.glob(f"{target}-*"))
    assert len(inputs) >= 8
    r = subprocess.run([sys.executable, str(ROOT / f"tests/fuzz/fuzz_{target}.py"),
                        *map(str, inputs)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    executed = [line for line in r.stderr.splitlines() if line.startswith("Executed ")]
    assert len(executed) == len(inputs), r.stderr[-3000:]


FRAME_TARGETS = ("parse_customer", "parse_provider", "encap", "rewrite", "route", "htab",
                 "rtab")


# The default build is for this CPU (setup.py); parse_provider is also built for
# corei7, Debian's DPDK baseline, where the usual frame's shape is checked in 16-byte
# vectors instead of 32-byte ones (frame.h, nvgw_shape_ok).
@pytest.mark.parametrize("target", [*FRAME_TARGETS, "parse_provider@corei7"])
def test_frame_fuzzer_smoke_run_and_replay(tmp_path, target):
    target, _, march = target.partition("@")
    runs, out = fuzz_sh(tmp_path, 3, target, march)
    # 80,000 to 350,000 inputs a second here, idle; far fewer on a busy machine.
    assert runs > 10_000, out
    seeds = tmp_path / "seeds"
    subprocess.run([sys.executable, str(ROOT / "tests/fuzz/make_frame_corpus.py"), target,
                    str(seeds)], check=True, timeout=60)
    inputs = sorted(seeds.iterdir()) + sorted(REGRESSIONS.glob(f"{target}-*"))
    assert len(inputs) >= 10
    r = subprocess.run([str(tmp_path / f"fuzz_frame_{target}"), *map(str, inputs)],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"))
    assert r.returncode == 0, r.stderr[-3000:]
    executed = [line for line in r.stderr.splitlines() if line.startswith("Executed ")]
    assert len(executed) == len(inputs), r.stderr[-3000:]
