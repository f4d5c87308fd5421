/* libFuzzer harness for the packet path: the NVGRE/rewrite pipeline and the
 * exception handler, on one frame per input (first byte: 0 = from the
 * fabric, 1 = from the customer port; the rest: the frame).
 *
 * DPDK's hash tables and mempools live in EAL memory, so EAL is started
 * once per fuzzer process (no hugepages, no PCI, no shared files); the
 * ports are net_ring devices whose TX rings we read back. Every input is
 * checked against invariants, and any breach aborts (a finding):
 *   - every mbuf comes back (no leak), outputs are single, sane frames;
 *   - IPv4 headers that leave have consistent lengths and valid checksums
 *     (outer ones always; inner ones whenever the input's was valid);
 *   - NVGRE that leaves has flags 0x2000, protocol 0x6558, a configured
 *     VSID and no inner 802.1Q tag;
 *   - a packet leaves only toward the tenant it came from: the routing
 *     domain of the output VSID or VLAN equals that of the input's.
 * The policy mirrors config/redblue-policy.json plus hairpin, rewrite and
 * appliance pieces, so every path is reachable. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include "nvgw.h"
#include "pkt.h"
#include "tables.h"

#define PROV 0
#define CUST 1
#define CHECK(cond, what) do { if (!(cond)) { \
	fprintf(stderr, "invariant broken: %s (%s:%d)\n", what, __FILE__, __LINE__); \
	abort(); } } while (0)

static struct rte_mempool *pool;
static struct rte_ring *txr[2];
static struct nvgw_ctx *ctx;
static struct nvgw_worker *w;
static int quit;

static const uint8_t PMAC[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0xaa };
static const uint8_t CMAC[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0xbb };

static uint32_t
ip4(const char *s)
{
	uint32_t a, b, c, d;

	sscanf(s, "%u.%u.%u.%u", &a, &b, &c, &d);
	return rte_cpu_to_be_32(a << 24 | b << 16 | c << 8 | d);
}

static const uint8_t *
mac(uint8_t last)
{
	static uint8_t m[8][6];
	static int i;
	uint8_t *r = m[i++ & 7];

	memcpy(r, (uint8_t[6]){ 0x00, 0x15, 0x5d, 0x00, 0x00, last }, 6);
	return r;
}

/* Tenant of a VSID or VLAN (its routing domain), 0 if none. */
static uint32_t
rd_of_vsid(uint32_t vsid)
{
	return vsid == 5001 || vsid == 5002 ? 1 : vsid == 6001 ? 2 : 0;
}

static uint32_t
rd_of_vlan(uint16_t vlan)
{
	return vlan == 100 ? 1 : vlan == 200 ? 2 : 0;
}

