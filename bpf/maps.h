/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef LIMPET_MAPS_H
#define LIMPET_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "structs.h"

/* Every map here is state the datapath keeps across restarts and upgrades:
 * each is pinned by name, under the pin directory the loader points
 * MapOptions.PinPath at. */

/* Addresses that are VIPs, with their virtual servers: one lookup tells
 * host traffic from ours and finds the virtual server. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_VIPS);
	__type(key, struct addr_key);
	__type(value, struct vip_info);
} vips SEC(".maps");

/* NAT members by address, port and protocol, with the virtual server each
 * serves there: a reply that misses here is host traffic, one that hits finds
 * its connection's forward flow. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_MEMBER_VS);
	__type(key, struct member_vs_key);
	__type(value, struct member_vs_info);
} member_vs SEC(".maps");

/* Every virtual server; the datapath reads it only for a VIP with more than
 * VIP_INLINE_SERVERS of them (VIP_F_OVERFLOW). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_VIRTUAL_SERVERS);
	__type(key, struct vip_key);
	__type(value, struct vs_info);
} virtual_servers SEC(".maps");

/* A hash, not an array: an update replaces the whole value atomically, so a
 * packet never sees a half-written eligible list. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_POOLS);
	__type(key, __u32);
	__type(value, struct pool_info);
} pools SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_MEMBERS);
	__type(key, __u32);
	__type(value, struct member_info);
} members SEC(".maps");

/* Live connections per member, packed like persist_entry.conn_state so the
 * sweeper can correct counts that flows lost to LRU eviction left behind. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_MEMBERS);
	__type(key, __u32);
	__type(value, __u64);
} member_conns SEC(".maps");

/* Per pool lookup table (a weighted round-robin schedule or a Maglev
 * table) of member ids. Replacing a pool's inner map is one atomic update. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_POOLS);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(max_entries, 1);
		__uint(map_flags, BPF_F_INNER_MAP);
		__uint(key_size, sizeof(__u32));
		__uint(value_size, sizeof(__u32));
	});
} pool_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_MEMBERS * 2);
	__type(key, struct member_addr_key);
	__type(value, __u32);
} member_addrs SEC(".maps");

/* The flow table, one map per family so that an IPv4 flow's element is
 * not sized for IPv6: 16 + 48 bytes against 40 + 64. The loader sets
 * max_entries from the config before it creates them. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 65536);
	__type(key, struct flow4_key);
	__type(value, struct flow4_info);
} flows4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_info);
} flows6 SEC(".maps");

/* The source MAC of the reply hops stored in flows (struct flow_nexthop),
 * per egress interface: one word, the MAC in its first six bytes and the
 * ifindex in the last two, written whole by the datapath when the FIB
 * names it, so a reader never sees one interface's index with another's
 * MAC. A slot holding another interface sends the reply to the FIB. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, EGRESS_MAC_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} egress_macs SEC(".maps");

/* Persistence tables: one inner map per table, sized by its profile. The
 * loader creates the inner maps; these templates only fix their shape. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_PERSIST_TABLES);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_LRU_HASH);
		__uint(max_entries, 1);
		__uint(key_size, sizeof(struct persist_key));
		__uint(value_size, sizeof(struct persist_entry));
	});
} persist_lru_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_PERSIST_TABLES);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(max_entries, 1);
		__uint(key_size, sizeof(struct persist_key));
		__uint(value_size, sizeof(struct persist_entry));
	});
} persist_hash_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} runtime_settings SEC(".maps");

/* The attached interfaces' own MACs (struct if_mac): an array indexed by
 * the masked ifindex, so the check costs an inlined lookup, not a hash. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, IF_MAC_SLOTS);
	__type(key, __u32);
	__type(value, struct if_mac);
} if_macs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_IF_MAC_SPILL);
	__type(key, __u32); /* ifindex */
	__type(value, struct if_mac);
} if_macs_spill SEC(".maps");

/* Its own map, so that the daemon's refresh never races a write of
 * runtime_settings: each has one writer. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct boot_offset);
} clock_sync SEC(".maps");

/* Per persistence table flags (TABLE_F_*), by table index. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_PERSIST_TABLES);
	__type(key, __u32);
	__type(value, __u32);
} table_config SEC(".maps");

/* Persistence events of mirrored tables, read by the daemon. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, EVENT_RING_BYTES);
} persist_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_VIRTUAL_SERVERS);
	__type(key, __u32);
	__type(value, struct vs_stats);
} vs_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_MEMBERS);
	__type(key, __u32);
	__type(value, struct member_stats);
} member_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_PERSIST_TABLES);
	__type(key, __u32);
	__type(value, struct table_stats);
} table_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, REASON_MAX);
	__type(key, __u32);
	__type(value, __u64);
} reason_counters SEC(".maps");

/* Per-CPU room for the datapath's larger temporaries: BPF programs get
 * 512 bytes of stack, and everything here is inlined into one frame. */
struct scratch {
	struct flow_key key;     /* the packet's flow */
	struct flow_key reverse; /* its NAT reply flow */
	struct flow_info flow;
	struct persist_entry entry;
	struct bpf_fib_lookup fib;
	__u8 quote[ICMP_QUOTE_MAX + 4]; /* an ICMP too-big's quote, a word to spare (encap.h) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/* The applied configuration's names and ids, as JSON in chunks, so a CLI with
 * no daemon running can label what it dumps, and a restarted daemon keeps ids. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, META_CHUNKS);
	__type(key, __u32);
	__type(value, struct meta_chunk);
} meta SEC(".maps");

/* The id of limpet_xdp, written by the loader after each load: the
 * redirect error tracepoint is host-wide, and counts only this program's. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} redirect_watch SEC(".maps");

/* Redirects of limpet_xdp that the kernel refused, per CPU: a target that
 * cannot take XDP frames (a veth whose peer has neither an XDP program nor
 * GRO), is down, or too small for the frame. The packets were counted as
 * forwarded; these say they were not. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, MAX_REDIRECT_ERRORS);
	__type(key, struct redirect_err_key);
	__type(value, __u64);
} redirect_errors SEC(".maps");

/* The next-hop cache (nexthop.h), written by the daemon from netlink
 * neighbour, route and link events. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, NEXTHOP_SLOTS);
	__type(key, __u32);
	__type(value, struct nexthop);
} member_nexthops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nexthop_state);
} nexthop_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct encap_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} encap_settings SEC(".maps");

#endif
