// SPDX-License-Identifier: MIT
/*
 * vkvbench.h - shared declarations of the vkvbench tool.
 *
 * vkvbench is one program with subcommands (map, step, serve, ...). Each
 * subcommand lives in its own file and exports one entry point,
 * `int bench_<name>(int argc, char **argv)`, listed in main.c's table. The
 * helpers here are what every subcommand needs: a JSON writer that always
 * emits valid JSON, option parsing, timing, percentiles and a reader of the
 * process's own stats segment.
 */
#ifndef VKVBENCH_H
#define VKVBENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "vkv.h"
#include "vkv_stats.h"

/* ------------------------------------------------------------ subcommands */

struct bench_cmd {
	const char *name;
	const char *help; /* one line */
	int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
};

/* Exit codes of a subcommand. */
#define BENCH_OK 0
#define BENCH_FAIL 1   /* the measurement or the verification failed */
#define BENCH_USAGE 2  /* bad command line */
#define BENCH_SKIP 77  /* what it needs is missing here (no GPU, ...) */

int bench_map(int argc, char **argv);
int bench_step(int argc, char **argv);
int bench_serve(int argc, char **argv);
int bench_tier(int argc, char **argv);
int bench_attn(int argc, char **argv);
int bench_gather(int argc, char **argv);
int bench_preload(int argc, char **argv);

/* ------------------------------------------------------------ JSON writer
 *
 * Writes one JSON document to a stream. Nesting is tracked, commas are
 * placed by the writer, strings are escaped, non-finite numbers become
 * null, and bench_json_end() closes whatever is still open, so the output
 * is valid JSON whatever path the caller took.
 */
#define BENCH_JSON_MAX_DEPTH 16

struct bench_json {
	FILE *out;
	int depth;
	bool first[BENCH_JSON_MAX_DEPTH]; /* no member written yet at depth */
	bool is_array[BENCH_JSON_MAX_DEPTH];
};

/* Start a document (its top-level object). */
void bench_json_begin(struct bench_json *j, FILE *out);
/* Close every open object and array and end the line. */
void bench_json_end(struct bench_json *j);
/* key is NULL inside arrays. */
void bench_json_object(struct bench_json *j, const char *key);
void bench_json_array(struct bench_json *j, const char *key);
void bench_json_close(struct bench_json *j);
void bench_json_str(struct bench_json *j, const char *key, const char *v);
void bench_json_u64(struct bench_json *j, const char *key, uint64_t v);
void bench_json_i64(struct bench_json *j, const char *key, int64_t v);
void bench_json_f64(struct bench_json *j, const char *key, double v);
void bench_json_bool(struct bench_json *j, const char *key, bool v);

/* ---------------------------------------------------------------- options */

/* Reset getopt before a subcommand parses its own argv. */
void bench_getopt_reset(void);
/* "4096", "4K", "2M", "1G" -> bytes. 0 or -EINVAL. */
int bench_parse_size(const char *s, uint64_t *out);
/* Decimal unsigned integer, bounded to [min, max]. 0 or -EINVAL. */
int bench_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* "auto", "host", "cuda", "kmod" -> enum. 0 or -EINVAL. */
int bench_parse_backend(const char *s, enum vkv_backend_kind *out);
/* "vkvbench <cmd>: <message>" on stderr; returns BENCH_USAGE. */
int bench_usage_error(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Human-readable size into buf ("2.0 MiB"). */
const char *bench_fmt_size(char *buf, size_t len, uint64_t bytes);

/* ----------------------------------------------------------------- timing */

uint64_t bench_now_ns(void);

/* ------------------------------------------------------------ percentiles */

/* Sorts v in place; nearest-rank percentile p in [0, 100]. 0 when n == 0. */
uint64_t bench_percentile_u64(uint64_t *v, size_t n, double p);
double bench_median_f64(double *v, size_t n);

/* ------------------------------------------------------------- PRNG
 * splitmix64-seeded xorshift: deterministic across platforms, so a seed
 * gives the same trace and weights everywhere.
 */
struct bench_rng {
	uint64_t s;
};

void bench_rng_seed(struct bench_rng *r, uint64_t seed);
uint64_t bench_rng_u64(struct bench_rng *r);
/* Uniform in [0, 1). */
double bench_rng_unit(struct bench_rng *r);
/* Standard normal (Box-Muller). */
double bench_rng_normal(struct bench_rng *r);

/* ------------------------------------------------------------------ traces
 *
 * A serving trace: requests with an arrival time, a prompt length and an
 * output length in tokens, and optionally the id of a shared prefix (a
 * system prompt; 0 = none). Built-in traces are drawn with a fixed seed
 * (see trace.c for the distributions); a CSV file has lines
 * `arrival,prompt_len,output_len[,prefix_id]` (arrival in seconds; lines
 * starting with '#' or a letter are skipped).
 */
struct bench_req {
	double arrival;     /* seconds from the start */
	uint32_t prompt;    /* tokens, >= 1 */
	uint32_t output;    /* tokens generated, >= 1 */
	uint32_t prefix_id; /* 0 = no shared prefix */
};

struct bench_trace {
	char name[64];
	size_t n;
	struct bench_req *reqs;
	double mean_prompt, mean_output; /* of the requests as drawn */
	uint64_t clamped; /* requests shortened to fit max_context */
};

struct bench_trace_params {
	const char *spec;    /* "sharegpt", "alpaca" or a CSV path */
	size_t requests;     /* built-in: how many; CSV: first N (0 = all) */
	uint64_t seed;
	uint64_t max_context;/* prompt + output is clamped to this */
	double rate;         /* built-in: Poisson arrivals per second, 0 = all at 0 */
	double prefix_share; /* built-in: fraction of requests with prefix 1 */
};

/* 0, -EINVAL (unknown trace, bad CSV line: detail on stderr), -ENOENT,
 * -ENOMEM. */
int bench_trace_load(struct bench_trace *t, const struct bench_trace_params *p);
void bench_trace_free(struct bench_trace *t);

/* ------------------------------------------------------------ stats reader
 *
 * A consistent copy of this process's own stats segment (seqlock read), so
 * a benchmark can report counters such as maps_sync/maps_async. -ENOENT
 * when the process publishes none (VKV_STATS=0 or no context yet).
 */
int bench_stats_snapshot(struct vkv_stats_segment *out);

#endif /* VKVBENCH_H */
