# <rte_lcore.h>, <rte_launch.h>: lcores and launching work on them.
cdef extern from "rte_lcore.h" nogil:
    unsigned int rte_lcore_id()
    unsigned int rte_get_main_lcore()
    int rte_lcore_is_enabled(unsigned int lcore_id)
    unsigned int rte_lcore_count()
    int rte_lcore_to_socket_id(unsigned int lcore_id)
    unsigned int rte_socket_id()

cdef extern from "rte_launch.h" nogil:
    int rte_eal_remote_launch(int (*f)(void *) noexcept nogil, void *arg, unsigned int worker_id)
    int rte_eal_wait_lcore(unsigned int worker_id)

cdef extern from "pthread.h" nogil:
    ctypedef unsigned long pthread_t
    int pthread_join(pthread_t thread, void **retval)

cdef extern from "rte_lcore.h" nogil:
    int rte_ctrl_thread_create(pthread_t *thread, const char *name, const void *attr,
                               void *(*start_routine)(void *) noexcept nogil, void *arg)
