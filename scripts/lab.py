#!/usr/bin/env python3
"""The nvgw lab: the gateway between real Linux NVGRE hosts and on-premises networks.

    scripts/lab.sh up        # build it and leave it running (state in /run/nvgw-lab)
    scripts/lab.sh demo      # build it, show who reaches whom and the counters, tear down
    scripts/lab.sh down      # remove everything `up` made

Topology (all host-side links are veth pairs; everything lives in network namespaces
named nvl-TAG-*, which `down` deletes):

    red-vm  (10.1.1.7, 00:15:5d:7e:00:07) --hub-- host1:vec1 / host2:vec1
    blue-vm (10.1.1.7, 00:15:5d:b1:00:07) ------- host1:vec2
    host1 (UML: PAs 192.168.1.10 Blue, .11 Red)  vec0 --+
    host2 (UML: PA 192.168.1.12, Red after migration) --+-- fabric bridge -- gateway "fabric"
                                                                  (PA 192.168.1.1)
    red-onprem  (172.16.2.10) -- onprem:vec1 = VLAN 200 --+
    blue-onprem (172.16.1.10) -- onprem:vec2 = VLAN 100 --+-- onprem:vec0 trunk -- gateway "tenants"

The hosts are user-mode-linux guests (Debian's `user-mode-linux`: a Linux 6.1 kernel with
ip_gre, as a process); each VM's vNIC is bridged inside its host to a `gretap` device
(`key VSID<<8`, FlowID 0, so the policy gives the subnets "flowid": 0). The VMs and the
on-premises hosts are network namespaces of this machine (their TCP stacks are this kernel's),
so a VM can move between hosts with its connections intact: live migration unplugs its vNIC
from host1's bridge and plugs it into host2's. VLANs are 8021q inside the onprem UML guest
(this machine's kernel has neither GRE nor 802.1Q nor VLAN-aware bridges).

The gateway is nvgw-dataplane on net_af_packet ports in the core namespace with an [agent]
connected to nvgw-mgmt; the policy is config/lab-policy.json applied with `nvgwctl apply`.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "bin"
GUEST = ROOT / "scripts" / "lab_guest.py"
TCP = ROOT / "scripts" / "lab_tcp.py"
POLICY = ROOT / "config" / "lab-policy.json"
UML = "linux.uml"
STATE_DIR = Path("/run/nvgw-lab")

RED_VSID, BLUE_VSID = 6001, 5001
GW_PA = "192.168.1.1"
PA = {"blue": "192.168.1.10", "red": "192.168.1.11", "host2": "192.168.1.12"}
VM_MAC = {"red": "00:15:5d:7e:00:07", "blue": "00:15:5d:b1:00:07"}
VM_CA = "10.1.1.7"
ONPREM = {"red": ("172.16.2.10", "172.16.2.1", "02:00:00:00:02:10", 200),
          "blue": ("172.16.1.10", "172.16.1.1", "02:00:00:00:01:10", 100)}
GW_MAC = {"gwf": "02:00:00:00:fa:00", "gwc": "02:00:00:00:c0:00"}
HOST_MAC = {"host1": "00:15:5d:00:00:01", "host2": "00:15:5d:00:00:02",
            "onprem": "02:00:00:00:0e:00"}
VM_MTU = 1458                     # 1500 fabric - 42 NVGRE overhead, as Hyper-V sets it
TCP_PORT = 7000


class LabError(RuntimeError):
    pass


def prerequisites() -> list[str]:
    """What the bootstrap should have installed but is missing (a hard failure)."""
    missing = []
    for tool, pkg in ((UML, "user-mode-linux"), ("ping", "iputils-ping"),
                      ("ethtool", "ethtool"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt: {pkg})")
    if not (VENV / "nvgw-dataplane").exists():
        missing.append(".venv/bin/nvgw-dataplane (run scripts/bootstrap.sh)")
    return missing


def unavailable() -> str | None:
    """Why the lab cannot run on this machine for reasons outside the project's control."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, AF_PACKET sockets)"
    try:
        import socket
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
    except OSError as e:
        return f"raw AF_PACKET sockets are not available: {e}"
    r = subprocess.run(["ip", "netns", "add", f"nvl-probe{os.getpid()}"], capture_output=True,
                       text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", f"nvl-probe{os.getpid()}"], capture_output=True)
    return uml_unusable()


# What Debian 12's UML kernel (6.1) prints on a CPU with AMX (Sapphire Rapids and later):
# Linux's ptrace takes the x86 extended state only whole, and this UML passes a buffer of
# its own size, smaller than that state, so every guest process dies as it first runs.
UML_FP_FAILURE = "ptrace set fp regs failed"


def uml_argv(mem: str, umid: str, uml_dir, init, *extra: str) -> list[str]:
    """A UML kernel's command line: root is the host's filesystem over hostfs, `init` runs
    as init, the console is this process's stdin and stdout."""
    return [UML, f"mem={mem}", f"umid={umid}", f"uml_dir={uml_dir}", "root=/dev/root",
            "rootfstype=hostfs", "rootflags=/", "rw", f"init={init}", *extra, "con=null",
            "con0=fd:0,fd:1"]


@functools.cache                        # the CPU does not change: one probe a process
def uml_unusable() -> str | None:
    """Boot UML once with a three-line shell script as init that leaves a file behind and
    powers off (about a second). Why the lab cannot run, where that file did not appear
    and UML printed the failure above or the CPU has AMX; else None (UML missing:
    prerequisites() says so; any other failure: Lab.up() says what it is). The console
    alone is not enough to tell: UML aborts when its init dies, and the last lines it
    printed may be lost."""
    if shutil.which(UML) is None:
        return None
    with tempfile.TemporaryDirectory(prefix="nvl-probe", dir="/tmp") as d:
        init, ran = Path(d) / "init", Path(d) / "ran"
        init.write_text(f"#!/bin/sh\n: > '{ran}'\nexec /sbin/poweroff -f\n")
        init.chmod(0o755)
        try:
            proc = subprocess.Popen(uml_argv("32M", f"nvl-probe{os.getpid()}", d, init),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError:
            return None
        try:
            out = proc.communicate(timeout=60)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, proc)     # UML and its helpers: its own session
            return None
        if ran.exists():
            return None
    if UML_FP_FAILURE in out:
        return (f"user-mode-linux cannot run processes on this CPU ({UML}: "
                f"'{UML_FP_FAILURE}': its x86 extended state, AMX included, is larger than "
                "this UML kernel's buffer)")
    if " amx_tile" in Path("/proc/cpuinfo").read_text():
        return (f"user-mode-linux could not run a process as init here ({UML} exited "
                f"{proc.returncode}); this CPU has AMX, which Debian 12's UML cannot run "
                "processes on")
    return None


def sh(argv, check=True, timeout=20, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise LabError(f"{' '.join(map(str, argv))}: rc {r.returncode}: "
                       f"{(r.stderr or r.stdout).strip()}")
    return r


class Guest:
    """One user-mode-linux guest running scripts/lab_guest.py as init."""

    def __init__(self, lab: "Lab", name: str, ifaces: list[str], mem: str = "128M"):
        self.lab, self.name, self.ifaces, self.mem = lab, name, ifaces, mem
        self.dir = lab.dir / name
        self.seq = 0
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None

    def argv(self) -> list[str]:
        bpf = self.lab.dir / "no-outgoing.bpf"
        vecs = [f"vec{i}:transport=tap,ifname={ifc[4:]}" if ifc.startswith("tap:") else
                f"vec{i}:transport=raw,ifname={ifc},bpffile={bpf}"
                for i, ifc in enumerate(self.ifaces)]
        return ["ip", "netns", "exec", self.lab.ns("core"),
                *uml_argv(self.mem, f"nvl-{self.lab.tag}-{self.name}", f"{self.dir}/uml",
                          GUEST, f"nvgwlab={self.dir}", *vecs)]

    def start(self) -> None:
        # The raw transport reads with one AF_PACKET socket and writes with another, so the
        # reading socket also sees the guest's own transmitted frames (PACKET_OUTGOING) and
        # the guest would take them as received: a bridge in the guest then loops broadcasts
        # forever. This classic BPF program (UML's bpffile= option) keeps only frames that
        # arrive: ld skb->pkt_type; jeq PACKET_OUTGOING -> drop; accept.
        bpf = self.lab.dir / "no-outgoing.bpf"
        bpf.write_bytes(struct.pack("<HBBI", 0x20, 0, 0, 0xFFFFF000 + 4)
                        + struct.pack("<HBBI", 0x15, 0, 1, 4)
                        + struct.pack("<HBBI", 0x06, 0, 0, 0)
                        + struct.pack("<HBBI", 0x06, 0, 0, 0x40000))
        for sub in ("cmd", "res", "uml"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        with open(self.dir / "console.log", "w") as log:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "TMPDIR": str(self.dir)})
        self.pid = self.proc.pid
        self.lab.remember(f"guest:{self.name}", self.pid, f"nvgwlab={self.dir}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        ready = self.dir / "ready"
        while not ready.exists():
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"UML guest {self.name} exited {self.proc.returncode}:\n"
                               + self.console()[-3000:])
            if time.monotonic() > deadline:
                raise LabError(f"UML guest {self.name} not ready in {timeout} s:\n"
                               + self.console()[-3000:])
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        if info["module_errors"]:
            raise LabError(f"{self.name}: kernel modules failed: {info['module_errors']}")

    def console(self) -> str:
        p = self.dir / "console.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def run(self, script: str, timeout: float = 30.0, check: bool = True) -> dict:
        """Run a shell script (sh -e) in the guest; return {rc, stdout, stderr}."""
        self.seq += 1
        tmp = self.dir / f"cmd.{self.seq}.tmp"
        tmp.write_text(script)
        os.rename(tmp, self.dir / "cmd" / f"{self.seq}.sh")
        res = self.dir / "res" / f"{self.seq}.json"
        deadline = time.monotonic() + timeout
        while not res.exists():
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"UML guest {self.name} died:\n{self.console()[-3000:]}")
            if time.monotonic() > deadline:
                raise LabError(f"{self.name}: no answer in {timeout} s to:\n{script}")
            time.sleep(0.02)
        out = json.loads(res.read_text())
        res.unlink()
        if check and out["rc"] != 0:
            raise LabError(f"{self.name}: rc {out['rc']} for:\n{script}\n{out['stderr']}")
        return out

    def halt(self, timeout: float = 10.0) -> None:
        pid = self.pid
        if pid is None:
            return
        if self.proc is None or self.proc.poll() is None:
            try:
                self.seq += 1
                tmp = self.dir / f"cmd.{self.seq}.tmp"
                tmp.write_text("__halt__\n")
                os.rename(tmp, self.dir / "cmd" / f"{self.seq}.sh")
            except OSError:
                pass
            _wait_pid(pid, self.proc, timeout)
        _kill_group(pid, self.proc)
        self.pid = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _wait_pid(pid, proc, timeout) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return True
        elif not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _kill_group(pid: int, proc=None) -> None:
    """SIGKILL the process group we created for `pid` (start_new_session): the UML kernel
    and its helper processes. Only if that group still exists."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc is not None:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


class Lab:
    """Build, drive and tear down the lab. `tag` names its namespaces (nvl-TAG-*)."""

    NAMESPACES = ("core", "red-vm", "blue-vm", "red-onprem", "blue-onprem")

    def __init__(self, workdir: Path, tag: str = "lab", heartbeat_ms: int = 250):
        self.dir = Path(workdir)
        self.tag = tag
        self.heartbeat_ms = heartbeat_ms
        self.state = self.dir / "state.json"
        self.guests = {"host1": Guest(self, "host1", ["h1f", "r1u", "bvl"]),
                       "host2": Guest(self, "host2", ["h2f", "r2u"]),
                       "onprem": Guest(self, "onprem", ["tap:gwc", "opr", "opb"])}
        self.procs: dict[str, subprocess.Popen] = {}
        self.keys = self.dir / "keys"
        self.mgmt_ep = f"ipc://{self.dir}/mgmt-clients.sock"
        self.gw_ep = f"ipc://{self.dir}/mgmt-gateways.sock"
        self.control = f"ipc://{self.dir}/gateway-control.sock"

    # -- bookkeeping: everything made is written down before it exists, for `down` ------
    def _load_state(self) -> dict:
        if self.state.exists():
            return json.loads(self.state.read_text())
        return {"namespaces": [], "pids": {}}

    def _save_state(self, st: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(st, indent=1))
        os.replace(tmp, self.state)

    def remember(self, what: str, pid: int, marker: str) -> None:
        """`marker`: a string in the process's command line; `down` kills the pid only
        while its command line still holds it (a reused pid is left alone)."""
        st = self._load_state()
        st["pids"][what] = [pid, marker]
        self._save_state(st)

    def ns(self, name: str) -> str:
        return f"nvl-{self.tag}-{name}"

    def nsrun(self, name, argv, **kw):
        return sh(["ip", "netns", "exec", self.ns(name), *argv], **kw)

    # -- build -------------------------------------------------------------------------
    def up(self) -> "Lab":
        missing = prerequisites()
        if missing:
            raise LabError("missing (scripts/bootstrap.sh installs them): " + ", ".join(missing))
        why = unavailable()
        if why:
            raise LabError(why)
        if self.state.exists():
            raise LabError(f"{self.state} exists: a lab is up (run `scripts/lab.sh down`)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._save_state({"namespaces": [], "pids": {}})
        try:
            self._links()
            for g in self.guests.values():
                g.start()
            self._endpoints()
            for g in self.guests.values():
                g.wait_ready()
            self._configure_guests()
            self._control_plane()
            self.warm()
        except BaseException:
            self.down()
            raise
        return self

    def _links(self) -> None:
        st = self._load_state()
        for n in self.NAMESPACES:
            st["namespaces"].append(self.ns(n))
            self._save_state(st)
            sh(["ip", "netns", "add", self.ns(n)])
            for k in ("all", "default"):
                self.nsrun(n, ["sysctl", "-qw", f"net.ipv6.conf.{k}.disable_ipv6=1"], check=False)
            self.nsrun(n, ["ip", "link", "set", "lo", "up"])
        core = self.ns("core")
        pairs = [  # (end in core, peer, peer's namespace or None = core)
            ("gwf", "gwfb", None), ("h1f", "h1fb", None), ("h2f", "h2fb", None),
            ("rvl", "eth0", "red-vm"), ("r1u", "r1b", None), ("r2u", "r2b", None),
            ("bvl", "eth0", "blue-vm"),
            ("opr", "eth0", "red-onprem"), ("opb", "eth0", "blue-onprem"),
        ]
        for a, b, peer_ns in pairs:
            extra = ["netns", self.ns(peer_ns)] if peer_ns else []
            sh(["ip", "-n", core, "link", "add", a, "type", "veth", "peer", "name", b, *extra])
            for dev, n in ((a, "core"), (b, peer_ns or "core")):
                # No offloads: frames must leave every veth whole and checksummed, because
                # the gateway's af_packet ports and the UML raw sockets see them as they are.
                self.nsrun(n, ["ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off",
                               "gro", "off"], check=False)
        # The customer trunk is a tap device: the gateway's af_packet port and the onprem
        # guest (UML's tap transport) both attach to it. Not a veth + raw socket as
        # elsewhere: AF_PACKET readers get 802.1Q tags stripped into metadata, which UML's
        # raw transport drops (the guest would see untagged frames); tun keeps them in.
        sh(["ip", "-n", core, "tuntap", "add", "dev", "gwc", "mode", "tap", "vnet_hdr"])
        for dev, mac in GW_MAC.items():
            sh(["ip", "-n", core, "link", "set", dev, "address", mac])
        for br, ports, ageing in (("brfab", ["gwfb", "h1fb", "h2fb"], None),
                                  ("brredvm", ["rvl", "r1b", "r2b"], 0)):
            sh(["ip", "-n", core, "link", "add", br, "type", "bridge"]
               + (["ageing_time", str(ageing)] if ageing is not None else []))
            for p in ports:
                sh(["ip", "-n", core, "link", "set", p, "master", br])
            sh(["ip", "-n", core, "link", "set", br, "up"])
        for dev in ("gwf", "gwfb", "h1f", "h1fb", "h2f", "h2fb", "gwc", "rvl", "r1u",
                    "r1b", "r2u", "r2b", "bvl", "opr", "opb"):
            sh(["ip", "-n", core, "link", "set", dev, "up"])

    def _endpoints(self) -> None:
        for t in ("red", "blue"):
            n = f"{t}-vm"
            for argv in (["link", "set", "eth0", "address", VM_MAC[t]],
                         ["link", "set", "eth0", "mtu", str(VM_MTU)],
                         ["addr", "add", f"{VM_CA}/24", "dev", "eth0"],
                         ["link", "set", "eth0", "up"],
                         ["route", "add", "default", "via", "10.1.1.1"]):
                sh(["ip", "-n", self.ns(n), *argv])
            ip, gw, mac, _ = ONPREM[t]
            n = f"{t}-onprem"
            for argv in (["link", "set", "eth0", "address", mac],
                         ["addr", "add", f"{ip}/24", "dev", "eth0"],
                         ["link", "set", "eth0", "up"],
                         ["route", "add", "default", "via", gw]):
                sh(["ip", "-n", self.ns(n), *argv])
        for t in ("red", "blue"):
            self.start_proc(f"server-{t}", f"{t}-vm",
                            ["python3", TCP, "serve", "--port", TCP_PORT, "--name", t])

    def _configure_guests(self) -> None:
        common = ("ip link set lo up\n"
                  "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
                  "net.ipv6.conf.default.disable_ipv6=1\n"
                  "for d in /sys/class/net/vec*; do d=${d##*/}; "
                  # UML's vector driver corrupts TCP payload it forwards with scatter-gather
                  # on (bridged frames arrive with valid checksums, wrong bytes; seen with
                  # Debian's UML 6.1.176). Without SG it also drops TSO/GRO. tx checksum
                  # is fixed on; the host-side veths compute it (their tx offload is off).
                  "ethtool -K $d sg off >/dev/null 2>&1 || true; "
                  "ethtool -K $d tso off gso off gro off >/dev/null 2>&1 || true; done\n")
        h1 = self.guests["host1"]
        h1.run(common + f"""
