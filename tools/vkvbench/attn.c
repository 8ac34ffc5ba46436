// SPDX-License-Identifier: MIT
/*
 * attn.c - `vkvbench attn`: decode attention over vkv's contiguous layout
 * against a 16-token paged block table, on the same data.
 *
 * This is the vAttention claim measured by us: with the KV cache contiguous
 * in virtual memory a kernel indexes K and V with strides, while a paged
 * cache makes it look every 16-token block up in a per-sequence table. Both
 * sides run the same kernel body (kernels/attn_decode.cu) on the same
 * values; only the addressing differs. The contiguous K/V live in a vkv
 * region (cuda backend on a GPU, host backend on the CPU) unless --plain
 * asks for an ordinary buffer with the same strides.
 *
 * On a GPU the kernels are timed with CUDA events (--iters launches per
 * sample, medians of --reps samples, contiguous and paged alternating).
 * Without a GPU (or with --device cpu) the CPU references of both layouts
 * are timed instead and the report says device "cpu". The floor is a plain
 * copy of the same K/V bytes in the same run (cuMemcpyDtoD on the GPU,
 * memcpy on the CPU); bandwidths count memory traffic (bytes read by
 * attention; read + written by the copy). The two outputs are compared and
 * the run fails when they differ beyond the bound of attn_ref.h.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn_ref.h"
#include "kernels.h"
#include "vkvbench.h"
#ifdef VKV_HAVE_KERNELS
#include "cuda_driver.h"
#endif

enum attn_device { DEV_AUTO, DEV_CPU, DEV_GPU };

struct attn_opts {
	enum vkv_kern_dtype dt;
	uint64_t batch, q_heads, kv_heads, head_dim, len, reps, iters, seed;
	enum attn_device device;
	bool plain, json;
};

/* Host copies of the data: per-sequence dense rows, the paged caches. */
struct attn_data {
	uint32_t batch, max_len, max_blocks, num_blocks;
	uint64_t row;    /* bytes of one token's K (all KV heads) */
	uint64_t tokens; /* sum of lengths */
	uint32_t *lens, *slots, *table;
	uint8_t *q, *kd, *vd; /* kd/vd: [batch][max_len][row], dense */
	uint8_t *kp, *vp;     /* [num_blocks][16][row] */
	uint64_t paged_bytes;
};

/* Where the contiguous K/V live: a vkv region or a plain buffer. */
struct attn_contig {
	vkv_ctx *ctx;
	vkv_region *region;
	struct vkv_tensor k, v;
	char storage[96];
};

struct attn_result {
	char device[128];      /* "cpu" or the GPU's name */
	char storage[96];      /* where the contiguous K/V lived */
	char floor_what[32];   /* the copy that gave the floor */
	double contig_ns, paged_ns, floor_ns; /* per call, medians */
	uint64_t floor_traffic; /* bytes read + written by the floor copy */
	double max_rel_diff;
};

/* ------------------------------------------------------------- the data */

static void data_free(struct attn_data *d)
{
	free(d->lens);
	free(d->slots);
	free(d->table);
	free(d->q);
	free(d->kd);
	free(d->vd);
	free(d->kp);
	free(d->vp);
	memset(d, 0, sizeof(*d));
}

static void fill(struct bench_rng *rng, enum vkv_kern_dtype dt, void *p,
		 size_t n)
{
	for (size_t i = 0; i < n; i++)
		vkv__elem_store(dt, p, i, (float)(2 * bench_rng_unit(rng) - 1));
}

/* Ragged lengths in [len/2, 3*len/2], values uniform in [-1, 1), paged
 * blocks in shuffled order. */
