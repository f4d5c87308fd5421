/* The exception thread: the rare packets that leave the workers. It answers
 * ARP and ping for our addresses (and ARP for CAs inside NVGRE, from
 * lookup records), learns neighbours, sends ARP requests for unresolved
 * next hops and ICMP "fragmentation needed". Replies go back through the
 * inject ring, which worker 0 transmits: workers keep their TX queues. */
#include <errno.h>

#include <rte_arp.h>
#include <rte_cycles.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_ring.h>

#include "nvgw.h"
#include "pkt.h"
#include "tables.h"

static void
inject(struct nvgw_ctx *c, struct rte_mbuf *m, uint16_t port)
{
	m->port = port;
	if (rte_ring_sp_enqueue(c->inject, m) != 0) {
		c->c.inject_full++;
		rte_pktmbuf_free(m);
	}
}

static void
swap_eth(struct rte_ether_hdr *eth, const struct rte_ether_addr *ours)
{
	rte_ether_addr_copy(&eth->src_addr, &eth->dst_addr);
	rte_ether_addr_copy(ours, &eth->src_addr);
}

/* Turn the ARP request at arp into our reply for `mac`; learn the sender. */
static int
arp_reply(struct rte_arp_hdr *arp, const struct rte_ether_addr *mac)
{
	struct rte_arp_ipv4 *a = &arp->arp_data;
	uint32_t tip = a->arp_tip;

	arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
	a->arp_tha = a->arp_sha;
	a->arp_tip = a->arp_sip;
	rte_ether_addr_copy(mac, &a->arp_sha);
	a->arp_sip = tip;
	return 0;
}

static int
arp_ok(const struct rte_arp_hdr *arp, uint32_t avail)
{
	return avail >= sizeof(*arp) &&
	       arp->arp_hardware == rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) &&
	       arp->arp_protocol == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) &&
	       arp->arp_hlen == 6 && arp->arp_plen == 4;
}

static void
learn(struct nvgw_ctx *c, uint16_t scope, const struct rte_arp_hdr *arp)
{
	if (nvgw_neigh_set(c->t, scope, arp->arp_data.arp_sip,
			   arp->arp_data.arp_sha.addr_bytes, 1) != NULL)
		c->c.neigh_learned++;
}

/* Send an IPv4 packet back where it came from, as a fresh one of ours. */
static void
ip_turn_around(struct rte_ipv4_hdr *ip)
{
	uint32_t tmp = ip->src_addr;

	ip->src_addr = ip->dst_addr;
	ip->dst_addr = tmp;
	ip->time_to_live = 64;
	ip->hdr_checksum = 0;
	ip->hdr_checksum = rte_ipv4_cksum(ip);
}

/* ICMP echo request at ip -> reply in place. 0 = answered. */
static int
echo_reply(struct rte_ipv4_hdr *ip, uint32_t avail)
{
	unsigned int hl = nvgw_ipv4_ok(ip, avail);
	struct rte_icmp_hdr *icmp = (struct rte_icmp_hdr *)((uint8_t *)ip + hl);
	uint32_t sum;

	/* A fragment is not a whole request: its payload may not even start
	 * with the ICMP header (RFC 1122 3.3.2 leaves reassembly to hosts). */
	if (hl == 0 || ip->next_proto_id != IPPROTO_ICMP || nvgw_ipv4_fragment(ip) ||
	    rte_be_to_cpu_16(ip->total_length) < hl + sizeof(*icmp) ||
	    icmp->icmp_type != RTE_IP_ICMP_ECHO_REQUEST || icmp->icmp_code != 0)
		return -1;
	icmp->icmp_type = RTE_IP_ICMP_ECHO_REPLY;
	/* RFC 1624 eqn. 3: the type/code word drops by 0x0800, ~m + m' = ~0x0800. */
	sum = (uint16_t)~icmp->icmp_cksum + rte_cpu_to_be_16(0xF7FF);
	sum = (sum & 0xFFFF) + (sum >> 16);
	icmp->icmp_cksum = (uint16_t)~sum;
	ip_turn_around(ip);
	return 0;
}

