/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map keys and values. Every struct is padded explicitly and every key is
 * zeroed before it is filled: padding bytes are part of a hash key. */
#ifndef LIMPET_STRUCTS_H
#define LIMPET_STRUCTS_H

#include <linux/types.h>
#include "consts.h"

/* An IPv4 address sits in the first word; the rest is zero. */
union addr {
	__u8 b[16];
	__be32 v4;
	__be32 v6[4];
};

struct addr_key {
	union addr addr;
	__u8 family;
	__u8 pad[3];
};

struct vip_key {
	union addr addr;
	__be16 port;
	__u8 proto;
	__u8 family;
};

struct vs_info {
	__u32 vs_id;
	__u32 pool_id;
	__u32 table_id; /* TABLE_NONE when the VS has no persistence */
	__u8 flags;     /* VS_F_* */
	__u8 v4_prefix;
	__u8 v6_prefix;
	__u8 pad;
	__u64 timeout_ns; /* persistence entry timeout */
};

/* One virtual server of a VIP, in its vips entry. */
struct vip_server {
	__be16 port;
	__u8 proto;
	__u8 pad;
	__u32 pad2;
	struct vs_info vs;
};

/* A VIP address: its virtual servers (the first VIP_INLINE_SERVERS of
 * them), so that host traffic and VIP traffic are told apart, and a VIP
 * packet's virtual server found, with one hash lookup. */
struct vip_info {
	__u8 used;  /* entries of servers in use */
	__u8 flags; /* VIP_F_* */
	__u8 pad[6];
	struct vip_server servers[VIP_INLINE_SERVERS];
};

struct pool_info {
	__u32 n_eligible; /* members that may take new clients */
	__u32 algorithm;  /* ALGO_* */
	__u32 rr_next;
	__u32 table_size; /* entries of the pool's table in pool_tables */
	__u32 eligible[MAX_MEMBERS_PER_POOL]; /* member ids */
	__u16 weight[MAX_MEMBERS_PER_POOL];   /* of the eligible members, same order */
};

struct member_info {
	union addr addr;
	__be16 port;
	__u8 family;
	__u8 flags; /* MEMBER_F_* */
	__u32 pool_id;
	__u32 max_conns; /* 0: no limit */
	__u32 pad;
};

/* A NAT member as its replies name it: address, port and protocol. */
struct member_vs_key {
	union addr addr;
	__be16 port;
	__u8 proto;
	__u8 family;
};

/* The virtual server a NAT member serves on one address and port: its
 * replies find their connection from it, with no reverse flow entry. */
struct member_vs_info {
	union addr vip;
	__be16 vip_port;
	__u8 flags; /* MEMBER_VS_F_* */
	__u8 pad;
	__u32 vs_id;
};

/* port 0 is the fallback key: "any member of this pool with this address". */
struct member_addr_key {
	__u32 pool_id;
	__u8 family;
	__u8 pad;
	__be16 port;
	union addr addr;
};

/* A flow's 5-tuple as the datapath handles it, for both families, and the
 * key of flows6 (family FAMILY_V6). An IPv4 flow is kept in flows4 under
 * the narrower flow4_key (flow.h converts). */
