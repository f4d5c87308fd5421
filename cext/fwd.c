/* Forward pipeline: every packet of an input port leaves on its paired
 * output port unchanged (testpmd's io mode), to prove the machinery. */
#include "nvgw.h"

void
nvgw_fwd_burst(struct nvgw_worker *w, uint16_t in_port,
	       struct rte_mbuf **pkts, uint16_t n)
{
	uint16_t out = w->fwd_out[in_port];
	uint16_t i;

	if (unlikely(out >= w->n_ports)) {
		for (i = 0; i < n; i++)
			nvgw_drop(w, NVGW_DROP_no_tx_port, pkts[i]);
		return;
	}
	for (i = 0; i < n; i++)
		nvgw_tx(w, out, pkts[i]);
}
