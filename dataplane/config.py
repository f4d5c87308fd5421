"""The gateway's TOML configuration: schema, validation and the EAL argv.

Every problem is reported as one ConfigError sentence naming the key; the
file is checked whole before EAL starts, so nothing is half set up.
"""
from __future__ import annotations

import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field

from dataplane import drivers
from dataplane.errors import ConfigError

MAX_LCORE = 128          # RTE_MAX_LCORE in Debian's DPDK build
# EAL's log level names (rte_log.h), lowest priority last; a prefix will do
LOG_LEVELS = ("emergency", "alert", "critical", "error", "warning", "notice", "info", "debug")
MAX_RXQ = 32             # (port, queue) pairs one worker polls: NVGW_MAX_RXQ, cext/nvgw.h
MAX_WORKERS = 16         # NVGW_MAX_WORKERS, cext/nvgw.h
ROLES = ("provider", "customer")
MEMORY_MODES = ("auto", "hugepages", "no-huge")
PIPELINES = ("forward", "nvgre")
# Several workers: "auto" spreads by inner flow (the NIC's rte_flow RSS on the inner
# headers, else the workers hand packets to each other: cext/dist.h); "queues" trusts
# the NIC's own RSS (outer headers) and each worker keeps what its queues receive.
RSS_MODES = ("auto", "queues")

# section -> {key: (type, default)}; a default of ... means required.
SCHEMA = {
    "eal": {"memory": (str, "auto"), "memory_mb": (int, 512), "main_lcore": (int, 0),
            "log_level": (str, "warning"), "args": (list, [])},
    "workers": {"lcores": (list, [1]), "cpus": (list, None), "rss": (str, "auto")},
    "mempool": {"mbufs": (int, 8191), "cache": (int, 256)},
    "pipeline": {"mode": (str, "forward"), "policy": (str, ""), "resolve_wait_ms": (int, 250)},
    "tables": {"records": (int, 1 << 20), "routes": (int, 1 << 17), "neighbours": (int, 1 << 16),
               "rewrites": (int, 1 << 16)},
    "control": {"socket": (str, "ipc:///run/nvgw/dataplane.sock")},
}
# [agent]: optional; when present the gateway takes its policy from nvgw-mgmt.
AGENT_SCHEMA = {"endpoint": (str, ...), "id": (str, ...), "key": (str, ...),
                "server_key": (str, ...), "heartbeat_ms": (int, 1000)}
PORT_SCHEMA = {"name": (str, ...), "role": (str, ...), "device": (str, ...),
               "queues": (int, 1), "descriptors": (int, 1024), "mtu": (int, 0),
               "peer": (str, "")}


@dataclass
class Port:
    name: str
    role: str
    device: str
    queues: int = 1
    descriptors: int = 1024
    mtu: int = 0
    peer: str = ""


@dataclass
class Config:
    path: str
    eal: dict
    workers: dict
    mempool: dict
    pipeline: dict
    tables: dict
    control: dict
    ports: list[Port] = field(default_factory=list)
    agent: dict | None = None

    @property
    def worker_lcores(self) -> list[int]:
        return self.workers["lcores"]

    def port_index(self, name: str) -> int:
        return [p.name for p in self.ports].index(name)

    def forward_map(self) -> list[int]:
        """Forward pipeline: each port's output, its peer or else its pair (0<->1, 2<->3)."""
        n = len(self.ports)
        return [self.port_index(p.peer) if p.peer else (i ^ 1 if (i ^ 1) < n else i)
                for i, p in enumerate(self.ports)]


def _section(where: str, raw: dict, schema: dict) -> dict:
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ConfigError(f"unknown key '{where}.{unknown[0]}' "
                          f"(known: {', '.join(sorted(schema))})")
    out = {}
    for key, (typ, default) in schema.items():
        if key not in raw:
            if default is ...:
                raise ConfigError(f"missing key '{where}.{key}'")
            out[key] = list(default) if isinstance(default, list) else default
            continue
        val = raw[key]
        if not isinstance(val, typ) or (typ is int and isinstance(val, bool)):
            raise ConfigError(f"'{where}.{key}' must be {typ.__name__}, "
                              f"not {type(val).__name__}")
        out[key] = val
    return out


