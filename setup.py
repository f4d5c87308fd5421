"""Build nvgw: the Cython core over DPDK and the C data plane in cext/."""
import glob
import os
import shlex
import subprocess
import sys

from setuptools import Extension, setup

DPDK_HINT = ("nvgw needs DPDK 22.11 and pkg-config: run scripts/bootstrap.sh, or "
             "apt-get install -y dpdk libdpdk-dev pkg-config")


def dpdk_flags():
    """Compiler and linker flags of the system DPDK, or one clear sentence."""
    try:
        out = subprocess.run(["pkg-config", "--cflags", "--libs", "libdpdk"],
                             check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        sys.exit(DPDK_HINT)
    cflags, ldflags = [], []
    for flag in shlex.split(out):
        (ldflags if flag.startswith(("-l", "-L", "-Wl")) else cflags).append(flag)
    return cflags, ldflags


def extensions():
    from Cython.Build import cythonize

    cflags, ldflags = dpdk_flags()
    # For the CPU that builds it, as DPDK's own builds default to (Debian's
    # pkg-config says corei7, the lowest it supports): the usual fabric frame's
    # shape is then checked in 32-byte vectors (frame.h). NVGW_MARCH=corei7 (or
    # another -march value) for a build that is to run on another machine.
    cflags.append("-march=" + os.environ.get("NVGW_MARCH", "native"))
    # No straight-line (SLP) vectorizing: it packs a counter pair's two increments
    # into a vector load, add and store, which take more instructions than two adds
    # to memory (callgrind: 4 a packet on encap).
    # Functions start on a 64-byte line: else a change anywhere in the
    # extension moves the hot loops against the CPU's fetch lines, and a
    # same-hour A/B measures that too (an exception-thread change that moved
    # them by 48 bytes cost rewrite 1k 6-7 cycles a packet, README). Linux
    # has the same switch for the same reason (FORCE_FUNCTION_ALIGN_64B).
    ext = Extension(
        "dataplane._dataplane",
        sources=["dataplane/_dataplane.pyx"] + sorted(glob.glob("cext/*.c")),
        include_dirs=["cext"],
        depends=glob.glob("cext/*.h") + glob.glob("cext/*.def"),
        extra_compile_args=cflags + ["-O3", "-fno-tree-slp-vectorize", "-falign-functions=64",
                                     "-Wall", "-Wno-unused-function"],
        extra_link_args=ldflags,
    )
    return cythonize([ext], language_level=3,
                     compiler_directives={"boundscheck": False, "wraparound": False})


# Metadata-only commands (egg_info, --version) must not need DPDK.
needs_build = any(a.startswith(("build", "install", "develop", "bdist", "editable"))
                  for a in sys.argv[1:])

setup(
    name="nvgw",
    version="0.1.0",
    description="DPDK network virtualization gateway (NVGRE / IP rewrite, HNV policy model)",
    packages=["dataplane", "mgmt"],
    package_data={"dataplane": ["*.pxd", "dpdk/*.pxd"]},
    ext_modules=extensions() if needs_build else [],
    python_requires=">=3.11",
    install_requires=["pyzmq>=25", "structlog>=23", "pyelftools>=0.29", "numpy>=1.24"],
    # trex-stl-lib: tests/test_trex_profiles.py builds the TRex profiles offline;
    # matplotlib: the benchmark's chart (scripts/bench.py writes results.png);
    # atheris: libFuzzer for Python, the management-channel fuzzers (tests/fuzz/fuzz_*.py).
    extras_require={"test": ["pytest>=7", "scapy>=2.5", "pytest-benchmark>=4",
                             "trex-stl-lib>=0.3", "matplotlib>=3.6", "atheris>=2.3"]},
    entry_points={"console_scripts": [
        "nvgw-dataplane = dataplane.cli:main",
        "nvgwctl = mgmt.ctl:main",
        "nvgw-mgmt = mgmt.server:main",
    ]},
)
