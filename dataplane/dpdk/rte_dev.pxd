# <rte_dev.h>: hot-plug probing of a device from its devargs string.
cdef extern from "rte_dev.h" nogil:
    int rte_dev_probe(const char *devargs)
