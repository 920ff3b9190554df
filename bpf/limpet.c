/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* limpet's XDP datapath: L4 load balancing with source-IP persistence.
 *
 * Per packet: VIP check, flow table, persistence table, pool choice, then NAT
 * or DSR forwarding via the FIB. Anything that is not ours passes untouched.
 * The second program, limpet_gc, is never attached: the daemon runs it through
 * BPF_PROG_RUN so that expiring flows and entries uses the same atomics as the
 * datapath instead of racing it from userspace. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "structs.h"
#include "maps.h"
#include "parse.h"
#include "csum.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Types the loader needs bindings for but no map mentions; referencing them
 * here makes clang emit their BTF. */
const struct gc_batch *btf_anchor_gc_batch __attribute__((unused));
const enum reason *btf_anchor_reason __attribute__((unused));
const struct persist_entry *btf_anchor_persist_entry __attribute__((unused));
const struct persist_event *btf_anchor_persist_event __attribute__((unused));

/* Set at load time. A router decrements TTL; a test harness may not want to. */
const volatile __u8 cfg_decrement_ttl = 1;

#define E2BIG 7
#define EEXIST 17

#define READ_ONCE_U64(x) (*(volatile __u64 *)&(x))

/* The one clock of the datapath. Userspace reads CLOCK_BOOTTIME plus the same
 * offset, so tests can move time forward without sleeping. */
static __always_inline __u64 now_ns(void)
{
	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&runtime_settings, &zero);
	__u64 t = bpf_ktime_get_boot_ns();

	return s ? t + s->clock_offset_ns : t;
}

static __always_inline struct scratch *scratch_area(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&scratch, &zero);
}

static __always_inline void count_reason(__u32 reason)
{
	__u64 *v = bpf_map_lookup_elem(&reason_counters, &reason);

	if (v)
		*v += 1;
}

static __always_inline int verdict(__u32 reason, int action)
{
	count_reason(reason);
	return action;
}

static __always_inline struct table_stats *table_stats_of(__u32 table_id)
{
	__u32 idx = table_id & TABLE_INDEX_MASK;

	return bpf_map_lookup_elem(&table_counters, &idx);
}

static __always_inline void *persist_table(__u32 table_id)
{
	__u32 idx = table_id & TABLE_INDEX_MASK;

	if (table_id & TABLE_PLAIN_HASH)
		return bpf_map_lookup_elem(&persist_hash_tables, &idx);
	return bpf_map_lookup_elem(&persist_lru_tables, &idx);
}

static __always_inline void mask_addr(union addr *a, __u8 family, __u8 prefix)
{
	if (family == FAMILY_V4) {
		if (prefix < 32)
			a->v4 &= bpf_htonl(prefix ? ~0u << (32 - prefix) : 0);
		return;
	}
#pragma unroll
	for (int i = 0; i < 4; i++) {
		int bits = (int)prefix - i * 32;
		if (bits >= 32)
			continue;
		a->v6[i] &= bpf_htonl(bits > 0 ? ~0u << (32 - bits) : 0);
	}
}

/* Publishes a change of a mirrored table's entry. A full ring buffer loses
 * the event, counted, and never holds up the packet. */
static __always_inline void persist_event(__u8 type, const struct persist_key *key, const union addr *server,
					  __be16 server_port, __u64 now)
{
	__u32 idx = key->table_id & TABLE_INDEX_MASK;
	__u32 *flags = bpf_map_lookup_elem(&table_config, &idx);

	if (!flags || !(*flags & TABLE_F_MIRROR))
		return;
	struct persist_event *ev = bpf_ringbuf_reserve(&persist_events, sizeof(*ev), 0);
	if (!ev) {
		count_reason(REASON_EVENT_LOST);
		return;
	}
	ev->type = type;
	ev->family = key->family;
	ev->server_port = server_port;
	ev->table_id = key->table_id;
	ev->client = key->client;
	ev->server = *server;
	ev->time_ns = now;
	bpf_ringbuf_submit(ev, 0);
}

/* Drops one live connection of an entry. A bounded CAS loop instead of a
 * plain atomic add, so a count the GC has just corrected never goes below 0. */
static __always_inline void persist_release(const struct persist_key *key, __u64 now)
{
	if (key->table_id == TABLE_NONE)
		return;
	void *table = persist_table(key->table_id);
	if (!table)
		return;
	struct persist_entry *e = bpf_map_lookup_elem(table, key);
	if (!e)
		return;
	/* The countdown base is written before the count drops, so nobody sees
	 * zero connections next to a stale timestamp. */
	e->last_seen_ns = now;
#pragma unroll
	for (int i = 0; i < 3; i++) {
		__u64 cs = READ_ONCE_U64(e->conn_state);
		if ((cs & CS_CONNS_MASK) == 0)
			break;
		if (__sync_val_compare_and_swap(&e->conn_state, cs, cs + CS_DEC) == cs)
			break;
	}
}

