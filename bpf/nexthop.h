/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The next-hop cache: what bpf_fib_lookup would answer, without asking it
 * on every packet.
 *
 * The daemon resolves each member's next hop (MAC pair, ifindex, MTU) from
 * the kernel's routes and neighbours, and re-resolves on every netlink
 * neighbour, route and link event. It publishes a whole generation into the
 * half of member_nexthops that the live generation does not use, then flips
 * nexthop_state.gen: a packet reads one generation's slots only, never a
 * half-written one, and a flip invalidates every older hop at once,
 * including the reply hops stored in flows. The daemon holds a lease on the
 * cache (nexthop_state.expires_ns): a daemon that dies cannot keep packets
 * on a hop that has changed since, the FIB takes over when the lease ends. */
#ifndef LIMPET_NEXTHOP_H
#define LIMPET_NEXTHOP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "structs.h"
#include "maps.h"

/* The live generation, or NEXTHOP_GEN_NONE when no daemon keeps the cache. */
static __always_inline __u32 nexthop_gen(__u64 now)
{
	__u32 zero = 0;
	struct nexthop_state *st = bpf_map_lookup_elem(&nexthop_cache, &zero);

	if (!st || now >= st->expires_ns)
		return NEXTHOP_GEN_NONE;
	return st->gen;
}

/* The cached next hop of a member for an IP packet of ip_len bytes, or NULL
 * with *reason set to why the FIB must be asked: REASON_NEXTHOP_MISS (no hop
 * in this generation: unresolved, ECMP, or not yet published) or
 * REASON_NEXTHOP_MTU (too long for the hop: the FIB then says so, and the
 * stack answers). With no live cache, NULL and REASON_NONE: nothing to count. */
static __always_inline const struct nexthop *nexthop_of_member(__u32 member_id, __u32 gen, __u32 ip_len,
								__u32 *reason)
{
	*reason = REASON_NONE;
	if (gen == NEXTHOP_GEN_NONE || member_id >= MAX_MEMBERS)
		return NULL;
	__u32 slot = member_id * NEXTHOP_GENERATIONS + (gen & (NEXTHOP_GENERATIONS - 1));
	struct nexthop *nh = bpf_map_lookup_elem(&member_nexthops, &slot);
	/* Per member, for limpet status: a per-CPU array's lookup is inlined. */
	struct member_stats *ms = bpf_map_lookup_elem(&member_counters, &member_id);
	if (!nh || nh->gen != gen) {
		if (ms)
			ms->nexthop_misses++;
		*reason = REASON_NEXTHOP_MISS;
		return NULL;
	}
	if (ip_len > nh->mtu) {
		if (ms)
			ms->nexthop_mtu++;
		*reason = REASON_NEXTHOP_MTU;
		return NULL;
	}
	if (ms)
		ms->nexthop_hits++;
	return nh;
}

/* A flow's stored reply hop, if it belongs to the live generation and has
 * carried a packet this long before. */
static __always_inline int flow_nexthop_fits(const struct flow_nexthop *nh, __u32 gen, __u32 ip_len)
{
	return gen != NEXTHOP_GEN_NONE && nh->gen == gen && ip_len <= nh->fit_len;
}

/* Records the FIB's answer for a flow's replies in the live generation. */
static __always_inline void flow_nexthop_store(struct flow_nexthop *nh, __u32 gen, const __u8 *dmac,
					       const __u8 *smac, __u32 ifindex, __u32 ip_len)
{
	if (gen == NEXTHOP_GEN_NONE)
		return;
	if (nh->gen == gen && nh->ifindex == ifindex && !__builtin_memcmp(nh->dmac, dmac, ETH_ALEN)) {
		if (ip_len > nh->fit_len)
			nh->fit_len = ip_len;
		return;
	}
	/* Invalid while it is rewritten: another CPU's reply of this flow
	 * asks the FIB rather than read a torn hop. */
	nh->gen = NEXTHOP_GEN_NONE;
	asm volatile("" ::: "memory");
	__builtin_memcpy(nh->dmac, dmac, ETH_ALEN);
	__builtin_memcpy(nh->smac, smac, ETH_ALEN);
	nh->ifindex = ifindex;
	nh->fit_len = ip_len;
	asm volatile("" ::: "memory");
	nh->gen = gen;
}

#endif
