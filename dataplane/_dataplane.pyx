# cython: language_level=3
"""Thin Cython core over DPDK: EAL, ports, mempool and the C workers.

Everything here runs on the main lcore (the Python control thread). The
Pythonic layer (gateway.py) decides what to build; this module only does it
and turns C error codes into DataplaneError.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

from dataplane.dpdk.rte_eal cimport rte_eal_init, rte_eal_cleanup
from dataplane.dpdk.rte_lcore cimport (rte_eal_remote_launch, rte_eal_wait_lcore,
                                       rte_lcore_is_enabled, rte_lcore_to_socket_id,
                                       rte_socket_id)
from dataplane.dpdk.rte_errno cimport rte_strerror
from dataplane.dpdk.rte_dev cimport rte_dev_probe
from dataplane.dpdk.rte_malloc cimport (rte_zmalloc_socket, rte_free,
                                        rte_malloc_socket_stats, rte_malloc_get_socket_stats)
from dataplane.dpdk.rte_mempool cimport (rte_mempool, rte_mempool_avail_count,
                                         rte_mempool_in_use_count, rte_mempool_free)
from dataplane.dpdk.rte_mbuf cimport (rte_pktmbuf_pool_create, RTE_MBUF_DEFAULT_BUF_SIZE,
                                      rte_mbuf, rte_pktmbuf_free)
from dataplane.dpdk cimport rte_ethdev as eth
from dataplane cimport cnvgw as c
from dataplane.dpdk cimport rte_flow as fl
from dataplane cimport ctables as tb
from dataplane.dpdk.rte_ring cimport (rte_ring, rte_ring_create, rte_ring_free, rte_ring_count,
                                      rte_ring_dequeue, RING_F_SP_ENQ, RING_F_SC_DEQ)
from dataplane.dpdk.rte_lcore cimport pthread_t, pthread_join, rte_ctrl_thread_create

import time

from dataplane.errors import DataplaneError

BURST = c.NVGW_BURST
MAX_PORTS = c.NVGW_MAX_PORTS
MAX_RXQ = c.NVGW_MAX_RXQ
PIPELINES = {"forward": c.NVGW_PIPE_FORWARD, "nvgre": c.NVGW_PIPE_NVGRE}
MAX_VSIDS = tb.NVGW_MAX_VSIDS
MAX_RD = tb.NVGW_MAX_RD
MAX_PA = tb.NVGW_MAX_PA
ROUTE_VSUBNET = tb.NVGW_ROUTE_VSUBNET
ROUTE_APPLIANCE = tb.NVGW_ROUTE_APPLIANCE
ROUTE_CUSTOMER = tb.NVGW_ROUTE_CUSTOMER
VSID_COUNTERS = ("encap_pkts", "encap_bytes", "decap_pkts", "decap_bytes",
                 "rewrite_out_pkts", "rewrite_out_bytes", "rewrite_in_pkts", "rewrite_in_bytes")
EXC_COUNTERS = ("arp_replies", "arp_requests", "neigh_learned", "arp_no_record",
                "echo_replies", "frag_needed", "ignored", "inject_full", "resolve_refused",
                "arp_spoofed", "resolve_not_host", "no_mbuf")

DROP_REASONS = tuple(
    (c.nvgw_drop_names[i].decode(), c.nvgw_drop_texts[i].decode())
    for i in range(c.NVGW_DROP_MAX))
cdef int _DROP_STOPPED = [name for name, _ in DROP_REASONS].index("stopped")

cdef bint _eal_up = False


cdef int check(int rc, str what) except -1:
    """The one place a negative DPDK return becomes an exception."""
    if rc < 0:
        raise DataplaneError(what, -rc, rte_strerror(-rc).decode())
    return rc


def eal_init(list args):
    """Start EAL with argv `args` (args[0] is the program name). Once per process."""
    global _eal_up
    if _eal_up:
        raise DataplaneError("EAL init", 114, "EAL is already initialised in this process")
    encoded = [a.encode() for a in args]
    cdef int argc = len(encoded)
    cdef char **argv = <char **>malloc((argc + 1) * sizeof(char *))
    cdef int rc
    if argv == NULL:
        raise MemoryError()
    for i in range(argc):
        argv[i] = encoded[i]
    argv[argc] = NULL
    try:
        with nogil:
            rc = rte_eal_init(argc, argv)
        if rc < 0:          # rte_errno says why; 0 would read as success
            check(-(c.nvgw_errno() or 22), "EAL init")
    finally:
        free(argv)
    _eal_up = True


def eal_cleanup():
    global _eal_up
    if _eal_up:
        rte_eal_cleanup()
        _eal_up = False


def heap_stats():
    """EAL heap of the main socket: total, allocated and free bytes."""
    cdef rte_malloc_socket_stats st
    check(rte_malloc_get_socket_stats(rte_socket_id(), &st), "heap stats")
    return {"total": st.heap_totalsz_bytes, "allocated": st.heap_allocsz_bytes,
            "free": st.heap_freesz_bytes}


def lcore_enabled(unsigned int lcore):
    return bool(rte_lcore_is_enabled(lcore))


def probe(str devargs):
    """Hot-plug a device from its devargs; return its ethdev port id."""
    cdef uint16_t port_id
    name = devargs.split(",", 1)[0].encode()
    arg = devargs.encode()
    cdef const char *cname = name
    cdef const char *carg = arg
    cdef int rc
    with nogil:
        rc = rte_dev_probe(carg)
    check(rc, f"probe {devargs!r}")
    check(eth.rte_eth_dev_get_port_by_name(cname, &port_id), f"find port {name.decode()!r}")
    return port_id


def port_id_of(str name):
    cdef uint16_t port_id
    n = name.encode()
    check(eth.rte_eth_dev_get_port_by_name(n, &port_id), f"find port {name!r}")
    return port_id


cdef class Mempool:
    cdef rte_mempool *mp
    cdef readonly str name
    cdef readonly unsigned int size

    def __cinit__(self, str name, unsigned int size, unsigned int cache=256, int socket=-1):
        n = name.encode()
        self.mp = rte_pktmbuf_pool_create(n, size, cache, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                          socket if socket >= 0 else <int>rte_socket_id())
        if self.mp == NULL:
            check(-c.nvgw_errno(), f"create mempool {name!r} of {size} mbufs")
        self.name = name
        self.size = size

    def available(self):
        return rte_mempool_avail_count(self.mp)

    def in_use(self):
        return rte_mempool_in_use_count(self.mp)

    def free(self):
        if self.mp != NULL:
            rte_mempool_free(self.mp)
            self.mp = NULL


def port_setup(uint16_t port, uint16_t n_rxq, uint16_t n_txq, Mempool pool,
               uint16_t nb_desc=1024, unsigned int mtu=0, bint rss=False):
    """Configure queues, MTU and start the port in promiscuous mode. With rss and
    several RX queues, the NIC's own RSS over IPv4 (TCP/UDP ports where there are
    some; NVGRE is IP protocol 47, "other") with the hash types the PMD offers
    (file and ring PMDs offer none: their queues are separate sources). Returns the
    hash types enabled."""
    cdef eth.rte_eth_conf conf
    cdef eth.rte_eth_dev_info info
    cdef uint16_t nb_rx = nb_desc, nb_tx = nb_desc
    cdef uint64_t hf = 0
    cdef int socket = eth.rte_eth_dev_socket_id(port)
    memset(&conf, 0, sizeof(conf))
    check(eth.rte_eth_dev_info_get(port, &info), f"port {port} info")
    if n_rxq > info.max_rx_queues or n_txq > info.max_tx_queues:
        raise DataplaneError(f"port {port} configure", 22,
                             f"needs {n_rxq} rx / {n_txq} tx queues (tx: one per worker), "
                             f"device {info.driver_name.decode()} offers "
                             f"{info.max_rx_queues} / {info.max_tx_queues}")
    if mtu:
        conf.rxmode.mtu = mtu
    if rss and n_rxq > 1:
        hf = (fl.RTE_ETH_RSS_IPV4 | fl.RTE_ETH_RSS_FRAG_IPV4 | fl.RTE_ETH_RSS_NONFRAG_IPV4_TCP |
              fl.RTE_ETH_RSS_NONFRAG_IPV4_UDP |
              fl.RTE_ETH_RSS_NONFRAG_IPV4_OTHER) & info.flow_type_rss_offloads
    if hf:
        conf.rxmode.mq_mode = eth.RTE_ETH_MQ_RX_RSS
        conf.rx_adv_conf.rss_conf.rss_hf = hf
    if socket < 0:
        socket = rte_socket_id()
    check(eth.rte_eth_dev_configure(port, n_rxq, n_txq, &conf), f"port {port} configure")
    check(eth.rte_eth_dev_adjust_nb_rx_tx_desc(port, &nb_rx, &nb_tx), f"port {port} descriptors")
    for q in range(n_rxq):
        check(eth.rte_eth_rx_queue_setup(port, q, nb_rx, socket, NULL, pool.mp),
              f"port {port} rx queue {q}")
    for q in range(n_txq):
        check(eth.rte_eth_tx_queue_setup(port, q, nb_tx, socket, NULL),
              f"port {port} tx queue {q}")
    check(eth.rte_eth_dev_start(port), f"port {port} start")
    # Virtual PMDs may not support promiscuous mode; that is not an error.
    eth.rte_eth_promiscuous_enable(port)
    return hf


def port_info(uint16_t port):
    cdef eth.rte_eth_dev_info info
    cdef eth.rte_ether_addr mac
    cdef uint16_t mtu = 0
    check(eth.rte_eth_dev_info_get(port, &info), f"port {port} info")
    check(eth.rte_eth_macaddr_get(port, &mac), f"port {port} mac")
    check(eth.rte_eth_dev_get_mtu(port, &mtu), f"port {port} mtu")
    return {
        "driver": info.driver_name.decode(),
        "mac": ":".join(f"{b:02x}" for b in mac.addr_bytes[:6]),
        "mtu": mtu,
        "max_rx_queues": info.max_rx_queues,
        "max_tx_queues": info.max_tx_queues,
    }


def port_stats(uint16_t port):
    """The PMD's own counters for the port."""
    cdef eth.rte_eth_stats s
    check(eth.rte_eth_stats_get(port, &s), f"port {port} stats")
    return {"ipackets": s.ipackets, "opackets": s.opackets, "ibytes": s.ibytes,
            "obytes": s.obytes, "imissed": s.imissed, "ierrors": s.ierrors,
            "oerrors": s.oerrors, "rx_nombuf": s.rx_nombuf}


