// SPDX-License-Identifier: MIT
/*
 * serve.c - `vkvbench serve`: the demo. A small decoder-only transformer
 * with random weights serves a trace with continuous batching, its KV cache
 * in a vkv region.
 *
 * The model (fixed seed, float32): token embedding, `layers` blocks of
 * RMSNorm -> grouped-query attention with rotary positions -> RMSNorm ->
 * SiLU MLP, a final RMSNorm and an output projection; greedy argmax picks
 * the next token. Every iteration the engine:
 *   1. tells vkv the batch's new lengths (vkv_step), preempting the
 *      youngest request when the budget says no: its slot is evicted to
 *      host DRAM (or NVMe once DRAM is full; --dram-budget) and restored at
 *      the same addresses when memory frees up, before any new request is
 *      admitted (--preempt recompute frees it and starts it over instead);
 *   2. runs the model layer by layer over every token of the iteration
 *      (whole prompts of requests admitted last iteration, one token of the
 *      others): K and V rows are written straight into the region's
 *      tensors, attention reads them back through struct vkv_tensor
 *      addresses (the CPU reference of the decode kernel on host, the CUDA
 *      kernel under the cuda backend);
 *   3. frees finished requests and admits new ones, calling
 *      vkv_slot_prefetch for their prompts so the worker maps those pages
 *      while this iteration computes.
 * Requests marked with a prefix id share a system prompt: it is computed
 * once into a holder slot and mapped into each such request with
 * vkv_slot_share_prefix, whose prefill then starts after it.
 *
 * --verify runs the same trace again on plain static buffers
 * ([slots][max_context] per layer, the system prompt recomputed for every
 * request) and fails unless every generated token and every logit of every
 * step is bit-identical. Per-request arithmetic is the same function in
 * both runs and does not depend on the batch, so any difference is a
 * memory bug (a page mapped wrong, shared wrong, reused dirty).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attn_ref.h"
#include "kernels.h"
#include "vkvbench.h"

/* ------------------------------------------------------------------- model */

struct model_cfg {
	uint32_t vocab, dim, q_heads, kv_heads, head_dim, layers, ffn;
	uint32_t max_ctx;
};

struct layer_w {
	float *norm1, *wq, *wk, *wv, *wo; /* w*: [in][out], row-major */
	float *norm2, *w1, *w2;
};

struct model {
	struct model_cfg c;
	float *embed;  /* [vocab][dim] */
	struct layer_w *l;
	float *norm_out, *wout; /* [dim][vocab] */
	float *rope_cos, *rope_sin; /* [max_ctx][head_dim / 2] */
	float *arena;
};

static float *carve(float **p, size_t n)
{
	float *r = *p;
	*p += n;
	return r;
}

/* Uniform in [-a, a); a = 1/sqrt(fan_in) keeps activations in range. */
static void fill(struct bench_rng *rng, float *w, size_t n, uint32_t fan_in)
{
	float a = 1.0f / sqrtf((float)fan_in);

	for (size_t i = 0; i < n; i++)
		w[i] = (float)(bench_rng_unit(rng) * 2.0 - 1.0) * a;
}

static void fill_norm(struct bench_rng *rng, float *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		w[i] = 0.75f + 0.5f * (float)bench_rng_unit(rng);
}

static int model_init(struct model *m, const struct model_cfg *c, uint64_t seed)
{
	uint32_t qd = c->q_heads * c->head_dim, kd = c->kv_heads * c->head_dim;
	uint32_t half = c->head_dim / 2;
	size_t per_layer = 2 * (size_t)c->dim + (size_t)c->dim * (qd + 2 * kd) +
			   (size_t)qd * c->dim + 2 * (size_t)c->dim * c->ffn;
	size_t total = (size_t)c->vocab * c->dim + per_layer * c->layers + c->dim +
		       (size_t)c->dim * c->vocab + 2 * (size_t)c->max_ctx * half;
	struct bench_rng rng;
	float *p;

	memset(m, 0, sizeof(*m));
	m->c = *c;
	m->arena = malloc(total * sizeof(float));
	m->l = calloc(c->layers, sizeof(*m->l));
	if (!m->arena || !m->l) {
		free(m->arena);
		free(m->l);
		return -ENOMEM;
	}
	bench_rng_seed(&rng, seed);
	p = m->arena;
	m->embed = carve(&p, (size_t)c->vocab * c->dim);
	fill(&rng, m->embed, (size_t)c->vocab * c->dim, 1);
	for (uint32_t i = 0; i < c->layers; i++) {
		struct layer_w *l = &m->l[i];

		l->norm1 = carve(&p, c->dim);
		l->wq = carve(&p, (size_t)c->dim * qd);
		l->wk = carve(&p, (size_t)c->dim * kd);
		l->wv = carve(&p, (size_t)c->dim * kd);
		l->wo = carve(&p, (size_t)qd * c->dim);
		l->norm2 = carve(&p, c->dim);
		l->w1 = carve(&p, (size_t)c->dim * c->ffn);
		l->w2 = carve(&p, (size_t)c->ffn * c->dim);
		fill_norm(&rng, l->norm1, c->dim);
		fill(&rng, l->wq, (size_t)c->dim * qd, c->dim);
		fill(&rng, l->wk, (size_t)c->dim * kd, c->dim);
		fill(&rng, l->wv, (size_t)c->dim * kd, c->dim);
		fill(&rng, l->wo, (size_t)qd * c->dim, qd);
		fill_norm(&rng, l->norm2, c->dim);
		fill(&rng, l->w1, (size_t)c->dim * c->ffn, c->dim);
		fill(&rng, l->w2, (size_t)c->ffn * c->dim, c->ffn);
	}
	m->norm_out = carve(&p, c->dim);
	fill_norm(&rng, m->norm_out, c->dim);
	m->wout = carve(&p, (size_t)c->dim * c->vocab);
	fill(&rng, m->wout, (size_t)c->dim * c->vocab, c->dim);
	m->rope_cos = carve(&p, (size_t)c->max_ctx * half);
	m->rope_sin = carve(&p, (size_t)c->max_ctx * half);
	for (uint32_t pos = 0; pos < c->max_ctx; pos++) {
		for (uint32_t i = 0; i < half; i++) {
			double th = pos * pow(10000.0, -2.0 * i / c->head_dim);
			m->rope_cos[(size_t)pos * half + i] = (float)cos(th);
			m->rope_sin[(size_t)pos * half + i] = (float)sin(th);
		}
	}
	return 0;
}

static void model_free(struct model *m)
{
	free(m->arena);
	free(m->l);
}

/* y[out] = x[in] . W[in][out]; the loop order is fixed, so results do not
 * depend on anything but the inputs. */
static void matvec(float *y, const float *x, const float *w, uint32_t in,
		   uint32_t out)
{
	memset(y, 0, out * sizeof(*y));
	for (uint32_t i = 0; i < in; i++) {
		const float xi = x[i];
		const float *row = w + (size_t)i * out;

		for (uint32_t j = 0; j < out; j++)
			y[j] += xi * row[j];
	}
}

static void rmsnorm(float *y, const float *x, const float *g, uint32_t n)
{
	float ss = 0;

	for (uint32_t i = 0; i < n; i++)
		ss += x[i] * x[i];
	ss = 1.0f / sqrtf(ss / (float)n + 1e-5f);
	for (uint32_t i = 0; i < n; i++)
		y[i] = x[i] * ss * g[i];
}

