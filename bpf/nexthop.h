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

/* One egress_macs word: the MAC in bytes 0-5, the ifindex in 6-7. */
union egress_mac {
	__u64 word;
	struct {
		__u8 mac[ETH_ALEN];
		__u16 ifindex;
	};
};

/* A flow's stored reply hop, with its source MAC in smac, if it belongs to
 * the live generation, has carried a packet this long before, and its
 * interface's MAC is still the one egress_macs holds. */
static __always_inline int flow_nexthop_use(const struct flow_nexthop *nh, __u32 gen, __u32 ip_len, __u8 *smac)
{
	if (gen == NEXTHOP_GEN_NONE || nh->gen != gen || ip_len > nh->fit_len)
		return 0;
	__u32 slot = nh->ifindex % EGRESS_MAC_SLOTS;
	__u64 *w = bpf_map_lookup_elem(&egress_macs, &slot);
	if (!w)
		return 0;
	union egress_mac em = { .word = *(volatile __u64 *)w };
	if (em.ifindex != nh->ifindex)
		return 0;
	__builtin_memcpy(smac, em.mac, ETH_ALEN);
	return 1;
}

/* Keeps the FIB's source MAC of ifindex in egress_macs, written as one word. */
static __always_inline void egress_mac_learn(__u32 ifindex, const __u8 *smac)
{
	__u32 slot = ifindex % EGRESS_MAC_SLOTS;
	__u64 *w = bpf_map_lookup_elem(&egress_macs, &slot);
	if (!w)
		return;
	union egress_mac em;
	__builtin_memcpy(em.mac, smac, ETH_ALEN);
	em.ifindex = ifindex;
	if (*(volatile __u64 *)w != em.word)
		*(volatile __u64 *)w = em.word;
}

/* Records the FIB's answer for a flow's replies in the live generation. */
static __always_inline void flow_nexthop_store(struct flow_nexthop *nh, __u32 gen, const __u8 *dmac,
					       const __u8 *smac, __u32 ifindex, __u32 ip_len)
{
	if (gen == NEXTHOP_GEN_NONE || ifindex > FLOW_NH_MAX_IFINDEX)
		return;
	egress_mac_learn(ifindex, smac);
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
	nh->ifindex = ifindex;
	nh->fit_len = ip_len;
	asm volatile("" ::: "memory");
	nh->gen = gen;
}

#endif
