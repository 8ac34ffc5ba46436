// SPDX-License-Identifier: MIT
/*
 * kern_case.h - test data for the attention kernels and their references,
 * shared by tests/test_kernels_ref.c (CPU) and tests/test_kernels_gpu.c.
 *
 * A case is one batch of sequences with ragged lengths, stored three ways
 * from the same random values: dense double-precision arrays (for the
 * naive evaluation), vkv's contiguous layout (slots permuted, padded token
 * rows) and a 16-token paged cache (blocks shuffled). Every byte of the
 * layouts that no sequence owns is filled with 0xff, a NaN in every dtype,
 * so a kernel or reference that reads outside its rows shows up as NaN.
 */
#ifndef VKV_TEST_KERN_CASE_H
#define VKV_TEST_KERN_CASE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attn_ref.h"

struct kern_case {
	enum vkv_kern_dtype dt;
	uint32_t batch, q_heads, kv_heads, head_dim, max_len;
	uint32_t *lens;
	/* dense, values exactly representable in dt */
	double *q; /* [batch][q_heads][head_dim] */
	double *k, *v; /* [batch][max_len][kv_heads][head_dim] */
	double vmax;   /* max |v| over rows read */
	/* stored */
	void *qbuf; /* packed, dtype */
	uint8_t *kc, *vc; /* contiguous tensors */
	uint32_t *slots, max_slots;
	uint64_t slot_stride, token_stride, head_stride, contig_bytes;
	uint8_t *kp, *vp; /* paged caches */
	uint32_t *table, max_blocks, num_blocks;
	uint64_t block_stride, paged_bytes;
	size_t out_elems;
};

static uint64_t kc_rng = 0x9e3779b97f4a7c15ull;

static inline double kc_rand(void) /* uniform in [-1, 1) */
{
	kc_rng ^= kc_rng << 13;
	kc_rng ^= kc_rng >> 7;
	kc_rng ^= kc_rng << 17;
	return (double)(kc_rng >> 11) / (double)(1ull << 52) - 1.0;
}

/* A value of dt (stored at dst[i]) and its exact value. */
static inline double kc_put(enum vkv_kern_dtype dt, void *dst, size_t i,
			    double x)
{
	vkv__elem_store(dt, dst, i, (float)x);
	return vkv__elem_load(dt, dst, i);
}

static inline size_t kc_dense(const struct kern_case *c, uint32_t s,
			      uint32_t t, uint32_t h)
{
	return (((size_t)s * c->max_len + t) * c->kv_heads + h) * c->head_dim;
}

static inline void kc_free(struct kern_case *c)
{
	free(c->lens);
	free(c->q);
	free(c->k);
	free(c->v);
	free(c->qbuf);
	free(c->kc);
	free(c->vc);
	free(c->slots);
	free(c->kp);
	free(c->vp);
	free(c->table);
	memset(c, 0, sizeof(*c));
}

/* Build a case; `amp` scales the values (large amp: large scores). Returns
 * 0 or -1 when out of memory. */
static inline int kc_make(struct kern_case *c, enum vkv_kern_dtype dt,
			  uint32_t batch, uint32_t q_heads, uint32_t kv_heads,
			  uint32_t head_dim, const uint32_t *lens, double amp)
{
	size_t es = vkv__dtype_size(dt);
	uint32_t *perm;
	uint32_t nb = 0;

	memset(c, 0, sizeof(*c));
	c->dt = dt;
	c->batch = batch;
	c->q_heads = q_heads;
	c->kv_heads = kv_heads;
	c->head_dim = head_dim;
	c->lens = calloc(batch, sizeof(*c->lens));
	for (uint32_t i = 0; i < batch; i++) {
		c->lens[i] = lens[i];
		c->max_len = lens[i] > c->max_len ? lens[i] : c->max_len;
		nb += (lens[i] + 15) / 16;
	}
	c->out_elems = (size_t)batch * q_heads * head_dim;
	c->q = calloc(c->out_elems, sizeof(double));
	c->qbuf = calloc(c->out_elems, es);
	size_t dense = (size_t)batch * (c->max_len + 1) * kv_heads * head_dim;
	c->k = calloc(dense, sizeof(double));
	c->v = calloc(dense, sizeof(double));

	/* contiguous: slots reversed, rows padded by 3 elements */
	c->max_slots = batch + 2;
	c->head_stride = head_dim * es;
	c->token_stride = kv_heads * c->head_stride + 3 * es;
	c->slot_stride = (c->max_len + 1) * c->token_stride;
	c->contig_bytes = c->max_slots * c->slot_stride;
	c->kc = malloc(c->contig_bytes);
	c->vc = malloc(c->contig_bytes);
	c->slots = calloc(batch, sizeof(*c->slots));

	/* paged: blocks shuffled, two spare ones */
	c->num_blocks = nb + 2;
	c->max_blocks = (c->max_len + 15) / 16 + 1;
	c->block_stride = 16 * (uint64_t)kv_heads * head_dim * es;
	c->paged_bytes = c->num_blocks * c->block_stride;
	c->kp = malloc(c->paged_bytes);
	c->vp = malloc(c->paged_bytes);
	c->table = malloc((size_t)batch * c->max_blocks * sizeof(*c->table));
	perm = calloc(c->num_blocks, sizeof(*perm));
	if (!c->lens || !c->q || !c->qbuf || !c->k || !c->v || !c->kc ||
	    !c->vc || !c->slots || !c->kp || !c->vp || !c->table || !perm) {
		free(perm);
		kc_free(c);
		return -1;
	}
	memset(c->kc, 0xff, c->contig_bytes);
	memset(c->vc, 0xff, c->contig_bytes);
	memset(c->kp, 0xff, c->paged_bytes);
	memset(c->vp, 0xff, c->paged_bytes);
	memset(c->table, 0xff, (size_t)batch * c->max_blocks * sizeof(*c->table));
	for (uint32_t b = 0; b < c->num_blocks; b++)
		perm[b] = b;
	for (uint32_t b = c->num_blocks - 1; b > 0; b--) {
		uint32_t j = (uint32_t)((kc_rand() + 1.0) / 2.0 * (b + 1)) % (b + 1);
		uint32_t tmp = perm[b];
		perm[b] = perm[j];
		perm[j] = tmp;
	}

	for (size_t i = 0; i < c->out_elems; i++)
		c->q[i] = kc_put(dt, c->qbuf, i, kc_rand() * amp);
	uint32_t next_block = 0;
	for (uint32_t s = 0; s < batch; s++) {
		c->slots[s] = c->max_slots - 1 - s;
		for (uint32_t b = 0; b * 16 < c->lens[s]; b++)
			c->table[(size_t)s * c->max_blocks + b] = perm[next_block++];
		for (uint32_t t = 0; t < c->lens[s]; t++) {
			uint32_t blk = c->table[(size_t)s * c->max_blocks + t / 16];
			for (uint32_t h = 0; h < kv_heads; h++) {
				uint8_t *ck = c->kc + c->slots[s] * c->slot_stride +
					      t * c->token_stride + h * c->head_stride;
				uint8_t *cv = ck - c->kc + c->vc;
				uint64_t po = blk * c->block_stride +
					      ((t % 16) * (uint64_t)kv_heads + h) *
						      c->head_stride;
				for (uint32_t d = 0; d < head_dim; d++) {
					size_t di = kc_dense(c, s, t, h) + d;
					c->k[di] = kc_put(dt, ck, d, kc_rand() * amp);
					c->v[di] = kc_put(dt, cv, d, kc_rand());
					vkv__elem_store(dt, c->kp + po, d, (float)c->k[di]);
					vkv__elem_store(dt, c->vp + po, d, (float)c->v[di]);
					if (fabs(c->v[di]) > c->vmax)
						c->vmax = fabs(c->v[di]);
				}
			}
		}
	}
	free(perm);
	return 0;
}

