// SPDX-License-Identifier: MIT
/*
 * json.c - `vkvstat --json`: the snapshot as one JSON document.
 *
 * The document is valid JSON whatever the segments hold: every string goes
 * through vkvstat_json_str() (quotes, backslashes and control characters
 * escaped, bytes outside ASCII as \u00XX), numbers are integers or finite
 * doubles. Its shape is versioned by "schema_version" (VKVSTAT_JSON_SCHEMA)
 * and described in docs/vkvstat.md; fields are only ever added.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "vkvstat.h"

void vkvstat_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c == '"' || *c == '\\')
			fprintf(f, "\\%c", *c);
		else if (*c < 0x20 || *c > 0x7e)
			fprintf(f, "\\u%04x", *c);
		else
			fputc(*c, f);
	}
	fputc('"', f);
}

/* A tiny writer that places the commas. */
struct jw {
	FILE *f;
	bool first;
};

static void sep(struct jw *w)
{
	if (!w->first)
		fputc(',', w->f);
	w->first = false;
}

static void key(struct jw *w, const char *k)
{
	sep(w);
	vkvstat_json_str(w->f, k);
	fputc(':', w->f);
}

static void open_(struct jw *w, const char *k, char brace)
{
	if (k)
		key(w, k);
	else
		sep(w);
	fputc(brace, w->f);
	w->first = true;
}

static void close_(struct jw *w, char brace)
{
	fputc(brace, w->f);
	w->first = false;
}

static void u64(struct jw *w, const char *k, uint64_t v)
{
	key(w, k);
	fprintf(w->f, "%" PRIu64, v);
}

static void i64(struct jw *w, const char *k, int64_t v)
{
	key(w, k);
	fprintf(w->f, "%" PRId64, v);
}

static void dbl(struct jw *w, const char *k, double v)
{
	key(w, k);
	fprintf(w->f, "%.6g", isfinite(v) ? v : 0.0);
}

static void str(struct jw *w, const char *k, const char *v)
{
	key(w, k);
	vkvstat_json_str(w->f, v);
}

static void boolean(struct jw *w, const char *k, bool v)
{
	key(w, k);
	fputs(v ? "true" : "false", w->f);
}

static void tier(struct jw *w, const struct vkv_stats_tier *t, int id)
{
	open_(w, NULL, '{');
	str(w, "tier", vkvstat_tier_names[id]);
	u64(w, "capacity_bytes", t->bytes_capacity);
	u64(w, "used_bytes", t->bytes_used);
	u64(w, "evictions", t->evictions);
	u64(w, "restores", t->restores);
	u64(w, "bytes_in", t->bytes_in);
	u64(w, "bytes_out", t->bytes_out);
	u64(w, "ns_in", t->ns_in);
	u64(w, "ns_out", t->ns_out);
	dbl(w, "in_gbps", vkvstat_gbps(t->bytes_in, t->ns_in));
	dbl(w, "out_gbps", vkvstat_gbps(t->bytes_out, t->ns_out));
	u64(w, "errors", t->errors);
	u64(w, "file_bytes", t->file_bytes);
	close_(w, '}');
}

static void preload(struct jw *w, const struct vkv_stats_preload *p)
{
	open_(w, "preload", '{');
	u64(w, "reserved_bytes", p->reserved_bytes);
	u64(w, "mapped_bytes", p->mapped_bytes);
	u64(w, "in_use_bytes", p->in_use_bytes);
	u64(w, "peak_in_use_bytes", p->peak_in_use);
	u64(w, "peak_mapped_bytes", p->peak_mapped);
	u64(w, "chunks", p->chunks);
	u64(w, "largest_free_bytes", p->largest_free);
	u64(w, "allocs", p->allocs);
	u64(w, "frees", p->frees);
	u64(w, "ooms", p->ooms);
	u64(w, "limit_bytes", p->limit_bytes);
	u64(w, "passthrough", p->passthrough);
	u64(w, "pending_bytes", p->pending_bytes);
	u64(w, "idle_bytes", p->idle_bytes);
	u64(w, "fragmentation_ppm", p->fragmentation_ppm);
	close_(w, '}');
}

static void steps(struct jw *w, const struct vkv_stats_segment *s)
{
	open_(w, "steps", '{');
	u64(w, "count", s->steps);
	u64(w, "ns_total", s->step_ns_total);
	u64(w, "ns_max", s->step_ns_max);
	open_(w, "histogram_log2_ns", '[');
	for (int i = 0; i < VKV_STATS_HIST_BUCKETS; i++) {
		sep(w);
		fprintf(w->f, "%" PRIu64, s->step_hist[i]);
	}
	close_(w, ']');
	close_(w, '}');
}

