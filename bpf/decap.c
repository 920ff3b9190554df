/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* limpet_decap: the member-side decapsulator, a tc classifier for a member's
 * ingress (limpet member-decap). A balancer in forwarding mode ipip or gue
 * wraps the client's packet in an outer header addressed to the member; this
 * program strips that header with bpf_skb_adjust_room, so the member's stack
 * sees the client's own packet (client source, VIP destination) and answers
 * it directly. It does what the ipip and fou modules do, on hosts that have
 * neither.
 *
 * Forms: IPPROTO_IPIP (4) and IPPROTO_IPV6 (41) in IPv4 or IPv6, and GUE
 * over UDP to the configured port (variant 0 with no optional fields, or variant 1,
 * direct IP) carrying IPv4 or IPv6, to any outer destination or, when the
 * loader lists them, only to the member's own addresses (decap_dst).
 * Everything else passes untouched. A
 * tunnel packet that is not well formed (truncated, bad outer header, a
 * fragment, an inner header of the wrong family, GUE options) passes
 * untouched too, counted by reason: the stack then drops it as it would any
 * packet of a protocol it does not serve. Nothing is ever half rewritten:
 * every check runs before the one call that changes the packet.
 *
 * Checksums: the outer IPv4 header checksum is verified here, since the
 * stack never sees that header. The GUE UDP checksum is not: what is
 * delivered is covered by the inner packet's own checksums, which the stack
 * verifies (the adjust resets CHECKSUM_UNNECESSARY). ECN follows RFC 6040 as
 * Linux's tunnels apply it: an outer CE marks the inner packet CE, and an
 * outer CE over a not-ECT inner packet is dropped. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "decap.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Puts the counter enum in BTF, for the generated Go constants. */
const enum decap_stat *btf_anchor_decap_stat __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DECAP_STAT_MAX);
	__type(key, __u32);
	__type(value, struct decap_count);
} decap_stats SEC(".maps");

/* Written by the loader; a map rather than a constant, so that the port
 * changes without reloading the program (and the CLI can show it). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct decap_config);
} decap_cfg SEC(".maps");

/* With decap_config.only_listed, the outer destinations to decapsulate: the
 * member's own addresses, so that a host that also routes never unwraps
 * tunnel traffic passing through it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DECAP_MAX_DSTS);
	__type(key, struct decap_dst_key);
	__type(value, __u8);
} decap_dst SEC(".maps");

/* A tunnel packet found by the parser. */
struct tunnel {
	__u32 olen;         /* bytes after Ethernet to strip: outer IP (+ UDP + GUE) */
	__u32 avail;        /* bytes of the outer payload that the inner packet may use */
	__u8 outer_family;  /* 4 or 6 */
	__u8 inner_family;  /* 4 or 6 */
	__u8 outer_ecn;     /* DECAP_ECN_* of the outer header */
	__u8 gue;           /* 1 for GUE, 0 for IPIP */
	struct decap_dst_key dst; /* the outer destination */
};

static __always_inline void count(__u32 stat, __u32 bytes)
{
	struct decap_count *c = bpf_map_lookup_elem(&decap_stats, &stat);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* One's-complement sum of an IPv4 header of ihl bytes (20..60, a multiple of
 * 4) at ip; 0 when the header is whole and its checksum right. */
static __always_inline int ip4_csum_bad(const void *ip, __u32 ihl, const void *data_end)
{
	const __u16 *w = ip;
	__u32 sum = 0;

	/* A bounded loop: the verifier walks it at most 30 times. */
	for (int i = 0; i < DECAP_IP4_MAX_HLEN / 2; i++) {
		if ((__u32)i * 2 >= ihl)
			break;
		const __u16 *p = w + i;
		/* Keeps clang from rewriting the check as arithmetic on
		 * data_end, which the verifier refuses. */
		asm volatile("" : "+r"(p));
		if ((const void *)(p + 1) > data_end)
			return 1;
		sum += *p;
	}
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum != 0xffff;
}

/* The inner family a protocol number announces; 0 for neither. */
static __always_inline __u8 ipip_family(__u8 proto)
{
	if (proto == DECAP_IPPROTO_IPIP)
		return 4;
	if (proto == DECAP_IPPROTO_IPV6)
		return 6;
	return 0;
}

