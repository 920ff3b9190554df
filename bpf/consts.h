/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Sizes and flag bits shared by the datapath and the Go loader, which reads
 * them back from the generated bindings. Changing one is an ABI change. */
#ifndef LIMPET_CONSTS_H
#define LIMPET_CONSTS_H

#define MAX_VIRTUAL_SERVERS 1024
#define MAX_VIPS 1024
#define MAX_POOLS 1024
#define MAX_MEMBERS 4096
#define MAX_MEMBERS_PER_POOL 64 /* power of two: the index is masked */
#define MAX_PERSIST_TABLES 1024
#define MAX_VLAN_TAGS 2
#define MAX_IPV6_EXT_HDRS 4
#define MAX_POOL_TABLE 1048576 /* WRR schedule or Maglev table entries */
#define META_CHUNK_SIZE 4096
#define META_CHUNKS 256
#define MAX_REDIRECT_ERRORS 256 /* (target, errno) pairs counted */

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define ETH_ALEN 6
#define IF_MAC_SLOTS 256    /* power of two: an ifindex is masked to its slot */
#define MAX_IF_MAC_SPILL 64 /* interfaces whose slot another one holds */

#define IPPROTO_HOPOPTS 0
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_DSTOPTS 60

#define AF_INET 2
#define AF_INET6 10

/* Address families as stored in keys: 4 and 6 read better in dumps than AF_*. */
#define FAMILY_V4 4
#define FAMILY_V6 6

/* Virtual servers kept in a VIP's own vips entry, so a VIP packet finds
 * its virtual server with the one lookup that tells it from host traffic.
 * An address with more sets VIP_F_OVERFLOW: the rest are in virtual_servers. */
#define VIP_INLINE_SERVERS 8
enum vip_flag {
	VIP_F_OVERFLOW = 1 << 0,
};

/* member_vs entries: a (member address, port, protocol) per NAT virtual
 * server it serves, four per member on average. */
#define MAX_MEMBER_VS (MAX_MEMBERS * 4)
/* member_vs.flags. SHARED: the member's address and port serve several
 * virtual servers, so a reply cannot name its VIP: its connections keep a
 * reverse flow entry (FLOW_F_REVERSE) instead. */
enum member_vs_flag {
	MEMBER_VS_F_SHARED = 1 << 0,
};

/* Flag sets, enum values the loader reads, pools' algorithms, event types
 * and GC operations are enums rather than macros so that clang emits them
 * in the object's BTF and bpf2go binds them: the loader takes their values
 * from the generated code instead of spelling them again. */

/* vs_info.flags */
enum vs_flag {
	VS_F_DSR = 1 << 0,
	VS_F_PERSIST = 1 << 1,
	VS_F_SERVER_DOWN_NEVER = 1 << 2,
	/* Encapsulated DSR (encap.h); VS_F_DSR is set with either: the flow and
	 * its replies are DSR's, only the last step differs. */
	VS_F_ENCAP_IPIP = 1 << 3,
	VS_F_ENCAP_GUE = 1 << 4,
};

/* encap_config.flags: which outer source addresses are configured. */
enum encap_flag {
	ENCAP_F_SOURCE_V4 = 1 << 0,
	ENCAP_F_SOURCE_V6 = 1 << 1,
};
#define GUE_PORT_DEFAULT 6080 /* Katran's */
#define GUE_SPORT_MIN 0xc000 /* GUE source ports: the ephemeral range, 49152-65535 */
#define GUE_SPORT_SPAN 0x4000
#define ENCAP_TTL 64
#define ICMP_TTL 64
/* Bytes of the client's packet an ICMP too-big quotes: past RFC 792's
 * header + 8, within 576 (IPv4) and 1280 (IPv6) bytes in all, and within
 * what one bpf_csum_diff sums. */
#define ICMP_QUOTE_MAX 512

/* member_info.flags. UP: may keep persisted clients and open flows. New
 * clients are chosen only from the pool's eligible list, which the control
 * plane maintains (so a draining member can be UP but not eligible). */
enum member_flag {
	MEMBER_F_UP = 1 << 0,
};

/* pool_info.algorithm */
enum algorithm {
	ALGO_ROUND_ROBIN = 0,
	ALGO_WEIGHTED_ROUND_ROBIN = 1, /* round robin over a weighted schedule table */
	ALGO_LEAST_CONNECTION = 2,
	ALGO_WEIGHTED_LEAST_CONNECTION = 3,
	ALGO_IP_HASH = 4, /* Maglev table indexed by a hash of the client */
};
#define PICK_PROBES 4  /* further slots tried when a choice is down or full */

