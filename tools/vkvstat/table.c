// SPDX-License-Identifier: MIT
/*
 * table.c - the human-readable snapshot: one table per tier (device, DRAM,
 * NVMe), the LD_PRELOAD arenas, the kernel module and the GPUs. Every line
 * fits 80 columns, so that it reads the same on a plain ssh terminal as in
 * `vkvstat top`, which prints these very tables.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "vkvstat.h"

struct out {
	FILE *f;
	bool color;
};

static const char *on(const struct out *o, const char *code)
{
	return o->color ? code : "";
}

static const char *off(const struct out *o)
{
	return o->color ? VKVSTAT_RESET : "";
}

/* Counts in at most 6 characters: 999999, 1.23M, 45.6G. */
static const char *count(char *buf, size_t len, uint64_t v)
{
	if (v < 1000000)
		snprintf(buf, len, "%" PRIu64, v);
	else if (v < 1000000000ull)
		snprintf(buf, len, "%.2fM", (double)v / 1e6);
	else if (v < 1000000000000ull)
		snprintf(buf, len, "%.2fG", (double)v / 1e9);
	else
		snprintf(buf, len, "%.2fT", (double)v / 1e12);
	return buf;
}

static bool shown(const struct vkvstat_proc *p, const struct vkvstat_table_opts *t)
{
	return p->state == VKVSTAT_SEG_LIVE && (!t->pid || p->pid == t->pid);
}

static void heading(const struct out *o, const char *title, const char *cols)
{
	fprintf(o->f, "\n%s%s%s\n%s%s%s\n", on(o, VKVSTAT_BOLD), title, off(o),
		on(o, VKVSTAT_DIM), cols, off(o));
}

static void device_table(const struct out *o, const struct vkvstat_snapshot *s,
			 const struct vkvstat_table_opts *t)
{
	char a[16], b[16], c[16], d[16], e[16], g[32];

	heading(o, "DEVICE (tier 0): memory the backend committed",
		"    PID COMM       BACKND RESERVD  COMMIT  IN USE    PEAK"
		"   FREE  FRAG   SLOTS");
	for (size_t i = 0; i < s->scan.nprocs; i++) {
		const struct vkvstat_proc *p = &s->scan.procs[i];
		const struct vkv_stats_segment *x = &p->seg;
		double frag;
		char fr[16];

		if (!shown(p, t))
			continue;
		frag = vkvstat_fragmentation(x);
		snprintf(g, sizeof(g), "%" PRIu64 "/%" PRIu64,
			 x->slots_active % 100000, x->slots_cached % 100000);
		snprintf(fr, sizeof(fr), "%3.0f%%", frag * 100.0);
		fprintf(o->f, "%7d %-10.10s %-6.6s %7s %7s %7s %7s %6s %s%5s%s %7s\n",
			p->pid, x->comm, vkvstat_backend_name(x->backend),
			vkvstat_size(a, sizeof(a), x->reserved_bytes),
			vkvstat_size(b, sizeof(b), x->committed_bytes),
			vkvstat_size(c, sizeof(c), x->in_use_bytes),
			vkvstat_size(d, sizeof(d), x->peak_committed),
			vkvstat_size(e, sizeof(e), vkvstat_free_pool_bytes(x)),
			frag >= 0.5 ? on(o, VKVSTAT_YELLOW) : "", fr,
			frag >= 0.5 ? off(o) : "", g);
		if (x->enomem)
			fprintf(o->f, "%7s %s%" PRIu64 " commits refused by the budget%s\n",
				"", on(o, VKVSTAT_RED), x->enomem, off(o));
	}
}

static bool tier_used(const struct vkv_stats_tier *t)
{
	return t->bytes_capacity || t->bytes_used || t->evictions || t->restores ||
	       t->errors || t->file_bytes;
}

