# <rte_malloc.h>: NUMA-aware, cache-aligned allocations for worker state.
cdef extern from "rte_malloc.h" nogil:
    void *rte_zmalloc_socket(const char *type, size_t size, unsigned int align, int socket)
    void rte_free(void *ptr)

    struct rte_malloc_socket_stats:
        size_t heap_totalsz_bytes
        size_t heap_freesz_bytes
        size_t heap_allocsz_bytes
    int rte_malloc_get_socket_stats(int socket, rte_malloc_socket_stats *stats)
