/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Header parsing with a cursor. Every read is preceded by a bounds check
 * against data_end; the helpers return REASON_NONE on success, else the
 * REASON_* that drops the packet. */
#ifndef LIMPET_PARSE_H
#define LIMPET_PARSE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "structs.h"

struct cursor {
	void *pos;
	void *end;
};

struct ethhdr {
	__u8 h_dest[ETH_ALEN];
	__u8 h_source[ETH_ALEN];
	__be16 h_proto;
};

struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* The Ethernet header with room for every tag the parser walks: copied
 * whole when a header is pushed in front of the IP header. */
struct eth_tags {
	struct ethhdr eth;
	struct vlan_hdr tags[MAX_VLAN_TAGS];
};

struct iphdr {
	__u8 ihl_version; /* version in the high nibble */
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ipv6hdr {
	__u8 priority_version;
	__u8 flow_lbl[3];
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__be32 saddr[4];
	__be32 daddr[4];
};

struct ipv6_opt_hdr {
	__u8 nexthdr;
	__u8 hdrlen; /* 8-octet units, not counting the first 8 */
};

struct tcphdr {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff_res; /* data offset in the high nibble */
	__u8 flags;
	__be16 window;
	__sum16 check;
	__be16 urg_ptr;
};

struct udphdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__sum16 check;
};

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* What the parser learnt; offsets are from the start of the packet. */
struct packet {
	union addr src;
	union addr dst;
	__be16 sport;
	__be16 dport;
	__u8 family;
	__u8 proto;
	__u8 tcp_flags;
	__u8 vlan_depth;
	__u8 is_fragment;
	__u8 ipv4_options;
	__u8 ipv6_ext;
	__u8 ipv6_too_deep; /* more extension headers than we walk */
	__u16 l3_off;
	__u16 l4_off;
	__u16 ip_len; /* the IP packet's own length: frames may carry padding */
	__u32 pkt_len;
};

static __always_inline int parse_eth(struct cursor *c, struct packet *p, __u16 *proto)
{
	struct ethhdr *eth = c->pos;

	if ((void *)(eth + 1) > c->end)
		return REASON_TRUNC_ETH;
	c->pos = eth + 1;
	*proto = eth->h_proto;

#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		if (*proto != bpf_htons(ETH_P_8021Q) && *proto != bpf_htons(ETH_P_8021AD))
			break;
		struct vlan_hdr *vh = c->pos;
		if ((void *)(vh + 1) > c->end)
			return REASON_TRUNC_ETH;
		c->pos = vh + 1;
		*proto = vh->encap_proto;
		p->vlan_depth++;
	}
	return REASON_NONE;
}

static __always_inline int parse_ipv4(struct cursor *c, void *data, struct packet *p)
{
	struct iphdr *ip = c->pos;

	if ((void *)(ip + 1) > c->end)
		return REASON_TRUNC_IP;
	__u32 ihl = (ip->ihl_version & 0x0f) * 4;
	if ((ip->ihl_version >> 4) != 4 || ihl < sizeof(*ip))
		return REASON_TRUNC_IP;
	if (c->pos + ihl > c->end)
		return REASON_TRUNC_IP;
	__u16 tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len < ihl || c->pos + tot_len > c->end)
		return REASON_TRUNC_IP;

	p->family = FAMILY_V4;
	p->ip_len = tot_len;
	p->proto = ip->protocol;
	p->src.v4 = ip->saddr;
	p->dst.v4 = ip->daddr;
	p->ipv4_options = ihl > sizeof(*ip);
	p->is_fragment = (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) != 0;
	p->l3_off = c->pos - data;
	c->pos += ihl;
	p->l4_off = c->pos - data;
	return REASON_NONE;
}

/* Walks up to MAX_IPV6_EXT_HDRS hop-by-hop, routing and destination options
 * headers. A fragment header marks the packet as a fragment; anything else
 * (AH, ESP, ...) ends the walk with that protocol. */
