// SPDX-License-Identifier: MIT
/*
 * preload.c - `vkvbench preload`: how much memory the LD_PRELOAD shim's
 * arena maps to serve a realistic allocation trace, against the floor: the
 * peak of the bytes the program actually holds.
 *
 * The traces are what a PyTorch program asks of cudaMalloc when nothing
 * caches in between (PYTORCH_NO_CUDA_MEMORY_CACHING=1, or the shim under a
 * framework's own pool seeing its segments): every tensor is one
 * allocation. Drawn with a fixed seed, so every run replays the same ops:
 *
 *   train   a GPT-style model (--layers, --hidden, --vocab) in mixed
 *           precision: bf16 weights, fp32 master weights and Adam moments
 *           created at the first step, per-step gradients freed by
 *           zero_grad(set_to_none); forward saves activations layer by
 *           layer, backward frees them in reverse and creates gradient
 *           temporaries; the batch's sequence length changes every step,
 *           so activation sizes never repeat exactly; scalars and small
 *           reduction buffers come and go throughout.
 *   infer   generation without a paged cache: batches of requests with
 *           random prompt and output lengths; every decode step grows each
 *           layer's K and V by one token the way torch.cat does (allocate
 *           the bigger tensor, free the old one), the textbook case of a
 *           fragmenting allocator; plus per-step activations and logits.
 *
 * The replay runs the shim's arena code (runtime/preload/arena.c) with
 * bookkeeping callbacks instead of the driver, chunk = 2 MiB (today's GPU
 * granularity), the default idle cache (--idle); no GPU is needed and the
 * numbers are exactly what the shim would map for the same trace.
 *
 * Reported per trace: peak live bytes (the floor), peak mapped bytes, their
 * ratio (target <= 1.15), and for comparison the peak a VMM allocator that
 * maps each allocation separately (rounded up to a chunk) would reach, and
 * the arena's peak if it never unmapped idle chunks. Exit status 1 when a
 * ratio misses the target.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "preload/arena.h"
#include "vkvbench.h"

#define TARGET_RATIO 1.15
#define CHUNK (2ULL << 20)
#define MiB (1ULL << 20)

struct pl_opts {
	const char *trace; /* "train", "infer" or "all" */
	uint64_t seed;
	uint64_t layers, hidden, vocab, steps;
	uint64_t idle;
	bool json;
};

/* ------------------------------------------------------------------ trace */

struct pl_op {
	uint32_t id;   /* tensor */
	bool alloc;
	uint64_t size; /* alloc only */
};

struct pl_trace {
	struct pl_op *ops;
	size_t n, cap;
	uint32_t next_id;
	uint64_t live, peak_live;        /* requested bytes */
	uint64_t per_alloc, peak_per_alloc; /* each rounded up to a chunk */
	uint64_t *sizes;                 /* by id */
	size_t sizes_cap;
	bool oom;
	struct bench_rng rng;
};

static bool grow(void **v, size_t *cap, size_t need, size_t elem)
{
	size_t ncap = *cap ? *cap : 1024;
	void *p;

	if (need <= *cap)
		return true;
	while (ncap < need)
		ncap *= 2;
	p = realloc(*v, ncap * elem);
	if (!p)
		return false;
	*v = p;
	*cap = ncap;
	return true;
}

static bool push(struct pl_trace *t, struct pl_op op)
{
	if (!grow((void **)&t->ops, &t->cap, t->n + 1, sizeof(*t->ops))) {
		t->oom = true;
		return false;
	}
	t->ops[t->n++] = op;
	return true;
}

static uint32_t A(struct pl_trace *t, uint64_t size)
{
	uint32_t id = t->next_id++;

	if (size == 0)
		size = 1;
	if (!grow((void **)&t->sizes, &t->sizes_cap, id + 1, sizeof(*t->sizes)) ||
	    !push(t, (struct pl_op){ id, true, size })) {
		t->oom = true;
		return id;
	}
	t->sizes[id] = size;
	t->live += size;
	t->per_alloc += (size + CHUNK - 1) / CHUNK * CHUNK;
	if (t->live > t->peak_live)
		t->peak_live = t->live;
	if (t->per_alloc > t->peak_per_alloc)
		t->peak_per_alloc = t->per_alloc;
	return id;
}

