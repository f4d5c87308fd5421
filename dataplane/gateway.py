"""The gateway in one process: EAL, ports, mempool and workers from a Config.

This is the Pythonic layer over the Cython core; the CLI, the control socket
and the tests all drive the data plane through it.
"""
from __future__ import annotations

import shutil

import structlog

from dataplane import _dataplane as dp
from dataplane import config as cfgmod
from dataplane import policy as polmod
from dataplane import recblock
from dataplane.errors import ConfigError, DataplaneError, NvgwError

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
        self.nv = None                   # NVGRE tables and exception thread
        self.policy = None               # the applied policy (nvgre mode)

    # -- start / stop -------------------------------------------------------

    def start(self) -> None:
        """Bring everything up, or raise with nothing left running."""
        cfg = self.cfg
        self.hugepages, why = cfgmod.memory_mode(cfg)
        log.info("memory", hugepages=self.hugepages, reason=why)
        stale = cfgmod.remove_stale_runtime_dirs()
        if stale:
            log.info("stale_runtime_removed", dirs=stale)
        dp.eal_init(cfgmod.eal_args(cfg, self.hugepages))
        try:
            self._start_ports()
            if cfg.pipeline["mode"] == "nvgre":
                self._start_nvgre()
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
        by_queue = cfg.workers["rss"] == "queues"
        for p, port in zip(cfg.ports, self.ports):
            try:
                hf = dp.port_setup(port["id"], p.queues, n_txq, self.pool, p.descriptors,
                                   p.mtu, by_queue)
            except DataplaneError as e:
                raise ConfigError(f"port '{p.name}': {e}") from None
            port["started"] = True
            port.update(dp.port_info(port["id"]))
            log.info("port_up", port=p.name, role=p.role, id=port["id"],
                     driver=port["driver"], mac=port["mac"], queues=p.queues,
                     **({"nic_rss": hex(hf) if hf else "none"} if by_queue and p.queues > 1
                        else {}))
            if by_queue and p.queues == 1 and n_txq > 1:
                log.warning("rss_one_queue", port=p.name,
                            reason="workers.rss = queues: worker 0 takes all it receives")

    def _port(self, role: str) -> dict:
        return next(p for p in self.ports if p["role"] == role)

    def _start_nvgre(self) -> None:
        cfg, tables = self.cfg, self.cfg.tables
        prov, cust = self._port("provider"), self._port("customer")
        try:
            self.nv = dp.Nvgre(self.pool, prov["id"], cust["id"], tables["records"],
                               tables["routes"], tables["neighbours"], tables["rewrites"],
                               len(cfg.worker_lcores))
        except DataplaneError as e:
            raise ConfigError(f"too little memory: {e.text}") from None
        # The customer port's MTU bounds what goes onto a VLAN when the config sets
        # it: DPDK puts every port at 1500 otherwise, whatever the link carries
        # (af_packet cannot even be set higher), and jumbo tenants would go dark.
        if next(p.mtu for p in cfg.ports if p.role == "customer"):
            self.nv.customer_mtu = cust["mtu"]
        self.policy = polmod.Policy(self.nv, prov["mac"], cust["mac"],
                                    {k: tables[k] for k in ("records", "routes", "rewrites",
                                                             "neighbours")},
                                    on_release=self._slots_released)
        self.policy.resolve_wait = cfg.pipeline["resolve_wait_ms"] / 1000
        if cfg.pipeline["policy"]:
            doc = polmod.load_file(cfg.pipeline["policy"])
            try:
                self.policy.load_document(doc)  # refused whole: nothing applied
            except polmod.PolicyError as e:
                # A file an earlier version took may break a rule added since (session
                # 27): the gateway starts with it, and says so; any other fault stops it.
                self.policy.load_document(doc, lenient=True)
                log.warning("policy_breaks_a_rule", file=cfg.pipeline["policy"], error=str(e))
            log.info("policy_loaded", file=cfg.pipeline["policy"],
                     records=len(self.policy.records), generation=self.policy.generation)
        self.nv.start_exceptions()

    def _rss_mode(self) -> str:
        """Hardware RSS on the inner headers where every port can do it with a
        queue per worker; otherwise software RSS (cext/dist.h). Logged per port.
        With workers.rss = queues, neither: each worker keeps what its queues get."""
        n = len(self.cfg.worker_lcores)
        if self.cfg.workers["rss"] == "queues":
            log.info("rss", mode="queues", reason="workers.rss = queues: the NIC's own RSS")
            return "queues"
        hardware = n > 1
        for p, port in zip(self.cfg.ports, self.ports):
            ok, why = dp.inner_rss(port["id"], p.queues, False) if p.queues > 1 \
                else (False, "one RX queue")
            ok = ok and p.queues == n
            log.info("rss", port=p.name, mode="hardware" if ok else "software", reason=why)
            hardware = hardware and ok
        if hardware:
            for p, port in zip(self.cfg.ports, self.ports):
                ok, why = dp.inner_rss(port["id"], n, True)
                if not ok:          # validated, yet not created: hand off in software
                    log.warning("rss", port=p.name, mode="software", reason=why)
                    return "software"
        return "hardware" if hardware else "software"

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
        self.rss = self._rss_mode() if len(lcores) > 1 else "single worker"
        # With hardware RSS, or by queue, each worker processes what its queues receive.
        workers = dp.Workers(len(lcores), self.rss not in ("hardware", "queues"))
        try:
            for i, lc in enumerate(lcores):
                workers.configure(i, lc, cfg.pipeline["mode"], rxqs[i], i, len(ids), fwd,
                                  self.nv)
        except BaseException:
            workers.free()      # stop() reads only workers that were all configured
            raise
        self.workers = workers
        self.workers.launch()
        log.info("workers_up", lcores=lcores, pipeline=cfg.pipeline["mode"])

    def stop(self) -> None:
        """Stop workers (they flush TX), close ports, free memory, clean up EAL.
        The exception thread first: worker 0 then sends what it left to send."""
        if self.nv is not None:
            self.nv.stop_exceptions()
        if self.workers is not None:
            self.workers.stop()
        self.final = self.counters()
        for port in self.ports:
            if port["started"]:
                dp.port_stop(port["id"])
        self.ports = [dict(p, started=False) for p in self.ports]
        if self.nv is not None:
            self.nv.free()
            self.nv = None
        if self.workers is not None:
            self.workers.free()
            self.workers = None
        if self.pool is not None:
            self.pool.free()
            self.pool = None
        dp.eal_cleanup()
        shutil.rmtree(cfgmod.runtime_dir(), ignore_errors=True)

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
        out = {"ports": ports, "workers": workers, "drops": drops,
                "mempool": ({"size": self.pool.size, "in_use": self.pool.in_use()}
                            if self.pool is not None else None)}
        if self.workers is not None:
            out["heap"] = dp.heap_stats()
        if self.policy is not None:
            out["exceptions"] = self.nv.exc_counters() if self.nv is not None else None
            out["generation"] = self.policy.generation
            out["vsids"] = {str(v): self.vsid_counters(v) for v in self.policy.subnets}
        return out

    # -- policy (nvgre mode): the functions the control socket and agent call ------

    def _need_policy(self):
        if self.policy is None or self.nv is None:
            raise NvgwError("this gateway runs no NVGRE pipeline (pipeline.mode = forward)")
        return self.policy

    def apply(self, ops: list, generation: int | None = None, block=None) -> int:
        """Apply a batch whole or not at all; return the applied generation
        (`generation` when the management process numbers batches). `block`: a
        record block (recblock) the batch sets after its operations, as the
        management agent and the control socket receive one."""
        pol = self._need_policy()
        if block is None:
            try:
                split = recblock.split_records(ops)
            except recblock.BlockError as e:
                raise polmod.PolicyError(str(e)) from None
            if split is not None:   # many record updates: checked as arrays, one C call
                ops, block = split
        gen = pol.apply(ops, generation, block=block)
        log.info("policy_applied", ops=len(ops), block_records=recblock.count(block),
                 generation=gen)
        return gen

    def load(self, document: dict, generation: int | None = None, block=None,
             trusted: bool = False) -> int:
        """Make the policy equal a whole document (diff, then one batch); `block`: its
        records as a record block, as nvgw-mgmt's snapshots carry them. `trusted`:
        from nvgw-mgmt's store, held only to the rules of its time (Policy.lenient)."""
        gen = self._need_policy().load_document(document, generation, block, lenient=trusted)
        log.info("policy_loaded", records=len(self.policy.records), generation=gen)
        return gen

    def migrate(self, vsid: int, ca: str, pa: str) -> int:
        """Move a CA to a new PA (live migration): the next packet goes there."""
        pol = self._need_policy()
        rec = pol.records.get((vsid, ca))
        if rec is None:
            raise polmod.PolicyError(f"no lookup record for {ca} in VSID {vsid}")
        gen = pol.apply([{"op": "set", "kind": "record", **rec, "pa": pa}])
        log.info("migrate", vsid=vsid, ca=ca, old_pa=rec["pa"], pa=pa, generation=gen)
        return gen

    def _slots_released(self, slots: list) -> None:
        # A deleted subnet's counters must not carry over to the next one on its slot.
        if self.workers is not None:
            for slot in slots:
                self.workers.vsid_clear(slot)

    def vsid_counters(self, vsid: int) -> dict:
        pol = self._need_policy()
        if not isinstance(vsid, int) or isinstance(vsid, bool):
            raise polmod.PolicyError(f"show vsid: 'vsid' must be a number, not {vsid!r}")
        sub = pol.subnets.get(vsid)
        if sub is None:
            raise polmod.PolicyError(f"virtual subnet {vsid} does not exist")
        if self.workers is None:
            return (self.final or {}).get("vsids", {}).get(str(vsid), {})
        return {"vsid": vsid, "rdid": sub["rdid"], **self.workers.vsid_counters(sub["slot"])}

    def neighbours(self) -> list[dict]:
        import ipaddress
        self._need_policy()
        return [{"vlan": scope, "ip": str(ipaddress.IPv4Address(ip)),
                 "mac": mac.hex(":") if mac else None}
                for scope, ip, mac in self.nv.neighbours()]


def drop_reasons() -> list[tuple[str, str]]:
    return list(dp.DROP_REASONS)
