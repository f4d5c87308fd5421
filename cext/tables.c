/* Policy tables: creation, writers, and RCU-deferred reclamation. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <rte_hash_crc.h>
#include <rte_ip.h>
#include <rte_malloc.h>
#include <rte_cycles.h>

#include "frame.h"
#include "pkt.h"
#include "tables.h"

#define HASH_FLAGS (RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF | RTE_HASH_EXTRA_FLAGS_EXT_TABLE)

static struct rte_hash *
make_hash(const char *what, uint32_t entries, uint32_t key_len, int socket)
{
	char name[RTE_HASH_NAMESIZE];
	struct rte_hash_parameters p = {
		.name = name, .entries = entries, .key_len = key_len,
		.hash_func = rte_hash_crc, .socket_id = socket,
		.extra_flag = HASH_FLAGS,
	};

	snprintf(name, sizeof(name), "nvgw_%s", what);
	return rte_hash_create(&p);
}

static int
slab_init(struct nvgw_slab *s, uint32_t obj_size, uint32_t n, int socket)
{
	uint32_t i;

	s->obj_size = RTE_ALIGN_CEIL(obj_size, 16);
	s->n = n;
	s->base = rte_zmalloc_socket("nvgw_slab", (size_t)s->obj_size * n,
				     RTE_CACHE_LINE_SIZE, socket);
	s->free = rte_malloc_socket("nvgw_slab_free", n * sizeof(uint32_t), 0, socket);
	if (s->base == NULL || s->free == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		s->free[i] = n - 1 - i;
	s->n_free = n;
	return 0;
}

void nvgw_tables_commit(struct nvgw_tables *t);

/* An object from slab s; when all are used or waiting for a grace period,
 * wait for it (a big batch replacing many objects) and try again. */
static void *
slab_get(struct nvgw_tables *t, struct nvgw_slab *s)
{
	uint8_t *obj;

	if (s->n_free == 0)
		nvgw_tables_commit(t);
	if (s->n_free == 0)
		return NULL;
	obj = s->base + (size_t)s->free[--s->n_free] * s->obj_size;
	memset(obj, 0, s->obj_size);
	return obj;
}

static int
slab_owns(const struct nvgw_slab *s, const void *obj)
{
	return (const uint8_t *)obj >= s->base &&
	       (const uint8_t *)obj < s->base + (size_t)s->obj_size * s->n;
}

static void
slab_put(struct nvgw_slab *s, void *obj)
{
	s->free[s->n_free++] = ((uint8_t *)obj - s->base) / s->obj_size;
}

static void
slab_fini(struct nvgw_slab *s)
{
	rte_free(s->base);
	rte_free(s->free);
}

/* Return an object to whichever slab it came from. */
static void
obj_free(struct nvgw_tables *t, void *obj)
{
	struct nvgw_slab *slabs[] = { &t->route_slab, &t->vsid_slab };
	unsigned int i;

	for (i = 0; i < RTE_DIM(slabs); i++)
		if (slab_owns(slabs[i], obj)) {
			slab_put(slabs[i], obj);
			return;
		}
	rte_free(obj);
}

static int
dead_init(struct nvgw_dead_keys *d, uint32_t max, int socket)
{
	d->max = max;
	d->pos = rte_malloc_socket(NULL, max * sizeof(int32_t), 0, socket);
	return d->pos == NULL ? -ENOMEM : 0;
}

static void
dead_free(struct nvgw_tables *t, struct rte_hash *h, struct nvgw_dead_keys *d, int release)
{
	uint32_t i;

	for (i = 0; release && i < d->n; i++)
		rte_hash_free_key_with_position(h, d->pos[i]);
	d->n = 0;
	if (!release)
		rte_free(d->pos);
	(void)t;
}

/* An exact-match table of the data path (htab.h) for `max` keys. */
static int
htab_create(struct nvgw_htab *h, uint32_t max, uint32_t max_dead, int socket)
{
	struct nvgw_hbucket *b;
	uint32_t *dead;

	b = rte_malloc_socket("nvgw_htab", (size_t)nvgw_htab_buckets(max) * sizeof(*b),
			      RTE_CACHE_LINE_SIZE, socket);
	dead = rte_malloc_socket("nvgw_htab_dead", (size_t)max_dead * sizeof(*dead), 0, socket);
	if (b == NULL || dead == NULL) {
		rte_free(b);
		rte_free(dead);
		return -ENOMEM;
	}
	nvgw_htab_init(h, b, max, dead, max_dead);
	return 0;
}

