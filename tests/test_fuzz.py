"""The packet-path fuzzer: a CI-sized smoke run, and every kept finding
replayed (tests/fuzz/regressions/). Longer runs: scripts/fuzz.sh SECONDS."""
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fuzzer_smoke_run_finds_nothing(tmp_path):
    env = dict(os.environ, NVGW_FUZZ_DIR=str(tmp_path))
    p = subprocess.run([str(ROOT / "scripts/fuzz.sh"), "20"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    runs = [line for line in p.stdout.splitlines() if line.startswith("stat::number_of_executed_units")]
    assert runs and int(runs[0].split(":")[-1]) > 10_000, p.stdout
    regressions = sorted((ROOT / "tests/fuzz/regressions").glob("*"))
    if regressions:
        r = subprocess.run([str(tmp_path / "fuzz_packet"), *map(str, regressions)],
                           capture_output=True, text=True, timeout=120,
                           env=dict(env, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"))
        assert r.returncode == 0, r.stderr[-3000:]
