/* Frames read and written without tables: the structural checks of each
 * ingress and the NVGRE header build, on a plain buffer (no EAL, no mbuf).
 * The pipeline inlines them; the fuzzers call them on buffers of exactly
 * the frame's length, so any read past the end is caught. */
#ifndef NVGW_FRAME_H
#define NVGW_FRAME_H

#include <string.h>

#include "nvgw.h"
#include "pkt.h"
#include "tables.h"

/* Results beyond the drop reasons (which are 0 .. NVGW_DROP_MAX - 1). */
enum {
	NVGW_PARSED = NVGW_DROP_MAX,    /* route the IPv4 header at v->l3 */
	NVGW_PARSED_ARP,                /* ARP on the link (customer VLAN or fabric) */
	NVGW_PARSED_ARP_VSID,           /* ARP inside NVGRE of v->vsid */
	NVGW_PARSED_LOCAL,              /* ICMP for one of our PAs */
	NVGW_PARSED_REWRITE,            /* IPv4 not for our PAs: maybe IP rewrite */
};

struct nvgw_view {
	uint32_t l3;                    /* offset of the IPv4 header to route */
	uint16_t hl;                    /* its header length */
	uint16_t vlan;                  /* customer: the 802.1Q VLAN ID */
	uint32_t vsid;                  /* provider: from the GRE key */
	uint32_t inner;                 /* provider: offset of the inner Ethernet */
};

/* Customer ingress: 802.1Q, then ARP or a sane IPv4 header. v->vlan is set
 * for every result but truncated and untagged. */
static inline int
nvgw_parse_customer(const uint8_t *f, uint32_t len, struct nvgw_view *v)
{
	const struct rte_ether_hdr *eth = (const struct rte_ether_hdr *)f;
	const struct rte_vlan_hdr *vh = (const struct rte_vlan_hdr *)(eth + 1);

	if (len < NVGW_VLAN_ETH_LEN)
		return NVGW_DROP_truncated;
	if (eth->ether_type != nvgw_be16(RTE_ETHER_TYPE_VLAN))
		return NVGW_DROP_untagged;
	v->vlan = nvgw_be16(vh->vlan_tci) & 0xFFF;
	if (unlikely(vh->eth_proto != nvgw_be16(RTE_ETHER_TYPE_IPV4)))
		return vh->eth_proto == nvgw_be16(RTE_ETHER_TYPE_ARP) ?
		       NVGW_PARSED_ARP : NVGW_DROP_not_ipv4;
	v->l3 = NVGW_VLAN_ETH_LEN;
	v->hl = nvgw_ipv4_ok((const struct rte_ipv4_hdr *)(vh + 1), len - NVGW_VLAN_ETH_LEN);
	return v->hl ? NVGW_PARSED : NVGW_DROP_bad_ip_header;
}

static inline int
nvgw_our_pa(const struct nvgw_provider *pv, uint32_t ip)
{
	unsigned int i;

	for (i = 0; i < pv->n_pa; i++)
		if (pv->pa[i] == ip)
			return 1;
	return 0;
}

/* Provider ingress: the outer Ethernet and IPv4 (for our MAC, checksum
 * right); for our PAs, GRE as RFC 7637 has it and the inner frame. Link
 * padding past the outer IPv4 packet is ignored. */
static inline int
nvgw_parse_provider(const uint8_t *f, uint32_t len, const struct nvgw_provider *pv,
		    struct nvgw_view *v)
{
	const struct rte_ether_hdr *eth = (const struct rte_ether_hdr *)f;
	const struct rte_ipv4_hdr *oip = (const struct rte_ipv4_hdr *)(eth + 1);
	const struct rte_ether_hdr *ieth;
	const nvgw_u16 *gre;
	uint32_t off, vsid;
	unsigned int hl;

