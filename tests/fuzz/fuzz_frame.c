/* libFuzzer harnesses for the per-packet functions that need no EAL, no
 * mbuf and no tables (cext/frame.h, cext/rewrite.c, cext/pkt.h). One
 * source; the entry point is chosen at compile time:
 *   -DENTRY_PARSE_CUSTOMER  nvgw_parse_customer() on a customer-port frame
 *   -DENTRY_PARSE_PROVIDER  nvgw_parse_provider() on a fabric frame
 *   -DENTRY_ENCAP           nvgw_nvgre_header() in front of an inner IPv4
 *                           packet, read back with nvgw_parse_provider()
 *   -DENTRY_REWRITE         nvgw_rewrite() to new addresses and back
 *   -DENTRY_ROUTE           nvgw_route_lens() (cext/lpm.h) beside a brute-force
 *                           longest-prefix match, routes added and removed
 *   -DENTRY_HTAB            the data path's exact-match table (cext/htab.h)
 *                           beside a list: sets, deletes, grace periods, lookups
 *   -DENTRY_RTAB            the record table (cext/rtab.h) beside a list, the
 *                           same way, and records held across changes
 * Every IPv4 packet a harness parses or builds also goes through
 * nvgw_ttl_dec() and nvgw_flowid(). Built without DPDK's libraries (only the
 * inline functions of its headers), so no EAL runs. Each input is copied
 * into a malloc'd buffer that ends exactly where the frame does, so
 * AddressSanitizer reports any read past the end; any broken invariant
 * aborts (a finding). The checks compare with byte-level reference models
 * written from the spec (RFC 791, 1624, 7637, the README's FlowID), and
 * with full checksum recomputations. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_ip.h>

#include "frame.h"

#define CHECK(cond, what) do { if (!(cond)) { \
	fprintf(stderr, "invariant broken: %s (%s:%d)\n", what, __FILE__, __LINE__); \
	abort(); } } while (0)

static const uint8_t GW_MAC[6] __rte_unused = { 0x02, 0x00, 0x00, 0x00, 0x00, 0xaa };

/* ---- helpers: exact-size copies, network-order fields, checksums ---- */

static uint8_t *
dup_exact(const uint8_t *d, size_t n)
{
	uint8_t *b = malloc(n);

	CHECK(b != NULL || n == 0, "malloc");
	if (n)
		memcpy(b, d, n);
	return b;
}

static uint16_t
be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t __rte_unused
raw32(const uint8_t *p)     /* as stored (network order in memory) */
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

/* One's complement sum of n bytes as big-endian words, from s; unfolded. */
static uint32_t
sum_add(const uint8_t *p, size_t n, uint32_t s)
{
	size_t i;

	for (i = 0; i + 1 < n; i += 2)
		s += be16(p + i);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	return s;
}

static uint16_t
fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xFFFF) + (s >> 16);
	return (uint16_t)s;
}

/* A one's complement sum as an integer mod 0xFFFF (0x0000 and 0xFFFF are
 * both zero): equal before and after an update means "exactly as right or
 * as wrong as before". */
static unsigned int
ones(uint32_t s)
{
	return fold(s) % 0xFFFF;
}

static uint32_t __rte_unused
pseudo_sum(const uint8_t *ip, uint16_t l4_len)
{
	return sum_add(ip + 12, 8, ip[9] + (uint32_t)l4_len);
}

/* ---- reference models, from the specs ---- */

/* RFC 791 header sanity with `avail` bytes: header length or 0. */
static unsigned int
ref_ipv4(const uint8_t *p, uint32_t avail)
{
	unsigned int hl, tot;

	if (avail < 20 || p[0] >> 4 != 4)
		return 0;
	hl = (p[0] & 15) * 4;
	tot = be16(p + 2);
	return hl >= 20 && hl <= avail && tot >= hl && tot <= avail ? hl : 0;
}

static int
is_fragment(const uint8_t *ip)
{
	return (be16(ip + 6) & 0x3FFF) != 0;     /* MF or an offset */
}

/* README: the top byte of CRC-32C (reflected polynomial 0x82F63B78, no
 * inversions), started from the protocol, over src, dst, sport, dport as
 * on the wire; ports only for unfragmented TCP/UDP, else zeros. Bit by
 * bit, not with the crc32 instruction the gateway uses. */
static uint8_t
ref_flowid(const uint8_t *ip, unsigned int hl, uint32_t avail)
{
	uint8_t wire[12] = { 0 };
	uint32_t crc = ip[9];
	unsigned int i, k;

	memcpy(wire, ip + 12, 8);
	if ((ip[9] == 6 || ip[9] == 17) && !is_fragment(ip) && avail >= hl + 4)
		memcpy(wire + 8, ip + hl, 4);
	for (i = 0; i < sizeof(wire); i++) {
		crc ^= wire[i];
		for (k = 0; k < 8; k++)
			crc = crc >> 1 ^ (crc & 1 ? 0x82F63B78u : 0);
	}
	return crc >> 24;
}

/* nvgw_ttl_dec and nvgw_flowid on an IPv4 packet of `tot` bytes (hl valid),
 * in a copy of exactly that size: FlowID as the README writes it and blind
 * to TTL; TTL one less, nothing else but the checksum changed, the header
 * sum exactly as right (or wrong) as before. The pipeline decrements only
 * TTLs above 1; 1 -> 0 is checked too. */
static void
check_ttl_flowid(const uint8_t *pkt, unsigned int hl, uint16_t tot)
{
	uint8_t *p = dup_exact(pkt, tot), *q;
	uint8_t fid = nvgw_flowid((struct rte_ipv4_hdr *)p, hl, tot);
	unsigned int i;

	CHECK(fid == ref_flowid(pkt, hl, tot), "FlowID as the README defines it");
	CHECK(fid == nvgw_flowid((struct rte_ipv4_hdr *)p, hl, tot), "FlowID deterministic");
	CHECK(nvgw_flowid_key((struct rte_ipv4_hdr *)p, hl, tot) == rte_cpu_to_be_32(fid),
	      "FlowID in a GRE key word");
	if (p[8] >= 1) {
		q = dup_exact(pkt, tot);
		nvgw_ttl_dec((struct rte_ipv4_hdr *)q);
		CHECK(q[8] == p[8] - 1, "TTL one less");
		for (i = 0; i < tot; i++)
			CHECK(i == 8 || i == 10 || i == 11 || q[i] == p[i],
			      "TTL decrement changes only TTL and checksum");
		CHECK(ones(sum_add(q, hl, 0)) == ones(sum_add(p, hl, 0)),
		      "TTL decrement keeps the header sum (RFC 1624 eqn. 3)");
		if (rte_raw_cksum(p, hl) == 0xFFFF)
			CHECK(rte_raw_cksum(q, hl) == 0xFFFF, "valid checksum stays valid after TTL");
		CHECK(nvgw_flowid((struct rte_ipv4_hdr *)q, hl, tot) == fid, "FlowID ignores TTL");
		free(q);
	}
	free(p);
}

