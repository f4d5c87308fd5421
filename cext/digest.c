/* What the workers can see of the tables, as one number per table, so that a
 * test can tell two states of the tables apart without a reader for each:
 * a batch that failed half-way and was undone must leave the same numbers
 * as before it. Sums of a mixed (key, value), so the order of slots and the
 * dead ones do not count; values that are pointers count by what they point
 * to. Of the neighbour table (it never frees an entry) only the entries
 * with a MAC count: an unresolved one acts as none. Control side, a full
 * walk: for tests and diagnostics, never the data path. */
#include <string.h>

#include "tables.h"

static uint64_t
mix(uint64_t a, uint64_t b)
{
	uint64_t x = a * 0x9E3779B97F4A7C15ULL ^ (b + 0x632BE59BD9B4E019ULL);

	x ^= x >> 31;
	x *= 0xBF58476D1CE4E5B9ULL;
	x ^= x >> 29;
	return x;
}

enum { WORDS, ROUTES, NEIGHBOURS };     /* what a table's values are */

static uint64_t
htab_sum(const struct nvgw_htab *h, int values)
{
	uint64_t key, val, sum = 0;
	uint32_t pos = 0;

	while (nvgw_htab_next(h, &pos, &key, &val)) {
		if (values == ROUTES && !(val & NVGW_ROUTE_PACKED)) {
			const struct nvgw_route *r = (const void *)(uintptr_t)val;

			val = mix(mix(r->kind, r->vlan), mix(r->nh_ip, r->nh != NULL));
		} else if (values == NEIGHBOURS) {
			val = ((const struct nvgw_neigh *)(uintptr_t)val)->mac;
			if (!(val & NVGW_NEIGH_VALID))
				continue;
		}
		sum += mix(key, val);
	}
	return sum;
}

void
nvgw_tables_digest(const struct nvgw_tables *t, uint64_t d[NVGW_DIGEST_N])
{
	const struct nvgw_rtab *rt = &t->records;
	const struct nvgw_provider *p = t->prov;
	uint32_t i, j;

	memset(d, 0, NVGW_DIGEST_N * sizeof(d[0]));
	for (i = 0; i < rt->n_slots; i++) {
		const struct nvgw_rec *r = (const void *)nvgw_rtab_kw(rt, i);
		const struct nvgw_rpay *y = nvgw_rec_pay(r);
		uint64_t mac = 0;

		if (NVGW_RT_KEY(r->kw) >> 32 == 0)      /* a marker: domain 0 */
			continue;
		memcpy(&mac, y->mac, 6);
		d[0] += mix(mix(r->kw, y->pa), mix(mac, y->nh));
	}
	d[1] = htab_sum(&t->routes, ROUTES);
	d[2] = htab_sum(&t->rw_pa, WORDS) + mix(htab_sum(&t->rw_gw, WORDS), 1);
	for (i = 0; i < NVGW_MAX_VSIDS; i++) {
		const struct nvgw_vsid *v = t->vsid_by_idx[i];

		if (v == NULL && t->vsid_word[i] == 0)
			continue;
		d[3] += mix(mix(t->vsid_word[i], t->vsid_key[i]), i);
		if (v != NULL)
			d[3] += mix(mix(v->vsid, v->rdid), mix(v->gw_ip, v->idx)) +
				mix(t->vsid_dir[v->vsid >> 8][v->vsid & 0xFF], v->vsid);
	}
	for (i = 0; i < NVGW_MAX_VLAN; i++) {
		const struct nvgw_attach *a = t->attach[i];

		if (a != NULL)
			d[4] += mix(mix(mix(a->vlan, a->rdid), mix(a->ip, a->mask)),
				    mix(a->mac_w, a->n_hosts));
	}
	for (i = 1; i < NVGW_MAX_RD; i++)
		if (t->rd_lens[i] | t->rd_link[i])
			d[5] += mix(mix(t->rd_lens[i], t->rd_link[i]), i);
	for (i = 0; i < NVGW_BLK_BITS; i++)
		if (t->blk16_n[i] | t->blk24_n[i])
			d[5] += mix(mix(t->blk16_n[i], t->blk24_n[i]), (uint64_t)i << 32 | 1);
	for (i = 0; i < NVGW_BLK_BITS / 64; i++)
		d[5] += mix(mix(t->blk16[i], t->blk24[i]), (uint64_t)i << 32 | 2);
	d[7] = htab_sum(&t->neigh, NEIGHBOURS);
	if (p != NULL) {
		d[6] = mix(mix(p->mask, p->gw_ip), mix(p->mtu, p->mac_w));
		for (j = 0; j < p->n_pa; j++)
			d[6] = mix(d[6], p->pa[j]);
	}
}
