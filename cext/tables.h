/* Policy tables: written by the control thread, read lock-free by workers.
 *
 * Values are pointers to immutable objects (or plain words): a change
 * builds a new object and swaps the pointer; the old one (and any deleted
 * key slot) is freed after an RCU QSBR grace period, in
 * nvgw_tables_commit(). Lookup records live in their table's slots
 * (rtab.h), a change written to another slot. Neighbour MACs are single
 * 64-bit words, updated in place with one atomic store. */
#ifndef NVGW_TABLES_H
#define NVGW_TABLES_H

#include <stdint.h>
#include <pthread.h>
#include <rte_ether.h>
#include <rte_hash.h>
#include <rte_rcu_qsbr.h>

#include "byteorder.h"
#include "htab.h"
#include "lpm.h"
#include "rtab.h"

#define NVGW_MAX_VSIDS      16384   /* virtual subnets per gateway (counter slots) */
#define NVGW_MAX_RD         65536   /* routing domain ids 1..65535 */
#define NVGW_MAX_VLAN       4096
#define NVGW_MAX_PA         8
#define NVGW_NEIGH_VALID    (1ULL << 63)  /* the sign bit: emit tests it with no mask */
#define NVGW_NEIGH_STATIC   (1ULL << 49)   /* set from policy: learning leaves it alone */
#define NVGW_SCOPE_PROVIDER 0       /* neighbour scope: 0 = fabric, else VLAN id */

enum nvgw_method { NVGW_ENCAP = 0, NVGW_REWRITE = 1 };

enum nvgw_route_kind {
	NVGW_ROUTE_VSUBNET = 0,     /* destination is a CA in a virtual subnet */
	NVGW_ROUTE_APPLIANCE = 1,   /* next hop is a CA in a virtual subnet */
	NVGW_ROUTE_CUSTOMER = 2,    /* next hop on a customer VLAN (0 = on-link) */
};

struct nvgw_neigh {
	uint64_t mac;               /* MAC in the low 48 bits | NVGW_NEIGH_VALID */
	uint64_t last_request;      /* tsc of the last ARP request (exception thread) */
	uint32_t ip;                /* network order */
	uint16_t scope;
};

/* Neighbours live in a slab of 32-byte objects, where a record names its
 * next hop by index (16 bits: at most 65,536 neighbours). */
#define NVGW_NEIGH_SIZE 32
#define NVGW_MAX_NEIGH  65536
_Static_assert(RTE_ALIGN_CEIL(sizeof(struct nvgw_neigh), 16) == NVGW_NEIGH_SIZE,
	       "nvgw_neigh: the slab's object size");

/* A record's next hop, and its VSID (macros: struct nvgw_tables is below). */
#define nvgw_rec_nh(t, r) ((const struct nvgw_neigh *)((t)->neigh_slab.base + \
			   (size_t)nvgw_rec_pay(r)->nh * NVGW_NEIGH_SIZE))
#define nvgw_rec_vsid(t, r) \
	(nvgw_be32(NVGW_VK_KEY((t)->vsid_key[nvgw_rec_vsid_idx(r)])) >> 8)

struct nvgw_vsid {
	uint32_t vsid;
	uint32_t rdid;
	uint32_t gw_ip;             /* network order */
	struct rte_ether_addr gw_mac;
	uint16_t idx;               /* counter slot; its FlowID setting is in vsid_word */
};

/* gw_mac loads as a word in one read (nvgw_load64): bytes follow it. */
_Static_assert(offsetof(struct nvgw_vsid, gw_mac) + 8 <= sizeof(struct nvgw_vsid),
	       "nvgw_vsid: 8 bytes readable from gw_mac");

/* A CUSTOMER route. Routes to virtual subnets need no object: their
 * values are packed words (nvgw_route_pack). */
