/* The writer's side of the record table (rtab.h). */
#include <errno.h>
#include <string.h>

#include "rtab.h"

void
nvgw_rtab_init(struct nvgw_rtab *h, struct nvgw_rslot *s, uint32_t max, uint32_t *dead,
	       uint32_t max_dead)
{
	uint32_t n = nvgw_rtab_slots(max), i;

	memset(s, 0, (size_t)n * sizeof(*s));
	for (i = 0; i < n; i++)
		s[i].key = NVGW_HT_EMPTY;
	*h = (struct nvgw_rtab){ .s = s, .mask = n - 1, .shift = 64 - __builtin_ctz(n),
				 .max = max, .dead = dead, .max_dead = max_dead };
}

static inline int
reusable(uint64_t k)
{
	return k == NVGW_HT_EMPTY || k == NVGW_HT_FREE;
}

/* The slot holding key, or -1; and the first reusable slot on key's probe
 * path (-1 when there is none up to max_probe). */
static int64_t
find(const struct nvgw_rtab *h, uint64_t key, int64_t *hole)
{
	uint32_t i = nvgw_rtab_home(h, key) - h->s, d;
	int64_t at = -1;

	*hole = -1;
	for (d = 0; d <= h->max_probe; d++, i = (i + 1) & h->mask) {
		uint64_t k = h->s[i].key;

		if (k == key)
			at = i;
		else if (reusable(k) && *hole < 0)
			*hole = i;
		if (k == NVGW_HT_EMPTY || (at >= 0 && *hole >= 0))
			break;
	}
	return at;
}

int
nvgw_rtab_set(struct nvgw_rtab *h, uint64_t key, const struct nvgw_record *rec)
{
	int64_t hole, at;
	uint32_t i, d;

	if (key >> 56 == 0xFF)
		return -EINVAL;         /* a marker, not a key */
	at = find(h, key, &hole);
	if (at < 0 && h->n >= h->max)
		return -ENOSPC;
	if (at >= 0 && h->n_dead == h->max_dead)
		return -EBUSY;
	if (hole < 0) {
		/* Every slot up to max_probe is live or dead: go further, and
		 * let readers probe that far before the key can be seen there. */
		i = (nvgw_rtab_home(h, key) - h->s + h->max_probe + 1) & h->mask;
		for (d = h->max_probe + 1; d <= h->mask; d++, i = (i + 1) & h->mask)
			if (reusable(h->s[i].key)) {
				hole = i;
				__atomic_store_n(&h->max_probe, d, __ATOMIC_RELEASE);
				break;
			}
		if (hole < 0)
			return -ENOSPC;
	}
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
	int64_t hole, at = key >> 56 == 0xFF ? -1 : find(h, key, &hole);

	if (at < 0)
		return -ENOENT;
	if (h->n_dead == h->max_dead)
		return -EBUSY;
	__atomic_store_n(&h->s[at].key, NVGW_HT_DEAD, __ATOMIC_RELEASE);
	h->dead[h->n_dead++] = (uint32_t)at;
	h->n--;
	return 0;
}

void
nvgw_rtab_reclaim(struct nvgw_rtab *h)
{
	uint32_t i;

	for (i = 0; i < h->n_dead; i++)
		h->s[h->dead[i]].key = NVGW_HT_FREE;
	h->n_dead = 0;
}
