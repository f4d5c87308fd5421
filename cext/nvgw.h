/* nvgw data plane: state shared by the Cython control code and the C
 * worker loops. Workers only read the context; each writes its own
 * cache-aligned nvgw_worker, which the control thread reads for counters. */
#ifndef NVGW_H
#define NVGW_H

#include <stdint.h>
#include <rte_common.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_rcu_qsbr.h>

#define NVGW_BURST      32
#define NVGW_MAX_PORTS  8
#define NVGW_MAX_RXQ    32      /* (port, queue) pairs one worker polls */
#define NVGW_MAX_WORKERS 16
#define NVGW_DRAIN_US   100     /* TX buffers are flushed at least this often */

enum nvgw_drop {
#define NVGW_DROP(name, text) NVGW_DROP_##name,
#include "drops.def"
#undef NVGW_DROP
	NVGW_DROP_MAX
};

extern const char *const nvgw_drop_names[NVGW_DROP_MAX];
extern const char *const nvgw_drop_texts[NVGW_DROP_MAX];

enum nvgw_pipeline {
	NVGW_PIPE_FORWARD = 0,   /* port to port, proves the machinery */
	NVGW_PIPE_NVGRE = 1,     /* the gateway: encap, decap, routing */
};

/* Why a packet left the hot path for the exception thread; stored with a
 * 24-bit context (VLAN, VSID slot or scope) in mbuf->hash.fdir.lo, and an
 * address in hash.fdir.hi. */
enum nvgw_exc {
	NVGW_EXC_ARP_PROVIDER = 1,
	NVGW_EXC_ARP_CUSTOMER,      /* ctx: VLAN */
	NVGW_EXC_ARP_VSID,          /* ctx: VSID slot */
	NVGW_EXC_LOCAL_PROVIDER,    /* ICMP for one of our PAs */
	NVGW_EXC_LOCAL_CUSTOMER,    /* ctx: VLAN */
	NVGW_EXC_LOCAL_VSID,        /* ctx: VSID slot */
	NVGW_EXC_FRAG_NEEDED,       /* ctx: VLAN */
	NVGW_EXC_RESOLVE,           /* ctx: scope; hi: address to resolve */
};
#define NVGW_EXC_WORD(reason, ctx) (((uint32_t)(reason) << 24) | ((ctx) & 0xFFFFFF))

/* A worker's VSID counters: packets and bytes per direction and counter
 * slot, one array per direction, so a packet's counters share their line
 * with three other VSIDs' of the same direction, not with its own VSID's
 * other directions (with thousands of VSIDs, lines the worker misses on). */
enum nvgw_vsid_dir {
	NVGW_DIR_ENCAP,
	NVGW_DIR_DECAP,
	NVGW_DIR_REWRITE_OUT,       /* toward the fabric */
	NVGW_DIR_REWRITE_IN,        /* from the fabric */
	NVGW_DIRS
};

struct nvgw_count {
	uint64_t pkts, bytes;
};

/* Counters of the exception thread (its only writer). */
struct nvgw_exc_counters {
	uint64_t arp_replies, arp_requests, neigh_learned, arp_no_record;
	uint64_t echo_replies, frag_needed, ignored, inject_full;
	uint64_t resolve_refused;   /* no neighbour entry: the learning budget is spent */
	uint64_t arp_spoofed;       /* ARP inside NVGRE whose sender is not at the outer PA */
	uint64_t resolve_not_host;  /* a next hop that is ours, or the link's network or broadcast */
	uint64_t no_mbuf;           /* a reply not sent: no mbuf free in the pool to build it in */
};

struct nvgw_tables;

/* What the NVGRE pipeline shares between workers and the exception thread. */
struct nvgw_ctx {
	struct nvgw_tables *t;
	struct rte_ring *exc;           /* workers -> exception thread */
	struct rte_ring *inject;        /* exception thread -> worker 0 */
	struct rte_mempool *pool;
	uint16_t provider_port, customer_port;
	uint16_t customer_mtu;          /* IPv4 packets onto a VLAN: at most this */
	unsigned int exc_qsbr_id;
	volatile int quit;
	struct nvgw_exc_counters c;
};

struct nvgw_port_counters {
	uint64_t rx_pkts, rx_bytes;
	uint64_t tx_pkts, tx_bytes;
};

struct nvgw_txbuf {
	uint16_t n;
	uint16_t queue;
	uint32_t bytes;                 /* the sum of pkts[0 .. n)'s pkt_len */
	struct rte_mbuf *pkts[NVGW_BURST];
};

struct nvgw_rxq {
	uint16_t port;
	uint16_t queue;
};

/* Per-lcore state: written only by its worker (counters) and by the
 * control thread before launch (everything else). */
