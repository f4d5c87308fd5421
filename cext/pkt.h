/* Header helpers shared by the NVGRE pipeline and the exception thread. */
#ifndef NVGW_PKT_H
#define NVGW_PKT_H

#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <nmmintrin.h>

#include "byteorder.h"

/* Packet fields at any address (DPDK's unaligned_* types are plain on x86,
 * which the compiler may still assume aligned). */
typedef uint16_t nvgw_u16 __attribute__((aligned(1)));
typedef uint32_t nvgw_u32 __attribute__((aligned(1)));

/* The eight bytes at p, at any address, in one load. Where a MAC is
 * followed by at least two more bytes of the same object, its word (the
 * top 16 bits are not the MAC's: compare with nvgw_mac_differ, or let
 * nvgw_macs_write drop them). */
static inline uint64_t
nvgw_load64(const void *p)
{
	uint64_t w;

	memcpy(&w, p, 8);
	return w;
}

#define NVGW_ETH_LEN      14
#define NVGW_VLAN_ETH_LEN 18                    /* Ethernet + 802.1Q */
#define NVGW_NVGRE_LEN    (14 + 20 + 8 + 14)    /* outer Eth, IPv4, GRE, inner Eth */
#define NVGW_GRE_LEN      8

static inline int
nvgw_vsid_reserved(uint32_t vsid)
{
	return vsid < 0x1000 || vsid == 0xFFFFFF;
}

/* A sane IPv4 header at ip with `avail` bytes from it: returns its length
 * (ihl * 4) or 0. */
static inline unsigned int
nvgw_ipv4_ok(const struct rte_ipv4_hdr *ip, uint32_t avail)
{
	unsigned int hl = 20;
	uint16_t tot;

	if (avail < sizeof(*ip))
		return 0;       /* read nothing: avail may be 0 at the frame's end */
	tot = nvgw_be16(ip->total_length);
	if (unlikely(ip->version_ihl != 0x45)) {        /* options, or not IPv4 */
		hl = (ip->version_ihl & 0x0f) * 4;
		if ((ip->version_ihl >> 4) != 4 || hl < 20 || hl > avail)
			return 0;
	}
	return (uint32_t)(tot - hl) <= avail - hl ? hl : 0;    /* hl <= tot <= avail */
}

/* Non-zero for a fragment other than the first (no L4 header). */
static inline uint16_t
nvgw_frag_offset(const struct rte_ipv4_hdr *ip)
{
	return ip->fragment_offset & nvgw_be16(RTE_IPV4_HDR_OFFSET_MASK);
}

/* Non-zero for any fragment, the first included (MF set or an offset). */
static inline uint16_t
nvgw_ipv4_fragment(const struct rte_ipv4_hdr *ip)
{
	return ip->fragment_offset & nvgw_be16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK);
}

/* TTL - 1 with the checksum updated incrementally: RFC 1624 eqn. 3,
 * HC' = ~(~HC + ~m + m'), where ~m + m' = ~0x0100 for the TTL/protocol word
 * (eqn. 2, HC + 0x0100, gives 0xFFFF where the checksum is 0x0000). On the
 * checksum as this little-endian CPU loads it, eqn. 3 comes to HC + 1 that
 * skips 0xFFFF: +1, and +1 more from 0xFFFE on (the same for every HC),
 * i.e. HC + 2 - (HC < 0xFFFE). On x86 that is a compare, whose borrow is
 * (HC < 0xFFFE), and a subtract-with-borrow of -2, both on the header in
 * memory; GCC makes a setcc, an add of it, a load and a store. */
#if RTE_BYTE_ORDER != RTE_LITTLE_ENDIAN
#error "nvgw_ttl_dec (pkt.h) assumes a little-endian CPU"
#endif
static inline void
nvgw_ttl_dec(struct rte_ipv4_hdr *ip)
{
	ip->time_to_live--;
#if defined(RTE_ARCH_X86)
	__asm__("cmpw $0xfffe, %0\n\tsbbw $-2, %0" : "+m"(ip->hdr_checksum) : : "cc");
#else
	ip->hdr_checksum += 1 + (ip->hdr_checksum >= 0xFFFE);
#endif
}

