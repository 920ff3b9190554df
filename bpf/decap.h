/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The member-side decapsulator's constants, wire headers and counters
 * (bpf/decap.c). It stands apart from the XDP datapath's headers on
 * purpose: it runs on members, which load nothing else of limpet, and its
 * ABI (the counters the loader reads) changes on its own schedule. */
#ifndef LIMPET_DECAP_H
#define LIMPET_DECAP_H

#include <linux/types.h>

#define DECAP_ETH_HLEN 14
#define DECAP_ETH_P_IP 0x0800
#define DECAP_ETH_P_IPV6 0x86DD

#define DECAP_IPPROTO_IPIP 4  /* IPv4 in IPv4 or IPv6 */
#define DECAP_IPPROTO_UDP 17
#define DECAP_IPPROTO_IPV6 41 /* IPv6 in IPv4 or IPv6 */

#define DECAP_IP4_HLEN 20 /* without options */
#define DECAP_IP4_MAX_HLEN 60
#define DECAP_IP6_HLEN 40
#define DECAP_UDP_HLEN 8
#define DECAP_GUE_HLEN 4 /* variant 0 without optional fields */
#define DECAP_IP4_FRAG_MASK 0x3fff /* MF and the fragment offset */

/* The deepest header the decapsulator reads: Ethernet, an outer IPv4 header
 * with every option, UDP, GUE, an inner IPv6 header. What it pulls into the
 * linear area of a non-linear skb before parsing. */
#define DECAP_PULL_LEN (DECAP_ETH_HLEN + DECAP_IP4_MAX_HLEN + DECAP_UDP_HLEN + DECAP_GUE_HLEN + DECAP_IP6_HLEN)

/* GUE (draft-ietf-intarea-gue-09): the first two bits of the UDP payload
 * are the variant. Variant 0 is a 4-byte header
 *   | ver:2 | C:1 | hlen:5 | proto/ctype:8 | flags:16 |
 * followed by hlen 32-bit words of optional fields, then the inner packet.
 * Variant 1 is direct IP: the payload is the inner IPv4 (first nibble 0100)
 * or IPv6 (0110) header, which is what Katran sends. */
#define GUE_VARIANT_SHIFT 6
#define GUE_V0 0
#define GUE_V1 1
#define GUE_C_BIT 0x20     /* variant 0: a control message, not a data packet */
#define GUE_HLEN_MASK 0x1f /* variant 0: optional fields, in 32-bit words */
#define GUE_DEFAULT_PORT 6080

/* ECN codepoints (RFC 3168), the low two bits of the TOS / traffic class. */
#define DECAP_ECN_MASK 0x03
#define DECAP_ECN_NOT_ECT 0x00
#define DECAP_ECN_CE 0x03

/* Verdicts of a tc classifier in direct-action mode. */
#define DECAP_TC_ACT_OK 0
#define DECAP_TC_ACT_SHOT 2

/* bpf_skb_adjust_room flags for a decapsulation that changes the L3
 * protocol (Linux 6.3). The vendored uapi header predates them. */
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif

struct decap_eth {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct decap_ip4 {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 proto;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

struct decap_ip6 {
	__be32 ver_tc_flow; /* version:4, traffic class:8, flow label:20 */
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct decap_udp {
	__be16 sport;
	__be16 dport;
	__be16 len;
	__sum16 check;
};

struct decap_gue {
	__u8 ver_c_hlen;
	__u8 proto;
	__be16 flags;
};

/* Counter indexes. Everything that is not a tunnel packet is PASS; a tunnel
 * packet is either decapsulated (one counter per form) or passed to the
 * stack untouched under the reason it was not (or dropped, for ECN_DROP). */
enum decap_stat {
	DECAP_STAT_PASS = 0,     /* not a tunnel packet for this decapsulator */
	DECAP_STAT_IPIP_4IN4,    /* IPPROTO_IPIP in IPv4 */
	DECAP_STAT_IPIP_6IN4,    /* IPPROTO_IPV6 in IPv4 */
	DECAP_STAT_IPIP_4IN6,    /* IPPROTO_IPIP in IPv6 */
	DECAP_STAT_IPIP_6IN6,    /* IPPROTO_IPV6 in IPv6 */
	DECAP_STAT_GUE_4IN4,     /* GUE over IPv4 carrying IPv4 */
	DECAP_STAT_GUE_6IN4,
	DECAP_STAT_GUE_4IN6,
	DECAP_STAT_GUE_6IN6,
	DECAP_STAT_TRUNCATED,    /* a header, or the inner packet, is cut short */
	DECAP_STAT_BAD_OUTER,    /* outer IPv4 header: bad IHL, length or checksum */
	DECAP_STAT_FRAGMENT,     /* outer IPv4 fragment: reassembly is the stack's */
	DECAP_STAT_BAD_INNER,    /* inner header not of the announced family, or bad IHL */
	DECAP_STAT_GUE_VERSION,  /* GUE variant 2 or 3, or a variant 0 control message */
	DECAP_STAT_GUE_PROTO,    /* GUE carrying something else than IPv4 or IPv6 */
	DECAP_STAT_GUE_OPTIONS,  /* GUE variant 0 with optional fields or flags */
	DECAP_STAT_ECN_DROP,     /* outer CE over a not-ECT inner packet: dropped (RFC 6040) */
	DECAP_STAT_ADJUST_FAILED, /* bpf_skb_adjust_room refused the packet */
	DECAP_STAT_OTHER_DST,    /* a tunnel packet to an address not in decap_dst (when listed) */
	DECAP_STAT_MAX,
};

#define DECAP_MAX_DSTS 64

struct decap_config {
	__be16 gue_port;  /* network byte order; 0: GUE off */
	__u8 only_listed; /* 1: decapsulate only packets to an address of decap_dst */
	__u8 pad[5];
};

/* An outer destination address the decapsulator serves. */
struct decap_dst_key {
	__u8 family; /* 4 or 6 */
	__u8 pad[3];
	__u8 addr[16]; /* an IPv4 address in the first 4 bytes, the rest zero */
};

struct decap_count {
	__u64 packets;
	__u64 bytes;
};

#endif
