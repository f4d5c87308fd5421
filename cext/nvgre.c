/* The NVGRE gateway pipeline.
 *
 * Customer port (802.1Q VLAN -> routing domain) and provider port (NVGRE)
 * are classified per packet, each in its own burst function. At classify,
 * a fabric packet to a host on its domain's link finds it; any other packet
 * starts the fetch of its destination's lookup record, and goes out
 * straight away when it has one (from the fabric, once its source is
 * checked). The rest: lookup records,
 * route lookups and neighbours in bulk. Then, from the fabric,
 * anti-spoofing; then each packet is emitted: NVGRE toward a PA, or tagged
 * toward a customer VLAN. ARP, ICMP for our addresses, unresolved next hops
 * and "fragmentation needed" leave on the exception ring for the control
 * thread. */
#include <rte_ethdev.h>
#include <rte_ip.h>

#include "nvgw.h"
#include "frame.h"

#define EXC NVGW_EXC_WORD

struct pkt {
	struct rte_mbuf *m;             /* NULL once dropped after classify (a hole) */
	struct rte_ipv4_hdr *ip;        /* the IPv4 header that is routed */
	uint16_t hl;                    /* its header length */
	uint16_t in_vlan;               /* customer ingress VLAN, 0 from the fabric */
	uint32_t outer_src;             /* fabric ingress: the sender's PA */
	uint8_t rewritten;              /* fabric: arrived by IP rewrite, not NVGRE */
	uint8_t direct;                 /* how its destination is found: DEST_* */
	uint16_t src_slot;              /* decap: the VSID's counter slot */
	uint32_t rdid;
	uint64_t rv;                    /* its route's value (tables.h), 0: none */
	union {
		const struct nvgw_rec *rec;     /* the destination's lookup record */
		const struct nvgw_attach *att;  /* DEST_LINK: the link, nh its host */
	};
	const struct nvgw_neigh *nh;    /* customer destination on the link */
	uint32_t src_pa;                /* IP rewrite: our PA for the source */
	uint64_t src_key;               /* decap: the inner source's record */
	union {
		const struct nvgw_rline *src_kb;        /* its home line */
		const struct nvgw_rec *src_rec;         /* then the record found */
	};
	union {
		struct {                /* DEST_RECORD */
			uint64_t key;   /* the destination's record */
			const struct nvgw_rline *kb;    /* its home line */
		};
		struct {                /* DEST_ROUTE */
			uint64_t rkey;  /* route key of the longest length left */
			const struct nvgw_hbucket *rb;  /* rkey's home bucket */
		};
		struct {                /* emit_direct, toward IP rewrite */
			uint64_t wkey;  /* our PA for the source: its key */
			const struct nvgw_hbucket *wb;  /* wkey's home bucket */
		};
	};
	uint64_t left;                  /* the shorter lengths still to try */
};

enum {
	DEST_ROUTE,     /* the route lookup (rkey, left, rb) */
	DEST_RECORD,    /* key, kb: the destination's record, else the route */
	DEST_LINK,      /* settled at classify: att and nh */
};

/* Hand a packet to the exception thread. A dropped packet that only asks
 * for something (an ARP request, an ICMP error) is punted uncounted; one
 * that the thread will answer counts as an exception. */
static inline int
punt(struct nvgw_worker *w, struct rte_mbuf *m, uint32_t lo, uint32_t hi)
{
	m->hash.fdir.lo = lo;
	m->hash.fdir.hi = hi;
	if (rte_ring_mp_enqueue(w->ctx->exc, m) == 0)
		return 0;
	rte_pktmbuf_free(m);
	return -1;
}

static inline void
to_exception(struct nvgw_worker *w, struct rte_mbuf *m, uint32_t lo, uint32_t hi)
{
	if (punt(w, m, lo, hi) == 0)
		w->exceptions++;
	else
		w->drops[NVGW_DROP_exception_full]++;
}

/* A customer frame that is not IPv4 to route (parse result r, on VLAN
 * vlan): ARP for a known VLAN goes to the exception thread, the rest is
 * dropped. The VLAN by value, so that the view stays in registers. */
static __rte_noinline void
customer_other(struct nvgw_worker *w, const struct nvgw_tables *t, struct rte_mbuf *m,
	       int r, uint16_t vlan)
{
	if (r == NVGW_DROP_truncated || r == NVGW_DROP_untagged)    /* no vlan */
		nvgw_drop(w, r, m);
	else if (t->attach[vlan] == NULL)
		nvgw_drop(w, NVGW_DROP_unknown_vlan, m);
	else if (r == NVGW_PARSED_ARP)
		to_exception(w, m, EXC(NVGW_EXC_ARP_CUSTOMER, vlan), 0);
	else
		nvgw_drop(w, r, m);
}

/* Customer ingress: 802.1Q -> attachment -> routing domain. 1 = route it. */
static inline int
classify_customer(struct nvgw_worker *w, const struct nvgw_tables *t,
		  struct rte_mbuf *m, struct pkt *p)
{
	struct nvgw_view v = { .vlan = 0 };     /* none for truncated and untagged */
	const struct nvgw_attach *a;
	int r = nvgw_parse_customer(rte_pktmbuf_mtod(m, uint8_t *), m->data_len, &v);

