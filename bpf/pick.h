/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Members and the choice of one for a new client: connection counts, the
 * up-and-not-full test, and the pool algorithms. */
#ifndef LIMPET_PICK_H
#define LIMPET_PICK_H

#include "common.h"
#include "parse.h"

static __always_inline __u32 member_conns_of(__u32 id)
{
	__u64 *cs = bpf_map_lookup_elem(&member_conns, &id);

	return cs ? (__u32)(READ_ONCE_U64(*cs) & CS_CONNS_MASK) : 0;
}

static __always_inline void member_acquire(__u32 id)
{
	__u64 *cs = bpf_map_lookup_elem(&member_conns, &id);

	if (cs)
		__sync_fetch_and_add(cs, CS_INC);
}

static __always_inline void member_release(__u32 id)
{
	__u64 *cs = bpf_map_lookup_elem(&member_conns, &id);

	if (!cs)
		return;
#pragma unroll
	for (int i = 0; i < 3; i++) {
		__u64 old = READ_ONCE_U64(*cs);
		if ((old & CS_CONNS_MASK) == 0)
			break;
		if (__sync_val_compare_and_swap(cs, old, old + CS_DEC) == old)
			break;
	}
}

static __always_inline struct member_info *member_get(__u32 id)
{
	return bpf_map_lookup_elem(&members, &id);
}

/* A member may take a new client when it is up and below its limit. */
static __always_inline int member_full(__u32 id, const struct member_info *m)
{
	return m->max_conns && member_conns_of(id) >= m->max_conns;
}

static __always_inline struct member_info *usable(__u32 id)
{
	struct member_info *m = member_get(id);

	if (!m || !(m->flags & MEMBER_F_UP) || member_full(id, m))
		return NULL;
	return m;
}

static __always_inline __u32 hash_addr(const union addr *a)
{
	/* murmur3's finaliser over the xor of the words: cheap, and every
	 * bit of the address moves the slot. */
	__u32 h = a->v6[0] ^ a->v6[1] ^ a->v6[2] ^ a->v6[3];

	h ^= h >> 16;
	h *= MURMUR3_C1;
	h ^= h >> 13;
	h *= MURMUR3_C2;
	h ^= h >> 16;
	return h;
}

/* Picks from the pool's table (a weighted schedule or a Maglev table),
 * starting at slot and moving on past members that are down or full. */
static __always_inline int table_pick(__u32 pool_id, __u32 size, __u32 slot)
{
	void *table = bpf_map_lookup_elem(&pool_tables, &pool_id);

	if (!table || size == 0)
		return -1;
#pragma unroll
	for (int i = 0; i < PICK_PROBES; i++) {
		__u32 idx = (slot + i) % size;
		__u32 *id = bpf_map_lookup_elem(table, &idx);
		if (!id)
			return -1;
		if (usable(*id))
			return *id;
	}
	return -1;
}

/* Least (weighted) connections: the member with the fewest active
 * connections per unit of weight; ties go round robin. */
static __always_inline int least_conn_pick(struct pool_info *pool, __u32 n, int weighted)
{
	__u32 start = __sync_fetch_and_add(&pool->rr_next, 1);
	__u32 best_conns = 0, best_weight = 1;
	int best = -1;

	for (__u32 i = 0; i < MAX_MEMBERS_PER_POOL; i++) {
		if (i >= n)
			break;
		__u32 k = (start + i) % n;
		barrier_var(k);
		k &= MAX_MEMBERS_PER_POOL - 1;
		__u32 id = pool->eligible[k];
		struct member_info *m = member_get(id);
		if (!m || !(m->flags & MEMBER_F_UP))
			continue;
		__u32 conns = member_conns_of(id);
		if (m->max_conns && conns >= m->max_conns)
			continue;
		__u32 w = weighted ? pool->weight[k] : 1;
		if (w == 0)
			w = 1;
		/* conns/w < best_conns/best_weight, without division */
		if (best < 0 || (__u64)conns * best_weight < (__u64)best_conns * w) {
			best = id;
			best_conns = conns;
			best_weight = w;
		}
	}
	return best;
}

/* Chooses a member for a new client with the pool's algorithm and returns
 * its id, or -1. A global function: the verifier checks it once, on its own,
 * instead of once per caller and path, which keeps the least-connection loop
 * affordable. */
__noinline int pick_member(__u32 pool_id, __u32 client_hash)
{
	struct pool_info *pool = bpf_map_lookup_elem(&pools, &pool_id);

	if (!pool)
		return -1;
	__u32 n = pool->n_eligible;
	if (n == 0 || n > MAX_MEMBERS_PER_POOL)
		return -1;

	__u32 start;
	int id = -1;
	switch (pool->algorithm) {
	case ALGO_WEIGHTED_ROUND_ROBIN:
		start = __sync_fetch_and_add(&pool->rr_next, 1);
		id = table_pick(pool_id, pool->table_size, start);
		break;
	case ALGO_IP_HASH:
		start = client_hash;
		id = table_pick(pool_id, pool->table_size, start);
		break;
	case ALGO_LEAST_CONNECTION:
		return least_conn_pick(pool, n, 0);
	case ALGO_WEIGHTED_LEAST_CONNECTION:
		return least_conn_pick(pool, n, 1);
	default:
		start = __sync_fetch_and_add(&pool->rr_next, 1);
	}
	if (id >= 0)
		return id;

	/* Round robin's turn, or a table's slot and the few after it, cannot
	 * take the client: the next member in order that can does, so a full
	 * member never turns a client away while another has room. */
	for (__u32 i = 0; i < MAX_MEMBERS_PER_POOL; i++) {
		if (i >= n)
			break;
		__u32 idx = (start + i) % n;
		/* libbpf's barrier_var hides idx from clang, which would otherwise
		 * drop the mask below as redundant; the verifier needs it. */
		barrier_var(idx);
		__u32 mid = pool->eligible[idx & (MAX_MEMBERS_PER_POOL - 1)];
		if (usable(mid))
			return mid;
	}
	return -1;
}

static __always_inline struct member_info *pool_pick(__u32 pool_id, struct packet *p, __u32 *member_id)
{
	int id = pick_member(pool_id, hash_addr(&p->src));

	if (id < 0)
		return NULL;
	*member_id = id;
	return member_get(id);
}

#endif