/* Is ip ours on this side: an address of the VLAN attachment `a`, or (a
 * NULL: the fabric) one of our PAs, rewrite PAs included. */
static int
is_ours(const struct nvgw_ctx *c, const struct nvgw_provider *pv,
	const struct nvgw_attach *a, uint32_t ip)
{
	uint64_t word;
	unsigned int i;

	if (a != NULL)
		return ip == a->ip;
	for (i = 0; i < pv->n_pa; i++)
		if (ip == pv->pa[i])
			return 1;
	return nvgw_rw_lookup(c->t, ip, &word) && (word & NVGW_RW_GATEWAY);
}

/* ARP or ping for one of our addresses, on the fabric (vlan 0) or on a
 * customer VLAN: answered in place, learning the ARP sender on the way. */
static void
answer_local(struct nvgw_ctx *c, const struct nvgw_provider *pv, struct rte_mbuf *m,
	     int reason, uint16_t vlan)
{
	const struct nvgw_attach *a = vlan ? nvgw_attach_get(c->t, vlan) : NULL;
	const struct rte_ether_addr *mac = vlan ? (a ? &a->mac : NULL) : &pv->mac;
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	uint32_t hdr = vlan ? NVGW_VLAN_ETH_LEN : NVGW_ETH_LEN;
	void *l3 = (uint8_t *)eth + hdr;
	uint32_t avail = m->data_len - hdr;

	if (mac == NULL)
		goto ignore;
	if (reason == NVGW_EXC_ARP_PROVIDER || reason == NVGW_EXC_ARP_CUSTOMER) {
		struct rte_arp_hdr *arp = l3;

		if (!arp_ok(arp, avail))
			goto ignore;
		learn(c, vlan, arp);
		if (arp->arp_opcode != rte_cpu_to_be_16(RTE_ARP_OP_REQUEST) ||
		    !is_ours(c, pv, a, arp->arp_data.arp_tip))
			goto ignore;
		arp_reply(arp, mac);
		c->c.arp_replies++;
	} else if (echo_reply(l3, avail) == 0) {
		c->c.echo_replies++;
	} else {
		goto ignore;
	}
	swap_eth(eth, mac);
	inject(c, m, vlan ? c->customer_port : c->provider_port);
	return;
ignore:
	c->c.ignored++;
	rte_pktmbuf_free(m);
}