/* The record table (rtab.h) for `max` records. */
static int
rtab_create(struct nvgw_rtab *h, uint32_t max, int socket)
{
	struct nvgw_rline *s;
	uint32_t *dead;

	s = rte_malloc_socket("nvgw_rtab", (size_t)nvgw_rtab_lines(max) * sizeof(*s),
			      RTE_CACHE_LINE_SIZE, socket);
	dead = rte_malloc_socket("nvgw_rtab_dead", (size_t)max * sizeof(*dead), 0, socket);
	if (s == NULL || dead == NULL) {
		rte_free(s);
		rte_free(dead);
		return -ENOMEM;
	}
	nvgw_rtab_init(h, s, max, dead, max);
	return 0;
}

static void
htab_free(struct nvgw_htab *h)
{
	rte_free(h->b);
	rte_free(h->dead);
	h->b = NULL;
	h->dead = NULL;
}

int
nvgw_tables_create(struct nvgw_tables **out, const struct nvgw_table_sizes *sz, int socket)
{
	struct nvgw_tables *t;
	size_t qsz = rte_rcu_qsbr_get_memsize(sz->readers);
	uint32_t garbage = sz->routes + NVGW_MAX_VSIDS + 64;
	int rc;

	if (sz->neighbours > NVGW_MAX_NEIGH)        /* a record's 16-bit index */
		return -EINVAL;
	t = rte_zmalloc_socket("nvgw_tables", sizeof(*t), RTE_CACHE_LINE_SIZE, socket);
	if (t == NULL)
		return -ENOMEM;
	pthread_mutex_init(&t->neigh_lock, NULL);
	t->max_neigh = sz->neighbours;
	t->max_garbage = garbage;
	t->vsids = make_hash("vsids", NVGW_MAX_VSIDS, sizeof(uint32_t), socket);
	t->qsbr = rte_zmalloc_socket("nvgw_qsbr", qsz, RTE_CACHE_LINE_SIZE, socket);
	t->blk16 = rte_zmalloc_socket("nvgw_blk16", NVGW_BLK_BITS / 8, RTE_CACHE_LINE_SIZE, socket);
	t->blk24 = rte_zmalloc_socket("nvgw_blk24", NVGW_BLK_BITS / 8, RTE_CACHE_LINE_SIZE, socket);
	t->blk16_n = calloc(NVGW_BLK_BITS, sizeof(*t->blk16_n));
	t->blk24_n = calloc(NVGW_BLK_BITS, sizeof(*t->blk24_n));
	t->garbage = rte_malloc_socket(NULL, garbage * sizeof(void *), 0, socket);
	rc = rtab_create(&t->records, sz->records, socket);
	rc = rc ?: htab_create(&t->routes, sz->routes, sz->routes, socket);
	rc = rc ?: htab_create(&t->rw_pa, sz->rewrites, 4096, socket);
	rc = rc ?: htab_create(&t->rw_gw, sz->rewrites, 4096, socket);
	rc = rc ?: htab_create(&t->neigh, sz->neighbours, 1, socket);     /* never deleted */
	if (rc || !t->vsids || !t->qsbr || !t->garbage ||
	    !t->blk16 || !t->blk24 || !t->blk16_n || !t->blk24_n ||
	    dead_init(&t->dead_vsid, NVGW_MAX_VSIDS, socket) ||
	    rte_rcu_qsbr_init(t->qsbr, sz->readers) != 0 ||
	    /* a margin for replaced objects waiting out a grace period */
	    slab_init(&t->route_slab, sizeof(struct nvgw_route), sz->routes + sz->routes / 8 + 64,
		      socket) ||
	    slab_init(&t->vsid_slab, sizeof(struct nvgw_vsid), NVGW_MAX_VSIDS + 1024, socket) ||
	    slab_init(&t->neigh_slab, sizeof(struct nvgw_neigh), sz->neighbours, socket)) {
		nvgw_tables_free(t);
		return -ENOMEM;
	}
	*out = t;
	return 0;
}

void
nvgw_tables_free(struct nvgw_tables *t)
{
	unsigned int i;

	if (t == NULL)
		return;
	if (t->qsbr != NULL && t->garbage != NULL)
		nvgw_tables_commit(t);
	rte_free(t->records.l);
	rte_free(t->records.dead);
	htab_free(&t->routes);
	htab_free(&t->rw_pa);
	htab_free(&t->rw_gw);
	htab_free(&t->neigh);
	rte_hash_free(t->vsids);
	slab_fini(&t->route_slab);
	slab_fini(&t->vsid_slab);
	slab_fini(&t->neigh_slab);
	for (i = 0; i < NVGW_MAX_VLAN; i++)
		rte_free(t->attach[i]);
	rte_free(t->prov);
	for (i = 0; i < 1 << 16; i++)
		rte_free(t->vsid_dir[i]);
	rte_free(t->blk16);
	rte_free(t->blk24);
	free(t->blk16_n);
	free(t->blk24_n);
	rte_free(t->qsbr);
	rte_free(t->garbage);
	dead_free(t, t->vsids, &t->dead_vsid, 0);
	rte_free(t);
}