struct flow_key {
	union addr src;
	union addr dst;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

/* The key of flows4: an IPv4 5-tuple in 16 bytes. */
struct flow4_key {
	__be32 src;
	__be32 dst;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct persist_key {
	__u32 table_id;
	__u8 family;
	__u8 pad[3];
	union addr client; /* masked by the profile's prefix */
};

/* A next hop as the daemon resolved it from the kernel's routes and
 * neighbours: what bpf_fib_lookup would have answered. */
struct nexthop {
	__u8 dmac[ETH_ALEN];
	__u8 smac[ETH_ALEN];
	__u32 ifindex;
	__u32 mtu; /* the route's MTU: a longer IP packet asks the FIB */
	__u32 gen; /* the generation this slot was written for */
};

struct nexthop_state {
	__u32 gen; /* the live generation; NEXTHOP_GEN_NONE: no cache */
	__u32 pad;
	__u64 expires_ns; /* datapath clock: the daemon's lease, renewed while it runs */
};

/* The next hop of a NAT flow's replies, stored by its first reply's FIB
 * lookup and good while the cache's generation has not moved. The source
 * MAC is the egress interface's, kept once per interface in egress_macs,
 * not in every flow. */
struct flow_nexthop {
	__u32 gen;
	__u8 dmac[ETH_ALEN];
	__u16 ifindex;  /* a hop out of a larger ifindex than FLOW_NH_MAX_IFINDEX is not kept */
	__u16 fit_len;  /* the longest IP packet the FIB has let through this hop */
	__u16 pad;
};

/* A flow's state: the value of flows6, and what the datapath builds a new
 * flow in. flows4's value, struct flow4_info, is its first
 * FLOW4_INFO_SIZE bytes: the same fields at the same offsets, with an IPv4
 * address in the place of addr. Code that serves both tables reads every
 * field but addr through a struct flow_info pointer; flow.h's lookup copies
 * addr out per family (the verifier holds a flows4 value to its 48 bytes). */
struct flow_info {
	__u64 last_seen_ns;
	__u64 created_ns;
	__u32 flags;      /* FLOW_F_*, atomic; the top byte: FLOW_PREFIX_* */
	__u16 vs_id;      /* < MAX_VIRTUAL_SERVERS */
	__u16 member_id;  /* < MAX_MEMBERS */
	__u16 table;      /* FLOW_TABLE_*: the persistence entry's table, packed */
	__be16 port;      /* forward: member port; reverse: VIP port */
	struct flow_nexthop reply_nh; /* NAT forward entries: where their replies go */
	union addr addr;  /* forward: member; reverse: VIP */
	__u32 pad;
};

struct flow4_info {
	__u64 last_seen_ns;
	__u64 created_ns;
	__u32 flags;
	__u16 vs_id;
	__u16 member_id;
	__u16 table;
	__be16 port;
	struct flow_nexthop reply_nh;
	__be32 addr; /* an IPv4 member or VIP; a tunnel to an IPv6 member keeps none (FLOW_F_TARGET_OTHER_FAMILY) */
};

_Static_assert(sizeof(struct flow4_key) == 16, "flow4_key is 16 bytes");
_Static_assert(sizeof(struct flow4_info) == FLOW4_INFO_SIZE, "flow4_info is flows4's value");
_Static_assert(sizeof(struct flow_info) == 64, "flow_info fills a cache line");
_Static_assert(__builtin_offsetof(struct flow_info, addr) == __builtin_offsetof(struct flow4_info, addr),
	       "flow4_info is flow_info's prefix");
_Static_assert(__builtin_offsetof(struct flow_info, reply_nh) == __builtin_offsetof(struct flow4_info, reply_nh),
	       "flow4_info is flow_info's prefix");

struct persist_entry {
	union addr server;
	__be16 server_port;
	__u8 family;
	__u8 pad;
	__u32 vs_id;     /* virtual server that created or last moved it */
	__u32 member_id; /* member of that virtual server's pool */
	__u32 pad2;
	__u64 conn_state; /* CS_*: generation and live connections, atomic */
	__u64 created_ns;
	__u64 last_seen_ns; /* last connection opened or closed: the countdown base */
};

/* A change of a mirrored persistence entry, for the HA peer. */
struct persist_event {
	__u8 type; /* EVENT_* */
	__u8 family;
	__be16 server_port;
	__u32 table_id;
	union addr client;
	union addr server;
	__u64 time_ns; /* datapath clock */
};

/* The node's encapsulation settings (settings.encap_source_v4/v6, the GUE
 * port), one entry, rewritten by the loader with the rest of the state. */
struct encap_config {
	union addr source_v4;
	union addr source_v6;
	__be16 gue_port;
	__u8 flags; /* ENCAP_F_* */
	__u8 pad;
	__u32 pad2;
};

struct settings {
	__u64 clock_offset_ns; /* added to the boot clock; lets tests move time */
};

/* An interface's own MAC, which the loader learns at attach and follows:
 * in if_macs at slot ifindex % IF_MAC_SLOTS, or in if_macs_spill when that
 * slot holds another interface's. ifindex 0: an empty slot. */
struct if_mac {
	__u32 ifindex;
	__u8 mac[ETH_ALEN];
	__u8 pad[2];
};

/* CLOCK_BOOTTIME minus CLOCK_MONOTONIC, kept by the daemon (it changes only
 * when the machine resumes from suspend): the datapath reads the cheap
 * coarse monotonic clock and adds it to stay on the boot clock. */
struct boot_offset {
	__u64 boot_minus_mono_ns;
};

struct vs_stats {
	__u64 packets;
	__u64 bytes;
	__u64 reply_packets;
	__u64 reply_bytes;
	__u64 new_flows;
	__u64 persist_hits;
	__u64 persist_misses;
	__u64 persist_moved;
	__u64 rejects;
	__u64 server_down_drops;
	__u64 no_member_drops;
};

struct member_stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
	/* The member's next-hop cache lookups (nexthop.h) while a daemon keeps
	 * the cache: hits, misses (no hop in the generation), and hops too
	 * short for the packet (the FIB then decides). */
	__u64 nexthop_hits;
	__u64 nexthop_misses;
	__u64 nexthop_mtu;
};

struct table_stats {
	__u64 inserts;
	__u64 hits;
	__u64 misses;
	__u64 rejects;
	__u64 expired;
};

struct meta_chunk {
	__u8 data[META_CHUNK_SIZE];
};

struct gc_item {
	__u32 op;     /* GC_OP_* */
	__u32 result; /* GC_RES_*, written by limpet_gc */
	__u64 arg;    /* idle limit, timeout or expected conn_state */
	__u64 arg2;   /* new connection count for GC_OP_RECONCILE */
	union {
		struct flow_key flow;
		struct persist_key persist;
	};
};

struct gc_batch {
	__u32 count;
	__u32 pad;
	__u64 now_ns; /* written by limpet_gc: the datapath clock */
	struct gc_item items[GC_BATCH_MAX];
};

/* The record of the xdp:xdp_redirect_err tracepoint, after its 8-byte
 * common header (events/xdp/xdp_redirect_err/format in tracefs). */
struct redirect_err_ctx {
	__u64 common;
	__s32 prog_id; /* the XDP program that redirected */
	__u32 act;
	__s32 ifindex;    /* where the frame came in */
	__s32 err;        /* -errno */
	__s32 to_ifindex; /* where it was to go */
	__u32 map_id;
	__s32 map_index;
};

/* A failed redirect of limpet's program, by target and error. */
struct redirect_err_key {
	__u32 ifindex; /* the target, in the namespace of limpet's interfaces */
	__s32 err;     /* -errno */
};

#endif