static void F(struct pl_trace *t, uint32_t id)
{
	if (t->oom || !push(t, (struct pl_op){ id, false, 0 }))
		return;
	t->live -= t->sizes[id];
	t->per_alloc -= (t->sizes[id] + CHUNK - 1) / CHUNK * CHUNK;
}

static uint64_t rnd(struct pl_trace *t, uint64_t lo, uint64_t hi)
{
	return lo + bench_rng_u64(&t->rng) % (hi - lo + 1);
}

/* A few scalars and small reductions (loss scale, norms, masks) that live
 * for a handful of operations, as frameworks sprinkle them everywhere. */
static void small_noise(struct pl_trace *t, uint32_t *pend, size_t *npend)
{
	if (*npend >= 8 || bench_rng_unit(&t->rng) < 0.5) {
		while (*npend)
			F(t, pend[--*npend]);
	}
	pend[(*npend)++] = A(t, bench_rng_unit(&t->rng) < 0.7 ? rnd(t, 4, 512)
							 : rnd(t, 512, 64 << 10));
}

/* ---------------------------------------------------------------- training */

enum { P_QKV_W, P_QKV_B, P_O_W, P_O_B, P_LN1_W, P_LN1_B, P_LN2_W, P_LN2_B,
       P_FC1_W, P_FC1_B, P_FC2_W, P_FC2_B, P_PER_LAYER };

static uint64_t param_elems(unsigned which, uint64_t H)
{
	switch (which) {
	case P_QKV_W: return 3 * H * H;
	case P_QKV_B: return 3 * H;
	case P_O_W: return H * H;
	case P_FC1_W: return 4 * H * H;
	case P_FC1_B: return 4 * H;
	case P_FC2_W: return 4 * H * H;
	default: return H;
	}
}

/* Saved activations of one layer's forward, freed by its backward. */
struct layer_saved {
	uint32_t ln1, qkv, attn, lse, h, ln2, fc1, gelu, out, stats1, stats2;
};

static void layer_forward(struct pl_trace *t, struct layer_saved *s, uint64_t T,
			  uint64_t B, uint64_t S, uint64_t H, uint32_t *pend,
			  size_t *npend)
{
	uint64_t act = T * H * 2;
	uint32_t o, fc2;

	s->ln1 = A(t, act);
	s->stats1 = A(t, T * 8);
	s->qkv = A(t, 3 * act);
	s->attn = A(t, act);
	s->lse = A(t, B * 16 * S * 4);
	small_noise(t, pend, npend);
	o = A(t, act);
	s->h = A(t, act);
	F(t, o);
	s->ln2 = A(t, act);
	s->stats2 = A(t, T * 8);
	s->fc1 = A(t, 4 * act);
	s->gelu = A(t, 4 * act);
	fc2 = A(t, act);
	s->out = A(t, act);
	F(t, fc2);
	small_noise(t, pend, npend);
}

