# <rte_ring.h>: the exception and inject rings.
cdef extern from "rte_ring.h" nogil:
    enum: RING_F_SP_ENQ
    enum: RING_F_SC_DEQ
    struct rte_ring:
        pass
    rte_ring *rte_ring_create(const char *name, unsigned int count, int socket_id,
                              unsigned int flags)
    void rte_ring_free(rte_ring *r)
    unsigned int rte_ring_count(const rte_ring *r)
    int rte_ring_dequeue(rte_ring *r, void **obj_p)