static __always_inline __u32 member_conns_of(__u32 id)
{
	__u64 *cs = bpf_map_lookup_elem(&member_conns, &id);

	return cs ? (__u32)(READ_ONCE_U64(*cs) & CS_CONNS_MASK) : 0;
}

static __always_inline void member_acquire(__u32 id)
{
	__u64 *cs = bpf_map_lookup_elem(&member_conns, &id);

	if (cs)
		__sync_fetch_and_add(cs, CS_INC);
}

static __always_inline void member_release(__u32 id)
{
	__u64 *cs = bpf_map_lookup_elem(&member_conns, &id);

	if (!cs)
		return;
#pragma unroll
	for (int i = 0; i < 3; i++) {
		__u64 old = READ_ONCE_U64(*cs);
		if ((old & CS_CONNS_MASK) == 0)
			break;
		if (__sync_val_compare_and_swap(cs, old, old + CS_DEC) == old)
			break;
	}
}

/* Ends a flow's hold on its persistence entry and on its member's active
 * connection count, exactly once, whoever (FIN, RST, GC) gets there first. */
static __always_inline void flow_release(struct flow_info *f, __u64 now)
{
	__u32 old = __sync_fetch_and_and(&f->flags, ~(FLOW_F_COUNTED | FLOW_F_MEMBER_COUNTED));

	if (old & FLOW_F_COUNTED)
		persist_release(&f->pkey, now);
	if (old & FLOW_F_MEMBER_COUNTED)
		member_release(f->member_id);
}

static __always_inline struct member_info *member_get(__u32 id)
{
	return bpf_map_lookup_elem(&members, &id);
}

/* A member may take a new client when it is up and below its limit. */
static __always_inline int member_full(__u32 id, const struct member_info *m)
{
	return m->max_conns && member_conns_of(id) >= m->max_conns;
}

static __always_inline struct member_info *usable(__u32 id)
{
	struct member_info *m = member_get(id);

	if (!m || !(m->flags & MEMBER_F_UP) || member_full(id, m))
		return NULL;
	return m;
}