/* ---- parse_customer ---- */
#if defined(ENTRY_PARSE_CUSTOMER)

static int
ref_customer(const uint8_t *f, uint32_t len, uint16_t *vlan)
{
	if (len < 18)
		return NVGW_DROP_truncated;
	if (be16(f + 12) != 0x8100)
		return NVGW_DROP_untagged;
	*vlan = be16(f + 14) & 0xFFF;
	if (be16(f + 16) == 0x0806)
		return NVGW_PARSED_ARP;
	if (be16(f + 16) != 0x0800)
		return NVGW_DROP_not_ipv4;
	return ref_ipv4(f + 18, len - 18) ? NVGW_PARSED : NVGW_DROP_bad_ip_header;
}

static int
parse(const uint8_t *d, size_t n, struct nvgw_view *v, int fill)
{
	uint8_t *f = dup_exact(d, n);
	int r;

	memset(v, fill, sizeof(*v));
	r = nvgw_parse_customer(f, (uint32_t)n, v);
	free(f);
	return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nvgw_view v, v2;
	uint16_t vlan = 0;
	int r, ref;

	if (size > 65535)
		return 0;
	r = parse(data, size, &v, 0xA5);
	ref = ref_customer(data, (uint32_t)size, &vlan);
	CHECK(r >= 0 && (r < NVGW_DROP_MAX || r == NVGW_PARSED || r == NVGW_PARSED_ARP),
	      "a drop reason, PARSED or PARSED_ARP");
	CHECK(r == ref, "result as the reference parser's");
	CHECK(parse(data, size, &v2, 0x5A) == r, "deterministic");
	if (r != NVGW_DROP_truncated && r != NVGW_DROP_untagged)
		CHECK(v.vlan == vlan && v2.vlan == vlan, "VLAN ID from the tag");
	if (r == NVGW_PARSED) {
		const uint8_t *ip = data + v.l3;
		uint16_t tot = be16(ip + 2);

		CHECK(v.l3 == 18 && v2.l3 == v.l3 && v2.hl == v.hl, "l3 after the tag, stable");
		CHECK(v.l3 + v.hl <= size, "IPv4 header inside the frame");
		CHECK(ip[0] >> 4 == 4 && (ip[0] & 15) * 4 == v.hl, "version 4, ihl * 4 == hl");
		CHECK(v.hl <= tot && tot <= size - v.l3, "hl <= total length <= len - l3");
		/* Link padding after the IP packet does not matter. */
		if (v.l3 + tot < size) {
			CHECK(parse(data, v.l3 + tot, &v2, 0x33) == r && v2.hl == v.hl &&
			      v2.vlan == v.vlan, "padding ignored");
		}
		check_ttl_flowid(ip, v.hl, tot);
	}
	return 0;
}
#endif

/* ---- parse_provider ---- */
#if defined(ENTRY_PARSE_PROVIDER)

static struct nvgw_provider pv;

/* nvgw_ipv4_cksum_ok (a divisibility test, no fold) against the folded sum,
 * for every value of the checksum field in headers of every length, their
 * other bytes all 0x00 or all 0xFF (the smallest and largest sums). */
static void
check_cksum_every_value(void)
{
	uint8_t h[60];
	unsigned int hl, fill;
	uint32_t c;

	for (fill = 0; fill <= 0xFF; fill += 0xFF)
		for (hl = 20; hl <= 60; hl += 4) {
			memset(h, fill, sizeof(h));
			h[0] = 0x40 | hl / 4;
			for (c = 0; c <= 0xFFFF; c++) {
				h[10] = c >> 8;
				h[11] = c & 0xFF;
				CHECK(nvgw_ipv4_cksum_ok((const struct rte_ipv4_hdr *)h, hl) ==
				      (fold(sum_add(h, hl, 0)) == 0xFFFF),
				      "IPv4 checksum check as the folded sum, every value");
			}
		}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	check_cksum_every_value();
	pv.n_pa = 2;
	pv.pa[0] = rte_cpu_to_be_32(0xC0A80101);    /* 192.168.1.1 */
	pv.pa[1] = rte_cpu_to_be_32(0xC0A80102);    /* 192.168.1.2 */
	memcpy(&pv.mac, GW_MAC, 6);
	pv.mac_w = nvgw_mac_word(&pv.mac);
	nvgw_provider_shape(&pv);
	return 0;
}

/* Which view fields a result defines. */
#define F_L3    1
#define F_VSID  2

static int
fields_of(int r)
{
	switch (r) {
	case NVGW_PARSED:
		return F_L3 | F_VSID;
	case NVGW_PARSED_ARP_VSID:
		return F_VSID;
	case NVGW_PARSED_LOCAL:
	case NVGW_PARSED_REWRITE:
		return F_L3;
	default:
		return 0;
	}
}

