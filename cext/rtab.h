/* The lookup records and their table: each record stored in its slot.
 *
 * Through the exact-match table (htab.h) a record costs two cache misses in
 * a row with a million of them: the bucket, then the record it points to.
 * Here a slot (half a cache line) holds the key and the record, so a
 * lookup reads one line (or the next ones: linear probing, at most half of
 * the slots live).
 *
 * The rules of htab.h otherwise: one writer, lock-free readers, keys with
 * the top byte clear, EMPTY / DEAD / FREE markers, a record written before
 * its key is published. A live slot's record never changes: a new version
 * goes to another slot, then the old slot dies, and its record stays
 * readable until a grace period has passed. A reader sees the old record
 * or the new one, whole.
 *
 * No EAL and no allocation here: the fuzzers run it on plain memory. */
#ifndef NVGW_RTAB_H
#define NVGW_RTAB_H

#include <stdint.h>
#include <rte_branch_prediction.h>
#include <rte_common.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_prefetch.h>

#include "byteorder.h"
#include "htab.h"

struct nvgw_neigh;

/* The outer headers of NVGRE from the outer Ethernet type on (the copy
 * writes the type too): the provider's template, built when the provider
 * is set (its source PA; the destination 0; where the checksum goes, the
 * header's sum with length and destination 0), completed per packet with
 * the record's PA and GRE key word (nvgw_nvgre_header). */
struct nvgw_outer {
	uint16_t eth_type;          /* IPv4 */
	struct rte_ipv4_hdr ip;
	uint16_t gre_flags;         /* 0x2000: K bit, version 0 */
	uint16_t gre_proto;         /* 0x6558 */
	uint32_t gre_key;           /* 0: the record's word and the FlowID go here */
} __rte_packed;

_Static_assert(sizeof(struct nvgw_outer) == 2 + 20 + 8, "nvgw_outer: type, IPv4, GRE");

/* What the data path needs of a lookup record (its routing domain and CA
 * are the key), in 24 bytes: with its key a slot is half a cache line, so
 * that a million records take half the memory, and the caches hold twice
 * the share of them (measured: the million-record rows, session 21). */
struct nvgw_record {
	struct nvgw_neigh *nh;      /* fabric next hop for the PA */
	struct rte_ether_addr mac;  /* CA MAC */
	uint16_t vsid_idx;
	uint32_t pa;                /* its PA: the outer destination */
	/* The GRE key word as sent (VSID << 8, network order), but for its
	 * FlowID byte, which holds the method (nvgw_record_method): NVGW_ENCAP
	 * is 0, so an NVGRE record's word takes the FlowID by an or. */
	uint32_t gre;
};

/* Its MAC loads as a word in one read (nvgw_load64): bytes follow it. */
_Static_assert(offsetof(struct nvgw_record, mac) + 8 <= sizeof(struct nvgw_record),
	       "nvgw_record: 8 bytes readable from mac");

/* The record's VSID and method, from its GRE key word. */
static inline uint32_t
nvgw_record_vsid(const struct nvgw_record *r)
{
	return nvgw_be32(r->gre) >> 8;
}

static inline uint8_t
nvgw_record_method(const struct nvgw_record *r)
{
	return ((const uint8_t *)&r->gre)[3];
}

/* Two slots a cache line. */
struct nvgw_rslot {
	uint64_t key;
	struct nvgw_record rec;
} __rte_aligned(32);

_Static_assert(sizeof(struct nvgw_rslot) == 32, "nvgw_rslot: half a cache line");

struct nvgw_rtab {
	struct nvgw_rslot *s;
	uint32_t mask;              /* slots - 1 */
	uint32_t shift;             /* 64 - log2(slots) */
	uint32_t max_probe;         /* slots past its home one any key sits in */
	uint32_t n, max;            /* live keys; the most allowed */
	uint32_t *dead;             /* slots deleted or replaced since the last grace period */
	uint32_t n_dead, max_dead;
};

/* Slots for `max` keys: a power of two, at least twice max. */
static inline uint32_t
nvgw_rtab_slots(uint32_t max)
{
	uint64_t n = 2;

	while (n < 2ULL * max)
		n <<= 1;
	return (uint32_t)n;
}

/* A key's home slot: CRC-32C of the key (one instruction, as htab.h's),
 * its 32 bits spread over the index by Fibonacci hashing (the top bits of
 * their product with 2^64 / golden ratio). Either alone lets the keys of
 * some policies pile up into long runs: CRC-32C is linear, and CAs that
 * differ in a few bits land in patterns; Fibonacci hashing of the key
 * itself (sessions 5-21) mixed the CA's bytes, in network order in the
 * key's low half, with the domain's poorly: a million records in 20 domains
 * of 50,000 sat 32 slots past home on average, and the gateway ran at a
 * quarter of its rate (session 22). Both together place the keys of every
 * shape tried as random keys (tests/rtab_spread.c). */
static inline uint64_t
nvgw_rtab_mix(uint64_t key)
{
#ifdef __SSE4_2__
	return _mm_crc32_u64(0, key);
#else
	key *= 0xFF51AFD7ED558CCDULL;          /* as MurmurHash3's finalizer starts */
	return key ^ key >> 32;
#endif
}