static __always_inline __u32 hash_addr(const union addr *a)
{
	/* murmur3's finaliser over the xor of the words: cheap, and every
	 * bit of the address moves the slot. */
	__u32 h = a->v6[0] ^ a->v6[1] ^ a->v6[2] ^ a->v6[3];

	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* Picks from the pool's table (a weighted schedule or a Maglev table),
 * starting at slot and moving on past members that are down or full. */
static __always_inline int table_pick(__u32 pool_id, __u32 size, __u32 slot)
{
	void *table = bpf_map_lookup_elem(&pool_tables, &pool_id);

	if (!table || size == 0)
		return -1;
#pragma unroll
	for (int i = 0; i < PICK_PROBES; i++) {
		__u32 idx = (slot + i) % size;
		__u32 *id = bpf_map_lookup_elem(table, &idx);
		if (!id)
			return -1;
		if (usable(*id))
			return *id;
	}
	return -1;
}

/* Least (weighted) connections: the member with the fewest active
 * connections per unit of weight; ties go round robin. */
static __always_inline int least_conn_pick(struct pool_info *pool, __u32 n, int weighted)
{
	__u32 start = __sync_fetch_and_add(&pool->rr_next, 1);
	__u32 best_conns = 0, best_weight = 1;
	int best = -1;

	for (__u32 i = 0; i < MAX_MEMBERS_PER_POOL; i++) {
		if (i >= n)
			break;
		__u32 k = (start + i) % n;
		barrier_var(k);
		k &= MAX_MEMBERS_PER_POOL - 1;
		__u32 id = pool->eligible[k];
		struct member_info *m = member_get(id);
		if (!m || !(m->flags & MEMBER_F_UP))
			continue;
		__u32 conns = member_conns_of(id);
		if (m->max_conns && conns >= m->max_conns)
			continue;
		__u32 w = weighted ? pool->weight[k] : 1;
		if (w == 0)
			w = 1;
		/* conns/w < best_conns/best_weight, without division */
		if (best < 0 || (__u64)conns * best_weight < (__u64)best_conns * w) {
			best = id;
			best_conns = conns;
			best_weight = w;
		}
	}
	return best;
}

/* Chooses a member for a new client with the pool's algorithm and returns
 * its id, or -1. A global function: the verifier checks it once, on its own,
 * instead of once per caller and path, which keeps the least-connection loop
 * affordable. */
__noinline int pick_member(__u32 pool_id, __u32 client_hash)
{
	struct pool_info *pool = bpf_map_lookup_elem(&pools, &pool_id);

	if (!pool)
		return -1;
	__u32 n = pool->n_eligible;
	if (n == 0 || n > MAX_MEMBERS_PER_POOL)
		return -1;

	__u32 start;
	int id = -1;
	switch (pool->algorithm) {
	case ALGO_WEIGHTED_ROUND_ROBIN:
		start = __sync_fetch_and_add(&pool->rr_next, 1);
		id = table_pick(pool_id, pool->table_size, start);
		break;
	case ALGO_IP_HASH:
		start = client_hash;
		id = table_pick(pool_id, pool->table_size, start);
		break;
	case ALGO_LEAST_CONNECTION:
		return least_conn_pick(pool, n, 0);
	case ALGO_WEIGHTED_LEAST_CONNECTION:
		return least_conn_pick(pool, n, 1);
	default:
		start = __sync_fetch_and_add(&pool->rr_next, 1);
	}
	if (id >= 0)
		return id;

	/* Round robin's turn, or a table's slot and the few after it, cannot
	 * take the client: the next member in order that can does, so a full
	 * member never turns a client away while another has room. */
	for (__u32 i = 0; i < MAX_MEMBERS_PER_POOL; i++) {
		if (i >= n)
			break;
		__u32 idx = (start + i) % n;
		/* libbpf's barrier_var hides idx from clang, which would otherwise
		 * drop the mask below as redundant; the verifier needs it. */
		barrier_var(idx);
		__u32 mid = pool->eligible[idx & (MAX_MEMBERS_PER_POOL - 1)];
		if (usable(mid))
			return mid;
	}
	return -1;
}

static __always_inline struct member_info *pool_pick(__u32 pool_id, struct packet *p, __u32 *member_id)
{
	int id = pick_member(pool_id, hash_addr(&p->src));

	if (id < 0)
		return NULL;
	*member_id = id;
	return member_get(id);
}

/* Finds the member of a pool that a persisted server maps to: the same
 * address and port, else the same address on any port (a shared table can
 * persist a client across pools that run the server on other ports). */
static __always_inline int member_find(__u32 pool_id, const struct persist_entry *e, __u32 *member_id)
{
	struct member_addr_key k;

	__builtin_memset(&k, 0, sizeof(k));
	k.pool_id = pool_id;
	k.family = e->family;
	k.port = e->server_port;
	k.addr = e->server;
	__u32 *id = bpf_map_lookup_elem(&member_addrs, &k);
	if (!id) {
		k.port = 0;
		id = bpf_map_lookup_elem(&member_addrs, &k);
	}
	if (!id)
		return -1;
	*member_id = *id;
	return 0;
}

struct decision {
	struct member_info *member;
	struct persist_entry *entry; /* counted when the flow is created */
	__u32 member_id;
	__u32 pad;
	struct persist_key pkey;
};

/* Chooses the member for a connection with no flow: persisted server if it
 * is usable, else the pool's choice, recorded in the table when create is set.
 * Returns 0 or REASON_* + 1. */
static __always_inline int choose_member(struct vs_info *vs, struct packet *p, __u64 now,
					 struct decision *d, int create)
{
	struct vs_stats *st = bpf_map_lookup_elem(&vs_counters, &vs->vs_id);

	d->pkey.table_id = TABLE_NONE;
	d->entry = NULL;
	if (!(vs->flags & VS_F_PERSIST)) {
		d->member = pool_pick(vs->pool_id, p, &d->member_id);
		return d->member ? 0 : REASON_NO_MEMBER + 1;
	}

	void *table = persist_table(vs->table_id);
	if (!table)
		return REASON_NO_TABLE + 1;
	struct table_stats *ts = table_stats_of(vs->table_id);

	__builtin_memset(&d->pkey, 0, sizeof(d->pkey));
	d->pkey.table_id = vs->table_id;
	d->pkey.family = p->family;
	d->pkey.client = p->src;
	mask_addr(&d->pkey.client, p->family, p->family == FAMILY_V4 ? vs->v4_prefix : vs->v6_prefix);

	__u64 update_flags = BPF_NOEXIST;
	__u64 keep_conns = 0;
	int moved = 0;
	struct persist_entry *e = bpf_map_lookup_elem(table, &d->pkey);
	if (e) {
		__u64 cs = READ_ONCE_U64(e->conn_state);
		if (cs & CS_DEAD) {
			update_flags = BPF_ANY;
			goto miss;
		}
		if ((cs & CS_CONNS_MASK) == 0 && now > e->last_seen_ns &&
		    now - e->last_seen_ns > vs->timeout_ns) {
			/* Expired but not yet swept: claim it, so that one CPU
			 * re-balances the client and the GC does not race us. */
			__sync_val_compare_and_swap(&e->conn_state, cs, cs | CS_DEAD);
			if (ts)
				ts->expired++;
			update_flags = BPF_ANY;
			goto miss;
		}
		__u32 mid;
		if (member_find(vs->pool_id, e, &mid) == 0) {
			struct member_info *m = member_get(mid);
			/* A member at its connection limit counts as down, as
			 * NSX's server-down policy has it. */
			int full = m && member_full(mid, m);
			if (m && (m->flags & MEMBER_F_UP) && !full) {
				d->member = m;
				d->member_id = mid;
				d->entry = e;
				/* Hits and misses count connections: a stray FIN
				 * or RST (create 0) is neither. */
				if (ts && create)
					ts->hits++;
				if (st && create)
					st->persist_hits++;
				return 0;
			}
			if (m && (vs->flags & VS_F_SERVER_DOWN_NEVER)) {
				if (st)
					st->server_down_drops++;
				return (full ? REASON_MEMBER_FULL : REASON_SERVER_DOWN) + 1;
			}
		}
		/* Down with policy immediate, or not in this pool: move the
		 * client, keeping the count of connections it still has. */
		moved = 1;
		keep_conns = cs & ~CS_DEAD;
		update_flags = BPF_ANY;
	}
miss:
	if (!moved && create) {
		if (ts)
			ts->misses++;
		if (st)
			st->persist_misses++;
	}
	d->member = pool_pick(vs->pool_id, p, &d->member_id);
	if (!d->member)
		return REASON_NO_MEMBER + 1;
	if (!create)
		return 0;

	struct scratch *sc = scratch_area();
	if (!sc)
		return REASON_NO_TABLE + 1;
	struct persist_entry *ne = &sc->entry;
	__builtin_memset(ne, 0, sizeof(*ne));
	ne->server = d->member->addr;
	ne->server_port = d->member->port;
	ne->family = d->member->family;
	ne->vs_id = vs->vs_id;
	ne->member_id = d->member_id;
	ne->conn_state = keep_conns;
	ne->created_ns = now;
	ne->last_seen_ns = now;
	long err = bpf_map_update_elem(table, &d->pkey, ne, update_flags);
	if (err == -EEXIST) {
		/* Another CPU persisted this client a moment ago: follow it. */
		e = bpf_map_lookup_elem(table, &d->pkey);
		__u32 mid;
		if (e && member_find(vs->pool_id, e, &mid) == 0) {
			struct member_info *m = member_get(mid);
			if (m && (m->flags & MEMBER_F_UP)) {
				d->member = m;
				d->member_id = mid;
			}
		}
		d->entry = e;
		return 0;
	}
	if (err) {
		if (ts)
			ts->rejects++;
		if (st)
			st->rejects++;
		return REASON_TABLE_FULL + 1;
	}
	if (ts && !moved)
		ts->inserts++;
	if (st && moved)
		st->persist_moved++;
	persist_event(moved ? EVENT_MOVED : EVENT_CREATED, &d->pkey, &ne->server, ne->server_port, now);
	d->entry = bpf_map_lookup_elem(table, &d->pkey);
	return 0;
}

static __always_inline int l4_csum_off(struct packet *p)
{
	return p->proto == IPPROTO_TCP ? 16 : 6;
}

/* Rewrites one address and port of the packet (dst for forward NAT, src for
 * replies), fixing the IP and L4 checksums incrementally. */
static __always_inline int nat_rewrite(struct xdp_md *ctx, struct packet *p, int rewrite_src,
				       const union addr *to, __be16 to_port)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *l3 = data + (p->l3_off & 0xff);
	void *l4 = data + (p->l4_off & 0xfff);
	__sum16 *l4check = l4 + l4_csum_off(p);

	if ((void *)(l4check + 1) > data_end || l4 + 4 > data_end)
		return -1;
	__be16 *port = rewrite_src ? l4 : l4 + 2;
	/* A zero UDP checksum means "none" over IPv4 and is invalid over IPv6
	 * (RFC 8200): either way it stays zero, never computed into one that
	 * verifies. */
	int fix_l4 = !(p->proto == IPPROTO_UDP && *l4check == 0);

	if (p->family == FAMILY_V4) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end)
			return -1;
		__be32 *a = rewrite_src ? &ip->saddr : &ip->daddr;
		csum_replace4(&ip->check, *a, to->v4);
		if (fix_l4)
			csum_replace4(l4check, *a, to->v4);
		*a = to->v4;
	} else {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__be32 *a = rewrite_src ? ip6->saddr : ip6->daddr;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			if (fix_l4)
				csum_replace4(l4check, a[i], to->v6[i]);
			a[i] = to->v6[i];
		}
	}
	if (fix_l4)
		csum_replace2(l4check, *port, to_port);
	*port = to_port;
	if (p->proto == IPPROTO_UDP && fix_l4 && *l4check == 0)
		*l4check = 0xffff;
	return 0;
}

