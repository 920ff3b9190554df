/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Encapsulated DSR: the client's packet, untouched, inside an outer IPv4 or
 * IPv6 header (IPIP, or GUE variant 1 over UDP, as Katran sends it) to a
 * member anywhere the routes reach. The member strips the outer header
 * (limpet member-decap, or the kernel's ipip/ip6tnl/fou) and replies to the
 * client directly, from the VIP it holds. Persistence, pool choice and the
 * flow are the same as for nat and dsr: only this last step differs.
 *
 * The outer family is the member's: IPv4-in-IPv4, IPv6-in-IPv6, IPv6-in-IPv4
 * (a member with only a v4 address) and IPv4-in-IPv6. A packet too long for
 * the tunnel is answered with ICMP fragmentation needed / ICMPv6 packet too
 * big from the VIP, carrying the MTU left inside the tunnel, so the client's
 * PMTU discovery works; it is counted (encap_too_big), never dropped
 * silently. */
#ifndef LIMPET_ENCAP_H
#define LIMPET_ENCAP_H

#include "common.h"
#include "parse.h"
#include "csum.h"
#include "nexthop.h"

#define IPPROTO_ICMP 1
#define IPPROTO_IPIP 4
#define IPPROTO_IPV6 41
#define IPPROTO_ICMPV6 58

#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMPV6_PKT_TOOBIG 2

struct icmp_too_big {
	__u8 type;
	__u8 code;
	__sum16 check;
	__be32 rest; /* v4: unused (16 bits) and next-hop MTU; v6: the MTU */
};

/* What an encapsulated packet gains: the outer IP header, and for GUE the
 * UDP header (variant 1 has no GUE header of its own). */
static __always_inline __u32 encap_overhead(int outer_v6, int gue)
{
	return (outer_v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr)) + (gue ? sizeof(struct udphdr) : 0);
}

/* The outer UDP source port of a GUE packet: a hash of the inner flow, in
 * the ephemeral range, so that NICs and routers spread flows over their
 * queues and paths while a flow stays on one. */
static __always_inline __be16 gue_source_port(const struct packet *p)
{
	__u32 h = p->src.v6[0] ^ p->src.v6[1] ^ p->src.v6[2] ^ p->src.v6[3];

	h ^= p->dst.v6[0] ^ p->dst.v6[1] ^ p->dst.v6[2] ^ p->dst.v6[3];
	h ^= ((__u32)p->sport << 16 | p->dport) ^ p->proto;
	h ^= h >> 16;
	h *= MURMUR3_C1;
	h ^= h >> 13;
	h *= MURMUR3_C2;
	h ^= h >> 16;
	return bpf_htons(GUE_SPORT_MIN | (h & (GUE_SPORT_SPAN - 1)));
}

/* Turns the client's packet, in place, into ICMP "fragmentation needed"
 * (IPv4) or "packet too big" (IPv6) from the VIP back to the client,
 * quoting as much of it as ICMP_QUOTE_MAX allows, and sends it out where it
 * came in (bpf_redirect, as reply_rst does, for the same veth reason). */
