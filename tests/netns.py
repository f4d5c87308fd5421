"""Live traffic on veth pairs in a private network namespace.

`Netns` creates a namespace of its own with veth pairs inside (default fab0<->fab1 and
cus0<->cus1, fixed MACs, IPv6 off so the kernel sends nothing on them) and deletes it on
exit, which removes the veths. `NetnsGateway` is harness.GatewayProcess run with
`ip netns exec` on net_af_packet ports bound to fab0 (provider) and cus0 (customer); its
control socket is an ipc:// path in the work directory, so the test process outside the
namespace talks to it as usual. `Traffic` runs tests/traffic_gen.py inside the namespace:
it sends a list of frames at a fixed rate on one veth end (fab1 or cus1) and captures what
arrives on the others, with CLOCK_MONOTONIC times comparable to time.monotonic() here.

    with Netns() as ns:
        gw = NetnsGateway(ns, tmp_path / "gw", body).start()
        tr = Traffic(ns, tmp_path / "tr", "cus1", frames, rate=2000, capture=["fab1"])
        t0 = tr.start()             # monotonic time of the first send
        ...                         # gw.request(...) while traffic runs
        res = tr.wait()             # res.sent_times, res.captures["fab1"] = [(t, bytes)]
        gw.stop()

Needs root (ip netns, AF_PACKET); `unavailable()` says why not, for pytest.skip.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import GatewayProcess, read_pcap, write_pcap

TRAFFIC_GEN = Path(__file__).with_name("traffic_gen.py")
PAIRS = (("fab0", "fab1"), ("cus0", "cus1"))
MACS = {"fab0": "02:00:00:00:fa:00", "fab1": "02:00:00:00:fa:01",
        "cus0": "02:00:00:00:c0:00", "cus1": "02:00:00:00:c0:01"}
IP_TIMEOUT = 10.0

_counter = itertools.count()


def unavailable() -> str | None:
    """Why live namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces and AF_PACKET need root"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    return None


def _ip(*args: str) -> str:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r.stdout


class Netns:
    """A network namespace with veth pairs, all removed on exit. Only what it made."""

    def __init__(self, name_prefix: str = "nvgwt", pairs=PAIRS, macs=None):
        self.name = f"{name_prefix}{os.getpid()}x{next(_counter)}"
        self.pairs = tuple(pairs)
        self.macs = dict(MACS if macs is None else macs)
        self.created = False
        self._procs: list[subprocess.Popen] = []

    def create(self) -> "Netns":
        _ip("netns", "add", self.name)          # fails if the name exists: never adopt one
        self.created = True
        try:
            for a, b in self.pairs:
                _ip("-n", self.name, "link", "add", a, "type", "veth", "peer", "name", b)
            for dev in (d for pair in self.pairs for d in pair):
                if dev in self.macs:
                    _ip("-n", self.name, "link", "set", "dev", dev, "address", self.macs[dev])
                if os.path.isdir("/proc/sys/net/ipv6"):
                    self.run(["sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"],
                             check=True)
            for dev in (d for pair in self.pairs for d in pair):
                _ip("-n", self.name, "link", "set", "dev", dev, "up")
        except BaseException:
            self.close()
            raise
        return self

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], timeout: float = IP_TIMEOUT, **kw):
        return subprocess.run(self.command(argv), capture_output=True, text=True,
                              timeout=timeout, **kw)

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
        """A process inside the namespace, killed at close() if it is still running."""
        p = subprocess.Popen(self.command(argv), **kw)
        self._procs.append(p)
        return p

    def track(self, proc: subprocess.Popen) -> None:
        self._procs.append(proc)

    def mac(self, dev: str) -> str:
        return self.macs[dev]

    def close(self) -> None:
        for p in self._procs:               # only processes we started, by their own pid
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        self._procs.clear()
        if self.created:
            self.created = False
            _ip("netns", "del", self.name)

    def __enter__(self) -> "Netns":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.close()