	if (unlikely(r != NVGW_PARSED))
		return customer_other(w, t, m, r, v.vlan), 0;
	a = t->attach[v.vlan];
	if (a == NULL)
		return nvgw_drop(w, NVGW_DROP_unknown_vlan, m), 0;
	if (nvgw_mac_differ(nvgw_load64(rte_pktmbuf_mtod(m, void *)), a->mac_w))
		return nvgw_drop(w, NVGW_DROP_not_for_gateway, m), 0;
	p->ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, v.l3);
	p->hl = v.hl;
	if (p->ip->dst_addr == a->ip) {
		if (p->ip->next_proto_id != IPPROTO_ICMP)
			return nvgw_drop(w, NVGW_DROP_not_icmp_to_gateway, m), 0;
		return to_exception(w, m, EXC(NVGW_EXC_LOCAL_CUSTOMER, v.vlan), 0), 0;
	}
	if (p->ip->time_to_live <= 1)
		return nvgw_drop(w, NVGW_DROP_ttl_expired, m), 0;
	p->in_vlan = v.vlan;
	p->rdid = a->rdid;
	return 1;
}

/* Provider ingress by IP rewrite: the destination is one of our rewrite
 * PAs (standing for a customer-side CA), the source the PA of a rewritten
 * VM of the same routing domain. Both become CAs; then route it. */
static inline int
classify_rewrite(struct nvgw_worker *w, const struct nvgw_tables *t, struct rte_mbuf *m,
		 struct rte_ipv4_hdr *ip, unsigned int hl, struct pkt *p)
{
	uint64_t dw, sw;
	uint16_t ip_len = nvgw_be16(ip->total_length);
	struct nvgw_count *vc;

	if (!nvgw_rw_lookup(t, ip->dst_addr, &dw) || !(dw & NVGW_RW_GATEWAY))
		return nvgw_drop(w, NVGW_DROP_not_our_pa, m), 0;
	if (!nvgw_rw_lookup(t, ip->src_addr, &sw))
		return nvgw_drop(w, NVGW_DROP_no_rewrite_mapping, m), 0;
	if ((sw & NVGW_RW_GATEWAY) || NVGW_RW_RDID(sw) != NVGW_RW_RDID(dw))
		return nvgw_drop(w, NVGW_DROP_rewrite_spoofed, m), 0;
	if (ip->time_to_live <= 1)
		return nvgw_drop(w, NVGW_DROP_ttl_expired, m), 0;
	nvgw_rewrite(ip, hl, m->data_len - NVGW_ETH_LEN, NVGW_RW_CA(sw), NVGW_RW_CA(dw));
	vc = nvgw_vsid_count(w, NVGW_DIR_REWRITE_IN, NVGW_RW_SLOT(sw));
	vc->pkts++;
	vc->bytes += ip_len;
	p->ip = ip;
	p->hl = hl;
	p->in_vlan = 0;
	p->rdid = NVGW_RW_RDID(dw);
	p->rewritten = 1;
	return 1;
}

/* Provider ingress after the frame's checks (r: nvgw_parse_provider's
 * result, PARSED or PARSED_ARP_VSID; v: its view): the VSID and the inner
 * frame. 1 = check the inner source, then route it to *dst (p->ip's
 * destination, handed over in a register: read back through p->ip after
 * the stores into p, the compiler would load it again). */
static __rte_always_inline int
classify_vsid(struct nvgw_worker *w, const struct nvgw_tables *t, struct rte_mbuf *m,
	      uint8_t *f, int r, const struct nvgw_view *v, struct pkt *p, uint32_t *dst)
{
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(f + v->l3);
	uint32_t e = nvgw_vsid_entry(t, v->vsid), slot;
	uint64_t word;

	if (e == 0)     /* none for a reserved VSID, which provider_usual lets by */
		return nvgw_drop(w, nvgw_vsid_reserved(v->vsid) ? NVGW_DROP_reserved_vsid :
				 NVGW_DROP_unknown_vsid, m), 0;
	/* Anti-spoofing: the inner source must live at the outer source, in
	 * this VSID. Its record's key needs only the directory entry: start
	 * the fetch before the VSID's object is read. */
	if (r == NVGW_PARSED) {
		p->src_key = nvgw_rec_key(NVGW_VE_RDID(e), ip->src_addr);
		p->src_kb = nvgw_rtab_fetch(&t->records, p->src_key);
	}
	/* The VSID's word and key by its counter slot, not its object: dense
	 * arrays, one load less in a row. The slot is the entry's VSID's while
	 * this packet is read: a deleted subnet's slot is given out again only
	 * after a grace period (nvgw_vsid_set refuses it before). */
	slot = NVGW_VE_SLOT(e);
	word = __atomic_load_n(t->vsid_word + slot, __ATOMIC_ACQUIRE);
	if (unlikely(!(word & NVGW_VW_VALID)))      /* deleted since the entry was read */
		return nvgw_drop(w, NVGW_DROP_unknown_vsid, m), 0;
	if (r == NVGW_PARSED_ARP_VSID)
		return to_exception(w, m, EXC(NVGW_EXC_ARP_VSID, slot), 0), 0;
	if (nvgw_mac_differ(nvgw_load64(f + v->inner), word))
		return nvgw_drop(w, NVGW_DROP_not_for_gateway, m), 0;
	*dst = ip->dst_addr;
	p->ip = ip;
	p->hl = v->hl;
	p->src_slot = slot;
	p->outer_src = ((struct rte_ipv4_hdr *)(f + NVGW_ETH_LEN))->src_addr;
	p->rewritten = 0;
	p->in_vlan = 0;
	/* rdid 0: for the gateway itself, an exception. The domain from the
	 * directory entry, and by a branch: the domain's words then need not
	 * wait for the VSID's key. */
	if (unlikely(*dst == NVGW_VK_GW_IP(t->vsid_key[slot])))
		p->rdid = 0;
	else
		p->rdid = NVGW_VE_RDID(e);
	return 1;
}