static void process(struct jw *w, const struct vkvstat_snapshot *snap,
		    const struct vkvstat_proc *p)
{
	const struct vkv_stats_segment *s = &p->seg;

	open_(w, NULL, '{');
	i64(w, "pid", p->pid);
	str(w, "comm", s->comm);
	str(w, "backend", vkvstat_backend_name(s->backend));
	str(w, "backend_detail", s->backend_detail);
	u64(w, "uid", p->uid);
	u64(w, "start_ns", s->start_ns);
	u64(w, "update_ns", s->update_ns);
	u64(w, "segment_size", p->writer_size);
	u64(w, "page_size", s->page_size);
	u64(w, "budget_bytes", s->budget);
	u64(w, "reserved_bytes", s->reserved_bytes);
	u64(w, "committed_bytes", s->committed_bytes);
	u64(w, "in_use_bytes", s->in_use_bytes);
	u64(w, "cached_bytes", s->cached_bytes);
	u64(w, "peak_committed_bytes", s->peak_committed);
	u64(w, "pages_free", s->pages_free);
	u64(w, "free_pool_bytes", vkvstat_free_pool_bytes(s));
	dbl(w, "fragmentation", vkvstat_fragmentation(s));
	u64(w, "pages_shared", s->pages_shared);
	u64(w, "contexts", s->contexts);
	u64(w, "regions", s->regions);
	u64(w, "slots_active", s->slots_active);
	u64(w, "slots_cached", s->slots_cached);
	u64(w, "pages_created", s->pages_created);
	u64(w, "pages_released", s->pages_released);
	u64(w, "maps_sync", s->maps_sync);
	u64(w, "maps_async", s->maps_async);
	u64(w, "unmaps", s->unmaps);
	u64(w, "reclaims", s->reclaims);
	u64(w, "enomem", s->enomem);
	u64(w, "gpu_memory_bytes", vkvstat_gpu_bytes_of(&snap->gpus, p->pid));
	steps(w, s);
	open_(w, "tiers", '[');
	for (int t = 0; t < VKV_TIER_COUNT; t++)
		tier(w, &s->tiers[t], t);
	close_(w, ']');
	preload(w, &s->preload);
	close_(w, '}');
}

static void skipped(struct jw *w, const struct vkvstat_snapshot *s)
{
	open_(w, "skipped", '[');
	for (size_t i = 0; i < s->scan.nprocs; i++) {
		const struct vkvstat_proc *p = &s->scan.procs[i];

		if (p->state == VKVSTAT_SEG_LIVE)
			continue;
		open_(w, NULL, '{');
		str(w, "file", p->name);
		i64(w, "pid", p->pid);
		str(w, "state", vkvstat_state_name(p->state));
		str(w, "reason", p->why);
		boolean(w, "removed", p->cleaned);
		close_(w, '}');
	}
	close_(w, ']');
}

static void kmod(struct jw *w, const struct vkvstat_kmod *k)
{
	open_(w, "kmod", '{');
	boolean(w, "dev_present", k->dev_present);
	boolean(w, "loaded", k->loaded);
	open_(w, "counters", '{');
	for (unsigned i = 0; i < k->n; i++)
		if (k->c[i].node < 0)
			u64(w, k->c[i].name, k->c[i].value);
	close_(w, '}');
	open_(w, "nodes", '[');
	for (unsigned i = 0; i < k->n; i++) {
		if (k->c[i].node < 0)
			continue;
		open_(w, NULL, '{');
		i64(w, "node", k->c[i].node);
		str(w, "name", k->c[i].name);
		u64(w, "value", k->c[i].value);
		close_(w, '}');
	}
	close_(w, ']');
	close_(w, '}');
}

static void gpus(struct jw *w, const struct vkvstat_gpus *g)
{
	open_(w, "gpus", '{');
	boolean(w, "nvml", g->nvml);
	if (!g->nvml)
		str(w, "reason", g->why);
	open_(w, "devices", '[');
	for (unsigned i = 0; i < g->n; i++) {
		open_(w, NULL, '{');
		u64(w, "index", g->g[i].index);
		str(w, "name", g->g[i].name);
		str(w, "uuid", g->g[i].uuid);
		u64(w, "memory_total_bytes", g->g[i].total);
		u64(w, "memory_used_bytes", g->g[i].used);
		u64(w, "memory_free_bytes", g->g[i].free);
		close_(w, '}');
	}
	close_(w, ']');
	close_(w, '}');
}

void vkvstat_print_json(FILE *f, const struct vkvstat_snapshot *s, int32_t pid)
{
	struct jw w = { f, true };

	open_(&w, NULL, '{');
	u64(&w, "schema_version", VKVSTAT_JSON_SCHEMA);
	str(&w, "tool", "vkvstat");
	str(&w, "version", VKVSTAT_VERSION);
	u64(&w, "time_ns", s->time_ns);
	str(&w, "dir", s->dir);
	if (s->err) {
		char e[160];

		snprintf(e, sizeof(e), "cannot read the stats directory: %s",
			 strerror(-s->err));
		str(&w, "error", e);
	}
	open_(&w, "processes", '[');
	for (size_t i = 0; i < s->scan.nprocs; i++)
		if (s->scan.procs[i].state == VKVSTAT_SEG_LIVE &&
		    (!pid || s->scan.procs[i].pid == pid))
			process(&w, s, &s->scan.procs[i]);
	close_(&w, ']');
	skipped(&w, s);
	kmod(&w, &s->kmod);
	gpus(&w, &s->gpus);
	close_(&w, '}');
	fputc('\n', f);
}