static void rope(const struct model *m, float *v, uint32_t heads, uint32_t pos)
{
	uint32_t hd = m->c.head_dim, half = hd / 2;
	const float *c = m->rope_cos + (size_t)pos * half;
	const float *s = m->rope_sin + (size_t)pos * half;

	for (uint32_t h = 0; h < heads; h++) {
		float *x = v + (size_t)h * hd;

		for (uint32_t i = 0; i < half; i++) {
			float a = x[2 * i], b = x[2 * i + 1];
			x[2 * i] = a * c[i] - b * s[i];
			x[2 * i + 1] = a * s[i] + b * c[i];
		}
	}
}

/* -------------------------------------------------------------- KV stores
 *
 * Where K and V live: the vkv region's tensors, or static buffers with the
 * same element layout. Both are described by struct vkv_tensor; `device`
 * says whether the addresses are device pointers (cuda).
 */
struct kv_store {
	struct vkv_tensor *k, *v; /* [layers] */
	bool device;
#ifdef VKV_HAVE_KERNELS
	struct vkv_kern_buf *bufs; /* static on the GPU: [2 * layers] */
#endif
	void *host;                /* static on the host */
};

static uint64_t kv_addr(const struct vkv_tensor *t, uint32_t slot, uint32_t pos)
{
	return t->addr + slot * t->slot_stride + pos * t->token_stride;
}

/* ----------------------------------------------------------- the engine */

struct serve_opts {
	struct bench_trace_params tp;
	enum vkv_backend_kind backend;
	uint64_t page_size, budget;
	uint64_t dram_budget;  /* DRAM tier for preempted requests */
	bool evict;            /* preempt by eviction (else recompute) */
	uint64_t slots;
	uint64_t sys_len;
	struct model_cfg mc;
	bool verify, json, progress;
};

/* One generation step of one request: the token and the logits. */
struct req_out {
	uint32_t *tokens;  /* [output] */
	float *logits;     /* [output][vocab] */
};

struct req {
	size_t idx;        /* in the trace */
	uint32_t slot;
	uint32_t prompt;   /* tokens in the prompt, system prompt included */
	uint32_t start;    /* first prompt position this engine computes */
	uint32_t len;      /* tokens in the cache */
	uint32_t ngen;     /* tokens generated */
	uint32_t next;     /* last generated token (fed next iteration) */
	uint32_t new_len;  /* cache length after this iteration */
	uint32_t tier;     /* preempted by eviction: the tier holding it */
};

/* One token computed this iteration. */
struct item {
	uint32_t req;      /* index into running[] (or UINT32_MAX: holder) */
	uint32_t slot, pos, tok;
};

struct scratch {
	size_t cap;
	float *x, *h, *q, *k, *v, *att, *tmp, *ff, *logits;
	uint32_t *seq_slot, *seq_len;
#ifdef VKV_HAVE_KERNELS
	struct vkv_kern_buf dq, dout, dslot, dlen;
	size_t dcap;
#endif
};

struct engine {
	const struct serve_opts *o;
	const struct model *m;
	const struct bench_trace *t;
	struct req_out *out;       /* [trace requests] */
	struct kv_store kv;
	struct scratch sc;
	struct vkv_kern *kern;     /* GPU attention, NULL on host */
	/* vkv only */
	vkv_ctx *ctx;
	vkv_region *r;
	bool use_vkv;
	/* system prompts: prefix id -> the slot holding it (vkv only) */
	uint32_t hold_id[16], hold_slot[16], nhold;
	/* static only: free slots */
	uint32_t *free_slots, nfree;
	/* scheduling */
	uint32_t *step_slots;      /* [slots]: arguments of vkv_step */
	uint64_t *step_lens;
	struct item *items;
	size_t items_cap;
	struct req *run;
	size_t nrun;
	size_t *waiting, nwait, wait_head;
	struct req *swapped;       /* [slots]: evicted, oldest first */
	size_t nswap;
	size_t done;
	/* report */
	uint64_t page_size;        /* vkv only */
	bool preempted;            /* this iteration: admit nobody */
	uint64_t tokens_out, tokens_prefill, iterations, preemptions;
	uint64_t committed_peak, shared_peak, prefix_tokens_shared;
	uint64_t evictions[VKV_TIER_COUNT], restores[VKV_TIER_COUNT];
	double wall_s;
	uint64_t start_ns, last_progress_ns;
};

static uint32_t hash32(uint64_t a, uint64_t b, uint64_t c)
{
	uint64_t z = a * 0x9e3779b97f4a7c15ull ^ b * 0xbf58476d1ce4e5b9ull ^
		     c * 0x94d049bb133111ebull;
	z = (z ^ (z >> 31)) * 0xd6e8feb86ca8ee35ull;
	return (uint32_t)(z ^ (z >> 29));
}

/* Token at prompt position pos of request idx: the system prompt first for
 * requests that share it. */
static uint32_t prompt_token(const struct engine *e, size_t idx, uint32_t pos)
{
	const struct bench_req *q = &e->t->reqs[idx];
	uint64_t seed = e->o->tp.seed;

	if (q->prefix_id && pos < e->o->sys_len)
		return hash32(seed, 0xfeedull + q->prefix_id, pos) % e->m->c.vocab;
	return hash32(seed, idx + 1, pos) % e->m->c.vocab;
}

static uint32_t req_prompt(const struct engine *e, size_t idx)
{
	const struct bench_req *q = &e->t->reqs[idx];
	return q->prompt + (q->prefix_id ? (uint32_t)e->o->sys_len : 0);
}

static int scratch_reserve(struct scratch *s, const struct model_cfg *c, size_t n)
{
	size_t qd = (size_t)c->q_heads * c->head_dim, kd = (size_t)c->kv_heads * c->head_dim;
	float **f[] = { &s->x, &s->h, &s->q, &s->k, &s->v, &s->att, &s->tmp, &s->ff };
	size_t w[] = { c->dim, c->dim, qd, kd, kd, qd, c->dim, c->ffn };

	if (n <= s->cap)
		return 0;
	n = n < 2 * s->cap ? 2 * s->cap : n;
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		float *p = realloc(*f[i], n * w[i] * sizeof(float));
		if (!p)
			return -ENOMEM;
		*f[i] = p;
	}
	uint32_t *a = realloc(s->seq_slot, n * sizeof(*a));
	if (!a)
		return -ENOMEM;
	s->seq_slot = a;
	a = realloc(s->seq_len, n * sizeof(*a));
	if (!a)
		return -ENOMEM;
	s->seq_len = a;
	s->cap = n;
	return 0;
}

static void scratch_free(struct engine *e)
{
	struct scratch *s = &e->sc;

	free(s->x), free(s->h), free(s->q), free(s->k), free(s->v);
	free(s->att), free(s->tmp), free(s->ff), free(s->logits);
	free(s->seq_slot), free(s->seq_len);
#ifdef VKV_HAVE_KERNELS
	if (s->dcap) {
		vkv__kern_buf_free(e->kern, &s->dq);
		vkv__kern_buf_free(e->kern, &s->dout);
		vkv__kern_buf_free(e->kern, &s->dslot);
		vkv__kern_buf_free(e->kern, &s->dlen);
	}
#endif
	memset(s, 0, sizeof(*s));
}

