/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ICMP errors about NAT'ed flows. An error names its flow only by the
 * header it quotes, so both directions find the flow from the quote, as
 * Linux's conntrack does for RELATED packets:
 *
 * - towards a client (from a member, or a router on its path), quoting the
 *   client's packet as we NAT'ed it (client -> member): the quote's
 *   destination and the outer source become the VIP again, so the client
 *   sees an error about its own packet, from the address it talks to;
 * - towards a VIP (from the client's path), quoting a reply as we sent it
 *   (VIP -> client): the outer destination and the quote's source become the
 *   member, and the error goes to it. A DSR member's error goes as it is.
 *
 * Every checksum is updated incrementally: the outer IPv4 header's, the
 * ICMP one (over the quote, and for ICMPv6 the outer pseudo-header too),
 * the quoted IPv4 header's and the quoted L4 one when the quote reaches it
 * (RFC 792 promises only the first 8 bytes of the quoted L4 header). */
#ifndef LIMPET_ICMP_H
#define LIMPET_ICMP_H

#include "common.h"
#include "parse.h"
#include "csum.h"
#include "flow.h"
#include "forward.h"
#include "balance.h"

#define IPPROTO_ICMP 1
#define IPPROTO_ICMPV6 58

#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_PARAMPROB 4

/* Of the quoted L4 header, the ports are all the lookup needs; RFC 792
 * guarantees 8 bytes. */
#define ICMP_QUOTE_L4_MIN 8
#define IPV4_IHL_MAX 60

/* The first 8 bytes of an ICMP or ICMPv6 message: the same layout. */
struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 check;
	__be32 rest; /* unused, or the next hop's MTU, or a pointer */
};

/* What the quote of an ICMP error says, and where its fields sit. The
 * pointers are into the packet, bounds-checked by icmp_parse_error. */
struct icmp_err {
	__sum16 *icmp_check;
	void *in_l3;
	__be16 *in_ports;    /* source, destination */
	__sum16 *in_l4check; /* NULL: the quote stops before it */
	union addr in_src;
	union addr in_dst;
	__be16 in_sport;
	__be16 in_dport;
	__u8 in_proto;
	__u8 pad[3];
};

/* Return values of icmp_parse_error besides REASON_* */
#define ICMP_NOT_ERROR (-1)

static __always_inline int icmp_is_error(const struct packet *p, __u8 type)
{
	if (p->family == FAMILY_V4)
		return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB;
	return type == ICMPV6_DEST_UNREACH || type == ICMPV6_PKT_TOOBIG || type == ICMPV6_TIME_EXCEED ||
	       type == ICMPV6_PARAMPROB;
}

/* Parses an ICMP error and the header it quotes. Returns ICMP_NOT_ERROR for
 * any other ICMP message (echo, neighbour discovery, ...), REASON_NONE for a
 * quote of a TCP or UDP packet, else REASON_ICMP_BAD_QUOTE. Everything the
 * quote says must lie inside the outer IP packet, not only the frame. */