/* ARP or ping inside NVGRE: answer inside the tunnel it came from. */
static void
from_vsid(struct nvgw_ctx *c, const struct nvgw_provider *pv, struct rte_mbuf *m,
	  int reason, uint16_t idx)
{
	const struct nvgw_vsid *vs = __atomic_load_n(c->t->vsid_by_idx + idx, __ATOMIC_ACQUIRE);
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv4_hdr *oip = (struct rte_ipv4_hdr *)(eth + 1);
	unsigned int hl = (oip->version_ihl & 0xf) * 4;
	struct rte_ether_hdr *ieth = (struct rte_ether_hdr *)((uint8_t *)oip + hl + NVGW_GRE_LEN);
	/* What the outer packet carries (not bytes past its total length: padding) */
	uint32_t end = RTE_MIN((uint32_t)m->data_len,
			       NVGW_ETH_LEN + (uint32_t)rte_be_to_cpu_16(oip->total_length));
	uint32_t start = (uint8_t *)(ieth + 1) - (uint8_t *)eth;
	uint32_t avail = end > start ? end - start : 0;
	const nvgw_u32 *key = (const nvgw_u32 *)((uint8_t *)oip + hl + 4);
	const struct rte_ether_addr *answer;

	/* The slot was the packet's VSID's when a worker queued it; by now that
	 * VSID may be gone and its slot another's (a grace period passed while
	 * the packet waited in the ring): answer only for the packet's own. */
	if (vs == NULL || vs->vsid != nvgw_be32(*key) >> 8)
		goto ignore;
	if (reason == NVGW_EXC_ARP_VSID) {
		struct rte_arp_hdr *arp = (struct rte_arp_hdr *)(ieth + 1);
		const struct nvgw_rec *r;

		if (!arp_ok(arp, avail) ||
		    arp->arp_opcode != rte_cpu_to_be_16(RTE_ARP_OP_REQUEST))
			goto ignore;
		/* Anti-spoofing, as for IPv4 from the fabric: the sender's CA
		 * lives at the outer source, in this VSID. Else any fabric host
		 * could learn a tenant's CAs and MACs, or aim our replies at a
		 * PA it names as its source. */
		r = nvgw_rtab_lookup(&c->t->records,
				     nvgw_rec_key(vs->rdid, arp->arp_data.arp_sip));
		if (!nvgw_rec_lives_at(r, oip->src_addr, vs->idx)) {
			c->c.arp_spoofed++;
			rte_pktmbuf_free(m);
			return;
		}
		if (arp->arp_data.arp_tip == vs->gw_ip) {
			answer = &vs->gw_mac;
		} else if ((r = nvgw_rtab_lookup(&c->t->records,
				nvgw_rec_key(vs->rdid, arp->arp_data.arp_tip))) != NULL &&
			   nvgw_rec_vsid_idx(r) == vs->idx) {
			answer = (const struct rte_ether_addr *)nvgw_rec_mac(r);
		} else {
			c->c.arp_no_record++;
			rte_pktmbuf_free(m);
			return;
		}
		arp_reply(arp, answer);
		c->c.arp_replies++;
	} else if (echo_reply((struct rte_ipv4_hdr *)(ieth + 1), avail) == 0) {
		answer = &vs->gw_mac;
		c->c.echo_replies++;
	} else {
		goto ignore;
	}
	swap_eth(ieth, answer);
	swap_eth(eth, &pv->mac);
	/* our outer header as any we send (RFC 7637: DF), not the sender's flags */
	oip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
	oip->packet_id = 0;
	oip->type_of_service = 0;
	ip_turn_around(oip);
	inject(c, m, c->provider_port);
	return;
ignore:
	c->c.ignored++;
	rte_pktmbuf_free(m);
}

/* May an ICMP error answer this datagram (RFC 1812 4.3.2.7)? Not one
 * that is itself an ICMP error, nor a fragment after the first, nor one
 * whose source names no single host or whose destination is not unicast. */
static int
icmp_error_allowed(const struct rte_ipv4_hdr *ip, unsigned int hl)
{
	uint8_t s = ((const uint8_t *)&ip->src_addr)[0], d = ((const uint8_t *)&ip->dst_addr)[0];

	if (nvgw_frag_offset(ip) || s == 0 || s == 127 || s >= 224 ||
	    d >= 224)
		return 0;
	if (ip->next_proto_id == IPPROTO_ICMP) {
		uint8_t type = ((const uint8_t *)ip)[hl];

		/* Errors: unreachable, source quench, redirect, time exceeded,
		 * parameter problem. */
		return !(type == 3 || type == 4 || type == 5 || type == 11 || type == 12);
	}
	return 1;
}

/* ICMP "fragmentation needed" to the sender of the customer frame m (its
 * IPv4 header checked by the worker that punted it). */