/* RFC 7637 as the README has it, byte by byte. */
static int
ref_provider(const uint8_t *f, uint32_t len, struct nvgw_view *v)
{
	unsigned int ohl, g, end, i, ours = 0;
	uint16_t itype;
	uint32_t vsid, dst;

	if (len < 14)
		return NVGW_DROP_truncated;
	if (be16(f + 12) == 0x0806)
		return NVGW_PARSED_ARP;
	if (be16(f + 12) != 0x0800)
		return NVGW_DROP_not_ipv4;
	if (memcmp(f, GW_MAC, 6) != 0)
		return NVGW_DROP_not_for_gateway;
	ohl = ref_ipv4(f + 14, len - 14);
	if (ohl == 0)
		return NVGW_DROP_bad_ip_header;
	if (fold(sum_add(f + 14, ohl, 0)) != 0xFFFF)
		return NVGW_DROP_bad_outer_checksum;
	v->l3 = 14;
	v->hl = ohl;
	dst = raw32(f + 30);
	for (i = 0; i < pv.n_pa; i++)
		ours |= pv.pa[i] == dst;
	if (!ours)
		return NVGW_PARSED_REWRITE;
	if (f[14 + 9] == 1)
		return NVGW_PARSED_LOCAL;
	if (f[14 + 9] != 47)
		return NVGW_DROP_not_nvgre;
	if (is_fragment(f + 14))
		return NVGW_DROP_outer_fragment;
	g = 14 + ohl;
	end = 14 + be16(f + 16);
	if (end < g + 8 + 14)
		return NVGW_DROP_truncated;
	if (be16(f + g) != 0x2000)
		return NVGW_DROP_bad_gre_flags;
	if (be16(f + g + 2) != 0x6558)
		return NVGW_DROP_not_teb;
	vsid = (uint32_t)be16(f + g + 4) << 8 | f[g + 6];
	if (vsid < 0x1000 || vsid == 0xFFFFFF)
		return NVGW_DROP_reserved_vsid;
	v->vsid = vsid;
	v->inner = g + 8;
	itype = be16(f + g + 8 + 12);
	if (itype == 0x8100 || itype == 0x88A8)
		return NVGW_DROP_inner_vlan;
	if (itype == 0x0806)
		return NVGW_PARSED_ARP_VSID;
	if (itype != 0x0800)
		return NVGW_DROP_not_ipv4;
	v->l3 = g + 22;
	v->hl = ref_ipv4(f + v->l3, end - v->l3);
	return v->hl ? NVGW_PARSED : NVGW_DROP_bad_ip_header;
}

static int
parse(const uint8_t *d, size_t n, struct nvgw_view *v, int fill)
{
	uint8_t *f = dup_exact(d, n);
	int r;

	memset(v, fill, sizeof(*v));
	r = nvgw_parse_provider(f, (uint32_t)n, &pv, v);
	free(f);
	return r;
}

static void
same_view(int r, const struct nvgw_view *a, const struct nvgw_view *b, const char *what)
{
	int fl = fields_of(r);

	if (fl & F_L3)
		CHECK(a->l3 == b->l3 && a->hl == b->hl, what);
	if (fl & F_VSID)
		CHECK(a->vsid == b->vsid && a->inner == b->inner, what);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nvgw_view v, v2, rv;
	int r, ref;

	if (size > 65535)
		return 0;
	r = parse(data, size, &v, 0xA5);
	CHECK(r >= 0 && (r < NVGW_DROP_MAX || r == NVGW_PARSED || r == NVGW_PARSED_ARP ||
			 r == NVGW_PARSED_ARP_VSID || r == NVGW_PARSED_LOCAL ||
			 r == NVGW_PARSED_REWRITE), "a drop reason or a PARSED* result");
	memset(&rv, 0, sizeof(rv));
	ref = ref_provider(data, (uint32_t)size, &rv);
	CHECK(r == ref, "result as the reference parser's");
	same_view(r, &v, &rv, "view as the reference parser's");
	CHECK(parse(data, size, &v2, 0x5A) == r, "deterministic");
	same_view(r, &v, &v2, "view deterministic");

	if (fields_of(r)) {             /* the outer IPv4 header was accepted */
		const uint8_t *oip = data + 14;
		unsigned int ohl = (oip[0] & 15) * 4;
		uint32_t end = 14 + be16(oip + 2);

		CHECK(oip[0] >> 4 == 4 && ohl >= 20 && 14 + ohl <= end && end <= size,
		      "outer IPv4 header and packet inside the frame");
		CHECK(rte_raw_cksum(oip, ohl) == 0xFFFF, "outer checksum verifies");
		CHECK(memcmp(data, GW_MAC, 6) == 0, "for our MAC");
		if (r == NVGW_PARSED_LOCAL || r == NVGW_PARSED_REWRITE)
			check_ttl_flowid(oip, ohl, end - 14);
		if (fields_of(r) & F_VSID) {
			const uint8_t *gre = data + 14 + ohl;

			CHECK(!nvgw_vsid_reserved(v.vsid) && v.vsid >= 4096 &&
			      v.vsid <= 16777214, "VSID not reserved");
			CHECK(oip[9] == 47 && !is_fragment(oip), "unfragmented GRE");
			CHECK(be16(gre) == 0x2000 && be16(gre + 2) == 0x6558,
			      "GRE flags 0x2000, protocol 0x6558 after the outer header");
			CHECK(((uint32_t)be16(gre + 4) << 8 | gre[6]) == v.vsid, "VSID from the key");
			CHECK(v.inner == 14 + ohl + 8 && v.inner + 14 <= end,
			      "inner Ethernet inside the outer packet");
		}
		if (r == NVGW_PARSED) {
			const uint8_t *ip = data + v.l3;
			uint16_t tot = be16(ip + 2);

			CHECK(v.l3 == v.inner + 14 && v.l3 + v.hl <= end, "inner header inside");
			CHECK(ip[0] >> 4 == 4 && (ip[0] & 15) * 4 == v.hl, "inner version 4, ihl");
			CHECK(v.hl <= tot && tot <= end - v.l3, "inner hl <= total <= outer end");
			check_ttl_flowid(ip, v.hl, tot);
		}
	}
	/* Link padding after the outer IPv4 packet does not matter. */
	if (size >= 34 && be16(data + 12) == 0x0800 && ref_ipv4(data + 14, size - 14)) {
		uint32_t end = 14 + be16(data + 16);

		if (end < size) {
			CHECK(parse(data, end, &v2, 0x33) == r, "padding ignored");
			same_view(r, &v, &v2, "padding ignored (view)");
		}
	}
	return 0;
}
#endif

/* ---- encap: nvgw_nvgre_header ---- */
#if defined(ENTRY_ENCAP)

/* Input: VSID (3 bytes, mapped into 4096..16777214), destination PA (4),
 * source PA (4), FlowID mode (1: odd = hashed), fixed FlowID (1), then the
 * inner IPv4 packet (bytes after its total length are ignored, as the
 * pipeline trims them). */
#define PARAMS 13

static const uint8_t NH_MAC[6] = { 0x00, 0x15, 0x5d, 0x00, 0x00, 0x10 };
static const uint8_t CA_MAC[6] = { 0x00, 0x15, 0x5d, 0x00, 0x00, 0x07 };