static __always_inline int icmp_parse_error(struct xdp_md *ctx, const struct packet *p, struct icmp_err *e)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *ip_end = data + (p->l3_off & L3_OFF_MASK) + p->ip_len;
	struct icmphdr *ih = data + (p->l4_off & L4_OFF_MASK);

	if ((void *)(ih + 1) > data_end || (void *)(ih + 1) > ip_end)
		return REASON_ICMP_BAD_QUOTE;
	if (!icmp_is_error(p, ih->type))
		return ICMP_NOT_ERROR;
	e->icmp_check = &ih->check;
	void *in_l3 = ih + 1;
	void *in_l4;
	e->in_l3 = in_l3;
	if (p->family == FAMILY_V4) {
		struct iphdr *ip = in_l3;
		if ((void *)(ip + 1) > data_end || (void *)(ip + 1) > ip_end)
			return REASON_ICMP_BAD_QUOTE;
		__u32 ihl = (ip->ihl_version & 0x0f) * 4;
		if ((ip->ihl_version >> 4) != 4 || ihl < sizeof(*ip))
			return REASON_ICMP_BAD_QUOTE;
		/* A later fragment quotes no L4 header. */
		if (ip->frag_off & bpf_htons(IP_OFFSET))
			return REASON_ICMP_BAD_QUOTE;
		e->in_proto = ip->protocol;
		e->in_src.v4 = ip->saddr;
		e->in_dst.v4 = ip->daddr;
		in_l4 = in_l3 + (ihl & IPV4_IHL_MAX);
	} else {
		struct ipv6hdr *ip6 = in_l3;
		if ((void *)(ip6 + 1) > data_end || (void *)(ip6 + 1) > ip_end)
			return REASON_ICMP_BAD_QUOTE;
		/* Extension headers in the quote are not walked: a NAT'ed
		 * packet that had them gets no translated error. */
		if ((ip6->priority_version >> 4) != 6)
			return REASON_ICMP_BAD_QUOTE;
		e->in_proto = ip6->nexthdr;
		__builtin_memcpy(e->in_src.v6, ip6->saddr, 16);
		__builtin_memcpy(e->in_dst.v6, ip6->daddr, 16);
		in_l4 = ip6 + 1;
	}
	if (e->in_proto != IPPROTO_TCP && e->in_proto != IPPROTO_UDP)
		return REASON_ICMP_BAD_QUOTE;
	if (in_l4 + ICMP_QUOTE_L4_MIN > data_end || in_l4 + ICMP_QUOTE_L4_MIN > ip_end)
		return REASON_ICMP_BAD_QUOTE;
	__be16 *ports = in_l4;
	e->in_ports = ports;
	e->in_sport = ports[0];
	e->in_dport = ports[1];
	__u32 csum_off = e->in_proto == IPPROTO_TCP ? TCP_CSUM_OFF : UDP_CSUM_OFF;
	__sum16 *l4check = in_l4 + csum_off;
	e->in_l4check = NULL;
	if ((void *)(l4check + 1) <= data_end && (void *)(l4check + 1) <= ip_end &&
	    !(e->in_proto == IPPROTO_UDP && *l4check == 0))
		e->in_l4check = l4check;
	return REASON_NONE;
}

/* Changes a 32-bit word the ICMP checksum covers (the quote), and, through
 * the quoted L4 checksum when there is one, what it covers. */
static __always_inline void icmp_quote_csum4(struct icmp_err *e, __be32 from, __be32 to)
{
	csum_replace4(e->icmp_check, from, to);
	if (e->in_l4check) {
		__sum16 old = *e->in_l4check;
		csum_replace4(e->in_l4check, from, to);
		csum_replace2(e->icmp_check, old, *e->in_l4check);
	}
}

/* Rewrites the quote's source (rewrite_src) or destination address and port
 * to addr:port, with every checksum that covers them. */
static __always_inline void icmp_rewrite_quote(struct xdp_md *ctx, const struct packet *p, struct icmp_err *e,
					       int rewrite_src, const union addr *to, __be16 to_port)
{
	void *data_end = (void *)(long)ctx->data_end;

	if (p->family == FAMILY_V4) {
		struct iphdr *ip = e->in_l3;
		if ((void *)(ip + 1) > data_end)
			return;
		__be32 *a = rewrite_src ? &ip->saddr : &ip->daddr;
		__sum16 old = ip->check;
		csum_replace4(&ip->check, *a, to->v4);
		csum_replace2(e->icmp_check, old, ip->check);
		icmp_quote_csum4(e, *a, to->v4);
		*a = to->v4;
	} else {
		struct ipv6hdr *ip6 = e->in_l3;
		if ((void *)(ip6 + 1) > data_end)
			return;
		__be32 *a = rewrite_src ? ip6->saddr : ip6->daddr;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			icmp_quote_csum4(e, a[i], to->v6[i]);
			a[i] = to->v6[i];
		}
	}
	__be16 *port = rewrite_src ? &e->in_ports[0] : &e->in_ports[1];
	if ((void *)(e->in_ports + 2) > data_end)
		return;
	csum_replace2(e->icmp_check, *port, to_port);
	if (e->in_l4check) {
		__sum16 old = *e->in_l4check;
		csum_replace2(e->in_l4check, *port, to_port);
		/* A UDP checksum that comes out zero is sent as all ones. */
		if (e->in_proto == IPPROTO_UDP && *e->in_l4check == 0)
			*e->in_l4check = 0xffff;
		csum_replace2(e->icmp_check, old, *e->in_l4check);
	}
	*port = to_port;
}

