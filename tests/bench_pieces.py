"""pytest-benchmark for the pieces, kept out of the default run (pyproject:
--benchmark-skip; this file is not named test_*.py):

    scripts/bench-pieces.sh          # = scripts/test.sh --benchmark-only -p no:randomly tests/bench_*.py

The per-packet C pieces run the gateway's own inline functions on plain memory, built
from tests/pieces.c into a shared object and called through ctypes, a call doing many
operations in bursts of 32 as the workers do (each reports its TSC cycles an operation
in extra_info, `--benchmark-json`): bulk lookup in the record table (1,000 and
1,000,000 records, the benchmark's keys, lookups drawn uniformly over them) and in the
exact-match table of routes and neighbours, the NVGRE header build, the checksum update
of an IP rewrite. Each first checks what it computes (the header against scapy's, the
rewrite against scapy's recomputed checksums, every lookup a hit). Then the control
path's Python pieces: a 1,000-update batch (the unit of the 100,000 updates/s goal),
a policy diff, and the JSON of a batch. tests/test_bench_pieces.py runs this file once
without timing in the default run, so it does not rot.
"""
from __future__ import annotations

import copy
import ctypes
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import GRE, Ether

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import bench_workloads as wl                     # noqa: E402
from dataplane.policy import Policy              # noqa: E402
from nvgw_helpers import flowid_of               # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.bench
N = 10_000                                       # records in the policy under test


# -- the per-packet C pieces ----------------------------------------------------------

BURST, STRIDE = 32, 256
LOOKUPS = 65_536            # a call's lookups: as many as the benchmark's pcap has packets
HEADERS = 32_768            # a call's headers and rewrites
U64P = ctypes.POINTER(ctypes.c_uint64)


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """tests/pieces.c with the extension's flags (setup.py: -O3, this CPU)."""
    out = tmp_path_factory.mktemp("pieces") / "pieces.so"
    cflags = subprocess.run(["pkg-config", "--cflags", "libdpdk"], capture_output=True,
                            text=True, check=True).stdout.split()
    # as setup.py builds the extension, -falign-functions=64 too: without it the
    # exact-match lookups moved by a cycle with the code around them
    subprocess.run(["gcc", "-O3", "-fno-tree-slp-vectorize", "-falign-functions=64", "-Wall",
                    "-Wextra", "-Werror", "-fPIC", "-shared", f"-I{ROOT / 'cext'}", *cflags,
                    "-march=native", "-o", str(out), str(ROOT / "tests/pieces.c"),
                    str(ROOT / "cext/rtab.c"), str(ROOT / "cext/htab.c"),
                    str(ROOT / "cext/rewrite.c")],
                   check=True, timeout=120)
    so = ctypes.CDLL(str(out))
    so.piece_rtab_new.restype = so.piece_htab_new.restype = ctypes.c_void_p
    so.piece_rtab_new.argtypes = [ctypes.c_uint32] * 4 + [ctypes.c_uint64]
    so.piece_htab_new.argtypes = [ctypes.c_uint32] * 3 + [ctypes.c_uint64]
    for f in (so.piece_rtab_lookup, so.piece_htab_lookup_bulk):
        f.restype = ctypes.c_uint64
        f.argtypes = [ctypes.c_void_p, ctypes.c_uint32, U64P, U64P]
    so.piece_free.argtypes = [ctypes.c_void_p]
    so.piece_nvgre_header.restype = so.piece_rewrite.restype = ctypes.c_uint64
    so.piece_nvgre_header.argtypes = ([ctypes.c_char_p] + [ctypes.c_uint32] * 5 +
                                      [ctypes.c_char_p] * 4)
    so.piece_rewrite.argtypes = ([ctypes.c_char_p, ctypes.c_uint32,
                                  ctypes.POINTER(ctypes.c_uint16)] + [ctypes.c_uint32] * 5)
    return so


def timed_lookups(benchmark, lib, lookup, table):
    """Benchmark LOOKUPS lookups a call in `table`, every one a hit; the median call's
    TSC cycles a lookup go to extra_info. The table is freed after."""
    assert table, "table not built"
    cyc, acc, runs = ctypes.c_uint64(), ctypes.c_uint64(), []
    try:
        def run():
            hits = lookup(table, LOOKUPS, ctypes.byref(cyc), ctypes.byref(acc))
            runs.append(cyc.value)
            return hits
        assert benchmark(run) == LOOKUPS
    finally:
        lib.piece_free(table)
    cycles_per_op(benchmark, runs, LOOKUPS)