static void
defer_free(struct nvgw_tables *t, void *obj)
{
	if (obj == NULL)
		return;
	if (t->n_garbage == t->max_garbage)
		nvgw_tables_commit(t);
	t->garbage[t->n_garbage++] = obj;
}

void
nvgw_tables_commit(struct nvgw_tables *t)
{
	uint32_t i;

	if (t->n_garbage + t->records.n_dead + t->routes.n_dead + t->dead_vsid.n +
	    t->rw_pa.n_dead + t->rw_gw.n_dead == 0)
		return;
	/* Readers that saw the old objects have all passed a quiescent state. */
	rte_rcu_qsbr_synchronize(t->qsbr, RTE_QSBR_THRID_INVALID);
	for (i = 0; i < t->n_garbage; i++)
		obj_free(t, t->garbage[i]);
	nvgw_rtab_reclaim(&t->records);
	nvgw_htab_reclaim(&t->routes);
	dead_free(t, t->vsids, &t->dead_vsid, 1);
	memset(t->slot_cooling, 0, sizeof(t->slot_cooling));
	nvgw_htab_reclaim(&t->rw_pa);
	nvgw_htab_reclaim(&t->rw_gw);
	t->n_garbage = 0;
}

/* Replace the value of key (adding it if new) and retire the old value. */
static int
swap_value(struct nvgw_tables *t, struct rte_hash *h, const void *key, void *val)
{
	void *old = NULL;
	int had = rte_hash_lookup_data(h, key, &old) >= 0;
	int rc = rte_hash_add_key_data(h, key, val);

	if (rc < 0) {
		obj_free(t, val);
		return rc;
	}
	if (had)
		defer_free(t, old);
	return 0;
}

/* nvgw_htab_set(), once more after a grace period when only dead slots are
 * short. Then ht_set: the old value retired; `owned`: values are objects
 * (freed after a grace period; a new one that could not be set at once). */
static int
ht_put(struct nvgw_tables *t, struct nvgw_htab *h, uint64_t key, uint64_t val, uint64_t *old)
{
	int rc = nvgw_htab_set(h, key, val, old);

	if (rc == -ENOSPC && h->n < h->max && h->n_dead > 0) {
		nvgw_tables_commit(t);
		rc = nvgw_htab_set(h, key, val, old);
	}
	return rc;
}

enum { OWN_NONE, OWN_ALL, OWN_UNPACKED };      /* which values are objects */

static int
is_obj(int owned, uint64_t v)
{
	return owned == OWN_ALL || (owned == OWN_UNPACKED && !(v & NVGW_ROUTE_PACKED));
}

static int
ht_set(struct nvgw_tables *t, struct nvgw_htab *h, uint64_t key, uint64_t val, int owned)
{
	uint64_t old;
	int rc = ht_put(t, h, key, val, &old);

	if (rc < 0 && is_obj(owned, val))
		obj_free(t, (void *)(uintptr_t)val);
	else if (rc == 1 && is_obj(owned, old))
		defer_free(t, (void *)(uintptr_t)old);
	return rc < 0 ? rc : 0;
}

static int
ht_del(struct nvgw_tables *t, struct nvgw_htab *h, uint64_t key, int owned)
{
	uint64_t old;
	int rc = nvgw_htab_del(h, key, &old);

	if (rc == -EBUSY) {             /* the dead list is full */
		nvgw_tables_commit(t);
		rc = nvgw_htab_del(h, key, &old);
	}
	if (rc == 0 && is_obj(owned, old))
		defer_free(t, (void *)(uintptr_t)old);
	return rc;
}

/* Delete key; its slot (and its value, when `owned`) is released after a
 * grace period. */
static int
delete_key(struct nvgw_tables *t, struct rte_hash *h, const void *key,
	   struct nvgw_dead_keys *dead, int owned)
{
	void *old;
	int32_t pos;

	if (rte_hash_lookup_data(h, key, &old) < 0)
		return -ENOENT;
	if (dead->n == dead->max)
		nvgw_tables_commit(t);
	pos = rte_hash_del_key(h, key);
	if (pos < 0)
		return pos;
	dead->pos[dead->n++] = pos;
	if (owned)
		defer_free(t, old);
	return 0;
}

