/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Source-IP persistence: the tables, an entry's live connection count and
 * countdown, mirroring events, and the choice of a member for a connection
 * with no flow (persisted server, else the pool's pick). */
#ifndef LIMPET_PERSIST_H
#define LIMPET_PERSIST_H

#include "common.h"
#include "parse.h"
#include "pick.h"

static __always_inline struct table_stats *table_stats_of(__u32 table_id)
{
	__u32 idx = table_id & TABLE_INDEX_MASK;

	return bpf_map_lookup_elem(&table_counters, &idx);
}

static __always_inline void *persist_table(__u32 table_id)
{
	__u32 idx = table_id & TABLE_INDEX_MASK;

	if (table_id & TABLE_PLAIN_HASH)
		return bpf_map_lookup_elem(&persist_hash_tables, &idx);
	return bpf_map_lookup_elem(&persist_lru_tables, &idx);
}

static __always_inline void mask_addr(union addr *a, __u8 family, __u8 prefix)
{
	if (family == FAMILY_V4) {
		if (prefix < 32)
			a->v4 &= bpf_htonl(prefix ? ~0u << (32 - prefix) : 0);
		return;
	}
#pragma unroll
	for (int i = 0; i < 4; i++) {
		int bits = (int)prefix - i * 32;
		if (bits >= 32)
			continue;
		a->v6[i] &= bpf_htonl(bits > 0 ? ~0u << (32 - bits) : 0);
	}
}

/* Publishes a change of a mirrored table's entry. A full ring buffer loses
 * the event, counted, and never holds up the packet. */
static __always_inline void persist_event(__u8 type, const struct persist_key *key, const union addr *server,
					  __be16 server_port, __u64 now)
{
	__u32 idx = key->table_id & TABLE_INDEX_MASK;
	__u32 *flags = bpf_map_lookup_elem(&table_config, &idx);

	if (!flags || !(*flags & TABLE_F_MIRROR))
		return;
	struct persist_event *ev = bpf_ringbuf_reserve(&persist_events, sizeof(*ev), 0);
	if (!ev) {
		count_reason(REASON_EVENT_LOST);
		return;
	}
	ev->type = type;
	ev->family = key->family;
	ev->server_port = server_port;
	ev->table_id = key->table_id;
	ev->client = key->client;
	ev->server = *server;
	ev->time_ns = now;
	bpf_ringbuf_submit(ev, 0);
}

/* Drops one live connection of an entry. A bounded CAS loop instead of a
 * plain atomic add, so a count the GC has just corrected never goes below 0. */
static __always_inline void persist_release(const struct persist_key *key, __u64 now)
{
	if (key->table_id == TABLE_NONE)
		return;
	void *table = persist_table(key->table_id);
	if (!table)
		return;
	struct persist_entry *e = bpf_map_lookup_elem(table, key);
	if (!e)
		return;
	/* The countdown base is written before the count drops, so nobody sees
	 * zero connections next to a stale timestamp. */
	e->last_seen_ns = now;
#pragma unroll
	for (int i = 0; i < 3; i++) {
		__u64 cs = READ_ONCE_U64(e->conn_state);
		if ((cs & CS_CONNS_MASK) == 0)
			break;
		if (__sync_val_compare_and_swap(&e->conn_state, cs, cs + CS_DEC) == cs)
			break;
	}
}

/* Finds the member of a pool that a persisted server maps to: the same
 * address and port, else the same address on any port (a shared table can
 * persist a client across pools that run the server on other ports). */
static __always_inline int member_find(__u32 pool_id, const struct persist_entry *e, __u32 *member_id)
{
	struct member_addr_key k;

	__builtin_memset(&k, 0, sizeof(k));
	k.pool_id = pool_id;
	k.family = e->family;
	k.port = e->server_port;
	k.addr = e->server;
	__u32 *id = bpf_map_lookup_elem(&member_addrs, &k);
	if (!id) {
		k.port = 0;
		id = bpf_map_lookup_elem(&member_addrs, &k);
	}
	if (!id)
		return -1;
	*member_id = *id;
	return 0;
}

struct decision {
	struct member_info *member;
	struct persist_entry *entry; /* counted when the flow is created */
	__u32 member_id;
	__u32 pad;
	struct persist_key pkey;
};

/* Chooses the member for a connection with no flow: persisted server if it
 * is usable, else the pool's choice, recorded in the table when create is set.
 * Returns REASON_NONE or the reason the packet is dropped (or rejected). */
static __always_inline int choose_member(struct vs_info *vs, struct packet *p, __u64 now,
					 struct decision *d, int create)
{
	struct vs_stats *st = bpf_map_lookup_elem(&vs_counters, &vs->vs_id);

	d->pkey.table_id = TABLE_NONE;
	d->entry = NULL;
	if (!(vs->flags & VS_F_PERSIST)) {
		d->member = pool_pick(vs->pool_id, p, &d->member_id);
		return d->member ? REASON_NONE : REASON_NO_MEMBER;
	}

	void *table = persist_table(vs->table_id);
	if (!table)
		return REASON_NO_TABLE;
	struct table_stats *ts = table_stats_of(vs->table_id);

	__builtin_memset(&d->pkey, 0, sizeof(d->pkey));
	d->pkey.table_id = vs->table_id;
	d->pkey.family = p->family;
	d->pkey.client = p->src;
	mask_addr(&d->pkey.client, p->family, p->family == FAMILY_V4 ? vs->v4_prefix : vs->v6_prefix);

	__u64 update_flags = BPF_NOEXIST;
	__u64 keep_conns = 0;
	int moved = 0;
	struct persist_entry *e = bpf_map_lookup_elem(table, &d->pkey);
	if (e) {
		__u64 cs = READ_ONCE_U64(e->conn_state);
		if (cs & CS_DEAD) {
			update_flags = BPF_ANY;
			goto miss;
		}
		if ((cs & CS_CONNS_MASK) == 0 && now > e->last_seen_ns &&
		    now - e->last_seen_ns > vs->timeout_ns) {
			/* Expired but not yet swept: claim it, so that one CPU
			 * re-balances the client and the GC does not race us. */
			__sync_val_compare_and_swap(&e->conn_state, cs, cs | CS_DEAD);
			if (ts)
				ts->expired++;
			update_flags = BPF_ANY;
			goto miss;
		}
		__u32 mid;
		if (member_find(vs->pool_id, e, &mid) == 0) {
			struct member_info *m = member_get(mid);
			/* A member at its connection limit counts as down, as
			 * NSX's server-down policy has it. */
			int full = m && member_full(mid, m);
			if (m && (m->flags & MEMBER_F_UP) && !full) {
				d->member = m;
				d->member_id = mid;
				d->entry = e;
				/* Hits and misses count connections: a stray FIN
				 * or RST (create 0) is neither. */
				if (ts && create)
					ts->hits++;
				if (st && create)
					st->persist_hits++;
				return REASON_NONE;
			}
			if (m && (vs->flags & VS_F_SERVER_DOWN_NEVER)) {
				if (st)
					st->server_down_drops++;
				return full ? REASON_MEMBER_FULL : REASON_SERVER_DOWN;
			}
		}
		/* Down with policy immediate, or not in this pool: move the
		 * client, keeping the count of connections it still has. */
		moved = 1;
		keep_conns = cs & ~CS_DEAD;
		update_flags = BPF_ANY;
	}
miss:
	if (!moved && create) {
		if (ts)
			ts->misses++;
		if (st)
			st->persist_misses++;
	}
	d->member = pool_pick(vs->pool_id, p, &d->member_id);
	if (!d->member)
		return REASON_NO_MEMBER;
	if (!create)
		return REASON_NONE;

	struct scratch *sc = scratch_area();
	if (!sc)
		return REASON_NO_TABLE;
	struct persist_entry *ne = &sc->entry;
	__builtin_memset(ne, 0, sizeof(*ne));
	ne->server = d->member->addr;
	ne->server_port = d->member->port;
	ne->family = d->member->family;
	ne->vs_id = vs->vs_id;
	ne->member_id = d->member_id;
	ne->conn_state = keep_conns;
	ne->created_ns = now;
	ne->last_seen_ns = now;
	long err = bpf_map_update_elem(table, &d->pkey, ne, update_flags);
	if (err == -EEXIST) {
		/* Another CPU persisted this client a moment ago: follow it. */
		e = bpf_map_lookup_elem(table, &d->pkey);
		__u32 mid;
		if (e && member_find(vs->pool_id, e, &mid) == 0) {
			struct member_info *m = member_get(mid);
			if (m && (m->flags & MEMBER_F_UP)) {
				d->member = m;
				d->member_id = mid;
			}
		}
		d->entry = e;
		return REASON_NONE;
	}
	if (err) {
		if (ts)
			ts->rejects++;
		if (st)
			st->rejects++;
		return REASON_TABLE_FULL;
	}
	if (ts && !moved)
		ts->inserts++;
	if (st && moved)
		st->persist_moved++;
	persist_event(moved ? EVENT_MOVED : EVENT_CREATED, &d->pkey, &ne->server, ne->server_port, now);
	d->entry = bpf_map_lookup_elem(table, &d->pkey);
	return REASON_NONE;
}

#endif