/* Parses the UDP and GUE headers at l4 (payload bytes of the outer IP
 * packet: l4len). Fills t->olen with the UDP and GUE bytes, to which the
 * caller adds its IP header. Returns DECAP_STAT_MAX when t describes a GUE
 * packet, or the reason it is not one. */
static __always_inline __u32 parse_gue(void *l4, __u32 l4len, void *data_end, __be16 port, struct tunnel *t)
{
	struct decap_udp *udp = l4;

	if ((void *)(udp + 1) > data_end)
		return DECAP_STAT_PASS;
	if (!port || udp->dport != port)
		return DECAP_STAT_PASS;
	__u32 ulen = bpf_ntohs(udp->len);
	if (ulen > l4len || ulen <= DECAP_UDP_HLEN)
		return DECAP_STAT_TRUNCATED;

	__u8 *g = (void *)(udp + 1);
	if ((void *)(g + 1) > data_end)
		return DECAP_STAT_TRUNCATED;
	switch (*g >> GUE_VARIANT_SHIFT) {
	case GUE_V1:
		/* Direct IP: the version nibble is the inner family. */
		t->inner_family = *g >> 4;
		if (t->inner_family != 4 && t->inner_family != 6)
			return DECAP_STAT_BAD_INNER;
		t->olen = DECAP_UDP_HLEN;
		break;
	case GUE_V0: {
		struct decap_gue *gh = (void *)g;
		if ((void *)(gh + 1) > data_end || ulen < DECAP_UDP_HLEN + DECAP_GUE_HLEN)
			return DECAP_STAT_TRUNCATED;
		if (gh->ver_c_hlen & GUE_C_BIT)
			return DECAP_STAT_GUE_VERSION;
		if ((gh->ver_c_hlen & GUE_HLEN_MASK) || gh->flags)
			return DECAP_STAT_GUE_OPTIONS;
		t->inner_family = ipip_family(gh->proto);
		if (!t->inner_family)
			return DECAP_STAT_GUE_PROTO;
		t->olen = DECAP_UDP_HLEN + DECAP_GUE_HLEN;
		break;
	}
	default:
		return DECAP_STAT_GUE_VERSION;
	}
	t->avail = ulen - t->olen;
	t->gue = 1;
	return DECAP_STAT_MAX;
}

static __always_inline __u32 parse_outer4(void *data, void *data_end, __u32 pkt_len, __be16 port, struct tunnel *t)
{
	struct decap_ip4 *ip = data + DECAP_ETH_HLEN;

	if ((void *)(ip + 1) > data_end || (ip->ver_ihl >> 4) != 4)
		return DECAP_STAT_PASS;
	__u8 proto = ip->proto;
	if (proto != DECAP_IPPROTO_IPIP && proto != DECAP_IPPROTO_IPV6 && proto != DECAP_IPPROTO_UDP)
		return DECAP_STAT_PASS;
	__u32 ihl = (ip->ver_ihl & 0x0f) * 4;
	if (ihl < DECAP_IP4_HLEN)
		return proto == DECAP_IPPROTO_UDP ? DECAP_STAT_PASS : DECAP_STAT_BAD_OUTER;
	__u32 tot = bpf_ntohs(ip->tot_len);

	t->outer_family = 4;
	t->outer_ecn = ip->tos & DECAP_ECN_MASK;
	if (proto == DECAP_IPPROTO_UDP) {
		if (tot < ihl)
			return DECAP_STAT_PASS;
		__u32 r = parse_gue((void *)ip + ihl, tot - ihl, data_end, port, t);
		if (r != DECAP_STAT_MAX)
			return r;
	} else {
		t->inner_family = ipip_family(proto);
		t->olen = 0;
		t->avail = tot - ihl;
	}
	/* What the stack would have checked of this header. */
	if (tot < ihl || tot > pkt_len - DECAP_ETH_HLEN)
		return DECAP_STAT_BAD_OUTER;
	if (ip4_csum_bad(ip, ihl, data_end))
		return DECAP_STAT_BAD_OUTER;
	if (ip->frag_off & bpf_htons(DECAP_IP4_FRAG_MASK))
		return DECAP_STAT_FRAGMENT;
	t->dst.family = 4;
	__builtin_memcpy(t->dst.addr, &ip->daddr, 4);
	t->olen += ihl;
	return DECAP_STAT_MAX;
}

