// SPDX-License-Identifier: MIT
/*
 * attn_ref.c - CPU references of the CUDA kernels (decode attention over the
 * contiguous and the paged layout, the batched range copy) and the fp16 /
 * bf16 conversions they need.
 *
 * These are deliberately plain: a two-pass softmax in fp32 with one scratch
 * array of scores, addresses computed exactly as the kernels compute them.
 * The GPU tests compare the kernels against them within the bounds stated
 * in attn_ref.h; the unit tests compare them against a double-precision
 * evaluation written independently in the test.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn_ref.h"

double vkv__attn_tol(enum vkv_kern_dtype dt)
{
	switch (dt) {
	case VKV_KERN_F32:
		return VKV_ATTN_TOL_F32;
	case VKV_KERN_F16:
		return VKV_ATTN_TOL_F16;
	case VKV_KERN_BF16:
		return VKV_ATTN_TOL_BF16;
	default:
		return 0;
	}
}

size_t vkv__dtype_size(enum vkv_kern_dtype dt)
{
	switch (dt) {
	case VKV_KERN_F32:
		return 4;
	case VKV_KERN_F16:
	case VKV_KERN_BF16:
		return 2;
	default:
		return 0;
	}
}

const char *vkv__dtype_name(enum vkv_kern_dtype dt)
{
	static const char *const names[VKV_KERN_DTYPE_COUNT] = { "f32", "f16",
								 "bf16" };
	return (unsigned)dt < VKV_KERN_DTYPE_COUNT ? names[dt] : "?";
}

/* ------------------------------------------------------------ conversions */

static uint32_t f32_bits(float f)
{
	uint32_t x;

	memcpy(&x, &f, sizeof(x));
	return x;
}

static float f32_from_bits(uint32_t x)
{
	float f;

	memcpy(&f, &x, sizeof(f));
	return f;
}

/* Shift m right by `shift` (1..31) rounding to nearest, ties to even. */
static uint32_t shift_rne(uint32_t m, unsigned shift)
{
	uint32_t q = m >> shift;
	uint32_t rem = m & ((1u << shift) - 1);
	uint32_t half = 1u << (shift - 1);

	if (rem > half || (rem == half && (q & 1)))
		q++;
	return q;
}

uint16_t vkv__f16_from_f32(float f)
{
	uint32_t x = f32_bits(f);
	uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
	uint32_t ax = x & 0x7fffffff;
	uint32_t e = ax >> 23;

	if (ax > 0x7f800000)
		return sign | 0x7e00; /* NaN */
	if (ax >= 0x477ff000)
		return sign | 0x7c00; /* >= 65520 rounds to infinity */
	if (ax >= 0x38800000)     /* normal half: rebias, round 13 bits */
		return sign | (uint16_t)shift_rne(ax - (112u << 23), 13);
	if (e < 102)
		return sign; /* below 2^-25: rounds to zero */
	/* subnormal half: units of 2^-24; may round up to the smallest
	 * normal, which the encoding carries into the exponent by itself */
	return sign | (uint16_t)shift_rne((ax & 0x7fffff) | 0x800000, 126 - e);
}