/* The one's complement sum of two 32-bit words, folded to 16 bits
 * (end-around carries commute, so adding 32-bit words gives the same sum
 * as adding their 16-bit halves). */
static inline uint16_t
nvgw_csum_add_fold(uint32_t x, uint32_t y)
{
	x += y;
	x += x < y;                     /* the end-around carry (adc) */
	/* x's halves added in the top half, with the low half's carry */
	return (uint16_t)((x + (x << 16 | x >> 16)) >> 16);
}

/* One's complement sums in a 64-bit accumulator, folded to 16 bits at the
 * end. */
static inline uint16_t
nvgw_csum_fold(uint64_t s)
{
	return nvgw_csum_add_fold((uint32_t)s, (uint32_t)(s >> 32));
}

/* What a 32-bit field changing from `from` to `to` adds to a checksum
 * (RFC 1624 eqn. 3: ~m + m'); such differences add up. Fields as stored in
 * the packet: the sum does not depend on byte order as long as it is the
 * same. A 16-bit field: nvgw_csum_diff16. */
static inline uint64_t
nvgw_csum_diff(uint32_t from, uint32_t to)
{
	return (uint64_t)(uint32_t)~from + to;
}

static inline uint64_t
nvgw_csum_diff16(uint16_t from, uint16_t to)
{
	return (uint64_t)(uint16_t)~from + to;
}

/* HC' = ~(~HC + diff). */
static inline uint16_t
nvgw_csum_adjust(uint16_t csum, uint64_t diff)
{
	return (uint16_t)~nvgw_csum_fold((uint16_t)~csum + diff);
}

/* One's complement addition of 64-bit words (the carry out comes back in). */
static inline uint64_t
nvgw_add_wrap(uint64_t s, uint64_t x)
{
	s += x;
	return s + (s < x);
}

/* An IPv4 header of hl bytes (a multiple of 4, at least 20) sums to 0xFFFF.
 * Without folding: 2^16 = 1 (mod 0xFFFF), and so is 2^64, so the one's
 * complement sum of its 64-bit words (two of them and a 32-bit one for the
 * usual header) is its 16-bit words' sum modulo 0xFFFF, and that sum is
 * 0xFFFF when it is 0 modulo 0xFFFF and not 0 (an end-around carry never
 * makes 0 of words not all 0, nor does a fold). The compiler tests
 * divisibility by a constant with one multiply. */
static inline int
nvgw_ipv4_cksum_ok(const struct rte_ipv4_hdr *ip, unsigned int hl)
{
	const nvgw_u32 *w = (const nvgw_u32 *)ip;
	uint64_t s = nvgw_add_wrap(nvgw_add_wrap(nvgw_load64(ip),
						  nvgw_load64((const uint8_t *)ip + 8)), w[4]);
	unsigned int i;

	if (unlikely(hl > 20))
		for (i = 5; i < hl / 4; i++)
			s = nvgw_add_wrap(s, w[i]);
	return s % 0xFFFF == 0 && s != 0;
}

/* MACs as words: the six bytes in memory order in the low 48 bits, as
 * neighbours and VSID words keep them. */
#if RTE_BYTE_ORDER != RTE_LITTLE_ENDIAN
#error "MAC words (pkt.h) assume a little-endian CPU"
#endif

/* Non-zero when two MAC words' MACs differ: their low 48 bits, compared by
 * shifting the rest out (a shift sets the flags; a mask is a 64-bit
 * constant to load first). */
static inline uint64_t
nvgw_mac_differ(uint64_t a, uint64_t b)
{
	return (a ^ b) << 16;
}

static inline uint64_t
nvgw_mac_word(const void *mac)
{
	uint64_t w = 0;

	memcpy(&w, mac, 6);
	return w;
}

