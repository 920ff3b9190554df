/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Replies of NAT members, rewritten back to the VIP. A reply finds its
 * connection's forward flow through member_vs: the member's address and port
 * name the one virtual server they serve, hence the VIP. Where they serve
 * several, the connection keeps a reverse flow entry that names it. */
#ifndef LIMPET_REPLY_H
#define LIMPET_REPLY_H

#include "common.h"
#include "parse.h"
#include "flow.h"
#include "forward.h"

static __always_inline int handle_reply(struct xdp_md *ctx, struct packet *p)
{
	struct member_vs_info *mv = member_vs_of(&p->src, p->sport, p->proto, p->family);
	if (!mv)
		return XDP_PASS;

	struct flow_key fk;
	struct flow_info *f;
	union addr vip;
	__be16 vport;
	__u32 vs_id;
	__u64 now = now_ns();

	union addr target;
	if (mv->flags & MEMBER_VS_F_SHARED) {
		flow_key_of(&fk, p);
		struct flow_info *r = flow_lookup(&fk, &vip);
		if (!r || !(r->flags & FLOW_F_REVERSE))
			return XDP_PASS;
		vport = r->port;
		vs_id = r->vs_id;
		flow_touch(r, now);
		forward_flow_key(&fk, p, &vip, vport);
		f = flow_lookup(&fk, &target);
	} else {
		vip = mv->vip;
		vport = mv->vip_port;
		forward_flow_key(&fk, p, &vip, vport);
		f = flow_lookup(&fk, &target);
		/* The client's flow to this VIP must go to this member: the
		 * client may have another member for it now. */
		if (!f || (f->flags & (FLOW_F_NAT | FLOW_F_REVERSE)) != FLOW_F_NAT || f->port != p->sport ||
		    __builtin_memcmp(&target, &p->src, sizeof(target)))
			return XDP_PASS;
		vs_id = f->vs_id;
	}
	/* A reply keeps its connection alive as the client's packets do, so a
	 * UDP flow that only the server sends on does not expire. */
	if (f) {
		flow_touch(f, now);
		if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FIN | TCP_RST)))
			flow_close(f, &fk, p->tcp_flags, FLOW_F_FIN_SERVER, now);
	}
	struct vs_stats *st = bpf_map_lookup_elem(&vs_counters, &vs_id);
	if (st) {
		st->reply_packets++;
		st->reply_bytes += p->pkt_len;
	}
	/* The forward flow keeps the replies' next hop (none without it). */
	return forward_reply(ctx, p, &vip, vport, f ? &f->reply_nh : NULL, now);
}

#endif
