"""The pytest-benchmark pieces (tests/bench_pieces.py, out of the default run) run once
each here, untimed, so that they keep building and their checks keep passing: the C
pieces' header build against scapy, the rewrite's checksums against scapy's, every lookup
a hit."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_pieces_build_and_compute_right():
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-p", "no:randomly", "-o", "addopts=", "--benchmark-disable",
                        str(ROOT / "tests/bench_pieces.py")],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert re.search(r"^11 passed", p.stdout, re.M), p.stdout[-2000:]
