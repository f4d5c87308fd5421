"""Traffic harness: the gateway as a real process on virtual ports.

EAL starts once per process, so every test runs nvgw-dataplane as a
subprocess. Traffic goes in and out through net_pcap files: the test writes
scapy packets to each port's rx pcap, waits until the gateway has received
them all and gone quiet, stops it with SIGTERM (which flushes and closes the
tx pcaps) and reads what each port sent, as raw bytes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from scapy.utils import RawPcapReader, RawPcapWriter

from dataplane.control import ControlClient
from dataplane.errors import NvgwError

START_TIMEOUT = 30.0


def write_pcap(path: Path, packets) -> None:
    """Write scapy packets or raw frames to an Ethernet pcap (empty list: empty capture)."""
    with RawPcapWriter(str(path), linktype=1) as w:
        w._write_header(None)
        for p in packets:
            w.write(bytes(p))


def read_pcap(path: Path) -> list[bytes]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    return [pkt for pkt, _meta in RawPcapReader(str(path))]


@dataclass
class PcapPort:
    """One gateway port fed from a pcap file and writing to another."""
    name: str
    role: str
    packets: list = field(default_factory=list)
    peer: str = ""
    extra: str = ""          # more TOML keys for the [[ports]] table
    queues: int = 1          # RX queues: packets split into as many equal runs, in order

    def toml(self, index: int, workdir: Path, n_tx: int) -> str:
        """Each worker has its own TX queue, so the port gets one tx pcap per worker."""
        per = -(-len(self.packets) // self.queues) if self.packets else 0
        rx = []
        for q in range(self.queues):
            rx.append(workdir / (f"{self.name}.rx.pcap" if self.queues == 1
                                 else f"{self.name}.rx{q}.pcap"))
            write_pcap(rx[-1], self.packets[q * per:(q + 1) * per])
        tx = ",".join(f"tx_pcap={workdir}/{self.name}.tx{q}.pcap" for q in range(n_tx))
        lines = ["[[ports]]", f'name = "{self.name}"', f'role = "{self.role}"',
                 f'device = "net_pcap{index},{",".join(f"rx_pcap={r}" for r in rx)},{tx}"']
        if self.queues > 1:
            lines.append(f"queues = {self.queues}")
        if self.peer:
            lines.append(f'peer = "{self.peer}"')
        return "\n".join(lines + [self.extra, ""])


def pin(lcores) -> list[int]:
    """CPUs for worker lcores: their own where this machine has it, else the last one
    (EAL may run several lcores on one core; functional tests do not need speed)."""
    usable = sorted(os.sched_getaffinity(0))
    return [lc if lc in usable else usable[-1] for lc in lcores]


class GatewayProcess:
    """nvgw-dataplane in a subprocess with its own control socket."""

    def __init__(self, workdir: Path, ports: list, body: str = "", lcores=(1,),
                 memory_mb: int = 256, start_timeout: float = START_TIMEOUT,
                 rss: str = "auto"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports = ports
        self.endpoint = f"ipc://{self.workdir}/control.sock"
        self.config = self.workdir / "gateway.toml"
        self.stats_path = self.workdir / "stats.json"
        self.n_tx = len(lcores)
        port_toml = "\n".join(p.toml(i, self.workdir, self.n_tx) if isinstance(p, PcapPort) else p
                              for i, p in enumerate(ports))
        self.config.write_text(
            f'[eal]\nmemory = "no-huge"\nmemory_mb = {memory_mb}\n'
            f'[workers]\nlcores = {list(lcores)}\ncpus = {pin(lcores)}\nrss = "{rss}"\n'
            f'[control]\nsocket = "{self.endpoint}"\n{body}\n{port_toml}')
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.client = ControlClient(self.endpoint, timeout_ms=2000)
        self.stdout = self.stderr = ""
        self.returncode: int | None = None

    @staticmethod
    def command(*args) -> list[str]:
        return [sys.executable, "-m", "dataplane.cli", *args]

    def start(self) -> "GatewayProcess":
        # Output goes to files, never pipes: a chatty gateway must not block
        # on a pipe nobody reads until it stops.
        self.out_path, self.err_path = self.workdir / "stdout.log", self.workdir / "stderr.log"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                self.command("--config", str(self.config), "--stats-json",
                             str(self.stats_path)), stdout=out, stderr=err)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._collect()
                raise RuntimeError(f"gateway exited with {self.returncode} at start:\n"
                                   f"{self.stderr}")
            if os.path.exists(self.endpoint[6:]):
                try:
                    self.client.request("show", what="ports")
                    return self
                except NvgwError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway not ready within {self.start_timeout} s:\n{self.stderr}")

    def request(self, type_: str, **fields):
        return self.client.request(type_, **fields)

    def counters(self) -> dict:
        return self.request("show", what="counters")

    def wait_rx(self, port: str, count: int, timeout: float = 20.0) -> dict:
        """Wait until `port` has received `count` packets and the workers are idle."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            c = self.counters()
            rx = next(p["rx_pkts"] for p in c["ports"] if p["name"] == port)
            tx = sum(p["tx_pkts"] for p in c["ports"])
            # idle: two samples alike, and nothing left in a hand-over ring (every
            # packet received was processed by its owner, or dropped handing it over)
            # nor on the exception thread's rings (punted, or its replies not yet sent)
            done = sum(w["processed"] for w in c["workers"]) + c["drops"].get("dist_full", 0)
            exc = c.get("exceptions") or {}
            rings = exc.get("queued", 0) + exc.get("inject_queued", 0)
            if rx >= count and last == (rx, tx) and rings == 0 and \
                    done == sum(p["rx_pkts"] for p in c["ports"]):
                return c
            last = (rx, tx) if rx >= count else None
            time.sleep(0.05)
        raise TimeoutError(f"port {port} received {last} of {count} packets")

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        if self.proc is not None and self.returncode is None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self._collect()
        return self.returncode

    def _collect(self) -> None:
        if self.proc is not None and self.returncode is None:
            self.proc.wait()
            self.stdout = self.out_path.read_text(errors="replace")
            self.stderr = self.err_path.read_text(errors="replace")
            self.returncode = self.proc.returncode

    def final_counters(self) -> dict:
        return json.loads(self.stats_path.read_text())

    def sent_queue(self, port: str, queue: int) -> list[bytes]:
        """What one worker (its tx queue) transmitted on `port` (after stop). net_pcap
        makes its capture when the port starts: none is a wrong port, not 'nothing'."""
        path = self.workdir / f"{port}.tx{queue}.pcap"
        assert path.exists(), f"no capture {path}: port {port!r} has no tx queue {queue}"
        return read_pcap(path)

    def sent(self, port: str) -> list[bytes]:
        """What the gateway transmitted on `port` (after stop), queue by queue."""
        return [pkt for q in range(self.n_tx) for pkt in self.sent_queue(port, q)]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def run_pcap(workdir: Path, ports: list[PcapPort], body: str = "", **kw):
    """Start a gateway on pcap ports, let it consume every input, stop it.

    Returns (gateway, {port: [bytes sent]}), with final counters available.
    """
    gw = GatewayProcess(workdir, ports, body, **kw).start()
    try:
        for p in ports:
            if p.packets:
                gw.wait_rx(p.name, len(p.packets))
        if not any(p.packets for p in ports):
            time.sleep(0.2)
    finally:
        rc = gw.stop()
    assert rc == 0, f"gateway exited {rc}:\n{gw.stderr}"
    return gw, {p.name: gw.sent(p.name) for p in ports}
