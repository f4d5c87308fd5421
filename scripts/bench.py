#!/usr/bin/env python3
"""nvgw benchmark: packet rate side by side with dpdk-testpmd io-forward, in one run.

    scripts/bench.sh [--reps 3] [--window 3] [--records 1000,1000000] [--quick] ...

Generates the workloads (scripts/bench_workloads.py) under a work directory, then
for each repetition, one after another on the same ports (net_pcap source with
infinite_rx=1, net_null sink), burst 32, mempool, descriptors and memory mode:

  testpmd    dpdk-testpmd --forward-mode=io (64-byte and IMIX pcaps; and decap's NVGRE
             pcap, whose 102-byte frames cost the source more to copy: a reference row,
             the goals' ratios are to the 64-byte one)
  nvgw       encap, decap, hairpin, rewrite x each record count (64-byte), encap and
             decap with IMIX (1k records), encap with 2 workers (issue 6), and encap
             while a separate process applies record updates through the control socket

Every row is measured over the same window (--window seconds of steady state, after the
gateway is up and its policy loaded) from the worker's own counters: packets sent by the
sink port per second of wall time, cycles per packet (the worker's busy TSC cycles, and
all its cycles, over packets it processed), and the ratio to testpmd measured in the same
repetition. Reports the median over repetitions and the spread (min..max); writes
results.json, results.md and results.png to the work directory.

Then the control-plane figures (--no-control to skip): 1,000,000 lookup records pushed
through nvgw-mgmt to a gateway (first byte sent to ack), and p50/p99 of one migrate.

--callgrind instead counts instructions per packet under valgrind's callgrind (testpmd's
forwarding thread; the gateway's worker loop only), split by shared object: unlike
cycles they do not move with the neighbours of a shared machine.

--scaling 1,2,4,8 instead measures each row on 1, 2, 4 and 8 cores against testpmd on as
many: for a machine with the cores to spare (on this 2-CPU one, only 1).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_workloads as wl                          # noqa: E402
from dataplane.config import runtime_dir              # noqa: E402

PY = sys.executable
PCAP_PACKETS = 65536         # distinct packets per pcap, all preloaded by infinite_rx
PKTS = PCAP_PACKETS          # this run's (--packets)
WORK_MBUFS = 16384           # mbufs beyond the preloaded pcap: rx/tx rings, bursts
MEMORY_MB = 2048
DESCRIPTORS = 1024
MBUF_CACHE = 256
BURST = 32


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# -- machine ------------------------------------------------------------------------

def machine() -> dict:
    cpu = "?"
    mhz = None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and cpu == "?":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("cpu MHz") and mhz is None:
                mhz = float(line.split(":", 1)[1])
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "cpuinfo_mhz": mhz,
            "kernel": platform.release(), "host": platform.node(),
            "hugepages": HUGEPAGES}


def stop_process(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 60) -> None:
    """Stop a process we started: `sig`, then SIGKILL after `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# The memory mode of every process of a run, chosen once (--memory): deciding per
# process let a testpmd that left its hugepage files push the gateway to --no-huge,
# so the two were compared on different memory.
HUGEPAGES = False


def hugepages_ok(mb: int) -> bool:
    try:
        free = int(open("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages").read())
    except OSError:
        return False
    mounted = any(" hugetlbfs " in line for line in open("/proc/mounts"))
    return mounted and free * 2 >= mb


# -- workloads ----------------------------------------------------------------------

def pcap_name(kind: str, n: int, size: str) -> str:
    """A workload's pcap in the work directory; one of other than PKTS packets is
    another file (the directory keeps pcaps between runs)."""
    tail = "" if PKTS == PCAP_PACKETS else f"-{PKTS}"
    return f"{kind}-{n}-{size}{tail}.pcap"


def build_workloads(work: Path, counts, kinds, imix: bool) -> dict:
    """pcaps and policies under work/ (reused when present: deterministic)."""
    out = {"pcap": {}, "policy": {}}
    wanted = [(n, k, "64") for n in counts for k in kinds]
    if (counts[0], "encap", "64") not in wanted:       # testpmd's input
        wanted.append((counts[0], "encap", "64"))
    if "hairpin" in kinds and (counts[0], NVGRE_KIND, "64") not in wanted:
        wanted.append((counts[0], NVGRE_KIND, "64"))   # testpmd's NVGRE reference
    if imix:
        wanted += [(counts[0], k, "imix") for k in ("encap", "decap")]
    for n, kind, size in wanted:
        path = work / pcap_name(kind, n, size)
        if not path.exists():
            log(f"building {path.name}")
            picks = wl.picks(n, kind, PKTS, size)
            frames = [wl.frame_bytes(n, kind, p) for p in picks]
            for p, f in zip(picks[:8], frames):          # the fast builder is scapy's twin
                assert bytes(wl.frame(n, kind, p)) == f, (kind, size, p)
            wl.write_pcap(str(path) + ".tmp", frames)
            os.rename(str(path) + ".tmp", path)
        out["pcap"][(n, kind, size)] = path
    out["pcap"][("io", "64")] = out["pcap"][(counts[0], "encap", "64")]
    if imix:
        out["pcap"][("io", "imix")] = out["pcap"][(counts[0], "encap", "imix")]
    for n in counts:
        for method in ("encap", "rewrite"):
            path = work / f"policy-{method}-{n}.json"
            if not path.exists():
                log(f"building {path.name}")
                wl.write_policy(str(path) + ".tmp", n, method)
                os.rename(str(path) + ".tmp", path)
            out["policy"][(n, method)] = path
    return out


def policy_of(wk: dict, n: int, kind: str) -> Path:
    """The policy a row runs on: rewrite's own, the encap one for every other kind."""
    return wk["policy"][(n, "rewrite" if kind == "rewrite" else "encap")]


def worker_run_ns(pid: int) -> int:
    """CPU time (ns) the process's EAL worker threads have run (schedstat field 1): on a
    shared machine a polling worker is time-sliced with other processes' threads, and
    wall-clock rates then measure the neighbours, not the code."""
    total = 0
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (t / "comm").read_text().strip().startswith(("rte-worker", "lcore-worker")):
                total += int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass
    return total


# -- testpmd ------------------------------------------------------------------------

TP_PPS = re.compile(r"Tx-pps:\s+(\d+)")
TP_CYC = re.compile(r"CPU cycles/packet=([\d.]+) \(total cycles=(\d+) / total io packets=(\d+)\)"
                    r" at (\d+) MHz")


def memory_mb(queues: int) -> int:
    """EAL memory for `queues` source queues: each preloads its own copy of the pcap
    (PKTS mbufs, about 150 MB for 65,536), so runs of more than 2 queues get more, and
    so do larger pcaps (--packets; 2.4 KB a mbuf, 256 MB for the rest)."""
    need = 256 + queues * (PKTS + WORK_MBUFS) * 2400 // (1 << 20)
    return max(MEMORY_MB + 192 * max(0, queues - 2), -(-need // 64) * 64)


def cpu_of(i: int) -> int:
    """The i-th usable CPU, folded onto those there are (a 2-CPU machine can still
    try a run of more lcores; its rates then mean little)."""
    usable = sorted(os.sched_getaffinity(0))
    return usable[i % len(usable)]


def lcores_arg(n: int) -> str:
    """EAL lcores 0..n-1, lcore i on the i-th usable CPU."""
    return ",".join(f"{i}@{cpu_of(i)}" for i in range(n))


# testpmd on the NVGRE frames decap and hairpin take in (decap's pcap: the inner packets
# are encap's 46 bytes, the frames 102): what the source's copy of them costs.
NVGRE_KIND = "decap"
NVGRE_ROW = "testpmd io NVGRE 102B"


TESTPMD_PREFIX = f"nvgwbench{os.getpid()}"   # EAL's runtime directory: removed at exit


def testpmd_argv(pcap: Path, cores: int = 1) -> list[str]:
    """io-forward from the pcap (infinite_rx) to net_null, started at once (-a); with
    `cores` forwarding cores, each on its own queue of the pcap port (a copy each)."""
    # --in-memory: no hugepage files left behind (the gateway runs so too)
    mem = ["--in-memory"] if HUGEPAGES else ["--no-huge"]
    rx = ",".join([f"rx_pcap={pcap}"] * cores)
    multi = [f"--nb-cores={cores}", f"--rxq={cores}", f"--txq={cores}"] if cores > 1 else []
    return ["dpdk-testpmd", *mem, "-m", str(memory_mb(cores)), "--no-pci", "--file-prefix",
            TESTPMD_PREFIX, "--vdev", f"net_pcap0,{rx},infinite_rx=1",
            "--vdev", "net_null0,no-rx=1", "--lcores", lcores_arg(cores + 1),
            "--log-level", "warning", "--",
            "--forward-mode=io", f"--burst={BURST}",
            f"--total-num-mbufs={cores * PKTS + WORK_MBUFS}", *multi,
            f"--mbcache={MBUF_CACHE}", f"--rxd={DESCRIPTORS}", f"--txd={DESCRIPTORS}", "-a"]


def run_testpmd(work: Path, pcap: Path, window: float, tag: str, cores: int = 1) -> dict:
    """io-forward from the pcap (infinite_rx) to net_null; the sink's Tx-pps, one line a
    second: the first `warm` seconds are dropped, the next `window` averaged."""
    argv = testpmd_argv(pcap, cores) + ["--record-core-cycles", "--stats-period", "1"]
    logf = work / f"testpmd-{tag}.log"
    warm = 2
    with open(logf, "w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        # testpmd prints once a second; wait until enough non-zero lines arrived.
        deadline = time.monotonic() + 60 + window
        mark = None
        while time.monotonic() < deadline and proc.poll() is None:
            rates = [int(x) for x in TP_PPS.findall(logf.read_text(errors="replace"))]
            got = len([r for r in rates if r])
            if got >= warm and mark is None:
                mark = (time.monotonic(), worker_run_ns(proc.pid))
            if got >= warm + window:
                end = (time.monotonic(), worker_run_ns(proc.pid))
                break
            time.sleep(0.05)
        else:
            end = None
        stop_process(proc, signal.SIGINT, 30)
    text = logf.read_text(errors="replace")
    rates = [int(x) for x in TP_PPS.findall(text) if int(x)]
    sel = rates[warm:warm + int(window)]
    if not sel or mark is None or end is None:
        raise RuntimeError(f"testpmd gave no rate for {warm + window} s; see {logf}")
    m = TP_CYC.search(text)
    pps = statistics.fmean(sel)
    share = (end[1] - mark[1]) / 1e9 / (end[0] - mark[0]) / cores
    res = {"wall_mpps": pps / 1e6, "samples_mpps": [r / 1e6 for r in sel],
           "cpu_share": share, "mpps": pps / share / 1e6}
    if m:
        res.update(busy_cycles_per_pkt=float(m.group(1)), tsc_hz=int(m.group(4)) * 1_000_000)
        res["cycles_per_pkt"] = res["tsc_hz"] * share * cores / pps
    return res


# -- the gateway --------------------------------------------------------------------

def gw_config(run: Path, src_role: str, pcap: Path, policy: Path, workers: int = 1,
              queues: int = 1, extra: str = "", tx_pcap: Path | None = None,
              rss: str = "auto") -> Path:
    """net_pcap0 (the source, infinite_rx) in src_role, net_null0 in the other role.
    Hairpin comes in and goes out the provider port: the customer port is a null
    device that never receives."""
    mem = "hugepages" if HUGEPAGES else "no-huge"
    other = "customer" if src_role == "provider" else "provider"
    rx = ",".join([f"rx_pcap={pcap}"] * queues)
    src = f"net_pcap0,{rx},infinite_rx=1" + (f",tx_pcap={tx_pcap}" if tx_pcap else "")
    lcores = list(range(1, workers + 1))
    cpus = [cpu_of(c) for c in lcores]
    ports = [(src_role, src, queues), (other, "net_null0,no-rx=1", 1)]
    if src_role == "customer":
        ports.reverse()             # the provider port first, as in every test
    text = (f'[eal]\nmemory = "{mem}"\nmemory_mb = {memory_mb(queues)}\n'
            f'[workers]\nlcores = {lcores}\ncpus = {cpus}\nrss = "{rss}"\n'
            f"[mempool]\nmbufs = {queues * PKTS + WORK_MBUFS}\ncache = {MBUF_CACHE}\n"
            f'[pipeline]\nmode = "nvgre"\npolicy = "{policy}"\n'
            "[tables]\nrecords = 1048576\nroutes = 131072\nneighbours = 8192\n"
            "rewrites = 2097152\n"
            f'[control]\nsocket = "ipc://{run}/ctl.sock"\n{extra}')
    for role, dev, q in ports:
        text += (f'[[ports]]\nname = "{role}"\nrole = "{role}"\ndevice = "{dev}"\n'
                 f"queues = {q}\ndescriptors = {DESCRIPTORS}\n")
    path = run / "gw.toml"
    path.write_text(text)
    return path


class Gateway:
    """nvgw-dataplane as a subprocess (our own process group; stopped by its pid)."""

    def __init__(self, run: Path, cfg: Path):
        from dataplane.control import ControlClient
        self.run, self.cfg = run, cfg
        self.ctl = ControlClient(f"ipc://{run}/ctl.sock", timeout_ms=20000)
        self.log = run / "gw.log"
        self.stats = run / "stats.json"
        self.proc = None

    def start(self, timeout: float = 180) -> "Gateway":
        from dataplane.errors import NvgwError
        self.proc = subprocess.Popen(
            [PY, "-m", "dataplane.cli", "--config", str(self.cfg), "--stats-json",
             str(self.stats), "--log-level", "warning"],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT, cwd=ROOT,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}:\n"
                                   f"{self.log.read_text()[-3000:]}")
            if (self.run / "ctl.sock").exists():
                try:
                    self.ctl.request("show", what="ports")
                    return self
                except NvgwError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("gateway not ready in time")

    def sample(self) -> dict:
        t0 = time.monotonic()
        ws = self.ctl.request("show", what="workers")
        ports = self.ctl.request("show", what="ports")
        t1 = time.monotonic()
        return {"t": (t0 + t1) / 2, "workers": ws, "ports": ports,
                "run_ns": worker_run_ns(self.proc.pid)}

    def stop(self) -> dict | None:
        if self.proc is None:
            return None
        stop_process(self.proc)
        self.proc = None
        try:
            return json.loads(self.stats.read_text())
        except (OSError, ValueError):
            return None


def delta(a: dict, b: dict, tsc_hz: float) -> dict:
    """Rates between two samples of one gateway."""
    def tot(s, key):
        return sum(w[key] for w in s["workers"])
    dt = b["t"] - a["t"]
    tx = sum(p["tx_pkts"] for p in b["ports"]) - sum(p["tx_pkts"] for p in a["ports"])
    txb = sum(p["tx_bytes"] for p in b["ports"]) - sum(p["tx_bytes"] for p in a["ports"])
    rx = sum(p["rx_pkts"] for p in b["ports"]) - sum(p["rx_pkts"] for p in a["ports"])
    proc = tot(b, "processed") - tot(a, "processed")
    busy = tot(b, "busy_cycles") - tot(a, "busy_cycles")
    idle = tot(b, "idle_cycles") - tot(a, "idle_cycles")
    drops = {}
    for wa, wb in zip(a["workers"], b["workers"]):
        for k, v in wb["drops"].items():
            if v - wa["drops"][k]:
                drops[k] = drops.get(k, 0) + v - wa["drops"][k]
    run_s = (b["run_ns"] - a["run_ns"]) / 1e9 / len(b["workers"])
    if run_s <= 0:          # no worker thread found: a rate per CPU second would be made up
        raise RuntimeError("no CPU time of the gateway's worker threads (rte-worker/"
                           "lcore-worker in /proc/PID/task): cannot measure")
    share = run_s / dt
    res = {"mpps": tx / dt / share / 1e6, "wall_mpps": tx / dt / 1e6, "cpu_share": share,
           "rx_mpps": rx / dt / 1e6, "gbps": txb * 8 / dt / share / 1e9,
           "busy_cycles_per_pkt": busy / proc if proc else None,
           "loop_cycles_per_pkt": (busy + idle) / proc if proc else None,
           "cycles_per_pkt": (run_s * len(b["workers"]) * tsc_hz / proc
                              if proc and tsc_hz else None),
           "busy_frac": busy / (busy + idle) if busy + idle else 0.0,
           "window_s": dt, "drops": drops,
           "worker_mpps": [(wb["processed"] - wa["processed"]) / dt / 1e6
                           for wa, wb in zip(a["workers"], b["workers"])]}
    if tsc_hz and busy + idle:
        # the workers' own clock over the same window (all workers together)
        res["worker_s"] = (busy + idle) / tsc_hz / len(b["workers"])
    return res


def tsc_rate(tp: dict) -> float:
    """The TSC rate: testpmd's (rte_get_tsc_hz()), else /proc/cpuinfo's clock."""
    return tp.get("tsc_hz") or (machine()["cpuinfo_mhz"] or 0) * 1e6


def run_gateway(work: Path, tag: str, src_role: str, pcap: Path, policy: Path, window: float,
                tsc_hz: float, workers: int = 1, queues: int = 1, during=None,
                rss: str = "auto") -> dict:
    run = work / "runs" / tag
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    cfg = gw_config(run, src_role, pcap, policy, workers, queues, rss=rss)
    gw = Gateway(run, cfg)
    t_start = time.monotonic()
    gw.start()
    load_s = time.monotonic() - t_start
    extra = {}
    try:
        time.sleep(1.0)                       # past the first bursts and pool warm-up
        ctx = during(gw) if during else None
        if ctx is not None:
            ctx.__enter__()
            time.sleep(1.0)                   # updates in full swing before measuring
        a = gw.sample()
        time.sleep(window)
        b = gw.sample()
        if ctx is not None:
            ctx.__exit__(None, None, None)
            extra = ctx.result(a["t"], b["t"])
    finally:
        final = gw.stop()
    res = delta(a, b, tsc_hz)
    res["start_s"] = round(load_s, 2)
    res.update(extra)
    if final:
        res["final_drops"] = {k: v for k, v in final["drops"].items() if v}
    return res


def perf_profile(work: Path, tag: str, src_role: str, pcap: Path, policy: Path,
                 seconds: float = 3.0) -> dict:
    """Where the worker's time goes: perf sampling (cpu-clock, software: this VM has no
    hardware counters) of the worker thread only, by shared object and by symbol."""
    run = work / "runs" / tag
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    gw = Gateway(run, gw_config(run, src_role, pcap, policy)).start()
    try:
        time.sleep(1.0)
        task = Path(f"/proc/{gw.proc.pid}/task")
        tid = next(t.name for t in task.iterdir()
                   if (t / "comm").read_text().strip().startswith(("rte-worker",
                                                                   "lcore-worker")))
        data = run / "perf.data"
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-t", tid, "-o", str(data),
                        "--", "sleep", str(seconds)], capture_output=True)
    finally:
        gw.stop()
    out = {}
    for key in ("dso", "dso,sym"):
        rep = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", key,
                              "--stdio", "-q", "-g", "none", "--percent-limit", "1"],
                             capture_output=True, text=True).stdout
        out[key] = [" ".join(line.split()) for line in rep.splitlines() if "%" in line][:25]
    return out


# -- instructions per packet (callgrind) ---------------------------------------------

CG_PARTS = (("nvgw", "_dataplane"), ("net_pcap rx", "librte_net_pcap"),
            ("net_null tx", "librte_net_null"), ("testpmd", "dpdk-testpmd"))


def cg_parts(out: Path, packets: int) -> dict:
    """Instructions per packet of one callgrind profile, by shared object: the self
    cost lines of the profile summed per `ob=` (the line after `calls=` is the cost of
    the call, counted where it is spent)."""
    names: dict[str, str] = {}
    parts: dict[str, float] = {}
    obj, skip, total = "", False, 0
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith(("ob=", "cob=")):
            # names are compressed: "(n) name" the first time, "(n)" after,
            # and the first time may be a callee's (cob=)
            m = re.match(r"c?ob=(?:\((\d+)\))?\s*(.*)", line)
            if m.group(2):
                names[m.group(1)] = m.group(2)
            if line.startswith("ob="):
                obj = m.group(2) or names.get(m.group(1), "")
        elif line.startswith("calls="):
            skip = True
        elif line[:1] in "0123456789+-*":
            if skip:
                skip = False
                continue
            f = line.split()
            if len(f) > 1:
                ir = int(f[1])
                name = next((n for n, key in CG_PARTS if key in obj), "other (libc, EAL, TLS)")
                parts[name] = parts.get(name, 0) + ir
                total += ir
    res = {k: v / packets for k, v in parts.items()}
    res["total"] = total / packets
    return res


def callgrind_testpmd(work: Path, pcap: Path, seconds: float) -> dict:
    """testpmd io-forward under callgrind: the forwarding thread's instructions over
    the packets it forwarded (its accumulated TX-packets at exit)."""
    run = work / "runs" / "cg-testpmd"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    argv = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
            f"--callgrind-out-file={run}/cg.out", *testpmd_argv(pcap)]
    log_path = run / "testpmd.log"
    with open(log_path, "w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        # forwarding starts once "Press enter to exit" is printed
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None:
            if "Press enter" in log_path.read_text(errors="replace"):
                break
            time.sleep(1)
        time.sleep(seconds)
        stop_process(proc, signal.SIGINT, 300)
    text = log_path.read_text(errors="replace")
    acc = text.split("Accumulated forward statistics", 1)[-1]
    m = re.search(r"TX-packets:\s+(\d+)", acc)
    if not m or not int(m.group(1)):
        raise RuntimeError(f"testpmd under callgrind forwarded nothing; see {log_path}")
    # one profile per thread: the forwarding lcore's is the one that sent packets
    threads = [cg_parts(out, int(m.group(1))) for out in run.glob("cg.out-*")]
    return max(threads, key=lambda r: r.get("net_null tx", 0))


def callgrind_gateway(work: Path, tag: str, src_role: str, pcap: Path, policy: Path,
                      seconds: float) -> dict:
    """The gateway under callgrind, collecting only inside the worker loop
    (nvgw_worker_main): its instructions over the packets the worker processed."""
    run = work / "runs" / tag
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    cfg = gw_config(run, src_role, pcap, policy)
    stats = run / "stats.json"
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={run}/cg.out",
            "--collect-atstart=no", "--toggle-collect=nvgw_worker_main", PY, "-m",
            "dataplane.cli", "--config", str(cfg), "--duration", str(seconds),
            "--stats-json", str(stats), "--log-level", "warning"]
    with open(run / "gw.log", "w") as f:
        subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, timeout=1800,
                       stdin=subprocess.DEVNULL)
    st = json.loads(stats.read_text())
    packets = sum(w["processed"] for w in st["workers"])
    drops = {k: v for k, v in st["drops"].items() if v}
    if not packets or drops:
        raise RuntimeError(f"{tag}: {packets} packets, drops {drops}; see {run}/gw.log")
    return cg_parts(run / "cg.out", packets)


def callgrind_rows(work: Path, wk: dict, counts, kinds, role: dict, seconds: float) -> dict:
    """Instructions per packet (stable on a noisy machine, unlike cycles) for testpmd
    and each gateway row, split by shared object, with the ratio to testpmd."""
    log("callgrind: testpmd io-forward")
    rows = {"testpmd io 64B": callgrind_testpmd(work, wk["pcap"][("io", "64")], seconds)}
    for n in counts:
        for kind in kinds:
            log(f"callgrind: {kind} {n:,}")
            pol = policy_of(wk, n, kind)
            rows[f"{kind} {n:,}"] = callgrind_gateway(work, f"cg-{kind}-{n}", role[kind],
                                                      wk["pcap"][(n, kind, "64")], pol,
                                                      seconds)
    base = rows["testpmd io 64B"]["total"]
    for r in rows.values():
        r["x_testpmd"] = base / r["total"]
    return rows


def callgrind_markdown(rows: dict) -> str:
    cols = [n for n, _ in CG_PARTS] + ["other (libc, EAL, TLS)"]
    out = ["| row | instructions/pkt | x testpmd | " + " | ".join(cols) + " |",
           "|---|---:|---:|" + "---:|" * len(cols)]
    for name, r in rows.items():
        out.append(f"| {name} | {r['total']:.0f} | {r['x_testpmd']:.3f} | " +
                   " | ".join(f"{r[c]:.0f}" if c in r else "" for c in cols) + " |")
    return "\n".join(out) + "\n"


# -- scaling over cores -------------------------------------------------------------

def scaling_rows(work: Path, wk: dict, counts, kinds, role: dict, cores: list[int],
                 reps: int, window: float, rss: str) -> dict:
    """For each core count N: testpmd io-forward on N forwarding cores, then each row
    with N workers, each on its own queue of the source port (a copy of the pcap each).
    rss "auto" (software RSS here) hands each packet to its flow's worker, as for NVGRE
    from one outer host pair; "queues" keeps it where it came in, as a NIC's RSS that
    spreads the flows. Median of `reps` runs per cell."""
    cells: dict[tuple, list] = {}
    for rep in range(reps):
        for n_cores in cores:
            log(f"repetition {rep + 1}/{reps}, {n_cores} core(s)")
            tp = run_testpmd(work, wk["pcap"][("io", "64")], window,
                             f"64-c{n_cores}-{rep}", cores=n_cores)
            tp["ratio"] = 1.0
            cells.setdefault(("testpmd io 64B", n_cores), []).append(tp)
            log(f"  testpmd: {tp['mpps']:.2f} Mpps")
            for n in counts:
                for kind in kinds:
                    pol = policy_of(wk, n, kind)
                    res = run_gateway(work, f"{kind}-{n}-c{n_cores}-{rep}", role[kind],
                                      wk["pcap"][(n, kind, "64")], pol, window, tsc_rate(tp),
                                      workers=n_cores, queues=n_cores, rss=rss)
                    res["ratio"] = res["mpps"] / tp["mpps"]
                    cells.setdefault((f"{kind} {n:,}", n_cores), []).append(res)
                    log(f"  {kind} {n:,}: {res['mpps']:.2f} Mpps, x{res['ratio']:.3f}, "
                        f"drops {res.get('drops')}")
    out: dict[str, dict] = {}
    for med in summarize(cells):            # medians and spreads, as the main table's
        row, n_cores = med.pop("row")
        out.setdefault(row, {})[str(n_cores)] = med
    for row in out.values():                # speed-up over the same row on one core
        one = row.get("1")
        for n_cores, med in row.items():
            med["per_core_of_1"] = (med["mpps"] / int(n_cores) / one["mpps"]
                                    if one else None)
    return out


def scaling_markdown(rows: dict, cores: list[int], meta: dict) -> str:
    m = meta["machine"]
    out = [f"Measured {meta['date']} on {m['cpu']} ({m['cpus']} CPUs), "
           f"{'hugepages' if m['hugepages'] else 'no hugepages'}, workers.rss = "
           f"{meta['rss']}; median of {meta['reps']} runs, {meta['window_s']:g} s windows. "
           "Each cell: Mpps (the rate with all N cores busy: packets per second over the "
           "workers' mean share of CPU time), x testpmd io-forward on as many cores, in "
           "brackets Mpps per core over the same row's one-core Mpps, and the drops of all "
           "runs together.", "",
           "| row | " + " | ".join(f"{c} core{'s' if c > 1 else ''}" for c in cores) + " |",
           "|---|" + "---:|" * len(cores)]
    for name, row in rows.items():
        cells = []
        for c in cores:
            r = row.get(str(c))
            cells.append("-" if r is None else
                         f"{r['mpps']:.2f}, x{r['ratio']:.2f} ({fmt(r['per_core_of_1'])})"
                         + (f", {r['drops']} drops" if r["drops"] else ""))
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


# -- record updates during traffic ---------------------------------------------------

UPDATER = r"""
import json, select, sys, time
import zmq
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/scripts")
import bench_workloads as wl
from dataplane.control import request_frames
endpoint, n, rate, batch, out = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
sock = zmq.Context.instance().socket(zmq.REQ)
sock.connect(endpoint)
per = wl.per_domain(n)
keys = [(rd, i) for rd in range(1, wl.domains(n) + 1) for i in range(per)]
period = batch / rate
payloads = {}       # (first key, alt) -> the encoded request: this process measures
                    # the gateway, so it builds each distinct batch once
def payload(k):
    key = k % len(keys), (k // len(keys)) & 1
    if key not in payloads:         # each pass moves every record to its other PA
        ops = [{"op": "set", "kind": "record", **wl.record(
                n, *keys[(k + j) % len(keys)], "encap", ((k + j) // len(keys) + 1) & 1)}
               for j in range(batch)]
        payloads[key] = request_frames("apply", ops=ops)    # as ControlClient sends it
    return payloads[key]
applied, requests, k, lat, acks = 0, 0, 0, [], []
t0 = time.monotonic(); nxt = t0
while True:
    if select.select([sys.stdin], [], [], 0)[0]:
        break
    raw = payload(k)
    k += batch
    s = time.monotonic()
    sock.send_multipart(raw)
    reply = json.loads(sock.recv())
    if not reply.get("ok"):
        sys.exit(f"apply refused: {reply}")
    a = time.monotonic()
    lat.append(a - s)
    acks.append(a)
    applied += batch; requests += 1
    nxt += period
    d = nxt - time.monotonic()
    if d > 0:
        time.sleep(d)
t1 = time.monotonic()
lat.sort()
json.dump({"updates": applied, "requests": requests, "seconds": t1 - t0,
           "rate": applied / (t1 - t0), "apply_p50_ms": 1000 * lat[len(lat) // 2],
           "apply_p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
           "last_alt": (k // len(keys)) & 1, "k": k, "batch": batch, "acks": acks},
          open(out, "w"))
"""


# The updater paces its requests this much faster than the rate asked for: a window of
# 3 s holds 300 requests of 1,000 at 100,000 a second, give or take one at its edges (a
# third of a percent), and the rate is counted in the window, which must hold the rate
# asked for (more updates a second is the harder test, never the easier).
PACE = 1.02


class Updates:
    """A separate process applying at least `rate` record updates a second through the
    control socket, `batch` per request; pinned to the CPU the workers do not use."""

    def __init__(self, gw: Gateway, n: int, rate: int, batch: int):
        self.gw, self.n, self.rate, self.batch = gw, n, rate, batch
        self.out = gw.run / "updates.json"
        self.t = None

    def __enter__(self):
        argv = [PY, "-c", UPDATER, str(ROOT), self.gw.ctl.endpoint, str(self.n),
                str(round(self.rate * PACE)), str(self.batch), str(self.out)]
        if shutil.which("taskset"):
            argv = ["taskset", "-c", "0"] + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, cwd=ROOT,
                                     stdout=open(self.gw.run / "updater.log", "w"),
                                     stderr=subprocess.STDOUT)
        self.t = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.proc.stdin.write(b"stop\n")
        self.proc.stdin.flush()
        self.proc.stdin.close()
        self.proc.wait(60)

    def result(self, a: float | None = None, b: float | None = None) -> dict:
        """The updates acked (applied by the gateway) a second between monotonic times a
        and b (the measuring window); without them, from the first ack to the last."""
        try:
            r = json.loads(self.out.read_text())
        except (OSError, ValueError):
            return {"updates": None, "updates_per_s": None,
                    "updater_log": (self.gw.run / "updater.log").read_text()}
        acks = r["acks"]
        if a is not None and b is not None:
            rate = r["batch"] * sum(1 for t in acks if a <= t <= b) / (b - a)
        elif len(acks) > 1:
            rate = r["batch"] * (len(acks) - 1) / (acks[-1] - acks[0])
        else:
            rate = None
        return {"updates_per_s": rate, "update_requests": r["requests"],
                "updates": r["updates"], "updater_rate_overall": r["rate"],
                "apply_p50_ms": r["apply_p50_ms"], "apply_p99_ms": r["apply_p99_ms"]}


def verify_updates(work: Path, counts: list, rate: int, batch: int, seconds: float) -> dict:
    """Zero lost or misdelivered packets while records move: a shorter run whose
    provider port writes every frame to a pcap. The source replays the encap pcap in
    order and one worker keeps that order, so output frame j is input frame j mod P
    (no frame lost, none added). Each must be the input's inner packet (TTL - 1) in
    whole NVGRE: outer IPv4 from our PA to one of the record's two PAs (old or new),
    to the MAC of that PA's neighbour (a record moved with a stale next hop would go to
    the other host), GRE 0x2000/0x6558 with the record's VSID and a FlowID that stays
    the same for the same packet, the subnet gateway's MAC to the record's inner MAC;
    both IPv4 checksums right. The moves must show: the same input packet seen leaving
    to the other PA (`pa_changes`), and the updates applied at the rate asked for."""
    n = counts[0]
    tag = "verify-updates"
    run = work / "runs" / tag
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    pcap = work / pcap_name("encap", n, "64")
    policy = work / f"policy-encap-{n}.json"
    out = run / "fabric-out.pcap"
    # Encapsulated frames leave on the provider port: a pcap device (net_pcap1, an empty
    # rx pcap) that writes them to a file instead of the null sink.
    cfg = gw_config(run, "customer", pcap, policy)
    empty = run / "empty.pcap"
    wl.write_pcap(empty, [])
    cfg.write_text(cfg.read_text().replace(
        'device = "net_null0,no-rx=1"', f'device = "net_pcap1,rx_pcap={empty},tx_pcap={out}"'))
    gw = Gateway(run, cfg)
    gw.start()
    up = Updates(gw, n, rate, batch)
    try:
        with up:
            time.sleep(seconds)
    finally:
        final = gw.stop()
    upd = up.result()
    inputs = list(wl.read_pcap(pcap))
    picks = wl.picks(n, "encap", PKTS, "64")
    pa_mac = {wl._ip4(x["ip"]): wl._mac(x["mac"])
              for x in wl.policy(n)["neighbours"] if "vlan" not in x}
    allowed = []
    for p in picks:
        r0, r1 = wl.record(n, p.rd, p.dst, "encap", 0), wl.record(n, p.rd, p.dst, "encap", 1)
        allowed.append((r0["vsid"], wl._mac(r0["mac"]), {wl._ip4(r0["pa"]), wl._ip4(r1["pa"])}))
    our_pa, gw_mac = wl._ip4(wl.PROVIDER_PA), wl._mac(wl.SUBNET_GW_MAC)
    last_pa, flowid = [None] * len(inputs), [None] * len(inputs)
    src_macs = set()
    bad, total, changes = [], 0, 0
    for j, f in enumerate(wl.read_pcap(out)):
        total += 1
        i = j % len(inputs)
        src = inputs[i]
        vs, mac, pas = allowed[i]
        ok = (len(f) >= 14 + 20 + 8 + 14 + 20 and f[12:14] == b"\x08\x00" and
              f[14] == 0x45 and f[23] == 47 and f[34:38] == b"\x20\x00\x65\x58")
        if ok:
            dst = f[30:34]
            key = int.from_bytes(f[38:42], "big")
            inner = bytearray(src[18:])
            inner[8] -= 1                                  # TTL - 1
            got = bytearray(f[56:])
            got[10:12] = inner[10:12]                      # header checksum (checked below)
            if flowid[i] is None:
                flowid[i] = key & 0xFF
            ok = (dst in pas and f[0:6] == pa_mac.get(dst) and f[26:30] == our_pa and
                  key >> 8 == vs and key & 0xFF == flowid[i] and
                  f[42:48] == mac and f[48:54] == gw_mac and f[54:56] == b"\x08\x00" and
                  got == inner and _csum_ok(f[56:76]) and _csum_ok(f[14:34]))
            if ok:
                src_macs.add(f[6:12])
                changes += last_pa[i] is not None and last_pa[i] != dst
                last_pa[i] = dst
        if not ok and len(bad) < 5:
            bad.append({"frame": j, "hex": f[:80].hex()})
        if not ok:
            bad.append(None)
    c = final or {}
    ports = {p["name"]: p for p in c.get("ports", [])}
    rx = ports.get("customer", {}).get("rx_pkts")
    drops = {k: v for k, v in c.get("drops", {}).items() if v}
    return {"records": n, "frames_in": rx, "frames_out": total,
            "misdelivered": sum(1 for b in bad if b is None), "examples": [b for b in bad if b],
            "outer_source_macs": len(src_macs), "pa_changes": changes,
            "drops": drops, "lost": (rx - total) if rx is not None else None, **upd}


def _csum_ok(hdr: bytes) -> bool:
    s = sum(int.from_bytes(hdr[i:i + 2], "big") for i in range(0, len(hdr), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


# -- control plane ---------------------------------------------------------------------

def _log_times(path: Path, event: str, generation: int | None = None) -> list[float]:
    """Unix times of JSON log lines named `event` (of that generation, when given)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == event and (generation is None or
                                          generation in (rec.get("generation"),
                                                         rec.get("applied"))):
            out.append(datetime.datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00"))
                       .timestamp())
    return out


def nearest_rank(ordered: list, p: float):
    """The p-th percentile of sorted samples by nearest rank: of 100, p99 is the 99th
    (not the largest); of fewer than 100, it is the largest."""
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def control_plane(work: Path, n_records: int, migrates: int) -> dict:
    """nvgw-mgmt (CurveZMQ, SQLite) with one gateway (net_null ports, an [agent]):
    the time to apply n_records lookup records from the first byte the client sends
    to the gateway's ack (mgmt's wait answering), split by the two processes' log lines;
    then `migrates` migrate commands, each timed from the command to the ack."""
    from mgmt.client import MgmtClient
    from mgmt.keys import keygen
    cp = work / "control" / str(n_records)
    shutil.rmtree(cp, ignore_errors=True)
    (cp / "keys" / "clients").mkdir(parents=True)
    (cp / "keys" / "gateways").mkdir(parents=True)
    keygen(str(cp / "keys"), "server")
    keygen(str(cp / "peers"), "ops")
    keygen(str(cp / "peers"), "gw1")
    shutil.copy(cp / "peers" / "ops.key", cp / "keys" / "clients")
    shutil.copy(cp / "peers" / "gw1.key", cp / "keys" / "gateways")
    mlog = cp / "mgmt.log"
    mgmt = subprocess.Popen(
        [PY, "-m", "mgmt.server", "--db", str(cp / "mgmt.db"), "--clients",
         f"ipc://{cp}/clients.sock", "--gateways", f"ipc://{cp}/gateways.sock",
         "--keys", str(cp / "keys"), "--heartbeat", "1", "--log-level", "info"],
        stdout=open(mlog, "w"), stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    client = MgmtClient(f"ipc://{cp}/clients.sock", str(cp / "peers" / "ops.key_secret"),
                        str(cp / "keys" / "server.key"), timeout=600)
    gw = None
    res = {"records": n_records}
    try:
        for _ in range(100):
            if (cp / "clients.sock").exists():
                break
            time.sleep(0.1)
        # the policy without its records, then the gateway
        doc = wl.policy(n_records)
        records = doc.pop("records")
        client.load(doc)
        run = cp / "gw"
        run.mkdir()
        mem = "hugepages" if HUGEPAGES else "no-huge"
        cfg = run / "gw.toml"
        cfg.write_text(
            f'[eal]\nmemory = "{mem}"\nmemory_mb = {MEMORY_MB}\n[workers]\nlcores = [1]\n'
            '[pipeline]\nmode = "nvgre"\n'
            "[tables]\nrecords = 1048576\nroutes = 131072\nneighbours = 8192\n"
            f'[control]\nsocket = "ipc://{run}/ctl.sock"\n'
            f'[agent]\nendpoint = "ipc://{cp}/gateways.sock"\nid = "gw1"\n'
            f'key = "{cp}/peers/gw1.key_secret"\nserver_key = "{cp}/keys/server.key"\n'
            "heartbeat_ms = 1000\n"
            '[[ports]]\nname = "fabric"\nrole = "provider"\ndevice = "net_null0,no-rx=1"\n'
            '[[ports]]\nname = "tenants"\nrole = "customer"\ndevice = "net_null1,no-rx=1"\n')
        gw = subprocess.Popen([PY, "-m", "dataplane.cli", "--config", str(cfg),
                               "--log-level", "info"], stdout=open(run / "gw.log", "w"),
                              stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        client.wait(timeout=60, min_gateways=1)
        # One batch of n_records 'set record' operations through the client API, as
        # automation (or `nvgwctl apply -f`) sends it: the client packs them into a
        # record block (mgmt/client.py) before the first byte goes out.
        ops = [{"op": "set", "kind": "record", **r} for r in records]
        t = time.time()
        gen = client.apply(ops)["generation"]
        t1 = time.time()
        t0 = client.last_sent_at                             # first byte sent
        res["encode_s"] = t0 - t
        res["message_mb"] = client.last_sent_bytes / 1e6
        client.wait(gen, timeout=600, min_gateways=1)
        t2 = time.time()
        res["apply_to_ack_s"] = t2 - t0
        res["call_to_ack_s"] = t2 - t
        res["mgmt_commit_s"] = t1 - t0
        stored = _log_times(mlog, "apply", gen)
        sent = _log_times(mlog, "batch_sent", gen)
        applied = _log_times(run / "gw.log", "policy_applied", gen)
        acked = _log_times(mlog, "gateway_ack", gen)
        if stored and sent and applied and acked:
            res["breakdown_s"] = {"mgmt_validate_store": stored[0] - t0,
                                  "mgmt_to_first_batch_sent": sent[0] - stored[0],
                                  "gateway_receive_apply": applied[0] - sent[0],
                                  "applied_to_ack": acked[0] - applied[0]}
        res["heartbeat_losses"] = len(_log_times(mlog, "gateway_lost")) + \
            len(_log_times(run / "gw.log", "mgmt_lost"))
        res["batches_sent"] = len(sent)
        # migrate latency, command to ack, with the million records in place
        lat = []
        for k in range(migrates):
            r = records[(k * 7919) % len(records)]
            pa = wl.nvgre_pa(n_records, 1, k, 1)
            s = time.time()
            g = client.migrate(r["vsid"], r["ca"], pa)["generation"]
            client.wait(g, timeout=120, min_gateways=1)
            lat.append(time.time() - s)
        lat.sort()
        res["migrate"] = {"count": len(lat), "p50_ms": 1000 * nearest_rank(lat, 0.50),
                          "p99_ms": 1000 * nearest_rank(lat, 0.99),
                          "max_ms": 1000 * lat[-1]}
        # A restarted gateway gets everything back: a snapshot (the document and one
        # record block), from nvgw-mgmt sending it to the gateway's ack.
        gen = client.generation()
        gw.send_signal(signal.SIGTERM)
        gw.wait(60)
        t = time.time()
        while time.time() - t < 30 and any(r["state"] == "up" for r in client.gateways()):
            time.sleep(0.1)                     # nvgw-mgmt has noticed it is gone
        gw = subprocess.Popen([PY, "-m", "dataplane.cli", "--config", str(cfg),
                               "--log-level", "info"], stdout=open(run / "gw2.log", "w"),
                              stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        t = time.time()
        while time.time() - t < 120 and not _log_times(mlog, "snapshot_sent", gen):
            time.sleep(0.2)
        client.wait(gen, timeout=600, min_gateways=1)
        snap, acks = _log_times(mlog, "snapshot_sent", gen), _log_times(mlog, "gateway_ack", gen)
        if snap and acks:
            res["snapshot_to_ack_s"] = max(acks) - max(snap)
        # nvgw-mgmt restarted with the million records in its store: until it answers.
        mgmt.send_signal(signal.SIGTERM)
        mgmt.wait(60)
        t = time.time()
        mgmt = subprocess.Popen(
            [PY, "-m", "mgmt.server", "--db", str(cp / "mgmt.db"), "--clients",
             f"ipc://{cp}/clients.sock", "--gateways", f"ipc://{cp}/gateways.sock",
             "--keys", str(cp / "keys"), "--heartbeat", "1", "--log-level", "info"],
            stdout=open(cp / "mgmt2.log", "w"), stderr=subprocess.STDOUT, cwd=ROOT,
            start_new_session=True)
        quick = MgmtClient(f"ipc://{cp}/clients.sock", str(cp / "peers" / "ops.key_secret"),
                           str(cp / "keys" / "server.key"), timeout=1)
        while time.time() - t < 120:
            try:
                if quick.generation() == gen:
                    res["mgmt_restart_s"] = time.time() - t
                    break
            except Exception:
                time.sleep(0.05)
    finally:
        for p in (gw, mgmt):
            if p is not None:
                stop_process(p)
    return res


# -- report ----------------------------------------------------------------------------

def summarize(rows: dict) -> list[dict]:
    out = []
    for name, reps in rows.items():
        def med(key):
            vals = [r[key] for r in reps if r.get(key) is not None]
            return statistics.median(vals) if vals else None
        def spread(key):
            vals = [r[key] for r in reps if r.get(key) is not None]
            return [min(vals), max(vals)] if vals else None
        out.append({"row": name, "runs": len(reps), "mpps": med("mpps"),
                    "mpps_spread": spread("mpps"), "ratio": med("ratio"),
                    "ratio_spread": spread("ratio"), "cycles_per_pkt": med("cycles_per_pkt"),
                    "busy_cycles_per_pkt": med("busy_cycles_per_pkt"), "gbps": med("gbps"),
                    "wall_mpps": med("wall_mpps"), "cpu_share": med("cpu_share"),
                    "drops": sum(sum(r.get("drops", {}).values()) for r in reps),
                    # a repetition whose updater failed (None) fails the goal: no min
                    **({"updates_per_s": med("updates_per_s"),
                        "updates_per_s_min": (None if any(r.get("updates_per_s") is None
                                                          for r in reps)
                                              else min(r["updates_per_s"] for r in reps))}
                       if any("updates_per_s" in r for r in reps) else {})})
    return out


def fmt(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


def markdown(summary: list[dict], meta: dict, control: dict | None, verify: dict | None,
             goals: list[str]) -> str:
    lines = [f"Measured {meta['date']} on {meta['machine']['cpu']} "
             f"({meta['machine']['cpus']} CPUs, shared), "
             f"{'hugepages' if meta['machine']['hugepages'] else 'no hugepages'}, "
             f"TSC {meta['tsc_hz'] / 1e9:.2f} GHz; one worker core; median of "
             f"{meta['reps']} runs (spread min..max), {meta['window_s']:g} s windows; "
             f"pcaps of {PKTS} distinct packets. Mpps is per second of CPU time the worker "
             "thread ran (schedstat; the machine is shared, so wall-clock rates also measure "
             "the neighbours: 'wall' and 'CPU' columns); cycles/pkt = worker CPU time x TSC "
             "/ packets, and the worker loop's own busy cycles / packets.",
             "",
             "| row | Mpps | spread | x testpmd | spread | cycles/pkt | busy cycles/pkt | "
             "wall Mpps | CPU | drops |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        sp = s["mpps_spread"] or [None, None]
        rs = s["ratio_spread"] or [None, None]
        name = s["row"] + (f" ({s['updates_per_s'] / 1000:.0f}k upd/s achieved)"
                           if s.get("updates_per_s") else "")
        lines.append(f"| {name} | {fmt(s['mpps'])} | {fmt(sp[0])}..{fmt(sp[1])} | "
                     f"{fmt(s['ratio'], 3)} | {fmt(rs[0], 3)}..{fmt(rs[1], 3)} | "
                     f"{fmt(s['cycles_per_pkt'], 0)} | {fmt(s['busy_cycles_per_pkt'], 0)} | "
                     f"{fmt(s['wall_mpps'])} | {fmt(s['cpu_share'])} | {s['drops']} |")
    if verify:
        lines += ["", f"Updates verification (pcap output, {verify['records']} records, "
                  f"{fmt(verify.get('updates_per_s'), 0)} updates/s achieved): "
                  f"{verify['frames_in']} frames in, {verify['frames_out']} out, "
                  f"{verify['pa_changes']} seen moving to the other PA, "
                  f"lost {verify['lost']}, misdelivered {verify['misdelivered']}, "
                  f"drops {verify['drops'] or 'none'}."]
    if control:
        lines += [""]
        for c in control.get("runs", []):
            b = c.get("breakdown_s", {})
            lines.append(f"Control plane, {c['records']:,} records through nvgw-mgmt "
                         f"({c.get('message_mb', 0):.0f} MB message, a record block; the "
                         f"client packed it in {fmt(c.get('encode_s'))} s before the first "
                         f"byte): {fmt(c.get('apply_to_ack_s'))} s first byte to ack"
                         + (f" (nvgw-mgmt validate+store {fmt(b.get('mgmt_validate_store'))} s, "
                            f"until the batch is sent {fmt(b.get('mgmt_to_first_batch_sent'))} s, "
                            f"gateway receive+apply {fmt(b.get('gateway_receive_apply'))} s, "
                            f"applied to ack {fmt(b.get('applied_to_ack'), 3)} s; the batch "
                            f"was sent {c.get('batches_sent')} times)" if b else "")
                         + f"; heartbeat losses {c.get('heartbeat_losses')}"
                         + (f"; a restarted gateway is sent a snapshot and acks it "
                            f"{fmt(c['snapshot_to_ack_s'])} s later"
                            if c.get("snapshot_to_ack_s") is not None else "")
                         + (f"; nvgw-mgmt restarted answers after {fmt(c['mgmt_restart_s'])} s"
                            if c.get("mgmt_restart_s") is not None else "")
                         + f"; migrate command to ack p50 {fmt(c['migrate']['p50_ms'], 1)} ms, "
                         f"p99 {fmt(c['migrate']['p99_ms'], 1)} ms ({c['migrate']['count']} "
                         f"migrates, {c['records']:,} records).")
    if goals:
        lines += ["", "Goals (issue 7):", ""] + [f"- {g}" for g in goals]
    return "\n".join(lines) + "\n"


def chart(summary: list[dict], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no chart")
        return False
    names = [s["row"] for s in summary]
    vals = [s["mpps"] or 0 for s in summary]
    lo = [v - (s["mpps_spread"] or [v, v])[0] for v, s in zip(vals, summary)]
    hi = [(s["mpps_spread"] or [v, v])[1] - v for v, s in zip(vals, summary)]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(names) + 1.5))
    ax.barh(names, vals, xerr=[lo, hi], color=["#888" if n.startswith("testpmd") else "#3a7"
                                               for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("Mpps (median, min..max), one worker core")
    for i, s in enumerate(summary):
        if s["ratio"] is not None:
            ax.text(vals[i], i, f"  {s['ratio']:.2f}x", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def goals(summary: list[dict], counts, control, verify, rate: int = 100_000) -> list[str]:
    s = {r["row"]: r for r in summary}
    out = []

    def ratio(row):
        return s.get(row, {}).get("ratio")

    def check(label, got, want):
        if got is None:
            return
        out.append(f"{label}: {got:.3f} (goal >= {want}) {'met' if got >= want else 'NOT MET'}")
    lo, hi = counts[0], counts[-1]
    check(f"encap x testpmd, {lo:,} records", ratio(f"encap {lo:,}"), 0.60)
    if hi != lo:
        check(f"encap x testpmd, {hi:,} records", ratio(f"encap {hi:,}"), 0.45)
    check(f"decap x testpmd, {lo:,} records", ratio(f"decap {lo:,}"), 0.65)
    own, d = s.get(NVGRE_ROW), s.get(f"decap {lo:,}")
    if own and d and own["mpps"] and d["mpps"]:
        out.append(f"(for reference, not a goal: decap x testpmd on the same 102-byte NVGRE "
                   f"frames, {lo:,} records: {d['mpps'] / own['mpps']:.3f})")
    check(f"rewrite x testpmd, {lo:,} records", ratio(f"rewrite {lo:,}"), 0.60)
    if hi != lo:
        for k in wl.KINDS:
            a, b = s.get(f"{k} {lo:,}"), s.get(f"{k} {hi:,}")
            if a and b and a["mpps"] and b["mpps"]:
                check(f"{k} {hi:,} / {lo:,} records", b["mpps"] / a["mpps"], 0.80)
    up = s.get(f"encap {lo:,} + updates")
    if up and s.get(f"encap {lo:,}"):
        check("encap during updates / without", up["mpps"] / s[f"encap {lo:,}"]["mpps"], 0.95)
        got = up.get("updates_per_s_min")      # every repetition's window holds it
        out.append(f"updates applied in the window, the slowest repetition: {fmt(got, 0)}/s "
                   f"(goal {rate:,}/s) {'met' if got is not None and got >= rate else 'NOT MET'}")
    if verify:
        ok = (verify["lost"] == 0 and verify["misdelivered"] == 0 and not verify["drops"] and
              verify["frames_out"] > 0 and verify["outer_source_macs"] == 1)
        moved = verify["pa_changes"] > 0 and (verify.get("updates_per_s") or 0) >= rate
        out.append(f"zero lost/misdelivered during updates: {'met' if ok and moved else 'NOT MET'}"
                   f" ({verify['frames_out']:,} frames, {verify['pa_changes']:,} seen moving to "
                   f"the other PA, {fmt(verify.get('updates_per_s'), 0)} updates/s applied)")
    for c in (control or {}).get("runs", []):
        if c["records"] < 1_000_000:
            continue
        if c.get("apply_to_ack_s") is None:     # a run that failed is no pass
            out.append(f"{c['records']:,} records through nvgw-mgmt: no figure "
                       f"({c.get('error', 'not measured')}) NOT MET")
        else:
            out.append(f"{c['records']:,} records through nvgw-mgmt: {c['apply_to_ack_s']:.1f} s "
                       f"(goal <= 5 s) {'met' if c['apply_to_ack_s'] <= 5 else 'NOT MET'}")
    return out


# -- main ------------------------------------------------------------------------------

def main(argv=None) -> int:
    global HUGEPAGES, PKTS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=os.environ.get("NVGW_BENCH_DIR", "/tmp/nvgw-bench"),
                    help="work directory: pcaps, policies, runs, results (default %(default)s)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--window", type=float, default=3.0, help="seconds measured per run")
    ap.add_argument("--records", default="1000,1000000")
    ap.add_argument("--packets", type=int, default=PCAP_PACKETS,
                    help="distinct packets per pcap, all preloaded by the source: with a "
                         "million records, 65,536 packets touch about 63,400 of them, a fraction "
                         "of the table; more packets touch more, and the source's own "
                         "stream grows with them (more EAL memory: memory_mb)")
    ap.add_argument("--kinds", default=",".join(wl.KINDS))
    ap.add_argument("--quick", action="store_true",
                    help="1,000 records, one run each, no IMIX, no control plane")
    ap.add_argument("--no-imix", action="store_true")
    ap.add_argument("--no-updates", action="store_true")
    ap.add_argument("--update-rate", type=int, default=100_000)
    ap.add_argument("--update-batch", type=int, default=1000)
    ap.add_argument("--no-workers2", action="store_true")
    ap.add_argument("--no-control", action="store_true")
    ap.add_argument("--control-records", type=int, default=1_000_000)
    ap.add_argument("--control-only", action="store_true",
                    help="only the control-plane figures (control.json)")
    ap.add_argument("--migrates", type=int, default=100)
    ap.add_argument("--profile", action="store_true",
                    help="also sample each gateway row's worker with perf (cpu-clock): "
                         "profile.json, the share of worker time per library and symbol")
    ap.add_argument("--callgrind", action="store_true",
                    help="only count instructions per packet under valgrind's callgrind "
                         "(testpmd and each row, without hugepages; 2-4 min a row): "
                         "callgrind.json and callgrind.md")
    ap.add_argument("--callgrind-seconds", type=float, default=8.0,
                    help="seconds each process forwards under callgrind")
    ap.add_argument("--scaling", metavar="CORES",
                    help="only the scaling rows, e.g. 1,2,4,8: testpmd on as many forwarding "
                         "cores and each row with as many workers, each on its own source "
                         "queue: scaling.json and scaling.md")
    ap.add_argument("--rss", choices=("auto", "queues"), default="auto",
                    help="workers.rss of the --scaling rows: auto (software RSS on these "
                         "ports: each packet handed to its flow's worker) or queues")
    ap.add_argument("--memory", choices=("auto", "hugepages", "no-huge"), default="auto",
                    help="EAL memory of testpmd and the gateway alike; auto: hugepages when "
                         f"the run's EAL memory ({MEMORY_MB} MB with the default --packets) "
                         "is free in them and hugetlbfs is mounted")
    args = ap.parse_args(argv)
    PKTS = args.packets
    mb = memory_mb(1)
    HUGEPAGES = args.memory == "hugepages" or (args.memory == "auto" and hugepages_ok(mb))
    if args.callgrind:
        HUGEPAGES = False           # valgrind: every process of the run without them
    if args.memory == "hugepages" and not hugepages_ok(mb):
        sys.exit(f"bench: --memory hugepages needs {mb} MB of free 2 MB hugepages "
                 "and hugetlbfs mounted")
    if args.rss != "auto" and not args.scaling:
        sys.exit("bench: --rss applies to the --scaling rows only")
    if args.quick:
        args.records, args.reps, args.no_imix, args.no_control = "1000", 1, True, True
    if shutil.which("dpdk-testpmd") is None:
        sys.exit("bench: dpdk-testpmd is missing (Debian package dpdk-dev; "
                 "scripts/bootstrap.sh installs it)")
    counts = [int(x) for x in args.records.split(",")]
    for n in counts:        # records come in whole domains (bench_workloads.domains)
        if n < 1 or n != wl.domains(n) * wl.per_domain(n):
            sys.exit(f"bench: --records {n}: not {wl.domains(n)} domains of equal size; "
                     f"take {wl.domains(n) * wl.per_domain(n)} or "
                     f"{wl.domains(n) * (wl.per_domain(n) + 1)}")
    kinds = args.kinds.split(",")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.control_only:
        res = control_plane(work, args.control_records, args.migrates)
        (work / "control.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return 0
    wk = build_workloads(work, counts, kinds, not (args.no_imix or args.callgrind
                                                          or args.scaling))
    meta = {"date": datetime.date.today().isoformat(), "machine": machine(),
            "reps": args.reps, "window_s": args.window, "packets_per_pcap": PKTS,
            "burst": BURST, "mbufs": PKTS + WORK_MBUFS, "mbuf_cache": MBUF_CACHE,
            "descriptors": DESCRIPTORS, "memory_mb": MEMORY_MB, "tsc_hz": None}
    role = {"encap": "customer", "rewrite": "customer", "decap": "provider",
            "hairpin": "provider"}
    if args.callgrind:
        if shutil.which("valgrind") is None:
            sys.exit("bench: --callgrind needs valgrind (apt-get install valgrind)")
        cg = callgrind_rows(work, wk, counts, kinds, role, args.callgrind_seconds)
        (work / "callgrind.json").write_text(json.dumps({"meta": meta, "rows": cg}, indent=1))
        md = callgrind_markdown(cg)
        (work / "callgrind.md").write_text(md)
        print(md)
        log(f"wrote {work}/callgrind.json, callgrind.md")
        return 0
    if args.scaling:
        try:
            cores = [int(x) for x in args.scaling.split(",")]
        except ValueError:
            cores = []
        if not cores or min(cores) < 1:
            sys.exit(f"bench: --scaling wants core counts like 1,2,4,8, not {args.scaling!r}")
        meta.update(memory_mb={c: memory_mb(c) for c in cores},
                    mbufs={c: c * PKTS + WORK_MBUFS for c in cores})
        if HUGEPAGES and not hugepages_ok(memory_mb(max(cores))):
            sys.exit(f"bench: {max(cores)} cores need {memory_mb(max(cores))} MB of free "
                     "2 MB hugepages (or --memory no-huge)")
        meta["rss"] = args.rss
        sc = scaling_rows(work, wk, counts, kinds, role, cores, args.reps, args.window,
                          args.rss)
        (work / "scaling.json").write_text(json.dumps({"meta": meta, "rows": sc}, indent=1))
        md = scaling_markdown(sc, cores, meta)
        (work / "scaling.md").write_text(md)
        print(md)
        log(f"wrote {work}/scaling.json, scaling.md")
        return 0
    rows: dict[str, list] = {}

    def add(name, res, base):
        res["ratio"] = res["mpps"] / base if base else None
        rows.setdefault(name, []).append(res)
        log(f"  {name}: {res['mpps']:.2f} Mpps, x{res['ratio'] or 0:.3f}, "
            f"{fmt(res.get('cycles_per_pkt'), 0)} cycles/pkt, drops {res.get('drops')}")

    for rep in range(args.reps):
        log(f"repetition {rep + 1}/{args.reps}")
        tp = run_testpmd(work, wk["pcap"][("io", "64")], args.window, f"64-{rep}")
        tsc = meta["tsc_hz"] = meta["tsc_hz"] or tsc_rate(tp)
        add("testpmd io 64B", tp, tp["mpps"])
        base64 = tp["mpps"]
        base_imix = None
        if not args.no_imix:
            tpi = run_testpmd(work, wk["pcap"][("io", "imix")], args.window, f"imix-{rep}")
            tpi["gbps"] = None
            base_imix = tpi["mpps"]
            add("testpmd io IMIX", tpi, base_imix)
        if {"decap", "hairpin"} & set(kinds):
            tpn = run_testpmd(work, wk["pcap"][(counts[0], NVGRE_KIND, "64")], args.window,
                              f"nvgre-{rep}")
            add(NVGRE_ROW, tpn, base64)
        for n in counts:
            for kind in kinds:
                pol = policy_of(wk, n, kind)
                res = run_gateway(work, f"{kind}-{n}-{rep}", role[kind],
                                  wk["pcap"][(n, kind, "64")], pol, args.window, tsc)
                add(f"{kind} {n:,}", res, base64)
        n = counts[0]
        if not args.no_imix:
            for kind in ("encap", "decap"):
                res = run_gateway(work, f"{kind}-{n}-imix-{rep}", role[kind],
                                  wk["pcap"][(n, kind, "imix")], wk["policy"][(n, "encap")],
                                  args.window, tsc)
                add(f"{kind} {n:,} IMIX", res, base_imix)
        if not args.no_workers2 and "encap" in kinds:
            res = run_gateway(work, f"encap-{n}-w2-{rep}", "customer",
                              wk["pcap"][(n, "encap", "64")], wk["policy"][(n, "encap")],
                              args.window, tsc, workers=2, queues=2)
            add(f"encap {n:,} 2 workers", res, base64)
        if not args.no_updates and "encap" in kinds:
            res = run_gateway(work, f"encap-{n}-updates-{rep}", "customer",
                              wk["pcap"][(n, "encap", "64")], wk["policy"][(n, "encap")],
                              args.window, tsc,
                              during=lambda gw: Updates(gw, n, args.update_rate,
                                                        args.update_batch))
            add(f"encap {n:,} + updates", res, base64)
    profile = None
    if args.profile and not shutil.which("perf"):
        sys.exit("bench: --profile needs perf (Debian package linux-perf)")
    if args.profile:
        profile = {}
        for n in counts:
            for kind in kinds:
                pol = policy_of(wk, n, kind)
                profile[f"{kind} {n:,}"] = perf_profile(work, f"prof-{kind}-{n}", role[kind],
                                                        wk["pcap"][(n, kind, "64")], pol)
        (work / "profile.json").write_text(json.dumps(profile, indent=1))
    verify = None
    if not args.no_updates and "encap" in kinds:
        log("verifying updates: no packet lost or misdelivered")
        verify = verify_updates(work, counts, args.update_rate, args.update_batch, 1.5)
        log(f"  {verify}")
    control = None
    if not args.no_control:
        control = {"runs": []}
        for n, m in ((args.control_records, args.migrates), (1000, args.migrates)):
            log(f"control plane: {n:,} records, {m} migrates")
            try:
                control["runs"].append(control_plane(work, n, m))
                log(f"  {control['runs'][-1]}")
            except Exception as e:          # report, and keep the packet results
                control["runs"].append({"records": n, "error": repr(e),
                                        "migrate": {"count": 0, "p50_ms": None,
                                                    "p99_ms": None}})
                log(f"  failed: {e!r}")
    summary = summarize(rows)
    g = goals(summary, counts, control, verify, args.update_rate)
    md = markdown(summary, meta, control, verify, g)
    out = {"meta": meta, "summary": summary, "runs": rows, "profile": profile, "verify_updates": verify,
           "control_plane": control, "goals": g}
    (work / "results.json").write_text(json.dumps(out, indent=1, default=str))
    (work / "results.md").write_text(md)
    chart(summary, work / "results.png")
    print(md)
    log(f"wrote {work}/results.json, results.md, results.png")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:        # testpmd's (EAL leaves one per prefix); the gateways remove theirs
        shutil.rmtree(runtime_dir(TESTPMD_PREFIX), ignore_errors=True)