static void
policy(struct nvgw_tables *t)
{
	uint32_t pa = ip4("192.168.1.1");
	int rc = 0;

	rc |= nvgw_provider_set(t, &pa, 1, ip4("255.255.255.0"), 0, 1500, PMAC);
	rc |= nvgw_vsid_set(t, 5001, 1, ip4("10.1.1.1"), PMAC, -1, 0);
	rc |= nvgw_vsid_set(t, 5002, 1, ip4("10.1.2.1"), PMAC, 7, 1);
	rc |= nvgw_vsid_set(t, 6001, 2, ip4("10.1.1.1"), PMAC, -1, 2);
	/* never in the directory: the usual frame's parse leaves them to it */
	CHECK(nvgw_vsid_set(t, 0xFFF, 1, ip4("10.1.3.1"), PMAC, -1, 3) == -EINVAL &&
	      nvgw_vsid_set(t, 0xFFFFFF, 1, ip4("10.1.3.1"), PMAC, -1, 3) == -EINVAL,
	      "reserved VSIDs refused");
	/* A counter slot goes to a new VSID only when free, and a grace period
	 * after its last VSID's delete (readers rely on it). */
	rc |= nvgw_vsid_set(t, 7001, 3, ip4("10.7.0.1"), PMAC, -1, 9);
	CHECK(nvgw_vsid_set(t, 7002, 3, ip4("10.7.0.1"), PMAC, -1, 9) == -EINVAL,
	      "a slot in use refused");
	rc |= nvgw_vsid_del(t, 7001);
	CHECK(nvgw_vsid_set(t, 7002, 3, ip4("10.7.0.1"), PMAC, -1, 9) == -EBUSY,
	      "a slot freed in this batch refused");
	nvgw_tables_commit(t);
	/* 7002 and 7003 come and go on slot 9 again in stale_slot_check(). */
	rc |= nvgw_vsid_set(t, 7002, 3, ip4("10.7.0.1"), PMAC, -1, 9);
	rc |= nvgw_vsid_del(t, 7002);
	rc |= nvgw_route_set(t, 1, ip4("10.1.1.0"), 24, NVGW_ROUTE_VSUBNET, 5001, 0, 0);
	rc |= nvgw_route_set(t, 1, ip4("10.1.2.0"), 24, NVGW_ROUTE_VSUBNET, 5002, 0, 0);
	rc |= nvgw_route_set(t, 2, ip4("10.1.1.0"), 24, NVGW_ROUTE_VSUBNET, 6001, 0, 0);
	rc |= nvgw_route_set(t, 1, ip4("172.16.1.0"), 24, NVGW_ROUTE_CUSTOMER, 0, 100, 0);
	rc |= nvgw_route_set(t, 2, ip4("172.16.2.0"), 24, NVGW_ROUTE_CUSTOMER, 0, 200, 0);
	rc |= nvgw_route_set(t, 1, ip4("10.9.0.0"), 16, NVGW_ROUTE_APPLIANCE, 5001, 0,
			     ip4("10.1.1.50"));
	rc |= nvgw_route_set(t, 2, 0, 0, NVGW_ROUTE_CUSTOMER, 0, 200, ip4("172.16.2.254"));
	/* Domain 2 has a route inside its subnet: its customer packets route first. */
	rc |= nvgw_route_set(t, 2, ip4("10.1.1.32"), 28, NVGW_ROUTE_CUSTOMER, 0, 200, 0);
	rc |= nvgw_rd_shadow_set(t, 2, 1);
	rc |= nvgw_attach_set(t, 100, 1, ip4("172.16.1.1"), ip4("255.255.255.0"), CMAC);
	rc |= nvgw_attach_set(t, 200, 2, ip4("172.16.2.1"), ip4("255.255.255.0"), CMAC);
	/* Both links hold no other route: decap reaches their hosts directly. */
	rc |= nvgw_rd_link_set(t, 1, 100);
	rc |= nvgw_rd_link_set(t, 2, 200);
	rc |= nvgw_record_set(t, 5001, ip4("10.1.1.7"), mac(7), ip4("192.168.1.10"), NVGW_ENCAP);
	rc |= nvgw_record_set(t, 5001, ip4("10.1.1.50"), mac(50), ip4("192.168.1.10"), NVGW_ENCAP);
	rc |= nvgw_record_set(t, 5002, ip4("10.1.2.5"), mac(5), ip4("192.168.1.12"), NVGW_ENCAP);
	rc |= nvgw_record_set(t, 6001, ip4("10.1.1.7"), mac(8), ip4("192.168.1.11"), NVGW_ENCAP);
	rc |= nvgw_record_set(t, 5001, ip4("10.1.1.9"), mac(9), ip4("192.168.1.30"), NVGW_REWRITE);
	rc |= nvgw_rw_set(t, ip4("192.168.1.30"), ip4("10.1.1.9"), 1, 0, 0);
	rc |= nvgw_rw_set(t, ip4("192.168.1.100"), ip4("172.16.1.10"), 1, 0, 1);
	rc |= nvgw_record_set(t, 6001, ip4("10.1.1.20"), mac(20), ip4("192.168.1.20"), NVGW_ENCAP);
	/* 192.168.1.20 stays unresolved: the no_neighbour path ARPs for it. */
	nvgw_neigh_set(t, 0, ip4("192.168.1.10"), mac(0x10), 0);
	nvgw_neigh_set(t, 0, ip4("192.168.1.11"), mac(0x11), 0);
	nvgw_neigh_set(t, 0, ip4("192.168.1.12"), mac(0x12), 0);
	nvgw_neigh_set(t, 0, ip4("192.168.1.30"), mac(0x30), 0);
	nvgw_neigh_set(t, 100, ip4("172.16.1.10"), mac(0xa0), 0);
	nvgw_neigh_set(t, 200, ip4("172.16.2.254"), mac(0xfe), 0);
	nvgw_tables_commit(t);
	if (rc != 0) {
		fprintf(stderr, "fuzz policy failed\n");
		exit(1);
	}
}