static int data_make(struct attn_data *d, const struct attn_opts *o)
{
	size_t es = vkv__dtype_size(o->dt);
	struct bench_rng rng;
	uint32_t *perm = NULL, next = 0;

	memset(d, 0, sizeof(*d));
	bench_rng_seed(&rng, o->seed);
	d->batch = (uint32_t)o->batch;
	d->row = o->kv_heads * o->head_dim * es;
	d->lens = calloc(d->batch, sizeof(uint32_t));
	d->slots = calloc(d->batch, sizeof(uint32_t));
	if (!d->lens || !d->slots)
		goto oom;
	for (uint32_t i = 0; i < d->batch; i++) {
		uint64_t l = o->len / 2 + bench_rng_u64(&rng) % (o->len + 1);
		d->lens[i] = (uint32_t)(l ? l : 1);
		d->slots[i] = i;
		d->tokens += d->lens[i];
		d->max_len = d->lens[i] > d->max_len ? d->lens[i] : d->max_len;
		d->num_blocks += (d->lens[i] + 15) / 16;
	}
	d->max_blocks = (d->max_len + 15) / 16;
	d->paged_bytes = (uint64_t)d->num_blocks * 16 * d->row;
	d->q = malloc(o->batch * o->q_heads * o->head_dim * es);
	d->kd = malloc((size_t)d->batch * d->max_len * d->row);
	d->vd = malloc((size_t)d->batch * d->max_len * d->row);
	d->kp = calloc(1, d->paged_bytes);
	d->vp = calloc(1, d->paged_bytes);
	d->table = calloc((size_t)d->batch * d->max_blocks, sizeof(uint32_t));
	perm = malloc(d->num_blocks * sizeof(uint32_t));
	if (!d->q || !d->kd || !d->vd || !d->kp || !d->vp || !d->table || !perm)
		goto oom;
	fill(&rng, o->dt, d->q, o->batch * o->q_heads * o->head_dim);
	for (uint32_t b = 0; b < d->num_blocks; b++)
		perm[b] = b;
	for (uint32_t b = d->num_blocks - 1; b > 0; b--) {
		uint32_t j = (uint32_t)(bench_rng_u64(&rng) % (b + 1)), t = perm[b];
		perm[b] = perm[j];
		perm[j] = t;
	}
	for (uint32_t i = 0; i < d->batch; i++) {
		uint8_t *k = d->kd + (size_t)i * d->max_len * d->row;
		uint8_t *v = d->vd + (size_t)i * d->max_len * d->row;
		fill(&rng, o->dt, k, d->lens[i] * d->row / es);
		fill(&rng, o->dt, v, d->lens[i] * d->row / es);
		for (uint32_t t = 0; t < d->lens[i]; t++) {
			if (t % 16 == 0)
				d->table[(size_t)i * d->max_blocks + t / 16] = perm[next++];
			uint64_t at = ((uint64_t)d->table[(size_t)i * d->max_blocks +
							  t / 16] * 16 + t % 16) * d->row;
			memcpy(d->kp + at, k + t * d->row, d->row);
			memcpy(d->vp + at, v + t * d->row, d->row);
		}
	}
	free(perm);
	return 0;
oom:
	free(perm);
	data_free(d);
	return -ENOMEM;
}

/* ------------------------------------------------- contiguous storage */

static void contig_free(struct attn_contig *c)
{
	if (c->region)
		vkv_region_destroy(c->region);
	if (c->ctx)
		vkv_ctx_destroy(c->ctx);
	c->region = NULL;
	c->ctx = NULL;
}

/* K/V of every sequence written into slot i of a one-layer vkv region. */
static int contig_vkv(struct attn_contig *c, const struct attn_data *d,
		      const struct attn_opts *o, enum vkv_backend_kind backend)
{
	struct vkv_ctx_config cc;
	struct vkv_region_config rc;
	int err;

	vkv_ctx_config_init(&cc);
	cc.backend = backend;
	cc.flags |= VKV_CTX_NO_STATS;
	err = vkv_ctx_create(&cc, &c->ctx);
	if (err)
		return err;
	vkv_region_config_init(&rc);
	rc.layers = 1;
	rc.kv_heads = (uint32_t)o->kv_heads;
	rc.head_dim = (uint32_t)o->head_dim;
	rc.elem_size = (uint32_t)vkv__dtype_size(o->dt);
	rc.max_slots = d->batch;
	rc.max_context = d->max_len;
	err = vkv_region_create(c->ctx, &rc, &c->region);
	for (uint32_t i = 0; i < d->batch && !err; i++) {
		const uint8_t *k = d->kd + (size_t)i * d->max_len * d->row;
		const uint8_t *v = d->vd + (size_t)i * d->max_len * d->row;
		err = vkv_slot_alloc_at(c->region, i);
		if (!err)
			err = vkv_slot_ensure(c->region, i, d->lens[i]);
		if (!err)
			err = vkv_slot_write(c->region, i, 0, VKV_K, 0, d->lens[i], k);
		if (!err)
			err = vkv_slot_write(c->region, i, 0, VKV_V, 0, d->lens[i], v);
	}
	if (!err)
		err = vkv_region_tensor(c->region, 0, VKV_K, &c->k);
	if (!err)
		err = vkv_region_tensor(c->region, 0, VKV_V, &c->v);
	if (err)
		contig_free(c);
	else
		snprintf(c->storage, sizeof(c->storage), "vkv region (%s backend)",
			 vkv_backend_name(backend));
	return err;
}