int
nvgw_provider_set(struct nvgw_tables *t, const uint32_t *pa, uint16_t n_pa, uint32_t mask,
		  uint32_t gw_ip, uint16_t mtu, const uint8_t mac[6])
{
	struct nvgw_provider *p;

	if (n_pa == 0 || n_pa > NVGW_MAX_PA)
		return -EINVAL;
	p = rte_zmalloc(NULL, sizeof(*p), RTE_CACHE_LINE_SIZE);
	if (p == NULL)
		return -ENOMEM;
	memcpy(p->pa, pa, n_pa * sizeof(*pa));
	p->n_pa = n_pa;
	p->mask = mask;
	p->gw_ip = gw_ip;
	p->mtu = mtu;
	memcpy(&p->mac, mac, 6);
	p->mac_w = nvgw_mac_word(&p->mac);
	nvgw_provider_shape(p);
	nvgw_outer_init(&p->outer, p->pa[0]);
	defer_free(t, __atomic_exchange_n(&t->prov, p, __ATOMIC_RELEASE));
	return 0;
}

int
nvgw_provider_clear(struct nvgw_tables *t)
{
	defer_free(t, __atomic_exchange_n(&t->prov, NULL, __ATOMIC_RELEASE));
	return 0;
}

/* Unlink and retire the directory page of vsid once no VSID uses it. */
static void
dir_page_release(struct nvgw_tables *t, uint32_t vsid)
{
	uint32_t *pg = t->vsid_dir[vsid >> 8];
	unsigned int i;

	for (i = 0; i < 256; i++)
		if (pg[i] != 0)
			return;
	__atomic_store_n(&t->vsid_dir[vsid >> 8], NULL, __ATOMIC_RELEASE);
	defer_free(t, pg);
}

int
nvgw_vsid_set(struct nvgw_tables *t, uint32_t vsid, uint32_t rdid, uint32_t gw_ip,
	      const uint8_t gw_mac[6], int flowid, uint16_t idx)
{
	struct nvgw_vsid *v;
	void *cur;
	uint32_t *pg;
	int rc;

	/* never a reserved VSID: the fabric's usual frame relies on it (classify_vsid) */
	if (idx >= NVGW_MAX_VSIDS || rdid == 0 || rdid >= NVGW_MAX_RD || vsid > 0xFFFFFF ||
	    nvgw_vsid_reserved(vsid))
		return -EINVAL;
	/* A VSID keeps its counter slot (a new one would leave the old slot's
	 * word and pointer behind) and its domain (its records' keys). */
	if (rte_hash_lookup_data(t->vsids, &vsid, &cur) >= 0) {
		if (((struct nvgw_vsid *)cur)->idx != idx || ((struct nvgw_vsid *)cur)->rdid != rdid)
			return -EINVAL;
	} else if (t->vsid_by_idx[idx] != NULL) {
		return -EINVAL;
	} else if (t->slot_cooling[idx / 64] & 1ULL << (idx % 64)) {
		return -EBUSY;
	}
	pg = t->vsid_dir[vsid >> 8];
	if (pg == NULL) {
		pg = rte_zmalloc(NULL, 256 * sizeof(*pg), RTE_CACHE_LINE_SIZE);
		if (pg == NULL)
			return -ENOMEM;
		__atomic_store_n(&t->vsid_dir[vsid >> 8], pg, __ATOMIC_RELEASE);
	}
	v = slab_get(t, &t->vsid_slab);
	if (v == NULL) {
		dir_page_release(t, vsid);
		return -ENOSPC;
	}
	v->vsid = vsid;
	v->rdid = rdid;
	v->gw_ip = gw_ip;
	memcpy(&v->gw_mac, gw_mac, 6);
	v->idx = idx;
	/* The hash owns v; the index array is a second, non-owning view. */
	rc = swap_value(t, t->vsids, &vsid, v);
	if (rc == 0) {
		uint64_t word = nvgw_mac_word(gw_mac) | NVGW_VW_VALID |
				(flowid < 0 ? 0 : NVGW_VW_FLOWID_FIXED |
				 (uint64_t)(uint8_t)flowid << 48);

		t->vsid_key[idx] = NVGW_VK(vsid, gw_ip);        /* before its word */
		__atomic_store_n(&t->vsid_word[idx], word, __ATOMIC_RELEASE);
		__atomic_store_n(&t->vsid_by_idx[idx], v, __ATOMIC_RELEASE);
		__atomic_store_n(&pg[vsid & 0xFF], NVGW_VE(rdid, idx), __ATOMIC_RELEASE);
	} else {
		dir_page_release(t, vsid);
	}
	return rc;
}