ip link set vec0 address {HOST_MAC['host1']}
ip addr add {PA['blue']}/24 dev vec0
ip addr add {PA['red']}/24 dev vec0
ip link set vec0 up
ip link add gt-blue type gretap local {PA['blue']} remote {GW_PA} key {BLUE_VSID << 8} ttl 64
ip link add gt-red type gretap local {PA['red']} remote {GW_PA} key {RED_VSID << 8} ttl 64
ip link add br-blue type bridge
ip link add br-red type bridge
ip link set gt-blue master br-blue
ip link set vec2 master br-blue
ip link set gt-red master br-red
ip link set vec1 master br-red
for d in gt-blue gt-red vec1 vec2 br-blue br-red; do ip link set $d up; done
""")
        h2 = self.guests["host2"]
        h2.run(common + f"""
ip link set vec0 address {HOST_MAC['host2']}
ip addr add {PA['host2']}/24 dev vec0
ip link set vec0 up
ip link add gt-red type gretap local {PA['host2']} remote {GW_PA} key {RED_VSID << 8} ttl 64
ip link add br-red type bridge
ip link set gt-red master br-red
ip link set vec1 master br-red
for d in gt-red br-red; do ip link set $d up; done
""")   # vec1 (Red's vNIC on host2) stays down until Red's VM migrates here
        op = self.guests["onprem"]
        op.run(common + f"""