/* Returns 1 when the TTL or hop limit would expire here: the kernel then
 * answers with ICMP. */
static __always_inline int ttl_expiring(struct xdp_md *ctx, struct packet *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *l3 = data + (p->l3_off & 0xff);

	if (p->family == FAMILY_V4) {
		struct iphdr *ip = l3;
		return (void *)(ip + 1) > data_end || ip->ttl <= 1;
	}
	struct ipv6hdr *ip6 = l3;
	return (void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1;
}

/* Decrements the TTL or hop limit of a packet XDP forwards itself. One
 * handed to the stack keeps its TTL: the stack decrements it when it
 * forwards, and a hop must cost one, not two. */
static __always_inline void ttl_decrement(struct xdp_md *ctx, struct packet *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *l3 = data + (p->l3_off & 0xff);

	if (!cfg_decrement_ttl)
		return;
	if (p->family == FAMILY_V4) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end || ip->ttl <= 1)
			return;
		__be16 old = *(__be16 *)&ip->ttl;
		ip->ttl--;
		csum_replace2(&ip->check, old, *(__be16 *)&ip->ttl);
		return;
	}
	struct ipv6hdr *ip6 = l3;
	if ((void *)(ip6 + 1) > data_end || ip6->hop_limit <= 1)
		return;
	ip6->hop_limit--;
}

