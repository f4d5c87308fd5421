# cython: language_level=3
"""Thin Cython core over DPDK: EAL, ports, mempool and the C workers.

Everything here runs on the main lcore (the Python control thread). The
Pythonic layer (gateway.py) decides what to build; this module only does it
and turns C error codes into DataplaneError.
"""
from libc.stdint cimport uint16_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset

from dataplane.dpdk.rte_eal cimport rte_eal_init, rte_eal_cleanup
from dataplane.dpdk.rte_lcore cimport (rte_eal_remote_launch, rte_eal_wait_lcore,
                                       rte_lcore_is_enabled, rte_lcore_to_socket_id,
                                       rte_socket_id)
from dataplane.dpdk.rte_errno cimport rte_strerror
from dataplane.dpdk.rte_dev cimport rte_dev_probe
from dataplane.dpdk.rte_malloc cimport rte_zmalloc_socket, rte_free
from dataplane.dpdk.rte_mempool cimport (rte_mempool, rte_mempool_avail_count,
                                         rte_mempool_in_use_count, rte_mempool_free)
from dataplane.dpdk.rte_mbuf cimport rte_pktmbuf_pool_create, RTE_MBUF_DEFAULT_BUF_SIZE
from dataplane.dpdk cimport rte_ethdev as eth
from dataplane cimport cnvgw as c

from dataplane.errors import DataplaneError

BURST = c.NVGW_BURST
MAX_PORTS = c.NVGW_MAX_PORTS
MAX_RXQ = c.NVGW_MAX_RXQ
PIPELINES = {"forward": c.NVGW_PIPE_FORWARD}

DROP_REASONS = tuple(
    (c.nvgw_drop_names[i].decode(), c.nvgw_drop_texts[i].decode())
    for i in range(c.NVGW_DROP_MAX))

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
        if rc < 0:
            check(-c.nvgw_errno(), "EAL init")
    finally:
        free(argv)
    _eal_up = True


def eal_cleanup():
    global _eal_up
    if _eal_up:
        rte_eal_cleanup()
        _eal_up = False


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
               uint16_t nb_desc=1024, unsigned int mtu=0):
    """Configure queues, MTU and start the port in promiscuous mode."""
    cdef eth.rte_eth_conf conf
    cdef eth.rte_eth_dev_info info
    cdef uint16_t nb_rx = nb_desc, nb_tx = nb_desc
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


def port_info(uint16_t port):
    cdef eth.rte_eth_dev_info info
    cdef eth.rte_ether_addr mac
    check(eth.rte_eth_dev_info_get(port, &info), f"port {port} info")
    check(eth.rte_eth_macaddr_get(port, &mac), f"port {port} mac")
    return {
        "driver": info.driver_name.decode(),
        "mac": ":".join(f"{b:02x}" for b in mac.addr_bytes[:6]),
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
    cdef readonly int count
    cdef readonly bint running

    def __cinit__(self, int count):
        self.w = <c.nvgw_worker **>malloc(count * sizeof(c.nvgw_worker *))
        self.quit = <int *>malloc(sizeof(int))
        if self.w == NULL or self.quit == NULL:
            raise MemoryError()
        memset(self.w, 0, count * sizeof(c.nvgw_worker *))
        self.quit[0] = 0
        self.count = count

    def configure(self, int i, unsigned int lcore, str pipeline, list rxqs,
                  uint16_t txq, uint16_t n_ports, list fwd_out):
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

    def launch(self):
        self.quit[0] = 0
        for i in range(self.count):
            check(rte_eal_remote_launch(c.nvgw_worker_main,
                                        self.w[i], self.w[i].lcore),
                  f"launch worker on lcore {self.w[i].lcore}")
        self.running = True

    def stop(self):
        """Raise the quit flag and wait: each worker flushes its TX first."""
        cdef unsigned int lcore
        self.quit[0] = 1
        if self.running:
            for i in range(self.count):
                lcore = self.w[i].lcore
                with nogil:
                    rte_eal_wait_lcore(lcore)
        self.running = False

    def counters(self, int i, uint16_t n_ports):
        """A snapshot of one worker's counters (plain reads of 64-bit words)."""
        cdef c.nvgw_worker *w = self.w[i]
        return {
            "lcore": w.lcore,
            "ports": [{"rx_pkts": w.port[p].rx_pkts, "rx_bytes": w.port[p].rx_bytes,
                       "tx_pkts": w.port[p].tx_pkts, "tx_bytes": w.port[p].tx_bytes}
                      for p in range(n_ports)],
            "drops": {DROP_REASONS[d][0]: w.drops[d] for d in range(c.NVGW_DROP_MAX)},
            "loops": w.loops, "busy_loops": w.busy_loops,
            "busy_cycles": w.busy_cycles, "idle_cycles": w.idle_cycles,
        }

    def free(self):
        """Release worker states; must run before EAL cleanup unmaps them."""
        if self.running:
            raise DataplaneError("free workers", 16, "workers are still running")
        for i in range(self.count):
            if self.w[i] != NULL:
                rte_free(self.w[i])
                self.w[i] = NULL
        self.count = 0

    def __dealloc__(self):
        # Worker states belong to EAL memory, gone after cleanup: free()
        # releases them; here only the plain-malloc parts are returned.
        if not self.running:
            free(self.w)
            free(self.quit)