static void layer_backward(struct pl_trace *t, struct layer_saved *s,
			   uint64_t T, uint64_t H, uint32_t *grads,
			   uint32_t *pend, size_t *npend)
{
	uint64_t act = T * H * 2;
	uint32_t dgelu, dfc1, dln2, dh, dqkv, dattn, dln1;

	dgelu = A(t, 4 * act);
	grads[P_FC2_W] = A(t, param_elems(P_FC2_W, H) * 2);
	grads[P_FC2_B] = A(t, param_elems(P_FC2_B, H) * 2);
	F(t, s->out);
	F(t, s->gelu);
	dfc1 = A(t, 4 * act);
	F(t, dgelu);
	grads[P_FC1_W] = A(t, param_elems(P_FC1_W, H) * 2);
	grads[P_FC1_B] = A(t, param_elems(P_FC1_B, H) * 2);
	F(t, s->fc1);
	dln2 = A(t, act);
	F(t, dfc1);
	grads[P_LN2_W] = A(t, H * 2);
	grads[P_LN2_B] = A(t, H * 2);
	F(t, s->ln2);
	F(t, s->stats2);
	dh = A(t, act);
	F(t, dln2);
	small_noise(t, pend, npend);
	dattn = A(t, act);
	grads[P_O_W] = A(t, param_elems(P_O_W, H) * 2);
	grads[P_O_B] = A(t, H * 2);
	F(t, s->h);
	dqkv = A(t, 3 * act);
	F(t, dattn);
	F(t, s->attn);
	F(t, s->lse);
	grads[P_QKV_W] = A(t, param_elems(P_QKV_W, H) * 2);
	grads[P_QKV_B] = A(t, param_elems(P_QKV_B, H) * 2);
	F(t, s->qkv);
	dln1 = A(t, act);
	F(t, dqkv);
	grads[P_LN1_W] = A(t, H * 2);
	grads[P_LN1_B] = A(t, H * 2);
	F(t, s->ln1);
	F(t, s->stats1);
	F(t, dh);
	F(t, dln1);
}

static int gen_train(struct pl_trace *t, const struct pl_opts *o)
{
	static const uint64_t seqs[] = { 512, 768, 1024, 1536, 2048 };
	uint64_t L = o->layers, H = o->hidden, V = o->vocab, B = 8;
	uint64_t nparams = L * P_PER_LAYER;
	uint32_t *grads = calloc(nparams + 1, sizeof(uint32_t));
	struct layer_saved *saved = calloc(L, sizeof(*saved));
	uint32_t pend[16];
	size_t npend = 0;

	if (!grads || !saved) {
		free(grads);
		free(saved);
		return -ENOMEM;
	}
	/* bf16 weights, alive throughout */
	A(t, V * H * 2);
	for (uint64_t l = 0; l < L; l++)
		for (unsigned p = 0; p < P_PER_LAYER; p++)
			A(t, param_elems(p, H) * 2);
	for (uint64_t step = 0; step < o->steps && !t->oom; step++) {
		uint64_t S = seqs[bench_rng_u64(&t->rng) % 5], T = B * S;
		uint32_t logits, logits32, dlogits, gemb;

		for (uint64_t l = 0; l < L; l++)
			layer_forward(t, &saved[l], T, B, S, H, pend, &npend);
		logits = A(t, T * V * 2);
		logits32 = A(t, T * V * 4);
		F(t, logits);
		small_noise(t, pend, &npend);
		dlogits = A(t, T * V * 2);
		F(t, logits32);
		gemb = A(t, V * H * 2);
		F(t, dlogits);
		for (uint64_t l = L; l-- > 0;)
			layer_backward(t, &saved[l], T, H, &grads[l * P_PER_LAYER],
				       pend, &npend);
		/* The first step creates the optimizer state: fp32 master
		 * weights and two Adam moments per parameter. */
		if (step == 0) {
			A(t, V * H * 12);
			for (uint64_t i = 0; i < nparams; i++)
				for (int k = 0; k < 3; k++)
					A(t, param_elems((unsigned)(i % P_PER_LAYER), H) * 4);
		}
		small_noise(t, pend, &npend);
		/* zero_grad(set_to_none=True) */
		for (uint64_t i = 0; i < nparams; i++)
			F(t, grads[i]);
		F(t, gemb);
	}
	while (npend)
		F(t, pend[--npend]);
	free(grads);
	free(saved);
	return t->oom ? -ENOMEM : 0;
}

/* --------------------------------------------------------------- inference */

