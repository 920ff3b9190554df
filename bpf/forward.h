/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Forwarding: the NAT rewrite, TTL, and the next hop: from the next-hop
 * cache (nexthop.h) when it has one, else from the kernel's FIB and
 * neighbour table. The rest of the datapath calls two functions here,
 * forward_to_member (a client's packet) and forward_reply (a NAT member's
 * reply, with its VIP and the hop its flow keeps); how the next hop is found
 * is this file's business. */
#ifndef LIMPET_FORWARD_H
#define LIMPET_FORWARD_H

#include "common.h"
#include "parse.h"
#include "csum.h"
#include "nexthop.h"
#include "encap.h"

/* Set at load time. A router decrements TTL; a test harness may not want to. */
const volatile __u8 cfg_decrement_ttl = 1;

static __always_inline int l4_csum_off(struct packet *p)
{
	return p->proto == IPPROTO_TCP ? TCP_CSUM_OFF : UDP_CSUM_OFF;
}

/* Rewrites one address and port of the packet (dst for forward NAT, src for
 * replies), fixing the IP and L4 checksums incrementally. */
static __always_inline int nat_rewrite(struct xdp_md *ctx, struct packet *p, int rewrite_src,
				       const union addr *to, __be16 to_port)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *l3 = data + (p->l3_off & L3_OFF_MASK);
	void *l4 = data + (p->l4_off & L4_OFF_MASK);
	__sum16 *l4check = l4 + l4_csum_off(p);

	if ((void *)(l4check + 1) > data_end || l4 + 4 > data_end)
		return -1;
	__be16 *port = rewrite_src ? l4 : l4 + 2;
	/* A zero UDP checksum means "none" over IPv4 and is invalid over IPv6
	 * (RFC 8200): either way it stays zero, never computed into one that
	 * verifies. */
	int fix_l4 = !(p->proto == IPPROTO_UDP && *l4check == 0);

	if (p->family == FAMILY_V4) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end)
			return -1;
		__be32 *a = rewrite_src ? &ip->saddr : &ip->daddr;
		csum_replace4(&ip->check, *a, to->v4);
		if (fix_l4)
			csum_replace4(l4check, *a, to->v4);
		*a = to->v4;
	} else {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__be32 *a = rewrite_src ? ip6->saddr : ip6->daddr;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			if (fix_l4)
				csum_replace4(l4check, a[i], to->v6[i]);
			a[i] = to->v6[i];
		}
	}
	if (fix_l4)
		csum_replace2(l4check, *port, to_port);
	*port = to_port;
	if (p->proto == IPPROTO_UDP && fix_l4 && *l4check == 0)
		*l4check = 0xffff;
	return 0;
}

/* Returns 1 when the TTL or hop limit would expire here: the kernel then
 * answers with ICMP. */
static __always_inline int ttl_expiring(struct xdp_md *ctx, struct packet *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *l3 = data + (p->l3_off & L3_OFF_MASK);

	if (p->family == FAMILY_V4) {
		struct iphdr *ip = l3;
		return (void *)(ip + 1) > data_end || ip->ttl <= 1;
	}
	struct ipv6hdr *ip6 = l3;
	return (void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1;
}

/* Decrements the TTL or hop limit of a packet XDP forwards itself. One
 * handed to the stack keeps its TTL: the stack decrements it when it
 * forwards, and a hop must cost one, not two. */
static __always_inline void ttl_decrement(struct xdp_md *ctx, struct packet *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *l3 = data + (p->l3_off & L3_OFF_MASK);

	if (!cfg_decrement_ttl)
		return;
	if (p->family == FAMILY_V4) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end || ip->ttl <= 1)
			return;
		__be16 old = *(__be16 *)&ip->ttl;
		ip->ttl--;
		csum_replace2(&ip->check, old, *(__be16 *)&ip->ttl);
		return;
	}
	struct ipv6hdr *ip6 = l3;
	if ((void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1)
		return;
	ip6->hop_limit--;
}

