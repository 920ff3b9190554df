/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* limpet's XDP datapath: L4 load balancing with source-IP persistence.
 *
 * Per packet: VIP check, flow table, persistence table, pool choice, then NAT
 * or DSR forwarding via the FIB. Anything that is not ours passes untouched.
 * The second program, limpet_gc, is never attached: the daemon runs it through
 * BPF_PROG_RUN so that expiring flows and entries uses the same atomics as the
 * datapath instead of racing it from userspace. This file holds only the entry
 * points; the headers hold the parts, by concern. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "structs.h"
#include "maps.h"
#include "common.h"
#include "parse.h"
#include "l2dst.h"
#include "balance.h"
#include "reply.h"
#include "icmp.h"
#include "gc.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Types the loader needs bindings for but no map mentions; referencing them
 * here makes clang emit their BTF. */
const struct gc_batch *btf_anchor_gc_batch __attribute__((unused));
const enum reason *btf_anchor_reason __attribute__((unused));
const struct persist_entry *btf_anchor_persist_entry __attribute__((unused));
const struct persist_event *btf_anchor_persist_event __attribute__((unused));
const enum vip_flag *btf_anchor_vip_flag __attribute__((unused));
const enum member_vs_flag *btf_anchor_member_vs_flag __attribute__((unused));
const enum vs_flag *btf_anchor_vs_flag __attribute__((unused));
const enum encap_flag *btf_anchor_encap_flag __attribute__((unused));
const enum member_flag *btf_anchor_member_flag __attribute__((unused));
const enum algorithm *btf_anchor_algorithm __attribute__((unused));
const enum flow_flag *btf_anchor_flow_flag __attribute__((unused));
const enum table_flag *btf_anchor_table_flag __attribute__((unused));
const enum event_type *btf_anchor_event_type __attribute__((unused));
const enum gc_op *btf_anchor_gc_op __attribute__((unused));
const enum gc_result *btf_anchor_gc_result __attribute__((unused));

SEC("xdp")
int limpet_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct cursor c = { .pos = data, .end = data_end };
	struct packet p;
	__u16 eth_proto;
	int r;

	__builtin_memset(&p, 0, sizeof(p));
	p.pkt_len = data_end - data;
	r = parse_eth(&c, &p, &eth_proto);
	if (r != REASON_NONE)
		return verdict(r, XDP_DROP);
	if (eth_proto == bpf_htons(ETH_P_IP))
		r = parse_ipv4(&c, data, &p);
	else if (eth_proto == bpf_htons(ETH_P_IPV6))
		r = parse_ipv6(&c, data, &p);
	else
		return XDP_PASS;
	if (r != REASON_NONE)
		return verdict(r, XDP_DROP);

	struct addr_key ak;
	__builtin_memset(&ak, 0, sizeof(ak));
	ak.addr = p.dst;
	ak.family = p.family;
	struct vip_info *vip = bpf_map_lookup_elem(&vips, &ak);
	if (vip) {
		if (l2_dst_of(ctx, data, data_end) != L2_DST_OURS)
			return verdict(REASON_NOT_OUR_MAC, XDP_PASS);
		if (p.is_fragment)
			return verdict(REASON_FRAGMENT, XDP_DROP);
		if (p.ipv6_too_deep)
			return verdict(REASON_IPV6_EXT, XDP_DROP);
		if (is_icmp(&p))
			return handle_icmp_to_vip(ctx, &p, vip);
		if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP)
			return XDP_PASS;
		r = parse_l4(&c, &p);
		if (r != REASON_NONE)
			return verdict(r, XDP_DROP);
		struct vs_info vs;
		if (vip_server(vip, &p, &vs))
			return XDP_PASS;
		if (p.ipv4_options)
			count_reason(REASON_IPV4_OPTIONS);
		if (p.ipv6_ext)
			count_reason(REASON_IPV6_EXT_WALKED);
		return handle_vs(ctx, &p, &vs);
	}

	if (p.is_fragment || (!is_icmp(&p) && p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP))
		return XDP_PASS;
	/* A reply or an ICMP error flooded to us is not ours to rewrite; a
	 * group's frame (mDNS, DHCP) is the host's and not worth a count. */
	switch (l2_dst_of(ctx, data, data_end)) {
	case L2_DST_OTHER_HOST:
		return verdict(REASON_NOT_OUR_MAC, XDP_PASS);
	case L2_DST_GROUP:
		return XDP_PASS;
	default:
		break;
	}
	if (is_icmp(&p))
		return handle_icmp_to_client(ctx, &p);
	/* Host traffic that fails our checks is the stack's business. */
	if (parse_l4(&c, &p) != REASON_NONE)
		return XDP_PASS;
	return handle_reply(ctx, &p);
}

SEC("xdp")
int limpet_gc(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct gc_batch *b = data;

	if ((void *)(b + 1) > data_end)
		return XDP_ABORTED;
	__u64 now = now_ns();
	b->now_ns = now;
	__u32 n = b->count;
	for (__u32 i = 0; i < GC_BATCH_MAX; i++) {
		if (i >= n)
			break;
		struct gc_item *it = &b->items[i];
		it->result = gc_run_item(it, now);
	}
	return XDP_PASS;
}

/* Attached to the xdp:xdp_redirect_err tracepoint: counts the redirects of
 * limpet_xdp that the kernel refused. It runs only when a redirect fails,
 * so forwarding pays nothing for it. */
SEC("tracepoint/xdp/xdp_redirect_err")
int limpet_redirect_err(struct redirect_err_ctx *ctx)
{
	__u32 zero = 0;
	__u32 *id = bpf_map_lookup_elem(&redirect_watch, &zero);

	if (!id || *id == 0 || (__u32)ctx->prog_id != *id)
		return 0;
	struct redirect_err_key k = { .ifindex = (__u32)ctx->to_ifindex, .err = ctx->err };
	__u64 *n = bpf_map_lookup_elem(&redirect_errors, &k);
	if (n) {
		*n += 1;
		return 0;
	}
	__u64 one = 1;
	bpf_map_update_elem(&redirect_errors, &k, &one, BPF_NOEXIST);
	return 0;
}