/* Provider ingress: outer checks, GRE, VSID, inner frame. The usual frame
 * (provider_usual) takes classify_vsid with its offsets as constants; any
 * other is parsed step by step. 1 = check the inner source (unless it came
 * by IP rewrite), then route it to *dst. */
static __rte_always_inline int
classify_provider(struct nvgw_worker *w, const struct nvgw_tables *t,
		  const struct nvgw_provider *pv, struct rte_mbuf *m, struct pkt *p,
		  uint32_t *dst)
{
	uint8_t *f = rte_pktmbuf_mtod(m, uint8_t *);
	struct nvgw_view v;
	int r;

	if (likely(provider_usual(f, m->data_len, pv, &v)))
		return classify_vsid(w, t, m, f, NVGW_PARSED, &v, p, dst);
	r = provider_steps(f, m->data_len, pv, &v);
	switch (r) {
	case NVGW_PARSED:
	case NVGW_PARSED_ARP_VSID:
		return classify_vsid(w, t, m, f, r, &v, p, dst);
	case NVGW_PARSED_ARP:
		return to_exception(w, m, EXC(NVGW_EXC_ARP_PROVIDER, 0), 0), 0;
	case NVGW_PARSED_LOCAL:
		return to_exception(w, m, EXC(NVGW_EXC_LOCAL_PROVIDER, 0), 0), 0;
	case NVGW_PARSED_REWRITE:
		if (!classify_rewrite(w, t, m, (struct rte_ipv4_hdr *)(f + v.l3), v.hl, p))
			return 0;
		*dst = p->ip->dst_addr;     /* the CA it was rewritten to */
		return 1;
	default:
		return nvgw_drop(w, r, m), 0;
	}
}

/* The destination lookup keys of a routed packet: its lookup record (a CA
 * in a virtual subnet, or an appliance's) or, for a customer destination on
 * the link that its attachment does not keep by host number, its
 * neighbour. */
struct dest_keys {
	uint64_t rec[NVGW_BURST], nh[NVGW_BURST];
	const struct nvgw_rline *rec_s[NVGW_BURST];
	uint16_t rec_idx[NVGW_BURST], nh_idx[NVGW_BURST];
	uint16_t n_rec, n_nh;
	uint16_t dst_idx[NVGW_BURST], n_dst;    /* every packet to a record */
};

static inline void
dest_key(const struct nvgw_tables *t, struct dest_keys *d, struct pkt *p, uint16_t i)
{
	uint64_t rv = p->rv;

	if (rv & NVGW_ROUTE_PACKED) {
		uint64_t key = nvgw_rec_key(p->rdid,
					    nvgw_route_kind(rv) == NVGW_ROUTE_APPLIANCE ?
					    nvgw_route_nh_ip(rv) : p->ip->dst_addr);

		d->rec[d->n_rec] = key;
		d->rec_s[d->n_rec] = nvgw_rtab_fetch(&t->records, key);
		d->rec_idx[d->n_rec++] = i;
		d->dst_idx[d->n_dst++] = i;
	} else {
		const struct nvgw_route *rt = (const struct nvgw_route *)(uintptr_t)rv;
		const struct nvgw_attach *a;

		if (rt->nh != NULL)
			return;
		/* on the link: by host number where its attachment keeps them */
		a = __atomic_load_n(t->attach + rt->vlan, __ATOMIC_ACQUIRE);  /* one object */
		if (a == NULL || !nvgw_attach_host(a, p->ip->dst_addr, &p->nh)) {
			d->nh[d->n_nh] = nvgw_neigh_key(rt->vlan, p->ip->dst_addr);
			d->nh_idx[d->n_nh++] = i;
		}
	}
}

/* The route key of dst's longest prefix length left in *lens (taken out
 * of it), or NVGW_ROUTE_NOKEY when none is left. */
#define NVGW_ROUTE_NOKEY nvgw_route_key(0, 0, 63)  /* no route has length 63 */

static inline uint64_t
next_route_key(uint64_t *lens, uint32_t rdid, uint32_t dst)
{
	uint32_t len, mask;

	if (*lens == 0)
		return NVGW_ROUTE_NOKEY;
	len = 63 - __builtin_clzll(*lens);
	mask = (uint32_t)(~0ULL << (32 - len));     /* /0 too */
	*lens &= ~(1ULL << len);
	return nvgw_route_key(rdid, dst & nvgw_be32(mask), len);
}

/* The prefix lengths to look the packet's destination up at (the route
 * length filter skips lengths over /16 or /24 where the block has none). */
static inline uint64_t
route_lens(const struct nvgw_tables *t, const struct pkt *p, uint64_t lens)
{
	return nvgw_route_lens(lens, t->blk16, t->blk24, p->rdid,
			       p->ip->dst_addr);
}

/* At classify: the route key of the packet's longest candidate prefix
 * length, its bucket fetched while the rest of the burst is classified.
 * lens: its domain's (rd_lens). */
static inline void
route_start(const struct nvgw_tables *t, struct pkt *p, uint64_t lens)
{
	p->direct = DEST_ROUTE;
	p->left = route_lens(t, p, lens);
	p->rkey = next_route_key(&p->left, p->rdid, p->ip->dst_addr);
	p->rb = nvgw_htab_fetch(&t->routes, p->rkey);
}

/* Most packets routed go to a CA in a virtual subnet (from a customer VLAN,
 * or from the fabric to another VSID: hairpin): look its record up straight
 * away, by routing domain and address, and route only those that have none
 * (or a domain where a route overrides part of a subnet: NVGW_RD_SHADOWED).
 * rdid and dst: p's, read by the caller before the domain's word, whose
 * acquiring load would make the compiler read them again. */