static int gen_infer(struct pl_trace *t, const struct pl_opts *o)
{
	uint64_t L = o->layers, H = o->hidden, V = o->vocab;
	uint32_t *kv = calloc(2 * L, sizeof(uint32_t));
	uint32_t pend[16];
	size_t npend = 0;

	if (!kv)
		return -ENOMEM;
	for (uint64_t l = 0; l < L; l++)
		for (unsigned p = 0; p < P_PER_LAYER; p++)
			A(t, param_elems(p, H) * 2);
	A(t, V * H * 2);
	for (uint64_t batch = 0; batch < o->steps && !t->oom; batch++) {
		uint64_t B = rnd(t, 1, 16), P = rnd(t, 64, 2048), G = rnd(t, 32, 384);
		uint64_t len = P;
		uint32_t x, tmp, logits;

		/* prefill: activations for B x P tokens, then the cache */
		x = A(t, B * P * H * 2);
		for (uint64_t l = 0; l < L; l++) {
			tmp = A(t, B * P * 4 * H * 2);
			kv[2 * l] = A(t, B * P * H * 2);
			kv[2 * l + 1] = A(t, B * P * H * 2);
			F(t, tmp);
		}
		logits = A(t, B * V * 4);
		F(t, x);
		F(t, logits);
		for (uint64_t g = 0; g < G && !t->oom; g++, len++) {
			x = A(t, B * H * 2);
			for (uint64_t l = 0; l < L; l++) {
				for (int k = 0; k < 2; k++) {
					uint32_t old = kv[2 * l + (uint64_t)k];

					kv[2 * l + (uint64_t)k] = A(t, B * (len + 1) * H * 2);
					F(t, old);
				}
				tmp = A(t, B * 4 * H * 2);
				F(t, tmp);
			}
			logits = A(t, B * V * 4);
			small_noise(t, pend, &npend);
			F(t, logits);
			F(t, x);
		}
		for (uint64_t i = 0; i < 2 * L; i++)
			F(t, kv[i]);
	}
	while (npend)
		F(t, pend[--npend]);
	free(kv);
	return t->oom ? -ENOMEM : 0;
}

/* ------------------------------------------------------------------ replay */

/* Bookkeeping stand-ins for the driver: count, never fail. */
static int fake_map(void *priv, uint64_t addr, uint64_t n, uint64_t *handles)
{
	(void)priv;
	(void)addr;
	memset(handles, 0, n * sizeof(*handles));
	return 0;
}

static void fake_unmap(void *priv, uint64_t addr, uint64_t n,
		       const uint64_t *handles)
{
	(void)priv;
	(void)addr;
	(void)n;
	(void)handles;
}

static bool fake_done(void *priv, uint64_t fence)
{
	(void)priv;
	(void)fence;
	return true;
}

static void fake_fence(void *priv, uint64_t fence)
{
	(void)priv;
	(void)fence;
}

static const struct vkv_arena_ops fake_ops = {
	.map = fake_map,
	.unmap = fake_unmap,
	.fence_done = fake_done,
	.fence_wait = fake_fence,
	.fence_put = fake_fence,
};

struct pl_result {
	uint64_t ops;
	uint64_t peak_mapped, peak_mapped_keep;
	uint64_t maps, unmaps;
	double ns_per_op;
};

/* Replay t on a fresh arena; idle_max is the idle cache kept. */
static int replay(const struct pl_trace *t, uint64_t idle_max,
		  struct pl_result *r, bool keep)
{
	uint64_t va = (t->peak_per_alloc * 4 + CHUNK * 64) / CHUNK * CHUNK;
	uint64_t *addr = calloc(t->next_id + 1, sizeof(uint64_t));
	struct vkv_arena a;
	uint64_t t0, t1;
	int err;

	if (!addr)
		return -ENOMEM;
	/* Any aligned base will do: nothing is ever touched. */
	err = vkv__arena_init(&a, 1ULL << 40, va, CHUNK, 1ULL << 20, idle_max,
			      &fake_ops, NULL);
	if (err) {
		free(addr);
		return err;
	}
	t0 = bench_now_ns();
	for (size_t i = 0; i < t->n && !err; i++) {
		const struct pl_op *op = &t->ops[i];

		if (op->alloc)
			err = vkv__arena_alloc(&a, op->size, VKV_ARENA_NO_STREAM,
					       &addr[op->id]);
		else
			err = vkv__arena_free(&a, addr[op->id]);
	}
	t1 = bench_now_ns();
	if (keep) {
		r->peak_mapped_keep = a.c.peak_mapped;
	} else {
		r->ops = t->n;
		r->peak_mapped = a.c.peak_mapped;
		r->maps = a.c.maps;
		r->unmaps = a.c.unmaps;
		r->ns_per_op = t->n ? (double)(t1 - t0) / (double)t->n : 0;
	}
	vkv__arena_fini(&a);
	free(addr);
	return err;
}

