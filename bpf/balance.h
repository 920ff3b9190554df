/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* A client's packet to a virtual server: its flow, else a member chosen by
 * persistence or the pool and a new flow, then forwarding. */
#ifndef LIMPET_BALANCE_H
#define LIMPET_BALANCE_H

#include "common.h"
#include "parse.h"
#include "persist.h"
#include "flow.h"
#include "forward.h"
#include "reject.h"

/* Records a new flow to the member d chose, and takes the connections it
 * holds. A NAT flow to a member address and port that serve several virtual
 * servers gets a reverse entry, so the member's replies find it. */
static __always_inline void flow_create(struct scratch *sc, struct packet *p, struct vs_info *vs,
					struct vs_stats *st, struct decision *d, const union addr *maddr,
					__be16 mport, __u64 now)
{
	struct flow_info *nf = &sc->flow;
	__u32 member_id = d->member_id;

	__builtin_memset(nf, 0, sizeof(*nf));
	nf->addr = *maddr;
	nf->port = mport;
	nf->vs_id = vs->vs_id;
	nf->member_id = member_id;
	nf->table = flow_table_of(d->pkey.table_id);
	nf->created_ns = now;
	nf->last_seen_ns = now;
	nf->flags = (vs->flags & VS_F_DSR) ? FLOW_F_DSR : FLOW_F_NAT;
	nf->flags |= (__u32)(p->family == FAMILY_V4 ? vs->v4_prefix : vs->v6_prefix) << FLOW_PREFIX_SHIFT;
	if (p->proto == IPPROTO_UDP)
		nf->flags |= FLOW_F_UDP;
	nf->flags |= FLOW_F_MEMBER_COUNTED;
	if (d->member->family != p->family)
		nf->flags |= FLOW_F_TARGET_OTHER_FAMILY;
	if (d->entry)
		nf->flags |= FLOW_F_COUNTED;
	long err = flow_insert(&sc->key, nf, BPF_NOEXIST);
	if (err) {
		/* EEXIST: another CPU's packet of this flow made it first. Else
		 * the table had no room: this packet goes to the member chosen,
		 * and the connection's next ones are balanced again (persisted
		 * clients keep their server), counted. */
		if (err != -EEXIST)
			count_reason(REASON_FLOW_TABLE_FULL);
		return;
	}
	member_acquire(member_id);
	if (d->entry) {
		d->entry->last_seen_ns = now;
		__sync_fetch_and_add(&d->entry->conn_state, CS_INC);
	}
	if (st)
		st->new_flows++;
	struct member_stats *ms = bpf_map_lookup_elem(&member_counters, &member_id);
	if (ms)
		ms->new_flows++;
	if (vs->flags & VS_F_DSR)
		return;
	/* Replies find the flow through member_vs, unless the member's address
	 * and port serve several virtual servers and cannot name the VIP. */
	struct member_vs_info *mv = member_vs_of(maddr, mport, p->proto, p->family);
	if (!mv || !(mv->flags & MEMBER_VS_F_SHARED))
		return;
	reverse_flow_key(&sc->reverse, &sc->key, maddr, mport);
	nf->addr = p->dst;
	nf->port = p->dport;
	nf->flags = FLOW_F_REVERSE | FLOW_F_NAT; /* counts nothing */
	nf->table = FLOW_TABLE_NONE;
	flow_insert(&sc->reverse, nf, BPF_ANY);
}

/* The virtual server of a VIP's port and protocol, or NULL: the VIP's own
 * entry holds the first VIP_INLINE_SERVERS, virtual_servers all of them. */
static __always_inline const struct vs_info *vip_server_at(struct vip_info *vip, const union addr *dst, __u8 family,
							    __be16 port, __u8 proto)
{
	__u32 want = (__u32)port | (__u32)proto << 16;

#pragma unroll
	for (int i = 0; i < VIP_INLINE_SERVERS; i++) {
		if (i >= vip->used)
			break;
		struct vip_server *s = &vip->servers[i];
		if (((__u32)s->port | (__u32)s->proto << 16) == want)
			return &s->vs;
	}
	if (!(vip->flags & VIP_F_OVERFLOW))
		return NULL;
	struct vip_key vk;
	__builtin_memset(&vk, 0, sizeof(vk));
	vk.addr = *dst;
	vk.port = port;
	vk.proto = proto;
	vk.family = family;
	return bpf_map_lookup_elem(&virtual_servers, &vk);
}

/* Copies the virtual server of a packet to a VIP into vs, or returns -1. A
 * copy, so the rest of the path is verified once, for one stack slot, not
 * once per entry it could have come from. */
static __always_inline int vip_server(struct vip_info *vip, const struct packet *p, struct vs_info *vs)
{
	const struct vs_info *s = vip_server_at(vip, &p->dst, p->family, p->dport, p->proto);
	if (!s)
		return -1;
	*vs = *s;
	return 0;
}

static __always_inline int handle_vs(struct xdp_md *ctx, struct packet *p, struct vs_info *vs)
{
	struct vs_stats *st = bpf_map_lookup_elem(&vs_counters, &vs->vs_id);
	__u64 now = now_ns();
	struct scratch *sc = scratch_area();
	struct flow_info *f;

	if (!sc)
		return XDP_DROP;
	if (st) {
		st->packets++;
		st->bytes += p->pkt_len;
	}
	flow_key_of(&sc->key, p);
	union addr maddr;
	f = flow_lookup(&sc->key, &maddr);
	if (f) {
		if (!flow_track_client(f, &sc->key, p, now)) {
			flow_touch(f, now);
			return forward_to_member(ctx, p, vs->flags, &maddr, f->port, f->member_id, now);
		}
		flow_delete(&sc->key);
	}

	/* No flow. A FIN or RST cannot start a connection: forward it to the
	 * persisted or chosen server, but do not record a flow for it. */
	int create = !(p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FIN | TCP_RST)));
	struct decision d;
	__builtin_memset(&d, 0, sizeof(d));
	int r = choose_member(vs, p, now, &d, create);
	if (r != REASON_NONE) {
		if (r == REASON_NO_MEMBER && st)
			st->no_member_drops++;
		count_reason(r);
		if (r == REASON_TABLE_FULL)
			return reply_rst(ctx, p);
		return XDP_DROP;
	}
	maddr = d.member->addr;
	__be16 mport = d.member->port ? d.member->port : p->dport;

	if (create)
		flow_create(sc, p, vs, st, &d, &maddr, mport, now);
	else
		count_reason(REASON_STRAY_TCP);
	return forward_to_member(ctx, p, vs->flags, &maddr, mport, d.member_id, now);
}

#endif