static inline void
dest_start(const struct nvgw_tables *t, struct pkt *p, uint32_t rdid, uint32_t dst)
{
	uint64_t lens = __atomic_load_n(t->rd_lens + rdid, __ATOMIC_ACQUIRE);

	if (lens & NVGW_RD_SHADOWED)
		return route_start(t, p, lens);
	p->direct = DEST_RECORD;
	p->key = nvgw_rec_key(rdid, dst);
	p->kb = nvgw_rtab_fetch(&t->records, p->key);
}

/* From the fabric, most packets go to a host on a link of their domain (the
 * gateway joins virtual to physical networks). Where the domain names a link
 * (rd_link) and the destination is in its subnet, which no other route
 * lies inside, the subnet's own route is the longest match: take its host by
 * number, as dest_key would, without the route lookup. 1 = settled so.
 * rdid and dst as dest_start's. */
static inline int
link_start(const struct nvgw_tables *t, struct pkt *p, uint32_t rdid, uint32_t dst)
{
	uint64_t link = __atomic_load_n(t->rd_link + rdid, __ATOMIC_ACQUIRE);
	const struct nvgw_attach *a;

	if (link == 0 || (nvgw_be32(dst) - NVGW_LINK_NET(link)) >> NVGW_LINK_BITS(link))
		return 0;
	/* the attachment itself decides, as it is now */
	a = __atomic_load_n(t->attach + NVGW_LINK_VLAN(link), __ATOMIC_ACQUIRE);
	if (a == NULL || a->rdid != rdid || !nvgw_attach_host(a, dst, &p->nh))
		return 0;
	p->direct = DEST_LINK;
	p->att = a;
	return 1;
}

/* Longest-prefix match for the burst, then the destinations, in bulk:
 * p[i].rv (0: no route), and the lookup records (p[i].rec) and link
 * neighbours (p[i].nh) of the packets d lists, NULL when not found. The
 * route of each packet's longest candidate length (route_start) usually
 * settles it; the packets that missed go round again, one bulk lookup per
 * length left, longest first. Each destination record's slot is fetched
 * as its route is found. */
static void
lookup_bulk(const struct nvgw_tables *t, struct pkt *p, uint16_t n, struct dest_keys *d)
{
	uint64_t keys[NVGW_BURST], data[NVGW_BURST], hits, retry = 0, v;
	uint16_t idx[NVGW_BURST], i, j, k;

	d->n_rec = d->n_nh = d->n_dst = 0;
	for (i = 0; i < n; i++) {
		if (p[i].direct == DEST_LINK)
			continue;
		if (p[i].direct == DEST_RECORD) {
			const struct nvgw_rec *r = nvgw_rtab_probe(&t->records, p[i].kb,
								      p[i].key);

			if (r != NULL) {
				p[i].rv = NVGW_ROUTE_PACKED;    /* as its subnet's route */
				p[i].rec = r;
				d->dst_idx[d->n_dst++] = i;
				continue;
			}
			p[i].rv = 0;
			p[i].left = route_lens(t, &p[i], t->rd_lens[p[i].rdid]);
			if (p[i].left)
				retry |= 1ULL << i;
		} else if (nvgw_htab_probe(&t->routes, p[i].rb, p[i].rkey, &v)) {
			p[i].rv = v;
			dest_key(t, d, &p[i], i);
		} else {
			p[i].rv = 0;
			if (p[i].left)
				retry |= 1ULL << i;
		}
	}
	while (retry) {
		uint64_t again = 0;

		for (k = 0; retry; retry &= retry - 1) {
			i = __builtin_ctzll(retry);
			keys[k] = next_route_key(&p[i].left, p[i].rdid, p[i].ip->dst_addr);
			idx[k++] = i;
		}
		hits = nvgw_htab_lookup_bulk(&t->routes, keys, k, data);
		for (j = 0; j < k; j++) {
			i = idx[j];
			if (hits & (1ULL << j)) {
				p[i].rv = data[j];
				dest_key(t, d, &p[i], i);
			} else if (p[i].left) {
				again |= 1ULL << i;
			}
		}
		retry = again;
	}
	/* A route's record must be in the route's VSID (a route names its
	 * appliance's VSID; the key has only the domain). */
	for (i = 0; i < d->n_rec; i++) {
		const struct nvgw_rec *r = nvgw_rtab_probe(&t->records, d->rec_s[i], d->rec[i]);

		j = d->rec_idx[i];
		p[j].rec = r != NULL && nvgw_rec_vsid(t, r) == nvgw_route_vsid(p[j].rv) ? r : NULL;
	}
	if (d->n_nh == 0)
		return;
	hits = nvgw_htab_lookup_bulk(&t->neigh, d->nh, d->n_nh, data);
	for (i = 0; i < d->n_nh; i++)
		p[d->nh_idx[i]].nh = hits & (1ULL << i) ?
				     (const struct nvgw_neigh *)(uintptr_t)data[i] : NULL;
}

/* What a burst sends, per output port, handed to the TX buffers at its end. */
struct out {
	uint16_t n[2];
	uint32_t bytes[2];
	struct rte_mbuf *m[2][NVGW_BURST];
};
enum { OUT_PROVIDER, OUT_CUSTOMER };

static inline void
out_init(struct out *o)
{
	o->n[OUT_PROVIDER] = o->n[OUT_CUSTOMER] = 0;
	o->bytes[OUT_PROVIDER] = o->bytes[OUT_CUSTOMER] = 0;
}