/* The same strides over a plain buffer at base_k / base_v. */
static void contig_plain(struct attn_contig *c, const struct attn_data *d,
			 const struct attn_opts *o, uint64_t base_k,
			 uint64_t base_v)
{
	size_t es = vkv__dtype_size(o->dt);

	c->k = (struct vkv_tensor){ .addr = base_k,
				    .slot_stride = d->max_len * d->row,
				    .token_stride = d->row,
				    .head_stride = o->head_dim * es,
				    .elem_size = (uint32_t)es };
	c->v = c->k;
	c->v.addr = base_v;
	snprintf(c->storage, sizeof(c->storage), "plain buffer");
}

static struct vkv_attn_params params(const struct attn_opts *o,
				     const struct attn_data *d,
				     enum vkv_kern_layout layout)
{
	return (struct vkv_attn_params){
		.batch = d->batch,
		.q_heads = (uint32_t)o->q_heads,
		.kv_heads = (uint32_t)o->kv_heads,
		.head_dim = (uint32_t)o->head_dim,
		.scale = (float)(1.0 / sqrt((double)o->head_dim)),
		.head_stride = o->head_dim * vkv__dtype_size(o->dt),
		.token_stride = d->row,
		.seq_stride = 16 * d->row,
		.max_blocks = layout == VKV_KERN_PAGED ? d->max_blocks : 0,
		.num_blocks = layout == VKV_KERN_PAGED ? d->num_blocks : 0,
	};
}

static void use_contig(struct vkv_attn_params *p, const struct attn_contig *c)
{
	p->k = c->k.addr;
	p->v = c->v.addr;
	p->seq_stride = c->k.slot_stride;
	p->token_stride = c->k.token_stride;
	p->head_stride = c->k.head_stride;
}

static double max_diff(const struct attn_opts *o, const void *a, const void *b,
		       size_t n)
{
	double worst = 0;

	for (size_t i = 0; i < n; i++) {
		double x = vkv__elem_load(o->dt, a, i), y = vkv__elem_load(o->dt, b, i);
		double e = isnan(x) || isnan(y) ? INFINITY : fabs(x - y);
		worst = e > worst ? e : worst;
	}
	return worst; /* V is in [-1, 1): this is rel_err of attn_ref.h */
}

/* ------------------------------------------------------------------ CPU */

static int run_cpu(const struct attn_opts *o, const struct attn_data *d,
		   struct attn_result *res)
{
	size_t n = o->batch * o->q_heads * o->head_dim;
	size_t es = vkv__dtype_size(o->dt);
	uint64_t kv_bytes = 2 * d->tokens * d->row;
	void *out_c = malloc(n * es), *out_p = malloc(n * es);
	void *scratch = malloc(kv_bytes);
	double *tc = calloc(o->reps, sizeof(double)), *tp = calloc(o->reps, sizeof(double));
	double *tf = calloc(o->reps, sizeof(double));
	struct attn_contig c = { 0 };
	int err = -ENOMEM;