ip link set vec0 address {HOST_MAC['onprem']}
ip link set vec0 up
ip link add link vec0 name vec0.{ONPREM['red'][3]} type vlan id {ONPREM['red'][3]}
ip link add link vec0 name vec0.{ONPREM['blue'][3]} type vlan id {ONPREM['blue'][3]}
ip link add br-red type bridge
ip link add br-blue type bridge
ip link set vec0.{ONPREM['red'][3]} master br-red
ip link set vec1 master br-red
ip link set vec0.{ONPREM['blue'][3]} master br-blue
ip link set vec2 master br-blue
for d in vec0.{ONPREM['red'][3]} vec0.{ONPREM['blue'][3]} vec1 vec2 br-red br-blue; do ip link set $d up; done
""")

    def start_proc(self, name: str, ns: str | None, argv, log: Path | None = None):
        log = log or self.dir / f"{name}.log"
        full = ["ip", "netns", "exec", self.ns(ns), *map(str, argv)] if ns else list(map(str, argv))
        with open(log, "w") as f:
            p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=f,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = p
        self.remember(f"proc:{name}", p.pid, " ".join(map(str, argv[1:])))
        return p

    def _control_plane(self) -> None:
        ctl = [VENV / "nvgwctl"]
        kd = self.keys
        sh([*ctl, "keygen", kd / "mgmt", "server"])
        sh([*ctl, "keygen", kd / "peers", "ops"])
        sh([*ctl, "keygen", kd / "peers", "gw1"])
        for sub, name in (("clients", "ops"), ("gateways", "gw1")):
            (kd / "mgmt" / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(kd / "peers" / f"{name}.key", kd / "mgmt" / sub / f"{name}.key")
        self.start_proc("mgmt", None, [VENV / "nvgw-mgmt", "--db", self.dir / "mgmt.db",
                                       "--keys", kd / "mgmt", "--clients", self.mgmt_ep,
                                       "--gateways", self.gw_ep, "--heartbeat",
                                       self.heartbeat_ms / 1000])
        cpus = sorted(os.sched_getaffinity(0))
        cfg = self.dir / "gateway.toml"
        cfg.write_text(f"""# written by scripts/lab.py
