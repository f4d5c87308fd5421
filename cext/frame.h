/* Frames read and written without tables: the structural checks of each
 * ingress and the NVGRE header build, on a plain buffer (no EAL, no mbuf).
 * The pipeline inlines them; the fuzzers call them on buffers of exactly
 * the frame's length, so any read past the end is caught. */
#ifndef NVGW_FRAME_H
#define NVGW_FRAME_H

#include <string.h>
#include <immintrin.h>

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

/* The usual frame from a customer VLAN: 802.1Q, then IPv4 without options
 * whose total length is within the frame. The 802.1Q type (bytes 12-13),
 * the tagged type (16-17) and the version and header length (18) in one
 * compare of the word at 12; the tag (14-15) is the VLAN, the TOS (19)
 * anything. */
#define NVGW_CUSTOMER_SHAPE      0x0045000800000081ULL
#define NVGW_CUSTOMER_SHAPE_MASK 0x00FFFFFF0000FFFFULL

static inline int
customer_usual(const uint8_t *f, uint32_t len, struct nvgw_view *v)
{
	uint64_t w;
	uint32_t tot;

	if (len < NVGW_VLAN_ETH_LEN + 20)
		return 0;
	w = nvgw_load64(f + 12);
	tot = nvgw_be16(*(const nvgw_u16 *)(f + NVGW_VLAN_ETH_LEN + 2));
	if ((w & NVGW_CUSTOMER_SHAPE_MASK) != NVGW_CUSTOMER_SHAPE ||
	    tot - 20 > len - (NVGW_VLAN_ETH_LEN + 20))         /* 20 <= tot <= len - 18 */
		return 0;
	v->vlan = nvgw_be16((uint16_t)(w >> 16)) & 0xFFF;
	v->l3 = NVGW_VLAN_ETH_LEN;
	v->hl = 20;
	return 1;
}

/* Customer ingress: 802.1Q, then ARP or a sane IPv4 header. v->vlan is set
 * for every result but truncated and untagged. The usual frame passes at
 * once (customer_usual); any other is taken step by step. */
