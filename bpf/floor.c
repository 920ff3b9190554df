/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Benchmark programs. None of them is part of limpet's datapath; the
 * benchmark harness (test/bench) loads them through loader/floor.go.
 *
 *   floor_tx        the floor of the datapath micro benchmarks: the same
 *                   Ethernet/VLAN/IP/L4 parsing as limpet_xdp, then XDP_TX.
 *   floor_drive     BPF_PROG_RUN driver: restores the packet from a template
 *                   (BPF_PROG_RUN reuses one buffer, and the datapath rewrites
 *                   it, or grows its head to encapsulate it), varies its client
 *                   address and port, then tail-calls the program under test
 *                   (limpet_xdp or floor_tx).
 *   floor_gen       packet generator for BPF_F_TEST_XDP_LIVE_FRAMES: the same
 *                   restore-and-vary, then XDP_TX out of the ingress device.
 *   floor_redirect  the end-to-end floor: rewrite MACs, bpf_redirect to the
 *                   next target in turn. No parsing, no state.
 *   floor_count     what members run: count the packet, XDP_DROP.
 */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "structs.h"
#include "parse.h"
#include "csum.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SWEEP_TMPL_MAX 128
#define SWEEP_F_L4_CSUM (1 << 0) /* the template carries a TCP/UDP checksum to update */
#define SWEEP_F_UDP (1 << 1)     /* an updated UDP checksum of 0 is sent as 0xffff */
#define REDIRECT_MAX_TARGETS 8
#define DRIVE_HEAD_GROWTH_MAX 256 /* XDP_PACKET_HEADROOM: no program grows more */

/* One packet template and how to vary it. Packet i of a run (counting from
 * start) gets client index i % clients added to the 32-bit address word at
 * addr_off, and port index (i / clients) % ports added to the port at
 * port_off, with the checksums updated from the template's. */
struct sweep_cfg {
	__u8 tmpl[SWEEP_TMPL_MAX];
	__u32 len; /* bytes of tmpl copied over the frame: a multiple of 8 */
	__u32 clients;
	__u32 ports;
	__u32 start;
	__u16 addr_off;
	__u16 port_off;
	__u16 ip_csum_off; /* 0: no IPv4 header checksum */
	__u16 l4_csum_off;
	__u32 flags; /* SWEEP_F_* */
	__u32 pad;
	__u64 seq; /* packets produced so far; the programs count */
};

struct redirect_target {
	__u32 ifindex;
	__u8 smac[ETH_ALEN];
	__u8 dmac[ETH_ALEN];
};

struct redirect_cfg {
	__u32 n;
	__u32 next;
	struct redirect_target t[REDIRECT_MAX_TARGETS];
};

struct pkt_count {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sweep_cfg);
} sweep SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} drive_target SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct redirect_cfg);
} redirect SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pkt_count);
} counts SEC(".maps");

/* Writes the template over the frame and applies packet seq's variation.
 * Returns 0, or -1 when the frame or the configuration does not fit. */