/* The destination and source MACs at h from their words, in two stores,
 * the second over the first's top two bytes: no masking. Bytes 12-13 then
 * hold the source word's top two bytes, for the caller to write over. */
static inline void
nvgw_macs_write(void *h, uint64_t dst, uint64_t src)
{
	memcpy(h, &dst, 8);
	memcpy((uint8_t *)h + 6, &src, 8);
}

/* An Ethernet header (dst, src, type in network order) from MAC words in
 * three stores: nothing written past the header's 14 bytes. */
static inline void
nvgw_eth_write(void *h, uint64_t dst, uint64_t src, uint16_t type)
{
	nvgw_macs_write(h, dst, src);
	memcpy((uint8_t *)h + 12, &type, 2);
}

/* An 802.1Q header's last eight bytes (10-17: the source MAC's last two,
 * the 802.1Q type, the tag, the inner type) as a word, for a source MAC
 * word and VLAN that are fixed per link: kept with the link, the header
 * takes three stores and no byte swaps (nvgw_vlan_eth_write). */
static inline uint64_t
nvgw_vlan_tag_word(uint64_t src, uint16_t vlan, uint16_t type)
{
	uint8_t b[8] = {
		(uint8_t)(src >> 32), (uint8_t)(src >> 40),
		RTE_ETHER_TYPE_VLAN >> 8, RTE_ETHER_TYPE_VLAN & 0xFF,
		(uint8_t)(vlan >> 8), (uint8_t)vlan, (uint8_t)(type >> 8), (uint8_t)type,
	};

	return nvgw_load64(b);
}

/* The 18-byte 802.1Q header: dst, then src and the rest as the link's
 * words (nvgw_vlan_tag_word), each store over the previous one's top
 * bytes; nothing written past the header. */
static inline void
nvgw_vlan_eth_write(void *h, uint64_t dst, uint64_t src, uint64_t tag)
{
	nvgw_macs_write(h, dst, src);
	memcpy((uint8_t *)h + 10, &tag, 8);
}

/* FlowID: an 8-bit mix of the inner flow, stable per flow. Ports count
 * only for unfragmented TCP/UDP, so every fragment of a flow agrees.
 * CRC-32C (one instruction per word, as the exact-match table's hash) of
 * the addresses and ports as on the wire, seeded with the protocol: the
 * top byte of a CRC spreads any one field's values evenly. The software
 * RSS (dist.h) hashes the same bytes the same way, so with several workers
 * each emits its own range of FlowIDs: harmless, as they share the port.
 * The same function is written out in the README for peers and tests. */
static inline uint32_t
nvgw_flow_crc(const struct rte_ipv4_hdr *ip, unsigned int hl, uint32_t avail)
{
	/* fragment bits and protocol in one word (bytes 6-9, TTL masked) */
	uint32_t fp = *(const nvgw_u32 *)((const uint8_t *)ip + 6) &
		      (0xFF000000 | nvgw_be16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK));
	uint32_t ports = 0;
	uint64_t h;

	if ((fp == (uint32_t)IPPROTO_TCP << 24 || fp == (uint32_t)IPPROTO_UDP << 24) &&
	    avail >= hl + 4)
		ports = *(const nvgw_u32 *)((const uint8_t *)ip + hl);
	h = _mm_crc32_u64(ip->next_proto_id, nvgw_load64(&ip->src_addr));
	return _mm_crc32_u32((uint32_t)h, ports);
}

static inline uint8_t
nvgw_flowid(const struct rte_ipv4_hdr *ip, unsigned int hl, uint32_t avail)
{
	return nvgw_flow_crc(ip, hl, avail) >> 24;
}

/* The FlowID where a GRE key word has it, nvgw_be32(nvgw_flowid()): on
 * this little-endian CPU (as the TTL and MAC word helpers above require)
 * the CRC's top byte is already in place. */
static inline uint32_t
nvgw_flowid_key(const struct rte_ipv4_hdr *ip, unsigned int hl, uint32_t avail)
{
	return nvgw_flow_crc(ip, hl, avail) & 0xFF000000;
}