/* Parameters for a layout; addresses are the host buffers of the case.
 * The caller swaps in device addresses for a kernel launch. */
static inline struct vkv_attn_params kc_params(const struct kern_case *c,
					       enum vkv_kern_layout layout,
					       void *out)
{
	struct vkv_attn_params p = {
		.q = (uintptr_t)c->qbuf,
		.out = (uintptr_t)out,
		.seq_len = (uintptr_t)c->lens,
		.batch = c->batch,
		.q_heads = c->q_heads,
		.kv_heads = c->kv_heads,
		.head_dim = c->head_dim,
		.scale = (float)(1.0 / sqrt((double)c->head_dim)),
		.head_stride = c->head_stride,
	};

	if (layout == VKV_KERN_CONTIG) {
		p.k = (uintptr_t)c->kc;
		p.v = (uintptr_t)c->vc;
		p.seq_stride = c->slot_stride;
		p.token_stride = c->token_stride;
		p.seq_slot = (uintptr_t)c->slots;
	} else {
		p.k = (uintptr_t)c->kp;
		p.v = (uintptr_t)c->vp;
		p.seq_stride = c->block_stride;
		p.token_stride = c->kv_heads * c->head_stride;
		p.block_table = (uintptr_t)c->table;
		p.max_blocks = c->max_blocks;
		p.num_blocks = c->num_blocks;
	}
	return p;
}

/* The naive evaluation in double: out[batch][q_heads][head_dim]. */
static inline void kc_naive(const struct kern_case *c, double *out)
{
	uint32_t group = c->q_heads / c->kv_heads;
	double scale = (double)(float)(1.0 / sqrt((double)c->head_dim));
	double *w = calloc(c->max_len + 1, sizeof(double));

	for (uint32_t s = 0; s < c->batch; s++) {
		for (uint32_t j = 0; j < c->q_heads; j++) {
			const double *q = c->q + ((size_t)s * c->q_heads + j) * c->head_dim;
			double *o = out + ((size_t)s * c->q_heads + j) * c->head_dim;
			double mx = -INFINITY, sum = 0;
			for (uint32_t t = 0; t < c->lens[s]; t++) {
				const double *k = c->k + kc_dense(c, s, t, j / group);
				double dot = 0;
				for (uint32_t d = 0; d < c->head_dim; d++)
					dot += q[d] * k[d];
				w[t] = dot * scale;
				mx = fmax(mx, w[t]);
			}
			for (uint32_t t = 0; t < c->lens[s]; t++)
				sum += w[t] = exp(w[t] - mx);
			for (uint32_t d = 0; d < c->head_dim; d++) {
				double a = 0;
				for (uint32_t t = 0; t < c->lens[s]; t++)
					a += w[t] * c->v[kc_dense(c, s, t, j / group) + d];
				o[d] = sum > 0 ? a / sum : 0;
			}
		}
	}
	free(w);
}

/* rel_err of an output buffer of dtype dt against the naive result:
 * max |got - want| / max |V| (attn_ref.h); +inf when got holds a NaN. */
static inline double kc_rel_err(const struct kern_case *c, const void *got,
				const double *want)
{
	double worst = 0, scale = c->vmax > 0 ? c->vmax : 1;

	for (size_t i = 0; i < c->out_elems; i++) {
		double g = vkv__elem_load(c->dt, got, i);
		double e = fabs(g - want[i]);
		if (isnan(g))
			return INFINITY;
		worst = e > worst ? e : worst;
	}
	return worst / scale;
}

#endif /* VKV_TEST_KERN_CASE_H */
