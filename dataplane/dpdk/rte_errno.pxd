# <rte_errno.h>: error strings (rte_errno itself is per lcore; read it through nvgw_errno()).
cdef extern from "rte_errno.h" nogil:
    const char *rte_strerror(int errnum)
