/* The lookup records and their table: three records a cache line.
 *
 * Through the exact-match table (htab.h) a record costs two cache misses in
 * a row with a million of them: the bucket, then the record it points to.
 * Here a line holds three keys and their records, so a lookup reads one
 * line (or the next ones: linear probing, at most two thirds of the slots
 * live), and a million records take 32 MB: what the million-record rows
 * pay for is the lines their records occupy (README, "Where the cycles go",
 * sessions 21 and 23).
 *
 * The rules of htab.h otherwise: one writer, lock-free readers, EMPTY /
 * DEAD / FREE markers, a record written before its key is published. A
 * live slot's record never changes: a new version goes to another slot,
 * then the old slot dies, and its record (and the key word's top bits)
 * stays readable until a grace period has passed. A reader sees the old
 * record or the new one, whole.
 *
 * No EAL and no allocation here: the fuzzers run it on plain memory. */
#ifndef NVGW_RTAB_H
#define NVGW_RTAB_H

#include <stdint.h>
#include <immintrin.h>
#include <rte_branch_prediction.h>
#include <rte_common.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_prefetch.h>

#include "byteorder.h"

struct nvgw_neigh;

/* The outer headers of NVGRE from the outer Ethernet type on (the copy
 * writes the type too): the provider's template, built when the provider
 * is set (its source PA; the destination 0; where the checksum goes, the
 * header's sum with length and destination 0), completed per packet with
 * the record's PA and its VSID's GRE key word (nvgw_nvgre_header). */
struct nvgw_outer {
	uint16_t eth_type;          /* IPv4 */
	struct rte_ipv4_hdr ip;
	uint16_t gre_flags;         /* 0x2000: K bit, version 0 */
	uint16_t gre_proto;         /* 0x6558 */
	uint32_t gre_key;           /* 0: the record's word and the FlowID go here */
} __rte_packed;

_Static_assert(sizeof(struct nvgw_outer) == 2 + 20 + 8, "nvgw_outer: type, IPv4, GRE");

/* A record as the writer gives it (nvgw_rtab_set); its key is the routing
 * domain and the CA (nvgw_rec_key: domain 1..65535, so 48 bits). */
struct nvgw_record {
	uint32_t pa;                /* its PA: the outer destination */
	struct rte_ether_addr mac;  /* CA MAC */
	uint16_t nh;                /* fabric next hop for the PA: its neighbour's index */
	uint16_t vsid_idx;          /* < 16384 */
	uint8_t method;             /* NVGW_ENCAP or NVGW_REWRITE */
};

/* A line: three key words, then the three records' other fields. A key
 * word is the key in its low 48 bits and the record's meta (VSID slot,
 * method << 14) in the top 16, so that one load both matches the key and
 * gives what most of the data path asks first. Markers have domain 0:
 * EMPTY is 0 (a zeroed table is empty), DEAD keeps the meta of the record
 * it ends (a reader that matched it still reads it), FREE is 2. */
struct nvgw_rpay {
	uint32_t pa;
	uint8_t mac[6];
	uint16_t nh;
};

struct nvgw_rline {
	uint64_t kw[3];
	struct nvgw_rpay r[3];
	uint32_t pad;               /* 8 bytes readable from the last MAC */
} __rte_aligned(64);

_Static_assert(sizeof(struct nvgw_rline) == 64, "nvgw_rline: one cache line");

#define NVGW_RT_EMPTY       0ULL
#define NVGW_RT_DEAD        1ULL
#define NVGW_RT_FREE        2ULL
#define NVGW_RT_KEY_MASK    0xFFFFFFFFFFFFULL
#define NVGW_RT_KEY(w)      ((w) & NVGW_RT_KEY_MASK)
#define NVGW_RT_META(vsid_idx, method) ((uint64_t)((vsid_idx) | (method) << 14) << 48)

/* What a lookup finds: the slot's key word, from which its record's other
 * fields sit at a fixed distance in the line (key word j at 8j, its
 * fields at 24 + 12j). */
struct nvgw_rec {
	uint64_t kw;
};

static inline const struct nvgw_rpay *
nvgw_rec_pay(const struct nvgw_rec *r)
{
	uintptr_t a = (uintptr_t)r;

	return (const struct nvgw_rpay *)(a + 24 + ((a & 63) >> 1));
}

static inline uint16_t
nvgw_rec_vsid_idx(const struct nvgw_rec *r)
{
	return (uint16_t)(r->kw >> 48) & 0x3FFF;
}

