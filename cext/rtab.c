/* The writer's side of the record table (rtab.h). */
#include <errno.h>

#include "rtab.h"

void
nvgw_rtab_init(struct nvgw_rtab *h, struct nvgw_rslot *s, uint32_t max, uint32_t *dead,
	       uint32_t max_dead)
{
	uint32_t n = nvgw_rtab_slots(max), i;

	for (i = 0; i < n; i++)         /* a record is read only under its key */
		s[i].key = NVGW_HT_EMPTY;
	*h = (struct nvgw_rtab){ .s = s, .mask = n - 1, .shift = 64 - __builtin_ctz(n),
				 .max = max, .dead = dead, .max_dead = max_dead };
}

static inline int
reusable(uint64_t k)
{
	return k == NVGW_HT_EMPTY || k == NVGW_HT_FREE;
}

/* The slot holding key, or -1. */
static int64_t
find(const struct nvgw_rtab *h, uint64_t key)
{
	uint32_t i = nvgw_rtab_index(h, key), d;

	for (d = 0; d <= h->max_probe; d++, i = (i + 1) & h->mask) {
		uint64_t k = h->s[i].key;

		if (k == key)
			return i;
		if (k == NVGW_HT_EMPTY)
			break;
	}
	return -1;
}

/* The first reusable slot on key's path, or -1. Past max_probe, the new
 * limit is published first, so readers probe that far before the key can
 * be seen there. */
static int64_t
hole_for(struct nvgw_rtab *h, uint64_t key)
{
	uint32_t home = nvgw_rtab_index(h, key), i, d;

	for (d = 0; d <= h->mask; d++) {
		i = (home + d) & h->mask;
		if (reusable(h->s[i].key)) {
			if (d > h->max_probe)
				__atomic_store_n(&h->max_probe, d, __ATOMIC_RELEASE);
			return i;
		}
	}
	return -1;
}

int
nvgw_rtab_set(struct nvgw_rtab *h, uint64_t key, const struct nvgw_record *rec)
{
	int64_t hole, at;

	if (key >> 56 == 0xFF)
		return -EINVAL;         /* a marker, not a key */
	at = find(h, key);
	if (at < 0 && h->n >= h->max)
		return -ENOSPC;
	if (at >= 0 && h->n_dead == h->max_dead)
		return -EBUSY;
	/* The first free slot from home, so records stay near it however
	 * often they change (a reader that passed it before the new version
	 * was there finds the old one dead, and looks again: rtab.h). */
	hole = hole_for(h, key);
	if (hole < 0)
		return -ENOSPC;
	h->s[hole].rec = *rec;
	__atomic_store_n(&h->s[hole].key, key, __ATOMIC_RELEASE);
	if (at < 0) {
		h->n++;
		return 0;
	}
	/* The old version stays readable: a reader that matched it just before
	 * still reads it, until a grace period has passed. */
	__atomic_store_n(&h->s[at].key, NVGW_HT_DEAD, __ATOMIC_RELEASE);
	h->dead[h->n_dead++] = (uint32_t)at;
	return 1;
}

int
nvgw_rtab_del(struct nvgw_rtab *h, uint64_t key)
{
	int64_t at = key >> 56 == 0xFF ? -1 : find(h, key);

	if (at < 0)
		return -ENOENT;
	if (h->n_dead == h->max_dead)
		return -EBUSY;
	__atomic_store_n(&h->s[at].key, NVGW_HT_DEAD, __ATOMIC_RELEASE);
	h->dead[h->n_dead++] = (uint32_t)at;
	h->n--;
	return 0;
}

/* Dead slots become free; a free slot just before an empty one becomes
 * empty again, and so on backwards: no key can sit past an empty slot on
 * its path (it would have been put there), so lookups may stop there.
 * Without this, every replace (which takes a slot) would leave one empty
 * slot less for good, and misses would probe ever further. */
void
nvgw_rtab_reclaim(struct nvgw_rtab *h)
{
	uint32_t i, j;

	for (i = 0; i < h->n_dead; i++)
		__atomic_store_n(&h->s[h->dead[i]].key, NVGW_HT_FREE, __ATOMIC_RELEASE);
	for (i = 0; i < h->n_dead; i++) {
		j = h->dead[i];
		if (h->s[(j + 1) & h->mask].key != NVGW_HT_EMPTY)
			continue;
		while (h->s[j].key == NVGW_HT_FREE) {
			__atomic_store_n(&h->s[j].key, NVGW_HT_EMPTY, __ATOMIC_RELEASE);
			j = (j - 1) & h->mask;
		}
	}
	h->n_dead = 0;
}