struct nvgw_worker {
	unsigned int lcore;
	uint16_t n_rxq;
	uint16_t n_ports;
	enum nvgw_pipeline pipeline;
	struct nvgw_rxq rxq[NVGW_MAX_RXQ];
	uint16_t fwd_out[NVGW_MAX_PORTS];        /* forward pipeline: in -> out */
	const volatile int *quit;
	struct nvgw_ctx *ctx;                     /* NVGRE pipeline only */
	struct rte_rcu_qsbr *qsbr;                /* reports quiescence when set */
	unsigned int qsbr_id;
	struct rte_ring *inject;                  /* worker 0: exception replies */
	struct nvgw_count *vsid[NVGW_DIRS];       /* each [NVGW_MAX_VSIDS], one allocation */
	uint16_t id, n_workers;                   /* software RSS when n_workers > 1 */
	struct rte_ring *to[NVGW_MAX_WORKERS];    /* this worker -> owner (SP/SC) */
	struct rte_ring *from[NVGW_MAX_WORKERS];  /* others -> this worker */

	struct nvgw_txbuf tx[NVGW_MAX_PORTS] __rte_cache_aligned;

	/* counters, read by the control thread while the worker runs */
	struct nvgw_port_counters port[NVGW_MAX_PORTS] __rte_cache_aligned;
	uint64_t drops[NVGW_DROP_MAX];
	uint64_t exceptions;
	uint64_t processed, handed_off;
	uint64_t loops, busy_loops;
	uint64_t busy_cycles, idle_cycles;
} __rte_cache_aligned;

static inline struct nvgw_count *
nvgw_vsid_count(struct nvgw_worker *w, enum nvgw_vsid_dir dir, uint16_t slot)
{
	return &w->vsid[dir][slot];
}

/* Launched with rte_eal_remote_launch; returns when *quit becomes set,
 * after flushing its TX buffers. */
int nvgw_worker_main(void *arg);

/* Send what port's TX buffer holds. */
void nvgw_tx_flush(struct nvgw_worker *w, uint16_t port);

/* Queue one packet for transmission on port; flushed when full or on
 * the drain timer. */
static inline void
nvgw_tx(struct nvgw_worker *w, uint16_t port, struct rte_mbuf *m)
{
	struct nvgw_txbuf *b = &w->tx[port];

	b->pkts[b->n++] = m;
	b->bytes += m->pkt_len;
	if (unlikely(b->n == NVGW_BURST))
		nvgw_tx_flush(w, port);
}

/* Send n packets of `bytes` bytes in all on port now (counted, the unsent
 * freed as tx_full). */
void nvgw_tx_send(struct nvgw_worker *w, uint16_t port, uint16_t queue,
		  struct rte_mbuf **pkts, uint16_t n, uint32_t bytes);

/* Queue n <= NVGW_BURST packets of `bytes` bytes in all (the pipeline
 * knows the lengths it wrote): a full burst with nothing queued before it
 * goes straight out. */
static inline void
nvgw_tx_bulk(struct nvgw_worker *w, uint16_t port, struct rte_mbuf **m, uint16_t n,
	     uint32_t bytes)
{
	struct nvgw_txbuf *b = &w->tx[port];
	uint16_t room = NVGW_BURST - b->n, i;

	if (n == NVGW_BURST && b->n == 0)
		return nvgw_tx_send(w, port, b->queue, m, n, bytes);
	if (n >= room) {
		uint32_t part = 0;

		for (i = 0; i < room; i++)
			part += m[i]->pkt_len;
		memcpy(&b->pkts[b->n], m, room * sizeof(*m));
		b->n = NVGW_BURST;
		b->bytes += part;
		nvgw_tx_flush(w, port);
		m += room;
		n -= room;
		bytes -= part;
	}
	memcpy(&b->pkts[b->n], m, n * sizeof(*m));
	b->n += n;
	b->bytes += bytes;
}

static inline void
nvgw_drop(struct nvgw_worker *w, enum nvgw_drop why, struct rte_mbuf *m)
{
	w->drops[why]++;
	rte_pktmbuf_free(m);
}

/* Pipelines: one call per received burst. */
void nvgw_fwd_burst(struct nvgw_worker *w, uint16_t in_port,
		    struct rte_mbuf **pkts, uint16_t n);

void nvgw_nvgre_burst(struct nvgw_worker *w, uint16_t in_port,
		      struct rte_mbuf **pkts, uint16_t n);

/* The exception thread (rte_ctrl_thread_create); returns when ctx->quit. */
void *nvgw_exc_main(void *ctx);
/* One exception packet: answered through ctx->inject, or freed. */
void nvgw_exc_handle(struct nvgw_ctx *c, struct rte_mbuf *m);
/* Ask the exception thread to ARP for (scope, ip) now, before a batch points
 * records at it: an empty mbuf on its ring, as a worker punts a packet for an
 * unresolved next hop (and as rate-limited). 0, or -ENOBUFS. */
int nvgw_exc_resolve_ahead(struct nvgw_ctx *c, uint16_t scope, uint32_t ip);

/* rte_errno is a per-lcore macro; Cython reads it through this. */
int nvgw_errno(void);

#endif