/* Sends the packet toward dst using the kernel's FIB and neighbour table. */
static __always_inline int fib_forward(struct xdp_md *ctx, struct packet *p, const union addr *src,
				       const union addr *dst, int dsr)
{
	struct scratch *sc = scratch_area();
	if (!sc)
		return XDP_DROP;
	struct bpf_fib_lookup *fibp = &sc->fib;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	__builtin_memset(fibp, 0, sizeof(*fibp));
#define fib (*fibp)
	fib.ifindex = ctx->ingress_ifindex;
	fib.l4_protocol = p->proto;
	if (p->family == FAMILY_V4) {
		fib.family = AF_INET;
		fib.ipv4_src = src->v4;
		fib.ipv4_dst = dst->v4;
		fib.tot_len = p->ip_len;
	} else {
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, src->v6, 16);
		__builtin_memcpy(fib.ipv6_dst, dst->v6, 16);
		fib.tot_len = p->ip_len;
	}

	long rc = bpf_fib_lookup(ctx, fibp, sizeof(*fibp), 0);
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		break;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		if (dsr)
			return verdict(REASON_DSR_NO_NEIGH, XDP_DROP);
		return verdict(REASON_FIB_NO_NEIGH, XDP_PASS);
	case BPF_FIB_LKUP_RET_BLACKHOLE:
	case BPF_FIB_LKUP_RET_UNREACHABLE:
	case BPF_FIB_LKUP_RET_PROHIBIT:
		return verdict(REASON_FIB_DROP, XDP_DROP);
	default:
		/* Not forwarded, MTU exceeded, ...: the stack handles NAT'ed
		 * packets correctly; a DSR packet still carries the VIP and
		 * would be routed back to us. */
		if (dsr)
			return verdict(REASON_FIB_DROP, XDP_DROP);
		return verdict(REASON_FIB_PASS, XDP_PASS);
	}

	if (p->vlan_depth && fib.ifindex != ctx->ingress_ifindex) {
		/* XDP cannot redirect into a VLAN device; let the stack do it. */
		if (dsr)
			return verdict(REASON_FIB_DROP, XDP_DROP);
		return verdict(REASON_VLAN_PASS, XDP_PASS);
	}
	/* We route a NAT'ed packet we transmit; DSR only rewrites MACs. */
	if (!dsr)
		ttl_decrement(ctx, p);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	if (fib.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib.ifindex, 0);
#undef fib
}

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
	__u32 l3_off = p->l3_off & 0xff;
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
		ip->frag_off = bpf_htons(0x4000);
		ip->ttl = 64;
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
		ip6->hop_limit = 64;
		sum = csum_words((__u16 *)ip6->saddr, 16, 0);
	}
	__be16 port = th->source;
	th->source = th->dest;
	th->dest = port;
	th->seq = bpf_htonl(new_seq);
	th->ack_seq = bpf_htonl(ack);
	th->doff_res = 5 << 4;
	th->flags = TCP_RST | TCP_ACK;
	th->window = 0;
	th->urg_ptr = 0;
	th->check = 0;
	sum += bpf_htons(IPPROTO_TCP) + bpf_htons(sizeof(*th));
	th->check = csum_fold(csum_words((__u16 *)th, sizeof(*th) / 2, sum));
	return bpf_redirect(ctx->ingress_ifindex, 0);
}

static __always_inline void build_flow_key(struct flow_key *k, struct packet *p)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->src = p->src;
	k->dst = p->dst;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->family = p->family;
}

/* TCP state on the client side of a flow. Returns 1 when a SYN arrives on a
 * flow that has already closed: the port was reused for a new connection. */
static __always_inline int flow_track_client(struct flow_info *f, struct packet *p, __u64 now)
{
	if (p->proto != IPPROTO_TCP)
		return 0;
	__u8 fl = p->tcp_flags;
	if (fl & TCP_RST) {
		__sync_fetch_and_or(&f->flags, FLOW_F_RST);
		flow_release(f, now);
	} else if (fl & TCP_FIN) {
		__u32 old = __sync_fetch_and_or(&f->flags, FLOW_F_FIN_CLIENT);
		/* With DSR the server's FIN never passes here. */
		if ((old & FLOW_F_DSR) || (old & FLOW_F_FIN_SERVER))
			flow_release(f, now);
	} else if ((fl & TCP_SYN) && !(fl & TCP_ACK) &&
		   (f->flags & (FLOW_F_FIN_CLIENT | FLOW_F_FIN_SERVER | FLOW_F_RST)) &&
		   !(f->flags & FLOW_F_MEMBER_COUNTED)) {
		/* Ended (flow_release cleared its member count, which every
		 * flow holds; a half-closed one still holds it). */
		return 1;
	}
	return 0;
}