static inline uint8_t
nvgw_rec_method(const struct nvgw_rec *r)
{
	return (uint8_t)(r->kw >> 62);
}

static inline uint32_t
nvgw_rec_pa(const struct nvgw_rec *r)
{
	return nvgw_rec_pay(r)->pa;
}

/* Anti-spoofing: does the CA of record r (NULL: none) live at pa, in the
 * VSID of counter slot idx? */
static inline int
nvgw_rec_lives_at(const struct nvgw_rec *r, uint32_t pa, uint16_t idx)
{
	return r != NULL && nvgw_rec_pa(r) == pa && nvgw_rec_vsid_idx(r) == idx;
}

/* Its MAC, as 6 bytes (8 readable: the next fields, or the line's pad). */
static inline const uint8_t *
nvgw_rec_mac(const struct nvgw_rec *r)
{
	return nvgw_rec_pay(r)->mac;
}

struct nvgw_rtab {
	struct nvgw_rline *l;
	uint32_t n_slots;           /* 3 x lines; slot i is line i / 3, key word i % 3 */
	uint32_t shift;             /* 64 - log2(lines) */
	uint32_t max_probe;         /* slots past its home one any key sits in */
	uint32_t n, max;            /* live keys; the most allowed */
	uint32_t *dead;             /* slots deleted or replaced since the last grace period */
	uint32_t n_dead, max_dead;
};

/* Lines for `max` keys: a power of two, at least 2 and max / 2 (at most two
 * thirds of the slots live; simulated, with a million keys in 2^19 lines,
 * 11.6% of the keys sit past their home line). */
static inline uint32_t
nvgw_rtab_lines(uint32_t max)
{
	uint64_t n = 2;

	while (2 * n < max)
		n <<= 1;
	return (uint32_t)n;
}

/* A key's home line: CRC-32C of the key (one instruction, as htab.h's),
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
nvgw_rtab_line(const struct nvgw_rtab *h, uint64_t key)
{
	return (uint32_t)((nvgw_rtab_mix(key) * 0x9E3779B97F4A7C15ULL) >> h->shift);
}

/* The home slot: the home line's first. */
static inline uint32_t
nvgw_rtab_index(const struct nvgw_rtab *h, uint64_t key)
{
	return 3 * nvgw_rtab_line(h, key);
}

static inline const uint64_t *
nvgw_rtab_kw(const struct nvgw_rtab *h, uint32_t i)
{
	return &h->l[i / 3].kw[i % 3];
}

/* The slot after i, past the last one the first. */
static inline uint32_t
nvgw_rtab_next(const struct nvgw_rtab *h, uint32_t i)
{
	return i + 1 == h->n_slots ? 0 : i + 1;
}

/* Whether a lookup's fetch takes the line after the home line too (with
 * 64-byte slots, 8% of the benchmark's million keys sat in the next one, 4%
 * one further). Measured with 64-byte slots (not again since), the
 * million-record rows with and without it, alternated: on AMD Zen
 * (sessions 8 and 10) decap and hairpin were slower without it, encap
 * even; on an Intel Xeon (session 20) without it the rows ran 3-14% faster
 * in 11 of 12 pairs (one even): the second line is traffic that most
 * lookups do not need. Other CPUs: not measured; the home line alone.
 * Chosen by the build's target (-march, NVGW_MARCH), or set with
 * -DNVGW_RTAB_FETCH_NEXT=0/1. */
#ifndef NVGW_RTAB_FETCH_NEXT
#if defined(__znver1__) || defined(__znver2__) || defined(__znver3__) || \
    defined(__znver4__) || defined(__znver5__)
#define NVGW_RTAB_FETCH_NEXT 1
#else
#define NVGW_RTAB_FETCH_NEXT 0
#endif
#endif

/* The home line, its fetch (and the next line's, see above) started;
 * later nvgw_rtab_probe() from it. */
static inline const struct nvgw_rline *
nvgw_rtab_fetch(const struct nvgw_rtab *h, uint64_t key)
{
	const struct nvgw_rline *l = &h->l[nvgw_rtab_line(h, key)];

	rte_prefetch0(l);
	if (NVGW_RTAB_FETCH_NEXT)       /* past the table's end: a prefetch never faults */
		rte_prefetch0(l + 1);
	return l;
}

