// SPDX-License-Identifier: MIT
/*
 * trace.c - serving traces for `vkvbench step` and `vkvbench serve`.
 *
 * Built-in traces draw prompt and output lengths from lognormal
 * distributions whose means are the dataset statistics published with vLLM
 * (ShareGPT: mean prompt 161, mean output 338 tokens; Alpaca: 19 / 58).
 * The shapes (sigma) are our choice: long-tailed for ShareGPT
 * conversations, narrower for Alpaca's short instructions. For a lognormal,
 * mean = exp(mu + sigma^2 / 2), so mu = ln(mean) - sigma^2 / 2. Lengths are
 * rounded, at least 1, and prompt + output is clamped to the model's
 * context; the report gives the means as drawn.
 *
 * The PRNG is our own (vkvbench.h), so a seed gives the same trace on
 * every machine and libc.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "vkvbench.h"

struct dist {
	const char *name;
	double prompt_mean, prompt_sigma;
	double output_mean, output_sigma;
};

static const struct dist dists[] = {
	{ "sharegpt", 161.0, 1.0, 338.0, 0.9 },
	{ "alpaca", 19.0, 0.6, 58.0, 0.9 },
};

static uint32_t draw_len(struct bench_rng *rng, double mean, double sigma)
{
	double mu = log(mean) - sigma * sigma / 2.0;
	double x = exp(mu + sigma * bench_rng_normal(rng));

	if (x < 1.0)
		return 1;
	if (x > 1e9)
		return 1000000000u;
	return (uint32_t)llround(x);
}

/* Keep prompt + output <= max_ctx, prompt and output >= 1. Returns true
 * when something was cut. */
static bool clamp_req(struct bench_req *q, uint64_t max_ctx)
{
	if (max_ctx < 2 || (uint64_t)q->prompt + q->output <= max_ctx)
		return false;
	if (q->prompt >= max_ctx)
		q->prompt = (uint32_t)(max_ctx - 1);
	q->output = (uint32_t)(max_ctx - q->prompt);
	return true;
}

static int make_builtin(struct bench_trace *t, const struct dist *d,
			const struct bench_trace_params *p)
{
	struct bench_rng rng;
	double now = 0;

	t->n = p->requests;
	t->reqs = calloc(t->n ? t->n : 1, sizeof(*t->reqs));
	if (!t->reqs)
		return -ENOMEM;
	bench_rng_seed(&rng, p->seed);
	snprintf(t->name, sizeof(t->name), "%s", d->name);
	for (size_t i = 0; i < t->n; i++) {
		struct bench_req *q = &t->reqs[i];

		if (p->rate > 0)
			now += -log(1.0 - bench_rng_unit(&rng)) / p->rate;
		q->arrival = now;
		q->prompt = draw_len(&rng, d->prompt_mean, d->prompt_sigma);
		q->output = draw_len(&rng, d->output_mean, d->output_sigma);
		q->prefix_id = bench_rng_unit(&rng) < p->prefix_share ? 1 : 0;
		t->clamped += clamp_req(q, p->max_context);
	}
	return 0;
}

static int parse_line(char *line, struct bench_req *q)
{
	char *end;
	double a = strtod(line, &end);
	unsigned long v[3] = { 0, 0, 0 };
	int fields = 0;

	if (end == line || !isfinite(a) || a < 0)
		return -EINVAL;
	q->arrival = a;
	while (fields < 3 && *end == ',') {
		char *s = end + 1;
		while (*s == ' ')
			s++;
		if (!isdigit((unsigned char)*s))
			return -EINVAL;
		errno = 0;
		v[fields] = strtoul(s, &end, 10);
		if (errno || v[fields] > 1000000000ul)
			return -EINVAL;
		fields++;
	}
	while (*end == ' ' || *end == '\r' || *end == '\n')
		end++;
	if (fields < 2 || *end || v[0] < 1 || v[1] < 1)
		return -EINVAL;
	q->prompt = (uint32_t)v[0];
	q->output = (uint32_t)v[1];
	q->prefix_id = (uint32_t)v[2];
	return 0;
}

static int load_csv(struct bench_trace *t, const struct bench_trace_params *p)
{
	FILE *f = fopen(p->spec, "r");
	char line[512];
	size_t cap = 0, lineno = 0;
	int err = 0;

	if (!f)
		return -errno;
	snprintf(t->name, sizeof(t->name), "%s", p->spec);
	while (fgets(line, sizeof(line), f)) {
		struct bench_req q;

		lineno++;
		if (line[0] == '#' || isalpha((unsigned char)line[0]) ||
		    line[0] == '\n' || line[0] == '\r')
			continue;
		if (p->requests && t->n == p->requests)
			break;
		if (parse_line(line, &q)) {
			fprintf(stderr, "vkvbench: %s:%zu: expected "
				"arrival,prompt_len,output_len[,prefix_id]\n",
				p->spec, lineno);
			err = -EINVAL;
			break;
		}
		if (t->n == cap) {
			size_t ncap = cap ? cap * 2 : 256;
			struct bench_req *n = realloc(t->reqs, ncap * sizeof(*n));
			if (!n) {
				err = -ENOMEM;
				break;
			}
			t->reqs = n;
			cap = ncap;
		}
		t->clamped += clamp_req(&q, p->max_context);
		t->reqs[t->n++] = q;
	}
	fclose(f);
	if (!err && t->n == 0) {
		fprintf(stderr, "vkvbench: %s: no requests\n", p->spec);
		err = -EINVAL;
	}
	return err;
}

int bench_trace_load(struct bench_trace *t, const struct bench_trace_params *p)
{
	int err = -ENOENT;

	memset(t, 0, sizeof(*t));
	for (size_t i = 0; i < sizeof(dists) / sizeof(dists[0]); i++)
		if (!strcasecmp(p->spec, dists[i].name))
			err = make_builtin(t, &dists[i], p);
	if (err == -ENOENT)
		err = load_csv(t, p);
	if (!err && t->n == 0)
		err = -EINVAL;
	if (err) {
		bench_trace_free(t);
		return err;
	}
	for (size_t i = 0; i < t->n; i++) {
		t->mean_prompt += t->reqs[i].prompt;
		t->mean_output += t->reqs[i].output;
	}
	t->mean_prompt /= (double)t->n;
	t->mean_output /= (double)t->n;
	return 0;
}

void bench_trace_free(struct bench_trace *t)
{
	free(t->reqs);
	t->reqs = NULL;
	t->n = 0;
}