	if (!out_c || !out_p || !scratch || !tc || !tp || !tf)
		goto out;
	err = o->plain ? -1 : contig_vkv(&c, d, o, VKV_BACKEND_HOST);
	if (err > 0 || err < -1)
		fprintf(stderr, "vkvbench attn: no vkv host region (%s); "
				"contiguous K/V in a plain buffer\n", vkv_strerror(err));
	if (err)
		contig_plain(&c, d, o, (uintptr_t)d->kd, (uintptr_t)d->vd);
	struct vkv_attn_params pc = params(o, d, VKV_KERN_CONTIG);
	struct vkv_attn_params pp = params(o, d, VKV_KERN_PAGED);
	pc.q = pp.q = (uintptr_t)d->q;
	pc.seq_len = pp.seq_len = (uintptr_t)d->lens;
	pc.out = (uintptr_t)out_c;
	pp.out = (uintptr_t)out_p;
	pc.seq_slot = (uintptr_t)d->slots;
	use_contig(&pc, &c);
	pp.k = (uintptr_t)d->kp;
	pp.v = (uintptr_t)d->vp;
	pp.block_table = (uintptr_t)d->table;
	for (uint64_t r = 0; r < o->reps; r++) {
		for (int side = 0; side < 2; side++) {
			bool paged = (side + r) % 2;
			uint64_t t0 = bench_now_ns();
			err = vkv__attn_ref(paged ? VKV_KERN_PAGED : VKV_KERN_CONTIG,
					    o->dt, paged ? &pp : &pc);
			if (err)
				goto out;
			(paged ? tp : tc)[r] = (double)(bench_now_ns() - t0);
		}
		uint64_t t0 = bench_now_ns();
		memcpy(scratch, d->kp, kv_bytes / 2);
		memcpy((uint8_t *)scratch + kv_bytes / 2, d->vp, kv_bytes / 2);
		tf[r] = (double)(bench_now_ns() - t0);
	}
	snprintf(res->device, sizeof(res->device), "cpu");
	snprintf(res->storage, sizeof(res->storage), "%s", c.storage);
	snprintf(res->floor_what, sizeof(res->floor_what), "memcpy");
	res->floor_traffic = 2 * kv_bytes;
	res->contig_ns = bench_median_f64(tc, o->reps);
	res->paged_ns = bench_median_f64(tp, o->reps);
	res->floor_ns = bench_median_f64(tf, o->reps);
	res->max_rel_diff = max_diff(o, out_c, out_p, n);
	err = 0;
out:
	contig_free(&c);
	free(out_c);
	free(out_p);
	free(scratch);
	free(tc);
	free(tp);
	free(tf);
	return err;
}

/* ------------------------------------------------------------------ GPU */

#ifdef VKV_HAVE_KERNELS

enum { B_Q, B_OUT_C, B_OUT_P, B_LENS, B_SLOTS, B_TABLE, B_KP, B_VP, B_KC,
       B_VC, B_SCRATCH, B_COUNT };

struct gpu_run {
	struct vkv_kern *k;
	const struct vkv_cu *cu;
	struct vkv_kern_buf b[B_COUNT];
	uint64_t paged; /* bytes of the K cache; V follows it in B_KP */
	CUevent e0, e1;
};

static int gpu_buf(struct gpu_run *g, int i, const void *src, uint64_t bytes)
{
	int err = vkv__kern_buf_alloc(g->k, bytes ? bytes : 1, &g->b[i]);

	if (!err && src && bytes)
		err = vkv__kern_upload(g->k, g->b[i].addr, src, bytes);
	return err;
}

/* ns per call of `iters` back-to-back launches (or floor copies). */
static int gpu_time(struct gpu_run *g, const struct attn_opts *o,
		    enum vkv_kern_layout layout, const struct vkv_attn_params *p,
		    double *ns)
{
	const struct vkv_cu *cu = g->cu;
	float ms = 0;
	int err = VKV_CU_CALL(cu, cuEventRecord, g->e0, NULL);

	for (uint64_t i = 0; i < o->iters && !err; i++) {
		if (p)
			err = vkv__kern_attn_decode(g->k, NULL, layout, o->dt, p);
		else
			err = VKV_CU_CALL(cu, cuMemcpyDtoDAsync, g->b[B_SCRATCH].addr,
					  g->b[B_KP].addr, 2 * g->paged, NULL);
	}
	if (!err)
		err = VKV_CU_CALL(cu, cuEventRecord, g->e1, NULL);
	if (!err)
		err = VKV_CU_CALL(cu, cuEventSynchronize, g->e1);
	if (!err)
		err = VKV_CU_CALL(cu, cuEventElapsedTime, &ms, g->e0, g->e1);
	*ns = (double)ms * 1e6 / (double)o->iters;
	return err;
}

