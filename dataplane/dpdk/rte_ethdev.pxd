# <rte_ethdev.h>: port configuration, queues, statistics.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from dataplane.dpdk.rte_mempool cimport rte_mempool

cdef extern from "rte_ethdev.h" nogil:
    enum: RTE_ETH_NAME_MAX_LEN
    enum: RTE_ETHER_ADDR_LEN

    struct rte_ether_addr:
        uint8_t addr_bytes[6]

    enum rte_eth_rx_mq_mode:
        RTE_ETH_MQ_RX_NONE
        RTE_ETH_MQ_RX_RSS
    struct rte_eth_rxmode:
        rte_eth_rx_mq_mode mq_mode
        uint32_t mtu
    struct rte_eth_rss_conf:
        uint8_t *rss_key
        uint8_t rss_key_len
        uint64_t rss_hf
    # anonymous in rte_eth_conf: use only as conf.rx_adv_conf.<member>, never as a
    # variable, a pointer or a Python object (its C name does not exist)
    struct rte_eth_rx_adv_conf "rte_eth_conf_rx_adv":
        rte_eth_rss_conf rss_conf
    struct rte_eth_conf:
        rte_eth_rxmode rxmode
        rte_eth_rx_adv_conf rx_adv_conf

    struct rte_eth_desc_lim:
        uint16_t nb_max
        uint16_t nb_min
    struct rte_eth_dev_info:
        const char *driver_name
        uint16_t max_rx_queues
        uint16_t max_tx_queues
        uint64_t flow_type_rss_offloads
        uint16_t min_mtu
        uint16_t max_mtu
        rte_eth_desc_lim rx_desc_lim
        rte_eth_desc_lim tx_desc_lim

    struct rte_eth_stats:
        uint64_t ipackets
        uint64_t opackets
        uint64_t ibytes
        uint64_t obytes
        uint64_t imissed
        uint64_t ierrors
        uint64_t oerrors
        uint64_t rx_nombuf

    struct rte_eth_rxconf:
        pass
    struct rte_eth_txconf:
        pass

    int rte_eth_dev_get_port_by_name(const char *name, uint16_t *port_id)
    int rte_eth_dev_info_get(uint16_t port_id, rte_eth_dev_info *dev_info)
    int rte_eth_dev_get_mtu(uint16_t port_id, uint16_t *mtu)
    int rte_eth_dev_configure(uint16_t port_id, uint16_t nb_rx_queue,
                              uint16_t nb_tx_queue, const rte_eth_conf *eth_conf)
    int rte_eth_dev_adjust_nb_rx_tx_desc(uint16_t port_id, uint16_t *nb_rx_desc,
                                         uint16_t *nb_tx_desc)
    int rte_eth_rx_queue_setup(uint16_t port_id, uint16_t rx_queue_id,
                               uint16_t nb_rx_desc, unsigned int socket_id,
                               const rte_eth_rxconf *rx_conf, rte_mempool *mb_pool)
    int rte_eth_tx_queue_setup(uint16_t port_id, uint16_t tx_queue_id,
                               uint16_t nb_tx_desc, unsigned int socket_id,
                               const rte_eth_txconf *tx_conf)
    int rte_eth_dev_socket_id(uint16_t port_id)
    int rte_eth_dev_start(uint16_t port_id)
    int rte_eth_dev_stop(uint16_t port_id)
    int rte_eth_dev_close(uint16_t port_id)
    int rte_eth_promiscuous_enable(uint16_t port_id)
    int rte_eth_macaddr_get(uint16_t port_id, rte_ether_addr *mac_addr)
    int rte_eth_dev_set_mtu(uint16_t port_id, uint16_t mtu)
    int rte_eth_stats_get(uint16_t port_id, rte_eth_stats *stats)