int
nvgw_vsid_del(struct nvgw_tables *t, uint32_t vsid)
{
	void *old;
	uint16_t idx;
	int rc;

	if (rte_hash_lookup_data(t->vsids, &vsid, &old) < 0)
		return -ENOENT;
	__atomic_store_n(&t->vsid_by_idx[((struct nvgw_vsid *)old)->idx], NULL,
			 __ATOMIC_RELEASE);
	__atomic_store_n(&t->vsid_word[((struct nvgw_vsid *)old)->idx], 0, __ATOMIC_RELEASE);
	__atomic_store_n(&t->vsid_dir[vsid >> 8][vsid & 0xFF], 0, __ATOMIC_RELEASE);
	dir_page_release(t, vsid);
	idx = ((struct nvgw_vsid *)old)->idx;
	rc = delete_key(t, t->vsids, &vsid, &t->dead_vsid, 1);
	if (rc == 0)    /* after: delete_key may have had a grace period first */
		t->slot_cooling[idx / 64] |= 1ULL << (idx % 64);
	return rc;
}

static struct nvgw_neigh *
provider_neigh(struct nvgw_tables *t, uint32_t pa)
{
	return t->prov ? nvgw_neigh_set(t, NVGW_SCOPE_PROVIDER,
					nvgw_provider_nexthop(t->prov, pa), NULL, 0) : NULL;
}

/* A record's fields; nh: its next hop's neighbour. */
static void
rec_fill(const struct nvgw_tables *t, struct nvgw_record *r, const struct nvgw_neigh *nh,
	 const uint8_t mac[6], uint32_t pa, uint8_t method, uint16_t vsid_idx)
{
	memcpy(&r->mac, mac, 6);
	r->nh = (uint16_t)(((const uint8_t *)nh - t->neigh_slab.base) / NVGW_NEIGH_SIZE);
	r->vsid_idx = vsid_idx;
	r->pa = pa;
	r->method = method;
}

/* A grace period first when the record table's dead list is full, or when
 * live and dead slots pass 3/4 of the table (at most 2/3 are live): each
 * replace takes a slot, and a mass replace (a provider change re-sends
 * every record) left alone would crowd the table with dead slots, pushing
 * records far from home and the probe limit up for good. */
static void
rec_room(struct nvgw_tables *t)
{
	const struct nvgw_rtab *h = &t->records;

	if (h->n_dead == h->max_dead ||
	    (uint64_t)h->n + h->n_dead > h->n_slots / 4 * 3)
		nvgw_tables_commit(t);
}

static int
rec_put(struct nvgw_tables *t, uint64_t key, const struct nvgw_record *r)
{
	rec_room(t);
	return nvgw_rtab_set(&t->records, key, r);
}

int
nvgw_record_set(struct nvgw_tables *t, uint32_t vsid, uint32_t ca, const uint8_t mac[6],
		uint32_t pa, uint8_t method)
{
	struct nvgw_record r = { 0 };
	struct nvgw_neigh *nh;
	struct nvgw_vsid *v;
	int rc;

	/* as the bulk path: emit knows encap and rewrite only */
	if (t->prov == NULL || method > NVGW_REWRITE)
		return -EINVAL;
	if (rte_hash_lookup_data(t->vsids, &vsid, (void **)&v) < 0)
		return -ENOENT;
	nh = provider_neigh(t, pa);
	if (nh == NULL)
		return -ENOSPC;
	rec_fill(t, &r, nh, mac, pa, method, v->idx);
	rc = rec_put(t, nvgw_rec_key(v->rdid, ca), &r);
	return rc < 0 ? rc : 0;
}

int
nvgw_record_del(struct nvgw_tables *t, uint32_t vsid, uint32_t ca)
{
	const struct nvgw_rec *r;
	struct nvgw_vsid *v;
	uint64_t key;

	if (rte_hash_lookup_data(t->vsids, &vsid, (void **)&v) < 0)
		return -ENOENT;
	rec_room(t);
	key = nvgw_rec_key(v->rdid, ca);
	r = nvgw_rtab_lookup(&t->records, key);
	if (r == NULL || nvgw_rec_vsid_idx(r) != v->idx)     /* the CA is another subnet's */
		return -ENOENT;
	return nvgw_rtab_del(&t->records, key);
}

int
nvgw_rd_shadow_set(struct nvgw_tables *t, uint32_t rdid, int on)
{
	if (rdid == 0 || rdid >= NVGW_MAX_RD)
		return -EINVAL;
	if (on)
		__atomic_or_fetch(&t->rd_lens[rdid], NVGW_RD_SHADOWED, __ATOMIC_RELEASE);
	else
		__atomic_and_fetch(&t->rd_lens[rdid], ~NVGW_RD_SHADOWED, __ATOMIC_RELEASE);
	return 0;
}

/* vlan 0: none. Else its attachment, as it is now, must be the domain's and
 * keep its hosts by number. */