static int gpu_upload(struct gpu_run *g, const struct attn_opts *o,
		      const struct attn_data *d, struct attn_contig *c)
{
	size_t es = vkv__dtype_size(o->dt);
	size_t out = o->batch * o->q_heads * o->head_dim * es;
	uint64_t dense = (uint64_t)d->batch * d->max_len * d->row;
	int err = gpu_buf(g, B_Q, d->q, out);

	if (!err)
		err = gpu_buf(g, B_OUT_C, NULL, out);
	if (!err)
		err = gpu_buf(g, B_OUT_P, NULL, out);
	if (!err)
		err = gpu_buf(g, B_LENS, d->lens, d->batch * 4);
	if (!err)
		err = gpu_buf(g, B_SLOTS, d->slots, d->batch * 4);
	if (!err)
		err = gpu_buf(g, B_TABLE, d->table, (uint64_t)d->batch * d->max_blocks * 4);
	/* KP and VP back to back in one buffer, so the floor is one copy */
	if (!err)
		err = gpu_buf(g, B_KP, NULL, 2 * d->paged_bytes);
	if (!err)
		err = vkv__kern_upload(g->k, g->b[B_KP].addr, d->kp, d->paged_bytes);
	if (!err)
		err = vkv__kern_upload(g->k, g->b[B_KP].addr + d->paged_bytes, d->vp,
				       d->paged_bytes);
	g->paged = d->paged_bytes;
	if (!err)
		err = gpu_buf(g, B_SCRATCH, NULL, 2 * d->paged_bytes);
	if (err)
		return err;
	if (!o->plain) {
		err = contig_vkv(c, d, o, VKV_BACKEND_CUDA);
		if (!err)
			return 0;
		fprintf(stderr, "vkvbench attn: no vkv cuda region (%s); "
				"contiguous K/V in a plain buffer\n", vkv_strerror(err));
	}
	err = gpu_buf(g, B_KC, d->kd, dense);
	if (!err)
		err = gpu_buf(g, B_VC, d->vd, dense);
	if (!err)
		contig_plain(c, d, o, g->b[B_KC].addr, g->b[B_VC].addr);
	return err;
}

static void gpu_free(struct gpu_run *g)
{
	for (int i = 0; i < B_COUNT; i++)
		vkv__kern_buf_free(g->k, &g->b[i]);
	if (g->e0)
		g->cu->cuEventDestroy(g->e0);
	if (g->e1)
		g->cu->cuEventDestroy(g->e1);
}