static __always_inline int forward_to_member(struct xdp_md *ctx, struct packet *p, struct vs_info *vs,
					     const union addr *maddr, __be16 mport, __u32 member_id)
{
	struct member_stats *ms = bpf_map_lookup_elem(&member_counters, &member_id);

	if (ms) {
		ms->packets++;
		ms->bytes += p->pkt_len;
	}
	if (vs->flags & VS_F_DSR)
		return fib_forward(ctx, p, &p->src, maddr, 1);
	if (ttl_expiring(ctx, p))
		return verdict(REASON_TTL_EXPIRED, XDP_PASS);
	if (nat_rewrite(ctx, p, 0, maddr, mport))
		return XDP_DROP;
	return fib_forward(ctx, p, &p->src, maddr, 0);
}

static __always_inline int handle_vs(struct xdp_md *ctx, struct packet *p, struct vs_info *vs)
{
	struct vs_stats *st = bpf_map_lookup_elem(&vs_counters, &vs->vs_id);
	__u64 now = now_ns();
	struct scratch *sc = scratch_area();
	struct flow_info *f;

	if (!sc)
		return XDP_DROP;
	struct flow_key *fkp = &sc->key;
#define fk (*fkp)

	if (st) {
		st->packets++;
		st->bytes += p->pkt_len;
	}
	build_flow_key(fkp, p);
	f = bpf_map_lookup_elem(&flows, fkp);
	if (f) {
		if (!flow_track_client(f, p, now)) {
			/* A coarse timestamp: writing it on every packet would
			 * bounce the cache line between CPUs for nothing. */
			if (now - f->last_seen_ns > 250000000ull)
				f->last_seen_ns = now;
			union addr maddr = f->addr;
			return forward_to_member(ctx, p, vs, &maddr, f->port, f->member_id);
		}
		bpf_map_delete_elem(&flows, fkp);
	}

	/* No flow. A FIN or RST cannot start a connection: forward it to the
	 * persisted or chosen server, but do not record a flow for it. */
	int create = !(p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FIN | TCP_RST)));
	struct decision d;
	__builtin_memset(&d, 0, sizeof(d));
	int r = choose_member(vs, p, now, &d, create);
	if (r) {
		r -= 1;
		if (r == REASON_NO_MEMBER && st)
			st->no_member_drops++;
		count_reason(r);
		if (r == REASON_TABLE_FULL)
			return reply_rst(ctx, p);
		return XDP_DROP;
	}
	struct member_info *m = d.member;
	union addr maddr = m->addr;
	__be16 mport = m->port ? m->port : p->dport;
	__u32 member_id = d.member_id;

	if (create) {
		struct flow_info *nfp = &sc->flow;
#define nf (*nfp)
		__builtin_memset(nfp, 0, sizeof(*nfp));
		nf.addr = maddr;
		nf.port = mport;
		nf.vs_id = vs->vs_id;
		nf.member_id = member_id;
		nf.pkey = d.pkey;
		nf.created_ns = now;
		nf.last_seen_ns = now;
		nf.flags = (vs->flags & VS_F_DSR) ? FLOW_F_DSR : FLOW_F_NAT;
		if (p->proto == IPPROTO_UDP)
			nf.flags |= FLOW_F_UDP;
		nf.flags |= FLOW_F_MEMBER_COUNTED;
		if (d.entry)
			nf.flags |= FLOW_F_COUNTED;
		if (bpf_map_update_elem(&flows, fkp, nfp, BPF_NOEXIST) == 0) {
			member_acquire(member_id);
			if (d.entry) {
				d.entry->last_seen_ns = now;
				__sync_fetch_and_add(&d.entry->conn_state, CS_INC);
			}
			if (st)
				st->new_flows++;
			struct member_stats *ms = bpf_map_lookup_elem(&member_counters, &member_id);
			if (ms)
				ms->new_flows++;
			if (!(vs->flags & VS_F_DSR)) {
				struct flow_key *rkp = &sc->reverse;
#define rk (*rkp)
				__builtin_memset(rkp, 0, sizeof(*rkp));
				rk.src = maddr;
				rk.dst = p->src;
				rk.sport = mport;
				rk.dport = p->sport;
				rk.proto = p->proto;
				rk.family = p->family;
				nf.addr = p->dst;
				nf.port = p->dport;
				nf.flags = FLOW_F_REVERSE | FLOW_F_NAT; /* counts nothing */
				nf.pkey.table_id = TABLE_NONE;
				bpf_map_update_elem(&flows, rkp, nfp, BPF_ANY);
#undef rk
			}
		}
#undef nf
	} else {
		count_reason(REASON_STRAY_TCP);
	}
	return forward_to_member(ctx, p, vs, &maddr, mport, member_id);
}
#undef fk