static uint16_t
ring_port(const char *name, int i)
{
	struct rte_ring *rx;
	char n[32];
	int port;

	snprintf(n, sizeof(n), "%s_rx", name);
	rx = rte_ring_create(n, 64, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
	snprintf(n, sizeof(n), "%s_tx", name);
	txr[i] = rte_ring_create(n, 1024, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
	port = rte_eth_from_rings(name, &rx, 1, &txr[i], 1, 0);
	if (port != i) {
		fprintf(stderr, "ring port %s is %d, wanted %d\n", name, port, i);
		exit(1);
	}
	return port;
}

/* An ARP inside NVGRE for VSID 7002's gateway, as a fabric host sends it. */
static struct rte_mbuf *
vsid_arp(void)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(pool);
	uint8_t *f = (uint8_t *)rte_pktmbuf_append(m, 14 + 20 + 8 + 14 + 28);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(f + 14);
	uint8_t *in = f + 14 + 20 + 8;
	uint32_t gre[2] = { rte_cpu_to_be_32(0x20006558), rte_cpu_to_be_32(7002 << 8) };
	uint32_t sip = ip4("10.7.0.5"), tip = ip4("10.7.0.1");

	memset(f, 0, m->data_len);
	memcpy(f, PMAC, 6);
	memcpy(f + 6, mac(0x10), 6);
	f[12] = 0x08;
	ip->version_ihl = 0x45;
	ip->total_length = rte_cpu_to_be_16(20 + 8 + 14 + 28);
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_GRE;
	ip->src_addr = ip4("192.168.1.10");
	ip->dst_addr = ip4("192.168.1.1");
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	memcpy(ip + 1, gre, 8);
	memset(in, 0xFF, 6);
	memcpy(in + 6, mac(0x70), 6);
	memcpy(in + 12, (uint8_t[]){ 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1 }, 10);
	memcpy(in + 22, mac(0x70), 6);
	memcpy(in + 28, &sip, 4);
	memcpy(in + 38, &tip, 4);
	m->port = PROV;
	return m;
}

/* Run what the exception ring holds; return the frames it injected. */
static unsigned int
exceptions(void)
{
	unsigned int n = 0;
	void *obj;

	while (rte_ring_sc_dequeue(ctx->exc, &obj) == 0)
		nvgw_exc_handle(ctx, obj);
	while (rte_ring_sc_dequeue(ctx->inject, &obj) == 0) {
		rte_pktmbuf_free(obj);
		n++;
	}
	return n;
}

/* A packet queued for the exception thread names its VSID by counter slot.
 * If it waits there across a grace period in which its VSID is deleted and
 * the slot given to another VSID, it must not be answered as that one. */
static void
stale_slot_check(void)
{
	struct nvgw_tables *t = ctx->t;
	struct rte_mbuf *m;

	CHECK(nvgw_vsid_set(t, 7002, 3, ip4("10.7.0.1"), PMAC, -1, 9) == 0, "VSID 7002 set");
	/* the ARP's sender, at the outer source: ARP inside NVGRE is anti-spoofed */
	CHECK(nvgw_record_set(t, 7002, ip4("10.7.0.5"), mac(0x70), ip4("192.168.1.10"),
			      NVGW_ENCAP) == 0, "the sender's record set");
	nvgw_tables_commit(t);
	m = vsid_arp();
	nvgw_nvgre_burst(w, PROV, &m, 1);
	CHECK(exceptions() == 1 && ctx->c.arp_replies == 1, "the VSID's gateway answers ARP");
	m = vsid_arp();
	nvgw_nvgre_burst(w, PROV, &m, 1);
	CHECK(rte_ring_count(ctx->exc) == 1, "the ARP waits for the exception thread");
	CHECK(nvgw_record_del(t, 7002, ip4("10.7.0.5")) == 0, "the sender's record deleted");
	CHECK(nvgw_vsid_del(t, 7002) == 0, "VSID 7002 deleted");
	nvgw_tables_commit(t);
	CHECK(nvgw_vsid_set(t, 7003, 3, ip4("10.7.0.1"), PMAC, -1, 9) == 0,
	      "VSID 7003 on the freed slot");
	nvgw_tables_commit(t);
	CHECK(exceptions() == 0 && ctx->c.arp_replies == 1 && ctx->c.ignored == 1,
	      "a deleted VSID's ARP is not answered as its slot's new VSID");
	CHECK(nvgw_vsid_del(t, 7003) == 0, "VSID 7003 deleted");
	nvgw_tables_commit(t);
	memset(&ctx->c, 0, sizeof(ctx->c));
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char *args[] = { "fuzz", "--no-huge", "-m", "256", "--no-pci", "--no-shconf",
			 "--log-level=error", "-l", "0", "--no-telemetry", NULL };
	struct nvgw_table_sizes sz = { 4096, 4096, 1024, 1024, 1 };
	int i;

	(void)argc;
	(void)argv;
	if (rte_eal_init(RTE_DIM(args) - 1, args) < 0) {
		fprintf(stderr, "EAL init failed\n");
		exit(1);
	}
	pool = rte_pktmbuf_pool_create("fuzz", 2048, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
	ring_port("fzprov", PROV);
	ring_port("fzcust", CUST);
	ctx = rte_zmalloc(NULL, sizeof(*ctx), 64);
	w = rte_zmalloc(NULL, sizeof(*w), 64);
	if (pool == NULL || ctx == NULL || w == NULL || nvgw_tables_create(&ctx->t, &sz, 0)) {
		fprintf(stderr, "fuzz setup failed\n");
		exit(1);
	}
	ctx->exc = rte_ring_create("fzexc", 1024, 0, RING_F_SC_DEQ);
	ctx->inject = rte_ring_create("fzinj", 1024, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
	ctx->pool = pool;
	ctx->provider_port = PROV;
	ctx->customer_port = CUST;
	ctx->customer_mtu = 1500;
	policy(ctx->t);
	w->ctx = ctx;
	w->quit = &quit;
	w->n_ports = 2;
	w->n_workers = 1;
	w->pipeline = NVGW_PIPE_NVGRE;
	w->vsid[0] = rte_zmalloc(NULL, NVGW_DIRS * NVGW_MAX_VSIDS * sizeof(struct nvgw_count), 64);
	for (i = 1; i < NVGW_DIRS; i++)
		w->vsid[i] = w->vsid[0] + i * NVGW_MAX_VSIDS;
	stale_slot_check();
	return 0;
}

/* Which routing domain a frame entering on `port` belongs to (0: none). */
static uint32_t
tenant_in(const uint8_t *f, size_t len, int port)
{
	const struct rte_ether_hdr *eth = (const void *)f;

	if (len < 18)
		return 0;
	if (port == CUST)
		return eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_VLAN) ?
		       rd_of_vlan(rte_be_to_cpu_16(*(const nvgw_u16 *)(f + 14)) & 0xFFF) : 0;
	if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))
		return 0;
	const struct rte_ipv4_hdr *ip = (const void *)(f + 14);
	unsigned int hl = (ip->version_ihl & 0xf) * 4;

	if (ip->next_proto_id == IPPROTO_GRE && len >= 14 + hl + 8)
		return rd_of_vsid(rte_be_to_cpu_32(*(const nvgw_u32 *)(f + 14 + hl + 4)) >> 8);
	if (ip->dst_addr == ip4("192.168.1.100"))
		return 1;                       /* our rewrite PA for Blue's host */
	return 0;
}