static void tier_table(const struct out *o, const struct vkvstat_snapshot *s,
		       const struct vkvstat_table_opts *t, enum vkv_stats_tier_id id)
{
	char a[16], b[16], c[16], d[16], e[16], g[16], title[80];
	unsigned rows = 0;

	snprintf(title, sizeof(title), "%s (tier %d): evicted KV",
		 id == VKV_TIER_DRAM ? "DRAM" : "NVME", (int)id);
	heading(o, title,
		"    PID COMM       CAPACTY    USED   FILE  EVICT RESTOR"
		" IN GB/s OUT GB/s  ERR");
	for (size_t i = 0; i < s->scan.nprocs; i++) {
		const struct vkvstat_proc *p = &s->scan.procs[i];
		const struct vkv_stats_tier *x = &p->seg.tiers[id];

		if (!shown(p, t) || !tier_used(x))
			continue;
		rows++;
		fprintf(o->f, "%7d %-10.10s %7s %7s %6s %6s %6s %7.2f %8.2f %s%4s%s\n",
			p->pid, p->seg.comm,
			x->bytes_capacity ? vkvstat_size(a, sizeof(a), x->bytes_capacity)
					  : "-",
			vkvstat_size(b, sizeof(b), x->bytes_used),
			id == VKV_TIER_NVME ? vkvstat_size(c, sizeof(c), x->file_bytes)
					    : "-",
			count(d, sizeof(d), x->evictions),
			count(e, sizeof(e), x->restores),
			vkvstat_gbps(x->bytes_in, x->ns_in),
			vkvstat_gbps(x->bytes_out, x->ns_out),
			x->errors ? on(o, VKVSTAT_RED) : "",
			count(g, sizeof(g), x->errors), x->errors ? off(o) : "");
	}
	if (!rows)
		fprintf(o->f, "%7s (no process uses this tier)\n", "");
}

/* Parts per million as a percentage with one decimal, "?" above 100%
 * (no honest writer says that, and it must not widen the line). */
static const char *ppm_percent(char *buf, size_t len, uint64_t ppm)
{
	if (ppm > 1000000)
		snprintf(buf, len, "?");
	else
		snprintf(buf, len, "%.1f%%", (double)ppm / 1e4);
	return buf;
}

/* One row of counters per process, and under it, in words, how its mapped
 * memory is held back: freed on a stream but waiting for the stream's work,
 * idle in empty chunks, or lost between allocations (fragmentation). The
 * row is full at 79 columns, hence the second line. */
static void preload_table(const struct out *o, const struct vkvstat_snapshot *s,
			  const struct vkvstat_table_opts *t)
{
	char a[16], b[16], c[16], d[16], e[16], g[16], h[16], k[16];
	bool any = false;

	for (size_t i = 0; i < s->scan.nprocs; i++)
		any |= shown(&s->scan.procs[i], t) &&
		       s->scan.procs[i].seg.preload.reserved_bytes;
	if (!any)
		return;
	heading(o, "PRELOAD: LD_PRELOAD arenas (cudaMalloc served by vkv)",
		"    PID COMM       RESERVD  MAPPED  IN USE    PEAK  CHUNKS"
		"   LIMIT  LFREE  OOMS");
	for (size_t i = 0; i < s->scan.nprocs; i++) {
		const struct vkvstat_proc *p = &s->scan.procs[i];
		const struct vkv_stats_preload *x = &p->seg.preload;

		if (!shown(p, t) || !x->reserved_bytes)
			continue;
		fprintf(o->f, "%7d %-10.10s %7s %7s %7s %7s %7s %7s %6s %5s\n",
			p->pid, p->seg.comm,
			vkvstat_size(a, sizeof(a), x->reserved_bytes),
			vkvstat_size(b, sizeof(b), x->mapped_bytes),
			vkvstat_size(c, sizeof(c), x->in_use_bytes),
			vkvstat_size(d, sizeof(d), x->peak_in_use),
			count(e, sizeof(e), x->chunks),
			x->limit_bytes ? vkvstat_size(g, sizeof(g), x->limit_bytes) : "-",
			vkvstat_size(h, sizeof(h), x->largest_free),
			count(k, sizeof(k), x->ooms));
		fprintf(o->f, "%18s pending %s, idle %s, fragmentation %s\n", "",
			vkvstat_size(a, sizeof(a), x->pending_bytes),
			vkvstat_size(b, sizeof(b), x->idle_bytes),
			ppm_percent(c, sizeof(c), x->fragmentation_ppm));
	}
}

