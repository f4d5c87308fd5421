/* Header helpers shared by the NVGRE pipeline and the exception thread. */
#ifndef NVGW_PKT_H
#define NVGW_PKT_H

#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_ip.h>

/* Packet fields at any address (DPDK's unaligned_* types are plain on x86,
 * which the compiler may still assume aligned). */
typedef uint16_t nvgw_u16 __attribute__((aligned(1)));
typedef uint32_t nvgw_u32 __attribute__((aligned(1)));

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
	unsigned int hl;

	if (avail < sizeof(*ip))
		return 0;       /* read nothing: avail may be 0 at the frame's end */
	hl = (ip->version_ihl & 0x0f) * 4;
	if ((ip->version_ihl >> 4) != 4 || hl < 20 || hl > avail)
		return 0;
	uint16_t tot = rte_be_to_cpu_16(ip->total_length);
	return (tot >= hl && tot <= avail) ? hl : 0;
}

/* TTL - 1 with the checksum updated incrementally: RFC 1624 eqn. 3,
 * HC' = ~(~HC + ~m + m'), where ~m + m' = ~0x0100 for the TTL/protocol word
 * (eqn. 2, HC + 0x0100, gives 0xFFFF where the checksum is 0x0000). */
static inline void
nvgw_ttl_dec(struct rte_ipv4_hdr *ip)
{
	uint32_t sum = (uint16_t)~ip->hdr_checksum + rte_cpu_to_be_16(0xFEFF);

	ip->time_to_live--;
	sum = (sum & 0xFFFF) + (sum >> 16);
	ip->hdr_checksum = (uint16_t)~sum;
}

/* RFC 1624 incremental update of a one's complement checksum for a 16- or
 * 32-bit field changing from `from` to `to` (all as stored in the packet:
 * the sum does not depend on byte order as long as it is the same). */
static inline uint16_t
nvgw_csum_replace(uint16_t csum, uint32_t from, uint32_t to)
{
	uint32_t s = (uint16_t)~csum;

	s += (uint16_t)~(uint16_t)from + (uint16_t)~(uint16_t)(from >> 16);
	s += (uint16_t)to + (uint16_t)(to >> 16);
	s = (s & 0xFFFF) + (s >> 16);
	s = (s & 0xFFFF) + (s >> 16);
	return (uint16_t)~s;
}

static inline void
nvgw_mac_from_word(struct rte_ether_addr *dst, uint64_t word)
{
	memcpy(dst, &word, 6);
}

/* FlowID: an 8-bit mix of the inner flow, stable per flow. Ports count
 * only for unfragmented TCP/UDP, so every fragment of a flow agrees.
 * The same function is written out in the README for peers and tests. */
static inline uint8_t
nvgw_flowid(const struct rte_ipv4_hdr *ip, unsigned int hl, uint32_t avail)
{
	uint32_t ports = 0, h;

	if ((ip->next_proto_id == IPPROTO_TCP || ip->next_proto_id == IPPROTO_UDP) &&
	    (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG |
						   RTE_IPV4_HDR_OFFSET_MASK)) == 0 &&
	    avail >= hl + 4)
		ports = rte_be_to_cpu_32(*(const nvgw_u32 *)((const uint8_t *)ip + hl));
	h = rte_be_to_cpu_32(ip->src_addr) * 0x9E3779B1u;
	h ^= rte_be_to_cpu_32(ip->dst_addr) * 0x85EBCA77u;
	h ^= ports * 0xC2B2AE3Du;
	h ^= ip->next_proto_id;
	h ^= h >> 15;
	h *= 0x2C1B3C6Du;
	h ^= h >> 12;
	return h >> 24;
}

/* IP rewrite of src/dst in place, every checksum updated incrementally
 * (never recomputed, so a wrong one stays exactly as wrong):
 * the IPv4 header; the TCP/UDP pseudo-header (a zero UDP checksum stays
 * zero; non-first fragments have no L4 header); ICMP errors quote the
 * packet that caused them, whose addresses mirror the outer ones and are
 * rewritten too, with the quoted checksums and the ICMP checksum. */
void nvgw_rewrite(struct rte_ipv4_hdr *ip, unsigned int hl, uint32_t avail,
		  uint32_t src, uint32_t dst);

#endif