/* Store rows [first, first + n) of one K or V tensor: consecutive items of
 * one request, `row` floats each. */
static int kv_store_rows(struct engine *e, const struct vkv_tensor *t,
			 uint32_t slot, uint32_t first, uint32_t n,
			 const float *src, size_t row)
{
	size_t bytes = row * sizeof(float);
	int err = 0;

	/* A token's heads are packed in both stores (head_stride = head_dim
	 * floats); tokens are too when token_stride says so: one copy. */
	if (t->token_stride == bytes) {
		bytes *= n;
		n = 1;
	}
	for (uint32_t i = 0; i < n && !err; i++) {
		uint64_t dst = kv_addr(t, slot, first + i);
		const float *from = src + i * row;
#ifdef VKV_HAVE_KERNELS
		if (e->kv.device) {
			err = vkv__kern_upload(e->kern, dst, from, bytes);
			continue;
		}
#else
		(void)e;
#endif
		memcpy((void *)(uintptr_t)dst, from, bytes);
	}
	return err;
}

/* Attention of every item for one layer: out[i] reads K/V of slot
 * seq_slot[i], tokens [0, pos + 1). */
static int attention(struct engine *e, uint32_t layer, size_t n)
{
	const struct model_cfg *c = &e->m->c;
	struct scratch *s = &e->sc;
	struct vkv_attn_params p = {
		.k = e->kv.k[layer].addr,
		.v = e->kv.v[layer].addr,
		.seq_stride = e->kv.k[layer].slot_stride,
		.token_stride = e->kv.k[layer].token_stride,
		.head_stride = e->kv.k[layer].head_stride,
		.batch = (uint32_t)n,
		.q_heads = c->q_heads,
		.kv_heads = c->kv_heads,
		.head_dim = c->head_dim,
		.scale = 1.0f / sqrtf((float)c->head_dim),
	};
	size_t qbytes = n * c->q_heads * c->head_dim * sizeof(float);

	if (!e->kern) {
		p.q = (uint64_t)(uintptr_t)s->q;
		p.out = (uint64_t)(uintptr_t)s->att;
		p.seq_slot = (uint64_t)(uintptr_t)s->seq_slot;
		p.seq_len = (uint64_t)(uintptr_t)s->seq_len;
		return vkv__attn_ref(VKV_KERN_CONTIG, VKV_KERN_F32, &p);
	}
#ifdef VKV_HAVE_KERNELS
	int err = 0;

	if (s->dcap < n) {
		if (s->dcap) {
			vkv__kern_buf_free(e->kern, &s->dq);
			vkv__kern_buf_free(e->kern, &s->dout);
			vkv__kern_buf_free(e->kern, &s->dslot);
			vkv__kern_buf_free(e->kern, &s->dlen);
			s->dcap = 0;
		}
		err = vkv__kern_buf_alloc(e->kern, s->cap * c->q_heads * c->head_dim * sizeof(float), &s->dq);
		if (!err)
			err = vkv__kern_buf_alloc(e->kern, s->cap * c->q_heads * c->head_dim * sizeof(float), &s->dout);
		if (!err)
			err = vkv__kern_buf_alloc(e->kern, s->cap * sizeof(uint32_t), &s->dslot);
		if (!err)
			err = vkv__kern_buf_alloc(e->kern, s->cap * sizeof(uint32_t), &s->dlen);
		if (err)
			return err;
		s->dcap = s->cap;
	}
	p.q = s->dq.addr;
	p.out = s->dout.addr;
	p.seq_slot = s->dslot.addr;
	p.seq_len = s->dlen.addr;
	err = vkv__kern_upload(e->kern, s->dq.addr, s->q, qbytes);
	if (!err)
		err = vkv__kern_upload(e->kern, s->dslot.addr, s->seq_slot, n * sizeof(uint32_t));
	if (!err)
		err = vkv__kern_upload(e->kern, s->dlen.addr, s->seq_len, n * sizeof(uint32_t));
	if (!err)
		err = vkv__kern_attn_decode(e->kern, NULL, VKV_KERN_CONTIG, VKV_KERN_F32, &p);
	if (!err)
		err = vkv__kern_download(e->kern, s->att, s->dout.addr, qbytes);
	return err;
#else
	(void)qbytes;
	return -ENODEV;
#endif
}

/* Write this layer's K and V of every item: runs of consecutive positions
 * of one slot go in one copy. */
static int store_kv(struct engine *e, uint32_t layer, const struct item *it,
		    size_t n)
{
	size_t kd = (size_t)e->m->c.kv_heads * e->m->c.head_dim;
	int err = 0;

	for (size_t i = 0; i < n && !err;) {
		size_t j = i + 1;

		while (j < n && it[j].slot == it[i].slot && it[j].pos == it[j - 1].pos + 1)
			j++;
		err = kv_store_rows(e, &e->kv.k[layer], it[i].slot, it[i].pos,
				    (uint32_t)(j - i), e->sc.k + i * kd, kd);
		if (!err)
			err = kv_store_rows(e, &e->kv.v[layer], it[i].slot, it[i].pos,
					    (uint32_t)(j - i), e->sc.v + i * kd, kd);
		i = j;
	}
	return err;
}

static float silu(float x)
{
	return x / (1.0f + expf(-x));
}

/* The model over n items, layer by layer. Items of one request come in
 * position order, so attention at position p finds rows < p written. */
static int forward(struct engine *e, const struct item *it, size_t n)
{
	const struct model *m = e->m;
	const struct model_cfg *c = &m->c;
	size_t qd = (size_t)c->q_heads * c->head_dim, kd = (size_t)c->kv_heads * c->head_dim;
	struct scratch *s = &e->sc;
	int err = scratch_reserve(s, c, n);

	for (size_t i = 0; i < n && !err; i++) {
		memcpy(s->x + i * c->dim, m->embed + (size_t)it[i].tok * c->dim,
		       c->dim * sizeof(float));
		s->seq_slot[i] = it[i].slot;
		s->seq_len[i] = it[i].pos + 1;
	}
	for (uint32_t l = 0; l < c->layers && !err; l++) {
		const struct layer_w *w = &m->l[l];

		for (size_t i = 0; i < n; i++) {
			float *h = s->h + i * c->dim;

			rmsnorm(h, s->x + i * c->dim, w->norm1, c->dim);
			matvec(s->q + i * qd, h, w->wq, c->dim, (uint32_t)qd);
			matvec(s->k + i * kd, h, w->wk, c->dim, (uint32_t)kd);
			matvec(s->v + i * kd, h, w->wv, c->dim, (uint32_t)kd);
			rope(m, s->q + i * qd, c->q_heads, it[i].pos);
			rope(m, s->k + i * kd, c->kv_heads, it[i].pos);
		}
		err = store_kv(e, l, it, n);
		if (!err)
			err = attention(e, l, n);
		for (size_t i = 0; i < n && !err; i++) {
			float *x = s->x + i * c->dim, *h = s->h + i * c->dim;
			float *t = s->tmp + i * c->dim, *f = s->ff + i * c->ffn;

			matvec(t, s->att + i * qd, w->wo, (uint32_t)qd, c->dim);
			for (uint32_t d = 0; d < c->dim; d++)
				x[d] += t[d];
			rmsnorm(h, x, w->norm2, c->dim);
			matvec(f, h, w->w1, c->dim, c->ffn);
			for (uint32_t d = 0; d < c->ffn; d++)
				f[d] = silu(f[d]);
			matvec(t, f, w->w2, c->ffn, c->dim);
			for (uint32_t d = 0; d < c->dim; d++)
				x[d] += t[d];
		}
	}
	return err;
}

