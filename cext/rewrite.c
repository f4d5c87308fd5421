/* IP rewrite (HNV TranslationMethodNat): addresses and checksums. */
#include <stddef.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include "pkt.h"

#define FRAG_OFFSET(ip) ((ip)->fragment_offset & nvgw_be16(RTE_IPV4_HDR_OFFSET_MASK))

/* The L4 checksum of a TCP or UDP header at l4 (len bytes present) after its
 * pseudo-header addresses changed by `diff` (nvgw_csum_diff). Returns 1 and
 * the old and new checksum words when it changed (an ICMP checksum that
 * covers this one follows). */
static inline int
l4_rewrite(uint8_t proto, uint8_t *l4, uint32_t len, uint64_t diff, uint16_t *old,
	   uint16_t *new)
{
	nvgw_u16 *csum;   /* quoted headers need not be aligned */

	if (proto == IPPROTO_TCP && len >= 18)
		csum = (nvgw_u16 *)(l4 + offsetof(struct rte_tcp_hdr, cksum));
	else if (proto == IPPROTO_UDP && len >= 8 &&
		 ((struct rte_udp_hdr *)l4)->dgram_cksum != 0)
		csum = (nvgw_u16 *)(l4 + offsetof(struct rte_udp_hdr, dgram_cksum));
	else
		return 0;
	*old = *csum;
	*new = nvgw_csum_adjust(*old, diff);
	if (proto == IPPROTO_UDP && *new == 0)
		*new = 0xFFFF;          /* 0 means "no checksum" for UDP */
	*csum = *new;
	return 1;
}

static int
icmp_is_error(uint8_t type)
{
	return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
}

static void
icmp_rewrite(uint8_t *l4, uint32_t len, uint32_t os, uint32_t od, uint32_t ns, uint32_t nd)
{
	struct rte_icmp_hdr *icmp = (struct rte_icmp_hdr *)l4;
	struct rte_ipv4_hdr *q = (struct rte_ipv4_hdr *)(l4 + 8);
	unsigned int qhl;
	uint32_t qs, qd, nqs, nqd;
	uint16_t qc, old, new;
	uint64_t diff, idiff;

	if (len < 8 + 20 || !icmp_is_error(icmp->icmp_type))
		return;
	qhl = (q->version_ihl & 0x0f) * 4;
	if ((q->version_ihl >> 4) != 4 || qhl < 20 || len < 8 + qhl)
		return;
	/* The quoted packet went the other way: its source is our old destination. */
	qs = q->src_addr;
	qd = q->dst_addr;
	nqs = qs == od ? nd : qs;
	nqd = qd == os ? ns : qd;
	if (nqs == qs && nqd == qd)
		return;
	diff = nvgw_csum_diff(qs, nqs) + nvgw_csum_diff(qd, nqd);
	qc = q->hdr_checksum;
	q->hdr_checksum = nvgw_csum_adjust(qc, diff);
	q->src_addr = nqs;
	q->dst_addr = nqd;
	/* the ICMP checksum covers the quoted addresses, their checksum and
	 * the quoted L4 checksum */
	idiff = diff + nvgw_csum_diff16(qc, q->hdr_checksum);
	if (FRAG_OFFSET(q) == 0 &&
	    l4_rewrite(q->next_proto_id, (uint8_t *)q + qhl, len - 8 - qhl, diff, &old, &new))
		idiff += nvgw_csum_diff16(old, new);
	icmp->icmp_cksum = nvgw_csum_adjust(icmp->icmp_cksum, idiff);
}

void
nvgw_rewrite(struct rte_ipv4_hdr *ip, unsigned int hl, uint32_t avail, uint32_t src,
	     uint32_t dst)
{
	uint32_t os = ip->src_addr, od = ip->dst_addr;
	uint32_t len = nvgw_be16(ip->total_length);
	uint8_t *l4 = (uint8_t *)ip + hl;
	uint64_t diff = nvgw_csum_diff(os, src) + nvgw_csum_diff(od, dst);
	uint16_t old, new;

	ip->hdr_checksum = nvgw_csum_adjust(ip->hdr_checksum, diff);
	ip->src_addr = src;
	ip->dst_addr = dst;
	if (FRAG_OFFSET(ip) != 0)
		return;                 /* a non-first fragment carries no L4 header */
	len = RTE_MIN(len, avail) - hl;
	if (ip->next_proto_id == IPPROTO_ICMP)
		icmp_rewrite(l4, len, os, od, src, dst);
	else
		l4_rewrite(ip->next_proto_id, l4, len, diff, &old, &new);
}
