// SPDX-License-Identifier: MIT
/*
 * step.c - `vkvbench step`: a trace-driven continuous-batching simulation
 * making the real libvkv calls an engine makes, with the model's compute
 * replaced by a sleep.
 *
 * Requests arrive as a Poisson process (--rate, 60 per simulated second by
 * default; the simulated clock advances --compute-us per iteration), as in
 * vLLM's serving benchmark. --rate 0 puts every arrival at time 0: then the
 * first iteration's prefills have nothing to overlap with and are mapped on
 * the critical path, which lowers hidden_fraction by that one burst.
 *
 * Per page size it runs three things on the same trace:
 *
 * 1. Latency, look-ahead on: a context with its background worker. Each
 *    iteration the engine calls vkv_step() with the batch's lengths (timed:
 *    the critical path), frees finished requests, admits new ones for the
 *    next iteration (vkv_slot_alloc + vkv_slot_prefetch of the prompt, so
 *    the worker commits prefill pages during the compute), then "computes"
 *    (sleeps --compute-us).
 * 2. Latency, look-ahead off: the same with VKV_CTX_NO_WORKER and no
 *    prefetch: every page is mapped inside vkv_step.
 *    hidden_fraction = maps_async / (maps_sync + maps_async) of run 1, from
 *    the process's stats segment: the share of page maps the worker did
 *    off the critical path. hidden_fraction_time = 1 - (step time on /
 *    step time off) says the same in time.
 * 3. Capacity under a fixed --budget: requests of the trace, in order (the
 *    trace repeated if needed), each held at its final length (prompt +
 *    output), until the next one does not fit. vkv: real slots ensured to
 *    that length in a context capped at the budget until -ENOMEM. static:
 *    every request reserves max_context tokens. paged16: 16-token blocks.
 *    vs_static / vs_paged16 = vkv's count over theirs.
 *
 * The default model is one layer of a Llama-3-8B-like cache (8 KV heads of
 * 128, fp16: 2 KiB per token per tensor) and the default budget 128 MiB.
 * With the per-layer layout every tensor grows the same way, so the memory
 * ratios do not depend on the number of layers; keeping it small keeps the
 * run short and, with 4 KiB host pages, under vm.max_map_count (every
 * non-adjacent 4 KiB mapping is one VMA; the default limit, 65530, caps a
 * process near 256 MiB of scattered 4 KiB pages).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vkvbench.h"

struct step_opts {
	struct bench_trace_params tp;
	enum vkv_backend_kind backend;
	uint64_t page_sizes[2];
	int npage_sizes;
	uint64_t budget;
	uint64_t slots;
	uint64_t compute_us;
	struct vkv_region_config model;
	bool json;
};

/* One latency run. */
struct run_result {
	uint64_t iterations, tokens;
	uint64_t step_p50, step_p99, step_max;
	double step_mean;
	uint64_t engine_p50, engine_p99; /* step + alloc + prefetch + free */
	uint64_t step_total;
	uint64_t maps_sync, maps_async;
	bool have_stats;
	double committed_mean, active_mean, used_mean;
	uint64_t committed_peak, used_peak;
	double wall_s;
};

struct capacity {
	uint64_t vkv, statik, paged16;
	uint64_t vkv_committed, vkv_used;
	bool bound_hit;
};

struct page_result {
	uint64_t page_size;
	struct run_result on, off;
	struct capacity cap;
	double hidden_fraction, hidden_fraction_time;
};

/* Bytes of one token in every tensor of the region. */
static uint64_t token_bytes_all(const struct vkv_region_config *m)
{
	return 2ull * m->layers * m->kv_heads * m->head_dim * m->elem_size;
}

static int open_ctx(const struct step_opts *o, uint64_t ps, uint32_t flags,
		    uint64_t budget, bool no_pool, vkv_ctx **ctx)
{
	struct vkv_ctx_config cc;

	vkv_ctx_config_init(&cc);
	cc.backend = o->backend;
	cc.page_size = ps;
	cc.flags |= flags;
	cc.budget = budget;
	if (no_pool)
		cc.pool_low = cc.pool_high = 0;
	return vkv_ctx_create(&cc, ctx);
}