static inline void
out_add(struct out *o, int port, struct rte_mbuf *m, uint32_t len)
{
	o->m[port][o->n[port]++] = m;
	o->bytes[port] += len;
}

/* Make exactly `hdr` bytes of headers in front of the IPv4 packet of
 * ip_len bytes at ip, dropping any link padding after it: the new frame's
 * start, or NULL when the headroom is short. Single-segment mbufs only
 * (classify made sure), so no chain to walk. */
static inline uint8_t *
frame_at(struct rte_mbuf *m, const struct rte_ipv4_hdr *ip, uint16_t hdr, uint16_t ip_len)
{
	intptr_t off = (const uint8_t *)ip - (const uint8_t *)m->buf_addr - hdr;

	if (unlikely(off < 0))
		return NULL;
	m->data_off = (uint16_t)off;
	m->data_len = hdr + ip_len;
	m->pkt_len = hdr + ip_len;
	return (uint8_t *)m->buf_addr + off;
}

/* The checks read only what they need; the rest is read where it is
 * used, so that little stays live across them (spilled to the stack, it
 * would cost a store and a load each). The provider's MAC and MTU come as
 * values (read once a burst, pv_mac and pv_mtu): through pv, each packet
 * loaded pv again and then the field. Its outer headers' template
 * (pv_outer) is copied whole. */
static __rte_always_inline void
emit_nvgre(struct nvgw_worker *w, const struct nvgw_tables *t, const struct nvgw_outer *pv_outer,
	   uint64_t pv_mac, int pv_mtu, struct rte_mbuf *m, struct pkt *p, struct out *o)
{
	const struct nvgw_rec *r = p->rec;
	uint64_t vw = __atomic_load_n(t->vsid_word + nvgw_rec_vsid_idx(r), __ATOMIC_ACQUIRE);
	struct rte_ipv4_hdr *ip = p->ip;
	uint16_t ip_len = nvgw_be16(ip->total_length);
	uint64_t mac = __atomic_load_n(&nvgw_rec_nh(t, r)->mac, __ATOMIC_ACQUIRE);
	struct nvgw_count *vc;
	uint32_t flowid;
	uint8_t *h;

	if (unlikely(!(vw & NVGW_VW_VALID)))
		return nvgw_drop(w, NVGW_DROP_no_lookup_record, m);
	if (unlikely(!(mac & NVGW_NEIGH_VALID))) {
		w->drops[NVGW_DROP_no_neighbour]++;
		punt(w, m, EXC(NVGW_EXC_RESOLVE, NVGW_SCOPE_PROVIDER), nvgw_rec_nh(t, r)->ip);
		return;
	}
	if (unlikely(ip_len + NVGW_NVGRE_LEN - NVGW_ETH_LEN > pv_mtu)) {
		w->drops[NVGW_DROP_mtu_exceeded]++;
		if (p->in_vlan && (ip->fragment_offset & nvgw_be16(RTE_IPV4_HDR_DF_FLAG)))
			punt(w, m, EXC(NVGW_EXC_FRAG_NEEDED, p->in_vlan),
			     pv_mtu - (NVGW_NVGRE_LEN - NVGW_ETH_LEN));
		else
			rte_pktmbuf_free(m);
		return;
	}
	flowid = vw & NVGW_VW_FLOWID_FIXED ? nvgw_be32(NVGW_VW_FLOWID(vw)) :
						 nvgw_flowid_key(ip, p->hl, ip_len);
	h = frame_at(m, ip, NVGW_NVGRE_LEN, ip_len);
	if (unlikely(h == NULL))
		return nvgw_drop(w, NVGW_DROP_no_headroom, m);
	vc = nvgw_vsid_count(w, NVGW_DIR_ENCAP, nvgw_rec_vsid_idx(r));
	vc->pkts++;
	vc->bytes += NVGW_ETH_LEN + ip_len;
	out_add(o, OUT_PROVIDER, m, NVGW_NVGRE_LEN + ip_len);
	nvgw_nvgre_header(h, pv_outer, nvgw_rec_pa(r),
			  NVGW_VK_KEY(t->vsid_key[nvgw_rec_vsid_idx(r)]), mac,
			  pv_mac, nvgw_load64(nvgw_rec_mac(r)), vw, ip_len, flowid);
	nvgw_ttl_dec(ip);
}

/* Toward a rewritten VM: our PA for the (customer-side) source, the VM's
 * PA for the destination; no extra header. Read as emit_nvgre. */
static __rte_always_inline void
emit_rewrite(struct nvgw_worker *w, const struct nvgw_tables *t, uint64_t pv_mac, int pv_mtu,
	     struct rte_mbuf *m, struct pkt *p, struct out *o)
{
	const struct nvgw_rec *r = p->rec;
	struct rte_ipv4_hdr *ip = p->ip;
	uint16_t ip_len = nvgw_be16(ip->total_length);
	uint32_t src_pa = p->src_pa;
	uint64_t mac = __atomic_load_n(&nvgw_rec_nh(t, r)->mac, __ATOMIC_ACQUIRE);
	struct nvgw_count *vc;
	struct rte_ether_hdr *eth;

