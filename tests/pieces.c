/* The per-packet pieces of the data path, one at a time, for pytest-benchmark
 * (tests/bench_pieces.py builds this as a shared object and calls it with
 * ctypes). Each runs the gateway's own inline functions on plain memory (no
 * EAL, no mbufs), in bursts of 32 as the workers do, and returns the TSC
 * cycles it took, so that the Python around it does not count:
 *   - bulk lookup: the record table (cext/rtab.h; fetch a burst's lines, then
 *     probe them, as classify and emit_direct do) and the exact-match table of
 *     routes and neighbours (cext/htab.h, nvgw_htab_lookup_bulk);
 *   - header build: the 56 bytes of NVGRE in front of an inner packet with its
 *     FlowID and TTL (cext/frame.h nvgw_nvgre_header, as emit_nvgre calls it);
 *   - checksum update: IP rewrite of both addresses, IPv4 and TCP/UDP checksums
 *     updated incrementally (cext/pkt.h nvgw_rewrite).
 * The checks that the pieces compute the right thing are the tests'. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <rte_cycles.h>
#include <rte_ip.h>

#include "frame.h"
#include "rtab.h"
#include "tables.h"

#define BURST 32
#define HUGE (2u << 20)

/* A table's memory, zeroed, on 2 MB pages where the kernel gives them (THP
 * "always" or "madvise"), as the gateway's tables are on hugepages: with 4 KB
 * pages a million records' lookups would measure page walks too. */
static void *
table_alloc(size_t size)
{
	void *p = NULL;

	size = (size + HUGE - 1) / HUGE * HUGE;
	if (posix_memalign(&p, HUGE, size) != 0)
		return NULL;
	madvise(p, size, MADV_HUGEPAGE);
	memset(p, 0, size);
	return p;
}

static uint64_t
xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* The benchmark's records (scripts/bench_workloads.py): domains of `per` CAs,
 * 10.sub.x.y; record i of the table is CA i % per of domain 1 + i / per. */
static uint64_t
record_key(uint32_t i, uint32_t per)
{
	uint32_t j = i % per, k = j >> 1;
	uint32_t ca = 10u << 24 | (j & 1) << 16 | (k / 250) << 8 | (k % 250 + 2);

	return nvgw_rec_key(1 + i / per, rte_cpu_to_be_32(ca));
}

/* A table of either kind on `size` bytes of memory, its dead list, and the
 * keys to look up; piece_free() frees it. */
struct piece {
	union {
		struct nvgw_rtab r;
		struct nvgw_htab h;
	};
	void *mem;
	uint32_t *dead;
	uint64_t *keys;         /* the lookups, drawn uniformly over the keys stored */
	uint32_t n_keys;
};

void
piece_free(void *arg)
{
	struct piece *p = arg;

	if (p == NULL)
		return;
	free(p->mem);
	free(p->dead);
	free(p->keys);
	free(p);
}

static struct piece *
piece_alloc(size_t size, uint32_t lookups)
{
	struct piece *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->mem = table_alloc(size);
	p->dead = malloc(sizeof(*p->dead));
	p->keys = malloc((size_t)lookups * sizeof(*p->keys));
	p->n_keys = lookups;
	if (p->mem == NULL || p->dead == NULL || p->keys == NULL || lookups == 0) {
		piece_free(p);
		return NULL;
	}
	return p;
}

/* ---- the record table ---- */

/* A table sized as the gateway's (`capacity` records) holding `records`, and
 * `lookups` keys to look up; NULL when out of memory or a set fails. */
void *
piece_rtab_new(uint32_t capacity, uint32_t records, uint32_t per, uint32_t lookups,
	       uint64_t seed)
{
	struct nvgw_record rec = { .nh = 1, .method = NVGW_ENCAP };
	struct piece *p;
	uint32_t i;

	if (records == 0 ||
	    (p = piece_alloc((size_t)nvgw_rtab_lines(capacity) * sizeof(struct nvgw_rline),
			     lookups)) == NULL)
		return NULL;
	nvgw_rtab_init(&p->r, p->mem, capacity, p->dead, 1);
	for (i = 0; i < records; i++) {
		rec.pa = i;
		rec.vsid_idx = (uint16_t)(i % 16384);
		if (nvgw_rtab_set(&p->r, record_key(i, per), &rec) != 0) {
			piece_free(p);
			return NULL;
		}
	}
	for (i = 0; i < lookups; i++)
		p->keys[i] = record_key((uint32_t)(xorshift(&seed) % records), per);
	return p;
}

/* n lookups (the keys over and over), a burst's lines fetched before any is
 * probed. Returns the hits; *cycles the TSC cycles taken. *pa_sum adds the
 * records' PAs, so the compiler cannot leave the probes out. */
uint64_t
piece_rtab_lookup(void *arg, uint32_t n, uint64_t *cycles, uint64_t *pa_sum)
{
	struct piece *p = arg;
	const struct nvgw_rline *kb[BURST];
	uint64_t hits = 0, sum = 0, t0 = rte_rdtsc();
	uint32_t at = 0, done, k, b;

	for (done = 0; done < n; done += b) {
		b = RTE_MIN((uint32_t)BURST, n - done);
		for (k = 0; k < b; k++)
			kb[k] = nvgw_rtab_fetch(&p->r, p->keys[(at + k) % p->n_keys]);
		for (k = 0; k < b; k++) {
			const struct nvgw_rec *r = nvgw_rtab_probe(&p->r, kb[k],
								   p->keys[(at + k) % p->n_keys]);

			if (r != NULL) {
				hits++;
				sum += nvgw_rec_pa(r);
			}
		}
		at = (at + b) % p->n_keys;
	}
	*cycles = rte_rdtsc() - t0;
	*pa_sum = sum;
	return hits;
}