static void
frag_needed(struct nvgw_ctx *c, struct rte_mbuf *m, uint16_t vlan, uint16_t mtu)
{
	const struct nvgw_attach *a = nvgw_attach_get(c->t, vlan);
	struct rte_ether_hdr *oeth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv4_hdr *orig = (struct rte_ipv4_hdr *)((uint8_t *)oeth + NVGW_VLAN_ETH_LEN);
	unsigned int hl = nvgw_ipv4_ok(orig, m->data_len - NVGW_VLAN_ETH_LEN);
	unsigned int quote = RTE_MIN(hl + 8u, (unsigned int)rte_be_to_cpu_16(orig->total_length));
	struct rte_mbuf *r;
	uint8_t *h;

	if (a == NULL || hl == 0 || quote <= hl || !icmp_error_allowed(orig, hl)) {
		c->c.ignored++;
		goto done;
	}
	if ((r = rte_pktmbuf_alloc(c->pool)) == NULL) {
		c->c.no_mbuf++;
		goto done;
	}
	/* at most 46 + 68 bytes: always room */
	h = (uint8_t *)rte_pktmbuf_append(r, NVGW_VLAN_ETH_LEN + 20 + 8 + quote);
	struct rte_ether_hdr *eth = (struct rte_ether_hdr *)h;
	struct rte_vlan_hdr *vh = (struct rte_vlan_hdr *)(eth + 1);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(vh + 1);
	struct rte_icmp_hdr *icmp = (struct rte_icmp_hdr *)(ip + 1);

	rte_ether_addr_copy(&oeth->src_addr, &eth->dst_addr);
	rte_ether_addr_copy(&a->mac, &eth->src_addr);
	eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_VLAN);
	vh->vlan_tci = rte_cpu_to_be_16(vlan);
	vh->eth_proto = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	memset(ip, 0, sizeof(*ip));
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->total_length = rte_cpu_to_be_16(20 + 8 + quote);
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_ICMP;
	ip->src_addr = a->ip;
	ip->dst_addr = orig->src_addr;
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	icmp->icmp_type = 3 /* destination unreachable */;
	icmp->icmp_code = 4;                    /* fragmentation needed and DF set */
	icmp->icmp_cksum = 0;
	icmp->icmp_ident = 0;
	icmp->icmp_seq_nb = rte_cpu_to_be_16(mtu);   /* next-hop MTU (RFC 1191) */
	memcpy(icmp + 1, orig, quote);
	icmp->icmp_cksum = ~rte_raw_cksum(icmp, 8 + quote);
	c->c.frag_needed++;
	inject(c, r, c->customer_port);
done:
	rte_pktmbuf_free(m);
}

/* Is ip no host of its link: one of our addresses there, or the link's
 * network or broadcast address (a /31 or /32 has neither)? */
static int
not_a_host(const struct nvgw_ctx *c, const struct nvgw_provider *pv,
	   const struct nvgw_attach *a, uint32_t ip)
{
	uint32_t mask = a != NULL ? a->mask : pv->mask;

	if (is_ours(c, pv, a, ip))
		return 1;
	if (rte_be_to_cpu_32(mask) >= 0xFFFFFFFEu)
		return 0;
	return (ip & ~mask) == 0 || (ip | mask) == 0xFFFFFFFFu;
}

/* ARP request for an unresolved next hop, at most one a second each. Never
 * for an address that is no host: an entry made for our own address would
 * let any host on the link take its traffic by claiming it (learning
 * updates entries that exist). */
static void
resolve(struct nvgw_ctx *c, const struct nvgw_provider *pv, struct rte_mbuf *m,
	uint16_t scope, uint32_t ip)
{
	const struct nvgw_attach *a = scope ? nvgw_attach_get(c->t, scope) : NULL;
	uint64_t now = rte_rdtsc();
	struct nvgw_neigh *n;
	struct rte_ether_hdr *eth;
	struct rte_arp_hdr *arp;
	uint16_t hdr = scope ? NVGW_VLAN_ETH_LEN : NVGW_ETH_LEN;

	if (scope && a == NULL) {
		c->c.ignored++;                 /* the attachment went meanwhile */
		rte_pktmbuf_free(m);
		return;
	}
	if (not_a_host(c, pv, a, ip)) {
		c->c.resolve_not_host++;
		rte_pktmbuf_free(m);
		return;
	}
	n = nvgw_neigh_resolve(c->t, scope, ip);
	if (n == NULL)
		c->c.resolve_refused++;
	if (n == NULL || (n->last_request && now - n->last_request < rte_get_tsc_hz())) {
		rte_pktmbuf_free(m);
		return;
	}
	n->last_request = now;
	rte_pktmbuf_reset(m);
	eth = (struct rte_ether_hdr *)rte_pktmbuf_append(m, hdr + sizeof(*arp));
	memset(&eth->dst_addr, 0xff, 6);
	rte_ether_addr_copy(scope ? &a->mac : &pv->mac, &eth->src_addr);
	if (scope) {
		struct rte_vlan_hdr *vh = (struct rte_vlan_hdr *)(eth + 1);

		eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_VLAN);
		vh->vlan_tci = rte_cpu_to_be_16(scope);
		vh->eth_proto = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
	} else {
		eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
	}
	arp = (struct rte_arp_hdr *)((uint8_t *)eth + hdr);
	arp->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
	arp->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	arp->arp_hlen = 6;
	arp->arp_plen = 4;
	arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REQUEST);
	rte_ether_addr_copy(&eth->src_addr, &arp->arp_data.arp_sha);
	arp->arp_data.arp_sip = scope ? a->ip : pv->pa[0];
	memset(&arp->arp_data.arp_tha, 0, 6);
	arp->arp_data.arp_tip = ip;
	c->c.arp_requests++;
	inject(c, m, scope ? c->customer_port : c->provider_port);
}