/* Puts the next hop's MACs on the packet and sends it out of ifindex. */
static __always_inline int xmit(struct xdp_md *ctx, struct packet *p, const __u8 *dmac, const __u8 *smac,
				__u32 ifindex, int dsr)
{
	/* We route a NAT'ed packet we transmit; DSR only rewrites MACs. */
	if (!dsr)
		ttl_decrement(ctx, p);
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	if (ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(ifindex, 0);
}

/* Sends the packet toward dst using the kernel's FIB and neighbour table.
 * With store set, a successful lookup is kept there, in generation gen, for
 * the flow's next replies. */
static __always_inline int fib_forward(struct xdp_md *ctx, struct packet *p, const union addr *src,
				       const union addr *dst, int dsr, struct flow_nexthop *store, __u32 gen)
{
	struct scratch *sc = scratch_area();
	if (!sc)
		return XDP_DROP;
	struct bpf_fib_lookup *fibp = &sc->fib;

	__builtin_memset(fibp, 0, sizeof(*fibp));
#define fib (*fibp)
	fib.ifindex = ctx->ingress_ifindex;
	fib.l4_protocol = p->proto;
	if (p->family == FAMILY_V4) {
		fib.family = AF_INET;
		fib.ipv4_src = src->v4;
		fib.ipv4_dst = dst->v4;
		fib.tot_len = p->ip_len;
	} else {
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, src->v6, 16);
		__builtin_memcpy(fib.ipv6_dst, dst->v6, 16);
		fib.tot_len = p->ip_len;
	}

	long rc = bpf_fib_lookup(ctx, fibp, sizeof(*fibp), 0);
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		break;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		if (dsr)
			return verdict(REASON_DSR_NO_NEIGH, XDP_DROP);
		return verdict(REASON_FIB_NO_NEIGH, XDP_PASS);
	case BPF_FIB_LKUP_RET_BLACKHOLE:
	case BPF_FIB_LKUP_RET_UNREACHABLE:
	case BPF_FIB_LKUP_RET_PROHIBIT:
		return verdict(REASON_FIB_DROP, XDP_DROP);
	default:
		/* Not forwarded, MTU exceeded, ...: the stack handles NAT'ed
		 * packets correctly; a DSR packet still carries the VIP and
		 * would be routed back to us. */
		if (dsr)
			return verdict(REASON_FIB_DROP, XDP_DROP);
		return verdict(REASON_FIB_PASS, XDP_PASS);
	}

	if (p->vlan_depth && fib.ifindex != ctx->ingress_ifindex) {
		/* XDP cannot redirect into a VLAN device; let the stack do it. */
		if (dsr)
			return verdict(REASON_FIB_DROP, XDP_DROP);
		return verdict(REASON_VLAN_PASS, XDP_PASS);
	}
	if (store)
		flow_nexthop_store(store, gen, fib.dmac, fib.smac, fib.ifindex, p->ip_len);
	return xmit(ctx, p, fib.dmac, fib.smac, fib.ifindex, dsr);
#undef fib
}

/* The member's cached next hop, or NULL: then the FIB decides, as it does
 * for a tagged packet (XDP cannot redirect into a VLAN device). */
static __always_inline const struct nexthop *member_nexthop(struct packet *p, __u32 member_id, __u64 now)
{
	if (p->vlan_depth)
		return NULL;
	__u32 reason;
	const struct nexthop *nh = nexthop_of_member(member_id, nexthop_gen(now), p->ip_len, &reason);
	if (!nh && reason != REASON_NONE)
		count_reason(reason);
	return nh;
}

/* Sends a client's packet to its member: NAT rewrites the destination and
 * routes it; DSR (vs_flags & VS_F_DSR) rewrites only the MACs; ipip and gue
 * put it in a tunnel to the member (encap.h). */
static __always_inline int forward_to_member(struct xdp_md *ctx, struct packet *p, __u8 vs_flags,
					     const union addr *maddr, __be16 mport, __u32 member_id, __u64 now)
{
	struct member_stats *ms = bpf_map_lookup_elem(&member_counters, &member_id);

	if (ms) {
		ms->packets++;
		ms->bytes += p->pkt_len;
	}
	if (vs_flags & (VS_F_ENCAP_IPIP | VS_F_ENCAP_GUE))
		return encap_to_member(ctx, p, vs_flags, member_id, now, 0);
	int dsr = !!(vs_flags & VS_F_DSR);
	if (!dsr) {
		if (ttl_expiring(ctx, p))
			return verdict(REASON_TTL_EXPIRED, XDP_PASS);
		if (nat_rewrite(ctx, p, 0, maddr, mport))
			return XDP_DROP;
	}
	const struct nexthop *nh = member_nexthop(p, member_id, now);
	if (nh)
		return xmit(ctx, p, nh->dmac, nh->smac, nh->ifindex, dsr);
	return fib_forward(ctx, p, &p->src, maddr, dsr, NULL, NEXTHOP_GEN_NONE);
}

/* Sends a NAT member's reply back to its client from the VIP, through the
 * next hop its flow keeps (rnh, or NULL: the FIB each time), found by the
 * flow's first reply. */
static __always_inline int forward_reply(struct xdp_md *ctx, struct packet *p, const union addr *vip, __be16 vport,
					 struct flow_nexthop *rnh, __u64 now)
{
	if (ttl_expiring(ctx, p))
		return verdict(REASON_TTL_EXPIRED, XDP_PASS);
	if (nat_rewrite(ctx, p, 1, vip, vport))
		return XDP_DROP;
	__u32 gen = nexthop_gen(now);
	if (p->vlan_depth)
		rnh = NULL;
	else if (rnh) {
		__u8 smac[ETH_ALEN];
		if (flow_nexthop_use(rnh, gen, p->ip_len, smac))
			return xmit(ctx, p, rnh->dmac, smac, rnh->ifindex, 0);
	}
	return fib_forward(ctx, p, vip, &p->dst, 0, rnh, gen);
}

#endif
