"""Management-plane test helpers: keys, nvgw-mgmt as a real process, nvgwctl --mgmt,
and gateway TOML with an [agent] section.

    keys = Keys.create(tmp_path / "keys", gateways=["gw1"])
    with MgmtProcess(tmp_path / "mgmt", keys) as mgmt:
        gw = GatewayProcess(tmp_path / "gw1", ports, agent_body(mgmt, keys, "gw1")).start()
        ctl(mgmt, keys, "apply", "-f", policy_path)      # CompletedProcess
        mgmt.client().wait(timeout=5)
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dataplane.errors import NvgwError
from mgmt.client import MgmtClient
from mgmt.keys import keygen

START_TIMEOUT = 10.0
HEARTBEAT = 0.2             # seconds, both sides: a silent peer is lost after 0.6 s


@dataclass
class Keys:
    """nvgw-mgmt's key directory (server pair, clients/ and gateways/ allow-lists) and the
    peers' pairs: ops (an allowed client), intruder (a client not allowed), and one per
    gateway id."""
    root: Path

    @classmethod
    def create(cls, root: Path, gateways=("gw1",)) -> "Keys":
        k = cls(Path(root))
        keygen(str(k.mgmt_dir), "server")
        for d in ("clients", "gateways"):
            (k.mgmt_dir / d).mkdir(parents=True, exist_ok=True)
        keygen(str(k.peers), "ops")
        shutil.copy(k.peers / "ops.key", k.mgmt_dir / "clients" / "ops.key")
        keygen(str(k.peers), "intruder")
        for g in gateways:
            keygen(str(k.peers), g)
            shutil.copy(k.peers / f"{g}.key", k.mgmt_dir / "gateways" / f"{g}.key")
        return k

    @property
    def mgmt_dir(self) -> Path:
        return self.root / "mgmt"

    @property
    def peers(self) -> Path:
        return self.root / "peers"

    @property
    def server_public(self) -> Path:
        return self.mgmt_dir / "server.key"

    def secret(self, name: str) -> Path:
        return self.peers / f"{name}.key_secret"


class MgmtProcess:
    """nvgw-mgmt in a subprocess: ipc endpoints and SQLite file under `workdir`."""

    def __init__(self, workdir: Path, keys: Keys, heartbeat: float = HEARTBEAT,
                 args=(), prefix=(), db: Path | None = None):
        """`args`: more nvgw-mgmt options; `prefix`: a command it runs under (its
        last word execs nvgw-mgmt, e.g. a mount namespace); `db`: another SQLite path."""
        self.args, self.prefix = [str(a) for a in args], [str(a) for a in prefix]
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keys = keys
        self.db = Path(db) if db is not None else self.dir / "mgmt.db"
        self.clients = f"ipc://{self.dir}/clients.sock"
        self.gateways = f"ipc://{self.dir}/gateways.sock"
        self.heartbeat = heartbeat
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "mgmt.log"
        self.runs = 0

    def start(self) -> "MgmtProcess":
        self.runs += 1
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "mgmt.server", "--db", str(self.db),
                 "--clients", self.clients, "--gateways", self.gateways,
                 "--keys", str(self.keys.mgmt_dir), "--heartbeat", str(self.heartbeat),
                 "--log-level", "debug", *self.args],
                stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        c = self.client(timeout=0.5)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nvgw-mgmt exited {self.proc.returncode}:\n"
                                   f"{self.log.read_text()}")
            if os.path.exists(self.clients[6:]):
                try:
                    c.generation()
                    return self
                except NvgwError:
                    pass
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"nvgw-mgmt not ready in {START_TIMEOUT} s:\n{self.log.read_text()}")

    def client(self, name: str = "ops", timeout: float = 5.0) -> MgmtClient:
        return MgmtClient(self.clients, str(self.keys.secret(name)), str(self.keys.server_public),
                          timeout)

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Stop our process (by its pid); SIGKILL leaves the ipc files as a crash would."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc, self.proc = self.proc.returncode, None
        return rc

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def __enter__(self) -> "MgmtProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def agent_body(mgmt: MgmtProcess, keys: Keys, gw_id: str, policy: Path | None = None) -> str:
    """Gateway TOML for the NVGRE pipeline (no policy file unless given) with an [agent]
    that takes its policy from `mgmt`."""
    pol = f'policy = "{policy}"\n' if policy else ""
    return (f'[pipeline]\nmode = "nvgre"\n{pol}'
            "[tables]\nrecords = 4096\nroutes = 4096\nneighbours = 1024\n"
            f'[agent]\nendpoint = "{mgmt.gateways}"\nid = "{gw_id}"\n'
            f'key = "{keys.secret(gw_id)}"\nserver_key = "{keys.server_public}"\n'
            f"heartbeat_ms = {int(HEARTBEAT * 1000)}\n")


def ctl(mgmt: MgmtProcess, *args, key: str = "ops", timeout: float = 20.0):
    """Run `nvgwctl --mgmt ...` as the operator would; returns the CompletedProcess."""
    argv = [sys.executable, "-m", "mgmt.ctl", "--mgmt", mgmt.clients,
            "--key", str(mgmt.keys.secret(key)), "--server-key", str(mgmt.keys.server_public),
            *[str(a) for a in args]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns a true value (returned); TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except NvgwError as e:
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached in {timeout} s (last: {last!r})")