static int run_gpu(struct vkv_kern *k, const struct attn_opts *o,
		   const struct attn_data *d, struct attn_result *res)
{
	size_t n = o->batch * o->q_heads * o->head_dim;
	size_t es = vkv__dtype_size(o->dt);
	struct gpu_run g = { .k = k, .cu = vkv__cu() };
	struct attn_contig c = { 0 };
	double *tc = calloc(o->reps, sizeof(double)), *tp = calloc(o->reps, sizeof(double));
	double *tf = calloc(o->reps, sizeof(double));
	void *out_c = malloc(n * es), *out_p = malloc(n * es);
	int err = -ENOMEM;

	if (!tc || !tp || !tf || !out_c || !out_p)
		goto out;
	err = VKV_CU_CALL(g.cu, cuEventCreate, &g.e0, CU_EVENT_DEFAULT);
	if (!err)
		err = VKV_CU_CALL(g.cu, cuEventCreate, &g.e1, CU_EVENT_DEFAULT);
	if (!err)
		err = gpu_upload(&g, o, d, &c);
	if (err)
		goto out;
	struct vkv_attn_params pc = params(o, d, VKV_KERN_CONTIG);
	struct vkv_attn_params pp = params(o, d, VKV_KERN_PAGED);
	pc.q = pp.q = g.b[B_Q].addr;
	pc.seq_len = pp.seq_len = g.b[B_LENS].addr;
	pc.out = g.b[B_OUT_C].addr;
	pp.out = g.b[B_OUT_P].addr;
	pc.seq_slot = g.b[B_SLOTS].addr;
	use_contig(&pc, &c);
	pp.k = g.b[B_KP].addr;
	pp.v = g.b[B_KP].addr + d->paged_bytes;
	pp.block_table = g.b[B_TABLE].addr;
	double warm;
	err = gpu_time(&g, o, VKV_KERN_CONTIG, &pc, &warm);
	if (!err)
		err = gpu_time(&g, o, VKV_KERN_PAGED, &pp, &warm);
	for (uint64_t r = 0; r < o->reps && !err; r++) {
		bool paged_first = r % 2;
		err = gpu_time(&g, o, paged_first ? VKV_KERN_PAGED : VKV_KERN_CONTIG,
			       paged_first ? &pp : &pc, paged_first ? &tp[r] : &tc[r]);
		if (!err)
			err = gpu_time(&g, o, paged_first ? VKV_KERN_CONTIG : VKV_KERN_PAGED,
				       paged_first ? &pc : &pp,
				       paged_first ? &tc[r] : &tp[r]);
		if (!err)
			err = gpu_time(&g, o, VKV_KERN_CONTIG, NULL, &tf[r]);
	}
	if (!err)
		err = vkv__kern_download(k, out_c, g.b[B_OUT_C].addr, n * es);
	if (!err)
		err = vkv__kern_download(k, out_p, g.b[B_OUT_P].addr, n * es);
	if (err)
		goto out;
	snprintf(res->device, sizeof(res->device), "%s", vkv__kern_device_name(k));
	snprintf(res->storage, sizeof(res->storage), "%s", c.storage);
	snprintf(res->floor_what, sizeof(res->floor_what), "cuMemcpyDtoDAsync");
	res->floor_traffic = 4 * d->paged_bytes;
	res->contig_ns = bench_median_f64(tc, o->reps);
	res->paged_ns = bench_median_f64(tp, o->reps);
	res->floor_ns = bench_median_f64(tf, o->reps);
	res->max_rel_diff = max_diff(o, out_c, out_p, n);
out:
	contig_free(&c);
	gpu_free(&g);
	free(tc);
	free(tp);
	free(tf);
	free(out_c);
	free(out_p);
	return err;
}
#endif /* VKV_HAVE_KERNELS */

/* ---------------------------------------------------------------- driver */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: vkvbench attn [--device auto|cpu|gpu] [--dtype f16|f32|bf16]\n"
		"                     [--batch N] [--q-heads N] [--kv-heads N]\n"
		"                     [--head-dim N] [--len N] [--reps N] [--iters N]\n"
		"                     [--seed N] [--plain] [--json]\n"
		"Decode attention over vkv's contiguous layout vs a 16-token paged\n"
		"block table, same kernel body, same data; lengths are drawn in\n"
		"[len/2, 3*len/2]. GPU kernels when one is usable (CUDA events),\n"
		"else the CPU references. --plain: contiguous K/V in a plain buffer\n"
		"instead of a vkv region.\n");
}

static int parse_dtype(const char *s, enum vkv_kern_dtype *dt)
{
	for (int i = 0; i < VKV_KERN_DTYPE_COUNT; i++)
		if (!strcmp(s, vkv__dtype_name(i))) {
			*dt = i;
			return 0;
		}
	return -EINVAL;
}

