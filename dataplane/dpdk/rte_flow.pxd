# <rte_flow.h>: probing and installing RSS on the inner headers of NVGRE.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "rte_flow.h" nogil:
    enum rte_flow_item_type:
        RTE_FLOW_ITEM_TYPE_END
        RTE_FLOW_ITEM_TYPE_ETH
        RTE_FLOW_ITEM_TYPE_IPV4
        RTE_FLOW_ITEM_TYPE_NVGRE
    enum rte_flow_action_type:
        RTE_FLOW_ACTION_TYPE_END
        RTE_FLOW_ACTION_TYPE_RSS
    enum rte_eth_hash_function:
        RTE_ETH_HASH_FUNCTION_DEFAULT
    enum: RTE_ETH_RSS_IPV4
    enum: RTE_ETH_RSS_FRAG_IPV4
    enum: RTE_ETH_RSS_NONFRAG_IPV4_OTHER
    enum: RTE_ETH_RSS_NONFRAG_IPV4_TCP
    enum: RTE_ETH_RSS_NONFRAG_IPV4_UDP

    struct rte_flow_attr:
        uint32_t group
        uint32_t priority
        uint32_t ingress
    struct rte_flow_item:
        rte_flow_item_type type
        const void *spec
        const void *last
        const void *mask
    struct rte_flow_action:
        rte_flow_action_type type
        const void *conf
    struct rte_flow_action_rss:
        rte_eth_hash_function func
        uint32_t level
        uint64_t types
        uint32_t key_len
        uint32_t queue_num
        const uint8_t *key
        const uint16_t *queue
    struct rte_flow_error:
        const char *message
    struct rte_flow:
        pass

    int rte_flow_validate(uint16_t port_id, const rte_flow_attr *attr,
                          const rte_flow_item *pattern, const rte_flow_action *actions,
                          rte_flow_error *error)
    rte_flow *rte_flow_create(uint16_t port_id, const rte_flow_attr *attr,
                              const rte_flow_item *pattern, const rte_flow_action *actions,
                              rte_flow_error *error)