/* nvgw_ttl_dec for every checksum value, against RFC 1624 eqn. 3 in network
 * order: HC' = ~(~HC + ~m + m'), m and m' the TTL/protocol word before and
 * after. */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	uint8_t h[20] = { 0x45 };
	uint32_t c, s;
	uint16_t m;

	(void)argc;
	(void)argv;
	for (c = 0; c <= 0xFFFF; c++) {
		h[8] = 64;
		h[9] = IPPROTO_UDP;
		h[10] = c >> 8;
		h[11] = c & 0xFF;
		m = be16(h + 8);
		nvgw_ttl_dec((struct rte_ipv4_hdr *)h);
		s = (uint16_t)~c + (uint16_t)~m + be16(h + 8);
		CHECK(be16(h + 10) == (uint16_t)~fold(s),
		      "TTL checksum as RFC 1624 eqn. 3, every value");
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct rte_ether_addr *src_mac = (const void *)GW_MAC;
	struct nvgw_outer tmpl;
	struct nvgw_provider pv;
	struct nvgw_view v;
	uint32_t vsid, pa_dst, pa_src, avail;
	uint64_t dst_word = 0, src_word = 0;
	uint8_t *inner, *h, flowid, zeroed[20];
	unsigned int hl;
	uint16_t ip_len, stored;
	int r;

	if (size < PARAMS || size - PARAMS > 65535)
		return 0;
	vsid = 0x1000 + ((uint32_t)data[0] << 16 | data[1] << 8 | data[2]) % (0xFFFFFE - 0x1000 + 1);
	pa_dst = raw32(data + 3);
	pa_src = raw32(data + 7);
	avail = (uint32_t)(size - PARAMS);
	inner = dup_exact(data + PARAMS, avail);
	hl = nvgw_ipv4_ok((const struct rte_ipv4_hdr *)inner, avail);
	CHECK(hl == ref_ipv4(data + PARAMS, avail), "nvgw_ipv4_ok as RFC 791");
	if (hl == 0 || be16(inner + 2) > 65535 - (NVGW_NVGRE_LEN - NVGW_ETH_LEN)) {
		free(inner);
		return 0;
	}
	ip_len = be16(inner + 2);
	check_ttl_flowid(inner, hl, ip_len);
	flowid = data[11] & 1 ? nvgw_flowid((const struct rte_ipv4_hdr *)inner, hl, ip_len) :
				data[12];

	/* The provider's template (nvgw_outer_init, as nvgw_provider_set: the
	 * destination and length 0 in its sum), and an NVGRE record's GRE word. */
	nvgw_outer_init(&tmpl, pa_src);
	memcpy(&dst_word, NH_MAC, 6);
	dst_word |= NVGW_NEIGH_VALID | (uint64_t)data[12] << 56;   /* as a neighbour's word */
	memcpy(&src_word, src_mac, 6);
	/* as the VSID's word carries it: the header takes only the MAC */
	src_word |= NVGW_VW_VALID | NVGW_VW_FLOWID_FIXED | (uint64_t)flowid << 48;

	h = malloc(NVGW_NVGRE_LEN + ip_len);
	CHECK(h != NULL, "malloc");
	memcpy(h + NVGW_NVGRE_LEN, inner, ip_len);
	/* the CA's word as the pipeline loads it: two bytes of the record after it */
	nvgw_nvgre_header(h, &tmpl, pa_dst, rte_cpu_to_be_32(vsid << 8 | NVGW_ENCAP), dst_word,
			  nvgw_mac_word(src_mac),
			  nvgw_mac_word((const void *)CA_MAC) | (uint64_t)raw32(data + 3) << 48,
			  src_word, ip_len, rte_cpu_to_be_32(flowid));

	CHECK(memcmp(h + NVGW_NVGRE_LEN, inner, ip_len) == 0, "inner packet untouched");
	CHECK(memcmp(h, NH_MAC, 6) == 0 && memcmp(h + 6, GW_MAC, 6) == 0 &&
	      be16(h + 12) == 0x0800, "outer Ethernet: next hop <- us, IPv4");
	CHECK(be16(h + 14 + 2) == ip_len + 42, "outer total length = inner + 42");
	memcpy(zeroed, h + 14, 20);
	zeroed[10] = zeroed[11] = 0;
	memcpy(&stored, h + 14 + 10, 2);
	CHECK(stored == (uint16_t)~rte_raw_cksum(zeroed, 20), "outer checksum = full recomputation");
	CHECK(h[14] == 0x45 && h[14 + 8] == 64 && h[14 + 9] == 47 && be16(h + 14 + 6) == 0x4000 &&
	      raw32(h + 14 + 12) == pa_src && raw32(h + 14 + 16) == pa_dst,
	      "outer IPv4 from the template");
	CHECK(be16(h + 34) == 0x2000 && be16(h + 36) == 0x6558 &&
	      (raw32(h + 38) == rte_cpu_to_be_32(vsid << 8 | flowid)), "GRE: K, TEB, VSID, FlowID");
	CHECK(memcmp(h + 42, CA_MAC, 6) == 0 && memcmp(h + 48, GW_MAC, 6) == 0 &&
	      be16(h + 54) == 0x0800, "inner Ethernet: CA <- subnet gateway, IPv4");

	/* The receiving host (a provider whose PA is the destination) reads
	 * back the same VSID and the untouched inner packet. */
	memset(&pv, 0, sizeof(pv));
	pv.n_pa = 1;
	pv.pa[0] = pa_dst;
	memcpy(&pv.mac, NH_MAC, 6);
	pv.mac_w = nvgw_mac_word(&pv.mac);
	nvgw_provider_shape(&pv);
	memset(&v, 0xA5, sizeof(v));
	r = nvgw_parse_provider(h, NVGW_NVGRE_LEN + ip_len, &pv, &v);
	CHECK(r == NVGW_PARSED, "the header parses as NVGRE carrying IPv4");
	CHECK(v.vsid == vsid && v.inner == 42 && v.l3 == NVGW_NVGRE_LEN && v.hl == hl,
	      "same VSID, l3 at the inner packet");
	free(h);
	free(inner);
	return 0;
}
#endif

/* ---- rewrite: nvgw_rewrite, and back ---- */
#if defined(ENTRY_REWRITE)

/* Input: new source (4), new destination (4), then an IPv4 packet and any
 * link padding. It is placed after a 14-byte Ethernet header, as in the
 * pipeline (so the IPv4 header is 2 mod 4 aligned), in a buffer that ends
 * where the input does. */
#define PARAMS 8
#define MAXOFF 8