/* Logits of item i into dst; returns the argmax (the first on ties). */
static uint32_t head(struct engine *e, size_t i, float *dst)
{
	const struct model *m = e->m;
	float *h = e->sc.h + i * m->c.dim;
	uint32_t best = 0;

	rmsnorm(h, e->sc.x + i * m->c.dim, m->norm_out, m->c.dim);
	matvec(dst, h, m->wout, m->c.dim, m->c.vocab);
	for (uint32_t v = 1; v < m->c.vocab; v++)
		if (dst[v] > dst[best])
			best = v;
	return best;
}

/* ------------------------------------------------------------- scheduling */

#define MAX_HOLDERS 16

static bool holder_of(const struct engine *e, uint32_t prefix_id, uint32_t *slot)
{
	for (uint32_t k = 0; k < e->nhold; k++) {
		if (e->hold_id[k] == prefix_id) {
			*slot = e->hold_slot[k];
			return true;
		}
	}
	return false;
}

/* vkv: compute every system prompt once into a slot of its own. */
static int make_holders(struct engine *e)
{
	uint32_t sys = (uint32_t)e->o->sys_len;
	struct item *it;
	int err = 0;

	if (!sys)
		return 0;
	it = calloc(sys, sizeof(*it));
	if (!it)
		return -ENOMEM;
	for (size_t i = 0; i < e->t->n && !err; i++) {
		const struct bench_req *q = &e->t->reqs[i];
		uint32_t slot;

		if (!q->prefix_id || holder_of(e, q->prefix_id, &slot) ||
		    e->nhold == MAX_HOLDERS)
			continue;
		err = vkv_slot_alloc(e->r, sys, &slot);
		if (!err)
			err = vkv_slot_ensure(e->r, slot, sys);
		for (uint32_t p = 0; p < sys && !err; p++)
			it[p] = (struct item){ .slot = slot, .pos = p,
					       .tok = prompt_token(e, i, p) };
		if (!err)
			err = forward(e, it, sys);
		if (!err) {
			e->hold_id[e->nhold] = q->prefix_id;
			e->hold_slot[e->nhold++] = slot;
			e->tokens_prefill += sys;
		}
	}
	free(it);
	return err;
}

/* Take a slot for request idx; vkv maps the shared system prompt into it
 * and starts fetching the prompt's pages in the background. -ENOMEM:
 * retry when a request has finished. */
static int take_slot(struct engine *e, size_t idx, struct req *rq)
{
	const struct bench_req *q = &e->t->reqs[idx];
	uint32_t holder;
	int err;

	memset(rq, 0, sizeof(*rq));
	rq->idx = idx;
	rq->prompt = req_prompt(e, idx);
	if (!e->use_vkv) {
		rq->slot = e->free_slots[--e->nfree];
		return 0;
	}
	err = vkv_slot_alloc(e->r, rq->prompt + q->output, &rq->slot);
	if (!err && q->prefix_id && holder_of(e, q->prefix_id, &holder)) {
		err = vkv_slot_share_prefix(e->r, rq->slot, holder, e->o->sys_len);
		if (!err) {
			rq->start = (uint32_t)e->o->sys_len;
			e->prefix_tokens_shared += e->o->sys_len;
		}
	}
	if (!err)
		err = vkv_slot_prefetch(e->r, rq->slot, rq->prompt);
	if (err)
		vkv_slot_free(e->r, rq->slot);
	return err;
}

static void give_slot(struct engine *e, uint32_t slot)
{
	if (e->use_vkv)
		vkv_slot_free(e->r, slot);
	else
		e->free_slots[e->nfree++] = slot;
}

/* Pages per tensor that hold `tokens` tokens. */
static uint64_t pages_for(const struct engine *e, uint64_t tokens)
{
	uint64_t row = (uint64_t)e->m->c.kv_heads * e->m->c.head_dim * sizeof(float);
	return (tokens * row + e->page_size - 1) / e->page_size;
}

/* Under a budget, admit a request of `tokens` tokens only when it fits
 * next to what the running requests need for their next token (a
 * scheduler's estimate; vkv_step has the last word and may still make us
 * preempt). */
static bool fits(const struct engine *e, uint64_t tokens)
{
	uint64_t nt = 2ull * e->m->c.layers, used, need;

	if (!e->use_vkv || !e->o->budget || e->nrun == 0)
		return true;
	used = e->nhold * pages_for(e, e->o->sys_len);
	for (size_t i = 0; i < e->nrun; i++)
		used += pages_for(e, e->run[i].prompt > e->run[i].len + 1u ?
					     e->run[i].prompt : e->run[i].len + 1u);
	need = pages_for(e, tokens);
	return (used + need) * nt * e->page_size <= e->o->budget;
}

/* Bring evicted requests back, oldest first, while they fit. */
static int resume(struct engine *e)
{
	while (e->nswap && e->nrun < e->o->slots && !e->preempted &&
	       fits(e, e->swapped[0].len + 1u)) {
		struct req *rq = &e->swapped[0];
		int err = vkv_restore(e->r, &rq->slot, 1, NULL);

		if (err == -ENOMEM && e->nrun > 0)
			return 0; /* wait for memory */
		if (err)
			return err;
		e->restores[rq->tier]++;
		e->run[e->nrun++] = *rq;
		memmove(e->swapped, e->swapped + 1, --e->nswap * sizeof(*rq));
	}
	return 0;
}

static int admit(struct engine *e)
{
	int err = resume(e);

	if (err)
		return err;
	while (e->nrun < e->o->slots && e->wait_head < e->nwait && !e->preempted &&
	       e->nswap == 0 && fits(e, req_prompt(e, e->waiting[e->wait_head]))) {
		err = take_slot(e, e->waiting[e->wait_head], &e->run[e->nrun]);

		if (err == -ENOMEM && e->nrun > 0)
			return 0; /* wait for memory */
		if (err)
			return err;
		e->wait_head++;
		e->nrun++;
	}
	return 0;
}

/* Evict a preempted request's slot: DRAM first, NVMe when DRAM is full. */
static bool swap_out(struct engine *e, struct req *rq)
{
	static const unsigned order[] = { VKV_TIER_DRAM, VKV_TIER_NVME };

	if (!e->use_vkv || !e->o->evict || rq->ngen == 0)
		return false; /* nothing computed yet: nothing to keep */
	for (size_t i = 0; i < 2; i++) {
		int err = vkv_evict(e->r, &rq->slot, 1, order[i], NULL);

		if (!err) {
			rq->tier = order[i];
			e->evictions[order[i]]++;
			e->swapped[e->nswap++] = *rq;
			return true;
		}
		if (err != -ENOSPC)
			break;
	}
	return false;
}

/* Give the youngest request's memory back: evicted to a lower tier, or
 * freed to start over later. */