/* --------------------------------------------------------- latency runs */

struct live {
	size_t req;    /* index in the trace */
	uint32_t slot;
	uint64_t len;  /* tokens in the cache after this iteration */
	uint32_t generated;
};

struct sim {
	const struct step_opts *o;
	const struct bench_trace *t;
	vkv_region *r;
	bool lookahead;
	struct live *run;     /* [slots]: running, then pending at the end */
	size_t nrun, npend;
	uint32_t *slots;
	uint64_t *lens;
	uint64_t *step_ns, *engine_ns;
	size_t nsamples, cap;
	size_t next;          /* first request not yet admitted */
	double clock;         /* simulated seconds */
	double committed_sum, active_sum, used_sum;
	uint64_t committed_peak, used_peak, tokens;
};

static int record(struct sim *s, uint64_t step, uint64_t engine)
{
	if (s->nsamples == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 4096;
		uint64_t *a = realloc(s->step_ns, cap * sizeof(*a));
		if (!a)
			return -ENOMEM;
		s->step_ns = a;
		a = realloc(s->engine_ns, cap * sizeof(*a));
		if (!a)
			return -ENOMEM;
		s->engine_ns = a;
		s->cap = cap;
	}
	s->step_ns[s->nsamples] = step;
	s->engine_ns[s->nsamples] = engine;
	s->nsamples++;
	return 0;
}

/* Admit arrived requests for the next iteration, up to the slot count. */
static int admit(struct sim *s)
{
	const struct bench_trace *t = s->t;

	if (s->nrun + s->npend == 0 && s->next < t->n &&
	    t->reqs[s->next].arrival > s->clock)
		s->clock = t->reqs[s->next].arrival; /* idle: jump ahead */
	while (s->nrun + s->npend < s->o->slots && s->next < t->n &&
	       t->reqs[s->next].arrival <= s->clock) {
		const struct bench_req *q = &t->reqs[s->next];
		struct live *l = &s->run[s->nrun + s->npend];
		int err = vkv_slot_alloc(s->r, q->prompt, &l->slot);

		if (err)
			return err;
		if (s->lookahead) {
			err = vkv_slot_prefetch(s->r, l->slot, q->prompt);
			if (err)
				return err;
		}
		l->req = s->next++;
		l->len = 0;
		l->generated = 0;
		s->npend++;
	}
	return 0;
}

/* Free finished requests, compacting running + pending. */
static int retire(struct sim *s)
{
	size_t w = 0, total = s->nrun + s->npend;

	for (size_t i = 0; i < total; i++) {
		struct live *l = &s->run[i];
		bool running = i < s->nrun;

		if (running && l->generated >= s->t->reqs[l->req].output) {
			int err = vkv_slot_free(s->r, l->slot);
			if (err)
				return err;
			s->nrun--;
			continue;
		}
		s->run[w++] = *l;
	}
	return 0;
}

static int iterate(struct sim *s, uint64_t tok_all)
{
	struct vkv_region_info ri;
	struct vkv_slot_info si;
	uint64_t used = 0, active = 0, t0, t1, t2, t3;
	size_t n;
	int err;

	/* Pending requests join: their prefill iteration. */
	s->nrun += s->npend;
	s->npend = 0;
	n = s->nrun;
	for (size_t i = 0; i < n; i++) {
		struct live *l = &s->run[i];

		l->len = l->generated ? l->len + 1 : s->t->reqs[l->req].prompt;
		l->generated++;
		s->slots[i] = l->slot;
		s->lens[i] = l->len;
		used += l->len;
	}
	t0 = bench_now_ns();
	err = vkv_step(s->r, s->slots, s->lens, n);
	t1 = bench_now_ns();
	if (err)
		return err;
	err = vkv_region_info(s->r, &ri);
	for (size_t i = 0; i < n && !err; i++) {
		err = vkv_slot_info(s->r, s->slots[i], &si);
		active += si.pages;
	}
	if (err)
		return err;
	s->committed_sum += (double)ri.committed_bytes;
	s->active_sum += (double)(active * ri.page_size);
	s->used_sum += (double)(used * tok_all);
	if (ri.committed_bytes > s->committed_peak)
		s->committed_peak = ri.committed_bytes;
	if (used * tok_all > s->used_peak)
		s->used_peak = used * tok_all;
	s->tokens += n;
	t2 = bench_now_ns();
	err = retire(s);
	if (!err)
		err = admit(s);
	t3 = bench_now_ns();
	if (err)
		return err;
	return record(s, t1 - t0, (t1 - t0) + (t3 - t2));
}