/* The byte offsets (from the IPv4 header) nvgw_rewrite may change: the
 * addresses and the checksums that cover them (IPv4; TCP/UDP; ICMP errors:
 * the ICMP checksum, the quoted header's addresses and checksum and the
 * quoted TCP/UDP checksum). *n_csum: how many of csum[] are checksums. */
struct fields {
	unsigned int csum[MAXOFF], n_csum;
	unsigned int addr[2];           /* quoted source, destination (0: none) */
	unsigned int quoted;            /* offset of the quoted header (0: none) */
	unsigned int icmp;              /* offset of the ICMP header (0: none) */
	unsigned int l4;                /* TCP/UDP whose checksum is updated (0: none) */
};

static void
l4_fields(uint8_t proto, const uint8_t *ip, unsigned int off, uint32_t len, struct fields *fl)
{
	if (proto == 6 && len >= 18)
		fl->csum[fl->n_csum++] = off + 16;
	else if (proto == 17 && len >= 8 && be16(ip + off + 6) != 0)
		fl->csum[fl->n_csum++] = off + 6;
}

static void
rewrite_fields(const uint8_t *ip, unsigned int hl, struct fields *fl)
{
	uint32_t len = be16(ip + 2) - hl;
	unsigned int q, qhl, t;

	memset(fl, 0, sizeof(*fl));
	fl->csum[fl->n_csum++] = 10;
	if (be16(ip + 6) & 0x1FFF)
		return;                         /* non-first fragment */
	if (ip[9] != 1) {
		if ((ip[9] == 6 && len >= 18) || (ip[9] == 17 && len >= 8))
			fl->l4 = hl;    /* a TCP/UDP checksum field is there */
		l4_fields(ip[9], ip, hl, len, fl);
		return;
	}
	if (len < 28)
		return;
	t = ip[hl];
	if (!(t == 3 || t == 4 || t == 5 || t == 11 || t == 12))
		return;
	fl->icmp = hl;
	q = hl + 8;
	qhl = (ip[q] & 15) * 4;
	if (ip[q] >> 4 != 4 || qhl < 20 || len < 8 + qhl)
		return;
	fl->csum[fl->n_csum++] = hl + 2;
	fl->csum[fl->n_csum++] = q + 10;
	fl->quoted = q;
	fl->addr[0] = q + 12;
	fl->addr[1] = q + 16;
	if ((be16(ip + q + 6) & 0x1FFF) == 0)
		l4_fields(ip[q + 9], ip, q + qhl, len - 8 - qhl, fl);
}

static int
may_change(const struct fields *fl, unsigned int i)
{
	unsigned int k;

	if (i >= 12 && i < 20)
		return 1;
	for (k = 0; k < fl->n_csum; k++)
		if (i == fl->csum[k] || i == fl->csum[k] + 1)
			return 1;
	return fl->quoted && i >= fl->addr[0] && i < fl->addr[1] + 4;
}

/* A checksum word may come back from a round trip as 0x0000 where it was
 * 0xFFFF: the same one's complement value (RFC 1624 eqn. 3 never yields
 * 0xFFFF; UDP maps a computed 0 to 0xFFFF and is exact). */
static int
same_or_other_zero(const struct fields *fl, const uint8_t *a, const uint8_t *b, unsigned int i)
{
	unsigned int k;

	for (k = 0; k < fl->n_csum; k++) {
		unsigned int c = fl->csum[k];

		if ((i == c || i == c + 1) && be16(a + c) == 0xFFFF && be16(b + c) == 0x0000)
			return 1;
	}
	return 0;
}

/* The one's complement sums the rewrite must keep, in their current state. */
struct sums {
	unsigned int ip, l4, icmp, quoted;
	uint16_t udp;                   /* the UDP checksum word */
};

static void
take_sums(const uint8_t *ip, unsigned int hl, const struct fields *fl, struct sums *s)
{
	uint16_t l4_len = be16(ip + 2) - hl;

	s->ip = ones(sum_add(ip, hl, 0));
	s->l4 = fl->l4 ? ones(sum_add(ip + hl, l4_len, pseudo_sum(ip, l4_len))) : 0;
	s->icmp = fl->icmp ? ones(sum_add(ip + hl, l4_len, 0)) : 0;
	s->quoted = fl->quoted ? ones(sum_add(ip + fl->quoted, (ip[fl->quoted] & 15) * 4, 0)) : 0;
	s->udp = ip[9] == 17 && l4_len >= 8 ? be16(ip + hl + 6) : 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t ns, nd, os, od, avail, qs = 0, qd = 0, i;
	struct fields fl;
	struct sums before, after;
	uint8_t *buf, *ip, *orig;
	unsigned int hl;
	uint16_t tot;
	int round_trip = 1;

	if (size < PARAMS || size - PARAMS > 65535)
		return 0;
	ns = raw32(data);
	nd = raw32(data + 4);
	avail = (uint32_t)(size - PARAMS);
	buf = malloc(NVGW_ETH_LEN + avail);
	CHECK(buf != NULL, "malloc");
	memcpy(buf, GW_MAC, 6);
	memcpy(buf + 6, GW_MAC, 6);
	buf[12] = 0x08;
	buf[13] = 0x00;
	ip = buf + NVGW_ETH_LEN;
	memcpy(ip, data + PARAMS, avail);
	hl = nvgw_ipv4_ok((const struct rte_ipv4_hdr *)ip, avail);
	CHECK(hl == ref_ipv4(data + PARAMS, avail), "nvgw_ipv4_ok as RFC 791");
	if (hl == 0) {
		free(buf);
		return 0;
	}
	tot = be16(ip + 2);
	check_ttl_flowid(ip, hl, tot);
	orig = dup_exact(buf, NVGW_ETH_LEN + avail);
	os = raw32(ip + 12);
	od = raw32(ip + 16);
	rewrite_fields(ip, hl, &fl);
	take_sums(ip, hl, &fl, &before);
	if (fl.quoted) {
		qs = raw32(ip + fl.addr[0]);
		qd = raw32(ip + fl.addr[1]);
	}

	nvgw_rewrite((struct rte_ipv4_hdr *)ip, hl, avail, ns, nd);

	CHECK(raw32(ip + 12) == ns && raw32(ip + 16) == nd, "new addresses");
	for (i = 0; i < NVGW_ETH_LEN + avail; i++) {
		int in_ip = i >= NVGW_ETH_LEN && i < NVGW_ETH_LEN + tot;

		if (buf[i] != orig[i])
			CHECK(in_ip && may_change(&fl, i - NVGW_ETH_LEN),
			      "only addresses and checksums change, only inside the IP packet");
	}
	take_sums(ip, hl, &fl, &after);
	CHECK(after.ip == before.ip, "IPv4 header sum kept (as right or wrong as before)");
	if (before.ip == 0)
		CHECK(rte_raw_cksum(ip, hl) == 0xFFFF, "a valid IPv4 checksum stays valid");
	if (fl.l4) {
		if (ip[9] == 17 && before.udp == 0) {
			CHECK(after.udp == 0, "UDP checksum 0 (none) stays 0");
		} else {
			CHECK(after.l4 == before.l4, "TCP/UDP sum over the pseudo-header kept");
			if (!is_fragment(ip) && before.l4 == 0)
				CHECK(fold(sum_add(ip + hl, tot - hl, pseudo_sum(ip, tot - hl))) ==
				      0xFFFF, "a valid TCP/UDP checksum stays valid");
			if (ip[9] == 17)
				CHECK(after.udp != 0, "a UDP checksum never becomes 0");
		}
	}
	if (fl.icmp)
		CHECK(after.icmp == before.icmp, "ICMP sum kept");
	if (fl.quoted) {
		uint32_t nqs = qs == od ? nd : qs, nqd = qd == os ? ns : qd;

		CHECK(raw32(ip + fl.addr[0]) == nqs && raw32(ip + fl.addr[1]) == nqd,
		      "quoted addresses mirror the outer rewrite");
		CHECK(after.quoted == before.quoted, "quoted IPv4 header sum kept");
		/* Back is the inverse only if no quoted address that did not
		 * match the old addresses matches the new ones. */
		if ((qs != od && qs == nd) || (qd != os && qd == ns))
			round_trip = 0;
	}
	if (round_trip) {
		nvgw_rewrite((struct rte_ipv4_hdr *)ip, hl, avail, os, od);
		for (i = 0; i < NVGW_ETH_LEN + avail; i++)
			if (buf[i] != orig[i])
				CHECK(i >= NVGW_ETH_LEN &&
				      same_or_other_zero(&fl, orig + NVGW_ETH_LEN, ip,
							 i - NVGW_ETH_LEN),
				      "rewriting back restores every byte");
	}
	free(orig);
	free(buf);
	return 0;
}
#endif