struct nvgw_route {
	uint8_t kind;
	uint16_t vlan;
	uint32_t nh_ip;             /* network order; 0 = on-link */
	struct nvgw_neigh *nh;      /* with a next hop */
};

/* A route's value in the route table: a VSUBNET or APPLIANCE route is the
 * word itself (bit 0 set, kind in bit 1, VSID in bits 8-31, the next hop's
 * address in 32-63), so the lookup that finds it reads no other line; a
 * CUSTOMER route is a pointer to its nvgw_route (aligned: bit 0 clear). */
#define NVGW_ROUTE_PACKED 1ULL

static inline uint64_t
nvgw_route_pack(uint8_t kind, uint32_t vsid, uint32_t nh_ip)
{
	return NVGW_ROUTE_PACKED | (uint64_t)(kind & 1) << 1 | (uint64_t)(vsid & 0xFFFFFF) << 8 |
	       (uint64_t)nh_ip << 32;
}

static inline uint8_t
nvgw_route_kind(uint64_t v)
{
	return v & NVGW_ROUTE_PACKED ? (v >> 1) & 1 : NVGW_ROUTE_CUSTOMER;
}

static inline uint32_t
nvgw_route_vsid(uint64_t v)
{
	return (v >> 8) & 0xFFFFFF;
}

static inline uint32_t
nvgw_route_nh_ip(uint64_t v)
{
	return (uint32_t)(v >> 32);
}

/* An attachment keeps its subnet's neighbours by host number when the
 * subnet is this small (a /22: 8 KB of pointers), so that a packet routed
 * onto the link finds its next hop by index, not by a lookup. Neighbours
 * are never freed; an entry is set once, when its neighbour is made (or
 * the attachment is), and NULL means none yet. */
#define NVGW_ATTACH_MAX_HOSTS 1024

struct nvgw_attach {
	uint16_t vlan;
	uint32_t rdid;
	uint32_t ip;                /* the gateway's address on this VLAN */
	uint32_t mask;
	struct rte_ether_addr mac;
	uint64_t mac_w;             /* mac as a word (pkt.h) */
	uint64_t tag_w;             /* bytes 10-17 of its tagged header (nvgw_vlan_eth_write) */
	uint32_t net;               /* the subnet's first address, host order */
	uint32_t n_hosts;           /* entries in hosts: the subnet's size, or 0 */
	struct nvgw_neigh *hosts[]; /* by address - net */
};

/* a's entry for ip (network order), or NULL when a does not keep it. */
static inline struct nvgw_neigh **
nvgw_attach_slot(const struct nvgw_attach *a, uint32_t ip)
{
	uint32_t off = nvgw_be32(ip) - a->net;

	return off < a->n_hosts ? (struct nvgw_neigh **)a->hosts + off : NULL;   /* see Readers */
}

/* The neighbour at ip on a's link, when a keeps its subnet's neighbours:
 * *nh is it, or NULL when there is none yet. 0: ip is outside what a keeps
 * (look it up in the neighbour table). */
static inline int
nvgw_attach_host(const struct nvgw_attach *a, uint32_t ip, const struct nvgw_neigh **nh)
{
	struct nvgw_neigh **s = nvgw_attach_slot(a, ip);

	if (s == NULL)
		return 0;
	*nh = __atomic_load_n(s, __ATOMIC_ACQUIRE);
	return 1;
}

struct nvgw_provider {
	uint32_t pa[NVGW_MAX_PA];   /* our PAs; pa[0] is the encap source */
	uint16_t n_pa;
	uint32_t mask;              /* fabric subnet of our PAs */
	uint32_t gw_ip;             /* fabric router for PAs off our subnet (0: none) */
	uint16_t mtu;               /* provider IP MTU */
	struct rte_ether_addr mac;
	uint64_t mac_w;             /* mac as a word (pkt.h) */
	/* The fixed bytes of the usual NVGRE frame to us, and the bits of its
	 * first 64 bytes that must match them (frame.h: nvgw_provider_shape). */
	uint8_t shape[64] __rte_aligned(16);
	uint8_t shape_keep[64] __rte_aligned(16);
	struct nvgw_outer outer;    /* NVGRE's outer headers from pa[0] (rtab.h) */
};