	if (unlikely(src_pa == 0))
		return nvgw_drop(w, NVGW_DROP_no_rewrite_mapping, m);
	if (unlikely(!(mac & NVGW_NEIGH_VALID))) {
		w->drops[NVGW_DROP_no_neighbour]++;
		punt(w, m, EXC(NVGW_EXC_RESOLVE, NVGW_SCOPE_PROVIDER), nvgw_rec_nh(t, r)->ip);
		return;
	}
	if (unlikely(ip_len > pv_mtu)) {
		w->drops[NVGW_DROP_mtu_exceeded]++;
		if (p->in_vlan && (ip->fragment_offset & nvgw_be16(RTE_IPV4_HDR_DF_FLAG)))
			punt(w, m, EXC(NVGW_EXC_FRAG_NEEDED, p->in_vlan), pv_mtu);
		else
			rte_pktmbuf_free(m);
		return;
	}
	eth = (struct rte_ether_hdr *)frame_at(m, ip, NVGW_ETH_LEN, ip_len);
	if (unlikely(eth == NULL))
		return nvgw_drop(w, NVGW_DROP_no_headroom, m);
	vc = nvgw_vsid_count(w, NVGW_DIR_REWRITE_OUT, nvgw_rec_vsid_idx(r));
	vc->pkts++;
	vc->bytes += ip_len;
	out_add(o, OUT_PROVIDER, m, NVGW_ETH_LEN + ip_len);
	nvgw_eth_write(eth, mac, pv_mac, nvgw_be16(RTE_ETHER_TYPE_IPV4));
	nvgw_ttl_dec(ip);
	/* the packet is whole in the frame (classify checked), which now ends
	 * with it (frame_at) */
	nvgw_rewrite_len(ip, p->hl, ip_len - p->hl, src_pa, nvgw_rec_pa(r));
}

/* Onto the link of attachment a, to its neighbour nh: NULL or unresolved,
 * ask for nh_ip (0: the packet's destination, read only then). */
static inline void
emit_link(struct nvgw_worker *w, struct rte_mbuf *m, struct pkt *p, struct out *o,
	  const struct nvgw_attach *a, const struct nvgw_neigh *nh, uint32_t nh_ip)
{
	struct rte_ipv4_hdr *ip = p->ip;
	uint16_t ip_len = nvgw_be16(ip->total_length);
	uint64_t mac = nh ? __atomic_load_n(&nh->mac, __ATOMIC_ACQUIRE) : 0;
	uint8_t *h;

	if (unlikely(!(mac & NVGW_NEIGH_VALID))) {
		w->drops[NVGW_DROP_no_neighbour]++;
		punt(w, m, EXC(NVGW_EXC_RESOLVE, a->vlan), nh_ip ? nh_ip : ip->dst_addr);
		return;
	}
	/* a NIC drops a frame past its MTU unseen: count it here */
	if (unlikely(ip_len > w->ctx->customer_mtu))
		return nvgw_drop(w, NVGW_DROP_mtu_exceeded, m);
	h = frame_at(m, ip, NVGW_VLAN_ETH_LEN, ip_len);
	if (unlikely(h == NULL))
		return nvgw_drop(w, NVGW_DROP_no_headroom, m);
	out_add(o, OUT_CUSTOMER, m, NVGW_VLAN_ETH_LEN + ip_len);
	nvgw_ttl_dec(ip);
	nvgw_vlan_eth_write(h, mac, a->mac_w, a->tag_w);
}

/* By a CUSTOMER route: its next hop, else the destination on the link. */
static inline void
emit_customer(struct nvgw_worker *w, const struct nvgw_tables *t,
	      struct rte_mbuf *m, struct pkt *p, struct out *o)
{
	const struct nvgw_route *rt = (const struct nvgw_route *)(uintptr_t)p->rv;
	const struct nvgw_attach *a = t->attach[rt->vlan];

	if (unlikely(a == NULL || a->rdid != p->rdid))
		return nvgw_drop(w, NVGW_DROP_no_route, m);
	emit_link(w, m, p, o, a, rt->nh ? rt->nh : p->nh, rt->nh_ip);
}

/* Emit writes headers in place: single-segment mbufs only. 0 = dropped. */
static inline int
one_segment(struct nvgw_worker *w, struct rte_mbuf *m)
{
	if (likely(m->nb_segs == 1))
		return 1;
	nvgw_drop(w, NVGW_DROP_multi_segment, m);
	return 0;
}

/* From the fabric, after classify: anti-spoofing (r: the record of the
 * inner source, NULL when it has none), the VSID's counters, then what
 * its destination allows. gw: the packet may be for the subnet gateway
 * itself (rdid 0), which link_start never settles (no link is in domain
 * 0). 0 = dropped or punted. */
static __rte_always_inline int
source_rec_ok(struct nvgw_worker *w, const struct pkt *p, struct rte_mbuf *m, int gw,
	      const struct nvgw_rec *r)
{
	struct nvgw_count *vc;

	if (!nvgw_rec_lives_at(r, p->outer_src, p->src_slot)) {
		nvgw_drop(w, NVGW_DROP_spoofed_pa, m);
		return 0;
	}
	vc = nvgw_vsid_count(w, NVGW_DIR_DECAP, nvgw_rec_vsid_idx(r));
	vc->pkts++;
	vc->bytes += NVGW_ETH_LEN + nvgw_be16(p->ip->total_length);
	if (gw && p->rdid == 0) {           /* for the subnet gateway */
		if (p->ip->next_proto_id != IPPROTO_ICMP)
			nvgw_drop(w, NVGW_DROP_not_icmp_to_gateway, m);
		else
			to_exception(w, m, EXC(NVGW_EXC_LOCAL_VSID, nvgw_rec_vsid_idx(r)), 0);
		return 0;
	}
	if (p->ip->time_to_live <= 1) {
		nvgw_drop(w, NVGW_DROP_ttl_expired, m);
		return 0;
	}
	return 1;
}

/* The same for a packet not yet probed: its source's record read in the
 * slot fetched at classify. A packet that came by IP rewrite was checked
 * in classify_rewrite. */