#if defined(ENTRY_ROUTE)
/* Route selection: the lengths nvgw_route_lens() says to look up, against a
 * brute-force longest-prefix match over the same routes. The input is a
 * program of 8-byte steps: op, domain, address, length; the routes live in
 * a model and in the filters (kept by nvgw_blk_count, as the tables do).
 * Invariants: looking up the chosen lengths longest first finds exactly the
 * longest matching route (a filter may say "maybe", never "no" wrongly);
 * only lengths the domain has are chosen; once every route is gone again,
 * each filter bit and count it touched is back to zero. */
#include "lpm.h"

#define MAX_ROUTES 256
#define DOMAINS    4

struct model_route { uint32_t rdid, prefix; uint8_t len; };

static uint64_t b16[NVGW_BLK_BITS / 64], b24[NVGW_BLK_BITS / 64];
static uint32_t n16[NVGW_BLK_BITS], n24[NVGW_BLK_BITS];

static uint32_t
netmask(uint8_t len)
{
	return rte_cpu_to_be_32(len ? ~0u << (32 - len) : 0);
}

static int
find(const struct model_route *r, int n, uint32_t rdid, uint32_t prefix, uint8_t len)
{
	int i;

	for (i = 0; i < n; i++)
		if (r[i].rdid == rdid && r[i].prefix == prefix && r[i].len == len)
			return i;
	return -1;
}

static uint64_t
domain_lens(const struct model_route *r, int n, uint32_t rdid)
{
	uint64_t lens = 0;
	int i;

	for (i = 0; i < n; i++)
		if (r[i].rdid == rdid)
			lens |= 1ULL << r[i].len;
	return lens;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct model_route r[MAX_ROUTES];
	int n = 0, i, truth, found;
	size_t at;

	for (at = 0; at + 8 <= size; at += 8) {
		const uint8_t *s = data + at;
		uint32_t rdid = 1 + (s[1] & (DOMAINS - 1)), addr;
		uint8_t len = s[6] % 33;
		uint64_t lens, pick;

		memcpy(&addr, s + 2, 4);
		switch (s[0] & 3) {
		case 0:                                 /* add a route */
		case 1:                                 /* delete one */
			addr &= netmask(len);
			i = find(r, n, rdid, addr, len);
			if ((s[0] & 3) == 0 && i < 0 && n < MAX_ROUTES) {
				r[n++] = (struct model_route){ rdid, addr, len };
				nvgw_blk_count(b16, n16, b24, n24, rdid, addr, len, 1);
			} else if ((s[0] & 3) == 1 && i >= 0) {
				nvgw_blk_count(b16, n16, b24, n24, rdid, addr, len, -1);
				r[i] = r[--n];
			}
			continue;
		case 3:                                 /* near a route: its prefix, */
			if (n == 0)                     /* host bits from the input */
				continue;
			i = s[1] % n;
			rdid = r[i].rdid;
			addr = r[i].prefix | (addr & ~netmask(r[i].len));
			break;
		}
		/* a query: dst = addr in domain rdid */
		truth = -1;
		for (i = 0; i < n; i++)
			if (r[i].rdid == rdid && (addr & netmask(r[i].len)) == r[i].prefix &&
			    r[i].len > truth)
				truth = r[i].len;
		lens = domain_lens(r, n, rdid);
		pick = nvgw_route_lens(lens, b16, b24, rdid, addr);
		CHECK((pick & ~lens) == 0, "only lengths the domain has");
		found = -1;
		while (pick && found < 0) {
			uint8_t l = 63 - __builtin_clzll(pick);

			pick &= ~(1ULL << l);
			if (find(r, n, rdid, addr & netmask(l), l) >= 0)
				found = l;
		}
		CHECK(found == truth, "the chosen lengths find the longest match");
	}
	while (n > 0) {
		n--;
		nvgw_blk_count(b16, n16, b24, n24, r[n].rdid, r[n].prefix, r[n].len, -1);
		if (r[n].len > 16) {
			uint32_t b = nvgw_blk(r[n].rdid, r[n].prefix, 16);

			CHECK(n16[b] < MAX_ROUTES, "a /16 filter count never underflows");
		}
	}
	for (at = 0; at + 8 <= size; at += 8) {
		uint32_t rdid = 1 + (data[at + 1] & (DOMAINS - 1)), addr;

		memcpy(&addr, data + at + 2, 4);
		CHECK(n16[nvgw_blk(rdid, addr, 16)] == 0 && !nvgw_blk_test(b16, nvgw_blk(rdid, addr, 16)),
		      "every /16 filter bit clears with its last route");
		CHECK(n24[nvgw_blk(rdid, addr, 8)] == 0 && !nvgw_blk_test(b24, nvgw_blk(rdid, addr, 8)),
		      "every /24 filter bit clears with its last route");
	}
	return 0;
}
#endif


