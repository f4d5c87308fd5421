/* The writer's side of the data path's exact-match tables (htab.h). */
#include <errno.h>

#include "htab.h"

void
nvgw_htab_init(struct nvgw_htab *h, struct nvgw_hbucket *b, uint32_t max, uint32_t *dead,
	       uint32_t max_dead)
{
	uint32_t n = nvgw_htab_buckets(max), i, s;

	for (i = 0; i < n; i++)
		for (s = 0; s < NVGW_HT_SLOTS; s++) {
			b[i].key[s] = NVGW_HT_EMPTY;
			b[i].val[s] = 0;
		}
	*h = (struct nvgw_htab){ .b = b, .mask = n - 1, .max = max,
				 .dead = dead, .max_dead = max_dead };
}

static inline uint32_t
home_of(const struct nvgw_htab *h, uint64_t key)
{
	return nvgw_htab_home(h, key) - h->b;
}

/* The slot holding key (bucket * NVGW_HT_SLOTS + slot), or -1. With `hole`,
 * also the first reusable slot on key's probe path (-1 when none). */
static int64_t
find(const struct nvgw_htab *h, uint64_t key, int64_t *hole)
{
	uint32_t bi = home_of(h, key), d, s;

	if (hole != NULL)
		*hole = -1;
	for (d = 0; d <= h->max_probe; d++, bi = (bi + 1) & h->mask)
		for (s = 0; s < NVGW_HT_SLOTS; s++) {
			uint64_t k = h->b[bi].key[s];

			if (k == key)
				return (int64_t)bi * NVGW_HT_SLOTS + s;
			if ((k == NVGW_HT_EMPTY || k == NVGW_HT_FREE) && hole != NULL && *hole < 0)
				*hole = (int64_t)bi * NVGW_HT_SLOTS + s;
			if (k == NVGW_HT_EMPTY)
				return -1;
		}
	return -1;
}

int
nvgw_htab_set(struct nvgw_htab *h, uint64_t key, uint64_t val, uint64_t *old)
{
	int64_t hole, at;
	struct nvgw_hbucket *b;
	uint32_t bi, d, s;

	if (key >> 56 == 0xFF)
		return -EINVAL;         /* a marker, not a key */
	at = find(h, key, &hole);
	if (at >= 0) {
		b = &h->b[at / NVGW_HT_SLOTS];
		*old = b->val[at % NVGW_HT_SLOTS];
		__atomic_store_n(&b->val[at % NVGW_HT_SLOTS], val, __ATOMIC_RELEASE);
		return 1;
	}
	if (h->n >= h->max)
		return -ENOSPC;
	if (hole < 0) {
		/* Every slot up to max_probe is live or dead: go further, and
		 * let readers probe that far before the key can be seen there. */
		bi = (home_of(h, key) + h->max_probe + 1) & h->mask;
		for (d = h->max_probe + 1; d <= h->mask && hole < 0; d++, bi = (bi + 1) & h->mask)
			for (s = 0; s < NVGW_HT_SLOTS && hole < 0; s++)
				if (h->b[bi].key[s] == NVGW_HT_EMPTY ||
				    h->b[bi].key[s] == NVGW_HT_FREE) {
					hole = (int64_t)bi * NVGW_HT_SLOTS + s;
					__atomic_store_n(&h->max_probe, d, __ATOMIC_RELEASE);
				}
		if (hole < 0)
			return -ENOSPC;
	}
	b = &h->b[hole / NVGW_HT_SLOTS];
	b->val[hole % NVGW_HT_SLOTS] = val;
	__atomic_store_n(&b->key[hole % NVGW_HT_SLOTS], key, __ATOMIC_RELEASE);
	h->n++;
	return 0;
}

int
nvgw_htab_del(struct nvgw_htab *h, uint64_t key, uint64_t *old)
{
	int64_t at = key >> 56 == 0xFF ? -1 : find(h, key, NULL);
	struct nvgw_hbucket *b;

	if (at < 0)
		return -ENOENT;
	if (h->n_dead == h->max_dead)
		return -EBUSY;
	b = &h->b[at / NVGW_HT_SLOTS];
	*old = b->val[at % NVGW_HT_SLOTS];
	/* The value stays: a reader that matched the key just before still
	 * reads it, and the caller frees what it points to after a grace period. */
	__atomic_store_n(&b->key[at % NVGW_HT_SLOTS], NVGW_HT_DEAD, __ATOMIC_RELEASE);
	h->dead[h->n_dead++] = (uint32_t)at;
	h->n--;
	return 0;
}

static inline uint64_t *
key_at(const struct nvgw_htab *h, uint32_t slot)
{
	return &h->b[slot / NVGW_HT_SLOTS].key[slot % NVGW_HT_SLOTS];
}

/* Dead slots become free; a free slot just before an empty one (in probe
 * order: a bucket's slots, then the next bucket's) becomes empty again, and
 * so on backwards, as the record table does (rtab.c): no key sits past an
 * empty slot on its path, so none can be past these. Without it, churn
 * turned every empty slot free for good and each miss probed max_probe + 1
 * buckets. */
void
nvgw_htab_reclaim(struct nvgw_htab *h)
{
	uint32_t i, j, last = (h->mask + 1) * NVGW_HT_SLOTS - 1;

	for (i = 0; i < h->n_dead; i++)
		__atomic_store_n(key_at(h, h->dead[i]), NVGW_HT_FREE, __ATOMIC_RELEASE);
	for (i = 0; i < h->n_dead; i++) {
		j = h->dead[i];
		if (*key_at(h, j == last ? 0 : j + 1) != NVGW_HT_EMPTY)
			continue;
		while (*key_at(h, j) == NVGW_HT_FREE) {
			__atomic_store_n(key_at(h, j), NVGW_HT_EMPTY, __ATOMIC_RELEASE);
			j = j == 0 ? last : j - 1;
		}
	}
	h->n_dead = 0;
}

int
nvgw_htab_next(const struct nvgw_htab *h, uint32_t *pos, uint64_t *key, uint64_t *val)
{
	uint64_t slots = (uint64_t)(h->mask + 1) * NVGW_HT_SLOTS;

	while (*pos < slots) {
		const struct nvgw_hbucket *b = &h->b[*pos / NVGW_HT_SLOTS];
		uint32_t s = (*pos)++ % NVGW_HT_SLOTS;
		uint64_t k = __atomic_load_n(&b->key[s], __ATOMIC_ACQUIRE);

		if (k >> 56 != 0xFF) {
			*key = k;
			*val = __atomic_load_n(&b->val[s], __ATOMIC_RELAXED);
			return 1;
		}
	}
	return 0;
}
