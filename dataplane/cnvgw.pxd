# cext/nvgw.h: the C data plane's structures and entry points.
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from dataplane.ctables cimport nvgw_tables, rte_rcu_qsbr
from dataplane.dpdk.rte_ring cimport rte_ring
from dataplane.dpdk.rte_mempool cimport rte_mempool

cdef extern from "nvgw.h" nogil:
    enum: NVGW_BURST
    enum: NVGW_MAX_PORTS
    enum: NVGW_MAX_RXQ
    enum: NVGW_DROP_MAX
    enum: NVGW_MAX_WORKERS

    const char *const nvgw_drop_names[]
    const char *const nvgw_drop_texts[]

    enum nvgw_pipeline:
        NVGW_PIPE_FORWARD
        NVGW_PIPE_NVGRE

    enum: NVGW_DIRS

    struct nvgw_count:
        uint64_t pkts, bytes

    struct nvgw_exc_counters:
        uint64_t arp_replies, arp_requests, neigh_learned, arp_no_record
        uint64_t echo_replies, frag_needed, ignored, inject_full

    struct nvgw_ctx:
        nvgw_tables *t
        rte_ring *exc
        rte_ring *inject
        rte_mempool *pool
        uint16_t provider_port, customer_port
        uint16_t customer_mtu
        unsigned int exc_qsbr_id
        int quit
        nvgw_exc_counters c

    struct nvgw_port_counters:
        uint64_t rx_pkts, rx_bytes, tx_pkts, tx_bytes

    struct nvgw_txbuf:
        uint16_t n
        uint16_t queue

    struct nvgw_rxq:
        uint16_t port
        uint16_t queue

    struct nvgw_worker:
        unsigned int lcore
        uint16_t n_rxq
        uint16_t n_ports
        nvgw_pipeline pipeline
        nvgw_rxq rxq[NVGW_MAX_RXQ]
        uint16_t fwd_out[NVGW_MAX_PORTS]
        const int *quit
        nvgw_ctx *ctx
        rte_rcu_qsbr *qsbr
        unsigned int qsbr_id
        rte_ring *inject
        nvgw_count *vsid[NVGW_DIRS]
        uint16_t id, n_workers
        rte_ring *to[16]
        rte_ring *from_ "from"[16]
        nvgw_txbuf tx[NVGW_MAX_PORTS]
        nvgw_port_counters port[NVGW_MAX_PORTS]
        uint64_t drops[NVGW_DROP_MAX]
        uint64_t exceptions
        uint64_t processed, handed_off
        uint64_t loops, busy_loops, busy_cycles, idle_cycles

    int nvgw_worker_main(void *arg)
    void *nvgw_exc_main(void *arg)
    int nvgw_exc_resolve_ahead(nvgw_ctx *c, uint16_t scope, uint32_t ip)
    int nvgw_errno()
