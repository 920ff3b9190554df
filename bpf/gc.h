/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The GC's operations, run by the daemon through BPF_PROG_RUN of limpet_gc
 * with a struct gc_batch as the packet. Each item is re-checked here against
 * the live value, with the same atomics as the datapath. */
#ifndef LIMPET_GC_H
#define LIMPET_GC_H

#include "common.h"
#include "pick.h"
#include "persist.h"
#include "flow.h"

static __always_inline __u32 gc_flow_expire(struct gc_item *it, __u64 now)
{
	struct flow_key key = it->flow;
	union addr maddr;
	struct flow_info *f = flow_lookup(&key, &maddr);

	if (!f)
		return GC_RES_NOT_FOUND;
	/* A flow stamped at or after this reading of the clock is not idle. */
	if (now <= f->last_seen_ns || now - f->last_seen_ns < it->arg)
		return GC_RES_SKIPPED;
	if (f->flags & FLOW_F_REVERSE) {
		flow_delete(&key);
		return GC_RES_DONE;
	}
	/* Copy what we need before deleting: an LRU element can be reused at once. */
	__u16 table = f->table;
	__be16 mport = f->port;
	__u32 member_id = f->member_id;
	__u32 old = __sync_fetch_and_and(&f->flags, ~(FLOW_F_COUNTED | FLOW_F_MEMBER_COUNTED));
	flow_delete(&key);
	if (old & FLOW_F_COUNTED) {
		struct persist_key pk;
		flow_pkey(&pk, table, old, &key);
		persist_release(&pk, now);
	}
	if (old & FLOW_F_MEMBER_COUNTED)
		member_release(member_id);
	if (old & FLOW_F_NAT) {
		struct flow_key rk;
		union addr rvip;
		reverse_flow_key(&rk, &key, &maddr, mport);
		/* The reply entry is this flow's only if it still points back to
		 * its VIP: the same client port to another VIP through the same
		 * member port has the same reply 5-tuple, and the newer took it. */
		struct flow_info *r = flow_lookup(&rk, &rvip);
		if (r && (r->flags & FLOW_F_REVERSE) && r->port == key.dport &&
		    !__builtin_memcmp(&rvip, &key.dst, sizeof(rvip)))
			flow_delete(&rk);
	}
	return GC_RES_DONE;
}

/* Expires an entry with no live connection, idle for at least idle_ns. */
static __always_inline __u32 gc_persist_expire(void *table, struct persist_key *key, struct persist_entry *e,
					       __u64 idle_ns, __u64 now)
{
	__u64 cs = READ_ONCE_U64(e->conn_state);
	if (!(cs & CS_DEAD)) {
		if ((cs & CS_CONNS_MASK) != 0)
			return GC_RES_SKIPPED;
		if (now <= e->last_seen_ns || now - e->last_seen_ns <= idle_ns)
			return GC_RES_SKIPPED;
		if (__sync_val_compare_and_swap(&e->conn_state, cs, cs | CS_DEAD) != cs)
			return GC_RES_SKIPPED;
		struct table_stats *ts = table_stats_of(key->table_id);
		if (ts)
			ts->expired++;
	}
	union addr server = e->server;
	__be16 server_port = e->server_port;
	bpf_map_delete_elem(table, key);
	persist_event(EVENT_EXPIRED, key, &server, server_port, now);
	return GC_RES_DONE;
}

/* Sets a packed generation-and-count word (an entry's or a member's) to
 * the count the GC recounted from the flow table, but only if no connection
 * opened or closed since the GC read it: the generation would have moved. */
static __always_inline __u32 cs_correct(__u64 *cs, __u64 expect, __u64 conns)
{
	__u64 want = (expect & ~(CS_CONNS_MASK | CS_DEAD)) + CS_GEN_ONE + (conns & CS_CONNS_MASK) + (expect & CS_DEAD);

	if (__sync_val_compare_and_swap(cs, expect, want) != expect)
		return GC_RES_SKIPPED;
	return GC_RES_DONE;
}

/* The member version: the member id is the key's first word. */
static __always_inline __u32 gc_member_reconcile(struct gc_item *it)
{
	__u32 id = it->persist.table_id;
	__u64 *cs = bpf_map_lookup_elem(&member_conns, &id);
	if (!cs)
		return GC_RES_BAD;
	return cs_correct(cs, it->arg, it->arg2);
}

/* Moves an entry's countdown base to now without touching its atomic count,
 * which belongs to the datapath and the sweeper's recount of the flow table. */
static __always_inline __u32 gc_touch(struct persist_entry *e, __u64 now)
{
	if (READ_ONCE_U64(e->conn_state) & CS_DEAD)
		return GC_RES_SKIPPED;
	e->last_seen_ns = now;
	return GC_RES_DONE;
}

/* The operations on a persistence entry (expire, reconcile, touch), run on
 * the live entry the item's key names: one lookup serves them all. */
static __always_inline __u32 gc_entry_op(struct gc_item *it, __u64 now)
{
	struct persist_key key = it->persist;
	void *table = persist_table(key.table_id);
	if (!table)
		return GC_RES_BAD;
	struct persist_entry *e = bpf_map_lookup_elem(table, &key);
	if (!e)
		return GC_RES_NOT_FOUND;
	switch (it->op) {
	case GC_OP_PERSIST_EXPIRE:
		return gc_persist_expire(table, &key, e, it->arg, now);
	case GC_OP_RECONCILE:
		return cs_correct(&e->conn_state, it->arg, it->arg2);
	case GC_OP_TOUCH:
		return gc_touch(e, now);
	}
	return GC_RES_BAD;
}

/* Runs one item of a batch against the live maps. */
static __always_inline __u32 gc_run_item(struct gc_item *it, __u64 now)
{
	switch (it->op) {
	case GC_OP_FLOW_EXPIRE:
		return gc_flow_expire(it, now);
	case GC_OP_MEMBER_RECONCILE:
		return gc_member_reconcile(it);
	case GC_OP_PERSIST_EXPIRE:
	case GC_OP_RECONCILE:
	case GC_OP_TOUCH:
		return gc_entry_op(it, now);
	}
	return GC_RES_BAD;
}

#endif
