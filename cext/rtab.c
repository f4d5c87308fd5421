/* The writer's side of the record table (rtab.h). */
#include <errno.h>
#include <string.h>

#include "rtab.h"

/* Slot i's key word, to write. */
static inline uint64_t *
kw_at(struct nvgw_rtab *h, uint32_t i)
{
	return (uint64_t *)nvgw_rtab_kw(h, i);
}

void
nvgw_rtab_init(struct nvgw_rtab *h, struct nvgw_rline *l, uint32_t max, uint32_t *dead,
	       uint32_t max_dead)
{
	uint32_t n = nvgw_rtab_lines(max), i;

	for (i = 0; i < n; i++)         /* a record is read only under its key */
		l[i].kw[0] = l[i].kw[1] = l[i].kw[2] = NVGW_RT_EMPTY;
	*h = (struct nvgw_rtab){ .l = l, .n_slots = 3 * n, .shift = 64 - __builtin_ctz(n),
				 .max = max, .dead = dead, .max_dead = max_dead };
}

/* Domain 0 is the markers'; a key has 48 bits. */
static inline int
not_key(uint64_t key)
{
	return key >> 48 != 0 || key >> 32 == 0;
}

/* Slot i dies: DEAD, its meta kept for readers that matched it. */
static void
kill(struct nvgw_rtab *h, uint32_t i)
{
	uint64_t *k = kw_at(h, i);

	__atomic_store_n(k, (*k & ~NVGW_RT_KEY_MASK) | NVGW_RT_DEAD, __ATOMIC_RELEASE);
	h->dead[h->n_dead++] = i;
}

static inline int
reusable(uint64_t k)
{
	return k == NVGW_RT_EMPTY || NVGW_RT_KEY(k) == NVGW_RT_FREE;
}

/* The slot holding key, or -1. */
static int64_t
find(struct nvgw_rtab *h, uint64_t key)
{
	uint32_t i = nvgw_rtab_index(h, key), d;

	for (d = 0; d <= h->max_probe; d++, i = nvgw_rtab_next(h, i)) {
		uint64_t k = *kw_at(h, i);

		if (NVGW_RT_KEY(k) == key)
			return i;
		if (k == NVGW_RT_EMPTY)
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
	uint32_t i = nvgw_rtab_index(h, key), d;

	for (d = 0; d < h->n_slots; d++, i = nvgw_rtab_next(h, i)) {
		if (reusable(*kw_at(h, i))) {
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
	struct nvgw_rpay *p;

	if (not_key(key) || rec->vsid_idx > 0x3FFF || rec->method > 3)
		return -EINVAL;
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
	p = &h->l[hole / 3].r[hole % 3];
	p->pa = rec->pa;
	memcpy(p->mac, &rec->mac, 6);
	p->nh = rec->nh;
	__atomic_store_n(kw_at(h, hole), NVGW_RT_META(rec->vsid_idx, (uint64_t)rec->method) | key,
			 __ATOMIC_RELEASE);
	if (at < 0) {
		h->n++;
		return 0;
	}
	/* The old version stays readable: a reader that matched it just before
	 * still reads it, until a grace period has passed. */
	kill(h, (uint32_t)at);
	return 1;
}

int
nvgw_rtab_del(struct nvgw_rtab *h, uint64_t key)
{
	int64_t at = not_key(key) ? -1 : find(h, key);

	if (at < 0)
		return -ENOENT;
	if (h->n_dead == h->max_dead)
		return -EBUSY;
	kill(h, (uint32_t)at);
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
		__atomic_store_n(kw_at(h, h->dead[i]), NVGW_RT_FREE, __ATOMIC_RELEASE);
	for (i = 0; i < h->n_dead; i++) {
		j = h->dead[i];
		if (*kw_at(h, nvgw_rtab_next(h, j)) != NVGW_RT_EMPTY)
			continue;
		while (*kw_at(h, j) == NVGW_RT_FREE) {
			__atomic_store_n(kw_at(h, j), NVGW_RT_EMPTY, __ATOMIC_RELEASE);
			j = j == 0 ? h->n_slots - 1 : j - 1;
		}
	}
	h->n_dead = 0;
}