static __always_inline __u32 parse_outer6(void *data, void *data_end, __u32 pkt_len, __be16 port, struct tunnel *t)
{
	struct decap_ip6 *ip = data + DECAP_ETH_HLEN;

	if ((void *)(ip + 1) > data_end)
		return DECAP_STAT_PASS;
	__u32 vtf = bpf_ntohl(ip->ver_tc_flow);
	if ((vtf >> 28) != 6)
		return DECAP_STAT_PASS;
	/* Extension headers before the tunnel protocol are not parsed: such a
	 * packet is not one of ours. */
	__u8 proto = ip->nexthdr;
	if (proto != DECAP_IPPROTO_IPIP && proto != DECAP_IPPROTO_IPV6 && proto != DECAP_IPPROTO_UDP)
		return DECAP_STAT_PASS;
	__u32 plen = bpf_ntohs(ip->payload_len);

	t->outer_family = 6;
	t->outer_ecn = (vtf >> 20) & DECAP_ECN_MASK;
	if (proto == DECAP_IPPROTO_UDP) {
		__u32 r = parse_gue(ip + 1, plen, data_end, port, t);
		if (r != DECAP_STAT_MAX)
			return r;
	} else {
		t->inner_family = ipip_family(proto);
		t->olen = 0;
		t->avail = plen;
	}
	if (plen > pkt_len - DECAP_ETH_HLEN - DECAP_IP6_HLEN)
		return DECAP_STAT_BAD_OUTER;
	t->dst.family = 6;
	__builtin_memcpy(t->dst.addr, ip->daddr, 16);
	t->olen += DECAP_IP6_HLEN;
	return DECAP_STAT_MAX;
}

/* Checks the inner packet at inner (t->avail bytes of outer payload) and
 * reads its ECN codepoint. DECAP_STAT_MAX when it is well formed. */
static __always_inline __u32 check_inner(void *inner, void *data_end, const struct tunnel *t, __u8 *ecn)
{
	if (t->inner_family == 4) {
		struct decap_ip4 *ip = inner;
		if (t->avail < DECAP_IP4_HLEN || (void *)(ip + 1) > data_end)
			return DECAP_STAT_TRUNCATED;
		if ((ip->ver_ihl >> 4) != 4 || (ip->ver_ihl & 0x0f) < 5)
			return DECAP_STAT_BAD_INNER;
		__u32 tot = bpf_ntohs(ip->tot_len);
		if (tot < (__u32)(ip->ver_ihl & 0x0f) * 4)
			return DECAP_STAT_BAD_INNER;
		if (tot > t->avail)
			return DECAP_STAT_TRUNCATED;
		*ecn = ip->tos & DECAP_ECN_MASK;
		return DECAP_STAT_MAX;
	}
	struct decap_ip6 *ip6 = inner;
	if (t->avail < DECAP_IP6_HLEN || (void *)(ip6 + 1) > data_end)
		return DECAP_STAT_TRUNCATED;
	__u32 vtf = bpf_ntohl(ip6->ver_tc_flow);
	if ((vtf >> 28) != 6)
		return DECAP_STAT_BAD_INNER;
	if (DECAP_IP6_HLEN + (__u32)bpf_ntohs(ip6->payload_len) > t->avail)
		return DECAP_STAT_TRUNCATED;
	*ecn = (vtf >> 20) & DECAP_ECN_MASK;
	return DECAP_STAT_MAX;
}

static __always_inline __u32 form_stat(const struct tunnel *t)
{
	__u32 s = t->gue ? DECAP_STAT_GUE_4IN4 : DECAP_STAT_IPIP_4IN4;

	if (t->inner_family == 6)
		s += 1;
	if (t->outer_family == 6)
		s += 2;
	return s;
}

