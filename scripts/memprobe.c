/* What one random line a packet costs on this machine, without the gateway.
 *
 * Per "packet": a stream like net_pcap's copies from its preloaded mbufs
 * (two lines, a 2,304-byte stride over 150 MB; stream 0 leaves it out),
 * `work` units of register work, and one read of a random slot among
 * `records` distinct 64-byte lines of a table of `table_mb` MB, prefetched
 * `ahead` packets before (records 0: no table). Prints TSC cycles a packet.
 * Run it with and without the table, and at two table sizes, to see what a
 * lookup's line costs here (README, "Where the cycles go", session 21):
 *
 *   gcc -O2 -o /tmp/memprobe scripts/memprobe.c
 *   /tmp/memprobe 0 128 40 32 1; /tmp/memprobe 1000000 128 40 32 1
 *   /tmp/memprobe 1000000 64 40 32 1
 *
 * With records = MB x 16,384 every line of the table is read: the cost by
 * working set (session 23: a step between 32 and 40 MB here).
 *
 * Hugepages (2 MB) where the system has them free, else plain pages. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <x86intrin.h>

#define STRIDE 2304
#define STREAM_PKTS 65536
#define PKTS (1u << 20)         /* a pass; 10 passes timed after 2 */

static const char *pages = "hugepages";

static uint8_t *
region(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);

	if (p == MAP_FAILED) {
		pages = "plain pages";
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	if (p == MAP_FAILED) {
		perror("memprobe: mmap");
		exit(1);
	}
	memset(p, 1, len);
	return p;
}

static uint64_t
rnd(void)
{
	return (uint64_t)rand() << 31 ^ (uint64_t)rand();
}

int
main(int argc, char **argv)
{
	uint32_t records, lines, *slot, *pick, i, j, t;
	unsigned int work, ahead, stream;
	size_t sz = (size_t)STREAM_PKTS * STRIDE, so = 0;
	uint64_t sum = 0, t0 = 0;
	uint8_t *table = NULL, *src = NULL, buf[64] = { 0 };
	volatile uint64_t sink;
	int pass;

	if (argc != 6) {
		fprintf(stderr, "usage: memprobe RECORDS TABLE_MB WORK AHEAD STREAM(0/1)\n");
		return 2;
	}
	records = strtoul(argv[1], NULL, 0);
	lines = (uint32_t)(strtoull(argv[2], NULL, 0) << 20 >> 6);
	work = strtoul(argv[3], NULL, 0);
	ahead = strtoul(argv[4], NULL, 0);
	stream = strtoul(argv[5], NULL, 0);
	if (records > lines || ahead > 4096) {
		fprintf(stderr, "memprobe: at most one record a line, AHEAD <= 4096\n");
		return 2;
	}
	srand(1);
	pick = malloc((PKTS + 4096) * sizeof(*pick));
	if (pick == NULL)
		return 1;
	if (records) {
		/* distinct lines: the first `records` of a shuffle of all */
		slot = malloc((size_t)lines * sizeof(*slot));
		if (slot == NULL)
			return 1;
		for (i = 0; i < lines; i++)
			slot[i] = i;
		for (i = lines - 1; i > 0; i--) {
			j = rnd() % (i + 1);
			t = slot[i], slot[i] = slot[j], slot[j] = t;
		}
		for (i = 0; i < PKTS + 4096; i++)
			pick[i] = slot[rnd() % records];
		free(slot);
		table = region((size_t)lines * 64);
	}
	if (stream)
		src = region(sz);
	for (pass = 0; pass < 12; pass++) {
		if (pass == 2)
			t0 = __rdtsc();
		for (i = 0; i < PKTS; i++) {
			if (src != NULL) {
				memcpy(buf, src + so + 128, sizeof(buf));
				sum += *(volatile uint64_t *)(src + so);
				so = so + STRIDE < sz ? so + STRIDE : 0;
			}
			if (table != NULL)
				_mm_prefetch((const char *)table + (size_t)pick[i + ahead] * 64,
					     _MM_HINT_T0);
			for (j = 0; j < work; j++) {
				__asm__ volatile("" ::: "memory");
				sum += j ^ buf[j & 63];
			}
			if (table != NULL)
				sum += *(volatile uint64_t *)(table + (size_t)pick[i] * 64);
		}
	}
	sink = sum;                     /* the work is not optimized away */
	(void)sink;
	printf("records %u table %u MB work %u ahead %u stream %u (%s): %.1f cycles a packet\n",
	       records, lines >> 14, work, ahead, stream, pages,
	       (double)(__rdtsc() - t0) / (10.0 * PKTS));
	return 0;
}