static __rte_always_inline int
source_ok(struct nvgw_worker *w, const struct nvgw_tables *t, const struct pkt *p,
	  struct rte_mbuf *m, int gw)
{
	if (p->rewritten)
		return 1;
	return source_rec_ok(w, p, m, gw, nvgw_rtab_probe(&t->records, p->src_kb, p->src_key));
}

/* While the burst's packets have the record of their destination fetched
 * at classify (dest_start), each goes out at once, without the route
 * lookup's bookkeeping. Returns how many did: from the first packet
 * without one (no record, or a domain whose routes come first) the rest of
 * the burst takes lookup_bulk, so that a flow whose path changes in
 * mid-burst (policy being applied) keeps its order. fabric: packets from
 * the fabric, each checked (source_ok) as it goes; those settled on a link
 * at classify (DEST_LINK) go with them. */
static __rte_always_inline uint16_t
emit_direct(struct nvgw_worker *w, const struct nvgw_tables *t, const struct nvgw_provider *pv,
	    struct pkt *p, uint16_t n, struct out *o, int fabric)
{
	uint64_t v, pv_mac = pv->mac_w;
	int pv_mtu = pv->mtu;
	uint16_t i, k;

	/* Probes first, in a loop of their own: with a million records, the
	 * slots' misses (started at classify) then overlap each other instead
	 * of each waiting behind the previous packet's emit. So does the
	 * fetch of our PA for an IP rewrite's source (its method is in the
	 * slot's line; a live slot's record never changes, rtab.h, so emit
	 * reads the same method and finds wkey set). */
	for (k = 0; k < n; k++) {
		const struct nvgw_rec *r;

		if (fabric && p[k].direct == DEST_LINK)
			continue;
		if (p[k].direct != DEST_RECORD)
			break;
		r = nvgw_rtab_probe(&t->records, p[k].kb, p[k].key);
		if (unlikely(r == NULL))
			break;                      /* lookup_bulk routes it */
		p[k].rec = r;
		if (nvgw_rec_method(r) != NVGW_ENCAP) {
			p[k].wkey = nvgw_rw_key(p[k].rdid, p[k].ip->src_addr);
			p[k].wb = nvgw_htab_fetch(&t->rw_gw, p[k].wkey);
		}
	}
	for (i = 0; i < k; i++) {
		const struct nvgw_rec *r;

		if (fabric) {
			if (!source_ok(w, t, &p[i], p[i].m, 1))
				continue;
			if (p[i].direct == DEST_LINK) {
				emit_link(w, p[i].m, &p[i], o, p[i].att, p[i].nh, 0);
				continue;
			}
		}
		r = p[i].rec;
		if (likely(nvgw_rec_method(r) == NVGW_ENCAP)) {
			emit_nvgre(w, t, &pv->outer, pv_mac, pv_mtu, p[i].m, &p[i], o);
		} else {
			p[i].src_pa = nvgw_htab_probe(&t->rw_gw, p[i].wb, p[i].wkey, &v) ?
				      (uint32_t)v : 0;
			emit_rewrite(w, t, pv_mac, pv_mtu, p[i].m, &p[i], o);
		}
	}
	return k;
}

/* After the lookups (d): what emit reads through the records (with a
 * million records, their slots were misses, started in the lookup): next
 * hop, the VSID's word and counters; for IP rewrite, our PA standing for
 * the source, in bulk. Then each packet left (m not NULL) is emitted. */
static __rte_always_inline void
emit_routed(struct nvgw_worker *w, const struct nvgw_tables *t,
	    const struct nvgw_provider *pv, struct pkt *p, uint16_t k,
	    const struct dest_keys *d, struct out *o)
{
	uint64_t wkeys[NVGW_BURST], wdata[NVGW_BURST], pv_mac = pv->mac_w;
	int pv_mtu = pv->mtu;
	uint16_t i, x, c, widx[NVGW_BURST];

	for (x = 0, c = 0; x < d->n_dst; x++) {
		const struct nvgw_rec *r;

		i = d->dst_idx[x];
		r = p[i].rec;
		if (r == NULL || p[i].m == NULL)
			continue;
		rte_prefetch0(nvgw_rec_nh(t, r));
		if (nvgw_rec_method(r) == NVGW_ENCAP) {
			rte_prefetch0(&t->vsid_word[nvgw_rec_vsid_idx(r)]);
			rte_prefetch0(nvgw_vsid_count(w, NVGW_DIR_ENCAP, nvgw_rec_vsid_idx(r)));
		} else {
			rte_prefetch0(nvgw_vsid_count(w, NVGW_DIR_REWRITE_OUT, nvgw_rec_vsid_idx(r)));
			wkeys[c] = nvgw_rw_key(p[i].rdid, p[i].ip->src_addr);
			widx[c++] = i;
		}
	}
	if (c) {
		uint64_t whits = nvgw_htab_lookup_bulk(&t->rw_gw, wkeys, c, wdata);

		for (x = 0; x < c; x++)
			p[widx[x]].src_pa = whits & (1ULL << x) ? (uint32_t)wdata[x] : 0;
	}
	for (i = 0; i < k; i++) {
		struct rte_mbuf *m = p[i].m;

		if (m == NULL)
			continue;
		if (p[i].direct == DEST_LINK)
			emit_link(w, m, &p[i], o, p[i].att, p[i].nh, 0);
		else if (p[i].rv == 0)
			nvgw_drop(w, NVGW_DROP_no_route, m);
		else if (!(p[i].rv & NVGW_ROUTE_PACKED))
			emit_customer(w, t, m, &p[i], o);
		else if (p[i].rec == NULL)
			nvgw_drop(w, NVGW_DROP_no_lookup_record, m);
		else if (nvgw_rec_method(p[i].rec) == NVGW_ENCAP)
			emit_nvgre(w, t, &pv->outer, pv_mac, pv_mtu, m, &p[i], o);
		else
			emit_rewrite(w, t, pv_mac, pv_mtu, m, &p[i], o);
	}
}