static void preempt(struct engine *e)
{
	struct req *rq = &e->run[--e->nrun];

	if (!swap_out(e, rq)) {
		give_slot(e, rq->slot);
		e->waiting[--e->wait_head] = rq->idx;
	}
	e->preemptions++;
	e->preempted = true;
}

/* vkv: back this iteration's lengths, preempting while the budget is short. */
static int commit_lengths(struct engine *e)
{
	int err;

	if (!e->use_vkv)
		return 0;
	for (;;) {
		for (size_t i = 0; i < e->nrun; i++) {
			e->step_slots[i] = e->run[i].slot;
			e->step_lens[i] = e->run[i].new_len;
		}
		err = vkv_step(e->r, e->step_slots, e->step_lens, e->nrun);
		if (err == -ENOMEM && e->nrun <= 1)
			fprintf(stderr, "vkvbench serve: --budget cannot hold request %zu "
				"alone (%u tokens)\n", e->run[0].idx, e->run[0].new_len);
		if (err != -ENOMEM || e->nrun <= 1)
			return err;
		preempt(e);
	}
}

/* The tokens each running request computes this iteration. */
static int build_items(struct engine *e, size_t *count)
{
	size_t n = 0;

	for (size_t i = 0; i < e->nrun; i++) {
		const struct req *rq = &e->run[i];
		n += rq->ngen ? 1 : rq->prompt - rq->start;
	}
	if (n > e->items_cap) {
		struct item *it = realloc(e->items, n * sizeof(*it));
		if (!it)
			return -ENOMEM;
		e->items = it;
		e->items_cap = n;
	}
	n = 0;
	for (size_t i = 0; i < e->nrun; i++) {
		const struct req *rq = &e->run[i];

		if (rq->ngen) {
			e->items[n++] = (struct item){ (uint32_t)i, rq->slot, rq->len, rq->next };
			continue;
		}
		for (uint32_t p = rq->start; p < rq->prompt; p++)
			e->items[n++] = (struct item){ (uint32_t)i, rq->slot, p,
						       prompt_token(e, rq->idx, p) };
		e->tokens_prefill += rq->prompt - rq->start;
	}
	*count = n;
	return 0;
}

/* Record the token of each request's last item; retire finished ones. */
static void sample(struct engine *e, size_t n)
{
	uint32_t vocab = e->m->c.vocab;
	size_t w = 0;

	for (size_t i = 0; i < n; i++) {
		struct req *rq = &e->run[e->items[i].req];
		struct req_out *o = &e->out[rq->idx];

		if (i + 1 < n && e->items[i + 1].req == e->items[i].req)
			continue;
		rq->next = head(e, i, o->logits + (size_t)rq->ngen * vocab);
		o->tokens[rq->ngen++] = rq->next;
		rq->len = rq->new_len;
		e->tokens_out++;
	}
	for (size_t i = 0; i < e->nrun; i++) {
		struct req *rq = &e->run[i];

		if (rq->ngen == e->t->reqs[rq->idx].output) {
			give_slot(e, rq->slot);
			e->done++;
			continue;
		}
		e->run[w++] = *rq;
	}
	e->nrun = w;
}

/* Memory figures, sampled once per iteration (vkv only). */
static void observe(struct engine *e)
{
	struct vkv_region_info ri;
	struct vkv_slot_info si;
	uint64_t shared = 0;

	if (!e->use_vkv || vkv_region_info(e->r, &ri))
		return;
	if (ri.committed_bytes > e->committed_peak)
		e->committed_peak = ri.committed_bytes;
	for (size_t i = 0; i < e->nrun; i++)
		if (vkv_slot_info(e->r, e->run[i].slot, &si) == 0)
			shared += si.shared_pages;
	if (shared > e->shared_peak)
		e->shared_peak = shared;
}

static void progress(struct engine *e, const char *what, bool last)
{
	uint64_t now = bench_now_ns();
	double el = (double)(now - e->start_ns) / 1e9;
	int bar = 30, fill = (int)(bar * e->done / (e->t->n ? e->t->n : 1));

	if (!e->o->progress || (!last && now - e->last_progress_ns < 100000000ull))
		return;
	e->last_progress_ns = now;
	fprintf(stderr, "\r%-6s [%.*s%*s] %zu/%zu requests, %llu tokens, %.0f tok/s ",
		what, fill, "##############################", bar - fill, "",
		e->done, e->t->n, (unsigned long long)e->tokens_out,
		el > 0 ? (double)e->tokens_out / el : 0.0);
	if (last)
		fputc('\n', stderr);
	fflush(stderr);
}

static int iterate(struct engine *e)
{
	size_t n;
	int err;

	e->preempted = false;
	for (size_t i = 0; i < e->nrun; i++) {
		struct req *rq = &e->run[i];
		rq->new_len = rq->ngen ? rq->len + 1 : rq->prompt;
	}
	err = commit_lengths(e);
	if (!err)
		err = build_items(e, &n);
	if (!err)
		err = forward(e, e->items, n);
	if (err)
		return err;
	observe(e);
	sample(e, n);
	e->iterations++;
	return admit(e);
}

static int serve_trace(struct engine *e, const char *what)
{
	int err;

	e->start_ns = bench_now_ns();
	e->nwait = e->t->n;
	for (size_t i = 0; i < e->t->n; i++)
		e->waiting[i] = i;
	err = e->use_vkv ? make_holders(e) : 0;
	if (!err)
		err = admit(e);
	while (!err && (e->nrun || e->nswap)) {
		err = iterate(e);
		progress(e, what, false);
	}
	e->wall_s = (double)(bench_now_ns() - e->start_ns) / 1e9;
	progress(e, what, true);
	if (!err && e->done != e->t->n)
		err = -EIO;
	return err;
}

/* ------------------------------------------------------------ set up */

static int alloc_outputs(struct engine *e)
{
	const struct bench_trace *t = e->t;

	e->out = calloc(t->n, sizeof(*e->out));
	if (!e->out)
		return -ENOMEM;
	for (size_t i = 0; i < t->n; i++) {
		uint32_t n = t->reqs[i].output;

		e->out[i].tokens = calloc(n, sizeof(uint32_t));
		e->out[i].logits = calloc((size_t)n * e->m->c.vocab, sizeof(float));
		if (!e->out[i].tokens || !e->out[i].logits)
			return -ENOMEM;
	}
	return 0;
}

static int engine_alloc(struct engine *e, const struct serve_opts *o,
			const struct model *m, const struct bench_trace *t)
{
	memset(e, 0, sizeof(*e));
	e->o = o;
	e->m = m;
	e->t = t;
	e->run = calloc(o->slots, sizeof(*e->run));
	e->swapped = calloc(o->slots, sizeof(*e->swapped));
	e->waiting = calloc(t->n, sizeof(*e->waiting));
	e->step_slots = calloc(o->slots, sizeof(*e->step_slots));
	e->step_lens = calloc(o->slots, sizeof(*e->step_lens));
	e->free_slots = calloc(o->slots, sizeof(*e->free_slots));
	e->kv.k = calloc(m->c.layers, sizeof(*e->kv.k));
	e->kv.v = calloc(m->c.layers, sizeof(*e->kv.v));
	if (!e->run || !e->swapped || !e->waiting || !e->step_slots || !e->step_lens ||
	    !e->free_slots || !e->kv.k || !e->kv.v)
		return -ENOMEM;
	return alloc_outputs(e);
}