#if defined(ENTRY_HTAB) || defined(ENTRY_RTAB)
/* The table programs' reference: a plain list of keys and values. */
struct model_kv { uint64_t key, val; };

static int
model_find(const struct model_kv *m, int n, uint64_t key)
{
	int i;

	for (i = 0; i < n; i++)
		if (m[i].key == key)
			return i;
	return -1;
}

/* A step's key: 64 keys; bit 7 of the op asks for a marker (top byte
 * 0xFF), bit 6 for one of the three the tables use. */
static uint64_t
step_key(const uint8_t *s)
{
	uint64_t key = (uint64_t)(s[1] & 7) << 40 | (s[2] & 7);

	if (s[0] & 0x80)
		key = s[0] & 0x40 ? NVGW_HT_EMPTY - (s[2] % 3) : key | 0xFFULL << 56;
	return key;
}
#endif


#if defined(ENTRY_HTAB)
/* The exact-match table (htab.h, htab.c) against a plain list. A small
 * table (16 keys, 8 buckets) and keys from a small space, so home buckets
 * collide, keys spill into later buckets and slots are deleted, left dead
 * and reused. The input is a program of 4-byte steps: op, key (two bytes),
 * value byte. Invariants: every lookup, single or bulk, agrees with the list
 * (so a key past its home bucket is always found); set reports a replaced
 * value and refuses only a full table or a marker key; delete refuses only
 * an absent key or a full dead list; the live count is the list's; a walk
 * (nvgw_htab_next) sees each live key once. */
#include "htab.h"

#define HT_MAX   16
#define HT_DEAD  6

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nvgw_hbucket *b = aligned_alloc(64, nvgw_htab_buckets(HT_MAX) * sizeof(*b));
	uint32_t dead[HT_DEAD];
	struct model_kv m[HT_MAX];
	struct nvgw_htab h;
	uint64_t keys[NVGW_HT_BULK], vals[NVGW_HT_BULK], old, v, hits;
	int n = 0, i, rc, full;
	size_t at;

	CHECK(b != NULL, "malloc");
	nvgw_htab_init(&h, b, HT_MAX, dead, HT_DEAD);
	CHECK(h.mask + 1 == 8, "16 keys: 8 buckets of 4");
	for (at = 0; at + 4 <= size; at += 4) {
		const uint8_t *s = data + at;
		uint64_t key = step_key(s);
		uint64_t val = (uint64_t)s[3] << 8 | at;

		i = model_find(m, n, key);
		switch (s[0] & 3) {
		case 0:
			rc = nvgw_htab_set(&h, key, val, &old);
			if (key >> 56 == 0xFF) {
				CHECK(rc == -EINVAL, "a marker is never a key");
			} else if (i >= 0) {
				CHECK(rc == 1 && old == m[i].val, "set replaces, returning the old value");
				m[i].val = val;
			} else if (n == HT_MAX) {
				CHECK(rc == -ENOSPC, "a full table refuses a new key");
			} else {
				CHECK(rc == 0, "a new key fits while the table is not full");
				m[n++] = (struct model_kv){ key, val };
			}
			break;
		case 1:
			full = h.n_dead == HT_DEAD;
			rc = nvgw_htab_del(&h, key, &old);
			if (i < 0) {
				CHECK(rc == -ENOENT, "deleting an absent key");
			} else if (full) {
				CHECK(rc == -EBUSY, "a full dead list refuses");
			} else {
				CHECK(rc == 0 && old == m[i].val, "delete returns the value");
				m[i] = m[--n];
			}
			break;
		case 2:
			nvgw_htab_reclaim(&h);          /* a grace period passed */
			CHECK(h.n_dead == 0, "reclaim empties the dead list");
			break;
		case 3:
			if (key >> 56 == 0xFF)
				break;                  /* the data path never asks */
			rc = nvgw_htab_lookup(&h, key, &v);
			CHECK(rc == (i >= 0) && (i < 0 || v == m[i].val), "lookup agrees");
			break;
		}
		CHECK(h.n == (uint32_t)n, "the live count is the list's");
	}
	/* Every key of the space, in bulk and one by one. */
	for (i = 0; i < NVGW_HT_BULK; i++)
		keys[i] = (uint64_t)(i >> 3) << 40 | (i & 7);
	hits = nvgw_htab_lookup_bulk(&h, keys, NVGW_HT_BULK, vals);
	for (i = 0; i < NVGW_HT_BULK; i++) {
		int j = model_find(m, n, keys[i]);

		CHECK(!!(hits & (1ULL << i)) == (j >= 0) && (j < 0 || vals[i] == m[j].val),
		      "bulk lookup agrees");
		CHECK(nvgw_htab_lookup(&h, keys[i], &v) == (j >= 0), "lookup agrees");
	}
	/* A walk sees each live key once, with its value. */
	{
		uint32_t pos = 0;
		uint64_t k;
		int seen = 0;

		while (nvgw_htab_next(&h, &pos, &k, &v)) {
			i = model_find(m, n, k);
			CHECK(i >= 0 && m[i].val == v, "the walk sees live keys only");
			m[i].key = NVGW_HT_EMPTY;       /* seen */
			seen++;
		}
		CHECK(seen == n, "the walk sees every live key");
	}
	/* Every key deleted and reclaimed: the table is all empty again, so a
	 * miss stops at its home bucket (free slots, probed past, used to stay
	 * for good). */
	for (i = 0; i < NVGW_HT_BULK; i++) {
		if (nvgw_htab_del(&h, keys[i], &old) == -EBUSY) {
			nvgw_htab_reclaim(&h);
			CHECK(nvgw_htab_del(&h, keys[i], &old) == 0, "delete after a reclaim");
		}
	}
	nvgw_htab_reclaim(&h);
	CHECK(h.n == 0, "every key deleted");
	for (i = 0; i < (int)(h.mask + 1) * NVGW_HT_SLOTS; i++)
		CHECK(h.b[i / NVGW_HT_SLOTS].key[i % NVGW_HT_SLOTS] == NVGW_HT_EMPTY,
		      "a table emptied and reclaimed is all empty slots");
	free(b);
	return 0;
}
#endif


