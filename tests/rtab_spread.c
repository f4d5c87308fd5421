/* How far the record table's keys sit from their home line, for the key
 * shapes a policy has: the benchmark's (1,000 domains of 1,000 CAs), a few
 * large domains, one domain filling a /8, random keys. Each shape's million
 * keys go into a table sized for them (as the gateway's: 2^19 lines of
 * three); it prints, per shape, the share of keys past their home line (a
 * second line to read), the mean distance from the home line's first slot
 * and the probe limit, and exits 1 when a shape strays from what random
 * keys give (12%, 1.3 slots); first, which mixer the build has
 * (nvgw_rtab_mix).
 * tests/test_rtab_spread.py builds and runs it. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

#include "rtab.h"
#include "tables.h"

#define N 1000000u

/* CA j of a domain: 10.sub.x.y, as bench_workloads.ca() numbers them. */
static uint32_t
bench_ca(uint32_t i)
{
	uint32_t j = i >> 1;

	return htonl(10u << 24 | (i & 1) << 16 | (j / 250) << 8 | (j % 250 + 2));
}

static uint64_t
key_of(int shape, uint32_t i, uint64_t *rnd)
{
	switch (shape) {
	case 0:         /* 1,000 domains of 1,000 */
		return nvgw_rec_key(1 + i / 1000, bench_ca(i % 1000));
	case 1:         /* 20 domains of 50,000 */
		return nvgw_rec_key(1 + i / 50000, bench_ca(i % 50000));
	case 2:         /* one domain, 10.0.0.1 on */
		return nvgw_rec_key(7, htonl((10u << 24) + 1 + i));
	default:        /* random domain and address (xorshift64) */
		*rnd ^= *rnd << 13;
		*rnd ^= *rnd >> 7;
		*rnd ^= *rnd << 17;
		return nvgw_rec_key(1 + (uint32_t)(*rnd >> 48) % 65535, (uint32_t)*rnd);
	}
}

int
main(void)
{
	static const char *const names[] = { "1000x1000", "20x50000", "one/8", "random" };
	uint32_t lines = nvgw_rtab_lines(N), *dead = malloc(sizeof(*dead));
	struct nvgw_rline *l = aligned_alloc(64, (size_t)lines * sizeof(*l));
	struct nvgw_record rec = { 0 };
	int shape, bad = 0;

	if (l == NULL || dead == NULL)
		return 2;
#ifdef __SSE4_2__
	printf("mixer: crc32c\n");
#else
	printf("mixer: multiply\n");
#endif
	for (shape = 0; shape < 4; shape++) {
		struct nvgw_rtab h;
		uint64_t rnd = 88172645463325252ULL, far = 0, dist = 0;
		uint32_t i;

		nvgw_rtab_init(&h, l, N, dead, 1);
		for (i = 0; i < N; i++)
			if (nvgw_rtab_set(&h, key_of(shape, i, &rnd), &rec) != 0)
				return fprintf(stderr, "%s: key %u not added\n", names[shape], i), 2;
		rnd = 88172645463325252ULL;
		for (i = 0; i < N; i++) {
			uint64_t key = key_of(shape, i, &rnd);
			const struct nvgw_rec *r = nvgw_rtab_lookup(&h, key);
			uint32_t home = nvgw_rtab_index(&h, key), at;

			if (r == NULL)
				return fprintf(stderr, "%s: key %u not found\n", names[shape], i), 2;
			at = 3 * (uint32_t)(((uintptr_t)r - (uintptr_t)l) / 64) +
			     (uint32_t)((uintptr_t)r & 63) / 8;
			dist += (at + h.n_slots - home) % h.n_slots;
			far += at / 3 != home / 3;
		}
		printf("%s: past home line %.3f, mean distance %.2f slots, probe limit %u\n",
		       names[shape], (double)far / N, (double)dist / N, h.max_probe);
		bad |= far > N / 5 || dist > 2 * N;
	}
	free(l);
	free(dead);
	return bad;
}