static __always_inline int encap_too_big(struct xdp_md *ctx, struct packet *p, __u32 inner_mtu)
{
	struct scratch *sc = scratch_area();
	if (!sc)
		return XDP_DROP;
	__u32 l3_off = p->l3_off & L3_OFF_MASK;
	__u32 q = p->ip_len;
	if (q > ICMP_QUOTE_MAX)
		q = ICMP_QUOTE_MAX;
	if (q < sizeof(struct iphdr))
		return XDP_DROP;
	/* bpf_csum_diff sums whole words: a zero word after an odd tail adds
	 * nothing (the buffer has a word to spare for it). */
	*(__u32 *)&sc->quote[q & (ICMP_QUOTE_MAX - 4)] = 0;
	if (bpf_xdp_load_bytes(ctx, l3_off, sc->quote, q))
		return XDP_DROP;
	__u32 qwords = (q + 3) & (2 * ICMP_QUOTE_MAX - 4);
	if (qwords > sizeof(sc->quote))
		return XDP_DROP;
	__s64 qsum = bpf_csum_diff(NULL, 0, (__be32 *)sc->quote, qwords, 0);
	if (qsum < 0)
		return XDP_DROP;

	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct eth_tags l2;
	if (data + sizeof(l2) > data_end)
		return XDP_DROP;
	__builtin_memcpy(&l2, data, sizeof(l2));

	int v6 = p->family == FAMILY_V6;
	__u32 hdr = (v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr)) + sizeof(struct icmp_too_big);
	int tail = (int)(l3_off + q) - (int)(data_end - data);
	if (tail < 0 && bpf_xdp_adjust_tail(ctx, tail))
		return XDP_DROP;
	if (bpf_xdp_adjust_head(ctx, -(int)hdr))
		return XDP_DROP;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(l2) > data_end)
		return XDP_DROP;
	__builtin_memcpy(data, &l2, sizeof(l2));
	struct ethhdr *eth = data;
	__builtin_memcpy(eth->h_dest, l2.eth.h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, l2.eth.h_dest, ETH_ALEN);

	__u32 sum = (__u32)qsum;
	if (!v6) {
		struct iphdr *ip = data + l3_off;
		struct icmp_too_big *ic = (void *)(ip + 1);
		if ((void *)(ic + 1) > data_end)
			return XDP_DROP;
		ip->ihl_version = 0x45;
		ip->tos = 0;
		ip->tot_len = bpf_htons(hdr + q);
		ip->id = 0;
		ip->frag_off = 0;
		ip->ttl = ICMP_TTL;
		ip->protocol = IPPROTO_ICMP;
		ip->check = 0;
		ip->saddr = p->dst.v4;
		ip->daddr = p->src.v4;
		ip->check = csum_fold(csum_words((__u16 *)ip, sizeof(*ip) / 2, 0));
		ic->type = ICMP_DEST_UNREACH;
		ic->code = ICMP_FRAG_NEEDED;
		ic->check = 0;
		ic->rest = bpf_htonl(inner_mtu & 0xffff);
		ic->check = csum_fold(csum_words((__u16 *)ic, sizeof(*ic) / 2, sum));
	} else {
		struct ipv6hdr *ip6 = data + l3_off;
		struct icmp_too_big *ic = (void *)(ip6 + 1);
		if ((void *)(ic + 1) > data_end)
			return XDP_DROP;
		ip6->priority_version = 0x60;
		ip6->flow_lbl[0] = 0;
		ip6->flow_lbl[1] = 0;
		ip6->flow_lbl[2] = 0;
		ip6->payload_len = bpf_htons(sizeof(*ic) + q);
		ip6->nexthdr = IPPROTO_ICMPV6;
		ip6->hop_limit = ICMP_TTL;
		__builtin_memcpy(ip6->saddr, p->dst.v6, 16);
		__builtin_memcpy(ip6->daddr, p->src.v6, 16);
		ic->type = ICMPV6_PKT_TOOBIG;
		ic->code = 0;
		ic->check = 0;
		ic->rest = bpf_htonl(inner_mtu);
		sum = csum_words((__u16 *)ip6->saddr, 16, sum);
		sum = csum_add32(sum, bpf_htonl(sizeof(*ic) + q));
		sum = csum_add32(sum, bpf_htonl(IPPROTO_ICMPV6));
		ic->check = csum_fold(csum_words((__u16 *)ic, sizeof(*ic) / 2, sum));
	}
	count_reason(REASON_ENCAP_TOO_BIG);
	return bpf_redirect(ctx->ingress_ifindex, 0);
}

/* The next hop of an outer packet of outer_len bytes to the member: the
 * cache's slot itself, else the FIB's answer filled into *fib_hop. Returns
 * REASON_NONE with *hop set, or REASON_ENCAP_TOO_BIG with *mtu the route's
 * MTU, or another reason that drops the packet: encapsulated, it could not
 * be handed to the stack, which has no tunnel to put it in and would route
 * the VIP packet back. */
static __always_inline int encap_nexthop(struct xdp_md *ctx, struct packet *p, const struct member_info *m,
					 const union addr *src, __u32 outer_len, __u8 outer_proto, __u32 member_id,
					 __u64 now, struct nexthop *fib_hop, const struct nexthop **hop, __u32 *mtu)
{
	__u32 reason = REASON_NONE;
	const struct nexthop *nh = NULL;

	if (!p->vlan_depth) {
		nh = nexthop_of_member(member_id, nexthop_gen(now), outer_len, &reason);
		if (!nh && reason != REASON_NONE)
			count_reason(reason);
	}
	if (nh) {
		*hop = nh;
		return REASON_NONE;
	}

	struct scratch *sc = scratch_area();
	if (!sc)
		return REASON_FIB_DROP;
	struct bpf_fib_lookup *fib = &sc->fib;
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->ifindex = ctx->ingress_ifindex;
	fib->l4_protocol = outer_proto;
	fib->tot_len = outer_len;
	if (m->family == FAMILY_V4) {
		fib->family = AF_INET;
		fib->ipv4_src = src->v4;
		fib->ipv4_dst = m->addr.v4;
	} else {
		fib->family = AF_INET6;
		__builtin_memcpy(fib->ipv6_src, src->v6, 16);
		__builtin_memcpy(fib->ipv6_dst, m->addr.v6, 16);
	}
	long rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		*mtu = fib->mtu_result;
		return REASON_ENCAP_TOO_BIG;
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return REASON_DSR_NO_NEIGH;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return REASON_FIB_DROP;
	if (p->vlan_depth && fib->ifindex != ctx->ingress_ifindex)
		return REASON_FIB_DROP; /* XDP cannot redirect into a VLAN device */
	__builtin_memcpy(fib_hop->dmac, fib->dmac, ETH_ALEN);
	__builtin_memcpy(fib_hop->smac, fib->smac, ETH_ALEN);
	fib_hop->ifindex = fib->ifindex;
	*hop = fib_hop;
	return REASON_NONE;
}

