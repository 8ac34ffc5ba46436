// SPDX-License-Identifier: MIT
/*
 * bench_common.c - what every vkvbench subcommand shares: the JSON writer,
 * option parsing, the clock, percentiles and a deterministic PRNG.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "vkvbench.h"

/* ------------------------------------------------------------ JSON writer */

static void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

/* Comma and key before a member. Keys are dropped inside arrays and a
 * missing key inside an object becomes "_", so the output stays valid
 * whatever the caller does. */
static void json_member(struct bench_json *j, const char *key)
{
	if (j->depth == 0)
		return;
	if (!j->first[j->depth - 1])
		fputc(',', j->out);
	j->first[j->depth - 1] = false;
	if (j->is_array[j->depth - 1])
		return;
	json_string(j->out, key ? key : "_");
	fputc(':', j->out);
}

static void json_open(struct bench_json *j, const char *key, bool array)
{
	json_member(j, key);
	fputc(array ? '[' : '{', j->out);
	if (j->depth < BENCH_JSON_MAX_DEPTH) {
		j->first[j->depth] = true;
		j->is_array[j->depth] = array;
	}
	j->depth++;
}

void bench_json_begin(struct bench_json *j, FILE *out)
{
	memset(j, 0, sizeof(*j));
	j->out = out;
	json_open(j, NULL, false);
}

void bench_json_end(struct bench_json *j)
{
	while (j->depth > 0)
		bench_json_close(j);
	fputc('\n', j->out);
	fflush(j->out);
}

void bench_json_object(struct bench_json *j, const char *key)
{
	json_open(j, key, false);
}

void bench_json_array(struct bench_json *j, const char *key)
{
	json_open(j, key, true);
}

void bench_json_close(struct bench_json *j)
{
	if (j->depth == 0)
		return;
	j->depth--;
	/* Beyond the tracked depth everything is an object (see json_open). */
	bool array = j->depth < BENCH_JSON_MAX_DEPTH && j->is_array[j->depth];
	fputc(array ? ']' : '}', j->out);
}

void bench_json_str(struct bench_json *j, const char *key, const char *v)
{
	json_member(j, key);
	if (v)
		json_string(j->out, v);
	else
		fputs("null", j->out);
}

void bench_json_u64(struct bench_json *j, const char *key, uint64_t v)
{
	json_member(j, key);
	fprintf(j->out, "%" PRIu64, v);
}

void bench_json_i64(struct bench_json *j, const char *key, int64_t v)
{
	json_member(j, key);
	fprintf(j->out, "%" PRId64, v);
}

void bench_json_f64(struct bench_json *j, const char *key, double v)
{
	json_member(j, key);
	if (isfinite(v))
		fprintf(j->out, "%.6g", v);
	else
		fputs("null", j->out);
}

void bench_json_bool(struct bench_json *j, const char *key, bool v)
{
	json_member(j, key);
	fputs(v ? "true" : "false", j->out);
}

/* ---------------------------------------------------------------- options */

void bench_getopt_reset(void)
{
	optind = 1;
	opterr = 1;
}

int bench_parse_size(const char *s, uint64_t *out)
{
	char *end;
	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	unsigned shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: break;
	}
	if (shift && (*end == 'i' || *end == 'I'))
		end++;
	if (shift && (*end == 'b' || *end == 'B'))
		end++;
	if (*end)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

int bench_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int bench_parse_backend(const char *s, enum vkv_backend_kind *out)
{
	for (int k = 0; k < VKV_BACKEND_COUNT; k++) {
		const char *name = k == VKV_BACKEND_AUTO ? "auto" : vkv_backend_name(k);
		if (s && !strcasecmp(s, name)) {
			*out = (enum vkv_backend_kind)k;
			return 0;
		}
	}
	return -EINVAL;
}

int bench_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "vkvbench %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n(try `vkvbench %s --help`)\n", cmd);
	return BENCH_USAGE;
}

const char *bench_fmt_size(char *buf, size_t len, uint64_t bytes)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)bytes;
	unsigned u = 0;
	while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%" PRIu64 " B", bytes);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

/* ----------------------------------------------------------------- timing */

uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------ percentiles */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_f64(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

uint64_t bench_percentile_u64(uint64_t *v, size_t n, double p)
{
	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), cmp_u64);
	if (p <= 0)
		return v[0];
	if (p >= 100)
		return v[n - 1];
	size_t rank = (size_t)ceil(p / 100.0 * (double)n);
	return v[rank ? rank - 1 : 0];
}

double bench_median_f64(double *v, size_t n)
{
	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), cmp_f64);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ------------------------------------------------------------------- PRNG */

void bench_rng_seed(struct bench_rng *r, uint64_t seed)
{
	/* splitmix64 of the seed: a zero seed still gives a good state. */
	uint64_t z = seed + 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	r->s = (z ^ (z >> 31)) | 1;
}

uint64_t bench_rng_u64(struct bench_rng *r)
{
	/* xorshift64* */
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 0x2545f4914f6cdd1dull;
}

double bench_rng_unit(struct bench_rng *r)
{
	return (double)(bench_rng_u64(r) >> 11) * 0x1.0p-53;
}

double bench_rng_normal(struct bench_rng *r)
{
	double u1 = bench_rng_unit(r), u2 = bench_rng_unit(r);
	if (u1 < 1e-300)
		u1 = 1e-300;
	return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}