/* Rewrites the outer source (rewrite_src) or destination address: the
 * IPv4 header checksum covers it, and the ICMPv6 checksum its pseudo-header. */
static __always_inline int icmp_rewrite_outer(struct xdp_md *ctx, const struct packet *p, struct icmp_err *e,
					      int rewrite_src, const union addr *to)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *l3 = data + (p->l3_off & L3_OFF_MASK);

	if (p->family == FAMILY_V4) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end)
			return -1;
		__be32 *a = rewrite_src ? &ip->saddr : &ip->daddr;
		csum_replace4(&ip->check, *a, to->v4);
		*a = to->v4;
		return 0;
	}
	struct ipv6hdr *ip6 = l3;
	if ((void *)(ip6 + 1) > data_end)
		return -1;
	__be32 *a = rewrite_src ? ip6->saddr : ip6->daddr;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		csum_replace4(e->icmp_check, a[i], to->v6[i]);
		a[i] = to->v6[i];
	}
	return 0;
}

static __always_inline int is_icmp(const struct packet *p)
{
	return p->proto == (p->family == FAMILY_V4 ? IPPROTO_ICMP : IPPROTO_ICMPV6);
}

/* An ICMP error on its way to a client, which may quote a packet we NAT'ed
 * to a member. One that does not is host traffic, passed untouched. */
static __always_inline int handle_icmp_to_client(struct xdp_md *ctx, struct packet *p)
{
	struct icmp_err e;

	__builtin_memset(&e, 0, sizeof(e));
	if (icmp_parse_error(ctx, p, &e) != REASON_NONE)
		return XDP_PASS;
	struct member_vs_info *mv = member_vs_of(&e.in_dst, e.in_dport, e.in_proto, p->family);
	if (!mv)
		return XDP_PASS;

	/* The quote is the client's packet as the member got it. */
	struct flow_key fk;
	union addr vip;
	__be16 vport;
	__u64 now = now_ns();
	if (mv->flags & MEMBER_VS_F_SHARED) {
		__builtin_memset(&fk, 0, sizeof(fk));
		fk.src = e.in_dst;
		fk.dst = e.in_src;
		fk.sport = e.in_dport;
		fk.dport = e.in_sport;
		fk.proto = e.in_proto;
		fk.family = p->family;
		struct flow_info *r = flow_lookup(&fk, &vip);
		if (!r || !(r->flags & FLOW_F_REVERSE))
			return verdict(REASON_ICMP_NO_FLOW, XDP_PASS);
		vport = r->port;
	} else {
		vip = mv->vip;
		vport = mv->vip_port;
	}
	__builtin_memset(&fk, 0, sizeof(fk));
	fk.src = e.in_src;
	fk.dst = vip;
	fk.sport = e.in_sport;
	fk.dport = vport;
	fk.proto = e.in_proto;
	fk.family = p->family;
	union addr target;
	struct flow_info *f = flow_lookup(&fk, &target);
	if (!f || (f->flags & (FLOW_F_NAT | FLOW_F_REVERSE)) != FLOW_F_NAT || f->port != e.in_dport ||
	    __builtin_memcmp(&target, &e.in_dst, sizeof(target)))
		return verdict(REASON_ICMP_NO_FLOW, XDP_PASS);
	/* The quote's source is the client: the error must go to it. */
	if (__builtin_memcmp(&e.in_src, &p->dst, sizeof(e.in_src)))
		return verdict(REASON_ICMP_NO_FLOW, XDP_PASS);

	if (ttl_expiring(ctx, p))
		return verdict(REASON_TTL_EXPIRED, XDP_PASS);
	icmp_rewrite_quote(ctx, p, &e, 0, &vip, vport);
	if (icmp_rewrite_outer(ctx, p, &e, 1, &vip))
		return XDP_DROP;
	count_reason(REASON_ICMP_TO_CLIENT);
	__u32 gen = nexthop_gen(now);
	struct flow_nexthop *rnh = &f->reply_nh;
	__u8 smac[ETH_ALEN];
	if (!p->vlan_depth && flow_nexthop_use(rnh, gen, p->ip_len, smac))
		return xmit(ctx, p, rnh->dmac, smac, rnh->ifindex, 0);
	return fib_forward(ctx, p, &vip, &p->dst, 0, NULL, NEXTHOP_GEN_NONE);
}

