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

#endif