/* Fixed-size objects from one allocation: rte_malloc is far too slow for a
 * million small objects, and this bounds the memory up front. */
struct nvgw_slab {
	uint8_t *base;
	uint32_t obj_size, n, n_free;
	uint32_t *free;             /* stack of free object indexes */
};

/* Key slots of a lock-free hash, deleted but not reusable before a grace period. */
struct nvgw_dead_keys {
	int32_t *pos;
	uint32_t n, max;
};

/* IP rewrite: what a PA stands for, packed in the hash's value word. */
#define NVGW_RW_GATEWAY  (1ULL << 63)   /* one of our PAs, for a customer-side CA */
#define NVGW_RW_CA(v)    ((uint32_t)(v))
#define NVGW_RW_RDID(v)  ((uint32_t)((v) >> 32) & 0xFFFF)
#define NVGW_RW_SLOT(v)  ((uint16_t)(((v) >> 48) & 0x3FFF))

struct nvgw_tables {
	struct rte_hash *vsids;     /* vsid -> nvgw_vsid (control side) */
	struct nvgw_rtab records;   /* nvgw_rec_key() -> nvgw_record, in its slot */
	struct nvgw_htab routes;    /* nvgw_route_key() -> route value (nvgw_route_pack) */
	struct nvgw_htab neigh;     /* nvgw_neigh_key() -> nvgw_neigh (never freed) */
	struct nvgw_htab rw_pa;     /* PA -> packed NVGW_RW_* word (rewrite mappings) */
	struct nvgw_htab rw_gw;     /* nvgw_rw_key() -> our rewrite PA */
	struct nvgw_vsid *vsid_by_idx[NVGW_MAX_VSIDS];
	/* What encapsulation needs of a VSID, by counter slot, in one word
	 * (NVGW_VW_*; 0: none): eight slots to a cache line, where the object
	 * behind vsid_by_idx would be a line of its own. */
	uint64_t vsid_word[NVGW_MAX_VSIDS];
	/* Its GRE key word as sent and its gateway's IP (NVGW_VK_*), by
	 * counter slot: a record has no room for the key (rtab.h), and decap
	 * reads no object. Read after the VSID's word, stored after it. */
	uint64_t vsid_key[NVGW_MAX_VSIDS];
	/* Counter slots of VSIDs deleted since the last grace period: not
	 * given out again before it, as readers rely on (classify_vsid). */
	uint64_t slot_cooling[NVGW_MAX_VSIDS / 64];
	/* Route length filters: bit (rdid, /16 block) set = a route longer than
	 * /16 may exist in the block (likewise /24); the rest skip those lengths. */
	uint64_t *blk16, *blk24;    /* [NVGW_BLK_BITS / 64] */
	uint32_t *blk16_n, *blk24_n; /* [NVGW_BLK_BITS] routes per bit (control side) */
	struct nvgw_attach *attach[NVGW_MAX_VLAN];
	struct nvgw_provider *prov;
	struct rte_rcu_qsbr *qsbr;
	pthread_mutex_t neigh_lock; /* neighbours have two writers: control, exceptions */
	uint32_t n_neigh, max_neigh;
	uint32_t n_learned;         /* entries the exception thread made (never freed) */
	struct nvgw_slab route_slab, vsid_slab, neigh_slab;
	/* Objects and key slots waiting for a grace period. */
	void **garbage;
	uint32_t n_garbage, max_garbage;
	struct nvgw_dead_keys dead_vsid;
	/* Last, 1.5 MB: classify's words by id, in the structure: each loads
	 * from t at a constant offset and the id scaled by 8, in one
	 * instruction (through a pointer, the pointer came first; a domain's
	 * two words side by side, 16 bytes, took a shift and an add). */
	uint64_t rd_lens[NVGW_MAX_RD];  /* bit L set = a /L route exists; NVGW_RD_SHADOWED */
	uint64_t rd_link[NVGW_MAX_RD];  /* its link (NVGW_LINK_*), 0: none */
	/* vsid >> 8 -> page of 256 entries (NVGW_VE_*): the data path's VSID
	 * lookup, two loads instead of a hash probe. Pages live while used. */
	uint32_t *vsid_dir[1 << 16];
};

