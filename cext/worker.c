/* The worker loop: rx burst, pipeline, buffered tx, drained on a timer. */
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_errno.h>

#include "nvgw.h"
#include "dist.h"

typedef void (*burst_fn)(struct nvgw_worker *, uint16_t,
			 struct rte_mbuf **, uint16_t);

void
nvgw_tx_send(struct nvgw_worker *w, uint16_t port, uint16_t queue,
	     struct rte_mbuf **pkts, uint16_t n, uint32_t bytes)
{
	uint16_t sent = rte_eth_tx_burst(port, queue, pkts, n), i;

	if (unlikely(sent < n)) {
		for (i = sent; i < n; i++)      /* still ours: the driver took none */
			bytes -= pkts[i]->pkt_len;
		w->drops[NVGW_DROP_tx_full] += n - sent;
		rte_pktmbuf_free_bulk(&pkts[sent], n - sent);
	}
	w->port[port].tx_pkts += sent;
	w->port[port].tx_bytes += bytes;
}

void
nvgw_tx_flush(struct nvgw_worker *w, uint16_t port)
{
	struct nvgw_txbuf *b = &w->tx[port];

	if (b->n == 0)
		return;
	nvgw_tx_send(w, port, b->queue, b->pkts, b->n, b->bytes);
	b->n = 0;
	b->bytes = 0;
}

static void
flush_all(struct nvgw_worker *w)
{
	uint16_t p;

	for (p = 0; p < w->n_ports; p++)
		nvgw_tx_flush(w, p);
}

/* Inlined once per pipeline so the per-burst call is direct: the mode is
 * chosen when the worker starts, never per packet. */
static __rte_always_inline int
worker_loop(struct nvgw_worker *w, burst_fn fn)
{
	const uint64_t drain = (rte_get_tsc_hz() + US_PER_S - 1) / US_PER_S *
			       NVGW_DRAIN_US;
	struct rte_mbuf *pkts[NVGW_BURST];
	uint64_t prev = rte_rdtsc(), now, start;
	uint16_t i, n, got;

	if (w->qsbr != NULL) {
		rte_rcu_qsbr_thread_register(w->qsbr, w->qsbr_id);
		rte_rcu_qsbr_thread_online(w->qsbr, w->qsbr_id);
	}
	while (!*w->quit) {
		start = rte_rdtsc();
		got = 0;
		for (i = 0; i < w->n_rxq; i++) {
			const struct nvgw_rxq *q = &w->rxq[i];
			uint16_t k;
			uint64_t bytes = 0;

			n = rte_eth_rx_burst(q->port, q->queue, pkts, NVGW_BURST);
			if (n == 0)
				continue;
			/* One pass over the mbufs: count, and start the
			 * headers' fetch for the pipeline (or the RSS hash).
			 * Unrolled: the loop's own three instructions a
			 * packet were a third of it. */
#pragma GCC unroll 4
			for (k = 0; k < n; k++) {
				bytes += pkts[k]->pkt_len;
				rte_prefetch0(rte_pktmbuf_mtod(pkts[k], void *));
			}
			w->port[q->port].rx_pkts += n;
			w->port[q->port].rx_bytes += bytes;
			got += n;
			if (w->n_workers > 1) {
				dist_burst(w, q->port, pkts, n, fn);
			} else {
				w->processed += n;
				fn(w, q->port, pkts, n);
			}
		}
		if (w->n_workers > 1)
			got += dist_drain(w, fn);
		if (w->inject != NULL) {
			n = rte_ring_sc_dequeue_burst(w->inject, (void **)pkts,
						      NVGW_BURST, NULL);
			for (i = 0; i < n; i++)
				nvgw_tx(w, pkts[i]->port, pkts[i]);
		}
		if (w->qsbr != NULL)
			rte_rcu_qsbr_quiescent(w->qsbr, w->qsbr_id);
		now = rte_rdtsc();
		if (unlikely(now - prev > drain)) {
			flush_all(w);
			prev = now;
		}
		w->loops++;
		if (got) {
			w->busy_loops++;
			w->busy_cycles += now - start;
		} else {
			w->idle_cycles += now - start;
		}
	}
	/* The exception thread stops first (Gateway.stop): what it left for us
	 * goes out with the rest. */
	if (w->inject != NULL)
		while ((n = rte_ring_sc_dequeue_burst(w->inject, (void **)pkts,
						      NVGW_BURST, NULL)) > 0)
			for (i = 0; i < n; i++)
				nvgw_tx(w, pkts[i]->port, pkts[i]);
	flush_all(w);
	if (w->qsbr != NULL) {
		rte_rcu_qsbr_thread_offline(w->qsbr, w->qsbr_id);
		rte_rcu_qsbr_thread_unregister(w->qsbr, w->qsbr_id);
	}
	return 0;
}

int
nvgw_worker_main(void *arg)
{
	struct nvgw_worker *w = arg;

	switch (w->pipeline) {
	case NVGW_PIPE_FORWARD:
		return worker_loop(w, nvgw_fwd_burst);
	case NVGW_PIPE_NVGRE:
		return worker_loop(w, nvgw_nvgre_burst);
	}
	return -EINVAL;
}

int
nvgw_errno(void)
{
	return rte_errno;
}
