/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* One's-complement checksum helpers. Incremental updates follow RFC 1624:
 * HC' = ~(~HC + ~m + m'). Values stay in network byte order throughout; the
 * one's-complement sum does not care about byte order as long as every term
 * is in the same one. */
#ifndef LIMPET_CSUM_H
#define LIMPET_CSUM_H

#include <linux/types.h>

static __always_inline __u32 csum_add32(__u32 sum, __u32 addend)
{
	sum += addend;
	return sum + (sum < addend);
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

static __always_inline void csum_replace4(__sum16 *check, __be32 from, __be32 to)
{
	__u32 sum = (__u16)~*check;
	sum = csum_add32(sum, ~from);
	sum = csum_add32(sum, to);
	*check = csum_fold(sum);
}

static __always_inline void csum_replace2(__sum16 *check, __be16 from, __be16 to)
{
	__u32 sum = (__u16)~*check;
	sum = csum_add32(sum, (__u16)~from);
	sum = csum_add32(sum, to);
	*check = csum_fold(sum);
}

/* Sums n 16-bit words starting at p; the caller has bounds-checked them. */
static __always_inline __u32 csum_words(const __u16 *p, int n, __u32 sum)
{
#pragma unroll
	for (int i = 0; i < n; i++)
		sum += p[i];
	return sum;
}

#endif