int
nvgw_rd_link_set(struct nvgw_tables *t, uint32_t rdid, uint16_t vlan)
{
	const struct nvgw_attach *a;
	uint64_t w = 0;

	if (rdid == 0 || rdid >= NVGW_MAX_RD || vlan >= NVGW_MAX_VLAN)
		return -EINVAL;
	if (vlan != 0) {
		a = t->attach[vlan];
		if (a == NULL || a->rdid != rdid || a->n_hosts == 0)
			return -EINVAL;
		w = NVGW_LINK(a->net, __builtin_ctz(a->n_hosts), vlan);
	}
	__atomic_store_n(&t->rd_link[rdid], w, __ATOMIC_RELEASE);
	return 0;
}

/* Keep the route length filters counting the routes of each bit. */
static void
blk_count(struct nvgw_tables *t, uint32_t rdid, uint32_t prefix, uint8_t len, int delta)
{
	nvgw_blk_count(t->blk16, t->blk16_n, t->blk24, t->blk24_n, rdid, prefix, len, delta);
}

int
nvgw_route_set(struct nvgw_tables *t, uint32_t rdid, uint32_t prefix, uint8_t len,
	       uint8_t kind, uint32_t vsid, uint16_t vlan, uint32_t nh_ip)
{
	uint64_t k = nvgw_route_key(rdid, prefix, len), cur, val;
	struct nvgw_route *r;
	int rc, had;

	if (rdid == 0 || rdid >= NVGW_MAX_RD || len > 32 || kind > NVGW_ROUTE_CUSTOMER ||
	    vsid > 0xFFFFFF || vlan >= NVGW_MAX_VLAN)        /* the worker indexes attach[vlan] */
		return -EINVAL;
	if (kind != NVGW_ROUTE_CUSTOMER) {
		val = nvgw_route_pack(kind, vsid, nh_ip);
	} else {
		r = slab_get(t, &t->route_slab);
		if (r == NULL)
			return -ENOSPC;
		r->kind = kind;
		r->vlan = vlan;
		r->nh_ip = nh_ip;
		if (nh_ip != 0) {
			r->nh = nvgw_neigh_set(t, vlan, nh_ip, NULL, 0);
			if (r->nh == NULL) {
				slab_put(&t->route_slab, r);
				return -ENOSPC;
			}
		}
		val = (uintptr_t)r;
	}
	had = nvgw_htab_lookup(&t->routes, k, &cur);
	if (!had)       /* before the route exists: a reader never skips a real one */
		blk_count(t, rdid, prefix, len, 1);
	rc = ht_set(t, &t->routes, k, val, OWN_UNPACKED);
	if (rc == 0)
		__atomic_or_fetch(&t->rd_lens[rdid], 1ULL << len, __ATOMIC_RELEASE);
	else if (!had)
		blk_count(t, rdid, prefix, len, -1);
	return rc;
}

int
nvgw_route_del(struct nvgw_tables *t, uint32_t rdid, uint32_t prefix, uint8_t len,
	       int last_of_len)
{
	int rc;

	if (rdid >= NVGW_MAX_RD || len > 32)
		return -ENOENT;
	rc = ht_del(t, &t->routes, nvgw_route_key(rdid, prefix, len), OWN_UNPACKED);

	/* The caller knows whether other routes of the domain have this length. */
	if (rc == 0 && last_of_len)
		__atomic_and_fetch(&t->rd_lens[rdid], ~(1ULL << len), __ATOMIC_RELEASE);
	if (rc == 0)
		blk_count(t, rdid, prefix, len, -1);
	return rc;
}

int
nvgw_attach_set(struct nvgw_tables *t, uint16_t vlan, uint32_t rdid, uint32_t ip,
		uint32_t mask, const uint8_t mac[6])
{
	uint32_t size = ~rte_be_to_cpu_32(mask) + 1, n_hosts, i;
	struct nvgw_attach *a;

	if (vlan == 0 || vlan >= NVGW_MAX_VLAN || rdid == 0 || rdid >= NVGW_MAX_RD)
		return -EINVAL;
	n_hosts = size != 0 && size <= NVGW_ATTACH_MAX_HOSTS ? size : 0;   /* /0: size 0 */
	a = rte_zmalloc(NULL, sizeof(*a) + n_hosts * sizeof(a->hosts[0]), RTE_CACHE_LINE_SIZE);
	if (a == NULL)
		return -ENOMEM;
	a->vlan = vlan;
	a->rdid = rdid;
	a->ip = ip;
	a->mask = mask;
	memcpy(&a->mac, mac, 6);
	a->mac_w = nvgw_mac_word(&a->mac);
	a->tag_w = nvgw_vlan_tag_word(a->mac_w, vlan, RTE_ETHER_TYPE_IPV4);
	a->net = rte_be_to_cpu_32(ip & mask);
	a->n_hosts = n_hosts;
	/* The link's neighbours so far; one made from now on (neigh_get_locked)
	 * finds this attachment published. */
	pthread_mutex_lock(&t->neigh_lock);
	for (i = 0; i < n_hosts; i++)
		a->hosts[i] = nvgw_neigh_find(t, vlan, rte_cpu_to_be_32(a->net + i));
	a = __atomic_exchange_n(&t->attach[vlan], a, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&t->neigh_lock);
	defer_free(t, a);       /* may wait for a grace period: not under the lock */
	return 0;
}