/* persist_key.table_id: the low bits index an outer map; this bit says the
 * table is a plain hash (purge when full off) rather than an LRU hash. */
#define TABLE_PLAIN_HASH (1u << 31)
#define TABLE_INDEX_MASK (MAX_PERSIST_TABLES - 1)
#define TABLE_NONE 0xffffffffu

/* flow_info.table packs a persist_key.table_id into 16 bits: the index,
 * and FLOW_TABLE_PLAIN for TABLE_PLAIN_HASH; FLOW_TABLE_NONE for TABLE_NONE. */
#define FLOW_TABLE_NONE 0xffffu
#define FLOW_TABLE_PLAIN 0x8000u

/* The top byte of flow_info.flags is the prefix length its persistence key's
 * client was masked with: the key is the flow's source, masked by it. */
#define FLOW_PREFIX_SHIFT 24
#define FLOW_FLAGS_MASK ((1u << FLOW_PREFIX_SHIFT) - 1)

/* flows4's value: struct flow4_info (structs.h). */
#define FLOW4_INFO_SIZE 48

/* A reply hop's ifindex is kept in 16 bits; a hop out of a larger one is
 * looked up in the FIB on every reply. */
#define FLOW_NH_MAX_IFINDEX 0xffffu

/* egress_macs: the source MAC of reply hops, per egress interface, at slot
 * ifindex % EGRESS_MAC_SLOTS. */
#define EGRESS_MAC_SLOTS 256

/* flow_info.flags, changed with atomics because the GC and other CPUs race. */
enum flow_flag {
	FLOW_F_COUNTED = 1u << 0, /* holds one live connection of its persistence entry */
	FLOW_F_FIN_CLIENT = 1u << 1,
	FLOW_F_FIN_SERVER = 1u << 2,
	FLOW_F_RST = 1u << 3,
	FLOW_F_REVERSE = 1u << 4, /* reply-direction entry of a NAT flow */
	FLOW_F_NAT = 1u << 5,
	FLOW_F_DSR = 1u << 6,
	FLOW_F_UDP = 1u << 7,
	FLOW_F_MEMBER_COUNTED = 1u << 8, /* holds one of its member's active connections */
	/* Forward: the member's address (flow_info.addr) is of the other family
	 * than the flow key's, a tunnel across families (ipip or gue, IPv6 in
	 * IPv4 or IPv4 in IPv6). Only readers of the table need it: the datapath
	 * tunnels by the member's own entry. */
	FLOW_F_TARGET_OTHER_FAMILY = 1u << 9,
};

/* persist_entry.conn_state packs a generation (high 32 bits) and the live
 * connection count (low 31 bits) so one atomic add changes both, and the GC can
 * tell from the generation whether any connection opened or closed while it
 * was counting. Bit 31 marks an entry that is being expired. */
#define CS_CONNS_MASK 0x7fffffffull
#define CS_DEAD (1ull << 31)
#define CS_GEN_ONE (1ull << 32)
#define CS_INC (CS_GEN_ONE + 1)
#define CS_DEC (CS_GEN_ONE - 1)

/* Reasons a packet left the fast path; the loader knows which ones drop.
 * REASON_NONE is "no reason": helpers return it when the packet goes on, so
 * a reason and a success share one return value without an offset. */