	if (len < NVGW_ETH_LEN)
		return NVGW_DROP_truncated;
	if (unlikely(eth->ether_type != nvgw_be16(RTE_ETHER_TYPE_IPV4)))
		return eth->ether_type == nvgw_be16(RTE_ETHER_TYPE_ARP) ?
		       NVGW_PARSED_ARP : NVGW_DROP_not_ipv4;
	if ((nvgw_load64(f) ^ pv->mac_w) & NVGW_MAC_MASK)    /* dst: 8 of >= 14 bytes */
		return NVGW_DROP_not_for_gateway;
	hl = nvgw_ipv4_ok(oip, len - NVGW_ETH_LEN);
	if (hl == 0)
		return NVGW_DROP_bad_ip_header;
	if (!nvgw_ipv4_cksum_ok(oip, hl))
		return NVGW_DROP_bad_outer_checksum;
	v->l3 = NVGW_ETH_LEN;
	v->hl = hl;
	if (!nvgw_our_pa(pv, oip->dst_addr))
		return NVGW_PARSED_REWRITE;
	if (unlikely(oip->next_proto_id != IPPROTO_GRE))
		return oip->next_proto_id == IPPROTO_ICMP ? NVGW_PARSED_LOCAL : NVGW_DROP_not_nvgre;
	if (oip->fragment_offset & nvgw_be16(RTE_IPV4_HDR_MF_FLAG |
					     RTE_IPV4_HDR_OFFSET_MASK))
		return NVGW_DROP_outer_fragment;
	off = NVGW_ETH_LEN + hl;
	len = NVGW_ETH_LEN + nvgw_be16(oip->total_length);
	if (len < off + NVGW_GRE_LEN + NVGW_ETH_LEN)
		return NVGW_DROP_truncated;
	gre = (const nvgw_u16 *)(f + off);
	/* flags and protocol in one compare */
	if (unlikely(*(const nvgw_u32 *)gre != nvgw_be32(0x20000000 | RTE_ETHER_TYPE_TEB)))
		return gre[0] != nvgw_be16(0x2000) ? NVGW_DROP_bad_gre_flags : NVGW_DROP_not_teb;
	vsid = nvgw_be32(*(const nvgw_u32 *)(gre + 2)) >> 8;  /* FlowID ignored */
	if (nvgw_vsid_reserved(vsid))
		return NVGW_DROP_reserved_vsid;
	v->vsid = vsid;
	off += NVGW_GRE_LEN;
	v->inner = off;
	ieth = (const struct rte_ether_hdr *)(f + off);
	if (unlikely(ieth->ether_type != nvgw_be16(RTE_ETHER_TYPE_IPV4))) {
		if (ieth->ether_type == nvgw_be16(RTE_ETHER_TYPE_VLAN) ||
		    ieth->ether_type == nvgw_be16(RTE_ETHER_TYPE_QINQ))
			return NVGW_DROP_inner_vlan;
		return ieth->ether_type == nvgw_be16(RTE_ETHER_TYPE_ARP) ?
		       NVGW_PARSED_ARP_VSID : NVGW_DROP_not_ipv4;
	}
	off += NVGW_ETH_LEN;
	v->l3 = off;
	v->hl = nvgw_ipv4_ok((const struct rte_ipv4_hdr *)(f + off), len - off);
	return v->hl ? NVGW_PARSED : NVGW_DROP_bad_ip_header;
}

/* Write the NVGRE_LEN bytes in front of an inner IPv4 packet of ip_len
 * bytes: outer Ethernet, the record's outer IPv4/GRE template (its
 * checksum is that of total length 0, so one addition finishes it), the
 * inner Ethernet. MACs as words (nvgw_eth_write). */
static inline void
nvgw_nvgre_header(uint8_t *h, const struct nvgw_outer *tmpl, uint64_t dst_mac,
		  uint64_t src_mac, uint64_t in_dst, uint64_t in_src, uint16_t ip_len,
		  uint8_t flowid)
{
	struct nvgw_outer *o = (struct nvgw_outer *)(h + NVGW_ETH_LEN);
	uint16_t tot = ip_len + NVGW_NVGRE_LEN - NVGW_ETH_LEN;
	uint32_t sum;

	nvgw_eth_write(h, dst_mac, src_mac, nvgw_be16(RTE_ETHER_TYPE_IPV4));
	*o = *tmpl;
	o->ip.total_length = nvgw_be16(tot);
	sum = (uint16_t)~tmpl->ip.hdr_checksum + (uint32_t)nvgw_be16(tot);
	sum = (sum & 0xFFFF) + (sum >> 16);
	o->ip.hdr_checksum = (uint16_t)~sum;
	o->gre_key |= nvgw_be32(flowid);
	nvgw_eth_write(o + 1, in_dst, in_src, nvgw_be16(RTE_ETHER_TYPE_IPV4));
}

#endif
