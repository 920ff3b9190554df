/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The TCP RST that answers a connection a full persistence table rejects. */
#ifndef LIMPET_REJECT_H
#define LIMPET_REJECT_H

#include "common.h"
#include "parse.h"
#include "csum.h"

/* Answers a rejected TCP connection with RST|ACK, in place, and sends it
 * back out of the interface it came in on. Through bpf_redirect, not
 * XDP_TX: veth queues an XDP_TX frame on its peer but wakes the peer only
 * when the peer runs an XDP program, so with GRO alone (a normal lab) the
 * RST waits there until other traffic comes by. A redirect is flushed with
 * XDP_XMIT_FLUSH, which wakes the peer; on other drivers it is the same
 * transmit on the same port. Rejections are rare; the cost does not matter. */
static __always_inline int reply_rst(struct xdp_md *ctx, struct packet *p)
{
	if (p->proto != IPPROTO_TCP || p->ipv4_options || p->ipv6_ext || (p->tcp_flags & TCP_RST))
		return XDP_DROP;

	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l3_off = p->l3_off & L3_OFF_MASK;
	__u32 l3_len = p->family == FAMILY_V4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
	struct tcphdr *th = data + l3_off + l3_len;
	if ((void *)(th + 1) > data_end)
		return XDP_DROP;

	__u32 payload = p->ip_len - l3_len - (th->doff_res >> 4) * 4;
	__u32 seq = bpf_ntohl(th->seq);
	__u32 ack = seq + payload + !!(p->tcp_flags & TCP_SYN) + !!(p->tcp_flags & TCP_FIN);
	__u32 new_seq = (p->tcp_flags & TCP_ACK) ? bpf_ntohl(th->ack_seq) : 0;

	int delta = (int)(l3_off + l3_len + sizeof(struct tcphdr)) - (int)(data_end - data);
	if (delta < 0 && bpf_xdp_adjust_tail(ctx, delta))
		return XDP_DROP;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);

	__u32 sum = 0;
	if (p->family == FAMILY_V4) {
		struct iphdr *ip = data + l3_off;
		th = (void *)(ip + 1);
		if ((void *)(th + 1) > data_end)
			return XDP_DROP;
		__be32 a = ip->saddr;
		ip->saddr = ip->daddr;
		ip->daddr = a;
		ip->tot_len = bpf_htons(sizeof(*ip) + sizeof(*th));
		ip->id = 0;
		ip->frag_off = bpf_htons(IP_DF);
		ip->ttl = RST_TTL;
		ip->check = 0;
		ip->check = csum_fold(csum_words((__u16 *)ip, sizeof(*ip) / 2, 0));
		sum = csum_words((__u16 *)&ip->saddr, 4, 0);
	} else {
		struct ipv6hdr *ip6 = data + l3_off;
		th = (void *)(ip6 + 1);
		if ((void *)(th + 1) > data_end)
			return XDP_DROP;
		__be32 a[4];
		__builtin_memcpy(a, ip6->saddr, 16);
		__builtin_memcpy(ip6->saddr, ip6->daddr, 16);
		__builtin_memcpy(ip6->daddr, a, 16);
		ip6->payload_len = bpf_htons(sizeof(*th));
		ip6->hop_limit = RST_TTL;
		sum = csum_words((__u16 *)ip6->saddr, 16, 0);
	}
	__be16 port = th->source;
	th->source = th->dest;
	th->dest = port;
	th->seq = bpf_htonl(new_seq);
	th->ack_seq = bpf_htonl(ack);
	th->doff_res = TCP_DOFF_MIN_WORDS << 4;
	th->flags = TCP_RST | TCP_ACK;
	th->window = 0;
	th->urg_ptr = 0;
	th->check = 0;
	sum += bpf_htons(IPPROTO_TCP) + bpf_htons(sizeof(*th));
	th->check = csum_fold(csum_words((__u16 *)th, sizeof(*th) / 2, sum));
	return bpf_redirect(ctx->ingress_ifindex, 0);
}

#endif