static __always_inline int parse_ipv6(struct cursor *c, void *data, struct packet *p)
{
	struct ipv6hdr *ip6 = c->pos;

	if ((void *)(ip6 + 1) > c->end)
		return REASON_TRUNC_IP;
	if ((ip6->priority_version >> 4) != 6)
		return REASON_TRUNC_IP;
	/* Extension headers must lie inside the IP packet, not just the frame:
	 * a frame may carry padding after it. */
	void *ip_end = (void *)(ip6 + 1) + bpf_ntohs(ip6->payload_len);
	if (ip_end > c->end)
		return REASON_TRUNC_IP;
	/* Hide from clang that ip_end <= end, or it drops the frame-end checks
	 * below as implied by the IP-end ones; the verifier needs them. */
	barrier_var(ip_end);

	p->family = FAMILY_V6;
	p->ip_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	__builtin_memcpy(p->src.v6, ip6->saddr, 16);
	__builtin_memcpy(p->dst.v6, ip6->daddr, 16);
	p->l3_off = c->pos - data;
	c->pos = ip6 + 1;

	__u8 next = ip6->nexthdr;
#pragma unroll
	for (int i = 0; i < MAX_IPV6_EXT_HDRS; i++) {
		if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS &&
		    next != IPPROTO_FRAGMENT)
			break;
		struct ipv6_opt_hdr *opt = c->pos;
		if ((void *)(opt + 1) > c->end || (void *)(opt + 1) > ip_end)
			return REASON_TRUNC_IP;
		if (next == IPPROTO_FRAGMENT) {
			p->is_fragment = 1;
			next = opt->nexthdr;
			c->pos += 8;
		} else {
			next = opt->nexthdr;
			c->pos += (opt->hdrlen + 1) * 8;
		}
		if (c->pos > c->end || c->pos > ip_end)
			return REASON_TRUNC_IP;
		p->ipv6_ext = 1;
	}
	/* More headers than we walk: not ours to balance. A flag, not a
	 * protocol value: 255 is a protocol number like any other. */
	p->ipv6_too_deep = next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS ||
			   next == IPPROTO_FRAGMENT;
	p->proto = next;
	p->l4_off = c->pos - data;
	return REASON_NONE;
}

/* Fills ports and flags. A TCP segment with no flags, or with SYN together
 * with FIN or RST, is never legitimate. The header must lie inside the IP
 * packet (the frame end is checked too, for the verifier). */
static __always_inline int parse_l4(struct cursor *c, struct packet *p)
{
	__u32 ip_end = (__u32)p->l3_off + p->ip_len;

	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = c->pos;
		if ((void *)(th + 1) > c->end || (__u32)p->l4_off + sizeof(*th) > ip_end)
			return REASON_TRUNC_L4;
		__u32 doff = (th->doff_res >> 4) * 4;
		if (doff < sizeof(*th) || c->pos + doff > c->end || (__u32)p->l4_off + doff > ip_end)
			return REASON_TRUNC_L4;
		p->sport = th->source;
		p->dport = th->dest;
		p->tcp_flags = th->flags;
		__u8 f = th->flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_PSH | TCP_ACK);
		if (f == 0 || ((f & TCP_SYN) && (f & (TCP_FIN | TCP_RST))))
			return REASON_TCP_FLAGS;
		return REASON_NONE;
	}
	if (p->proto == IPPROTO_UDP) {
		struct udphdr *uh = c->pos;
		if ((void *)(uh + 1) > c->end || (__u32)p->l4_off + sizeof(*uh) > ip_end)
			return REASON_TRUNC_L4;
		__u32 ulen = bpf_ntohs(uh->len);
		if (ulen < sizeof(*uh) || c->pos + ulen > c->end || (__u32)p->l4_off + ulen > ip_end)
			return REASON_TRUNC_L4;
		p->sport = uh->source;
		p->dport = uh->dest;
		return REASON_NONE;
	}
	return REASON_NONE;
}

#endif
