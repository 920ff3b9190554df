/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The flow table: keys, TCP state, and the release of what a flow holds
 * (a live connection of its persistence entry, one of its member's). */
#ifndef LIMPET_FLOW_H
#define LIMPET_FLOW_H

#include "common.h"
#include "parse.h"
#include "pick.h"
#include "persist.h"

/* The key of the packet's own flow, as its sender sent it. */
static __always_inline void flow_key_of(struct flow_key *k, const struct packet *p)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->src = p->src;
	k->dst = p->dst;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->family = p->family;
}

/* The key of a NAT flow's replies: from the member to the client. */
static __always_inline void reverse_flow_key(struct flow_key *rk, const struct flow_key *fk,
					     const union addr *maddr, __be16 mport)
{
	__builtin_memset(rk, 0, sizeof(*rk));
	rk->src = *maddr;
	rk->dst = fk->src;
	rk->sport = mport;
	rk->dport = fk->sport;
	rk->proto = fk->proto;
	rk->family = fk->family;
}

/* The forward key of a reply's flow: from the client to the VIP. */
static __always_inline void forward_flow_key(struct flow_key *fk, const struct packet *reply,
					     const union addr *vip, __be16 vport)
{
	__builtin_memset(fk, 0, sizeof(*fk));
	fk->src = reply->dst;
	fk->dst = *vip;
	fk->sport = reply->dport;
	fk->dport = vport;
	fk->proto = reply->proto;
	fk->family = reply->family;
}

/* The member_vs entry of a NAT member's address and port, as a packet's
 * source (a reply) or as a flow's target. */
static __always_inline struct member_vs_info *member_vs_of(const union addr *a, __be16 port, __u8 proto, __u8 family)
{
	struct member_vs_key k;

	__builtin_memset(&k, 0, sizeof(k));
	k.addr = *a;
	k.port = port;
	k.proto = proto;
	k.family = family;
	return bpf_map_lookup_elem(&member_vs, &k);
}

/* Ends a flow's hold on its persistence entry and on its member's active
 * connection count, exactly once, whoever (FIN, RST, GC) gets there first. */
static __always_inline void flow_release(struct flow_info *f, __u64 now)
{
	__u32 old = __sync_fetch_and_and(&f->flags, ~(FLOW_F_COUNTED | FLOW_F_MEMBER_COUNTED));

	if (old & FLOW_F_COUNTED)
		persist_release(&f->pkey, now);
	if (old & FLOW_F_MEMBER_COUNTED)
		member_release(f->member_id);
}

/* A FIN or RST from one side (fin_side: FLOW_F_FIN_CLIENT or _SERVER). An
 * RST ends the flow; a FIN ends it once the other side has sent one too, or
 * at once for a DSR client, whose server's FIN never passes here. */
static __always_inline void flow_close(struct flow_info *f, __u8 tcp_flags, __u32 fin_side, __u64 now)
{
	if (tcp_flags & TCP_RST) {
		__sync_fetch_and_or(&f->flags, FLOW_F_RST);
		flow_release(f, now);
		return;
	}
	__u32 ends = fin_side == FLOW_F_FIN_CLIENT ? FLOW_F_FIN_SERVER | FLOW_F_DSR : FLOW_F_FIN_CLIENT;
	__u32 old = __sync_fetch_and_or(&f->flags, fin_side);
	if (old & ends)
		flow_release(f, now);
}

/* TCP state on the client side of a flow. Returns 1 when a SYN arrives on a
 * flow that has already closed: the port was reused for a new connection. */
static __always_inline int flow_track_client(struct flow_info *f, struct packet *p, __u64 now)
{
	if (p->proto != IPPROTO_TCP)
		return 0;
	__u8 fl = p->tcp_flags;
	if (fl & (TCP_RST | TCP_FIN)) {
		flow_close(f, fl, FLOW_F_FIN_CLIENT, now);
	} else if ((fl & TCP_SYN) && !(fl & TCP_ACK) &&
		   (f->flags & (FLOW_F_FIN_CLIENT | FLOW_F_FIN_SERVER | FLOW_F_RST)) &&
		   !(f->flags & FLOW_F_MEMBER_COUNTED)) {
		/* Ended (flow_release cleared its member count, which every
		 * flow holds; a half-closed one still holds it). */
		return 1;
	}
	return 0;
}

/* Stamps a flow as seen, coarsely (FLOW_TOUCH_INTERVAL_NS). */
static __always_inline void flow_touch(struct flow_info *f, __u64 now)
{
	if (now - f->last_seen_ns > FLOW_TOUCH_INTERVAL_NS)
		f->last_seen_ns = now;
}

#endif
