# <rte_mempool.h>: pool accounting.
cdef extern from "rte_mempool.h" nogil:
    struct rte_mempool:
        char *name
        unsigned int size
    unsigned int rte_mempool_avail_count(const rte_mempool *mp)
    unsigned int rte_mempool_in_use_count(const rte_mempool *mp)
    void rte_mempool_free(rte_mempool *mp)
