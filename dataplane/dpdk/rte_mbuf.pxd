# <rte_mbuf.h>: packet buffer pools.
from dataplane.dpdk.rte_mempool cimport rte_mempool

cdef extern from "rte_mbuf.h" nogil:
    struct rte_mbuf:
        pass
    void rte_pktmbuf_free(rte_mbuf *m)
    enum: RTE_MBUF_DEFAULT_BUF_SIZE
    rte_mempool *rte_pktmbuf_pool_create(const char *name, unsigned int n,
                                         unsigned int cache_size, unsigned short priv_size,
                                         unsigned short data_room_size, int socket_id)
