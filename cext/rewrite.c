/* IP rewrite (HNV TranslationMethodNat): addresses and checksums. */
#include <rte_icmp.h>
#include <rte_ip.h>

#include "pkt.h"

static int
icmp_is_error(uint8_t type)
{
	return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
}

void
nvgw_rewrite_icmp(uint8_t *l4, uint32_t len, uint32_t os, uint32_t od, uint32_t ns, uint32_t nd)
{
	struct rte_icmp_hdr *icmp = (struct rte_icmp_hdr *)l4;
	struct rte_ipv4_hdr *q = (struct rte_ipv4_hdr *)(l4 + 8);
	unsigned int qhl;
	uint32_t qs, qd, nqs, nqd;
	uint16_t qc, old, new, diff;
	uint64_t idiff;

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
	diff = nvgw_csum_fold(nvgw_csum_diff(qs, nqs) + nvgw_csum_diff(qd, nqd));
	qc = q->hdr_checksum;
	q->hdr_checksum = nvgw_csum_adjust16(qc, diff);
	q->src_addr = nqs;
	q->dst_addr = nqd;
	/* the ICMP checksum covers the quoted addresses, their checksum and
	 * the quoted L4 checksum */
	idiff = diff + nvgw_csum_diff16(qc, q->hdr_checksum);
	if (nvgw_frag_offset(q) == 0 &&
	    nvgw_l4_rewrite(q->next_proto_id, (uint8_t *)q + qhl, len - 8 - qhl, diff, &old, &new))
		idiff += nvgw_csum_diff16(old, new);
	icmp->icmp_cksum = nvgw_csum_adjust(icmp->icmp_cksum, idiff);
}