static void sim_sleep(uint64_t us)
{
	struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };

	while (us && nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int sim_run(const struct step_opts *o, const struct bench_trace *t,
		   uint64_t ps, bool lookahead, struct run_result *res)
{
	struct vkv_stats_segment *before = calloc(2, sizeof(*before)), *after;
	uint64_t tok_all = token_bytes_all(&o->model), wall0;
	struct vkv_region_config rc = o->model;
	struct sim s = { .o = o, .t = t, .lookahead = lookahead };
	vkv_ctx *ctx = NULL;
	int err;

	memset(res, 0, sizeof(*res));
	s.run = calloc(o->slots, sizeof(*s.run));
	s.slots = calloc(o->slots, sizeof(*s.slots));
	s.lens = calloc(o->slots, sizeof(*s.lens));
	if (!before || !s.run || !s.slots || !s.lens) {
		err = -ENOMEM;
		goto out;
	}
	after = before + 1;
	err = open_ctx(o, ps, lookahead ? 0 : VKV_CTX_NO_WORKER, 0, false, &ctx);
	if (err)
		goto out;
	rc.max_slots = (uint32_t)o->slots;
	err = vkv_region_create(ctx, &rc, &s.r);
	if (err)
		goto out;
	res->have_stats = bench_stats_snapshot(before) == 0;
	wall0 = bench_now_ns();
	err = admit(&s);
	while (!err && (s.nrun + s.npend > 0 || s.next < t->n)) {
		err = iterate(&s, tok_all);
		if (err)
			break;
		s.clock += (double)o->compute_us / 1e6;
		sim_sleep(o->compute_us);
		if (s.nrun + s.npend == 0)
			err = admit(&s);
	}
	if (err)
		goto out_region;
	res->wall_s = (double)(bench_now_ns() - wall0) / 1e9;
	if (res->have_stats && bench_stats_snapshot(after) == 0) {
		res->maps_sync = after->maps_sync - before->maps_sync;
		res->maps_async = after->maps_async - before->maps_async;
	} else {
		res->have_stats = false;
	}
	res->iterations = s.nsamples;
	for (size_t i = 0; i < s.nsamples; i++) {
		res->step_total += s.step_ns[i];
		if (s.step_ns[i] > res->step_max)
			res->step_max = s.step_ns[i];
	}
	res->step_mean = s.nsamples ? (double)res->step_total / (double)s.nsamples : 0;
	res->step_p50 = bench_percentile_u64(s.step_ns, s.nsamples, 50);
	res->step_p99 = bench_percentile_u64(s.step_ns, s.nsamples, 99);
	res->engine_p50 = bench_percentile_u64(s.engine_ns, s.nsamples, 50);
	res->engine_p99 = bench_percentile_u64(s.engine_ns, s.nsamples, 99);
	if (s.nsamples) {
		res->committed_mean = s.committed_sum / (double)s.nsamples;
		res->active_mean = s.active_sum / (double)s.nsamples;
		res->used_mean = s.used_sum / (double)s.nsamples;
	}
	res->committed_peak = s.committed_peak;
	res->used_peak = s.used_peak;
	res->tokens = s.tokens;
out_region:
	vkv_region_destroy(s.r);
out:
	if (ctx)
		vkv_ctx_destroy(ctx);
	free(s.step_ns);
	free(s.engine_ns);
	free(s.run);
	free(s.slots);
	free(s.lens);
	free(before);
	return err;
}

/* ---------------------------------------------------------------- capacity */

static uint64_t final_len(const struct bench_trace *t, uint64_t i)
{
	const struct bench_req *q = &t->reqs[i % t->n];
	return (uint64_t)q->prompt + q->output;
}

/* How many requests fit in 16-token blocks; also bounds the vkv run. */
static uint64_t paged_count(const struct step_opts *o, const struct bench_trace *t,
			    uint64_t block)
{
	uint64_t tok_all = token_bytes_all(&o->model), used = 0, n = 0;

	for (;; n++) {
		uint64_t bytes = (final_len(t, n) + block - 1) / block * block * tok_all;
		if (used + bytes > o->budget || n >= 10000000)
			return n;
		used += bytes;
	}
}

/* -ENOMEM from an ensure: 0 when the budget really has no room for the
 * request, else the error again (the backend ran out first: host memory,
 * vm.max_map_count). */
static int budget_reached(vkv_ctx *ctx, vkv_region *r, uint64_t len)
{
	struct vkv_region_info ri;
	struct vkv_ctx_info ci;
	uint64_t per_tensor, ntensors, need;

	if (vkv_region_info(r, &ri) || vkv_ctx_info(ctx, &ci))
		return -ENOMEM;
	ntensors = ri.config.layout == VKV_LAYOUT_ALL_LAYERS ? 1 : 2ull * ri.config.layers;
	per_tensor = ri.token_bytes * (ri.config.layout == VKV_LAYOUT_ALL_LAYERS ?
				       2ull * ri.config.layers : 1);
	need = (len * per_tensor + ri.page_size - 1) / ri.page_size * ntensors;
	if (ci.pages_total + need > ci.budget / ri.page_size)
		return 0;
	fprintf(stderr, "vkvbench step: the backend ran out before the budget "
		"(%llu of %llu pages): %s%s\n", (unsigned long long)ci.pages_total,
		(unsigned long long)(ci.budget / ri.page_size), vkv_last_error(),
		ci.backend == VKV_BACKEND_HOST && ri.page_size == 4096 ?
			" (every scattered 4 KiB page is a VMA: vm.max_map_count; "
			"use a smaller --budget or 2M pages)" : "");
	return -ENOMEM;
}

static int capacity(const struct step_opts *o, const struct bench_trace *t,
		    uint64_t ps, struct capacity *c)
{
	uint64_t tok_all = token_bytes_all(&o->model);
	struct vkv_region_config rc = o->model;
	struct vkv_region_info ri;
	vkv_region *r = NULL;
	vkv_ctx *ctx;
	uint64_t bound;
	int err;

	memset(c, 0, sizeof(*c));
	c->statik = o->budget / (o->model.max_context * tok_all);
	c->paged16 = paged_count(o, t, 16);
	/* vkv cannot beat one-token blocks; leave room above that. */
	bound = paged_count(o, t, 1) + 16;
	if (bound > UINT32_MAX)
		return -E2BIG;
	err = open_ctx(o, ps, VKV_CTX_NO_WORKER, o->budget, true, &ctx);
	if (err)
		return err;
	rc.max_slots = (uint32_t)bound;
	err = vkv_region_create(ctx, &rc, &r);
	if (err)
		goto out_ctx;
	for (uint64_t i = 0; i < bound; i++) {
		uint64_t len = final_len(t, i);

		err = vkv_slot_alloc_at(r, (uint32_t)i);
		if (!err)
			err = vkv_slot_ensure(r, (uint32_t)i, len);
		if (err == -ENOMEM) {
			err = budget_reached(ctx, r, len);
			vkv_slot_free(r, (uint32_t)i);
			break;
		}
		if (err)
			goto out_region;
		c->vkv++;
		c->vkv_used += len * tok_all;
	}
	if (err)
		goto out_region;
	c->bound_hit = c->vkv == bound;
	err = vkv_region_info(r, &ri);
	c->vkv_committed = ri.committed_bytes;
out_region:
	vkv_region_destroy(r);
out_ctx:
	vkv_ctx_destroy(ctx);
	return err;
}

/* ------------------------------------------------------------------ report */

static void json_run(struct bench_json *j, const char *key, const struct run_result *r)
{
	bench_json_object(j, key);
	bench_json_u64(j, "iterations", r->iterations);
	bench_json_u64(j, "tokens", r->tokens);
	bench_json_object(j, "step_ns");
	bench_json_u64(j, "p50", r->step_p50);
	bench_json_u64(j, "p99", r->step_p99);
	bench_json_f64(j, "mean", r->step_mean);
	bench_json_u64(j, "max", r->step_max);
	bench_json_close(j);
	bench_json_object(j, "engine_calls_ns");
	bench_json_u64(j, "p50", r->engine_p50);
	bench_json_u64(j, "p99", r->engine_p99);
	bench_json_close(j);
	if (r->have_stats) {
		bench_json_u64(j, "maps_sync", r->maps_sync);
		bench_json_u64(j, "maps_async", r->maps_async);
	}
	bench_json_f64(j, "committed_mean_bytes", r->committed_mean);
	bench_json_f64(j, "committed_active_mean_bytes", r->active_mean);
	bench_json_f64(j, "used_mean_bytes", r->used_mean);
	bench_json_u64(j, "committed_peak_bytes", r->committed_peak);
	bench_json_u64(j, "used_peak_bytes", r->used_peak);
	bench_json_f64(j, "committed_over_used",
		       r->used_mean > 0 ? r->committed_mean / r->used_mean : NAN);
	bench_json_f64(j, "active_over_used",
		       r->used_mean > 0 ? r->active_mean / r->used_mean : NAN);
	bench_json_f64(j, "wall_s", r->wall_s);
	bench_json_close(j);
}

static double ratio(uint64_t a, uint64_t b)
{
	return b ? (double)a / (double)b : NAN;
}

static void report_json(const struct step_opts *o, const struct bench_trace *t,
			const char *backend, const struct page_result *pr, int n)
{
	struct bench_json j;

	bench_json_begin(&j, stdout);
	bench_json_str(&j, "bench", "step");
	bench_json_str(&j, "backend", backend);
	bench_json_str(&j, "trace", t->name);
	bench_json_u64(&j, "requests", t->n);
	bench_json_u64(&j, "seed", o->tp.seed);
	bench_json_f64(&j, "mean_prompt", t->mean_prompt);
	bench_json_f64(&j, "mean_output", t->mean_output);
	bench_json_object(&j, "model");
	bench_json_u64(&j, "layers", o->model.layers);
	bench_json_u64(&j, "kv_heads", o->model.kv_heads);
	bench_json_u64(&j, "head_dim", o->model.head_dim);
	bench_json_u64(&j, "elem_size", o->model.elem_size);
	bench_json_u64(&j, "max_context", o->model.max_context);
	bench_json_str(&j, "layout", o->model.layout == VKV_LAYOUT_ALL_LAYERS ?
				    "all-layers" : "per-layer");
	bench_json_u64(&j, "token_bytes", token_bytes_all(&o->model));
	bench_json_close(&j);
	bench_json_u64(&j, "slots", o->slots);
	bench_json_u64(&j, "compute_us", o->compute_us);
	bench_json_f64(&j, "rate", o->tp.rate);
	bench_json_u64(&j, "budget", o->budget);
	bench_json_str(&j, "hidden_fraction_def",
		       "maps_async/(maps_sync+maps_async) with look-ahead on");
	/* Headline figures: the first page size (4 KiB by default). */
	bench_json_u64(&j, "page_size", pr[0].page_size);
	bench_json_f64(&j, "hidden_fraction", pr[0].hidden_fraction);
	bench_json_f64(&j, "vs_static", ratio(pr[0].cap.vkv, pr[0].cap.statik));
	bench_json_f64(&j, "vs_paged16", ratio(pr[0].cap.vkv, pr[0].cap.paged16));
	bench_json_array(&j, "runs");
	for (int i = 0; i < n; i++) {
		const struct page_result *p = &pr[i];

		bench_json_object(&j, NULL);
		bench_json_u64(&j, "page_size", p->page_size);
		json_run(&j, "lookahead_on", &p->on);
		json_run(&j, "lookahead_off", &p->off);
		bench_json_f64(&j, "hidden_fraction", p->hidden_fraction);
		bench_json_f64(&j, "hidden_fraction_time", p->hidden_fraction_time);
		bench_json_object(&j, "capacity");
		bench_json_u64(&j, "vkv", p->cap.vkv);
		bench_json_u64(&j, "static", p->cap.statik);
		bench_json_u64(&j, "paged16", p->cap.paged16);
		bench_json_u64(&j, "vkv_committed_bytes", p->cap.vkv_committed);
		bench_json_u64(&j, "vkv_used_bytes", p->cap.vkv_used);
		bench_json_bool(&j, "vkv_bound_hit", p->cap.bound_hit);
		bench_json_close(&j);
		bench_json_f64(&j, "vs_static", ratio(p->cap.vkv, p->cap.statik));
		bench_json_f64(&j, "vs_paged16", ratio(p->cap.vkv, p->cap.paged16));
		bench_json_close(&j);
	}
	bench_json_end(&j);
}

static void text_run(const char *what, const struct run_result *r)
{
	char a[32], b[32], c[32];

	printf("    %-14s step p50 %6.1f us  p99 %7.1f us  max %7.1f us  (%llu iterations",
	       what, r->step_p50 / 1e3, r->step_p99 / 1e3, r->step_max / 1e3,
	       (unsigned long long)r->iterations);
	if (r->have_stats)
		printf(", maps sync %llu async %llu",
		       (unsigned long long)r->maps_sync, (unsigned long long)r->maps_async);
	printf(")\n    %-14s tokens %s, mapped in running slots %s (x%.2f), "
	       "in all %s (x%.2f) on average\n", "",
	       bench_fmt_size(a, sizeof(a), (uint64_t)r->used_mean),
	       bench_fmt_size(b, sizeof(b), (uint64_t)r->active_mean),
	       r->used_mean > 0 ? r->active_mean / r->used_mean : 0,
	       bench_fmt_size(c, sizeof(c), (uint64_t)r->committed_mean),
	       r->used_mean > 0 ? r->committed_mean / r->used_mean : 0);
}

static void report_text(const struct step_opts *o, const struct bench_trace *t,
			const char *backend, const struct page_result *pr, int n)
{
	char sz[32];

	printf("vkvbench step: trace %s, %zu requests (mean prompt %.0f, output %.0f), "
	       "backend %s, %llu slots, compute %llu us/iteration\n",
	       t->name, t->n, t->mean_prompt, t->mean_output, backend,
	       (unsigned long long)o->slots, (unsigned long long)o->compute_us);
	for (int i = 0; i < n; i++) {
		const struct page_result *p = &pr[i];

		printf("  page %s\n", bench_fmt_size(sz, sizeof(sz), p->page_size));
		text_run("look-ahead on", &p->on);
		text_run("look-ahead off", &p->off);
		printf("    hidden_fraction %.3f (maps by the worker), %.3f (step time saved)\n",
		       p->hidden_fraction, p->hidden_fraction_time);
		printf("    capacity in %s: vkv %llu, static %llu, paged16 %llu "
		       "-> vs_static %.2f, vs_paged16 %.3f%s\n",
		       bench_fmt_size(sz, sizeof(sz), o->budget),
		       (unsigned long long)p->cap.vkv, (unsigned long long)p->cap.statik,
		       (unsigned long long)p->cap.paged16,
		       ratio(p->cap.vkv, p->cap.statik), ratio(p->cap.vkv, p->cap.paged16),
		       p->cap.bound_hit ? " (vkv hit the slot bound)" : "");
	}
}

/* ----------------------------------------------------------------- options */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: vkvbench step [--trace sharegpt|alpaca|FILE.csv] [--requests N]\n"
		"         [--page-size 4K|2M] [--budget SIZE] [--backend host|cuda]\n"
		"         [--seed S] [--slots N] [--compute-us US] [--rate REQ_PER_S]\n"
		"         [--layers N] [--kv-heads N] [--head-dim N] [--elem-size B]\n"
		"         [--max-context T] [--layout per-layer|all-layers] [--json]\n"
		"Continuous batching over a trace with real vkv calls: step latency with\n"
		"look-ahead on and off, the share of page maps hidden, and how many\n"
		"requests fit --budget with vkv, static reservation and 16-token blocks.\n"
		"Without --page-size the host backend runs 4K and 2M.\n");
}

