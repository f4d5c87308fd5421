# cext/tables.h: policy tables and their writers.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "tables.h" nogil:
    enum: NVGW_MAX_VSIDS
    enum: NVGW_MAX_RD
    enum: NVGW_MAX_PA
    enum: NVGW_NEIGH_VALID
    enum: NVGW_NEIGH_STATIC
    enum nvgw_route_kind:
        NVGW_ROUTE_VSUBNET
        NVGW_ROUTE_APPLIANCE
        NVGW_ROUTE_CUSTOMER

    struct rte_rcu_qsbr:
        pass
    struct nvgw_htab:
        uint32_t n
    struct nvgw_rtab:
        uint32_t n
    struct nvgw_neigh:
        uint64_t mac
        uint32_t ip
        uint16_t scope
    struct nvgw_tables:
        rte_rcu_qsbr *qsbr
        nvgw_rtab records
        nvgw_htab neigh
        uint32_t n_neigh, n_learned
    struct nvgw_table_sizes:
        uint32_t records, routes, neighbours, rewrites, readers

    int nvgw_tables_create(nvgw_tables **out, const nvgw_table_sizes *sz, int socket)
    void nvgw_tables_free(nvgw_tables *t)
    void nvgw_tables_commit(nvgw_tables *t)
    int nvgw_provider_set(nvgw_tables *t, const uint32_t *pa, uint16_t n_pa, uint32_t mask,
                          uint32_t gw_ip, uint16_t mtu, const uint8_t *mac)
    int nvgw_provider_clear(nvgw_tables *t)
    int nvgw_vsid_set(nvgw_tables *t, uint32_t vsid, uint32_t rdid, uint32_t gw_ip,
                      const uint8_t *gw_mac, int flowid, uint16_t idx)
    int nvgw_vsid_del(nvgw_tables *t, uint32_t vsid)
    int nvgw_record_set(nvgw_tables *t, uint32_t vsid, uint32_t ca, const uint8_t *mac,
                        uint32_t pa, uint8_t method)
    int nvgw_record_del(nvgw_tables *t, uint32_t vsid, uint32_t ca)
    int nvgw_route_set(nvgw_tables *t, uint32_t rdid, uint32_t prefix, uint8_t len,
                       uint8_t kind, uint32_t vsid, uint16_t vlan, uint32_t nh_ip)
    int nvgw_route_del(nvgw_tables *t, uint32_t rdid, uint32_t prefix, uint8_t len,
                       int last_of_len)
    int nvgw_rd_shadow_set(nvgw_tables *t, uint32_t rdid, int on)
    int nvgw_rd_link_set(nvgw_tables *t, uint32_t rdid, uint16_t vlan)
    int nvgw_attach_set(nvgw_tables *t, uint16_t vlan, uint32_t rdid, uint32_t ip,
                        uint32_t mask, const uint8_t *mac)
    int nvgw_attach_del(nvgw_tables *t, uint16_t vlan)
    int nvgw_rw_set(nvgw_tables *t, uint32_t pa, uint32_t ca, uint32_t rdid, uint16_t slot,
                    int gateway)
    int nvgw_rw_del(nvgw_tables *t, uint32_t pa, uint32_t rdid, uint32_t ca, int gateway)
    int nvgw_neigh_clear(nvgw_tables *t, uint16_t scope, uint32_t ip)
    int nvgw_neigh_prepare(nvgw_tables *t, uint16_t scope, uint32_t ip)
    nvgw_neigh *nvgw_neigh_set(nvgw_tables *t, uint16_t scope, uint32_t ip,
                               const uint8_t *mac, int only_existing)
    nvgw_neigh *nvgw_neigh_find(const nvgw_tables *t, uint16_t scope, uint32_t ip)
    nvgw_neigh *nvgw_neigh_resolve(nvgw_tables *t, uint16_t scope, uint32_t ip)
    int nvgw_htab_next(const nvgw_htab *h, uint32_t *pos, uint64_t *key, uint64_t *val)
    enum: NVGW_DIGEST_N
    void nvgw_tables_digest(const nvgw_tables *t, uint64_t *d)

cdef extern from "tables.h" nogil:
    struct nvgw_rec_wire:
        uint32_t vsid
        uint32_t ca, pa
        uint8_t mac[6]
        uint8_t method, pad
    int nvgw_record_set_bulk(nvgw_tables *t, const nvgw_rec_wire *w, uint32_t n, uint32_t *bad)