/* An ICMP error for a VIP, which must quote a packet that left from it: a
 * reply to a client. It goes to that flow's member, or to the stack,
 * counted, when there is no such flow: never anywhere else. */
static __always_inline int handle_icmp_to_vip(struct xdp_md *ctx, struct packet *p, struct vip_info *vip)
{
	struct icmp_err e;

	__builtin_memset(&e, 0, sizeof(e));
	int r = icmp_parse_error(ctx, p, &e);
	if (r == ICMP_NOT_ERROR)
		return XDP_PASS;
	if (r != REASON_NONE)
		return verdict(r, XDP_PASS);
	if (__builtin_memcmp(&e.in_src, &p->dst, sizeof(e.in_src)))
		return verdict(REASON_ICMP_NO_FLOW, XDP_PASS);

	/* The quote is a reply, VIP -> client: its flow is client -> VIP. The
	 * key is scratch's: a tunnel's path below needs the stack. */
	struct scratch *sc = scratch_area();
	if (!sc)
		return XDP_DROP;
	struct flow_key *fk = &sc->key;
	__builtin_memset(fk, 0, sizeof(*fk));
	fk->src = e.in_dst;
	fk->dst = e.in_src;
	fk->sport = e.in_dport;
	fk->dport = e.in_sport;
	fk->proto = e.in_proto;
	fk->family = p->family;
	union addr maddr;
	struct flow_info *f = flow_lookup(fk, &maddr);
	if (!f || (f->flags & FLOW_F_REVERSE) || !(f->flags & (FLOW_F_NAT | FLOW_F_DSR)))
		return verdict(REASON_ICMP_NO_FLOW, XDP_PASS);

	__u64 now = now_ns();
	__u32 member_id = f->member_id;
	/* A DSR member sent the reply from the VIP itself: the error is
	 * already right for it, and goes on with its MACs rewritten; a
	 * tunnel's member is reached only through its tunnel (sent as it is,
	 * the error would follow the VIP's route back here). */
	int dsr = !!(f->flags & FLOW_F_DSR);
	if (dsr) {
		const struct vs_info *vs = vip_server_at(vip, &p->dst, p->family, e.in_sport, e.in_proto);
		__u8 vs_flags = vs ? vs->flags : 0;
		if (vs_flags & (VS_F_ENCAP_IPIP | VS_F_ENCAP_GUE)) {
			count_reason(REASON_ICMP_TO_MEMBER);
			return encap_to_member(ctx, p, vs_flags, member_id, now, 1);
		}
	}
	if (!dsr) {
		if (ttl_expiring(ctx, p))
			return verdict(REASON_TTL_EXPIRED, XDP_PASS);
		icmp_rewrite_quote(ctx, p, &e, 1, &maddr, f->port);
		if (icmp_rewrite_outer(ctx, p, &e, 0, &maddr))
			return XDP_DROP;
	}
	count_reason(REASON_ICMP_TO_MEMBER);
	const struct nexthop *nh = member_nexthop(p, member_id, now);
	if (nh)
		return xmit(ctx, p, nh->dmac, nh->smac, nh->ifindex, dsr);
	return fib_forward(ctx, p, &p->src, &maddr, dsr, NULL, NEXTHOP_GEN_NONE);
}

#endif