def parse(text: str, path: str = "<config>") -> Config:
    """Parse and validate a TOML config; raise ConfigError with one clear sentence."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    unknown = sorted(set(raw) - set(SCHEMA) - {"ports", "agent"})
    if unknown:
        raise ConfigError(f"unknown section or key '{unknown[0]}' "
                          f"(known: {', '.join(sorted(SCHEMA) + ['agent', 'ports'])})")
    sections = {}
    for name, schema in SCHEMA.items():
        sec = raw.get(name, {})
        if not isinstance(sec, dict):
            raise ConfigError(f"'{name}' must be a table")
        sections[name] = _section(name, sec, schema)
    raw_ports = raw.get("ports", [])
    if not isinstance(raw_ports, list) or not all(isinstance(p, dict) for p in raw_ports):
        raise ConfigError("'ports' must be an array of tables ([[ports]])")
    ports = [Port(**_section(f"ports[{i}]", p, PORT_SCHEMA)) for i, p in enumerate(raw_ports)]
    agent = None
    if "agent" in raw:
        if not isinstance(raw["agent"], dict):
            raise ConfigError("'agent' must be a table")
        agent = _section("agent", raw["agent"], AGENT_SCHEMA)
    cfg = Config(path=path, ports=ports, agent=agent, **sections)
    _validate(cfg)
    return cfg


def load(path: str) -> Config:
    try:
        with open(path, "rb") as f:
            text = f.read().decode()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start})") from None
    return parse(text, path)


def _validate(cfg: Config) -> None:
    eal, wk = cfg.eal, cfg.workers
    if eal["memory"] not in MEMORY_MODES:
        raise ConfigError(f"'eal.memory' must be one of {', '.join(MEMORY_MODES)}, "
                          f"not {eal['memory']!r}")
    if eal["memory_mb"] < 64:
        raise ConfigError(f"'eal.memory_mb' = {eal['memory_mb']} is too little: "
                          "EAL needs at least 64 MB")
    level = eal["log_level"].rpartition(":")[2]       # [type:]level, as EAL takes it
    if not (level.isdigit() and 1 <= int(level) <= 8) and not any(
            name.startswith(level) for name in LOG_LEVELS if level):
        raise ConfigError(f"'eal.log_level' {eal['log_level']!r}: a level is 1..8 or one of "
                          f"{', '.join(LOG_LEVELS)}, optionally after 'type:'")
    if not all(isinstance(a, str) for a in eal["args"]):
        raise ConfigError("'eal.args' must be a list of strings")
    for i, arg in enumerate(eal["args"]):
        own = _eal_own(arg, eal["args"][i + 1] if i + 1 < len(eal["args"]) else "")
        if own:
            raise ConfigError(f"'eal.args' {arg!r}: the gateway sets that from {own}")
    if cfg.pipeline["mode"] not in PIPELINES:
        raise ConfigError(f"'pipeline.mode' must be one of {', '.join(PIPELINES)}")

    lcores = wk["lcores"]
    if not lcores or not all(isinstance(x, int) and not isinstance(x, bool) for x in lcores):
        raise ConfigError("'workers.lcores' must be a non-empty list of lcore ids")
    if len(set(lcores)) != len(lcores):
        raise ConfigError("'workers.lcores' lists an lcore twice")
    if len(lcores) > MAX_WORKERS:
        raise ConfigError(f"'workers.lcores' lists {len(lcores)} workers; {MAX_WORKERS} at most")
    for lc in lcores + [eal["main_lcore"]]:
        if not 0 <= lc < MAX_LCORE:
            raise ConfigError(f"lcore {lc} does not exist: lcore ids are 0..{MAX_LCORE - 1}")
    if eal["main_lcore"] in lcores:
        raise ConfigError(f"lcore {eal['main_lcore']} is the main lcore and cannot be a worker")
    cpus = wk["cpus"]
    if cpus is None:
        wk["cpus"] = cpus = list(lcores)
    if len(cpus) != len(lcores):
        raise ConfigError("'workers.cpus' must give one cpu per entry of 'workers.lcores'")
    usable = os.sched_getaffinity(0)
    for lc, cpu in zip(lcores, cpus):
        if not isinstance(cpu, int) or isinstance(cpu, bool):   # True == 1 is usable
            raise ConfigError(f"'workers.cpus' entries are cpu numbers, not {cpu!r}")
        if cpu not in usable:
            raise ConfigError(f"lcore {lc} needs cpu {cpu}, which does not exist or is not "
                              f"usable here (usable cpus: {_ranges(usable)})")

    if not 1024 <= cfg.mempool["mbufs"] <= 1 << 26:
        raise ConfigError("'mempool.mbufs' must be 1024..67108864")
    if not 0 <= cfg.mempool["cache"] <= min(512, cfg.mempool["mbufs"] * 2 // 3):
        raise ConfigError("'mempool.cache' must be 0..512 and at most two thirds of "
                          "'mempool.mbufs' (DPDK's limits for a per-lcore cache)")
    if not cfg.ports:
        raise ConfigError("no ports: add at least one [[ports]] table")
    names = [p.name for p in cfg.ports]
    for i, p in enumerate(cfg.ports):
        where = f"port '{p.name}'"
        if not p.name or names.count(p.name) > 1:
            raise ConfigError(f"ports[{i}]: port names must be unique and non-empty")
        if p.role not in ROLES:
            raise ConfigError(f"{where}: role must be 'provider' or 'customer', not {p.role!r}")
        if not 1 <= p.queues <= 16:
            raise ConfigError(f"{where}: queues must be 1..16")
        if not 64 <= p.descriptors <= 4096:
            raise ConfigError(f"{where}: descriptors must be 64..4096")
        if p.mtu and not 68 <= p.mtu <= 9600:
            raise ConfigError(f"{where}: mtu must be 68..9600")
        if p.peer and p.peer not in names:
            raise ConfigError(f"{where}: peer {p.peer!r} is not a port")
    if wk["rss"] not in RSS_MODES:
        raise ConfigError(f"'workers.rss' must be one of {', '.join(RSS_MODES)}, "
                          f"not {wk['rss']!r}")
    if wk["rss"] == "queues" and len(lcores) > 1:
        # RX queue q goes to worker q mod n: any other count leaves workers idle or doubled
        n = len(lcores)
        for p in cfg.ports:
            if p.queues != 1 and p.queues % n:
                raise ConfigError(f"port '{p.name}': 'workers.rss' = queues gives RX queue q "
                                  f"to worker q mod {n}, so its queues ({p.queues}) must be "
                                  f"1 or a multiple of {n}")
        if all(p.queues == 1 for p in cfg.ports):
            raise ConfigError(f"'workers.rss' = queues: each worker processes only its own RX "
                              f"queues, so {n} workers need ports with {n} queues (or a "
                              "multiple)")
    # RX queue q of every port goes to worker q mod n (Gateway._start_workers)
    n = len(lcores)
    most = max(sum(len(range(i, p.queues, n)) for p in cfg.ports) for i in range(n))
    if most > MAX_RXQ:
        raise ConfigError(f"a worker would poll {most} RX queues (queue q of every port goes "
                          f"to worker q mod {n}); {MAX_RXQ} at most: add workers or use "
                          "fewer queues")
    if not 0 <= cfg.pipeline["resolve_wait_ms"] <= 10000:
        raise ConfigError("'pipeline.resolve_wait_ms' must be 0..10000")
    if cfg.pipeline["mode"] != "nvgre" and cfg.pipeline["policy"]:
        raise ConfigError("'pipeline.policy' needs pipeline.mode = nvgre (the forward "
                          "pipeline has no policy)")
    if cfg.pipeline["mode"] == "nvgre" and any(p.peer for p in cfg.ports):
        raise ConfigError("'peer' is for pipeline.mode = forward (the NVGRE pipeline "
                          "picks each packet's port by policy)")
    if cfg.pipeline["mode"] == "nvgre":
        roles = [p.role for p in cfg.ports]
        if roles.count("provider") != 1 or roles.count("customer") != 1:
            raise ConfigError("pipeline.mode = nvgre needs exactly one provider and one "
                              "customer port")
    record_nh = " (a lookup record names its next hop by a 16-bit index)"
    for key, lo, hi, why in (("records", 1024, 1 << 26, ""), ("routes", 1024, 1 << 26, ""),
                             ("neighbours", 256, 1 << 16, record_nh),
                             ("rewrites", 256, 1 << 26, "")):
        if not lo <= cfg.tables[key] <= hi:
            raise ConfigError(f"'tables.{key}' must be {lo}..{hi}{why}")
    if cfg.pipeline["policy"]:
        cfg.pipeline["policy"] = os.path.join(os.path.dirname(os.path.abspath(cfg.path)),
                                              cfg.pipeline["policy"])
    if cfg.agent is not None:
        _validate_agent(cfg)
    if len(cfg.ports) > 8:
        raise ConfigError("at most 8 ports")
    _pci_order(cfg)
    if any(p.device.split(",")[0] == q.device.split(",")[0]
           for i, p in enumerate(cfg.ports) for q in cfg.ports[i + 1:]):
        raise ConfigError("two ports name the same device")
    try:
        drivers.check_devices([p.device for p in cfg.ports])
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _pci_order(cfg: Config) -> None:
    """Workers and counters take ports by id in config order, and EAL numbers the
    PCI ports first, in bus order (vdevs come after, as they are probed): so must
    the config. Each PCI device string is written as ethdev names its port."""
    pci = []
    for i, p in enumerate(cfg.ports):
        addr = drivers.pci_address(p.device)
        if addr is not None:
            p.device = addr + p.device[len(p.device.split(",", 1)[0]):]
            pci.append((i, addr, p.name))
    if [i for i, _, _ in pci] != list(range(len(pci))):
        raise ConfigError(f"port '{pci[-1][2]}': PCI ports come first in [[ports]] (EAL "
                          "numbers them before the virtual ones)")
    for (_, a, name), (_, b, _) in zip(pci, pci[1:]):
        if a > b:          # the same twice: "two ports name the same device", below
            raise ConfigError(f"port '{name}' ({a}): PCI ports are listed in bus order, "
                              f"as EAL numbers them ({b} comes first)")


def _validate_agent(cfg: Config) -> None:
    ag = cfg.agent
    if cfg.pipeline["mode"] != "nvgre":
        raise ConfigError("[agent] needs pipeline.mode = nvgre (policy comes from nvgw-mgmt)")
    if not ag["endpoint"].startswith(("tcp://", "ipc://")):
        raise ConfigError(f"'agent.endpoint' must be tcp://HOST:PORT or ipc://PATH, "
                          f"not {ag['endpoint']!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", ag["id"]):
        raise ConfigError(f"'agent.id' {ag['id']!r} must be 1..64 letters, digits, '.', '_' "
                          "or '-' (the name of the gateway's key in nvgw-mgmt's allow-list)")
    if not 50 <= ag["heartbeat_ms"] <= 60000:
        raise ConfigError("'agent.heartbeat_ms' must be 50..60000")
    import zmq.auth
    base = os.path.dirname(os.path.abspath(cfg.path))
    for key, need_secret in (("key", True), ("server_key", False)):
        ag[key] = path = os.path.join(base, ag[key])
        try:
            _public, secret = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as e:
            raise ConfigError(f"'agent.{key}': cannot read key file {path}: {e}") from None
        if need_secret and not secret:
            raise ConfigError(f"'agent.key': {path} holds no secret key "
                              "(give the .key_secret file of the gateway's key pair)")


def _ranges(cpus) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def hugepages_free_mb() -> int:
    """Free 2 MB/1 GB hugepage memory, 0 when none is reserved or hugetlbfs is not mounted."""
    try:
        with open("/proc/mounts") as f:
            if not any(line.split()[2] == "hugetlbfs" for line in f if len(line.split()) > 2):
                return 0
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                k, v = line.split(":", 1)
                info[k] = int(v.split()[0])
    except OSError:
        return 0
    return info.get("HugePages_Free", 0) * info.get("Hugepagesize", 0) // 1024


def memory_mode(cfg: Config) -> tuple[bool, str]:
    """(use hugepages?, why). auto: hugepages when enough are free, else --no-huge."""
    mode, need = cfg.eal["memory"], cfg.eal["memory_mb"]
    if mode == "no-huge":
        return False, "eal.memory = no-huge"
    free = hugepages_free_mb()
    if mode == "hugepages":
        if free < need:
            raise ConfigError(f"eal.memory = hugepages but only {free} MB of hugepages are "
                              f"free and mounted; eal.memory_mb needs {need} MB")
        return True, "eal.memory = hugepages"
    if free >= need:
        return True, f"auto: {free} MB of hugepages free"
    return False, f"auto: {free} MB of hugepages free, {need} MB needed"


# EAL options the gateway sets itself (eal_args), and from what: given again in
# eal.args they would fight it (a --proc-type=secondary one waits in EAL for ever).
EAL_OWN = {
    ("--lcores", "-l", "-c", "--main-lcore"): "workers.lcores, workers.cpus and eal.main_lcore",
    ("-m", "--socket-mem", "--no-huge", "--in-memory", "--no-shconf"):
        "eal.memory and eal.memory_mb",
    ("--vdev", "-a", "--allow", "-b", "--block", "--no-pci"): "[[ports]]",
    ("--log-level",): "eal.log_level",
    ("--proc-type", "--file-prefix"): "its own runtime: one primary process per gateway",
}


def _eal_own(arg: str, after: str) -> str | None:
    """What sets the EAL option `arg` names (`after`: the next argument, its value
    perhaps), when the gateway sets it itself. EAL's getopt_long takes a long
    option's unambiguous prefix too (--proc=secondary). A log level for some log
    types only (TYPE:LEVEL) adds to eal.log_level and may be given."""
    if arg.startswith("--"):
        name, eq, value = arg.partition("=")
        if len(name) < 3:
            return None
        if name == "--log-level"[:len(name)] and ":" in (value if eq else after):
            return None
        return next((src for opts, src in EAL_OWN.items() for o in opts
                     if o.startswith("--") and o.startswith(name)), None)
    return next((src for opts, src in EAL_OWN.items() for o in opts
                 if len(o) == 2 and arg.startswith(o)), None)


def runtime_prefix() -> str:
    return f"nvgw{os.getpid()}"


def runtime_dir(prefix: str | None = None) -> str:
    """Where EAL puts the runtime files of --file-prefix `prefix` (this gateway's by
    default), by its rule for root and others. EAL leaves it at exit."""
    base = "/var/run" if os.geteuid() == 0 else os.environ.get("XDG_RUNTIME_DIR", "/tmp")
    return os.path.join(base, "dpdk", prefix or runtime_prefix())


def remove_stale_runtime_dirs() -> list[str]:
    """Remove the runtime directories of gateways no longer running (EAL leaves its
    own at any exit; Gateway.stop removes ours, a crash cannot): nvgw<pid> where no
    process has that pid. Returns the names removed."""
    base = os.path.dirname(runtime_dir())
    gone = []
    try:
        names = os.listdir(base)
    except OSError:
        return gone
    for name in names:
        m = re.fullmatch(r"nvgw(\d+)", name)
        if m is None or int(m[1]) == os.getpid():
            continue
        try:
            os.kill(int(m[1]), 0)
            continue                # a process has that pid: maybe a gateway
        except ProcessLookupError:
            pass
        except OSError:
            continue
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        gone.append(name)
    return gone


def eal_args(cfg: Config, hugepages: bool, prog: str = "nvgw-dataplane") -> list[str]:
    """The EAL argv: lcores pinned as configured, ports probed later by rte_dev_probe."""
    eal, wk = cfg.eal, cfg.workers
    main = eal["main_lcore"]
    usable = os.sched_getaffinity(0)
    # The main lcore (control thread) on its own CPU when it is usable here and no
    # worker polls it, else on the lowest usable one no worker polls: a worker's
    # CPU only when none is left.
    free = sorted(usable - set(wk["cpus"]))
    if main in free or not free:
        main_cpu = main if main in usable else min(usable)
    else:
        main_cpu = free[0]
    lcores = [f"{main}@{main_cpu}"] + [f"{lc}@{cpu}" for lc, cpu in zip(wk["lcores"], wk["cpus"])]
    args = [prog, "--lcores", ",".join(lcores), "--main-lcore", str(main),
            "-m", str(eal["memory_mb"]), f"--log-level={eal['log_level']}",
            # One runtime directory per gateway (telemetry socket): several
            # gateways may run side by side; Gateway.stop() removes it.
            f"--file-prefix={runtime_prefix()}"]
    # No shared-config files: gateways are always primary processes.
    args += ["--in-memory"] if hugepages else ["--no-huge", "--no-shconf"]
    pci = [p.device for p in cfg.ports if drivers.driver_of(p.device) is None]
    if pci:
        for dev in pci:
            args += ["-a", dev]
    else:
        args.append("--no-pci")
    # vdevs are hot-plugged one by one after init, so each failure names its port.
    return args + list(eal["args"])