/* A VLAN's attachment, as the exception thread takes it: loaded once (the
 * compiler may make a plain load twice, and the control thread may delete it
 * in between; the object stays until a grace period). Relaxed: its fields are
 * read through the pointer, an address dependency, as with a plain load.
 * Workers' classify keeps the plain load: this one gave customer_burst other
 * code, encap 1k 4-5 cycles a packet slower (bench --quick, alternated). */
static inline const struct nvgw_attach *
nvgw_attach_get(const struct nvgw_tables *t, uint16_t vlan)
{
	return __atomic_load_n(t->attach + vlan, __ATOMIC_RELAXED);
}

/* In rd_lens: a route of the domain (of any kind) lies strictly inside a
 * virtual subnet, so a CA's record does not settle where a packet to it goes
 * (the route lookup does). Set by the policy layer, which sees all routes and
 * subnets, before such a route is added, cleared after the last one goes. */
#define NVGW_RD_SHADOWED    (1ULL << 63)

/* A domain's link: one of its attachments that keeps its hosts by number and
 * whose subnet holds no other route of the domain. A fabric packet to an
 * address in that subnet goes to its host on the link, as the subnet's own
 * route would send it, without a route lookup. Its word: the subnet's first
 * address (host order) in bits 0-31, its host bits in 32-39, the VLAN in
 * 48-59, so that other destinations are told apart without reading the
 * attachment. Set by the policy layer: cleared first in a batch that puts a
 * route inside, moves the subnet or takes the attachment away, set last. */
#define NVGW_LINK(net, bits, vlan) \
	((uint64_t)(net) | (uint64_t)(bits) << 32 | (uint64_t)(vlan) << 48)
#define NVGW_LINK_NET(w)    ((uint32_t)(w))
#define NVGW_LINK_BITS(w)   ((uint8_t)((w) >> 32))
#define NVGW_LINK_VLAN(w)   ((uint16_t)((w) >> 48))

/* vsid_key: the GRE key word (VSID << 8, FlowID byte 0) in the low half,
 * the subnet gateway's IP in the high half, both in network order. */
#define NVGW_VK(vsid, gw_ip) ((uint64_t)rte_cpu_to_be_32((vsid) << 8) | (uint64_t)(gw_ip) << 32)
#define NVGW_VK_KEY(k)       ((uint32_t)(k))
#define NVGW_VK_GW_IP(k)     ((uint32_t)((k) >> 32))

/* vsid_word: the subnet gateway's MAC in the low 48 bits, the FlowID above. */
#define NVGW_VW_VALID       (1ULL << 63)
#define NVGW_VW_FLOWID_FIXED (1ULL << 62)   /* every packet carries bits 48-55 */
#define NVGW_VW_FLOWID(w)   ((uint8_t)((w) >> 48))

struct nvgw_table_sizes {
	uint32_t records, routes, neighbours, rewrites, readers;
};

/* Keys of the data path's tables (htab.h: 8 bytes, top byte clear). VSIDs
 * have 24 bits, routing domains 16, prefix lengths 6. A lookup record is
 * keyed by its routing domain, not its VSID: a domain's subnets never
 * overlap, so its CAs are unique in it, and a customer packet's destination
 * finds its record without a route lookup first. */
static inline uint64_t
nvgw_rec_key(uint32_t rdid, uint32_t ca)
{
	return (uint64_t)rdid << 32 | ca;
}