/* ------------------------------------------------------------------ driver */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: vkvbench preload [--trace train|infer|all] [--seed N]\n"
		"                        [--layers N] [--hidden N] [--vocab N]\n"
		"                        [--steps N] [--idle SIZE] [--json]\n"
		"Replays a PyTorch-like allocation trace on the LD_PRELOAD shim's\n"
		"arena: peak mapped bytes vs the peak of live bytes (target <= %.2f).\n",
		TARGET_RATIO);
}

static int parse(int argc, char **argv, struct pl_opts *o)
{
	static const struct option lopts[] = {
		{ "trace", required_argument, NULL, 't' },
		{ "seed", required_argument, NULL, 's' },
		{ "layers", required_argument, NULL, 'l' },
		{ "hidden", required_argument, NULL, 'H' },
		{ "vocab", required_argument, NULL, 'v' },
		{ "steps", required_argument, NULL, 'n' },
		{ "idle", required_argument, NULL, 'i' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*o = (struct pl_opts){ .trace = "all", .seed = 1, .layers = 24,
			       .hidden = 2048, .vocab = 50304, .steps = 12,
			       .idle = 256 * MiB };
	bench_getopt_reset();
	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 't':
			if (strcmp(optarg, "train") && strcmp(optarg, "infer") &&
			    strcmp(optarg, "all"))
				return bench_usage_error("preload", "bad --trace '%s'", optarg);
			o->trace = optarg;
			break;
		case 's':
			if (bench_parse_u64(optarg, 0, UINT64_MAX, &o->seed))
				return bench_usage_error("preload", "bad --seed '%s'", optarg);
			break;
		case 'l':
			if (bench_parse_u64(optarg, 1, 512, &o->layers))
				return bench_usage_error("preload", "bad --layers '%s'", optarg);
			break;
		case 'H':
			if (bench_parse_u64(optarg, 64, 65536, &o->hidden))
				return bench_usage_error("preload", "bad --hidden '%s'", optarg);
			break;
		case 'v':
			if (bench_parse_u64(optarg, 1, 1u << 20, &o->vocab))
				return bench_usage_error("preload", "bad --vocab '%s'", optarg);
			break;
		case 'n':
			if (bench_parse_u64(optarg, 1, 10000, &o->steps))
				return bench_usage_error("preload", "bad --steps '%s'", optarg);
			break;
		case 'i':
			if (bench_parse_size(optarg, &o->idle))
				return bench_usage_error("preload", "bad --idle '%s'", optarg);
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
	}
	if (optind < argc)
		return bench_usage_error("preload", "unexpected argument '%s'",
					 argv[optind]);
	return 0;
}

static double ratio(uint64_t a, uint64_t b)
{
	return b ? (double)a / (double)b : 0;
}

/* Generate and replay one trace; *ok is cleared when it misses the target. */
static int run_trace(const char *name, const struct pl_opts *o,
		     struct bench_json *j, bool *ok)
{
	struct pl_trace t;
	struct pl_result r;
	char b1[32], b2[32], b3[32], b4[32];
	double rt;
	int err;

	memset(&t, 0, sizeof(t));
	memset(&r, 0, sizeof(r));
	bench_rng_seed(&t.rng, o->seed);
	err = !strcmp(name, "train") ? gen_train(&t, o) : gen_infer(&t, o);
	if (!err)
		err = replay(&t, o->idle, &r, false);
	if (!err)
		err = replay(&t, UINT64_MAX, &r, true);
	if (err) {
		fprintf(stderr, "vkvbench preload: %s: %s\n", name, strerror(-err));
		free(t.ops);
		free(t.sizes);
		return BENCH_FAIL;
	}
	rt = ratio(r.peak_mapped, t.peak_live);
	if (rt > TARGET_RATIO)
		*ok = false;
	if (j) {
		bench_json_object(j, name);
		bench_json_u64(j, "ops", r.ops);
		bench_json_u64(j, "allocations", t.next_id);
		bench_json_u64(j, "peak_live_bytes", t.peak_live);
		bench_json_u64(j, "peak_mapped_bytes", r.peak_mapped);
		bench_json_f64(j, "ratio", rt);
		bench_json_f64(j, "target", TARGET_RATIO);
		bench_json_bool(j, "pass", rt <= TARGET_RATIO);
		bench_json_u64(j, "per_alloc_vmm_peak_bytes", t.peak_per_alloc);
		bench_json_f64(j, "per_alloc_vmm_ratio",
			       ratio(t.peak_per_alloc, t.peak_live));
		bench_json_u64(j, "never_unmap_peak_bytes", r.peak_mapped_keep);
		bench_json_f64(j, "never_unmap_ratio",
			       ratio(r.peak_mapped_keep, t.peak_live));
		bench_json_u64(j, "chunk_maps", r.maps);
		bench_json_u64(j, "chunk_unmaps", r.unmaps);
		bench_json_f64(j, "ns_per_op", r.ns_per_op);
		bench_json_close(j);
	} else {
		printf("%-6s %9zu ops  live peak %10s  mapped peak %10s  ratio %.3f %s\n"
		       "       per-allocation VMM %10s (%.3f)  never unmapping %10s (%.3f)\n"
		       "       %llu chunk maps, %llu unmaps, %.0f ns per op\n",
		       name, (size_t)r.ops, bench_fmt_size(b1, sizeof(b1), t.peak_live),
		       bench_fmt_size(b2, sizeof(b2), r.peak_mapped), rt,
		       rt <= TARGET_RATIO ? "(ok)" : "(ABOVE TARGET)",
		       bench_fmt_size(b3, sizeof(b3), t.peak_per_alloc),
		       ratio(t.peak_per_alloc, t.peak_live),
		       bench_fmt_size(b4, sizeof(b4), r.peak_mapped_keep),
		       ratio(r.peak_mapped_keep, t.peak_live),
		       (unsigned long long)r.maps, (unsigned long long)r.unmaps,
		       r.ns_per_op);
	}
	free(t.ops);
	free(t.sizes);
	return BENCH_OK;
}

int bench_preload(int argc, char **argv)
{
	static const char *const names[] = { "train", "infer" };
	struct pl_opts o;
	struct bench_json j;
	bool ok = true;
	int rc = parse(argc, argv, &o);

	if (rc)
		return rc < 0 ? BENCH_OK : rc;
	if (o.json) {
		bench_json_begin(&j, stdout);
		bench_json_str(&j, "bench", "preload");
		bench_json_u64(&j, "seed", o.seed);
		bench_json_u64(&j, "chunk_bytes", CHUNK);
		bench_json_u64(&j, "idle_bytes", o.idle);
		bench_json_u64(&j, "layers", o.layers);
		bench_json_u64(&j, "hidden", o.hidden);
	} else {
		printf("vkvbench preload: seed %llu, chunks of 2 MiB, idle cache %llu MiB, "
		       "target ratio <= %.2f\n", (unsigned long long)o.seed,
		       (unsigned long long)(o.idle >> 20), TARGET_RATIO);
	}
	for (size_t i = 0; i < 2 && rc == BENCH_OK; i++)
		if (!strcmp(o.trace, "all") || !strcmp(o.trace, names[i]))
			rc = run_trace(names[i], &o, o.json ? &j : NULL, &ok);
	if (o.json) {
		bench_json_bool(&j, "pass", ok && rc == BENCH_OK);
		bench_json_end(&j);
	}
	if (rc == BENCH_OK && !ok)
		rc = BENCH_FAIL;
	return rc;
}