def inner_rss(uint16_t port, uint16_t n_queues, bint install):
    """Ask the PMD for RSS over the inner IPv4/TCP/UDP headers of NVGRE
    (rte_flow RSS action, level 2) across n_queues RX queues. Returns
    (supported, reason); with install, creates the rule when supported."""
    cdef fl.rte_flow_attr attr
    cdef fl.rte_flow_item pattern[4]
    cdef fl.rte_flow_action actions[2]
    cdef fl.rte_flow_action_rss rss
    cdef fl.rte_flow_error err
    cdef uint16_t queues[16]
    cdef int rc
    memset(&attr, 0, sizeof(attr))
    memset(pattern, 0, sizeof(pattern))
    memset(actions, 0, sizeof(actions))
    memset(&rss, 0, sizeof(rss))
    memset(&err, 0, sizeof(err))
    attr.ingress = 1
    pattern[0].type = fl.RTE_FLOW_ITEM_TYPE_ETH
    pattern[1].type = fl.RTE_FLOW_ITEM_TYPE_IPV4
    pattern[2].type = fl.RTE_FLOW_ITEM_TYPE_NVGRE
    pattern[3].type = fl.RTE_FLOW_ITEM_TYPE_END
    for q in range(min(n_queues, 16)):
        queues[q] = q
    rss.func = fl.RTE_ETH_HASH_FUNCTION_DEFAULT
    rss.level = 2                       # the inner headers
    rss.types = (fl.RTE_ETH_RSS_IPV4 | fl.RTE_ETH_RSS_NONFRAG_IPV4_TCP |
                 fl.RTE_ETH_RSS_NONFRAG_IPV4_UDP)
    rss.queue_num = min(n_queues, 16)
    rss.queue = queues
    actions[0].type = fl.RTE_FLOW_ACTION_TYPE_RSS
    actions[0].conf = &rss
    actions[1].type = fl.RTE_FLOW_ACTION_TYPE_END
    rc = fl.rte_flow_validate(port, &attr, pattern, actions, &err)
    if rc != 0:
        return False, (err.message.decode() if err.message != NULL
                       else rte_strerror(-rc).decode())
    if install and fl.rte_flow_create(port, &attr, pattern, actions, &err) == NULL:
        return False, err.message.decode() if err.message != NULL else "rule not created"
    return True, "inner RSS rule installed" if install else "supported"