static inline uint32_t
nvgw_rtab_index(const struct nvgw_rtab *h, uint64_t key)
{
	return (uint32_t)((nvgw_rtab_mix(key) * 0x9E3779B97F4A7C15ULL) >> h->shift);
}

static inline const struct nvgw_rslot *
nvgw_rtab_home(const struct nvgw_rtab *h, uint64_t key)
{
	return &h->s[nvgw_rtab_index(h, key)];
}

/* Whether a lookup's fetch takes the line after the home slot's too (with
 * 64-byte slots, 8% of the benchmark's million keys sat in the next one, 4%
 * one further; with two slots a line, a key one past an even home slot is
 * in its line, one past an odd one in the next). Measured with 64-byte
 * slots (not again with 32), the million-record rows with and without it,
 * alternated: on AMD Zen (sessions 8 and 10) decap and hairpin were slower
 * without it, encap even; on an Intel Xeon (session 20) without it the
 * rows ran 3-14% faster in 11 of 12 pairs (one even): the second line is
 * traffic that most lookups do not need. Other CPUs: not measured; the
 * home slot alone. Chosen by the build's target (-march, NVGW_MARCH), or
 * set with -DNVGW_RTAB_FETCH_NEXT=0/1. */
#ifndef NVGW_RTAB_FETCH_NEXT
#if defined(__znver1__) || defined(__znver2__) || defined(__znver3__) || \
    defined(__znver4__) || defined(__znver5__)
#define NVGW_RTAB_FETCH_NEXT 1
#else
#define NVGW_RTAB_FETCH_NEXT 0
#endif
#endif

/* The home slot, its fetch (and the next line's, see above) started;
 * later nvgw_rtab_probe() from it. */
static inline const struct nvgw_rslot *
nvgw_rtab_fetch(const struct nvgw_rtab *h, uint64_t key)
{
	uint32_t i = nvgw_rtab_index(h, key);

	rte_prefetch0(&h->s[i]);
	if (NVGW_RTAB_FETCH_NEXT)       /* past the table's end: a prefetch never faults */
		rte_prefetch0((const void *)((uintptr_t)&h->s[i] + RTE_CACHE_LINE_SIZE));
	return &h->s[i];
}

static inline const struct nvgw_record *
nvgw_rtab_probe_once(const struct nvgw_rtab *h, const struct nvgw_rslot *s, uint64_t key,
		     int *dead)
{
	uint32_t left = __atomic_load_n(&h->max_probe, __ATOMIC_ACQUIRE);

	for (;;) {
		uint64_t k = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);

		if (k == key)
			return &s->rec;
		if (k == NVGW_HT_EMPTY)
			return NULL;
		*dead |= k == NVGW_HT_DEAD;
		if (left-- == 0)
			return NULL;
		s = &h->s[(s - h->s + 1) & h->mask];
	}
}

/* key's record, looked up from its home slot s, or NULL. A replace
 * publishes the new version in the first free slot from home, then kills
 * the old one: a reader that had passed that slot before finds only a dead
 * one. Having seen a dead slot on the way, a miss looks once more (the
 * dead mark, read with acquire, makes the new version and any raised probe
 * limit visible). Only a second replace of the same key during that second
 * look could still make it miss. */
static inline const struct nvgw_record *
nvgw_rtab_probe(const struct nvgw_rtab *h, const struct nvgw_rslot *s, uint64_t key)
{
	int dead = 0;
	const struct nvgw_record *r;

	/* The usual: the key in its home slot, before the probe limit's load
	 * and the loop (which read it again: a later read is never older). */
	if (likely(__atomic_load_n(&s->key, __ATOMIC_ACQUIRE) == key))
		return &s->rec;
	r = nvgw_rtab_probe_once(h, s, key, &dead);

	if (likely(r != NULL) || !dead)
		return r;
	return nvgw_rtab_probe_once(h, s, key, &dead);
}

static inline const struct nvgw_record *
nvgw_rtab_lookup(const struct nvgw_rtab *h, uint64_t key)
{
	return nvgw_rtab_probe(h, nvgw_rtab_home(h, key), key);
}

/* The writer's side (cext/rtab.c). init: `s` holds nvgw_rtab_slots(max)
 * slots, `dead` max_dead slot numbers. */
void nvgw_rtab_init(struct nvgw_rtab *h, struct nvgw_rslot *s, uint32_t max,
		    uint32_t *dead, uint32_t max_dead);
/* Add key with a copy of *rec, or replace its record (the new version in
 * another slot, the old one on the dead list): 0 added, 1 replaced;
 * -ENOSPC when `max` keys are live or no slot is free; -EBUSY when a
 * replace finds the dead list full (reclaim after a grace period first);
 * -EINVAL for a marker. */
int nvgw_rtab_set(struct nvgw_rtab *h, uint64_t key, const struct nvgw_record *rec);
/* Delete key: 0, -ENOENT, or -EBUSY when the dead list is full. */
int nvgw_rtab_del(struct nvgw_rtab *h, uint64_t key);
/* After a grace period: dead slots become free (or empty, see rtab.c). */
void nvgw_rtab_reclaim(struct nvgw_rtab *h);

#endif
