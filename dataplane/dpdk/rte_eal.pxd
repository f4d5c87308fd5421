# <rte_eal.h>: EAL start and stop.
cdef extern from "rte_eal.h" nogil:
    int rte_eal_init(int argc, char **argv)
    int rte_eal_cleanup()
    int rte_eal_process_type()