int
nvgw_attach_del(struct nvgw_tables *t, uint16_t vlan)
{
	struct nvgw_attach *a;

	if (vlan == 0 || vlan >= NVGW_MAX_VLAN || t->attach[vlan] == NULL)
		return -ENOENT;
	/* under the lock: a neighbour being made may be writing its entry */
	pthread_mutex_lock(&t->neigh_lock);
	a = __atomic_exchange_n(&t->attach[vlan], NULL, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&t->neigh_lock);
	defer_free(t, a);
	return 0;
}

/* With neigh_lock held: the entry of k, made when absent and `create`. */
static struct nvgw_neigh *
neigh_get_locked(struct nvgw_tables *t, uint16_t scope, uint32_t ip, int create)
{
	struct nvgw_neigh *n = nvgw_neigh_find(t, scope, ip);
	uint64_t old;

	if (n != NULL)
		return n;
	if (!create || t->n_neigh >= t->max_neigh)
		return NULL;
	n = slab_get(t, &t->neigh_slab);
	if (n == NULL)
		return NULL;
	n->ip = ip;
	n->scope = scope;
	if (nvgw_htab_set(&t->neigh, nvgw_neigh_key(scope, ip), (uintptr_t)n, &old) < 0) {
		slab_put(&t->neigh_slab, n);
		return NULL;
	}
	t->n_neigh++;
	if (scope != NVGW_SCOPE_PROVIDER && scope < NVGW_MAX_VLAN && t->attach[scope] != NULL) {
		struct nvgw_neigh **s = nvgw_attach_slot(t->attach[scope], ip);

		if (s != NULL)
			__atomic_store_n(s, n, __ATOMIC_RELEASE);
	}
	return n;
}

struct nvgw_neigh *
nvgw_neigh_set(struct nvgw_tables *t, uint16_t scope, uint32_t ip, const uint8_t *mac,
	       int only_existing)
{
	struct nvgw_neigh *n;

	pthread_mutex_lock(&t->neigh_lock);
	n = neigh_get_locked(t, scope, ip, !only_existing);
	if (n != NULL && mac != NULL) {
		if (only_existing && (n->mac & NVGW_NEIGH_STATIC)) {
			n = NULL;                 /* learning never overrides policy */
		} else {
			uint64_t word = nvgw_mac_word(mac) | NVGW_NEIGH_VALID |
					(only_existing ? 0 : NVGW_NEIGH_STATIC);

			__atomic_store_n(&n->mac, word, __ATOMIC_RELEASE);
		}
	}
	pthread_mutex_unlock(&t->neigh_lock);
	return n;
}

/* The entry to resolve for traffic: found, or made while the learning budget
 * lasts (NULL after: the packet is dropped as unresolved, policy keeps room). */
struct nvgw_neigh *
nvgw_neigh_resolve(struct nvgw_tables *t, uint16_t scope, uint32_t ip)
{
	struct nvgw_neigh *n;

	pthread_mutex_lock(&t->neigh_lock);
	n = neigh_get_locked(t, scope, ip, 0);
	if (n == NULL && t->n_learned < NVGW_NEIGH_LEARN_MAX(t->max_neigh)) {
		n = neigh_get_locked(t, scope, ip, 1);
		if (n != NULL)
			t->n_learned++;
	}
	pthread_mutex_unlock(&t->neigh_lock);
	return n;
}

int
nvgw_neigh_prepare(struct nvgw_tables *t, uint16_t scope, uint32_t ip)
{
	struct nvgw_neigh *n;
	int rc;

	pthread_mutex_lock(&t->neigh_lock);
	n = neigh_get_locked(t, scope, ip, 1);
	rc = n == NULL ? -ENOSPC :
	     !!(__atomic_load_n(&n->mac, __ATOMIC_ACQUIRE) & NVGW_NEIGH_VALID);
	pthread_mutex_unlock(&t->neigh_lock);
	return rc;
}