/* Marks the inner packet (now right after Ethernet) CE. */
static __always_inline void mark_ce(struct __sk_buff *skb, __u8 family)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (family == 4) {
		struct decap_ip4 *ip = data + DECAP_ETH_HLEN;
		if ((void *)(ip + 1) > data_end)
			return;
		__be16 *word = (__be16 *)ip; /* version, IHL and TOS */
		__be16 from = *word;
		ip->tos |= DECAP_ECN_CE;
		/* RFC 1624: HC' = ~(~HC + ~m + m') */
		__u32 sum = (__u16)~ip->check;
		sum += (__u16)~from;
		sum += *word;
		sum = (sum & 0xffff) + (sum >> 16);
		sum = (sum & 0xffff) + (sum >> 16);
		ip->check = (__u16)~sum;
		return;
	}
	struct decap_ip6 *ip6 = data + DECAP_ETH_HLEN;
	if ((void *)(ip6 + 1) > data_end)
		return;
	ip6->ver_tc_flow |= bpf_htonl(DECAP_ECN_CE << 20);
}

SEC("tc")
int limpet_decap(struct __sk_buff *skb)
{
	__u32 pkt_len = skb->len;

	/* Headers of a GRO'd or paged skb may lie beyond the linear area. */
	if ((long)skb->data + DECAP_PULL_LEN > (long)skb->data_end && skb->data_end - skb->data < pkt_len)
		bpf_skb_pull_data(skb, pkt_len < DECAP_PULL_LEN ? pkt_len : DECAP_PULL_LEN);

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct decap_eth *eth = data;
	struct tunnel t = {};
	__u32 r, zero = 0;

	if ((void *)(eth + 1) > data_end) {
		count(DECAP_STAT_PASS, pkt_len);
		return DECAP_TC_ACT_OK;
	}
	struct decap_config *cfg = bpf_map_lookup_elem(&decap_cfg, &zero);
	if (!cfg) {
		count(DECAP_STAT_PASS, pkt_len);
		return DECAP_TC_ACT_OK;
	}
	if (eth->proto == bpf_htons(DECAP_ETH_P_IP))
		r = parse_outer4(data, data_end, pkt_len, cfg->gue_port, &t);
	else if (eth->proto == bpf_htons(DECAP_ETH_P_IPV6))
		r = parse_outer6(data, data_end, pkt_len, cfg->gue_port, &t);
	else
		r = DECAP_STAT_PASS;
	if (r == DECAP_STAT_MAX && cfg->only_listed && !bpf_map_lookup_elem(&decap_dst, &t.dst))
		r = DECAP_STAT_OTHER_DST;
	if (r != DECAP_STAT_MAX) {
		count(r, pkt_len);
		return DECAP_TC_ACT_OK;
	}

	__u32 olen = t.olen;
	if (olen > DECAP_IP4_MAX_HLEN + DECAP_UDP_HLEN + DECAP_GUE_HLEN) /* for the verifier */
		olen = DECAP_IP4_MAX_HLEN + DECAP_UDP_HLEN + DECAP_GUE_HLEN;
	__u8 inner_ecn = 0;
	r = check_inner(data + DECAP_ETH_HLEN + olen, data_end, &t, &inner_ecn);
	if (r != DECAP_STAT_MAX) {
		count(r, pkt_len);
		return DECAP_TC_ACT_OK;
	}
	int set_ce = 0;
	if (t.outer_ecn == DECAP_ECN_CE) {
		if (inner_ecn == DECAP_ECN_NOT_ECT) {
			count(DECAP_STAT_ECN_DROP, pkt_len);
			return DECAP_TC_ACT_SHOT;
		}
		set_ce = inner_ecn != DECAP_ECN_CE;
	}

	/* FIXED_GSO: a GRO'd packet's segments carry as much payload as before. */
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO;
	if (t.inner_family != t.outer_family)
		flags |= t.inner_family == 4 ? BPF_F_ADJ_ROOM_DECAP_L3_IPV4 : BPF_F_ADJ_ROOM_DECAP_L3_IPV6;
	if (bpf_skb_adjust_room(skb, -(__s32)olen, BPF_ADJ_ROOM_MAC, flags)) {
		count(DECAP_STAT_ADJUST_FAILED, pkt_len);
		return DECAP_TC_ACT_OK;
	}
	if (t.inner_family != t.outer_family) {
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		eth = data;
		if ((void *)(eth + 1) <= data_end)
			eth->proto = bpf_htons(t.inner_family == 4 ? DECAP_ETH_P_IP : DECAP_ETH_P_IPV6);
	}
	if (set_ce)
		mark_ce(skb, t.inner_family);
	count(form_stat(&t), pkt_len);
	return DECAP_TC_ACT_OK;
}
