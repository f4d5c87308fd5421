# <rte_malloc.h>: NUMA-aware, cache-aligned allocations for worker state.
cdef extern from "rte_malloc.h" nogil:
    void *rte_zmalloc_socket(const char *type, size_t size, unsigned int align, int socket)
    void rte_free(void *ptr)