/* ---- the exact-match table (routes, neighbours, rewrite PAs) ---- */

/* A table for `capacity` keys holding `keys` of them (key i: i + 1, value
 * i), and `lookups` keys drawn uniformly over them. */
void *
piece_htab_new(uint32_t capacity, uint32_t keys, uint32_t lookups, uint64_t seed)
{
	struct piece *p;
	uint64_t old;
	uint32_t i;

	if (keys == 0 ||
	    (p = piece_alloc((size_t)nvgw_htab_buckets(capacity) * sizeof(struct nvgw_hbucket),
			     lookups)) == NULL)
		return NULL;
	nvgw_htab_init(&p->h, p->mem, capacity, p->dead, 1);
	for (i = 0; i < keys; i++)
		if (nvgw_htab_set(&p->h, (uint64_t)i + 1, i, &old) != 0) {
			piece_free(p);
			return NULL;
		}
	for (i = 0; i < lookups; i++)
		p->keys[i] = xorshift(&seed) % keys + 1;
	return p;
}

/* n lookups, 32 to a bulk lookup. Returns the hits; *val_sum adds the values. */
uint64_t
piece_htab_lookup_bulk(void *arg, uint32_t n, uint64_t *cycles, uint64_t *val_sum)
{
	struct piece *p = arg;
	uint64_t keys[BURST], vals[BURST], hits = 0, sum = 0, t0 = rte_rdtsc(), m;
	uint32_t at = 0, done, k, b;

	for (done = 0; done < n; done += b) {
		b = RTE_MIN((uint32_t)BURST, n - done);
		for (k = 0; k < b; k++)
			keys[k] = p->keys[(at + k) % p->n_keys];
		m = nvgw_htab_lookup_bulk(&p->h, keys, b, vals);
		hits += (uint64_t)__builtin_popcountll(m);
		for (k = 0; k < b; k++)
			sum += m & (1ULL << k) ? vals[k] : 0;
		at = (at + b) % p->n_keys;
	}
	*cycles = rte_rdtsc() - t0;
	*val_sum = sum;
	return hits;
}

/* ---- header build ---- */

/* n NVGRE headers, each in front of one of BURST inner packets in turn
 * (`frames`: BURST slots of `stride` bytes, the inner IPv4 packet at
 * NVGW_NVGRE_LEN, ip_len bytes each): from provider PA src_pa to pa, VSID
 * vsid, the next hop's, our, the CA's and the subnet gateway's MACs; the
 * FlowID from the inner flow, the inner TTL decremented. As emit_nvgre. */
uint64_t
piece_nvgre_header(uint8_t *frames, uint32_t stride, uint32_t n, uint32_t src_pa,
		   uint32_t pa, uint32_t vsid, const uint8_t *nh_mac, const uint8_t *our_mac,
		   const uint8_t *ca_mac, const uint8_t *gw_mac)
{
	struct nvgw_outer tmpl;
	uint64_t nh = nvgw_mac_word(nh_mac) | NVGW_NEIGH_VALID, ours = nvgw_mac_word(our_mac);
	uint64_t ca = nvgw_mac_word(ca_mac), gw = nvgw_mac_word(gw_mac) | NVGW_VW_VALID;
	uint32_t gre = rte_cpu_to_be_32(vsid << 8), i;
	uint64_t start;

	nvgw_outer_init(&tmpl, src_pa);
	start = rte_rdtsc();
	for (i = 0; i < n; i++) {
		uint8_t *h = frames + (size_t)(i % BURST) * stride;
		struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(h + NVGW_NVGRE_LEN);
		uint16_t ip_len = rte_be_to_cpu_16(ip->total_length);
		unsigned int hl = (ip->version_ihl & 0xF) * 4;

		nvgw_nvgre_header(h, &tmpl, pa, gre, nh, ours, ca, gw, ip_len,
				  nvgw_flowid_key(ip, hl, ip_len));
		nvgw_ttl_dec(ip);
	}
	return rte_rdtsc() - start;
}

/* ---- checksum update ---- */

/* n rewrites of the BURST IPv4 packets at `packets` (stride bytes apart,
 * len[k] bytes each) in turn: in each pass over them, from (a, b) to (c, d)
 * when the pass is even, back when odd; so an even number of passes leaves
 * them as they were. */
uint64_t
piece_rewrite(uint8_t *packets, uint32_t stride, const uint16_t *len, uint32_t n,
	      uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
	uint64_t start = rte_rdtsc();
	uint32_t i;

	for (i = 0; i < n; i++) {
		struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(packets +
								(size_t)(i % BURST) * stride);
		unsigned int hl = (ip->version_ihl & 0xF) * 4;
		int back = (i / BURST) & 1;

		nvgw_rewrite(ip, hl, len[i % BURST], back ? a : c, back ? b : d);
	}
	return rte_rdtsc() - start;
}