static int parse(int argc, char **argv, struct attn_opts *o)
{
	static const struct option lopts[] = {
		{ "device", required_argument, NULL, 'D' },
		{ "dtype", required_argument, NULL, 't' },
		{ "batch", required_argument, NULL, 'b' },
		{ "q-heads", required_argument, NULL, 'q' },
		{ "kv-heads", required_argument, NULL, 'k' },
		{ "head-dim", required_argument, NULL, 'd' },
		{ "len", required_argument, NULL, 'l' },
		{ "reps", required_argument, NULL, 'r' },
		{ "iters", required_argument, NULL, 'i' },
		{ "seed", required_argument, NULL, 's' },
		{ "plain", no_argument, NULL, 'p' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c, bad = 0;

	*o = (struct attn_opts){ .dt = VKV_KERN_F16, .q_heads = 32, .kv_heads = 8,
				 .head_dim = 128, .reps = 9, .iters = 20,
				 .seed = 42 };
	bench_getopt_reset();
	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 'D':
			if (!strcmp(optarg, "auto"))
				o->device = DEV_AUTO;
			else if (!strcmp(optarg, "cpu"))
				o->device = DEV_CPU;
			else if (!strcmp(optarg, "gpu"))
				o->device = DEV_GPU;
			else
				bad = 1;
			break;
		case 't':
			bad = parse_dtype(optarg, &o->dt);
			break;
		case 'b':
			bad = bench_parse_u64(optarg, 1, 65535, &o->batch);
			break;
		case 'q':
			bad = bench_parse_u64(optarg, 1, 1024, &o->q_heads);
			break;
		case 'k':
			bad = bench_parse_u64(optarg, 1, 1024, &o->kv_heads);
			break;
		case 'd':
			bad = bench_parse_u64(optarg, 1, VKV_KERN_MAX_HEAD_DIM,
					      &o->head_dim);
			break;
		case 'l':
			bad = bench_parse_u64(optarg, 1, 1u << 20, &o->len);
			break;
		case 'r':
			bad = bench_parse_u64(optarg, 1, 1000, &o->reps);
			break;
		case 'i':
			bad = bench_parse_u64(optarg, 1, 100000, &o->iters);
			break;
		case 's':
			bad = bench_parse_u64(optarg, 0, UINT64_MAX, &o->seed);
			break;
		case 'p':
			o->plain = true;
			break;
		case 'j':
			o->json = true;
			break;
		case 'h':
			usage(stdout);
			return -1;
		default:
			return BENCH_USAGE;
		}
		if (bad)
			return bench_usage_error("attn", "bad value '%s'", optarg);
	}
	if (optind < argc)
		return bench_usage_error("attn", "unexpected argument '%s'", argv[optind]);
	if (o->q_heads % o->kv_heads)
		return bench_usage_error("attn", "--q-heads must be a multiple of --kv-heads");
	return 0;
}