void
nvgw_exc_handle(struct nvgw_ctx *c, struct rte_mbuf *m)
{
	const struct nvgw_provider *pv = __atomic_load_n(&c->t->prov, __ATOMIC_ACQUIRE);
	int reason = m->hash.fdir.lo >> 24;
	uint32_t ctx = m->hash.fdir.lo & 0xFFFFFF;

	if (pv == NULL) {       /* cleared since a worker queued m (an undone first batch) */
		c->c.ignored++;
		rte_pktmbuf_free(m);
		return;
	}
	switch (reason) {
	case NVGW_EXC_ARP_PROVIDER:
	case NVGW_EXC_LOCAL_PROVIDER:
		return answer_local(c, pv, m, reason, 0);
	case NVGW_EXC_ARP_CUSTOMER:
	case NVGW_EXC_LOCAL_CUSTOMER:
		return answer_local(c, pv, m, reason, ctx);
	case NVGW_EXC_ARP_VSID:
	case NVGW_EXC_LOCAL_VSID:
		return from_vsid(c, pv, m, reason, ctx);
	case NVGW_EXC_FRAG_NEEDED:
		return frag_needed(c, m, ctx, m->hash.fdir.hi);
	case NVGW_EXC_RESOLVE:
		return resolve(c, pv, m, ctx, m->hash.fdir.hi);
	}
	c->c.ignored++;
	rte_pktmbuf_free(m);
}

int
nvgw_exc_resolve_ahead(struct nvgw_ctx *c, uint16_t scope, uint32_t ip)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(c->pool);

	if (m == NULL)
		return -ENOBUFS;
	m->hash.fdir.lo = NVGW_EXC_WORD(NVGW_EXC_RESOLVE, scope);
	m->hash.fdir.hi = ip;
	if (rte_ring_mp_enqueue(c->exc, m) != 0) {
		rte_pktmbuf_free(m);
		return -ENOBUFS;
	}
	return 0;
}

void *
nvgw_exc_main(void *arg)
{
	struct nvgw_ctx *c = arg;
	struct rte_mbuf *pkts[NVGW_BURST];
	unsigned int i, n;

	rte_rcu_qsbr_thread_register(c->t->qsbr, c->exc_qsbr_id);
	rte_rcu_qsbr_thread_online(c->t->qsbr, c->exc_qsbr_id);
	while (!c->quit) {
		n = rte_ring_sc_dequeue_burst(c->exc, (void **)pkts, NVGW_BURST, NULL);
		for (i = 0; i < n; i++)
			nvgw_exc_handle(c, pkts[i]);
		rte_rcu_qsbr_quiescent(c->t->qsbr, c->exc_qsbr_id);
		if (n == 0) {
			/* Sleeping is a quiescent state too: go offline meanwhile. */
			rte_rcu_qsbr_thread_offline(c->t->qsbr, c->exc_qsbr_id);
			rte_delay_us_sleep(200);
			rte_rcu_qsbr_thread_online(c->t->qsbr, c->exc_qsbr_id);
		}
	}
	rte_rcu_qsbr_thread_offline(c->t->qsbr, c->exc_qsbr_id);
	rte_rcu_qsbr_thread_unregister(c->t->qsbr, c->exc_qsbr_id);
	return NULL;
}