static inline int
nvgw_parse_customer(const uint8_t *f, uint32_t len, struct nvgw_view *v)
{
	const struct rte_ether_hdr *eth = (const struct rte_ether_hdr *)f;
	const struct rte_vlan_hdr *vh = (const struct rte_vlan_hdr *)(eth + 1);

	if (likely(customer_usual(f, len, v)))
		return NVGW_PARSED;
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

/* The usual frame from the fabric (NVGRE_LEN + an inner IPv4 header, 76
 * bytes at least): outer Ethernet to our MAC, IPv4 without options (not a
 * fragment) carrying GRE with a key and Transparent Ethernet Bridging,
 * inner Ethernet with IPv4 without options, to our first PA (pa[0]: a
 * frame to another of our PAs takes the steps). Its fixed bytes in the
 * first 64 (shape), and the bits there that must match them (shape_keep: a
 * mask to AND with, so that the compare takes it straight from memory). */
#define NVGW_SHAPE_LEN (NVGW_NVGRE_LEN + 20)

static inline void
nvgw_provider_shape(struct nvgw_provider *pv)
{
	static const uint8_t fixed[][2] = {     /* offset, value; all 8 bits */
		{12, 0x08}, {13, 0x00}, {14, 0x45}, {21, 0x00}, {23, IPPROTO_GRE},
		{34, 0x20}, {35, 0x00}, {36, 0x65}, {37, 0x58},
		{54, 0x08}, {55, 0x00}, {56, 0x45},
	};
	unsigned int i;

	memset(pv->shape, 0, sizeof(pv->shape));
	memset(pv->shape_keep, 0, sizeof(pv->shape_keep));
	memcpy(pv->shape, &pv->mac, 6);
	memset(pv->shape_keep, 0xFF, 6);
	memcpy(pv->shape + 30, &pv->pa[0], 4);  /* outer destination */
	memset(pv->shape_keep + 30, 0xFF, 4);
	for (i = 0; i < RTE_DIM(fixed); i++) {
		pv->shape[fixed[i][0]] = fixed[i][1];
		pv->shape_keep[fixed[i][0]] = 0xFF;
	}
	pv->shape_keep[20] = 0x3F;              /* not reserved or DF; MF and offset */
}

/* The 64 bytes at f match shape where keep has bits set: in 32-byte
 * vectors where the build has AVX2, else in 16-byte ones. */
static inline int
nvgw_shape_ok(const uint8_t *f, const uint8_t *shape, const uint8_t *keep)
{
#ifdef __AVX2__
	__m256i x = _mm256_setzero_si256();

	for (unsigned int i = 0; i < 2; i++)
		x = _mm256_or_si256(x, _mm256_and_si256(
			_mm256_loadu_si256((const __m256i *)keep + i), _mm256_xor_si256(
			_mm256_loadu_si256((const __m256i *)f + i),
			_mm256_loadu_si256((const __m256i *)shape + i))));
	return _mm256_testz_si256(x, x);
#else
	__m128i x = _mm_setzero_si128();

	for (unsigned int i = 0; i < 4; i++)
		x = _mm_or_si128(x, _mm_and_si128(((const __m128i *)keep)[i], _mm_xor_si128(
			_mm_loadu_si128((const __m128i *)f + i), ((const __m128i *)shape)[i])));
	return _mm_testz_si128(x, x);
#endif
}

/* 1 when the frame has the usual shape (its PA included) and its lengths
 * and checksum are right: what nvgw_parse_provider's checks would all
 * pass, but for a reserved VSID, the fixed bytes in a few vector compares
 * (nvgw_shape_ok). 0: let them say what is not. A reserved VSID is never
 * in the directory (nvgw_vsid_set), so the pipeline finds none for it;
 * nvgw_parse_provider checks it. */
static inline int
provider_usual(const uint8_t *f, uint32_t len, const struct nvgw_provider *pv,
	       struct nvgw_view *v)
{
	const struct rte_ipv4_hdr *oip = (const struct rte_ipv4_hdr *)(f + NVGW_ETH_LEN);
	const struct rte_ipv4_hdr *iip = (const struct rte_ipv4_hdr *)(f + NVGW_NVGRE_LEN);
	uint32_t tot, itot, vsid;

	if (len < NVGW_SHAPE_LEN)
		return 0;
	if (!nvgw_shape_ok(f, pv->shape, pv->shape_keep))
		return 0;
	/* outer: the inner IPv4 header within it, it within the frame; inner:
	 * its own length within the outer packet (nvgw_ipv4_ok, both) */
	tot = nvgw_be16(oip->total_length);
	itot = nvgw_be16(iip->total_length);
	if (tot - (NVGW_SHAPE_LEN - NVGW_ETH_LEN) > len - NVGW_SHAPE_LEN ||
	    itot - 20 > tot - (NVGW_SHAPE_LEN - NVGW_ETH_LEN))
		return 0;
	if (!nvgw_ipv4_cksum_ok(oip, 20))
		return 0;
	vsid = nvgw_be32(*(const nvgw_u32 *)(f + NVGW_ETH_LEN + 20 + 4)) >> 8;
	v->l3 = NVGW_NVGRE_LEN;
	v->hl = 20;
	v->vsid = vsid;
	v->inner = NVGW_ETH_LEN + 20 + NVGW_GRE_LEN;
	return 1;
}

/* Provider ingress, step by step (nvgw_parse_provider). */
static inline int
provider_steps(const uint8_t *f, uint32_t len, const struct nvgw_provider *pv,
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
	if (nvgw_mac_differ(nvgw_load64(f), pv->mac_w))    /* dst: 8 of >= 14 bytes */
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

/* Provider ingress: the outer Ethernet and IPv4 (for our MAC, checksum
 * right); for our PAs, GRE as RFC 7637 has it and the inner frame. Link
 * padding past the outer IPv4 packet is ignored. The usual frame passes
 * every check at once (provider_usual); any other is taken step by step.
 * The pipeline calls the two itself (classify_provider), so that the usual
 * frame's offsets stay constants there; the fuzzers call this. */
static inline int
nvgw_parse_provider(const uint8_t *f, uint32_t len, const struct nvgw_provider *pv,
		    struct nvgw_view *v)
{
	if (likely(provider_usual(f, len, pv, v)) && !nvgw_vsid_reserved(v->vsid))
		return NVGW_PARSED;
	return provider_steps(f, len, pv, v);
}

/* The provider's outer headers from its first PA: where the checksum goes,
 * the header's sum with total length and destination 0, which
 * nvgw_nvgre_header adds them to, then complements. */
static inline void
nvgw_outer_init(struct nvgw_outer *o, uint32_t src_pa)
{
	memset(o, 0, sizeof(*o));
	o->eth_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	o->ip.version_ihl = RTE_IPV4_VHL_DEF;
	o->ip.fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
	o->ip.time_to_live = 64;
	o->ip.next_proto_id = IPPROTO_GRE;
	o->ip.src_addr = src_pa;
	o->ip.hdr_checksum = rte_raw_cksum(&o->ip, sizeof(o->ip));
	o->gre_flags = rte_cpu_to_be_16(0x2000);
	o->gre_proto = rte_cpu_to_be_16(RTE_ETHER_TYPE_TEB);
}

/* Write the NVGRE_LEN bytes in front of an inner IPv4 packet of ip_len
 * bytes: the outer MACs, the provider's template from the outer Ethernet
 * type to the GRE key (where the checksum goes, it holds the header's sum
 * with total length and destination 0: add them, fold, complement), the
 * record's PA, its VSID's GRE key word with the FlowID, the inner Ethernet. MACs
 * as words (nvgw_macs_write: the template's copy writes over the outer
 * source word's top two bytes); the FlowID as the GRE key word has it
 * (nvgw_be32(flowid), nvgw_flowid_key). */
static inline void
nvgw_nvgre_header(uint8_t *h, const struct nvgw_outer *tmpl, uint32_t pa, uint32_t gre,
		  uint64_t dst_mac, uint64_t src_mac, uint64_t in_dst, uint64_t in_src,
		  uint16_t ip_len, uint32_t flowid_key)
{
	struct nvgw_outer *o = (struct nvgw_outer *)(h + NVGW_ETH_LEN - 2);
	uint16_t tot = nvgw_be16(ip_len + NVGW_NVGRE_LEN - NVGW_ETH_LEN);
	uint16_t sum = nvgw_csum_add_fold(pa, (uint32_t)tmpl->ip.hdr_checksum + tot);

	nvgw_macs_write(h, dst_mac, src_mac);
	*o = *tmpl;
	o->ip.total_length = tot;
	o->ip.dst_addr = pa;
	o->ip.hdr_checksum = (uint16_t)~sum;
	o->gre_key = gre | flowid_key;
	nvgw_eth_write(o + 1, in_dst, in_src, nvgw_be16(RTE_ETHER_TYPE_IPV4));
}

#endif