/* nvgw_csum_adjust for a difference already folded to 16 bits: the sum of
 * two 16-bit words has one carry at most, added back once. Folding first
 * gives the same checksum (both folds keep 0 only for 0), and lets one fold
 * serve every checksum that covers the same fields. */
static inline uint16_t
nvgw_csum_adjust16(uint16_t csum, uint16_t diff)
{
	uint32_t s = (uint32_t)(uint16_t)~csum + diff;

	return (uint16_t)~(s + (s >> 16));
}

/* The TCP or UDP checksum of the header at l4 (len bytes present) after
 * its pseudo-header's addresses changed by diff (folded). Returns 1 and the
 * old and new checksum words when it changed (an ICMP checksum covering
 * this header follows them). A UDP checksum of 0 (none) stays 0, and none
 * becomes 0. */
static inline int
nvgw_l4_rewrite(uint8_t proto, uint8_t *l4, uint32_t len, uint16_t diff, uint16_t *old,
		uint16_t *new)
{
	nvgw_u16 *csum;   /* quoted headers need not be aligned */

	if (proto == IPPROTO_UDP && len >= 8 && ((nvgw_u16 *)l4)[3] != 0)
		csum = (nvgw_u16 *)l4 + 3;                 /* dgram_cksum */
	else if (proto == IPPROTO_TCP && len >= 18)
		csum = (nvgw_u16 *)l4 + 8;                 /* cksum */
	else
		return 0;
	*old = *csum;
	*new = nvgw_csum_adjust16(*old, diff);
	if (proto == IPPROTO_UDP && *new == 0)
		*new = 0xFFFF;
	*csum = *new;
	return 1;
}

/* ICMP errors (rewrite.c): the quoted packet's addresses mirror the outer
 * rewrite from os/od to ns/nd, with its checksums and the ICMP checksum. */
void nvgw_rewrite_icmp(uint8_t *l4, uint32_t len, uint32_t os, uint32_t od, uint32_t ns,
		       uint32_t nd);

/* IP rewrite of src/dst in place, every checksum updated incrementally
 * (never recomputed, so a wrong one stays exactly as wrong):
 * the IPv4 header; the TCP/UDP pseudo-header (non-first fragments have no
 * L4 header); ICMP errors quote the packet that caused them, whose
 * addresses mirror the outer ones and are rewritten too, with the quoted
 * checksums and the ICMP checksum. One fold of the addresses' difference
 * serves the IPv4 and the TCP/UDP checksum. len: the bytes from the L4
 * header on, all in the frame. */
static inline void
nvgw_rewrite_len(struct rte_ipv4_hdr *ip, unsigned int hl, uint32_t len, uint32_t src,
		 uint32_t dst)
{
	uint32_t os = ip->src_addr, od = ip->dst_addr;
	uint16_t diff = nvgw_csum_fold(nvgw_csum_diff(os, src) + nvgw_csum_diff(od, dst));
	uint16_t old, new;

	ip->hdr_checksum = nvgw_csum_adjust16(ip->hdr_checksum, diff);
	ip->src_addr = src;
	ip->dst_addr = dst;
	if (nvgw_frag_offset(ip))
		return;
	if (unlikely(ip->next_proto_id == IPPROTO_ICMP))
		nvgw_rewrite_icmp((uint8_t *)ip + hl, len, os, od, src, dst);
	else
		nvgw_l4_rewrite(ip->next_proto_id, (uint8_t *)ip + hl, len, diff, &old, &new);
}

/* The same for a packet of which avail bytes from ip are in the frame. */
static inline void
nvgw_rewrite(struct rte_ipv4_hdr *ip, unsigned int hl, uint32_t avail, uint32_t src,
	     uint32_t dst)
{
	nvgw_rewrite_len(ip, hl, RTE_MIN((uint32_t)nvgw_be16(ip->total_length), avail) - hl,
			 src, dst);
}

#endif