/* Check one frame the gateway sent on `port`; return its tenant (0: the
 * gateway's own traffic: ARP, ICMP from our PA, a plain rewrite packet). */
static uint32_t
check_output(struct rte_mbuf *m, int port)
{
	const uint8_t *f = rte_pktmbuf_mtod(m, const uint8_t *);
	uint32_t len = m->pkt_len;
	const struct rte_ether_hdr *eth = (const void *)f;
	uint16_t type;
	uint32_t off = 14, tenant = 0;

	CHECK(m->nb_segs == 1 && m->data_len == len, "one segment, lengths agree");
	CHECK(len >= 14, "a whole Ethernet header");
	type = eth->ether_type;
	if (port == CUST) {
		CHECK(type == rte_cpu_to_be_16(RTE_ETHER_TYPE_VLAN), "customer frames are tagged");
		CHECK(len >= 18, "a whole 802.1Q header");
		tenant = rd_of_vlan(rte_be_to_cpu_16(*(const nvgw_u16 *)(f + 14)) & 0xFFF);
		CHECK(tenant != 0, "a configured VLAN");
		type = *(const nvgw_u16 *)(f + 16);
		off = 18;
	}
	if (type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP))
		return tenant;
	CHECK(type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4), "IPv4 or ARP");
	const struct rte_ipv4_hdr *ip = (const void *)(f + off);
	unsigned int hl = nvgw_ipv4_ok(ip, len - off);

	CHECK(hl != 0, "a sane IPv4 header");
	CHECK(off + rte_be_to_cpu_16(ip->total_length) == len, "no bytes after the IP packet");
	if (port == PROV && ip->next_proto_id == IPPROTO_GRE) {
		const nvgw_u16 *gre = (const void *)(f + off + hl);
		const struct rte_ether_hdr *ieth = (const void *)(f + off + hl + 8);

		CHECK(rte_raw_cksum(ip, hl) == 0xFFFF, "outer checksum valid");
		CHECK(gre[0] == rte_cpu_to_be_16(0x2000), "GRE flags 0x2000");
		CHECK(gre[1] == rte_cpu_to_be_16(RTE_ETHER_TYPE_TEB), "GRE protocol 0x6558");
		tenant = rd_of_vsid(rte_be_to_cpu_32(*(const nvgw_u32 *)(gre + 2)) >> 8);
		CHECK(tenant != 0, "a configured VSID");
		CHECK(ieth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_VLAN), "no inner tag");
		if (ieth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))
			CHECK(nvgw_ipv4_ok((const void *)(ieth + 1), len - off - hl - 22) != 0,
			      "a sane inner IPv4 header");
	}
	if (port == PROV && ip->dst_addr == ip4("192.168.1.30"))
		tenant = 1;                     /* to Blue's rewritten VM */
	return tenant;
}