/* The one's-complement sum of up to 2^32 32-bit words, folded to 16 bits
 * and inverted: a header checksum summed in registers, not read back from
 * the packet just written (each such load would wait on the narrower
 * stores before it). */
static __always_inline __u16 csum_fold64(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	return csum_fold((__u32)sum);
}

/* Sends a client's packet to member member_id inside an IPIP or GUE
 * header (vs_flags VS_F_ENCAP_IPIP or VS_F_ENCAP_GUE), or an ICMP error
 * about the member's reply (icmp_error), which the member's stack then
 * takes as the client's path sent it.
 *
 * This is the encapsulations' hot path, and their cost over plain DSR is
 * what is written here: the headers are composed in registers and stored a
 * word (mostly 64 bits) at a time, the outer IPv4 checksum summed from the
 * same registers; only the VLAN tags of a tagged frame, if any, are carried
 * over from the old front (issue 17's target: at most 1.3x DSR). */
static __always_inline int encap_to_member(struct xdp_md *ctx, struct packet *p, __u8 vs_flags, __u32 member_id,
					   __u64 now, int icmp_error)
{
	__u32 zero = 0;
	struct member_info *m = bpf_map_lookup_elem(&members, &member_id);
	struct encap_config *ec = bpf_map_lookup_elem(&encap_settings, &zero);
	if (!m || !ec)
		return XDP_DROP;

	int outer_v6 = m->family == FAMILY_V6;
	int gue = !!(vs_flags & VS_F_ENCAP_GUE);
	if (!(ec->flags & (outer_v6 ? ENCAP_F_SOURCE_V6 : ENCAP_F_SOURCE_V4)))
		return verdict(REASON_ENCAP_NO_SOURCE, XDP_DROP);
	const union addr *src = outer_v6 ? &ec->source_v6 : &ec->source_v4;
	__u32 ovh = encap_overhead(outer_v6, gue);
	__u32 outer_len = p->ip_len + ovh;
	__u8 inner_proto = p->family == FAMILY_V4 ? IPPROTO_IPIP : IPPROTO_IPV6;
	__u8 outer_proto = gue ? IPPROTO_UDP : inner_proto;

	struct nexthop fib_hop __attribute__((aligned(8)));
	const struct nexthop *hop = NULL;
	__u32 mtu = 0;
	int r = encap_nexthop(ctx, p, m, src, outer_len, outer_proto, member_id, now, &fib_hop, &hop, &mtu);
	/* An ICMP error never answers an ICMP error (RFC 1122 3.2.2): one
	 * too long for the tunnel is counted and dropped. */
	if (r == REASON_ENCAP_TOO_BIG && icmp_error)
		return verdict(r, XDP_DROP);
	if (r == REASON_ENCAP_TOO_BIG)
		return encap_too_big(ctx, p, mtu > ovh ? mtu - ovh : 0);
	if (r != REASON_NONE || !hop)
		return verdict(r, XDP_DROP);

	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l3_off = p->l3_off & L3_OFF_MASK;
	/* The tags of a tagged frame (TPIDs and TCIs after the MACs): the
	 * only bytes of the old front the new one keeps. What the word
	 * holds past the last tag is overwritten below. */
	__u64 tags = 0;
	if (p->vlan_depth) {
		if (data + sizeof(struct eth_tags) > data_end)
			return XDP_DROP;
		tags = *(__u64 *)(data + __builtin_offsetof(struct ethhdr, h_proto));
	}
	__u8 tos;
	if (p->family == FAMILY_V4) {
		struct iphdr *ip = data + l3_off;
		if ((void *)(ip + 1) > data_end)
			return XDP_DROP;
		tos = ip->tos;
	} else {
		struct ipv6hdr *ip6 = data + l3_off;
		if ((void *)(ip6 + 1) > data_end)
			return XDP_DROP;
		tos = (ip6->priority_version << 4) | (ip6->flow_lbl[0] >> 4);
	}
	/* GUE's source port, and an outer IPv6 header's flow label. */
	__be16 sport = gue || outer_v6 ? gue_source_port(p) : 0;
	/* The MACs, as the slot keeps them: dmac, then smac. */
	__u64 macs = *(const __u64 *)hop->dmac;
	__u32 macs_tail = *(const __u32 *)(hop->smac + 2);
	__u32 ifindex = hop->ifindex;

	if (bpf_xdp_adjust_head(ctx, -(int)ovh))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(struct eth_tags) > data_end)
		return XDP_DROP;
	*(__u64 *)data = macs;
	*(__u32 *)(data + 8) = macs_tail;
	if (p->vlan_depth)
		*(__u64 *)(data + __builtin_offsetof(struct ethhdr, h_proto)) = tags;
	__be16 *ethertype = data + ((l3_off - 2) & L3_OFF_MASK);
	if ((void *)(ethertype + 1) > data_end)
		return XDP_DROP;
	*ethertype = bpf_htons(outer_v6 ? ETH_P_IPV6 : ETH_P_IP);

	/* Each word below is the header's bytes in memory order, as the
	 * little-endian target loads them. */
	void *l3 = data + l3_off;
	struct udphdr *udp;
	if (!outer_v6) {
		udp = l3 + sizeof(struct iphdr);
		if ((void *)(udp + 1) > data_end)
			return XDP_DROP;
		/* version and IHL, TOS, total length; id 0, DF (the first hop
		 * fits it, checked above; a smaller MTU beyond answers the
		 * balancer, as it would any tunnel's); TTL, protocol and the
		 * checksum; the addresses. */
		__u64 w0 = 0x45 | (__u32)tos << 8 | (__u32)bpf_htons(outer_len) << 16;
		__u64 w1 = (__u32)bpf_htons(IP_DF) << 16;
		__u64 w2 = ENCAP_TTL | (__u32)outer_proto << 8;
		__u32 saddr = src->v4, daddr = m->addr.v4;
		__u16 check = csum_fold64(w0 + w1 + w2 + saddr + daddr);
		*(__u64 *)l3 = w0 | w1 << 32;
		*(__u64 *)(l3 + 8) = w2 | (__u64)check << 16 | (__u64)saddr << 32;
		*(__u32 *)(l3 + 16) = daddr;
	} else {
		udp = l3 + sizeof(struct ipv6hdr);
		if ((void *)(udp + 1) > data_end)
			return XDP_DROP;
		/* The flow label carries the same entropy as GUE's source port. */
		__u32 fl = bpf_ntohs(sport);
		__u32 w0 = bpf_htonl(6u << 28 | (__u32)tos << 20 | ((fl << 4) & 0xfffff));
		__u32 w1 = (__u32)bpf_htons(outer_len - sizeof(struct ipv6hdr)) | (__u32)outer_proto << 16 |
			   (__u32)ENCAP_TTL << 24;
		*(__u64 *)l3 = w0 | (__u64)w1 << 32;
		/* Map values are 8-byte aligned, and both addresses sit at
		 * 8-byte offsets in theirs: two loads each, not four. */
		const __u64 *s64 = __builtin_assume_aligned(src->v6, 8);
		const __u64 *d64 = __builtin_assume_aligned(m->addr.v6, 8);
		*(__u64 *)(l3 + 8) = s64[0];
		*(__u64 *)(l3 + 16) = s64[1];
		*(__u64 *)(l3 + 24) = d64[0];
		*(__u64 *)(l3 + 32) = d64[1];
	}
	if (gue) {
		/* Source port, GUE's port, length; no checksum, as Katran's
		 * GUE: RFC 6935 allows a zero UDP checksum for tunnels over
		 * IPv6; the inner packet has its own. */
		*(__u64 *)udp = sport | (__u32)ec->gue_port << 16 |
				(__u64)bpf_htons(p->ip_len + sizeof(struct udphdr)) << 32;
	}
	/* A redirect even out of the interface it came in on, the usual case
	 * of a one-armed balancer: a veth queues an XDP_TX frame on its peer
	 * and wakes the peer only if that runs an XDP program (see reply_rst);
	 * a redirect is flushed, and on a NIC it is the same transmit. */
	return bpf_redirect(ifindex, 0);
}

#endif
