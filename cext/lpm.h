/* Route length filters: which prefix lengths a longest-prefix match needs to
 * look up. The routes themselves are exact-match hash entries per length;
 * the filters only skip lengths. Plain memory, no EAL: the fuzzers drive
 * them beside a brute-force model. */
#ifndef NVGW_LPM_H
#define NVGW_LPM_H

#include <stdint.h>
#include <rte_byteorder.h>

#include "byteorder.h"

/* Bits per filter: one for each (domain, /16 block) and (domain, /24 block)
 * hash; a set bit says routes longer than /16 (/24) may exist there. */
#define NVGW_BLK_BITS (1u << 20)
#define NVGW_LENS_ALL ((1ULL << 33) - 1)
#define NVGW_LENS_OVER(n) (NVGW_LENS_ALL & ~((1ULL << ((n) + 1)) - 1))

/* Filter bit of a route's (rdid, network-order address) block of `shift`
 * host bits (16: the /16 block, 8: the /24 block). */
static inline uint32_t
nvgw_blk(uint32_t rdid, uint32_t addr, unsigned int shift)
{
	uint32_t h = rdid * 0x9E3779B1u ^ (nvgw_be32(addr) >> shift) * 0x85EBCA77u;

	return (h ^ h >> 15) & (NVGW_BLK_BITS - 1);
}

static inline int
nvgw_blk_test(const uint64_t *bits, uint32_t b)
{
	return (__atomic_load_n(&bits[b >> 6], __ATOMIC_ACQUIRE) >> (b & 63)) & 1;
}

static inline void
nvgw_blk_bit(uint64_t *bits, uint32_t *n, uint32_t b, int delta)
{
	n[b] += delta;
	if (delta > 0 && n[b] == 1)
		__atomic_or_fetch(&bits[b >> 6], 1ULL << (b & 63), __ATOMIC_RELEASE);
	else if (delta < 0 && n[b] == 0)
		__atomic_and_fetch(&bits[b >> 6], ~(1ULL << (b & 63)), __ATOMIC_RELEASE);
}

/* A route (rdid, prefix/len) added (delta 1) or removed (-1): the writer
 * keeps a count per bit, so a bit clears with the last route it stands for. */
static inline void
nvgw_blk_count(uint64_t *b16, uint32_t *n16, uint64_t *b24, uint32_t *n24,
	       uint32_t rdid, uint32_t prefix, uint8_t len, int delta)
{
	if (len > 16)
		nvgw_blk_bit(b16, n16, nvgw_blk(rdid, prefix, 16), delta);
	if (len > 24)
		nvgw_blk_bit(b24, n24, nvgw_blk(rdid, prefix, 8), delta);
}

/* The prefix lengths (bit L: /L) to look dst up at in domain rdid, whose
 * routes have the lengths `lens`: longer than /16 (/24) only where the
 * filter of dst's block says routes that long may exist. Bits above /32
 * of `lens` are flags, not lengths. */
static inline uint64_t
nvgw_route_lens(uint64_t lens, const uint64_t *b16, const uint64_t *b24, uint32_t rdid,
		uint32_t dst)
{
	lens &= NVGW_LENS_ALL;
	if ((lens & NVGW_LENS_OVER(16)) && !nvgw_blk_test(b16, nvgw_blk(rdid, dst, 16)))
		return lens & ~NVGW_LENS_OVER(16);
	if ((lens & NVGW_LENS_OVER(24)) && !nvgw_blk_test(b24, nvgw_blk(rdid, dst, 8)))
		return lens & ~NVGW_LENS_OVER(24);
	return lens;
}

#endif