[eal]
memory = "no-huge"
memory_mb = 256
[workers]
lcores = [1]
cpus = [{cpus[-1]}]
[pipeline]
mode = "nvgre"
[tables]
records = 4096
routes = 4096
neighbours = 1024
[control]
socket = "{self.control}"
[agent]
endpoint = "{self.gw_ep}"
id = "gw1"
key = "{kd / 'peers' / 'gw1.key_secret'}"
server_key = "{kd / 'mgmt' / 'server.key'}"
heartbeat_ms = {self.heartbeat_ms}
[[ports]]
name = "fabric"
role = "provider"
device = "net_af_packet0,iface=gwf"
[[ports]]
name = "tenants"
role = "customer"
device = "net_af_packet1,iface=gwc"
""")
        self.start_proc("gateway", "core", [VENV / "nvgw-dataplane", "--config", cfg,
                                            "--stats-json", self.dir / "gateway-stats.json"])
        deadline = time.monotonic() + 30
        while True:
            r = self.ctl("apply", "-f", POLICY, check=False)
            if r.returncode == 0:
                break
            if self.procs["mgmt"].poll() is not None or time.monotonic() > deadline:
                raise LabError(f"nvgwctl apply failed: {r.stderr}\n"
                               + (self.dir / "mgmt.log").read_text()[-2000:])
            time.sleep(0.2)
        r = self.ctl("wait", "--gateways", "1", "--timeout", "20", check=False)
        if r.returncode != 0:
            raise LabError(f"the gateway did not apply the policy: {r.stderr}\n"
                           + (self.dir / "gateway.log").read_text()[-3000:])

    def warm(self, timeout: float = 20.0) -> None:
        """Ping each VM from its tenant's on-premises host until one answers: ARP on both
        sides of the gateway (on-premises hosts, the gateway's neighbours for the PAs and
        on-premises addresses, the VMs for their subnet gateway inside NVGRE) resolves once,
        before anyone measures."""
        for t in ("red", "blue"):
            deadline = time.monotonic() + timeout
            while self.ping(t, count=1).returncode != 0:
                if time.monotonic() > deadline:
                    raise LabError(f"{t}'s on-premises host cannot ping its VM after "
                                   f"{timeout} s:\n" + self.ctl("show", "drops", gateway=True,
                                                               check=False).stdout)

    # -- operate -------------------------------------------------------------------------
    def ctl(self, *args, check=True, gateway=False, timeout=30):
        base = [VENV / "nvgwctl"]
        if gateway:
            base += ["--gateway", self.control]
        else:
            base += ["--mgmt", self.mgmt_ep, "--key", self.keys / "peers" / "ops.key_secret",
                     "--server-key", self.keys / "mgmt" / "server.key"]
        return sh([*base, *args], check=check, timeout=timeout)

    def counters(self) -> dict:
        return json.loads(self.ctl("show", "counters", "--json", gateway=True).stdout)

    def ping(self, tenant: str, dst: str = VM_CA, count: int = 3, where: str = "onprem"):
        return self.nsrun(f"{tenant}-{where}", ["ping", "-c", count, "-i", "0.2", "-W", "2",
                                                dst], check=False, timeout=30)

    def transfer(self, tenant: str, nbytes: int = 10_000_000, dst: str = VM_CA,
                 timeout: float = 20.0, progress: Path | None = None, block: bool = True,
                 rate: float = 0):
        argv = ["ip", "netns", "exec", self.ns(f"{tenant}-onprem"), "python3", TCP, "send",
                dst, TCP_PORT, "--bytes", nbytes, "--timeout", timeout]
        if progress:
            argv += ["--progress", progress]
        if rate:
            argv += ["--rate", rate]
        argv = list(map(str, argv))
        if not block:
            return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout * 3 + 10)
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            return {"match": False, "error": f"rc {r.returncode}: {r.stderr.strip()}"}

    def move_red_vm(self, to: str = "host2") -> None:
        """Live migration of Red's VM: unplug its vNIC from the old host's switch, plug it
        into the new one's (same CA, same MAC, new PA), and tell the gateway via nvgw-mgmt."""
        old, new = ("host1", "host2") if to == "host2" else ("host2", "host1")
        self.guests[old].run("ip link set vec1 down")
        self.guests[new].run("ip link set vec1 up")
        pa = PA["host2"] if to == "host2" else PA["red"]
        self.ctl("migrate", "--vsid", RED_VSID, "--ca", VM_CA, "--pa", pa)

    # -- tear down -----------------------------------------------------------------------
    def down(self) -> None:
        """Remove what this lab made (by its state file): processes we started, by pid and
        only while their command line is still ours; UML guests halted, then their process
        groups; namespaces (with their veths and bridges)."""
        st = self._load_state()
        for name, g in self.guests.items():
            if g.pid is None and f"guest:{name}" in st["pids"]:
                pid, cmd = st["pids"][f"guest:{name}"]
                if _alive(pid) and cmd in _cmdline(pid):
                    g.pid = pid
        procs = dict(self.procs)
        for what, (pid, cmd) in st["pids"].items():
            if what.startswith("proc:"):
                name = what[5:]
                if name not in procs and _alive(pid) and cmd in _cmdline(pid):
                    procs[name] = pid
        # the gateway first (it prints its counters), then the rest
        order = sorted(procs, key=lambda n: n != "gateway")
        for name in order:
            p = procs[name]
            pid = p if isinstance(p, int) else p.pid
            proc = None if isinstance(p, int) else p
            if proc is not None and proc.poll() is not None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            if not _wait_pid(pid, proc, 10):
                _kill_group(pid, proc)
        for g in self.guests.values():
            g.halt(timeout=5)
        for n in st["namespaces"]:
            sh(["ip", "netns", "del", n], check=False)
        self.procs.clear()
        if self.state.exists():
            self.state.unlink()

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# -- the demo: who reaches whom, counters per tenant --------------------------------------
def demo(lab: Lab, nbytes: int) -> int:
    ok = True
    print("\n== who reaches whom (ping, then a TCP round trip of "
          f"{nbytes / 1e6:g} MB, byte-exact) ==")
    for t in ("red", "blue"):
        p = lab.ping(t)
        res = lab.transfer(t, nbytes)
        good = p.returncode == 0 and res.get("match") and res.get("banner") == f"nvgw-lab:{t}"
        ok &= bool(good)
        rate = nbytes * 2 / res["seconds"] / 1e6 if res.get("seconds") else 0
        print(f"  {t:4} on-premises {ONPREM[t][0]:12} -> 10.1.1.7: ping "
              f"{'ok' if p.returncode == 0 else 'FAILED'}; TCP answered by "
              f"{res.get('banner')!r}, {'intact' if res.get('match') else 'NOT intact'}"
              f" ({rate:.1f} MB/s both ways){'' if not res.get('error') else ' ' + res['error']}")
    for src, dst in (("red", "blue"), ("blue", "red")):
        p = lab.ping(src, ONPREM[dst][0], count=2)
        ok &= p.returncode != 0
        print(f"  {src:4} on-premises -> {dst}'s on-premises {ONPREM[dst][0]}: "
              f"{'reached (WRONG)' if p.returncode == 0 else 'unreachable (dropped)'}")
    prog = lab.dir / "demo-migrate.progress"
    proc = lab.transfer("red", nbytes, timeout=30, progress=prog, block=False,
                        rate=max(nbytes / 2.5, 1))
    deadline = time.monotonic() + 20
    while not (prog.exists() and int(prog.read_text() or 0) > nbytes // 4):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    lab.move_red_vm("host2")
    out, _ = proc.communicate(timeout=120)
    try:
        res = json.loads(out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        res = {"match": False, "error": "no result"}
    ok &= bool(res.get("match")) and not res.get("error")
    print(f"\n== live migration: Red's VM host1 (PA {PA['red']}) -> host2 (PA {PA['host2']}) "
          f"during a {nbytes / 1e6:g} MB round trip ==\n  "
          + ("completed intact, no reset" if res.get("match") and not res.get("error")
             else f"FAILED: {res}"))
    c = lab.counters()
    print("\n== per tenant (VSID) ==")
    for vsid, v in sorted(c.get("vsids", {}).items()):
        name = {str(RED_VSID): "red", str(BLUE_VSID): "blue"}.get(str(vsid), "?")
        keys = ("encap_pkts", "encap_bytes", "decap_pkts", "decap_bytes")
        print(f"  {vsid} ({name}): " + ", ".join(f"{k} {v.get(k, 0)}" for k in keys))
    print("== drops ==")
    for k, v in sorted(c.get("drops", {}).items()):
        if v:
            print(f"  {k}: {v}")
    print("== ports ==")
    for p in c.get("ports", []):
        print(f"  {p['name']}: rx {p['rx_pkts']} tx {p['tx_pkts']}")
    print("\nlab demo:", "OK" if ok else "FAILED")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description="the nvgw lab (see the module docstring)")
    ap.add_argument("action", choices=["up", "down", "demo", "check"])
    ap.add_argument("--dir", default=str(STATE_DIR))
    ap.add_argument("--tag", default="lab", help="namespaces are named nvl-TAG-*")
    ap.add_argument("--bytes", type=int, default=10_000_000)
    a = ap.parse_args()
    lab = Lab(Path(a.dir), tag=a.tag)
    if a.action == "check":
        why = "; ".join(prerequisites()) or unavailable()
        print(why or "the lab can run here")
        return 1 if why else 0
    if a.action == "down":
        lab.down()
        return 0
    t0 = time.monotonic()
    try:
        lab.up()
    except LabError as e:
        print(f"lab: cannot start: {e}", file=sys.stderr)
        return 2
    print(f"lab: up in {time.monotonic() - t0:.1f} s (namespaces nvl-{lab.tag}-*, "
          f"state in {lab.dir})")
    if a.action == "up":
        return 0
    try:
        return demo(lab, a.bytes)
    finally:
        lab.down()


if __name__ == "__main__":
    sys.exit(main())