static int ctx_open(const struct serve_opts *o, uint64_t page_size, bool probe,
		    vkv_ctx **ctx, struct vkv_ctx_info *info)
{
	struct vkv_ctx_config cc;
	int err;

	vkv_ctx_config_init(&cc);
	cc.backend = o->backend;
	cc.page_size = page_size;
	cc.budget = probe ? 0 : o->budget;
	if (!probe && o->dram_budget) {
		/* The DRAM tier is sized from the environment at creation. */
		char v[32];

		snprintf(v, sizeof(v), "%llu", (unsigned long long)o->dram_budget);
		setenv("VKV_DRAM_BUDGET", v, 1);
	}
	if (probe)
		cc.flags |= VKV_CTX_NO_WORKER | VKV_CTX_NO_STATS;
	err = vkv_ctx_create(&cc, ctx);
	if (!err && (err = vkv_ctx_info(*ctx, info)) != 0)
		vkv_ctx_destroy(*ctx);
	return err;
}

/* The vkv side: context, region, tensors. On host without --page-size the
 * demo uses 4 KiB pages, the granularity that shows vkv's memory savings. */
static int engine_vkv(struct engine *e, struct vkv_ctx_info *info)
{
	const struct model_cfg *c = &e->m->c;
	struct vkv_region_config rc;
	int err;

	uint64_t ps = e->o->page_size;

	e->use_vkv = true;
	if (!ps) {
		err = ctx_open(e->o, 0, true, &e->ctx, info);
		if (err)
			return err;
		if (info->backend == VKV_BACKEND_HOST)
			ps = 4096;
		vkv_ctx_destroy(e->ctx);
	}
	err = ctx_open(e->o, ps, false, &e->ctx, info);
	if (err) {
		e->ctx = NULL;
		return err;
	}
	vkv_region_config_init(&rc);
	rc.layers = c->layers;
	rc.kv_heads = c->kv_heads;
	rc.head_dim = c->head_dim;
	rc.elem_size = sizeof(float);
	rc.max_slots = (uint32_t)e->o->slots + MAX_HOLDERS;
	rc.max_context = c->max_ctx;
	rc.layout = VKV_LAYOUT_PER_LAYER;
	err = vkv_region_create(e->ctx, &rc, &e->r);
	for (uint32_t l = 0; l < c->layers && !err; l++) {
		err = vkv_region_tensor(e->r, l, VKV_K, &e->kv.k[l]);
		if (!err)
			err = vkv_region_tensor(e->r, l, VKV_V, &e->kv.v[l]);
	}
	e->kv.device = info->backend == VKV_BACKEND_CUDA;
	e->page_size = info->page_size;
	return err;
}

/* Bytes of the static reservation: every slot holds max_context tokens. */
static uint64_t static_bytes(const struct model_cfg *c, uint64_t slots)
{
	return 2ull * c->layers * slots * c->max_ctx * c->kv_heads * c->head_dim *
	       sizeof(float);
}

/* The reference side: plain buffers [slots][max_context][kv_heads][dim]
 * per layer and K/V, on the GPU when the vkv side is. */
static int engine_static(struct engine *e, bool device)
{
	const struct model_cfg *c = &e->m->c;
	uint64_t row = (uint64_t)c->kv_heads * c->head_dim * sizeof(float);
	uint64_t per = e->o->slots * c->max_ctx * row;
	uint32_t nt = 2 * c->layers;

	e->kv.device = device;
	for (uint32_t s = 0; s < e->o->slots; s++)
		e->free_slots[e->nfree++] = (uint32_t)(e->o->slots - 1 - s);
	if (!device) {
		e->kv.host = malloc(per * nt);
		if (!e->kv.host)
			return -ENOMEM;
	} else {
#ifdef VKV_HAVE_KERNELS
		e->kv.bufs = calloc(nt, sizeof(*e->kv.bufs));
		if (!e->kv.bufs)
			return -ENOMEM;
		for (uint32_t i = 0; i < nt; i++) {
			int err = vkv__kern_buf_alloc(e->kern, per, &e->kv.bufs[i]);
			if (err)
				return err;
		}
#else
		return -ENODEV;
#endif
	}
	for (uint32_t i = 0; i < nt; i++) {
		struct vkv_tensor *t = i % 2 ? &e->kv.v[i / 2] : &e->kv.k[i / 2];

		t->addr = device ?
#ifdef VKV_HAVE_KERNELS
			e->kv.bufs[i].addr :
#else
			0 :
#endif
			(uint64_t)(uintptr_t)e->kv.host + i * per;
		t->slot_stride = c->max_ctx * row;
		t->token_stride = row;
		t->head_stride = c->head_dim * sizeof(float);
		t->elem_size = sizeof(float);
	}
	return 0;
}

static void engine_free(struct engine *e)
{
	if (e->r)
		vkv_region_destroy(e->r);
	if (e->ctx)
		vkv_ctx_destroy(e->ctx);
#ifdef VKV_HAVE_KERNELS
	for (uint32_t i = 0; e->kv.bufs && i < 2 * e->m->c.layers; i++)
		if (e->kv.bufs[i].addr)
			vkv__kern_buf_free(e->kern, &e->kv.bufs[i]);
	free(e->kv.bufs);
#endif
	scratch_free(e);
	free(e->kv.host);
	for (size_t i = 0; e->out && i < e->t->n; i++) {
		free(e->out[i].tokens);
		free(e->out[i].logits);
	}
	free(e->out);
	free(e->run);
	free(e->swapped);
	free(e->waiting);
	free(e->step_slots);
	free(e->step_lens);
	free(e->free_slots);
	free(e->items);
	free(e->kv.k);
	free(e->kv.v);
}

/* ------------------------------------------------------------- verify */

struct verdict {
	bool ran, identical;
	uint64_t tokens, logits, token_diffs, logit_diffs;
	long first_req, first_step;
};

static void compare(const struct engine *a, const struct engine *b, struct verdict *v)
{
	uint32_t vocab = a->m->c.vocab;

	v->ran = true;
	v->first_req = v->first_step = -1;
	for (size_t i = 0; i < a->t->n; i++) {
		uint32_t n = a->t->reqs[i].output;

		for (uint32_t s = 0; s < n; s++) {
			const float *la = a->out[i].logits + (size_t)s * vocab;
			const float *lb = b->out[i].logits + (size_t)s * vocab;
			bool tok = a->out[i].tokens[s] != b->out[i].tokens[s];
			uint64_t diffs = 0;

			for (uint32_t k = 0; k < vocab; k++)
				diffs += memcmp(&la[k], &lb[k], sizeof(float)) != 0;
			v->tokens++;
			v->logits += vocab;
			v->token_diffs += tok;
			v->logit_diffs += diffs;
			if ((tok || diffs) && v->first_req < 0) {
				v->first_req = (long)i;
				v->first_step = (long)s;
			}
		}
	}
	v->identical = v->token_diffs == 0 && v->logit_diffs == 0;
}

/* ------------------------------------------------------------- report */