#if defined(ENTRY_RTAB)
/* The record table (rtab.h, rtab.c) against a plain list, programs as for
 * ENTRY_HTAB (op, key, value byte). 16 records in 8 lines of three slots,
 * 64 keys, so keys collide and spill past their home line, and replacing a
 * record moves it to another slot. Invariants: every lookup returns the
 * list's record, whole (its fields all carry the value it was set with);
 * set reports replace or add and refuses only a full table, what is not a
 * key (domain 0, past 48 bits) or (replacing) a full dead list; delete refuses only an absent key or a
 * full dead list; a record a reader found stays as it was, whatever is
 * set or deleted, until a grace period (reclaim) has passed; the slots a
 * grace period makes empty again cut no record's probe path. (Readers
 * racing the writer are not fuzzed: one thread.) */
#include "rtab.h"

#define RT_MAX   16
#define RT_DEAD  RT_MAX      /* as the gateway has it */

/* Keys of 8 domains (1-8, as bits 40-42 of the key) and 8 addresses, or
 * (top bit of s[0]) what is not a key: a marker (domain 0) or 49 bits. */
static uint64_t
rt_key(const uint8_t *s)
{
	uint64_t key = (uint64_t)((s[1] & 7) + 1) << 40 | (s[2] & 7);

	if (s[0] & 0x80)
		key = s[0] & 0x40 ? s[2] % 3 : key | 1ULL << 48;
	return key;
}

static int
rt_not_key(uint64_t key)
{
	return key >> 48 != 0 || key >> 32 == 0;
}

static void
rec_of(struct nvgw_record *r, uint64_t val)
{
	memset(r, 0, sizeof(*r));
	r->pa = ~(uint32_t)val;
	memset(&r->mac, val & 0xFF, sizeof(r->mac));
	r->nh = (uint16_t)(val >> 3);
	r->vsid_idx = (uint16_t)val & 0x3FFF;
	r->method = (uint8_t)(val >> 14) & 1;
}

static int
rec_is(const struct nvgw_rec *r, uint64_t val)
{
	struct nvgw_record want;

	rec_of(&want, val);
	return nvgw_rec_pa(r) == want.pa && memcmp(nvgw_rec_mac(r), &want.mac, 6) == 0 &&
	       nvgw_rec_pay(r)->nh == want.nh && nvgw_rec_vsid_idx(r) == want.vsid_idx &&
	       nvgw_rec_method(r) == want.method;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nvgw_rline *s = aligned_alloc(64, nvgw_rtab_lines(RT_MAX) * sizeof(*s));
	uint32_t dead[RT_DEAD];
	uint64_t held_val = 0;
	struct model_kv m[RT_MAX];
	const struct nvgw_rec *held = NULL, *r;
	struct nvgw_record rec;
	struct nvgw_rtab h;
	int n = 0, i, j, rc, full, crowded;
	size_t at;

	CHECK(s != NULL, "malloc");
	nvgw_rtab_init(&h, s, RT_MAX, dead, RT_DEAD);
	CHECK(h.n_slots == 24, "16 records: 8 lines of three");
	for (at = 0; at + 4 <= size; at += 4) {
		const uint8_t *p = data + at;
		uint64_t key = rt_key(p);
		uint32_t val = (uint32_t)p[3] << 16 | (uint32_t)at;

		i = model_find(m, n, key);
		switch (p[0] & 3) {
		case 0:
			full = h.n_dead == RT_DEAD;
			/* every slot live or dead: the gateway reclaims before
			 * that (tables.c, rec_room), the table alone refuses */
			crowded = (uint32_t)n + h.n_dead == h.n_slots;
			rec_of(&rec, val);
			rc = nvgw_rtab_set(&h, key, &rec);
			if (rt_not_key(key)) {
				CHECK(rc == -EINVAL, "a marker is never a key");
			} else if (i >= 0 && full) {
				CHECK(rc == -EBUSY, "replacing needs room on the dead list");
			} else if (crowded || (i < 0 && n == RT_MAX)) {
				CHECK(rc == -ENOSPC, "a full table refuses a new key or version");
			} else if (i >= 0) {
				CHECK(rc == 1, "set replaces");
				m[i].val = val;
			} else {
				CHECK(rc == 0, "a new key fits while the table is not full");
				m[n++] = (struct model_kv){ key, val };
			}
			break;
		case 1:
			full = h.n_dead == RT_DEAD;
			rc = nvgw_rtab_del(&h, key);
			if (i < 0) {
				CHECK(rc == -ENOENT, "deleting an absent key");
			} else if (full) {
				CHECK(rc == -EBUSY, "a full dead list refuses");
			} else {
				CHECK(rc == 0, "delete");
				m[i] = m[--n];
			}
			break;
		case 2:
			nvgw_rtab_reclaim(&h);          /* a grace period passed */
			held = NULL;                    /* the reader let go before it */
			/* slots made empty again must not cut any key's path */
			for (j = 0; j < n; j++)
				CHECK(nvgw_rtab_lookup(&h, m[j].key) != NULL,
				      "every record is found after a grace period");
			break;
		case 3:
			if (rt_not_key(key))
				break;                  /* the data path never asks */
			r = nvgw_rtab_lookup(&h, key);
			CHECK((r != NULL) == (i >= 0) && (i < 0 || rec_is(r, m[i].val)),
			      "lookup returns the record, whole");
			if (r != NULL) {
				held = r;
				held_val = m[i].val;
			}
			break;
		}
		CHECK(h.n == (uint32_t)n, "the live count is the list's");
		CHECK(held == NULL || rec_is(held, held_val),
		      "a record found stays as it was until a grace period");
	}
	for (i = 0; i < 64; i++) {
		uint64_t key = (uint64_t)((i >> 3) + 1) << 40 | (i & 7);
		int j = model_find(m, n, key);

		r = nvgw_rtab_probe(&h, nvgw_rtab_fetch(&h, key), key);
		CHECK((r != NULL) == (j >= 0) && (j < 0 || rec_is(r, m[j].val)),
		      "every key agrees at the end");
	}
	free(s);
	return 0;
}
#endif
