/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* What every part of the datapath uses: the clock, the per-CPU scratch
 * area and the reason counters. */
#ifndef LIMPET_COMMON_H
#define LIMPET_COMMON_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "structs.h"
#include "maps.h"

#define READ_ONCE_U64(x) (*(volatile __u64 *)&(x))

/* The one clock of the datapath: the boot clock plus runtime_settings'
 * offset (which lets tests move time without sleeping), read cheaply. The
 * coarse monotonic clock is a load of the time the last tick stored (a few
 * ns, where bpf_ktime_get_boot_ns reads the clock source: 26-42 ns on a VM),
 * so a reading lags the true time by up to a tick (4 ms at HZ=250); adding
 * clock_sync's boot-minus-monotonic offset, which the daemon keeps, puts it
 * on the boot clock. Userspace reads the same sum through the same kernel
 * function (loader.Pinned.Now), so a reading there brackets the datapath's
 * exactly, and every timeout is seconds long: a tick of lag is far below
 * what the semantics need. */
static __always_inline __u64 now_ns(void)
{
	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&runtime_settings, &zero);
	struct boot_offset *cs = bpf_map_lookup_elem(&clock_sync, &zero);
	__u64 t = bpf_ktime_get_coarse_ns();

	if (cs)
		t += cs->boot_minus_mono_ns;
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

#endif