static void
drain_outputs(uint32_t tenant)
{
	void *obj;
	int port;

	for (port = 0; port < 2; port++)
		while (rte_ring_sc_dequeue(txr[port], &obj) == 0) {
			uint32_t out = check_output(obj, port);

			CHECK(out == 0 || out == tenant, "output stays with the input's tenant");
			rte_pktmbuf_free(obj);
		}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rte_mbuf *m;
	void *obj;
	uint16_t port;
	uint32_t tenant;
	char *p;

	if (size < 2 || size - 1 > 2048 - 64)
		return 0;
	port = data[0] & 1;
	m = rte_pktmbuf_alloc(pool);
	p = rte_pktmbuf_append(m, size - 1);
	memcpy(p, data + 1, size - 1);
	m->port = port;
	tenant = tenant_in((const uint8_t *)p, size - 1, port);   /* the aligned copy */

	nvgw_nvgre_burst(w, port, &m, 1);
	nvgw_tx_flush(w, PROV);
	nvgw_tx_flush(w, CUST);
	while (rte_ring_sc_dequeue(ctx->exc, &obj) == 0)
		nvgw_exc_handle(ctx, obj);
	while (rte_ring_sc_dequeue(ctx->inject, &obj) == 0) {
		struct rte_mbuf *r = obj;

		nvgw_tx(w, r->port, r);
	}
	nvgw_tx_flush(w, PROV);
	nvgw_tx_flush(w, CUST);
	drain_outputs(tenant);
	CHECK(rte_mempool_in_use_count(pool) == 0, "every mbuf is back in the pool");
	return 0;
}