static inline uint64_t
nvgw_route_key(uint32_t rdid, uint32_t prefix, uint32_t len)
{
	return (uint64_t)rdid << 40 | (uint64_t)len << 32 | prefix;
}

static inline uint64_t
nvgw_rw_key(uint32_t rdid, uint32_t ca)
{
	return (uint64_t)rdid << 32 | ca;
}

/* scope: NVGW_SCOPE_PROVIDER or a VLAN id (12 bits). */
static inline uint64_t
nvgw_neigh_key(uint16_t scope, uint32_t ip)
{
	return (uint64_t)scope << 32 | ip;
}

int nvgw_tables_create(struct nvgw_tables **out, const struct nvgw_table_sizes *sz,
		       int socket);
void nvgw_tables_free(struct nvgw_tables *t);
/* Wait for every reader to pass a quiescent state, then free the garbage. */
void nvgw_tables_commit(struct nvgw_tables *t);

/* Writers (control thread). Addresses in network order. 0 or -errno. */
int nvgw_provider_set(struct nvgw_tables *t, const uint32_t *pa, uint16_t n_pa,
		      uint32_t mask, uint32_t gw_ip, uint16_t mtu,
		      const uint8_t mac[6]);
/* No provider (a failed first batch undone): workers drop all as no_policy. */
int nvgw_provider_clear(struct nvgw_tables *t);
/* A new VSID's counter slot must be free: -EINVAL while another VSID holds
 * it, -EBUSY until a grace period after its last VSID's delete. */
int nvgw_vsid_set(struct nvgw_tables *t, uint32_t vsid, uint32_t rdid, uint32_t gw_ip,
		  const uint8_t gw_mac[6], int flowid, uint16_t idx);
int nvgw_vsid_del(struct nvgw_tables *t, uint32_t vsid);
/* A record replaces any record of its CA in the VSID's routing domain. */
int nvgw_record_set(struct nvgw_tables *t, uint32_t vsid, uint32_t ca,
		    const uint8_t mac[6], uint32_t pa, uint8_t method);
int nvgw_record_del(struct nvgw_tables *t, uint32_t vsid, uint32_t ca);
int nvgw_route_set(struct nvgw_tables *t, uint32_t rdid, uint32_t prefix, uint8_t len,
		   uint8_t kind, uint32_t vsid, uint16_t vlan, uint32_t nh_ip);
int nvgw_route_del(struct nvgw_tables *t, uint32_t rdid, uint32_t prefix, uint8_t len,
		   int last_of_len);
int nvgw_rd_shadow_set(struct nvgw_tables *t, uint32_t rdid, int on);
int nvgw_rd_link_set(struct nvgw_tables *t, uint32_t rdid, uint16_t vlan);
int nvgw_attach_set(struct nvgw_tables *t, uint16_t vlan, uint32_t rdid, uint32_t ip,
		    uint32_t mask, const uint8_t mac[6]);
int nvgw_attach_del(struct nvgw_tables *t, uint16_t vlan);
/* IP rewrite: a VM's PA (from its rewrite record) or one of our PAs standing
 * for a customer-side CA of a routing domain (gateway = 1). */
int nvgw_rw_set(struct nvgw_tables *t, uint32_t pa, uint32_t ca, uint32_t rdid,
		uint16_t slot, int gateway);
/* Deletes pa's entry and, with gateway, the CA's (pa 0: the CA's alone). */
int nvgw_rw_del(struct nvgw_tables *t, uint32_t pa, uint32_t rdid, uint32_t ca, int gateway);
/* What the workers can see of each table, as a number (digest.c): records,
 * routes, rewrite entries, VSIDs, attachments, domain words and length
 * filters, provider, resolved neighbours. For tests and diagnostics. */