static void report_json(const struct serve_opts *o, const struct engine *e,
			const struct vkv_ctx_info *info, const struct engine *ref,
			const struct verdict *v)
{
	const struct model_cfg *c = &e->m->c;
	struct bench_json j;

	bench_json_begin(&j, stdout);
	bench_json_str(&j, "bench", "serve");
	bench_json_str(&j, "backend", info->backend_name);
	bench_json_str(&j, "backend_detail", info->backend_detail);
	bench_json_str(&j, "attention", e->kern ? "gpu" : "cpu");
	bench_json_u64(&j, "page_size", info->page_size);
	bench_json_str(&j, "trace", e->t->name);
	bench_json_u64(&j, "requests", e->t->n);
	bench_json_u64(&j, "slots", o->slots);
	bench_json_object(&j, "model");
	bench_json_u64(&j, "layers", c->layers);
	bench_json_u64(&j, "dim", c->dim);
	bench_json_u64(&j, "q_heads", c->q_heads);
	bench_json_u64(&j, "kv_heads", c->kv_heads);
	bench_json_u64(&j, "head_dim", c->head_dim);
	bench_json_u64(&j, "vocab", c->vocab);
	bench_json_u64(&j, "max_context", c->max_ctx);
	bench_json_close(&j);
	bench_json_u64(&j, "tokens_generated", e->tokens_out);
	bench_json_u64(&j, "prompt_tokens_computed", e->tokens_prefill);
	bench_json_u64(&j, "prefix_tokens_shared", e->prefix_tokens_shared);
	bench_json_u64(&j, "iterations", e->iterations);
	bench_json_u64(&j, "preemptions", e->preemptions);
	bench_json_f64(&j, "wall_s", e->wall_s);
	bench_json_f64(&j, "tokens_per_s", e->wall_s > 0 ? e->tokens_out / e->wall_s : NAN);
	bench_json_object(&j, "memory");
	bench_json_u64(&j, "budget", o->budget);
	bench_json_u64(&j, "committed_peak_bytes", e->committed_peak);
	bench_json_u64(&j, "static_bytes", static_bytes(c, o->slots));
	bench_json_u64(&j, "pool_pages_total", info->pages_total);
	bench_json_u64(&j, "pool_pages_free", info->pages_free);
	bench_json_u64(&j, "shared_pages_peak", e->shared_peak);
	bench_json_close(&j);
	bench_json_object(&j, "tiers");
	bench_json_str(&j, "preempt", o->evict ? "evict" : "recompute");
	bench_json_u64(&j, "dram_budget", o->dram_budget);
	for (unsigned t = VKV_TIER_DRAM; t <= VKV_TIER_NVME; t++) {
		bench_json_object(&j, t == VKV_TIER_DRAM ? "dram" : "nvme");
		bench_json_u64(&j, "evictions", e->evictions[t]);
		bench_json_u64(&j, "restores", e->restores[t]);
		bench_json_close(&j);
	}
	bench_json_close(&j);
	bench_json_object(&j, "verify");
	bench_json_bool(&j, "ran", v->ran);
	if (v->ran) {
		bench_json_bool(&j, "identical", v->identical);
		bench_json_u64(&j, "tokens_compared", v->tokens);
		bench_json_u64(&j, "logits_compared", v->logits);
		bench_json_u64(&j, "token_mismatches", v->token_diffs);
		bench_json_u64(&j, "logit_mismatches", v->logit_diffs);
		if (!v->identical) {
			bench_json_i64(&j, "first_request", v->first_req);
			bench_json_i64(&j, "first_step", v->first_step);
		}
		bench_json_f64(&j, "static_wall_s", ref->wall_s);
	}
	bench_json_close(&j);
	bench_json_end(&j);
}

static void report_text(const struct serve_opts *o, const struct engine *e,
			const struct vkv_ctx_info *info, const struct engine *ref,
			const struct verdict *v)
{
	const struct model_cfg *c = &e->m->c;
	char a[32], b[32], d[32];

	printf("vkvbench serve: %zu requests (%s), %llu slots, backend %s (%s), attention on %s\n",
	       e->t->n, e->t->name, (unsigned long long)o->slots, info->backend_name,
	       info->backend_detail, e->kern ? "the GPU" : "the CPU");
	printf("  model       %u layers, dim %u, %u query / %u KV heads of %u, vocab %u, "
	       "context %u\n", c->layers, c->dim, c->q_heads, c->kv_heads, c->head_dim,
	       c->vocab, c->max_ctx);
	printf("  generated   %llu tokens in %.2f s: %.0f tokens/s (%llu prompt tokens "
	       "computed, %llu iterations, %llu preemptions)\n",
	       (unsigned long long)e->tokens_out, e->wall_s,
	       e->wall_s > 0 ? e->tokens_out / e->wall_s : 0.0,
	       (unsigned long long)e->tokens_prefill, (unsigned long long)e->iterations,
	       (unsigned long long)e->preemptions);
	printf("  memory      peak committed %s with %s pages; a static cache would "
	       "reserve %s\n", bench_fmt_size(a, sizeof(a), e->committed_peak),
	       bench_fmt_size(d, sizeof(d), info->page_size),
	       bench_fmt_size(b, sizeof(b), static_bytes(c, o->slots)));
	printf("  pool        %llu pages (%llu free)%s%s\n",
	       (unsigned long long)info->pages_total, (unsigned long long)info->pages_free,
	       o->budget ? ", budget " : "",
	       o->budget ? bench_fmt_size(a, sizeof(a), o->budget) : "");
	printf("  prefix      %llu system-prompt tokens shared, up to %llu pages mapped "
	       "twice at once\n", (unsigned long long)e->prefix_tokens_shared,
	       (unsigned long long)e->shared_peak);
	printf("  tiers       preemption by %s: %llu evicted to DRAM, %llu to NVMe; "
	       "%llu + %llu restored\n", o->evict ? "eviction" : "recompute",
	       (unsigned long long)e->evictions[VKV_TIER_DRAM],
	       (unsigned long long)e->evictions[VKV_TIER_NVME],
	       (unsigned long long)e->restores[VKV_TIER_DRAM],
	       (unsigned long long)e->restores[VKV_TIER_NVME]);
	if (v->ran)
		printf("  verify      %s: %llu tokens and %llu logits vs static buffers "
		       "(%.2f s), %llu + %llu differ\n",
		       v->identical ? "IDENTICAL" : "MISMATCH", (unsigned long long)v->tokens,
		       (unsigned long long)v->logits, ref->wall_s,
		       (unsigned long long)v->token_diffs, (unsigned long long)v->logit_diffs);
	if (v->ran && !v->identical)
		printf("              first difference: request %ld (prefix id %u), "
		       "generation step %ld\n", v->first_req,
		       e->t->reqs[v->first_req].prefix_id, v->first_step);
}

/* ------------------------------------------------------------- options */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: vkvbench serve [--backend auto|host|cuda] [--requests N]\n"
		"         [--trace sharegpt|alpaca|FILE.csv] [--slots N] [--budget SIZE]\n"
		"         [--page-size 4K|2M] [--max-context T] [--layers N]\n"
		"         [--system-prompt T] [--share F] [--seed S] [--verify] [--json]\n"
		"         [--preempt evict|recompute] [--dram-budget SIZE]\n"
		"A small decoder (random weights) serving a trace from a vkv region:\n"
		"continuous batching, prefix sharing of a T-token system prompt for a\n"
		"fraction F of the requests. --verify runs it again on static buffers and\n"
		"fails unless every token and logit is bit-identical. Under --budget a\n"
		"preempted request is evicted to DRAM (up to --dram-budget, default a\n"
		"quarter of --budget), then NVMe (VKV_NVME_DIR), and restored later.\n");
}