def cycles_per_op(benchmark, runs: list, ops: int):
    """The median call's TSC cycles an operation, in the benchmark's extra_info."""
    runs.sort()
    benchmark.extra_info["ops_per_call"] = ops
    benchmark.extra_info["cycles_per_op"] = round(runs[len(runs) // 2] / ops, 1)


@pytest.mark.parametrize("records", [1_000, 1_000_000])
def test_bulk_lookup_record_table(benchmark, lib, records):
    """The record table as the gateway sizes it (tables.records, 2^20), holding the
    benchmark's records; a burst's lines fetched, then probed."""
    timed_lookups(benchmark, lib, lib.piece_rtab_lookup,
                  lib.piece_rtab_new(1 << 20, records, wl.per_domain(records), LOOKUPS, 7))


@pytest.mark.parametrize("keys,capacity", [(1_000, 65_536), (100_000, 131_072)],
                         ids=["1k-neighbours", "100k-routes"])
def test_bulk_lookup_exact_match_table(benchmark, lib, keys, capacity):
    """nvgw_htab_lookup_bulk, 32 keys a call, in a table of the gateway's default size
    for neighbours (65,536) or routes (131,072)."""
    timed_lookups(benchmark, lib, lib.piece_htab_lookup_bulk,
                  lib.piece_htab_new(capacity, keys, LOOKUPS, 7))


def inner_packets(one_pair=False):
    """32 inner packets of 64-byte frames (46 bytes of IPv4), TCP and UDP, many flows
    (one_pair: all between the same two addresses)."""
    out = []
    for k in range(BURST):
        l4 = (TCP(sport=1000 + k, dport=80, flags="A") if k % 2 else
              UDP(sport=2000 + k, dport=53))
        src, dst = (("172.16.1.10", "10.0.0.2") if one_pair else
                    (f"172.16.1.{10 + k}", f"10.0.{k}.{2 + k}"))
        pkt = IP(src=src, dst=dst, ttl=64, id=k) / l4
        pad = 46 - len(pkt)
        out.append(bytes(IP(bytes(pkt / (b"x" * pad)))))
    return out


def frames_of(packets, offset):
    buf = ctypes.create_string_buffer(BURST * STRIDE)
    for k, p in enumerate(packets):
        ctypes.memmove(ctypes.addressof(buf) + k * STRIDE + offset, p, len(p))
    return buf


NVGRE = dict(src_pa="192.168.0.1", pa="192.168.1.12", vsid=100_002, nh="00:15:5d:ff:00:05",
             ours="02:70:63:61:70:01", ca="00:15:00:01:00:07", gw="02:00:00:00:0b:01")


def addr(s: str) -> int:
    """An IPv4 address as a uint32_t holding it in network order (as the C reads it)."""
    return int.from_bytes(socket.inet_aton(s), sys.byteorder)


def nvgre_args(buf, n):
    g = NVGRE
    mac = [wl._mac(g[k]) for k in ("nh", "ours", "ca", "gw")]
    return (buf, STRIDE, n, addr(g["src_pa"]), addr(g["pa"]), g["vsid"], *mac)


def test_header_build_nvgre(benchmark, lib):
    """nvgw_nvgre_header and the inner TTL, as emit_nvgre: 56 bytes in front of each
    of 32 inner packets in turn. First one pass, byte for byte against scapy."""
    inner = inner_packets()
    buf = frames_of(inner, 56)
    lib.piece_nvgre_header(*nvgre_args(buf, BURST))
    g = NVGRE
    for k, p in enumerate(inner):
        ip = IP(p)
        ip.ttl -= 1
        del ip.chksum
        want = (Ether(dst=g["nh"], src=g["ours"]) /
                IP(src=g["src_pa"], dst=g["pa"], flags="DF", ttl=64, id=0, proto=47) /
                GRE(key_present=1, proto=0x6558, key=g["vsid"] << 8 | flowid_of(IP(p))) /
                Ether(dst=g["ca"], src=g["gw"]) / ip)
        got = buf.raw[k * STRIDE:k * STRIDE + 56 + len(p)]
        assert got == bytes(want), k
    runs = []

    def run():
        runs.append(lib.piece_nvgre_header(*nvgre_args(buf, HEADERS)))
    benchmark(run)
    cycles_per_op(benchmark, runs, HEADERS)


def test_checksum_update_rewrite(benchmark, lib):
    """nvgw_rewrite of both addresses with the IPv4 and TCP/UDP checksums updated
    incrementally. First one pass, against scapy's recomputed checksums, and a pass back
    to the packets as they were."""
    inner = inner_packets(one_pair=True)
    buf = frames_of(inner, 0)
    lens = (ctypes.c_uint16 * BURST)(*[len(p) for p in inner])
    addrs = tuple(map(addr, ("172.16.1.10", "10.0.0.2", "192.168.200.2", "100.64.0.7")))
    lib.piece_rewrite(buf, STRIDE, lens, BURST, *addrs)
    for k, p in enumerate(inner):
        want = IP(p)
        want.src, want.dst = "192.168.200.2", "100.64.0.7"
        del want.chksum
        del want.payload.chksum
        assert buf.raw[k * STRIDE:k * STRIDE + len(p)] == bytes(want), k
    buf = frames_of(inner, 0)
    lib.piece_rewrite(buf, STRIDE, lens, 2 * BURST, *addrs)
    assert all(buf.raw[k * STRIDE:k * STRIDE + len(p)] == p for k, p in enumerate(inner))
    runs = []

    def run():
        runs.append(lib.piece_rewrite(buf, STRIDE, lens, HEADERS, *addrs))
    benchmark(run)
    cycles_per_op(benchmark, runs, HEADERS)


# -- the control path's Python pieces ------------------------------------------------

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