enum reason {
	REASON_NONE = 0,
	REASON_TRUNC_ETH,       /* drop */
	REASON_TRUNC_IP,        /* drop: short or inconsistent IP header */
	REASON_TRUNC_L4,        /* drop: VIP packet with a short TCP/UDP header */
	REASON_FRAGMENT,        /* drop: fragment for a VIP */
	REASON_TCP_FLAGS,       /* drop: no flags, SYN+FIN, SYN+RST */
	REASON_IPV6_EXT,        /* drop: VIP packet with an extension header we do not walk */
	REASON_NO_MEMBER,       /* drop: pool has no eligible member */
	REASON_SERVER_DOWN,     /* drop: persisted server down, policy never */
	REASON_TABLE_FULL,      /* drop or RST: plain-hash table full */
	REASON_TTL_EXPIRED,     /* pass: kernel answers with ICMP */
	REASON_FIB_NO_NEIGH,    /* pass: kernel resolves the neighbour */
	REASON_FIB_PASS,        /* pass: FIB said the kernel should handle it */
	REASON_FIB_DROP,        /* drop: blackhole, unreachable, prohibited */
	REASON_DSR_NO_NEIGH,    /* drop: DSR cannot fall back to the stack */
	REASON_VLAN_PASS,       /* pass: tagged packet forwarded by the stack */
	REASON_IPV4_OPTIONS,    /* counted only: forwarded with its options */
	REASON_IPV6_EXT_WALKED, /* counted only: forwarded past hop-by-hop etc. */
	REASON_NO_TABLE,        /* drop: VS names a persistence table that is not loaded */
	REASON_STRAY_TCP,       /* pass: FIN/RST for no flow and no entry */
	REASON_MEMBER_FULL,     /* drop: persisted member at its connection limit, policy never */
	REASON_EVENT_LOST,      /* counted only: the persistence event ring buffer was full */
	REASON_NEXTHOP_MISS,    /* counted only: member's next hop not in the live cache, FIB asked */
	REASON_NEXTHOP_MTU,     /* counted only: packet longer than the cached hop's MTU, FIB asked */
	REASON_ICMP_TO_CLIENT,  /* counted only: an ICMP error about a NAT'ed packet, sent to its client from the VIP */
	REASON_ICMP_TO_MEMBER,  /* counted only: an ICMP error about a reply, sent to its flow's member */
	REASON_ICMP_NO_FLOW,    /* pass: an ICMP error for a VIP or a NAT member's flow that matches no flow */
	REASON_ICMP_BAD_QUOTE,  /* pass: an ICMP error for a VIP whose quote is truncated or not TCP/UDP */
	REASON_ENCAP_TOO_BIG,   /* counted only: too long for its tunnel, answered with ICMP too-big */
	REASON_ENCAP_NO_SOURCE, /* drop: encapsulating VS, no settings.encap_source of the member's family */
	REASON_NOT_OUR_MAC,     /* pass: Ethernet destination not the receiving interface's MAC (flooded unicast, broadcast, multicast) */
	REASON_FLOW_TABLE_FULL, /* counted only: a new connection forwarded with no flow entry, its family's flow table full */
	REASON_MAX,
};

/* Next-hop cache (nexthop.h). member_nexthops holds two generations of
 * every member's next hop: slot member * NEXTHOP_GENERATIONS + gen % 2. The
 * daemon writes a new generation into the half nobody reads, then flips
 * nexthop_state.gen, so a packet never sees a half-written hop. */
#define NEXTHOP_GENERATIONS 2
#define NEXTHOP_SLOTS (MAX_MEMBERS * NEXTHOP_GENERATIONS)
#define NEXTHOP_GEN_NONE 0 /* never published: a zeroed slot is never used */

/* table_config flags */
enum table_flag {
	TABLE_F_MIRROR = 1u << 0, /* publish persistence events for HA mirroring */
};

/* persist_event.type */
enum event_type {
	EVENT_CREATED = 1,
	EVENT_MOVED = 2,
	EVENT_EXPIRED = 3,
};
#define EVENT_RING_BYTES (1 << 22)

/* GC operations, executed by limpet_gc through BPF_PROG_RUN. */
enum gc_op {
	GC_OP_FLOW_EXPIRE = 1,
	GC_OP_PERSIST_EXPIRE = 2,
	GC_OP_RECONCILE = 3,
	GC_OP_TOUCH = 4, /* restart an entry's countdown: L7 connections hold it this way */
	GC_OP_MEMBER_RECONCILE = 5,
};
#define GC_BATCH_MAX 48

enum gc_result {
	GC_RES_DONE = 1,
	GC_RES_SKIPPED = 2,
	GC_RES_NOT_FOUND = 3,
	GC_RES_BAD = 4,
};

/* Errnos the datapath tells apart (the kernel's uapi errno-base.h). */
#define EEXIST 17

/* A flow's last_seen_ns is rewritten at most this often: writing it on every
 * packet would bounce its cache line between CPUs for nothing, and idle
 * timeouts are seconds long. */
#define FLOW_TOUCH_INTERVAL_NS 250000000ull

/* Where the checksum sits in the L4 header. */
#define TCP_CSUM_OFF 16
#define UDP_CSUM_OFF 6

/* Masks that bound header offsets for the verifier: the L3 header starts in
 * the first 255 bytes (Ethernet plus two tags is 22), the L4 header in the
 * first 4095 (IPv4 options, IPv6 extension headers). */
#define L3_OFF_MASK 0xff
#define L4_OFF_MASK 0xfff

/* The RST limpet answers a rejected SYN with. */
#define IP_DF 0x4000
#define RST_TTL 64
#define TCP_DOFF_MIN_WORDS 5 /* a header without options, in 32-bit words */

/* murmur3's 32-bit finaliser (hash_addr). */
#define MURMUR3_C1 0x85ebca6bu
#define MURMUR3_C2 0xc2b2ae35u

#endif