static __always_inline int sweep_apply(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct sweep_cfg *c = bpf_map_lookup_elem(&sweep, &zero);

	if (!c)
		return -1;
	__u32 len = c->len;
	if (len > SWEEP_TMPL_MAX)
		return -1;
#pragma unroll
	for (int i = 0; i < SWEEP_TMPL_MAX / 8; i++) {
		if ((__u32)(i + 1) * 8 > len)
			break;
		if (data + (i + 1) * 8 > data_end)
			return -1;
		*(__u64 *)(data + i * 8) = *(__u64 *)(c->tmpl + i * 8);
	}

	__u64 seq = c->seq;
	c->seq = seq + 1;
	__u32 idx = c->start + (__u32)seq;
	__u32 nc = c->clients ? c->clients : 1;
	__u32 np = c->ports ? c->ports : 1;
	__u32 ci = idx % nc;
	__u32 pi = (idx / nc) % np;
	__u32 flags = c->flags;

	if (ci) {
		__u32 off = c->addr_off & 0x7f;
		__be32 *a = data + off;
		if ((void *)(a + 1) > data_end)
			return -1;
		__be32 from = *a;
		__be32 to = bpf_htonl(bpf_ntohl(from) + ci);
		*a = to;
		if (c->ip_csum_off) {
			__sum16 *ipc = data + (c->ip_csum_off & 0x7f);
			if ((void *)(ipc + 1) > data_end)
				return -1;
			csum_replace4(ipc, from, to);
		}
		if (flags & SWEEP_F_L4_CSUM) {
			__sum16 *l4c = data + (c->l4_csum_off & 0x7f);
			if ((void *)(l4c + 1) > data_end)
				return -1;
			csum_replace4(l4c, from, to);
		}
	}
	if (pi) {
		__be16 *p = data + (c->port_off & 0x7f);
		if ((void *)(p + 1) > data_end)
			return -1;
		__be16 from = *p;
		__be16 to = bpf_htons(bpf_ntohs(from) + pi);
		*p = to;
		if (flags & SWEEP_F_L4_CSUM) {
			__sum16 *l4c = data + (c->l4_csum_off & 0x7f);
			if ((void *)(l4c + 1) > data_end)
				return -1;
			csum_replace2(l4c, from, to);
		}
	}
	if ((flags & (SWEEP_F_L4_CSUM | SWEEP_F_UDP)) == (SWEEP_F_L4_CSUM | SWEEP_F_UDP)) {
		__sum16 *l4c = data + (c->l4_csum_off & 0x7f);
		if ((void *)(l4c + 1) > data_end)
			return -1;
		if (*l4c == 0)
			*l4c = 0xffff;
	}
	return 0;
}

SEC("xdp")
int floor_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct cursor c = { .pos = data, .end = data_end };
	struct packet p;
	__u16 eth_proto;
	int r;

	__builtin_memset(&p, 0, sizeof(p));
	p.pkt_len = data_end - data;
	if (parse_eth(&c, &p, &eth_proto))
		return XDP_DROP;
	if (eth_proto == bpf_htons(ETH_P_IP))
		r = parse_ipv4(&c, data, &p);
	else if (eth_proto == bpf_htons(ETH_P_IPV6))
		r = parse_ipv6(&c, data, &p);
	else
		return XDP_PASS;
	if (r || p.is_fragment)
		return XDP_DROP;
	if (parse_l4(&c, &p))
		return XDP_DROP;
	return XDP_TX;
}

/* Undoes what the previous repeat's program grew the head by (encapsulation,
 * bpf_xdp_adjust_head): BPF_PROG_RUN keeps the moved start from one repeat
 * to the next, so the frame is then longer than the template by just that,
 * and the template must start where it started. */
static __always_inline int drive_restore_head(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct sweep_cfg *c = bpf_map_lookup_elem(&sweep, &zero);

	if (!c)
		return -1;
	long grown = (long)ctx->data_end - (long)ctx->data - (long)c->len;
	if (grown <= 0)
		return 0;
	if (grown > DRIVE_HEAD_GROWTH_MAX)
		return -1;
	return bpf_xdp_adjust_head(ctx, (int)grown) ? -1 : 0;
}

SEC("xdp")
int floor_drive(struct xdp_md *ctx)
{
	if (drive_restore_head(ctx) || sweep_apply(ctx))
		return XDP_ABORTED;
	bpf_tail_call(ctx, &drive_target, 0);
	return XDP_ABORTED; /* no program under test */
}

SEC("xdp")
int floor_gen(struct xdp_md *ctx)
{
	if (sweep_apply(ctx))
		return XDP_DROP;
	return XDP_TX;
}

SEC("xdp")
int floor_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct redirect_cfg *c = bpf_map_lookup_elem(&redirect, &zero);

	if (!c)
		return XDP_DROP;
	__u32 n = c->n;
	if (n == 0 || n > REDIRECT_MAX_TARGETS)
		return XDP_DROP;
	__u32 i = c->next++ % n;
	barrier_var(i); /* keep the mask below, which the verifier needs */
	struct redirect_target *t = &c->t[i & (REDIRECT_MAX_TARGETS - 1)];
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, t->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, t->smac, ETH_ALEN);
	return bpf_redirect(t->ifindex, 0);
}

SEC("xdp")
int floor_count(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct pkt_count *c = bpf_map_lookup_elem(&counts, &zero);

	if (c) {
		c->packets++;
		c->bytes += ctx->data_end - ctx->data;
	}
	return XDP_DROP;
}