static bool is_bytes(const char *name)
{
	return strstr(name, "bytes") || strstr(name, "max_");
}

static void kmod_section(const struct out *o, const struct vkvstat_kmod *k)
{
	char v[24];
	unsigned col = 0;

	fprintf(o->f, "\n%sKERNEL MODULE%s  /dev/vkv %s, vkv.ko %s\n",
		on(o, VKVSTAT_BOLD), off(o), k->dev_present ? "present" : "absent",
		k->loaded ? "loaded" : "not loaded");
	for (unsigned i = 0; i < k->n; i++) {
		char name[64];

		if (k->c[i].node >= 0)
			snprintf(name, sizeof(name), "node%d.%.40s", k->c[i].node,
				 k->c[i].name);
		else
			snprintf(name, sizeof(name), "%.40s", k->c[i].name);
		if (is_bytes(k->c[i].name))
			vkvstat_size(v, sizeof(v), k->c[i].value);
		else
			count(v, sizeof(v), k->c[i].value);
		fprintf(o->f, "  %-18.18s %6s", name, v);
		if (++col == 3) {
			fputc('\n', o->f);
			col = 0;
		}
	}
	if (col)
		fputc('\n', o->f);
}

static void gpu_section(const struct out *o, const struct vkvstat_snapshot *s)
{
	char a[16], b[16], c[16];

	fprintf(o->f, "\n%sGPUS%s  ", on(o, VKVSTAT_BOLD), off(o));
	if (!s->gpus.nvml) {
		fprintf(o->f, "(NVML: %s)\n", s->gpus.why);
		return;
	}
	fprintf(o->f, "(NVML, %u device%s)\n", s->gpus.n, s->gpus.n == 1 ? "" : "s");
	for (unsigned i = 0; i < s->gpus.n; i++) {
		const struct vkvstat_gpu *g = &s->gpus.g[i];
		uint64_t vkv = 0;

		for (unsigned j = 0; j < s->gpus.nproc; j++)
			if (s->gpus.proc[j].gpu == g->index)
				for (size_t k = 0; k < s->scan.nprocs; k++)
					if (s->scan.procs[k].state == VKVSTAT_SEG_LIVE &&
					    s->scan.procs[k].pid == s->gpus.proc[j].pid)
						vkv += s->gpus.proc[j].bytes;
		fprintf(o->f, "  %u %-30.30s used %7s of %7s, vkv processes %7s\n",
			g->index, g->name, vkvstat_size(a, sizeof(a), g->used),
			vkvstat_size(b, sizeof(b), g->total),
			vkvstat_size(c, sizeof(c), vkv));
	}
}

void vkvstat_print_table(FILE *f, const struct vkvstat_snapshot *s,
			 const struct vkvstat_table_opts *t)
{
	struct out o = { f, t->color };
	size_t problems = s->scan.count[VKVSTAT_SEG_DENIED] +
			  s->scan.count[VKVSTAT_SEG_BAD] +
			  s->scan.count[VKVSTAT_SEG_BUSY];
	time_t now = (time_t)(s->time_ns / 1000000000ull);
	struct tm tm;
	char when[16];

	localtime_r(&now, &tm);
	strftime(when, sizeof(when), "%H:%M:%S", &tm);
	fprintf(f, "%svkvstat %s%s  %s  %zu process%s in %.30s\n",
		on(&o, VKVSTAT_BOLD), VKVSTAT_VERSION, off(&o), when, s->nlive,
		s->nlive == 1 ? "" : "es", s->dir);
	if (problems)
		fprintf(f, "%s%zu segment%s not shown: unreadable (see stderr)%s\n",
			on(&o, VKVSTAT_YELLOW), problems, problems == 1 ? "" : "s",
			off(&o));
	device_table(&o, s, t);
	tier_table(&o, s, t, VKV_TIER_DRAM);
	tier_table(&o, s, t, VKV_TIER_NVME);
	preload_table(&o, s, t);
	kmod_section(&o, &s->kmod);
	gpu_section(&o, s);
}