static inline const struct nvgw_rec *
nvgw_rtab_probe_once(const struct nvgw_rtab *h, uint32_t i, uint64_t key, int *dead)
{
	uint32_t left = __atomic_load_n(&h->max_probe, __ATOMIC_ACQUIRE);

	for (;;) {
		const uint64_t *p = nvgw_rtab_kw(h, i);
		uint64_t k = __atomic_load_n(p, __ATOMIC_ACQUIRE);

		if (NVGW_RT_KEY(k) == key)
			return (const struct nvgw_rec *)p;
		if (k == NVGW_RT_EMPTY)
			return NULL;
		*dead |= NVGW_RT_KEY(k) == NVGW_RT_DEAD;
		if (left-- == 0)
			return NULL;
		i = nvgw_rtab_next(h, i);
	}
}

/* Which of line l's key words hold key (bit j for word j). With AVX2 the
 * three in one aligned vector load and compare: x86 reads each aligned
 * 8-byte word of it whole, and loads in order (the record's fields after
 * its key word), as the scalar loads do. Loading the matched word again
 * on its own, to lean on nothing but C's atomics, cost hairpin 1k a tenth
 * (session 23). */
static inline uint32_t
nvgw_rtab_match(const struct nvgw_rline *l, uint64_t key)
{
#ifdef __AVX2__
	__m256i v = _mm256_load_si256((const __m256i *)l);      /* the key words, and 8 bytes more */
	__m256i mask = _mm256_set1_epi64x((long long)NVGW_RT_KEY_MASK);
	__m256i e = _mm256_cmpeq_epi64(_mm256_and_si256(v, mask), _mm256_set1_epi64x((long long)key));

	return (uint32_t)_mm256_movemask_pd(_mm256_castsi256_pd(e)) & 7;
#else
	uint64_t k0 = __atomic_load_n(&l->kw[0], __ATOMIC_ACQUIRE);
	uint64_t k1 = __atomic_load_n(&l->kw[1], __ATOMIC_ACQUIRE);
	uint64_t k2 = __atomic_load_n(&l->kw[2], __ATOMIC_ACQUIRE);

	return (NVGW_RT_KEY(k0) == key) | (NVGW_RT_KEY(k1) == key) << 1 |
	       (NVGW_RT_KEY(k2) == key) << 2;
#endif
}

/* key's record, looked up from its home line l, or NULL. A replace
 * publishes the new version in the first free slot from home, then kills
 * the old one: a reader that had passed that slot before finds only a dead
 * one. Having seen a dead slot on the way, a miss looks once more (the
 * dead mark, read with acquire, makes the new version and any raised probe
 * limit visible). Only a second replace of the same key during that second
 * look could still make it miss. */
static inline const struct nvgw_rec *
nvgw_rtab_probe(const struct nvgw_rtab *h, const struct nvgw_rline *l, uint64_t key)
{
	uint32_t m = nvgw_rtab_match(l, key), i;
	const struct nvgw_rec *r;
	int dead = 0;

	/* The usual: the key in its home line, found without a branch on
	 * which word holds it (that differs from key to key). */
	if (likely(m != 0))
		return (const struct nvgw_rec *)&l->kw[__builtin_ctz(m)];
	i = 3 * (uint32_t)(l - h->l);
	r = nvgw_rtab_probe_once(h, i, key, &dead);
	if (likely(r != NULL) || !dead)
		return r;
	return nvgw_rtab_probe_once(h, i, key, &dead);
}

static inline const struct nvgw_rec *
nvgw_rtab_lookup(const struct nvgw_rtab *h, uint64_t key)
{
	return nvgw_rtab_probe(h, &h->l[nvgw_rtab_line(h, key)], key);
}

/* The writer's side (cext/rtab.c). init: `l` holds nvgw_rtab_lines(max)
 * lines, `dead` max_dead slot numbers. */
void nvgw_rtab_init(struct nvgw_rtab *h, struct nvgw_rline *l, uint32_t max,
		    uint32_t *dead, uint32_t max_dead);
/* Add key with a copy of *rec, or replace its record (the new version in
 * another slot, the old one on the dead list): 0 added, 1 replaced;
 * -ENOSPC when `max` keys are live or no slot is free; -EBUSY when a
 * replace finds the dead list full (reclaim after a grace period first);
 * -EINVAL for a key of domain 0 or past 48 bits, a VSID slot past 16383 or
 * a method past 3. */
int nvgw_rtab_set(struct nvgw_rtab *h, uint64_t key, const struct nvgw_record *rec);
/* Delete key: 0, -ENOENT, or -EBUSY when the dead list is full. */
int nvgw_rtab_del(struct nvgw_rtab *h, uint64_t key);
/* After a grace period: dead slots become free (or empty, see rtab.c). */
void nvgw_rtab_reclaim(struct nvgw_rtab *h);

#endif