float vkv__f32_from_f16(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t e = (h >> 10) & 0x1f;
	uint32_t m = h & 0x3ff;

	if (e == 0) {
		float v = (float)m * 0x1p-24f; /* exact */
		return sign ? -v : v;
	}
	if (e == 31)
		return f32_from_bits(sign | 0x7f800000 | (m << 13));
	return f32_from_bits(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t vkv__bf16_from_f32(float f)
{
	uint32_t x = f32_bits(f);

	if ((x & 0x7fffffff) > 0x7f800000)
		return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
	return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

float vkv__f32_from_bf16(uint16_t h)
{
	return f32_from_bits((uint32_t)h << 16);
}

float vkv__elem_load(enum vkv_kern_dtype dt, const void *base, size_t i)
{
	switch (dt) {
	case VKV_KERN_F16:
		return vkv__f32_from_f16(((const uint16_t *)base)[i]);
	case VKV_KERN_BF16:
		return vkv__f32_from_bf16(((const uint16_t *)base)[i]);
	default:
		return ((const float *)base)[i];
	}
}

void vkv__elem_store(enum vkv_kern_dtype dt, void *base, size_t i, float x)
{
	switch (dt) {
	case VKV_KERN_F16:
		((uint16_t *)base)[i] = vkv__f16_from_f32(x);
		break;
	case VKV_KERN_BF16:
		((uint16_t *)base)[i] = vkv__bf16_from_f32(x);
		break;
	default:
		((float *)base)[i] = x;
		break;
	}
}

/* -------------------------------------------------------- decode attention */

static int fail(const char **why, const char *msg)
{
	if (why)
		*why = msg;
	return -EINVAL;
}

int vkv__attn_check(enum vkv_kern_layout layout, enum vkv_kern_dtype dt,
		    const struct vkv_attn_params *p, const char **why)
{
	if (!p)
		return fail(why, "no parameters");
	if ((unsigned)layout >= VKV_KERN_LAYOUT_COUNT)
		return fail(why, "unknown layout");
	if ((unsigned)dt >= VKV_KERN_DTYPE_COUNT)
		return fail(why, "unknown dtype");
	if (p->head_dim == 0 || p->head_dim > VKV_KERN_MAX_HEAD_DIM)
		return fail(why, "head_dim must be 1..256");
	if (p->kv_heads == 0 || p->q_heads == 0 || p->q_heads % p->kv_heads)
		return fail(why, "q_heads must be a nonzero multiple of kv_heads");
	if (p->batch == 0)
		return 0;
	if (!p->q || !p->out || !p->k || !p->v || !p->seq_len)
		return fail(why, "q, out, k, v and seq_len must be set");
	if (layout == VKV_KERN_CONTIG && !p->seq_slot)
		return fail(why, "contiguous layout needs seq_slot");
	if (layout == VKV_KERN_PAGED &&
	    (!p->block_table || p->max_blocks == 0 || p->num_blocks == 0))
		return fail(why, "paged layout needs block_table, max_blocks, "
				 "num_blocks");
	return 0;
}

static int check_paged_tables(const struct vkv_attn_params *p)
{
	const uint32_t *len = (const uint32_t *)(uintptr_t)p->seq_len;
	const uint32_t *table = (const uint32_t *)(uintptr_t)p->block_table;

	for (uint32_t i = 0; i < p->batch; i++) {
		uint64_t blocks = ((uint64_t)len[i] + VKV_KERN_BLOCK_TOKENS - 1) /
				  VKV_KERN_BLOCK_TOKENS;
		if (blocks > p->max_blocks)
			return -EINVAL;
		for (uint64_t b = 0; b < blocks; b++)
			if (table[(uint64_t)i * p->max_blocks + b] >= p->num_blocks)
				return -EINVAL;
	}
	return 0;
}

/* Host address of the row of token t, KV head h: the kernels' kv_row(). */
static const void *kv_row(enum vkv_kern_layout layout,
			  const struct vkv_attn_params *p, uint64_t base,
			  uint32_t seq, uint32_t t, uint32_t h)
{
	uint64_t row = base + (uint64_t)h * p->head_stride;

	if (layout == VKV_KERN_CONTIG) {
		uint32_t slot = ((const uint32_t *)(uintptr_t)p->seq_slot)[seq];
		row += (uint64_t)slot * p->seq_stride +
		       (uint64_t)t * p->token_stride;
	} else {
		const uint32_t *table =
			(const uint32_t *)(uintptr_t)p->block_table +
			(uint64_t)seq * p->max_blocks;
		row += (uint64_t)table[t / VKV_KERN_BLOCK_TOKENS] * p->seq_stride +
		       (uint64_t)(t % VKV_KERN_BLOCK_TOKENS) * p->token_stride;
	}
	return (const void *)(uintptr_t)row;
}

/* One (sequence, query head): scores, max, exp, sum, weighted V. */
static void attn_one(enum vkv_kern_layout layout, enum vkv_kern_dtype dt,
		     const struct vkv_attn_params *p, uint32_t seq, uint32_t qh,
		     float *scores, float *acc)
{
	const uint32_t hd = p->head_dim;
	const uint32_t kh = qh / (p->q_heads / p->kv_heads);
	const uint32_t len = ((const uint32_t *)(uintptr_t)p->seq_len)[seq];
	const size_t qoff = ((size_t)seq * p->q_heads + qh) * hd;
	const void *q = (const void *)(uintptr_t)p->q;
	void *out = (void *)(uintptr_t)p->out;
	float mx = -INFINITY, sum = 0.0f;

	for (uint32_t t = 0; t < len; t++) {
		const void *kr = kv_row(layout, p, p->k, seq, t, kh);
		float s = 0.0f;
		for (uint32_t d = 0; d < hd; d++)
			s += vkv__elem_load(dt, q, qoff + d) * p->scale *
			     vkv__elem_load(dt, kr, d);
		scores[t] = s;
		mx = fmaxf(mx, s);
	}
	memset(acc, 0, hd * sizeof(*acc));
	for (uint32_t t = 0; t < len; t++) {
		const void *vr = kv_row(layout, p, p->v, seq, t, kh);
		float w = expf(scores[t] - mx);
		sum += w;
		for (uint32_t d = 0; d < hd; d++)
			acc[d] += w * vkv__elem_load(dt, vr, d);
	}
	for (uint32_t d = 0; d < hd; d++)
		vkv__elem_store(dt, out, qoff + d, sum > 0.0f ? acc[d] / sum : 0.0f);
}

int vkv__attn_ref(enum vkv_kern_layout layout, enum vkv_kern_dtype dt,
		  const struct vkv_attn_params *p)
{
	const uint32_t *len;
	uint32_t maxlen = 0;
	float *scratch;
	int err = vkv__attn_check(layout, dt, p, NULL);

	if (err || p->batch == 0)
		return err;
	if (layout == VKV_KERN_PAGED && check_paged_tables(p))
		return -EINVAL;
	len = (const uint32_t *)(uintptr_t)p->seq_len;
	for (uint32_t i = 0; i < p->batch; i++)
		maxlen = len[i] > maxlen ? len[i] : maxlen;
	scratch = malloc(((size_t)maxlen + p->head_dim) * sizeof(*scratch));
	if (!scratch)
		return -ENOMEM;
	for (uint32_t i = 0; i < p->batch; i++)
		for (uint32_t h = 0; h < p->q_heads; h++)
			attn_one(layout, dt, p, i, h, scratch, scratch + maxlen);
	free(scratch);
	return 0;
}

/* ------------------------------------------------------------ range copy */

struct span {
	uint64_t lo, hi; /* [lo, hi) */
};

static int span_cmp(const void *a, const void *b)
{
	const struct span *x = a, *y = b;

	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Does [lo, hi) overlap any of the sorted, disjoint spans s[0..n)? */
static int overlaps_sorted(const struct span *s, uint32_t n, uint64_t lo,
			   uint64_t hi)
{
	uint32_t a = 0, b = n;

	while (a < b) { /* first span with s.hi > lo */
		uint32_t mid = a + (b - a) / 2;
		if (s[mid].hi <= lo)
			a = mid + 1;
		else
			b = mid;
	}
	return a < n && s[a].lo < hi;
}

int vkv__ranges_check(const struct vkv_kern_range *r, uint32_t n,
		      const char **why)
{
	struct span *dst;
	uint32_t m = 0;
	int err = 0;

	if (n && !r)
		return fail(why, "no ranges");
	dst = malloc(((size_t)n + 1) * sizeof(*dst));
	if (!dst)
		return -ENOMEM;
	for (uint32_t i = 0; i < n && !err; i++) {
		if (r[i].bytes == 0)
			continue;
		if (!r[i].dst || !r[i].src)
			err = fail(why, "range with a zero address");
		else if (r[i].dst + r[i].bytes < r[i].dst ||
			 r[i].src + r[i].bytes < r[i].src)
			err = fail(why, "range wraps around the address space");
		else
			dst[m++] = (struct span){ r[i].dst, r[i].dst + r[i].bytes };
	}
	if (!err)
		qsort(dst, m, sizeof(*dst), span_cmp);
	for (uint32_t i = 1; i < m && !err; i++)
		if (dst[i].lo < dst[i - 1].hi)
			err = fail(why, "two destination ranges overlap");
	for (uint32_t i = 0; i < n && !err; i++)
		if (r[i].bytes &&
		    overlaps_sorted(dst, m, r[i].src, r[i].src + r[i].bytes))
			err = fail(why, "a source range overlaps a destination");
	free(dst);
	return err;
}

int vkv__copy_ranges_ref(const struct vkv_kern_range *r, uint32_t n)
{
	int err = vkv__ranges_check(r, n, NULL);

	for (uint32_t i = 0; i < n && !err; i++)
		if (r[i].bytes)
			memcpy((void *)(uintptr_t)r[i].dst,
			       (const void *)(uintptr_t)r[i].src, r[i].bytes);
	return err;
}