static void report(const struct attn_opts *o, const struct attn_data *d,
		   const struct attn_result *r)
{
	double kv = 2.0 * (double)d->tokens * (double)d->row;
	double ratio = r->paged_ns / r->contig_ns;

	if (!o->json) {
		printf("attn: decode attention, %s, %s, batch %u, %llu tokens, "
		       "q_heads %llu, kv_heads %llu, head_dim %llu\n",
		       r->device, vkv__dtype_name(o->dt), d->batch,
		       (unsigned long long)d->tokens, (unsigned long long)o->q_heads,
		       (unsigned long long)o->kv_heads,
		       (unsigned long long)o->head_dim);
		printf("  contiguous (%s): %10.1f us  %7.1f GB/s\n", r->storage,
		       r->contig_ns / 1e3, kv / r->contig_ns);
		printf("  paged (16-token blocks):  %10.1f us  %7.1f GB/s\n",
		       r->paged_ns / 1e3, kv / r->paged_ns);
		printf("  floor (%s):  %10.1f us  %7.1f GB/s\n", r->floor_what,
		       r->floor_ns / 1e3, (double)r->floor_traffic / r->floor_ns);
		printf("  paged / contiguous time: %.3f; outputs differ by %.2g "
		       "(bound %.2g)\n", ratio, r->max_rel_diff, vkv__attn_tol(o->dt));
		return;
	}
	struct bench_json j;
	bench_json_begin(&j, stdout);
	bench_json_str(&j, "bench", "attn");
	bench_json_str(&j, "device", r->device);
	bench_json_str(&j, "dtype", vkv__dtype_name(o->dt));
	bench_json_u64(&j, "batch", d->batch);
	bench_json_u64(&j, "q_heads", o->q_heads);
	bench_json_u64(&j, "kv_heads", o->kv_heads);
	bench_json_u64(&j, "head_dim", o->head_dim);
	bench_json_u64(&j, "mean_len", o->len);
	bench_json_u64(&j, "tokens", d->tokens);
	bench_json_u64(&j, "kv_bytes", (uint64_t)kv);
	bench_json_u64(&j, "reps", o->reps);
	bench_json_u64(&j, "iters", o->iters);
	bench_json_str(&j, "unit", "us_per_call");
	bench_json_object(&j, "contig");
	bench_json_str(&j, "storage", r->storage);
	bench_json_f64(&j, "us", r->contig_ns / 1e3);
	bench_json_f64(&j, "gbps", kv / r->contig_ns);
	bench_json_close(&j);
	bench_json_object(&j, "paged");
	bench_json_u64(&j, "block_tokens", VKV_KERN_BLOCK_TOKENS);
	bench_json_f64(&j, "us", r->paged_ns / 1e3);
	bench_json_f64(&j, "gbps", kv / r->paged_ns);
	bench_json_close(&j);
	bench_json_object(&j, "floor");
	bench_json_str(&j, "what", r->floor_what);
	bench_json_f64(&j, "us", r->floor_ns / 1e3);
	bench_json_f64(&j, "gbps", (double)r->floor_traffic / r->floor_ns);
	bench_json_close(&j);
	bench_json_f64(&j, "paged_over_contig", ratio);
	bench_json_f64(&j, "contig_fraction_of_floor",
		       (kv / r->contig_ns) / ((double)r->floor_traffic / r->floor_ns));
	bench_json_f64(&j, "max_rel_diff", r->max_rel_diff);
	bench_json_f64(&j, "tol", vkv__attn_tol(o->dt));
	bench_json_end(&j);
}

int bench_attn(int argc, char **argv)
{
	struct attn_opts o;
	struct attn_data d;
	struct attn_result res = { 0 };
	bool gpu = false;
	const char *why = "built without the CUDA kernels (nvcc not found)";
	int err = parse(argc, argv, &o);

	if (err)
		return err < 0 ? BENCH_OK : err;
#ifdef VKV_HAVE_KERNELS
	struct vkv_kern *k = NULL;
	if (o.device != DEV_CPU) {
		const char *dev = getenv("VKV_DEVICE");
		err = vkv__kern_open(dev ? atoi(dev) : 0, &k);
		gpu = !err;
		why = err ? vkv_strerror(err) : "";
	}
#endif
	if (o.device == DEV_GPU && !gpu) {
		fprintf(stderr, "vkvbench attn: no GPU kernels here: %s\n", why);
		return BENCH_SKIP;
	}
	/* unset sizes: a real batch on a GPU, seconds' worth on the CPU */
	if (!o.batch)
		o.batch = gpu ? 32 : 4;
	if (!o.len)
		o.len = gpu ? 2048 : 256;
	if (!gpu)
		o.reps = o.reps < 3 ? o.reps : 3;
	err = data_make(&d, &o);
	if (!err) {
#ifdef VKV_HAVE_KERNELS
		err = gpu ? run_gpu(k, &o, &d, &res) : run_cpu(&o, &d, &res);
#else
		err = run_cpu(&o, &d, &res);
#endif
	}
#ifdef VKV_HAVE_KERNELS
	vkv__kern_close(k);
#endif
	if (err) {
		fprintf(stderr, "vkvbench attn: %s\n", vkv_strerror(err));
		data_free(&d);
		return BENCH_FAIL;
	}
	report(&o, &d, &res);
	data_free(&d);
	if (!(res.max_rel_diff <= vkv__attn_tol(o.dt))) {
		fprintf(stderr, "vkvbench attn: contiguous and paged outputs differ "
				"by %g (bound %g)\n", res.max_rel_diff,
			vkv__attn_tol(o.dt));
		return BENCH_FAIL;
	}
	return BENCH_OK;
}
