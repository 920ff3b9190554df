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

/* The flows4 key of an IPv4 flow. */
static __always_inline void flow4_key_of(struct flow4_key *k4, const struct flow_key *k)
{
	__builtin_memset(k4, 0, sizeof(*k4));
	k4->src = k->src.v4;
	k4->dst = k->dst.v4;
	k4->sport = k->sport;
	k4->dport = k->dport;
	k4->proto = k->proto;
}

/* The flow of k from its family's table, or NULL. Its target (forward: the
 * member; reverse: the VIP) is copied to *target: flow_info's other fields
 * sit at the same offsets in both tables, addr does not. */
static __always_inline struct flow_info *flow_lookup(const struct flow_key *k, union addr *target)
{
	if (k->family == FAMILY_V4) {
		struct flow4_key k4;
		flow4_key_of(&k4, k);
		struct flow4_info *f4 = bpf_map_lookup_elem(&flows4, &k4);
		if (f4) {
			__builtin_memset(target, 0, sizeof(*target));
			target->v4 = f4->addr;
		}
		return (struct flow_info *)f4;
	}
	struct flow_info *f = bpf_map_lookup_elem(&flows6, k);
	if (f)
		*target = f->addr;
	return f;
}

/* Inserts or replaces k's flow, v (a flows4 value is v's first
 * FLOW4_INFO_SIZE bytes). */
static __always_inline long flow_insert(const struct flow_key *k, const struct flow_info *v, __u64 flags)
{
	if (k->family == FAMILY_V4) {
		struct flow4_key k4;
		flow4_key_of(&k4, k);
		return bpf_map_update_elem(&flows4, &k4, v, flags);
	}
	return bpf_map_update_elem(&flows6, k, v, flags);
}

static __always_inline void flow_delete(const struct flow_key *k)
{
	if (k->family == FAMILY_V4) {
		struct flow4_key k4;
		flow4_key_of(&k4, k);
		bpf_map_delete_elem(&flows4, &k4);
		return;
	}
	bpf_map_delete_elem(&flows6, k);
}

/* persist_key.table_id packed into flow_info.table, and back. */
static __always_inline __u16 flow_table_of(__u32 table_id)
{
	if (table_id == TABLE_NONE)
		return FLOW_TABLE_NONE;
	return (table_id & TABLE_INDEX_MASK) | ((table_id & TABLE_PLAIN_HASH) ? FLOW_TABLE_PLAIN : 0);
}

static __always_inline __u32 flow_table_id(__u16 table)
{
	if (table == FLOW_TABLE_NONE)
		return TABLE_NONE;
	return (table & TABLE_INDEX_MASK) | ((table & FLOW_TABLE_PLAIN) ? TABLE_PLAIN_HASH : 0);
}

/* The persistence key a forward flow holds: its client (the key's source)
 * masked by the prefix kept in its flags, in its table. */
static __always_inline void flow_pkey(struct persist_key *pk, __u16 table, __u32 flags, const struct flow_key *k)
{
	__builtin_memset(pk, 0, sizeof(*pk));
	pk->table_id = flow_table_id(table);
	pk->family = k->family;
	pk->client = k->src;
	mask_addr(&pk->client, k->family, flags >> FLOW_PREFIX_SHIFT);
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
 * connection count, exactly once, whoever (FIN, RST, GC) gets there first.
 * k is the flow's forward key. */
static __always_inline void flow_release(struct flow_info *f, const struct flow_key *k, __u64 now)
{
	__u32 old = __sync_fetch_and_and(&f->flags, ~(FLOW_F_COUNTED | FLOW_F_MEMBER_COUNTED));

	if (old & FLOW_F_COUNTED) {
		struct persist_key pk;
		flow_pkey(&pk, f->table, old, k);
		persist_release(&pk, now);
	}
	if (old & FLOW_F_MEMBER_COUNTED)
		member_release(f->member_id);
}

/* A FIN or RST from one side (fin_side: FLOW_F_FIN_CLIENT or _SERVER). An
 * RST ends the flow; a FIN ends it once the other side has sent one too, or
 * at once for a DSR client, whose server's FIN never passes here. */
static __always_inline void flow_close(struct flow_info *f, const struct flow_key *k, __u8 tcp_flags,
				       __u32 fin_side, __u64 now)
{
	if (tcp_flags & TCP_RST) {
		__sync_fetch_and_or(&f->flags, FLOW_F_RST);
		flow_release(f, k, now);
		return;
	}
	__u32 ends = fin_side == FLOW_F_FIN_CLIENT ? FLOW_F_FIN_SERVER | FLOW_F_DSR : FLOW_F_FIN_CLIENT;
	__u32 old = __sync_fetch_and_or(&f->flags, fin_side);
	if (old & ends)
		flow_release(f, k, now);
}

/* TCP state on the client side of a flow. Returns 1 when a SYN arrives on a
 * flow that has already closed: the port was reused for a new connection. */
static __always_inline int flow_track_client(struct flow_info *f, const struct flow_key *k, struct packet *p,
					     __u64 now)
{
	if (p->proto != IPPROTO_TCP)
		return 0;
	__u8 fl = p->tcp_flags;
	if (fl & (TCP_RST | TCP_FIN)) {
		flow_close(f, k, fl, FLOW_F_FIN_CLIENT, now);
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