def port_stop(uint16_t port):
    eth.rte_eth_dev_stop(port)
    eth.rte_eth_dev_close(port)


cdef class Workers:
    """The C worker states, their launch and their stop.

    Each nvgw_worker is allocated cache-aligned on its lcore's socket;
    the quit flag lives in C memory that the workers poll.
    """
    cdef c.nvgw_worker **w
    cdef int *quit
    cdef rte_ring *rings[16][16]      # [from][to]: software RSS hand-over
    cdef readonly int count
    cdef readonly bint running

    cdef bint distribute

    def __cinit__(self, int count, bint distribute=True):
        self.w = <c.nvgw_worker **>malloc(count * sizeof(c.nvgw_worker *))
        self.quit = <int *>malloc(sizeof(int))
        if self.w == NULL or self.quit == NULL:
            raise MemoryError()
        memset(self.w, 0, count * sizeof(c.nvgw_worker *))
        memset(self.rings, 0, sizeof(self.rings))
        self.quit[0] = 0
        self.count = count
        if count > c.NVGW_MAX_WORKERS:
            raise DataplaneError("workers", 22, f"at most {c.NVGW_MAX_WORKERS} workers")
        self.distribute = distribute and count > 1
        for s in range(count if self.distribute else 0):
            for d in range(count):
                if s != d:
                    name = f"nvgw_d{s}_{d}".encode()
                    self.rings[s][d] = rte_ring_create(name, 1024, rte_socket_id(),
                                                       RING_F_SP_ENQ | RING_F_SC_DEQ)
                    if self.rings[s][d] == NULL:
                        raise DataplaneError("workers", 12, "cannot create hand-over rings")

    def configure(self, int i, unsigned int lcore, str pipeline, list rxqs,
                  uint16_t txq, uint16_t n_ports, list fwd_out, Nvgre nv=None):
        """rxqs: [(port, queue)]; txq: this worker's TX queue on every port."""
        if len(rxqs) > c.NVGW_MAX_RXQ:
            raise DataplaneError("worker configure", 22,
                                 f"{len(rxqs)} rx queues exceed {c.NVGW_MAX_RXQ} per worker")
        cdef c.nvgw_worker *w = <c.nvgw_worker *>rte_zmalloc_socket(
            b"nvgw_worker", sizeof(c.nvgw_worker), 64, rte_lcore_to_socket_id(lcore))
        if w == NULL:
            raise DataplaneError("worker configure", 12, "no memory for worker state")
        w.lcore = lcore
        w.pipeline = PIPELINES[pipeline]
        w.n_ports = n_ports
        w.quit = self.quit
        w.n_rxq = len(rxqs)
        for k, (p, q) in enumerate(rxqs):
            w.rxq[k].port = p
            w.rxq[k].queue = q
        for p in range(n_ports):
            w.tx[p].queue = txq
            w.fwd_out[p] = fwd_out[p]
        self.w[i] = w
        w.vsid[0] = <c.nvgw_count *>rte_zmalloc_socket(
            b"nvgw_vsid_ctr", c.NVGW_DIRS * tb.NVGW_MAX_VSIDS * sizeof(c.nvgw_count), 64,
            rte_lcore_to_socket_id(lcore))
        if w.vsid[0] == NULL:
            raise DataplaneError("worker configure", 12, "no memory for VSID counters")
        for d in range(1, c.NVGW_DIRS):
            w.vsid[d] = w.vsid[0] + <size_t>d * tb.NVGW_MAX_VSIDS
        w.id = i
        w.n_workers = self.count if self.distribute else 1
        for d in range(self.count):
            w.to[d] = self.rings[i][d]
            w.from_[d] = self.rings[d][i]
        if nv is not None:
            w.ctx = nv.ctx
            w.qsbr = nv.ctx.t.qsbr
            w.qsbr_id = i
            if i == 0:      # worker 0 transmits what the exception thread sends
                w.inject = nv.ctx.inject

    def launch(self):
        self.quit[0] = 0
        for i in range(self.count):
            check(rte_eal_remote_launch(c.nvgw_worker_main,
                                        self.w[i], self.w[i].lcore),
                  f"launch worker on lcore {self.w[i].lcore}")
        self.running = True

    def stop(self):
        """Raise the quit flag and wait: each worker flushes its TX first. What one
        handed to another that had stopped first is freed and counted, as the
        receiver's `stopped` drops."""
        cdef unsigned int lcore
        self.quit[0] = 1
        if self.running:
            for i in range(self.count):
                lcore = self.w[i].lcore
                with nogil:
                    rte_eal_wait_lcore(lcore)
        self.running = False
        cdef void *m
        for s in range(self.count):
            for d in range(self.count):
                while self.rings[s][d] != NULL and rte_ring_dequeue(self.rings[s][d], &m) == 0:
                    rte_pktmbuf_free(<rte_mbuf *>m)
                    self.w[d].drops[_DROP_STOPPED] += 1

    def counters(self, int i, uint16_t n_ports):
        """A snapshot of one worker's counters (plain reads of 64-bit words)."""
        cdef c.nvgw_worker *w = self.w[i]
        return {
            "lcore": w.lcore,
            "ports": [{"rx_pkts": w.port[p].rx_pkts, "rx_bytes": w.port[p].rx_bytes,
                       "tx_pkts": w.port[p].tx_pkts, "tx_bytes": w.port[p].tx_bytes}
                      for p in range(n_ports)],
            "drops": {DROP_REASONS[d][0]: w.drops[d] for d in range(c.NVGW_DROP_MAX)},
            "exceptions": w.exceptions,
            "processed": w.processed, "handed_off": w.handed_off,
            "loops": w.loops, "busy_loops": w.busy_loops,
            "busy_cycles": w.busy_cycles, "idle_cycles": w.idle_cycles,
        }

    def vsid_counters(self, unsigned int idx):
        """One VSID slot's counters summed over the workers."""
        if idx >= tb.NVGW_MAX_VSIDS:
            raise DataplaneError("vsid counters", 22, f"counter slot {idx} out of range")
        cdef uint64_t sums[8]
        cdef int d
        memset(sums, 0, sizeof(sums))
        for i in range(self.count):
            for d in range(c.NVGW_DIRS):
                sums[2 * d] += self.w[i].vsid[d][idx].pkts
                sums[2 * d + 1] += self.w[i].vsid[d][idx].bytes
        return {name: sums[k] for k, name in enumerate(VSID_COUNTERS)}

    def vsid_clear(self, unsigned int idx):
        """Zero one VSID slot's counters in every worker. Only for a slot no
        worker can count into: its VSID deleted and a grace period since."""
        if idx >= tb.NVGW_MAX_VSIDS:
            raise DataplaneError("vsid counters", 22, f"counter slot {idx} out of range")
        cdef int d
        for i in range(self.count):
            for d in range(c.NVGW_DIRS):
                self.w[i].vsid[d][idx].pkts = 0
                self.w[i].vsid[d][idx].bytes = 0

    def free(self):
        """Release worker states; must run before EAL cleanup unmaps them."""
        if self.running:
            raise DataplaneError("free workers", 16, "workers are still running")
        for i in range(self.count):
            if self.w[i] != NULL:
                rte_free(self.w[i].vsid[0])
                rte_free(self.w[i])
                self.w[i] = NULL
        for s in range(16):
            for d in range(16):
                rte_ring_free(self.rings[s][d])
                self.rings[s][d] = NULL
        self.count = 0

    def __dealloc__(self):
        # Worker states belong to EAL memory, gone after cleanup: free()
        # releases them; here only the plain-malloc parts are returned.
        if not self.running:
            free(self.w)
            free(self.quit)