static inline void
send_out(struct nvgw_worker *w, struct out *o)
{
	nvgw_tx_bulk(w, w->ctx->provider_port, o->m[OUT_PROVIDER], o->n[OUT_PROVIDER],
		     o->bytes[OUT_PROVIDER]);
	nvgw_tx_bulk(w, w->ctx->customer_port, o->m[OUT_CUSTOMER], o->n[OUT_CUSTOMER],
		     o->bytes[OUT_CUSTOMER]);
}

/* From the fabric: classify (NVGRE or IP rewrite), fetching the inner
 * source's record, and either the host on the domain's link (link_start)
 * or the destination's record (dest_start: hairpin to another VSID, else
 * the route). A burst all to the links' hosts (the usual one) then takes
 * its anti-spoofing probes in one pass and its checks and emit in the
 * next; otherwise those and the packets
 * whose record is there leave as a customer burst's do (emit_direct), and
 * the rest take the destinations in bulk, then anti-spoofing, then emit.
 * One function per ingress: each loop is compiled for its own side. */
static __rte_noinline void
fabric_burst(struct nvgw_worker *w, const struct nvgw_tables *t,
	     const struct nvgw_provider *pv, struct rte_mbuf **pkts, uint16_t n)
{
	struct pkt p[NVGW_BURST], *q = p;     /* q: the next packet kept */
	struct dest_keys d;
	struct out o;
	uint32_t dst;
	uint16_t i, j, k, routed = 0;

	for (i = 0; i < n; i++) {
		if (!one_segment(w, pkts[i]) || !classify_provider(w, t, pv, pkts[i], q, &dst))
			continue;
		if (!link_start(t, q, q->rdid, dst)) {
			dest_start(t, q, q->rdid, dst);
			routed++;
		}
		q->m = pkts[i];
		q++;
	}
	k = q - p;
	if (k == 0)
		return;
	out_init(&o);
	if (routed == 0) {          /* every packet to a host on its domain's link */
		/* the sources' records first, in a pass of their own: with a
		 * million records their misses then overlap (as emit_direct's) */
		for (i = 0; i < k; i++)
			if (!p[i].rewritten)
				p[i].src_rec = nvgw_rtab_probe(&t->records, p[i].src_kb,
							       p[i].src_key);
		for (i = 0; i < k; i++)
			if (p[i].rewritten || source_rec_ok(w, &p[i], p[i].m, 0, p[i].src_rec))
				emit_link(w, p[i].m, &p[i], &o, p[i].att, p[i].nh, 0);
	} else if ((i = emit_direct(w, t, pv, p, k, &o, 1)) < k) {
		lookup_bulk(t, p + i, k - i, &d);
		/* the records' slots arrived during the lookups; a packet dropped
		 * leaves a hole (m = NULL) rather than moving the rest */
		for (j = i; j < k; j++)
			if (!source_ok(w, t, &p[j], p[j].m, 1))
				p[j].m = NULL;
		emit_routed(w, t, pv, p + i, k - i, &d, &o);
	}
	send_out(w, &o);
}

/* From a customer VLAN: classify, fetching the destination's record (or
 * its route); most packets go to a CA whose record is there and leave at
 * once (emit_direct); the rest of the burst takes routes, lookup records
 * of destinations in virtual subnets and neighbours of customer
 * destinations on a link, in bulk. */
static __rte_noinline void
customer_burst(struct nvgw_worker *w, const struct nvgw_tables *t,
	       const struct nvgw_provider *pv, struct rte_mbuf **pkts, uint16_t n)
{
	struct pkt p[NVGW_BURST], *q = p;     /* q: the next packet kept */
	struct dest_keys d;
	struct out o;
	uint16_t i, k;

	for (i = 0; i < n; i++) {
		if (!one_segment(w, pkts[i]) || !classify_customer(w, t, pkts[i], q))
			continue;
		dest_start(t, q, q->rdid, q->ip->dst_addr);
		q->m = pkts[i];
		q++;
	}
	k = q - p;
	if (k == 0)
		return;
	out_init(&o);
	i = emit_direct(w, t, pv, p, k, &o, 0);
	if (i < k) {
		lookup_bulk(t, p + i, k - i, &d);
		emit_routed(w, t, pv, p + i, k - i, &d, &o);
	}
	send_out(w, &o);
}

void
nvgw_nvgre_burst(struct nvgw_worker *w, uint16_t in_port, struct rte_mbuf **pkts, uint16_t n)
{
	const struct nvgw_tables *t = w->ctx->t;
	const struct nvgw_provider *pv = __atomic_load_n(&t->prov, __ATOMIC_ACQUIRE);
	uint16_t i;

	if (unlikely(pv == NULL)) {
		for (i = 0; i < n; i++)
			nvgw_drop(w, NVGW_DROP_no_policy, pkts[i]);
		return;
	}
	if (in_port == w->ctx->provider_port)
		fabric_burst(w, t, pv, pkts, n);
	else if (in_port == w->ctx->customer_port)
		customer_burst(w, t, pv, pkts, n);
	else
		for (i = 0; i < n; i++)
			nvgw_drop(w, NVGW_DROP_no_tx_port, pkts[i]);
}