#define NVGW_DIGEST_N 8
void nvgw_tables_digest(const struct nvgw_tables *t, uint64_t d[NVGW_DIGEST_N]);
/* Hosts the exception thread resolves for traffic (a tenant picks them) may take
 * at most this share of the neighbour table; the rest stays for policy. */
#define NVGW_NEIGH_LEARN_MAX(max) ((max) / 4)

struct nvgw_neigh *nvgw_neigh_resolve(struct nvgw_tables *t, uint16_t scope, uint32_t ip);
/* Static (only_existing 0) or learned (only_existing 1) MAC; mac NULL: create
 * unresolved. Learning never overrides a static MAC (returns NULL then). Safe
 * from any thread. */
struct nvgw_neigh *nvgw_neigh_set(struct nvgw_tables *t, uint16_t scope, uint32_t ip,
				  const uint8_t *mac, int only_existing);
/* The entry of a next hop a batch is about to point records at, made when
 * absent as the batch's own calls would make it: 1 resolved, 0 not yet,
 * -ENOSPC no room. */
int nvgw_neigh_prepare(struct nvgw_tables *t, uint16_t scope, uint32_t ip);
/* A static neighbour deleted: unresolved again (the next packet ARPs). */
int nvgw_neigh_clear(struct nvgw_tables *t, uint16_t scope, uint32_t ip);

/* A VSID's directory entry: its routing domain and counter slot, so that
 * decap can start fetching the anti-spoofing record (keyed by domain)
 * before the VSID's object arrives. 0: no such VSID (a VSID's domain is
 * never 0, nvgw_vsid_set). */
#define NVGW_VE(rdid, slot) ((uint32_t)(rdid) << 16 | (uint32_t)(slot))
#define NVGW_VE_RDID(e)     ((e) >> 16)
#define NVGW_VE_SLOT(e)     ((e) & 0xFFFF)

/* Readers. An acquiring load of an element of the tables' own arrays is
 * written t->a + i, not &t->a[i]: for the latter GCC adds the array's
 * offset to the index in an instruction of its own instead of in the load. */
static inline uint32_t
nvgw_vsid_entry(const struct nvgw_tables *t, uint32_t vsid)
{
	const uint32_t *pg = __atomic_load_n(t->vsid_dir + ((vsid >> 8) & 0xFFFF),
					    __ATOMIC_ACQUIRE);

	return pg == NULL ? 0 : __atomic_load_n(&pg[vsid & 0xFF], __ATOMIC_ACQUIRE);
}

static inline struct nvgw_neigh *
nvgw_neigh_find(const struct nvgw_tables *t, uint16_t scope, uint32_t ip)
{
	uint64_t v;

	return nvgw_htab_lookup(&t->neigh, nvgw_neigh_key(scope, ip), &v) ?
	       (struct nvgw_neigh *)(uintptr_t)v : NULL;
}

static inline int
nvgw_rw_lookup(const struct nvgw_tables *t, uint32_t pa, uint64_t *word)
{
	return nvgw_htab_lookup(&t->rw_pa, pa, word);
}

/* Fabric next hop for a remote PA: itself when on our subnet, else the router. */
static inline uint32_t
nvgw_provider_nexthop(const struct nvgw_provider *p, uint32_t pa)
{
	return (p->gw_ip == 0 || ((pa ^ p->pa[0]) & p->mask) == 0) ? pa : p->gw_ip;
}

/* Lookup records in bulk, as the management channel packs them (20 bytes each,
 * dataplane/recblock.py): n records applied whole or not at all. Each (vsid, ca)
 * at most once. 0, or -errno with *bad = the index of the record that failed. */
struct nvgw_rec_wire {
	uint32_t vsid;              /* host order */
	uint32_t ca, pa;            /* network order */
	uint8_t mac[6];
	uint8_t method, pad;
};
int nvgw_record_set_bulk(struct nvgw_tables *t, const struct nvgw_rec_wire *w, uint32_t n,
			 uint32_t *bad);

#endif