static int parse(int argc, char **argv, struct serve_opts *o)
{
	static const struct option lopts[] = {
		{ "backend", required_argument, NULL, 'b' },
		{ "requests", required_argument, NULL, 'n' },
		{ "trace", required_argument, NULL, 't' },
		{ "slots", required_argument, NULL, 'S' },
		{ "budget", required_argument, NULL, 'B' },
		{ "page-size", required_argument, NULL, 'p' },
		{ "max-context", required_argument, NULL, 'M' },
		{ "layers", required_argument, NULL, 'L' },
		{ "system-prompt", required_argument, NULL, 'P' },
		{ "share", required_argument, NULL, 'F' },
		{ "seed", required_argument, NULL, 's' },
		{ "verify", no_argument, NULL, 'v' },
		{ "preempt", required_argument, NULL, 'E' },
		{ "dram-budget", required_argument, NULL, 'D' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	char *end;
	int c, li = 0;

	memset(o, 0, sizeof(*o));
	o->tp.spec = "sharegpt";
	o->tp.requests = 16;
	o->tp.seed = 1;
	o->tp.prefix_share = 0.5;
	o->backend = VKV_BACKEND_AUTO;
	o->slots = 8;
	o->sys_len = 32;
	o->evict = true;
	o->mc = (struct model_cfg){ .vocab = 256, .dim = 128, .q_heads = 4,
				    .kv_heads = 2, .head_dim = 32, .layers = 2,
				    .ffn = 256, .max_ctx = 1024 };
	bench_getopt_reset();
	while ((c = getopt_long(argc, argv, "", lopts, &li)) != -1) {
		int bad = 0;

		switch (c) {
		case 'b':
			bad = bench_parse_backend(optarg, &o->backend) ||
			      o->backend == VKV_BACKEND_KMOD;
			break;
		case 'n':
			bad = bench_parse_u64(optarg, 1, 100000, &v);
			o->tp.requests = (size_t)v;
			break;
		case 't': o->tp.spec = optarg; break;
		case 'S': bad = bench_parse_u64(optarg, 1, 4096, &o->slots); break;
		case 'B': bad = bench_parse_size(optarg, &o->budget); break;
		case 'p': bad = bench_parse_size(optarg, &o->page_size) || !o->page_size; break;
		case 'M':
			bad = bench_parse_u64(optarg, 8, 1u << 20, &v);
			o->mc.max_ctx = (uint32_t)v;
			break;
		case 'L':
			bad = bench_parse_u64(optarg, 1, 64, &v);
			o->mc.layers = (uint32_t)v;
			break;
		case 'P': bad = bench_parse_u64(optarg, 0, 1u << 20, &o->sys_len); break;
		case 'F':
			o->tp.prefix_share = strtod(optarg, &end);
			bad = *end || !(o->tp.prefix_share >= 0 && o->tp.prefix_share <= 1);
			break;
		case 's': bad = bench_parse_u64(optarg, 0, UINT64_MAX, &o->tp.seed); break;
		case 'v': o->verify = true; break;
		case 'E':
			bad = strcmp(optarg, "evict") && strcmp(optarg, "recompute");
			o->evict = !strcmp(optarg, "evict");
			break;
		case 'D': bad = bench_parse_size(optarg, &o->dram_budget); break;
		case 'j': o->json = true; break;
		case 'h': usage(stdout); return -1;
		default: return BENCH_USAGE;
		}
		if (bad)
			return bench_usage_error("serve", "bad value '%s' for --%s",
						 optarg, lopts[li].name);
	}
	if (optind < argc)
		return bench_usage_error("serve", "unexpected argument '%s'", argv[optind]);
	if (o->sys_len + 2 > o->mc.max_ctx)
		return bench_usage_error("serve", "--system-prompt leaves no room in "
					 "--max-context");
	o->tp.max_context = o->mc.max_ctx - o->sys_len;
	if (!o->dram_budget)
		o->dram_budget = o->budget / 4;
	o->progress = isatty(STDERR_FILENO);
	return 0;
}

/* GPU attention for a cuda context; refuse rather than fall back. */
static int open_kernels(struct engine *e, struct vkv_kern **kern)
{
#ifdef VKV_HAVE_KERNELS
	int err = vkv__kern_open(0, kern);

	if (err)
		fprintf(stderr, "vkvbench serve: cannot load the attention kernels: %s\n",
			vkv_strerror(err));
	e->kern = *kern;
	return err;
#else
	(void)e;
	(void)kern;
	fprintf(stderr, "vkvbench serve: the cuda backend needs the GPU attention "
		"kernels, and this build has none (nvcc was not found when it was "
		"built); use --backend host\n");
	return -ENODEV;
#endif
}

int bench_serve(int argc, char **argv)
{
	struct engine e, ref;
	struct vkv_ctx_info info;
	struct vkv_kern *kern = NULL;
	struct verdict v = { 0 };
	struct bench_trace t;
	struct serve_opts o;
	struct model m;
	int err, ret = BENCH_FAIL;

	err = parse(argc, argv, &o);
	if (err)
		return err < 0 ? BENCH_OK : err;
	err = bench_trace_load(&t, &o.tp);
	if (err) {
		fprintf(stderr, "vkvbench serve: trace '%s': %s\n", o.tp.spec,
			err == -ENOENT ? "not a built-in trace nor a readable file"
				       : strerror(-err));
		return BENCH_USAGE;
	}
	if (model_init(&m, &o.mc, o.tp.seed)) {
		bench_trace_free(&t);
		return BENCH_FAIL;
	}
	err = engine_alloc(&e, &o, &m, &t);
	if (!err)
		err = engine_alloc(&ref, &o, &m, &t);
	if (!err)
		err = engine_vkv(&e, &info);
	if (err) {
		fprintf(stderr, "vkvbench serve: %s\n", vkv_strerror(err));
		ret = err == -ENODEV ? BENCH_SKIP : BENCH_FAIL;
		goto out;
	}
	if (info.backend == VKV_BACKEND_CUDA && open_kernels(&e, &kern)) {
		ret = BENCH_SKIP;
		goto out;
	}
	err = serve_trace(&e, "serve");
	if (!err)
		err = vkv_ctx_info(e.ctx, &info);
	if (!err && o.verify) {
		ref.kern = kern;
		err = engine_static(&ref, kern != NULL);
		if (!err)
			err = serve_trace(&ref, "verify");
		if (!err)
			compare(&e, &ref, &v);
	}
	if (err) {
		fprintf(stderr, "vkvbench serve: %s\n", vkv_strerror(err));
		goto out;
	}
	if (o.json)
		report_json(&o, &e, &info, &ref, &v);
	else
		report_text(&o, &e, &info, &ref, &v);
	ret = !v.ran || v.identical ? BENCH_OK : BENCH_FAIL;
out:
	engine_free(&ref);
	engine_free(&e);
#ifdef VKV_HAVE_KERNELS
	if (kern)
		vkv__kern_close(kern);
#endif
	model_free(&m);
	bench_trace_free(&t);
	return ret;
}