cdef uint32_t _be32(bytes packed) except? 0:
    """A 4-byte network-order address as the uint32 C code compares."""
    cdef uint32_t v
    if len(packed) != 4:
        raise ValueError("an IPv4 address is 4 bytes")
    memcpy(&v, <const char *>packed, 4)
    return v


cdef bytes _mac6(bytes mac):
    if len(mac) != 6:
        raise ValueError("a MAC address is 6 bytes")
    return mac


cdef class Nvgre:
    """The NVGRE pipeline's shared state: policy tables, the exception and
    inject rings, and the exception thread. Writers run on the control
    thread; commit() waits out readers before freeing what was replaced.
    Addresses are passed as packed bytes (ipaddress .packed, MAC 6 bytes)."""
    cdef c.nvgw_ctx *ctx
    cdef pthread_t thread
    cdef readonly bint thread_running

    def __cinit__(self, Mempool pool, uint16_t provider_port, uint16_t customer_port,
                  uint32_t records, uint32_t routes, uint32_t neighbours, uint32_t rewrites,
                  unsigned int workers):
        cdef tb.nvgw_table_sizes sz
        cdef int rc
        sz.records = records
        sz.routes = routes
        sz.neighbours = neighbours
        sz.rewrites = rewrites
        sz.readers = workers + 1          # the workers and the exception thread
        self.ctx = <c.nvgw_ctx *>rte_zmalloc_socket(b"nvgw_ctx", sizeof(c.nvgw_ctx), 64, -1)
        if self.ctx == NULL:
            raise DataplaneError("tables", 12, "no memory for the pipeline context")
        rc = tb.nvgw_tables_create(&self.ctx.t, &sz, rte_socket_id())
        if rc < 0:
            rte_free(self.ctx)
            self.ctx = NULL
            raise DataplaneError("tables", -rc,
                                 f"cannot allocate tables for {records} records, {routes} "
                                 f"routes and {neighbours} neighbours (raise eal.memory_mb)")
        self.ctx.exc = rte_ring_create(b"nvgw_exc", 4096, rte_socket_id(), RING_F_SC_DEQ)
        self.ctx.inject = rte_ring_create(b"nvgw_inject", 4096, rte_socket_id(),
                                          RING_F_SP_ENQ | RING_F_SC_DEQ)
        if self.ctx.exc == NULL or self.ctx.inject == NULL:
            self.free()
            raise DataplaneError("tables", 12, "cannot create the exception rings")
        self.ctx.pool = pool.mp
        self.ctx.provider_port = provider_port
        self.ctx.customer_port = customer_port
        self.ctx.customer_mtu = 0xFFFF     # unbounded; the gateway sets a configured MTU
        self.ctx.exc_qsbr_id = workers

    @property
    def customer_mtu(self):
        """The largest IPv4 packet the customer port sends (its MTU): a bigger one
        is dropped as mtu_exceeded, not handed to a NIC that drops it unseen."""
        return self.ctx.customer_mtu

    @customer_mtu.setter
    def customer_mtu(self, uint16_t mtu):
        self.ctx.customer_mtu = mtu

    def start_exceptions(self):
        check(rte_ctrl_thread_create(&self.thread, b"nvgw-exc", NULL, c.nvgw_exc_main,
                                     self.ctx), "start the exception thread")
        self.thread_running = True

    def stop_exceptions(self):
        if self.thread_running:
            self.ctx.quit = 1
            with nogil:
                pthread_join(self.thread, NULL)
            self.thread_running = False

    def free(self):
        """Release tables and rings; before EAL cleanup, after workers stopped.
        Packets still in the exception and inject rings go back to their pool."""
        cdef void *m
        cdef rte_ring *rings[2]
        self.stop_exceptions()
        if self.ctx != NULL:
            tb.nvgw_tables_free(self.ctx.t)
            rings[0], rings[1] = self.ctx.exc, self.ctx.inject
            for i in range(2):
                while rings[i] != NULL and rte_ring_dequeue(rings[i], &m) == 0:
                    rte_pktmbuf_free(<rte_mbuf *>m)
            rte_ring_free(self.ctx.exc)
            rte_ring_free(self.ctx.inject)
            rte_free(self.ctx)
            self.ctx = NULL

    cdef int _ok(self, int rc, str what) except -1:
        if self.ctx == NULL:
            raise DataplaneError(what, 19, "the pipeline is stopped")
        return check(rc, what)

    def commit(self):
        with nogil:
            tb.nvgw_tables_commit(self.ctx.t)

    def provider_set(self, list pas, bytes mask, bytes gw, unsigned int mtu, bytes mac):
        cdef uint32_t arr[8]
        if not 1 <= len(pas) <= tb.NVGW_MAX_PA:
            raise DataplaneError("provider", 22, f"1..{tb.NVGW_MAX_PA} provider addresses")
        for i, pa in enumerate(pas):
            arr[i] = _be32(pa)
        cdef bytes m = _mac6(mac)
        self._ok(tb.nvgw_provider_set(self.ctx.t, arr, len(pas), _be32(mask), _be32(gw), mtu,
                                      <const uint8_t *><char *>m), "provider")

    def provider_clear(self):
        self._ok(tb.nvgw_provider_clear(self.ctx.t), "clear provider")

    def vsid_set(self, uint32_t vsid, uint32_t rdid, bytes gw_ip, bytes gw_mac, int flowid,
                 uint16_t idx):
        cdef bytes m = _mac6(gw_mac)
        self._ok(tb.nvgw_vsid_set(self.ctx.t, vsid, rdid, _be32(gw_ip),
                                  <const uint8_t *><char *>m, flowid, idx), f"vsid {vsid}")

    def vsid_del(self, uint32_t vsid):
        self._ok(tb.nvgw_vsid_del(self.ctx.t, vsid), f"delete vsid {vsid}")

    def record_set(self, uint32_t vsid, bytes ca, bytes mac, bytes pa, uint8_t method):
        cdef bytes m = _mac6(mac)
        self._ok(tb.nvgw_record_set(self.ctx.t, vsid, _be32(ca), <const uint8_t *><char *>m,
                                    _be32(pa), method), f"record {vsid}")

    def record_del(self, uint32_t vsid, bytes ca):
        self._ok(tb.nvgw_record_del(self.ctx.t, vsid, _be32(ca)), f"delete record {vsid}")

    def record_set_bulk(self, const unsigned char[::1] block not None):
        """Lookup records packed as dataplane/recblock.py does (20 bytes each:
        vsid host order, CA and PA network order, MAC, method, 0), whole or not
        at all: one C call for a million records."""
        cdef size_t size = sizeof(tb.nvgw_rec_wire)
        cdef uint32_t n = block.shape[0] // size
        cdef uint32_t bad = 0
        cdef int rc
        if block.shape[0] % size:
            raise ValueError(f"a record block is a multiple of {size} bytes")
        if n == 0:
            return
        if self.ctx == NULL:
            raise DataplaneError("record block", 19, "the pipeline is stopped")
        with nogil:
            rc = tb.nvgw_record_set_bulk(self.ctx.t, <const tb.nvgw_rec_wire *>&block[0], n,
                                         &bad)
        self._ok(rc, f"record block (record {bad} of {n})")

    def table_counts(self):
        """Entries in the C tables (what the workers see, not the Python mirror)."""
        if self.ctx == NULL:
            raise DataplaneError("tables", 19, "the pipeline is stopped")
        return {"records": self.ctx.t.records.n,
                "neighbours": self.ctx.t.neigh.n,
                "neighbours_learned": self.ctx.t.n_learned}

    def digest(self):
        """What the workers can see of each table, as numbers (cext/digest.c):
        two states of the tables are alike when their digests are."""
        cdef uint64_t d[tb.NVGW_DIGEST_N]
        if self.ctx == NULL:
            raise DataplaneError("tables", 19, "the pipeline is stopped")
        tb.nvgw_tables_digest(self.ctx.t, d)
        return dict(zip(("records", "routes", "rewrites", "vsids", "attachments", "domains",
                         "provider", "neighbours"), [d[i] for i in range(tb.NVGW_DIGEST_N)]))

    def route_set(self, uint32_t rdid, bytes prefix, uint8_t length, uint8_t kind,
                  uint32_t vsid, uint16_t vlan, bytes nh):
        self._ok(tb.nvgw_route_set(self.ctx.t, rdid, _be32(prefix), length, kind, vsid, vlan,
                                   _be32(nh)), f"route in domain {rdid}")

    def route_del(self, uint32_t rdid, bytes prefix, uint8_t length, bint last_of_len):
        self._ok(tb.nvgw_route_del(self.ctx.t, rdid, _be32(prefix), length, last_of_len),
                 f"delete route in domain {rdid}")

    def rd_shadow_set(self, uint32_t rdid, bint on):
        self._ok(tb.nvgw_rd_shadow_set(self.ctx.t, rdid, on),
                 f"route override flag of domain {rdid}")

    def rd_link_set(self, uint32_t rdid, uint16_t vlan):
        self._ok(tb.nvgw_rd_link_set(self.ctx.t, rdid, vlan),
                 f"link of domain {rdid}")

    def attach_set(self, uint16_t vlan, uint32_t rdid, bytes ip, bytes mask, bytes mac):
        cdef bytes m = _mac6(mac)
        self._ok(tb.nvgw_attach_set(self.ctx.t, vlan, rdid, _be32(ip), _be32(mask),
                                    <const uint8_t *><char *>m), f"attachment vlan {vlan}")

    def attach_del(self, uint16_t vlan):
        self._ok(tb.nvgw_attach_del(self.ctx.t, vlan), f"delete attachment vlan {vlan}")

    def rw_set(self, bytes pa, bytes ca, uint32_t rdid, uint16_t slot, bint gateway):
        self._ok(tb.nvgw_rw_set(self.ctx.t, _be32(pa), _be32(ca), rdid, slot, gateway),
                 "rewrite mapping")

    def rw_del(self, bytes pa, uint32_t rdid, bytes ca, bint gateway):
        self._ok(tb.nvgw_rw_del(self.ctx.t, _be32(pa), rdid, _be32(ca), gateway),
                 "delete rewrite mapping")

    def neigh_set(self, uint16_t scope, bytes ip, bytes mac):
        cdef bytes m = _mac6(mac)
        if tb.nvgw_neigh_set(self.ctx.t, scope, _be32(ip), <const uint8_t *><char *>m, 0) == NULL:
            raise DataplaneError("neighbour", 28, "the neighbour table is full")

    def neigh_clear(self, uint16_t scope, bytes ip):
        """A static neighbour deleted: unresolved again, the next packet ARPs."""
        tb.nvgw_neigh_clear(self.ctx.t, scope, _be32(ip))

    def neigh_learned(self, uint16_t scope, bytes ip):
        """The MAC the exception thread learned for (scope, ip), or None (no entry,
        unresolved, or a static one from policy): what undoing a batch that set a
        static neighbour there puts back."""
        cdef tb.nvgw_neigh *n = tb.nvgw_neigh_find(self.ctx.t, scope, _be32(ip))
        cdef uint64_t mac
        if n == NULL:
            return None
        mac = n.mac
        if not (mac & tb.NVGW_NEIGH_VALID) or mac & tb.NVGW_NEIGH_STATIC:
            return None
        return (<char *>&mac)[:6]

    def neigh_learn(self, uint16_t scope, bytes ip, bytes mac):
        """As the exception thread learns a host's MAC from its ARP: the entry made
        (within the learning budget) where absent; never over a static MAC. False
        when it did not take."""
        cdef bytes m = _mac6(mac)
        if tb.nvgw_neigh_resolve(self.ctx.t, scope, _be32(ip)) == NULL:
            return False
        return tb.nvgw_neigh_set(self.ctx.t, scope, _be32(ip),
                                 <const uint8_t *><char *>m, 1) != NULL

    def resolve_ahead(self, list hops, double wait_s):
        """Before a batch moves records to next hops [(scope, ip bytes)]: make the
        entries not there yet, have the exception thread ARP for those unresolved,
        and wait up to wait_s for the answers, so that a migrated VM's packets are
        not dropped while its new host is resolved. Returns those still unresolved
        (their packets ask again, as for any), or None when the exception thread
        is not running (a policy file loaded before traffic)."""
        cdef uint16_t scope
        cdef uint32_t ip
        if self.ctx == NULL or not self.thread_running:
            return None
        pending = []
        for scope_, packed in hops:
            scope, ip = scope_, _be32(packed)
            if tb.nvgw_neigh_prepare(self.ctx.t, scope, ip) == 0 and \
                    c.nvgw_exc_resolve_ahead(self.ctx, scope, ip) == 0:
                pending.append((scope_, packed))
        deadline = time.monotonic() + wait_s
        while pending and time.monotonic() < deadline:
            time.sleep(0.0002)
            pending = [(s, p) for s, p in pending
                       if tb.nvgw_neigh_prepare(self.ctx.t, s, _be32(p)) != 1]
        return pending

    def neighbours(self):
        """[(scope, ip bytes, mac bytes or None)] of every neighbour entry."""
        cdef uint64_t key, data
        cdef uint32_t pos = 0
        cdef tb.nvgw_neigh *n
        cdef uint64_t mac
        cdef uint32_t ip
        out = []
        while tb.nvgw_htab_next(&self.ctx.t.neigh, &pos, &key, &data):
            n = <tb.nvgw_neigh *><uintptr_t>data
            mac = n.mac
            ip = n.ip
            out.append((n.scope, (<char *>&ip)[:4],
                        (<char *>&mac)[:6] if mac & tb.NVGW_NEIGH_VALID else None))
        return out

    def exc_counters(self):
        cdef uint64_t *v = <uint64_t *>&self.ctx.c
        counters = {name: v[i] for i, name in enumerate(EXC_COUNTERS)}
        counters["queued"] = rte_ring_count(self.ctx.exc)
        counters["inject_queued"] = rte_ring_count(self.ctx.inject)   # replies not yet sent
        return counters
