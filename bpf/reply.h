/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Replies of NAT members: found through their reverse flow entry, their
 * source rewritten back to the VIP. */
#ifndef LIMPET_REPLY_H
#define LIMPET_REPLY_H

#include "common.h"
#include "parse.h"
#include "flow.h"
#include "forward.h"

static __always_inline int handle_reply(struct xdp_md *ctx, struct packet *p)
{
	struct flow_key rk;
	flow_key_of(&rk, p);
	struct flow_info *r = bpf_map_lookup_elem(&flows, &rk);
	if (!r || !(r->flags & FLOW_F_REVERSE))
		return XDP_PASS;

	__u64 now = now_ns();
	union addr vip = r->addr;
	__be16 vport = r->port;
	__u32 vs_id = r->vs_id;

	flow_touch(r, now);
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FIN | TCP_RST))) {
		struct flow_key fk;
		forward_flow_key(&fk, p, &vip, vport);
		struct flow_info *f = bpf_map_lookup_elem(&flows, &fk);
		if (f)
			flow_close(f, p->tcp_flags, FLOW_F_FIN_SERVER, now);
	}
	struct vs_stats *st = bpf_map_lookup_elem(&vs_counters, &vs_id);
	if (st) {
		st->reply_packets++;
		st->reply_bytes += p->pkt_len;
	}
	return forward_reply(ctx, p, &vip, vport);
}

#endif