/* A reply from a NAT member: rewrite the source back to the VIP. */
static __always_inline int handle_reply(struct xdp_md *ctx, struct packet *p)
{
	struct flow_key rk;
	build_flow_key(&rk, p);
	struct flow_info *r = bpf_map_lookup_elem(&flows, &rk);
	if (!r || !(r->flags & FLOW_F_REVERSE))
		return XDP_PASS;

	__u64 now = now_ns();
	union addr vip = r->addr;
	__be16 vport = r->port;
	__u32 vs_id = r->vs_id;

	if (now - r->last_seen_ns > 250000000ull)
		r->last_seen_ns = now;
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FIN | TCP_RST))) {
		struct flow_key fk;
		__builtin_memset(&fk, 0, sizeof(fk));
		fk.src = p->dst;
		fk.dst = vip;
		fk.sport = p->dport;
		fk.dport = vport;
		fk.proto = p->proto;
		fk.family = p->family;
		struct flow_info *f = bpf_map_lookup_elem(&flows, &fk);
		if (f) {
			if (p->tcp_flags & TCP_RST) {
				__sync_fetch_and_or(&f->flags, FLOW_F_RST);
				flow_release(f, now);
			} else {
				__u32 old = __sync_fetch_and_or(&f->flags, FLOW_F_FIN_SERVER);
				if (old & FLOW_F_FIN_CLIENT)
					flow_release(f, now);
			}
		}
	}
	struct vs_stats *st = bpf_map_lookup_elem(&vs_counters, &vs_id);
	if (st) {
		st->reply_packets++;
		st->reply_bytes += p->pkt_len;
	}
	if (ttl_expiring(ctx, p))
		return verdict(REASON_TTL_EXPIRED, XDP_PASS);
	if (nat_rewrite(ctx, p, 1, &vip, vport))
		return XDP_DROP;
	return fib_forward(ctx, p, &vip, &p->dst, 0);
}

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
	if (r)
		return verdict(r - 1, XDP_DROP);
	if (eth_proto == bpf_htons(ETH_P_IP))
		r = parse_ipv4(&c, data, &p);
	else if (eth_proto == bpf_htons(ETH_P_IPV6))
		r = parse_ipv6(&c, data, &p);
	else
		return XDP_PASS;
	if (r)
		return verdict(r - 1, XDP_DROP);

	struct addr_key ak;
	__builtin_memset(&ak, 0, sizeof(ak));
	ak.addr = p.dst;
	ak.family = p.family;
	if (bpf_map_lookup_elem(&vips, &ak)) {
		if (p.is_fragment)
			return verdict(REASON_FRAGMENT, XDP_DROP);
		if (p.ipv6_too_deep)
			return verdict(REASON_IPV6_EXT, XDP_DROP);
		if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP)
			return XDP_PASS;
		r = parse_l4(&c, &p);
		if (r)
			return verdict(r - 1, XDP_DROP);
		struct vip_key vk;
		__builtin_memset(&vk, 0, sizeof(vk));
		vk.addr = p.dst;
		vk.port = p.dport;
		vk.proto = p.proto;
		vk.family = p.family;
		struct vs_info *vs = bpf_map_lookup_elem(&virtual_servers, &vk);
		if (!vs)
			return XDP_PASS;
		if (p.ipv4_options)
			count_reason(REASON_IPV4_OPTIONS);
		if (p.ipv6_ext)
			count_reason(REASON_IPV6_EXT_WALKED);
		return handle_vs(ctx, &p, vs);
	}

	ak.addr = p.src;
	if (!bpf_map_lookup_elem(&nat_members, &ak))
		return XDP_PASS;
	if (p.is_fragment || (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP))
		return XDP_PASS;
	/* Host traffic from a member that fails our checks is the stack's business. */
	if (parse_l4(&c, &p))
		return XDP_PASS;
	return handle_reply(ctx, &p);
}

/* ---- GC, run by the daemon through BPF_PROG_RUN with a struct gc_batch as
 * the packet. Each item is re-checked here against the live value. ---- */

static __always_inline __u32 gc_flow_expire(struct gc_item *it, __u64 now)
{
	struct flow_key key = it->flow;
	struct flow_info *f = bpf_map_lookup_elem(&flows, &key);

	if (!f)
		return GC_RES_NOT_FOUND;
	/* A flow stamped at or after this reading of the clock is not idle. */
	if (now <= f->last_seen_ns || now - f->last_seen_ns < it->arg)
		return GC_RES_SKIPPED;
	if (f->flags & FLOW_F_REVERSE) {
		bpf_map_delete_elem(&flows, &key);
		return GC_RES_DONE;
	}
	/* Copy what we need before deleting: an LRU element can be reused at once. */
	struct persist_key pk = f->pkey;
	union addr maddr = f->addr;
	__be16 mport = f->port;
	__u32 member_id = f->member_id;
	__u32 nat = f->flags & FLOW_F_NAT;
	__u32 old = __sync_fetch_and_and(&f->flags, ~(FLOW_F_COUNTED | FLOW_F_MEMBER_COUNTED));
	bpf_map_delete_elem(&flows, &key);
	if (old & FLOW_F_COUNTED)
		persist_release(&pk, now);
	if (old & FLOW_F_MEMBER_COUNTED)
		member_release(member_id);
	if (nat) {
		struct flow_key rk;
		__builtin_memset(&rk, 0, sizeof(rk));
		rk.src = maddr;
		rk.dst = key.src;
		rk.sport = mport;
		rk.dport = key.sport;
		rk.proto = key.proto;
		rk.family = key.family;
		/* The reply entry is this flow's only if it still points back to
		 * its VIP: the same client port to another VIP through the same
		 * member port has the same reply 5-tuple, and the newer took it. */
		struct flow_info *r = bpf_map_lookup_elem(&flows, &rk);
		if (r && (r->flags & FLOW_F_REVERSE) && r->port == key.dport &&
		    !__builtin_memcmp(&r->addr, &key.dst, sizeof(r->addr)))
			bpf_map_delete_elem(&flows, &rk);
	}
	return GC_RES_DONE;
}

