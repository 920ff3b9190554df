/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Whether a frame is addressed to this node at all. On a shared L2 a switch
 * floods a unicast whose destination it has not learnt to every port, so
 * every limpet node there would balance (and forward) the same frame; and a
 * broadcast or multicast frame is never a VIP's traffic. Only a frame sent
 * to the receiving interface's own MAC is balanced; the rest go to the
 * stack, which drops another host's frame and handles a group's. */
#ifndef LIMPET_L2DST_H
#define LIMPET_L2DST_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "structs.h"
#include "maps.h"
#include "parse.h"

enum l2_dst {
	L2_DST_OURS = 0,   /* or an interface whose MAC the loader has not learnt */
	L2_DST_OTHER_HOST, /* a unicast to another MAC */
	L2_DST_GROUP,      /* broadcast or multicast */
};

/* The MAC compare, inlined: a call would cost every VIP packet and every
 * host packet that reaches it more than the compare does. dst is the
 * frame's destination MAC in the low 48 bits, as the two loads below read
 * it. */
static __always_inline __u32 l2_dst_unicast(__u32 ifindex, __u64 dst)
{
	__u32 key = ifindex & (IF_MAC_SLOTS - 1);
	struct if_mac *m = bpf_map_lookup_elem(&if_macs, &key);

	if (!m || m->ifindex == 0)
		return L2_DST_OURS;
	if (m->ifindex != ifindex) {
		key = ifindex;
		m = bpf_map_lookup_elem(&if_macs_spill, &key);
		if (!m)
			return L2_DST_OURS;
	}
	__u64 ours = *(__u32 *)m->mac | (__u64)*(__u16 *)(m->mac + 4) << 32;
	return ours == dst ? L2_DST_OURS : L2_DST_OTHER_HOST;
}

static __always_inline enum l2_dst l2_dst_of(struct xdp_md *ctx, void *data, void *data_end)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return L2_DST_OURS; /* parse_eth has dropped it already */
	if (eth->h_dest[0] & 1) /* the group bit: broadcast is all ones */
		return L2_DST_GROUP;
	__u64 dst = *(__u32 *)eth->h_dest | (__u64)*(__u16 *)(eth->h_dest + 4) << 32;
	return l2_dst_unicast(ctx->ingress_ifindex, dst);
}

#endif
