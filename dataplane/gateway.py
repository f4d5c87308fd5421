"""The gateway in one process: EAL, ports, mempool and workers from a Config.

This is the Pythonic layer over the Cython core; the CLI, the control socket
and the tests all drive the data plane through it.
"""
from __future__ import annotations

import structlog

from dataplane import _dataplane as dp
from dataplane import config as cfgmod
from dataplane.errors import ConfigError, DataplaneError

log = structlog.get_logger("nvgw.dataplane")

# Bytes an mbuf takes in the pool (2 KB data room + headroom + headers), for
# the clear "too little memory" message.
MBUF_FOOTPRINT = 2560


class Gateway:
    def __init__(self, cfg: cfgmod.Config):
        self.cfg = cfg
        self.ports: list[dict] = []      # name, role, port id, device
        self.pool = None
        self.workers = None
        self.hugepages = False
        self.final = None                # counters taken just before memory is freed

    # -- start / stop -------------------------------------------------------

    def start(self) -> None:
        """Bring everything up, or raise with nothing left running."""
        cfg = self.cfg
        self.hugepages, why = cfgmod.memory_mode(cfg)
        log.info("memory", hugepages=self.hugepages, reason=why)
        dp.eal_init(cfgmod.eal_args(cfg, self.hugepages))
        try:
            self._start_ports()
            self._start_workers()
        except BaseException:
            self.stop()
            raise

    def _start_ports(self) -> None:
        cfg = self.cfg
        for p in cfg.ports:
            try:
                pid = (dp.probe(p.device) if cfgmod.drivers.driver_of(p.device)
                       else dp.port_id_of(p.device.split(",", 1)[0]))
            except DataplaneError as e:
                raise ConfigError(f"port '{p.name}': device {p.device!r} failed to probe "
                                  f"({e.text})") from None
            self.ports.append({"name": p.name, "role": p.role, "id": pid,
                               "device": p.device, "started": False})
        n = cfg.mempool["mbufs"]
        try:
            self.pool = dp.Mempool("nvgw_mbufs", n, cfg.mempool["cache"])
        except DataplaneError as e:
            if e.errno != 12:   # ENOMEM
                raise
            raise ConfigError(
                f"too little memory: a mempool of {n} mbufs needs about "
                f"{n * MBUF_FOOTPRINT >> 20} MB and eal.memory_mb is {cfg.eal['memory_mb']}; "
                "raise eal.memory_mb or lower mempool.mbufs") from None
        # One TX queue per worker: workers never share a queue, so need no lock.
        n_txq = len(cfg.worker_lcores)
        for p, port in zip(cfg.ports, self.ports):
            try:
                dp.port_setup(port["id"], p.queues, n_txq, self.pool, p.descriptors, p.mtu)
            except DataplaneError as e:
                raise ConfigError(f"port '{p.name}': {e}") from None
            port["started"] = True
            port.update(dp.port_info(port["id"]))
            log.info("port_up", port=p.name, role=p.role, id=port["id"],
                     driver=port["driver"], mac=port["mac"], queues=p.queues)

    def _start_workers(self) -> None:
        cfg = self.cfg
        lcores = cfg.worker_lcores
        # RX queue q of every port belongs to worker q % n: each worker owns
        # queues of all ports; TX queue i on every port belongs to worker i.
        rxqs = [[] for _ in lcores]
        for p, port in zip(cfg.ports, self.ports):
            for q in range(p.queues):
                rxqs[q % len(lcores)].append((port["id"], q))
        ids = [port["id"] for port in self.ports]
        if ids != list(range(len(ids))):
            raise DataplaneError("workers", 22, f"port ids {ids} are not 0..{len(ids) - 1}")
        fwd = cfg.forward_map()
        self.workers = dp.Workers(len(lcores))
        for i, lc in enumerate(lcores):
            self.workers.configure(i, lc, cfg.pipeline["mode"], rxqs[i], i, len(ids), fwd)
        self.workers.launch()
        log.info("workers_up", lcores=lcores, pipeline=cfg.pipeline["mode"])

    def stop(self) -> None:
        """Stop workers (they flush TX), close ports, free memory, clean up EAL."""
        if self.workers is not None:
            self.workers.stop()
        self.final = self.counters()
        for port in self.ports:
            if port["started"]:
                dp.port_stop(port["id"])
        self.ports = [dict(p, started=False) for p in self.ports]
        if self.workers is not None:
            self.workers.free()
            self.workers = None
        if self.pool is not None:
            self.pool.free()
            self.pool = None
        dp.eal_cleanup()

    # -- counters -------------------------------------------------------------

    def counters(self) -> dict:
        """Ports (ours and the PMD's), workers, and drops summed over workers."""
        if self.workers is None and self.final is not None:
            return self.final
        n = len(self.ports)
        workers = ([self.workers.counters(i, n) for i in range(self.workers.count)]
                   if self.workers is not None else [])
        ports = []
        for i, port in enumerate(self.ports):
            row = {"name": port["name"], "role": port["role"], "id": port["id"]}
            for k in ("rx_pkts", "rx_bytes", "tx_pkts", "tx_bytes"):
                row[k] = sum(w["ports"][i][k] for w in workers)
            if port.get("started"):
                row["pmd"] = dp.port_stats(port["id"])
            ports.append(row)
        drops = {name: sum(w["drops"][name] for w in workers) for name, _ in dp.DROP_REASONS}
        for w in workers:
            w["rx_pkts"] = sum(p["rx_pkts"] for p in w["ports"])
            w["tx_pkts"] = sum(p["tx_pkts"] for p in w["ports"])
            w["drop_pkts"] = sum(w["drops"].values())
            del w["ports"]
        return {"ports": ports, "workers": workers, "drops": drops,
                "mempool": ({"size": self.pool.size, "in_use": self.pool.in_use()}
                            if self.pool is not None else None)}


def drop_reasons() -> list[tuple[str, str]]:
    return list(dp.DROP_REASONS)
