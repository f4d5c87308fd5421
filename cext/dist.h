/* Software RSS on the inner headers: with several workers, each packet is
 * processed by the worker that owns its flow. NVGRE between two hosts has
 * one outer 5-tuple, so the flow is the inner one; elsewhere the outer one.
 * The receiving worker hashes (CRC32C, far cheaper than Toeplitz, which is
 * only needed to match a NIC) and hands the packet over on a ring of its
 * own to the owner; one flow comes in on one queue and crosses one ring,
 * so its order holds. Included by worker.c only, to inline per pipeline. */
#ifndef NVGW_DIST_H
#define NVGW_DIST_H

#include <rte_hash_crc.h>
#include <rte_ip.h>

#include "nvgw.h"
#include "pkt.h"

static inline uint32_t
ipv4_flow_hash(const struct rte_ipv4_hdr *ip, uint32_t avail)
{
	unsigned int hl = nvgw_ipv4_ok(ip, avail);
	uint32_t h, ports = 0;

	if (hl == 0)
		return 0;
	if ((ip->next_proto_id == IPPROTO_TCP || ip->next_proto_id == IPPROTO_UDP) &&
	    (ip->fragment_offset & nvgw_be16(RTE_IPV4_HDR_MF_FLAG |
					     RTE_IPV4_HDR_OFFSET_MASK)) == 0 &&
	    avail >= hl + 4)
		ports = *(const nvgw_u32 *)((const uint8_t *)ip + hl);
	h = rte_hash_crc_4byte(ip->src_addr, ip->next_proto_id);
	h = rte_hash_crc_4byte(ip->dst_addr, h);
	return rte_hash_crc_4byte(ports, h);
}

/* The flow of a frame: inner IPv4 of NVGRE, else the IPv4 after an
 * optional 802.1Q tag; 0 (worker 0) for anything else. */
static inline uint32_t
nvgw_flow_hash(const struct rte_mbuf *m)
{
	const uint8_t *p = rte_pktmbuf_mtod(m, const uint8_t *);
	uint32_t len = m->data_len, off = NVGW_ETH_LEN;
	uint16_t type;

	if (len < NVGW_ETH_LEN)
		return 0;
	type = ((const struct rte_ether_hdr *)p)->ether_type;
	if (type == nvgw_be16(RTE_ETHER_TYPE_VLAN) && len >= NVGW_VLAN_ETH_LEN) {
		type = *(const nvgw_u16 *)(p + 16);
		off = NVGW_VLAN_ETH_LEN;
	}
	if (type != nvgw_be16(RTE_ETHER_TYPE_IPV4))
		return 0;
	const struct rte_ipv4_hdr *ip = (const struct rte_ipv4_hdr *)(p + off);
	unsigned int hl = nvgw_ipv4_ok(ip, len - off);

	if (hl && ip->next_proto_id == IPPROTO_GRE &&
	    len >= off + hl + NVGW_GRE_LEN + NVGW_ETH_LEN + 20) {
		const nvgw_u16 *gre = (const nvgw_u16 *)(p + off + hl);
		const struct rte_ether_hdr *ieth =
			(const struct rte_ether_hdr *)(p + off + hl + NVGW_GRE_LEN);

		if (gre[1] == nvgw_be16(RTE_ETHER_TYPE_TEB) &&
		    ieth->ether_type == nvgw_be16(RTE_ETHER_TYPE_IPV4)) {
			off += hl + NVGW_GRE_LEN + NVGW_ETH_LEN;
			ip = (const struct rte_ipv4_hdr *)(p + off);
		}
	}
	return ipv4_flow_hash(ip, len - off);
}

/* Process what this worker owns, hand the rest to their owners. */
static __rte_always_inline void
dist_burst(struct nvgw_worker *w, uint16_t port, struct rte_mbuf **pkts, uint16_t n,
	   void (*fn)(struct nvgw_worker *, uint16_t, struct rte_mbuf **, uint16_t))
{
	struct rte_mbuf *mine[NVGW_BURST], *out[NVGW_MAX_WORKERS][NVGW_BURST];
	uint16_t n_out[NVGW_MAX_WORKERS] = { 0 };
	uint16_t i, k = 0, sent;

	for (i = 0; i < n; i++) {
		uint32_t owner = ((uint64_t)nvgw_flow_hash(pkts[i]) * w->n_workers) >> 32;

		if (owner == w->id) {
			mine[k++] = pkts[i];
		} else {
			/* The owner takes the input port from the mbuf, which
			 * not every PMD sets on receive (net_ring does not). */
			pkts[i]->port = port;
			out[owner][n_out[owner]++] = pkts[i];
		}
	}
	for (i = 0; i < w->n_workers; i++) {
		if (n_out[i] == 0)
			continue;
		sent = rte_ring_sp_enqueue_burst(w->to[i], (void **)out[i], n_out[i], NULL);
		w->handed_off += sent;
		if (unlikely(sent < n_out[i])) {
			w->drops[NVGW_DROP_dist_full] += n_out[i] - sent;
			rte_pktmbuf_free_bulk(&out[i][sent], n_out[i] - sent);
		}
	}
	if (k) {
		w->processed += k;
		fn(w, port, mine, k);
	}
}

/* Packets other workers handed over, in runs of one input port. */
static __rte_always_inline uint16_t
dist_drain(struct nvgw_worker *w,
	   void (*fn)(struct nvgw_worker *, uint16_t, struct rte_mbuf **, uint16_t))
{
	struct rte_mbuf *pkts[NVGW_BURST];
	uint16_t s, n, i, start, got = 0;

	for (s = 0; s < w->n_workers; s++) {
		if (w->from[s] == NULL)
			continue;
		n = rte_ring_sc_dequeue_burst(w->from[s], (void **)pkts, NVGW_BURST, NULL);
		got += n;
		w->processed += n;
		/* Last written on other cores: fetch the mbuf first, then
		 * the headers and the headroom line an encap writes into
		 * (on 16 cores, encap with 2 and 8 workers 11-13% faster in
		 * medians of 3 against 2 runs; decap 1-4%). */
		for (i = 0; i < n; i++)
			rte_prefetch0(pkts[i]);
		for (i = 0; i < n; i++) {
			const char *d = rte_pktmbuf_mtod(pkts[i], const char *);

			rte_prefetch0(d);
			rte_prefetch0(d - RTE_CACHE_LINE_SIZE);
		}
		for (start = 0, i = 1; i <= n; i++)
			if (i == n || pkts[i]->port != pkts[start]->port) {
				fn(w, pkts[start]->port, &pkts[start], i - start);
				start = i;
			}
	}
	return got;
}

#endif
