/* Exact-match tables of the data path: 8-byte keys, 8-byte values, one
 * writer (the control thread) and lock-free readers (the workers).
 *
 * Open addressing over 64-byte buckets holding four keys and their four
 * values, so a hit reads one cache line: rte_hash reads its bucket, then
 * the key in its key store, then the value, and with a million records
 * each of those is a miss. Sized so at most half the slots are live; a
 * key sits in its home bucket or, when that was full, in one of the next
 * `max_probe` buckets.
 *
 * Keys have their top byte clear. The top byte 0xFF marks slots that are
 * empty (never used: a lookup stops there), dead (deleted, but a reader may
 * still be reading its value: not reused before a grace period) or free
 * (reusable; a lookup probes past it), so lookups never ask for those
 * values. No key sits past an empty slot on its path (a free slot becomes
 * empty again only where that holds: nvgw_htab_reclaim), so an empty slot
 * proves the key is not further along. A value changes with one atomic
 * store; a new key is published after its value.
 *
 * No EAL and no allocation here: the caller provides the buckets, so the
 * fuzzers run it on plain memory. */
#ifndef NVGW_HTAB_H
#define NVGW_HTAB_H

#include <stdint.h>
#include <rte_common.h>
#include <rte_prefetch.h>
#ifdef __SSE4_2__
#include <nmmintrin.h>
#endif

#define NVGW_HT_EMPTY   UINT64_MAX
#define NVGW_HT_DEAD    (UINT64_MAX - 1)
#define NVGW_HT_FREE    (UINT64_MAX - 2)
#define NVGW_HT_SLOTS   4
#define NVGW_HT_BULK    64          /* most keys per bulk lookup (the hit mask) */

struct nvgw_hbucket {
	uint64_t key[NVGW_HT_SLOTS];
	uint64_t val[NVGW_HT_SLOTS];
} __rte_aligned(64);

struct nvgw_htab {
	struct nvgw_hbucket *b;
	uint32_t mask;              /* buckets - 1 */
	uint32_t max_probe;         /* buckets past its home one any key sits in */
	uint32_t n, max;            /* live keys; the most allowed */
	uint32_t *dead;             /* slot numbers deleted since the last grace period */
	uint32_t n_dead, max_dead;
};

/* Buckets for `max` keys (a power of two, at least two). */
static inline uint32_t
nvgw_htab_buckets(uint32_t max)
{
	uint64_t n = 2;

	while (n * NVGW_HT_SLOTS < 2ULL * max)
		n <<= 1;
	return (uint32_t)n;
}

static inline uint32_t
nvgw_htab_hash(uint64_t key)
{
#ifdef __SSE4_2__
	return (uint32_t)_mm_crc32_u64(0, key);     /* CRC-32C, as rte_hash's */
#else
	return (uint32_t)((key * 0x9E3779B97F4A7C15ULL) >> 32);
#endif
}

static inline const struct nvgw_hbucket *
nvgw_htab_home(const struct nvgw_htab *h, uint64_t key)
{
	return &h->b[nvgw_htab_hash(key) & h->mask];
}

/* Look key up from its home bucket b. 1 and *val when found. */
static inline int
nvgw_htab_probe(const struct nvgw_htab *h, const struct nvgw_hbucket *b, uint64_t key,
		uint64_t *val)
{
	uint32_t left = __atomic_load_n(&h->max_probe, __ATOMIC_ACQUIRE);
	unsigned int i;

	for (;;) {
		for (i = 0; i < NVGW_HT_SLOTS; i++) {
			uint64_t k = __atomic_load_n(&b->key[i], __ATOMIC_ACQUIRE);

			if (k == key) {
				*val = __atomic_load_n(&b->val[i], __ATOMIC_RELAXED);
				return 1;
			}
			if (k == NVGW_HT_EMPTY)
				return 0;
		}
		if (left-- == 0)
			return 0;
		b = &h->b[(b - h->b + 1) & h->mask];
	}
}

static inline int
nvgw_htab_lookup(const struct nvgw_htab *h, uint64_t key, uint64_t *val)
{
	return nvgw_htab_probe(h, nvgw_htab_home(h, key), key, val);
}

/* A lookup in two steps, for callers that have work to do between them:
 * the home bucket, its fetch started; later nvgw_htab_probe() from it. */
static inline const struct nvgw_hbucket *
nvgw_htab_fetch(const struct nvgw_htab *h, uint64_t key)
{
	const struct nvgw_hbucket *b = nvgw_htab_home(h, key);

	rte_prefetch0(b);
	return b;
}

/* n <= NVGW_HT_BULK keys: every home bucket is fetched before the first is
 * read. Returns the hit mask; vals[i] is set for the hits. */
static inline uint64_t
nvgw_htab_lookup_bulk(const struct nvgw_htab *h, const uint64_t *keys, unsigned int n,
		      uint64_t *vals)
{
	const struct nvgw_hbucket *b[NVGW_HT_BULK];
	uint64_t hits = 0;
	unsigned int i;

	for (i = 0; i < n; i++)
		b[i] = nvgw_htab_fetch(h, keys[i]);
	for (i = 0; i < n; i++)
		if (nvgw_htab_probe(h, b[i], keys[i], &vals[i]))
			hits |= 1ULL << i;
	return hits;
}

/* The writer's side (cext/htab.c). init: `b` holds nvgw_htab_buckets(max)
 * buckets, `dead` max_dead slot numbers. */
void nvgw_htab_init(struct nvgw_htab *h, struct nvgw_hbucket *b, uint32_t max,
		    uint32_t *dead, uint32_t max_dead);
/* Add key or replace its value: 1 and *old when it was there, 0 when added,
 * -ENOSPC when `max` keys are live or no slot is free (dead slots become
 * free with nvgw_htab_reclaim()). */
int nvgw_htab_set(struct nvgw_htab *h, uint64_t key, uint64_t val, uint64_t *old);
/* Delete key: 0 and *old, -ENOENT, or -EBUSY when the dead list is full
 * (reclaim after a grace period first). */
int nvgw_htab_del(struct nvgw_htab *h, uint64_t key, uint64_t *old);
/* After a grace period: dead slots become free. */
void nvgw_htab_reclaim(struct nvgw_htab *h);
/* Walk the live keys: *pos = 0 first; 1 with the next key and value, 0 at the end. */
int nvgw_htab_next(const struct nvgw_htab *h, uint32_t *pos, uint64_t *key, uint64_t *val);

#endif