static __always_inline __u32 gc_persist_expire(struct gc_item *it, __u64 now)
{
	struct persist_key key = it->persist;
	void *table = persist_table(key.table_id);
	if (!table)
		return GC_RES_BAD;
	struct persist_entry *e = bpf_map_lookup_elem(table, &key);
	if (!e)
		return GC_RES_NOT_FOUND;
	__u64 cs = READ_ONCE_U64(e->conn_state);
	if (!(cs & CS_DEAD)) {
		if ((cs & CS_CONNS_MASK) != 0)
			return GC_RES_SKIPPED;
		if (now <= e->last_seen_ns || now - e->last_seen_ns <= it->arg)
			return GC_RES_SKIPPED;
		if (__sync_val_compare_and_swap(&e->conn_state, cs, cs | CS_DEAD) != cs)
			return GC_RES_SKIPPED;
		struct table_stats *ts = table_stats_of(key.table_id);
		if (ts)
			ts->expired++;
	}
	union addr server = e->server;
	__be16 server_port = e->server_port;
	bpf_map_delete_elem(table, &key);
	persist_event(EVENT_EXPIRED, &key, &server, server_port, now);
	return GC_RES_DONE;
}

/* Sets a packed generation-and-count word (an entry's or a member's) to
 * the count the GC recounted from the flow table, but only if no connection
 * opened or closed since the GC read it: the generation would have moved. */
static __always_inline __u32 cs_correct(__u64 *cs, __u64 expect, __u64 conns)
{
	__u64 want = (expect & ~(CS_CONNS_MASK | CS_DEAD)) + CS_GEN_ONE + (conns & CS_CONNS_MASK) + (expect & CS_DEAD);

	if (__sync_val_compare_and_swap(cs, expect, want) != expect)
		return GC_RES_SKIPPED;
	return GC_RES_DONE;
}

static __always_inline __u32 gc_reconcile(struct gc_item *it)
{
	struct persist_key key = it->persist;
	void *table = persist_table(key.table_id);
	if (!table)
		return GC_RES_BAD;
	struct persist_entry *e = bpf_map_lookup_elem(table, &key);
	if (!e)
		return GC_RES_NOT_FOUND;
	return cs_correct(&e->conn_state, it->arg, it->arg2);
}

/* The member version: the member id is the key's first word. */
static __always_inline __u32 gc_member_reconcile(struct gc_item *it)
{
	__u32 id = it->persist.table_id;
	__u64 *cs = bpf_map_lookup_elem(&member_conns, &id);
	if (!cs)
		return GC_RES_BAD;
	return cs_correct(cs, it->arg, it->arg2);
}

/* Moves an entry's countdown base to now without touching its atomic count,
 * which belongs to the datapath and the sweeper's recount of the flow table. */
static __always_inline __u32 gc_touch(struct gc_item *it, __u64 now)
{
	struct persist_key key = it->persist;
	void *table = persist_table(key.table_id);
	if (!table)
		return GC_RES_BAD;
	struct persist_entry *e = bpf_map_lookup_elem(table, &key);
	if (!e)
		return GC_RES_NOT_FOUND;
	if (READ_ONCE_U64(e->conn_state) & CS_DEAD)
		return GC_RES_SKIPPED;
	e->last_seen_ns = now;
	return GC_RES_DONE;
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
		switch (it->op) {
		case GC_OP_FLOW_EXPIRE:
			it->result = gc_flow_expire(it, now);
			break;
		case GC_OP_PERSIST_EXPIRE:
			it->result = gc_persist_expire(it, now);
			break;
		case GC_OP_RECONCILE:
			it->result = gc_reconcile(it);
			break;
		case GC_OP_TOUCH:
			it->result = gc_touch(it, now);
			break;
		case GC_OP_MEMBER_RECONCILE:
			it->result = gc_member_reconcile(it);
			break;
		default:
			it->result = GC_RES_BAD;
		}
	}
	return XDP_PASS;
}

/* Attached to the receiving end of a veth that limpet redirects into: veth
 * delivers XDP_REDIRECTed frames only to a peer that runs an XDP program. */
SEC("xdp")
int limpet_pass(struct xdp_md *ctx)
{
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