int
nvgw_neigh_clear(struct nvgw_tables *t, uint16_t scope, uint32_t ip)
{
	struct nvgw_neigh *n;
	int rc = -ENOENT;

	pthread_mutex_lock(&t->neigh_lock);
	n = neigh_get_locked(t, scope, ip, 0);
	if (n != NULL) {
		__atomic_store_n(&n->mac, 0, __ATOMIC_RELEASE);
		n->last_request = 0;
		rc = 0;
	}
	pthread_mutex_unlock(&t->neigh_lock);
	return rc;
}

int
nvgw_rw_set(struct nvgw_tables *t, uint32_t pa, uint32_t ca, uint32_t rdid, uint16_t slot,
	    int gateway)
{
	uint64_t word = (uint64_t)ca | ((uint64_t)rdid << 32) |
			((uint64_t)(slot & 0x3FFF) << 48) | (gateway ? NVGW_RW_GATEWAY : 0);
	int rc;

	if (rdid == 0 || rdid >= NVGW_MAX_RD || slot >= NVGW_MAX_VSIDS)
		return -EINVAL;
	/* Values are words, not objects: replacing one is a single atomic store. */
	rc = ht_set(t, &t->rw_pa, pa, word, OWN_NONE);
	if (rc == 0 && gateway)
		rc = ht_set(t, &t->rw_gw, nvgw_rw_key(rdid, ca), pa, OWN_NONE);
	return rc;
}

int
nvgw_rw_del(struct nvgw_tables *t, uint32_t pa, uint32_t rdid, uint32_t ca, int gateway)
{
	int rc;

	if (rdid >= NVGW_MAX_RD)
		return -ENOENT;
	/* pa 0 (never a PA): the CA's entry alone, as an undone batch may need */
	rc = pa == 0 ? 0 : ht_del(t, &t->rw_pa, pa, OWN_NONE);
	if (rc == 0 && gateway)
		rc = ht_del(t, &t->rw_gw, nvgw_rw_key(rdid, ca), OWN_NONE);
	return rc;
}

/* The next hop neighbour of pa, remembering the last one (records of a block
 * mostly share few next hops). */
static struct nvgw_neigh *
bulk_neigh(struct nvgw_tables *t, uint32_t pa, uint32_t *last_ip, struct nvgw_neigh **last)
{
	uint32_t ip = nvgw_provider_nexthop(t->prov, pa);

	if (*last == NULL || ip != *last_ip) {
		*last = nvgw_neigh_set(t, NVGW_SCOPE_PROVIDER, ip, NULL, 0);
		*last_ip = ip;
	}
	return *last;
}

int
nvgw_record_set_bulk(struct nvgw_tables *t, const struct nvgw_rec_wire *w, uint32_t n,
		     uint32_t *bad)
{
	struct nvgw_record r = { 0 };
	struct nvgw_neigh *nh = NULL;
	struct nvgw_vsid *v = NULL;
	uint32_t i, n_new = 0, vsid = 0, nh_ip = 0;
	int rc;
	void *d;

	*bad = 0;
	if (n == 0)
		return 0;
	if (t->prov == NULL)
		return -EINVAL;
	/* 1. Everything that can fail, before anything changes. Next-hop neighbours
	 * are created (unresolved) as one record_set would; they are never freed. */
	for (i = 0; i < n; i++) {
		*bad = i;
		if (v == NULL || w[i].vsid != vsid) {
			if (rte_hash_lookup_data(t->vsids, &w[i].vsid, &d) < 0)
				return -ENOENT;
			v = d;
			vsid = w[i].vsid;
		}
		if (w[i].method > 1)
			return -EINVAL;
		if (bulk_neigh(t, w[i].pa, &nh_ip, &nh) == NULL)
			return -ENOSPC;
		if (nvgw_rtab_lookup(&t->records, nvgw_rec_key(v->rdid, w[i].ca)) == NULL)
			n_new++;
	}
	*bad = 0;
	if (t->records.max - t->records.n < n_new)
		return -ENOSPC;
	/* 2. Apply. Nothing can fail now: at most `max` keys are live in one
	 * and a half times as many slots, and dead ones (at most `max`,
	 * rtab_create) are freed by a grace period when they crowd the table
	 * (rec_put). Readers see
	 * each record change whole, one at a time. */
	v = NULL;
	nh = NULL;
	for (i = 0; i < n; i++) {
		if (v == NULL || w[i].vsid != vsid) {
			rte_hash_lookup_data(t->vsids, &w[i].vsid, &d);
			v = d;
			vsid = w[i].vsid;
		}
		rec_fill(t, &r, bulk_neigh(t, w[i].pa, &nh_ip, &nh), w[i].mac, w[i].pa,
			 w[i].method, v->idx);
		rc = rec_put(t, nvgw_rec_key(v->rdid, w[i].ca), &r);
		if (rc < 0) {
			*bad = i;               /* a bug: the checks above let it through */
			return rc;
		}
	}
	return 0;
}