def af_packet_port(name: str, role: str, index: int, iface: str, n_queues: int = 1) -> str:
    """A [[ports]] table for an af_packet port. The PMD has `qpairs` rx/tx queue pairs
    (default 1) and the gateway needs one tx queue per worker; more than one rx queue fans
    packets out across them, so queues follows the worker count too."""
    return "\n".join(["[[ports]]", f'name = "{name}"', f'role = "{role}"',
                      f'device = "net_af_packet{index},iface={iface},qpairs={n_queues}"',
                      f"queues = {n_queues}", ""])


class NetnsGateway(GatewayProcess):
    """The gateway inside `ns` on af_packet ports: provider on fab0, customer on cus0
    (their MACs are the veths' MACs). Port names: "fabric" and "tenants"."""

    def __init__(self, ns: Netns, workdir: Path, body: str = "", provider: str = "fab0",
                 customer: str = "cus0", lcores=(1,), memory_mb: int = 256):
        self.ns = ns
        n = len(lcores)
        ports = [af_packet_port("fabric", "provider", 0, provider, n),
                 af_packet_port("tenants", "customer", 1, customer, n)]
        super().__init__(workdir, ports, body, lcores=lcores, memory_mb=memory_mb)

    def command(self, *args) -> list[str]:     # start() calls self.command(...)
        return self.ns.command(GatewayProcess.command(*args))

    def start(self) -> "NetnsGateway":
        try:
            super().start()
        finally:
            if self.proc is not None:
                self.ns.track(self.proc)
        return self


@dataclass
class TrafficResult:
    sent_times: list[float]                     # monotonic, one per frame sent, in order
    captures: dict[str, list[tuple[float, bytes]]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    truncated: bool = False
    output: str = ""


class Traffic:
    """tests/traffic_gen.py inside the namespace: paced sending and capture."""

    def __init__(self, ns: Netns, workdir: Path, send: str, frames, rate: float,
                 capture=("fab1",), quiet: float = 0.5, limit: float = 20.0):
        self.ns, self.dir = ns, Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pcap = self.dir / "send.pcap"
        write_pcap(self.pcap, frames)
        self.capture = list(capture)
        self.limit = limit
        self.argv = [sys.executable, str(TRAFFIC_GEN), "--send", send, "--pcap", str(self.pcap),
                     "--rate", str(rate), "--out", str(self.dir), "--quiet", str(quiet),
                     "--limit", str(limit)]
        for iface in self.capture:
            self.argv += ["--capture", iface]
        self.proc: subprocess.Popen | None = None
        self.start_time: float | None = None

    def _output(self) -> str:
        return "".join((self.dir / n).read_text() for n in ("gen.out", "gen.err")
                       if (self.dir / n).exists())

    def start(self, timeout: float = 10.0) -> float:
        """Start the generator; return the monotonic time of its first send, once its
        capture sockets are bound."""
        with open(self.dir / "gen.out", "w") as out, open(self.dir / "gen.err", "w") as err:
            self.proc = self.ns.popen(self.argv, stdout=out, stderr=err)
        ready = self.dir / "ready"
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"traffic_gen exited {self.proc.returncode}:\n"
                                   f"{self._output()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(5)
                raise TimeoutError(f"traffic_gen not ready in {timeout} s:\n{self._output()}")
            time.sleep(0.005)
        self.start_time = float(ready.read_text())
        return self.start_time

    def wait(self, timeout: float | None = None) -> TrafficResult:
        """Wait for the generator to stop by itself (bounded), then read its results."""
        try:
            self.proc.wait(self.limit + 5 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
            raise TimeoutError(f"traffic_gen did not finish:\n{self._output()}") from None
        if self.proc.returncode != 0 or not (self.dir / "done").exists():
            raise RuntimeError(f"traffic_gen exited {self.proc.returncode}:\n{self._output()}")
        sent = json.loads((self.dir / "sent.json").read_text())
        caps = json.loads((self.dir / "captures.json").read_text())
        res = TrafficResult(sent["times"], truncated=sent["truncated"], output=self._output())
        for iface in self.capture:
            frames = read_pcap(self.dir / f"{iface}.pcap")
            times = caps[iface]["times"]
            assert len(times) == len(frames), f"{iface}: pcap and times disagree"
            res.captures[iface] = list(zip(times, frames))
            res.dropped[iface] = caps[iface]["dropped"]
        return res