static int parse_u32(const char *s, uint64_t max, uint32_t *out)
{
	uint64_t v;
	int err = bench_parse_u64(s, 1, max, &v);
	if (!err)
		*out = (uint32_t)v;
	return err;
}

static int parse(int argc, char **argv, struct step_opts *o)
{
	static const struct option lopts[] = {
		{ "trace", required_argument, NULL, 't' },
		{ "requests", required_argument, NULL, 'n' },
		{ "page-size", required_argument, NULL, 'p' },
		{ "budget", required_argument, NULL, 'B' },
		{ "backend", required_argument, NULL, 'b' },
		{ "seed", required_argument, NULL, 's' },
		{ "slots", required_argument, NULL, 'S' },
		{ "compute-us", required_argument, NULL, 'c' },
		{ "rate", required_argument, NULL, 'R' },
		{ "layers", required_argument, NULL, 'L' },
		{ "kv-heads", required_argument, NULL, 'H' },
		{ "head-dim", required_argument, NULL, 'D' },
		{ "elem-size", required_argument, NULL, 'E' },
		{ "max-context", required_argument, NULL, 'M' },
		{ "layout", required_argument, NULL, 'l' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	char *end;
	int c, li = 0;

	memset(o, 0, sizeof(*o));
	o->tp.spec = "sharegpt";
	o->tp.requests = 200;
	o->tp.seed = 1;
	o->backend = VKV_BACKEND_HOST;
	o->budget = 128ull << 20;
	o->slots = 32;
	o->compute_us = 1000;
	o->tp.rate = 60;
	vkv_region_config_init(&o->model);
	o->model.layers = 1;
	o->model.kv_heads = 8;
	o->model.head_dim = 128;
	o->model.elem_size = 2;
	o->model.max_context = 4096;
	o->model.layout = VKV_LAYOUT_PER_LAYER;
	bench_getopt_reset();
	while ((c = getopt_long(argc, argv, "", lopts, &li)) != -1) {
		int bad = 0;

		switch (c) {
		case 't': o->tp.spec = optarg; break;
		case 'n':
			bad = bench_parse_u64(optarg, 1, 1000000, &v);
			o->tp.requests = (size_t)v;
			break;
		case 'p':
			bad = bench_parse_size(optarg, &o->page_sizes[0]) || !o->page_sizes[0];
			o->npage_sizes = 1;
			break;
		case 'B': bad = bench_parse_size(optarg, &o->budget) || !o->budget; break;
		case 'b':
			bad = bench_parse_backend(optarg, &o->backend) ||
			      o->backend == VKV_BACKEND_KMOD;
			break;
		case 's': bad = bench_parse_u64(optarg, 0, UINT64_MAX, &o->tp.seed); break;
		case 'S': bad = bench_parse_u64(optarg, 1, 65536, &o->slots); break;
		case 'c': bad = bench_parse_u64(optarg, 0, 10000000, &o->compute_us); break;
		case 'R':
			o->tp.rate = strtod(optarg, &end);
			bad = *end || !(o->tp.rate >= 0 && o->tp.rate < 1e9);
			break;
		case 'L': bad = parse_u32(optarg, 1024, &o->model.layers); break;
		case 'H': bad = parse_u32(optarg, 1024, &o->model.kv_heads); break;
		case 'D': bad = parse_u32(optarg, 65536, &o->model.head_dim); break;
		case 'E':
			bad = parse_u32(optarg, 8, &o->model.elem_size) ||
			      (o->model.elem_size & (o->model.elem_size - 1));
			break;
		case 'M': bad = bench_parse_u64(optarg, 2, 1u << 24, &o->model.max_context); break;
		case 'l':
			if (!strcmp(optarg, "per-layer"))
				o->model.layout = VKV_LAYOUT_PER_LAYER;
			else if (!strcmp(optarg, "all-layers"))
				o->model.layout = VKV_LAYOUT_ALL_LAYERS;
			else
				bad = 1;
			break;
		case 'j': o->json = true; break;
		case 'h': usage(stdout); return -1;
		default: return BENCH_USAGE;
		}
		if (bad)
			return bench_usage_error("step", "bad value '%s' for --%s",
						 optarg, lopts[li].name);
	}
	if (optind < argc)
		return bench_usage_error("step", "unexpected argument '%s'", argv[optind]);
	o->tp.max_context = o->model.max_context;
	if (o->npage_sizes == 0) {
		if (o->backend == VKV_BACKEND_HOST) {
			o->page_sizes[0] = 4096;
			o->page_sizes[1] = 2u << 20;
			o->npage_sizes = 2;
		} else {
			o->npage_sizes = 1; /* the backend's granularity */
		}
	}
	if (o->budget / token_bytes_all(&o->model) < o->model.max_context)
		return bench_usage_error("step", "--budget does not hold one request "
					 "of max context");
	return 0;
}

/* The backend's name, and its page size when none was asked for. */
static int probe_backend(struct step_opts *o, char *name, size_t len)
{
	struct vkv_ctx_info info;
	vkv_ctx *ctx;
	int err;

	err = open_ctx(o, o->page_sizes[0], VKV_CTX_NO_WORKER, 0, true, &ctx);
	if (err)
		return err;
	err = vkv_ctx_info(ctx, &info);
	vkv_ctx_destroy(ctx);
	if (err)
		return err;
	snprintf(name, len, "%s", info.backend_name);
	if (!o->page_sizes[0])
		o->page_sizes[0] = info.page_size;
	return 0;
}

int bench_step(int argc, char **argv)
{
	struct page_result pr[2];
	struct bench_trace t;
	struct step_opts o;
	char backend[16] = "?";
	int err;

	err = parse(argc, argv, &o);
	if (err)
		return err < 0 ? BENCH_OK : err;
	err = bench_trace_load(&t, &o.tp);
	if (err) {
		fprintf(stderr, "vkvbench step: trace '%s': %s\n", o.tp.spec,
			err == -ENOENT ? "not a built-in trace nor a readable file"
				       : strerror(-err));
		return BENCH_USAGE;
	}
	err = probe_backend(&o, backend, sizeof(backend));
	if (err) {
		fprintf(stderr, "vkvbench step: %s backend: %s\n",
			vkv_backend_name(o.backend), vkv_strerror(err));
		bench_trace_free(&t);
		return err == -ENODEV ? BENCH_SKIP : BENCH_FAIL;
	}
	memset(pr, 0, sizeof(pr));
	for (int i = 0; i < o.npage_sizes && !err; i++) {
		struct page_result *p = &pr[i];
		uint64_t maps;

		err = sim_run(&o, &t, o.page_sizes[i], true, &p->on);
		if (!err)
			err = sim_run(&o, &t, o.page_sizes[i], false, &p->off);
		if (!err)
			err = capacity(&o, &t, o.page_sizes[i], &p->cap);
		if (err)
			break;
		p->page_size = o.page_sizes[i];
		maps = p->on.maps_sync + p->on.maps_async;
		p->hidden_fraction = p->on.have_stats && maps ?
			(double)p->on.maps_async / (double)maps : NAN;
		p->hidden_fraction_time = p->off.step_total ?
			1.0 - (double)p->on.step_total / (double)p->off.step_total : NAN;
	}
	if (err) {
		fprintf(stderr, "vkvbench step: %s\n", vkv_strerror(err));
		bench_trace_free(&t);
		return err == -ENODEV ? BENCH_SKIP : BENCH_FAIL;
	}
	if (o.json)
		report_json(&o, &t, backend, pr, o.npage_sizes);
	else
		report_text(&o, &t, backend, pr, o.npage_sizes);
	bench_trace_free(&t);
	return BENCH_OK;
}
