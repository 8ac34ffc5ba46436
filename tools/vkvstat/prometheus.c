// SPDX-License-Identifier: MIT
/*
 * prometheus.c - `vkvstat --prometheus`: the snapshot in the Prometheus
 * text exposition format (version 0.0.4), for node_exporter's textfile
 * collector or any scraper that runs a command.
 *
 * Names follow the conventions promtool checks (base units, counters end in
 * _total) and the style of NVIDIA's DCGM exporter: one family per quantity,
 * the process and tier as labels (pid, comm, tier), GPUs labelled gpu,
 * uuid and model_name (DCGM's UUID and modelName, in the snake_case that
 * promtool asks for). Each family is written once with its HELP and TYPE
 * lines, followed by one sample per process.
 */
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "vkvstat.h"

/* A label value with \\, \" and \n escaped. */
static void label_value(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void proc_labels(FILE *f, const struct vkvstat_proc *p)
{
	fprintf(f, "pid=\"%d\",comm=", p->pid);
	label_value(f, p->seg.comm);
}

static void num(FILE *f, double v)
{
	if (!isfinite(v))
		v = 0;
	if (v == floor(v) && fabs(v) < 9.007199254740992e15)
		fprintf(f, " %.0f\n", v);
	else
		fprintf(f, " %.9g\n", v);
}

static void u64(FILE *f, uint64_t v)
{
	fprintf(f, " %" PRIu64 "\n", v);
}

/* ------------------------------------------------- per-process families */

enum kind { K_FIELD, K_FREE_BYTES, K_FRAG };

struct fam {
	const char *name, *type, *help;
	const char *label; /* extra label, e.g. tier="device"; NULL none */
	enum kind kind;
	size_t off;        /* K_FIELD: uint64_t in the segment */
	double scale;      /* 0: integer as is; else multiply */
};

#define SEG(f) offsetof(struct vkv_stats_segment, f)
#define PRE(f) (offsetof(struct vkv_stats_segment, preload) + \
		offsetof(struct vkv_stats_preload, f))
#define G "gauge"
#define C "counter"
#define DEV "tier=\"device\""

/* Entries with the same name must be adjacent: one HELP/TYPE per name. */
static const struct fam fams[] = {
	{ "vkv_memory_reserved_bytes", G, "Virtual address space reserved by KV regions.", DEV, K_FIELD, SEG(reserved_bytes), 0 },
	{ "vkv_memory_committed_bytes", G, "Physical memory committed (pages in existence).", DEV, K_FIELD, SEG(committed_bytes), 0 },
	{ "vkv_memory_in_use_bytes", G, "Committed memory mapped in allocated slots.", DEV, K_FIELD, SEG(in_use_bytes), 0 },
	{ "vkv_memory_cached_bytes", G, "Committed memory mapped only in freed slots.", DEV, K_FIELD, SEG(cached_bytes), 0 },
	{ "vkv_memory_peak_committed_bytes", G, "Highest committed memory since start.", DEV, K_FIELD, SEG(peak_committed), 0 },
	{ "vkv_memory_budget_bytes", G, "Pool budget, 0 when uncapped.", DEV, K_FIELD, SEG(budget), 0 },
	{ "vkv_memory_fragmentation_ratio", G, "Committed memory not holding data of an allocated slot, over committed.", DEV, K_FRAG, 0, 0 },
	{ "vkv_pool_free_bytes", G, "Memory of the pages on the pools' free lists.", NULL, K_FREE_BYTES, 0, 0 },
	{ "vkv_pool_free_pages", G, "Pages on the pools' free lists.", NULL, K_FIELD, SEG(pages_free), 0 },
	{ "vkv_pool_shared_pages", G, "Pages mapped at more than one address (prefix sharing).", NULL, K_FIELD, SEG(pages_shared), 0 },
	{ "vkv_page_size_bytes", G, "Page size of the first context.", NULL, K_FIELD, SEG(page_size), 0 },
	{ "vkv_contexts", G, "Open vkv contexts.", NULL, K_FIELD, SEG(contexts), 0 },
	{ "vkv_regions", G, "Open KV regions.", NULL, K_FIELD, SEG(regions), 0 },
	{ "vkv_slots", G, "Slots by state.", "state=\"active\"", K_FIELD, SEG(slots_active), 0 },
	{ "vkv_slots", G, "", "state=\"cached\"", K_FIELD, SEG(slots_cached), 0 },
	{ "vkv_pages_created_total", C, "Backend page creations.", NULL, K_FIELD, SEG(pages_created), 0 },
	{ "vkv_pages_released_total", C, "Backend page releases.", NULL, K_FIELD, SEG(pages_released), 0 },
	{ "vkv_page_maps_total", C, "Pages mapped, on the critical path (sync) or ahead by the worker (async).", "path=\"sync\"", K_FIELD, SEG(maps_sync), 0 },
	{ "vkv_page_maps_total", C, "", "path=\"async\"", K_FIELD, SEG(maps_async), 0 },
	{ "vkv_page_unmaps_total", C, "Pages unmapped.", NULL, K_FIELD, SEG(unmaps), 0 },
	{ "vkv_page_reclaims_total", C, "Cached pages taken back from freed slots.", NULL, K_FIELD, SEG(reclaims), 0 },
	{ "vkv_commit_refusals_total", C, "Commits refused by the budget (ENOMEM).", NULL, K_FIELD, SEG(enomem), 0 },
	{ "vkv_step_duration_max_seconds", G, "Longest step call.", NULL, K_FIELD, SEG(step_ns_max), 1e-9 },
	{ "vkv_process_start_time_seconds", G, "When the process created its stats segment (Unix time).", NULL, K_FIELD, SEG(start_ns), 1e-9 },
	{ "vkv_last_update_time_seconds", G, "When the process last wrote its stats segment (Unix time).", NULL, K_FIELD, SEG(update_ns), 1e-9 },
	{ "vkv_preload_reserved_bytes", G, "LD_PRELOAD arenas: virtual space reserved.", NULL, K_FIELD, PRE(reserved_bytes), 0 },
	{ "vkv_preload_mapped_bytes", G, "LD_PRELOAD arenas: physical memory mapped.", NULL, K_FIELD, PRE(mapped_bytes), 0 },
	{ "vkv_preload_in_use_bytes", G, "LD_PRELOAD arenas: memory handed out to the program.", NULL, K_FIELD, PRE(in_use_bytes), 0 },
	{ "vkv_preload_peak_in_use_bytes", G, "LD_PRELOAD arenas: highest in-use memory.", NULL, K_FIELD, PRE(peak_in_use), 0 },
	{ "vkv_preload_peak_mapped_bytes", G, "LD_PRELOAD arenas: highest mapped memory.", NULL, K_FIELD, PRE(peak_mapped), 0 },
	{ "vkv_preload_chunks", G, "LD_PRELOAD arenas: mapped chunks.", NULL, K_FIELD, PRE(chunks), 0 },
	{ "vkv_preload_largest_free_bytes", G, "LD_PRELOAD arenas: largest free block.", NULL, K_FIELD, PRE(largest_free), 0 },
	{ "vkv_preload_pending_bytes", G, "LD_PRELOAD arenas: memory freed on a stream, waiting for the stream's work.", NULL, K_FIELD, PRE(pending_bytes), 0 },
	{ "vkv_preload_idle_bytes", G, "LD_PRELOAD arenas: mapped chunks holding no allocation.", NULL, K_FIELD, PRE(idle_bytes), 0 },
	{ "vkv_preload_fragmentation_ratio", G, "LD_PRELOAD arenas: mapped memory neither in use, pending nor idle, over mapped.", NULL, K_FIELD, PRE(fragmentation_ppm), 1e-6 },
	{ "vkv_preload_limit_bytes", G, "LD_PRELOAD arenas: VKV_PRELOAD_LIMIT, 0 when none.", NULL, K_FIELD, PRE(limit_bytes), 0 },
	{ "vkv_preload_allocs_total", C, "LD_PRELOAD arenas: allocations served.", NULL, K_FIELD, PRE(allocs), 0 },
	{ "vkv_preload_frees_total", C, "LD_PRELOAD arenas: frees.", NULL, K_FIELD, PRE(frees), 0 },
	{ "vkv_preload_ooms_total", C, "LD_PRELOAD arenas: allocations refused by the limit.", NULL, K_FIELD, PRE(ooms), 0 },
	{ "vkv_preload_passthrough_total", C, "LD_PRELOAD: calls forwarded untouched.", NULL, K_FIELD, PRE(passthrough), 0 },
};

#define TIER(f) offsetof(struct vkv_stats_tier, f)

static const struct fam tier_fams[] = {
	{ "vkv_tier_capacity_bytes", G, "Budget of the tier, 0 when none.", NULL, K_FIELD, TIER(bytes_capacity), 0 },
	{ "vkv_tier_used_bytes", G, "Data held in the tier.", NULL, K_FIELD, TIER(bytes_used), 0 },
	{ "vkv_tier_file_bytes", G, "Size of the tier's files (NVMe).", NULL, K_FIELD, TIER(file_bytes), 0 },
	{ "vkv_tier_evictions_total", C, "Slots moved into the tier.", NULL, K_FIELD, TIER(evictions), 0 },
	{ "vkv_tier_restores_total", C, "Slots moved back out of the tier.", NULL, K_FIELD, TIER(restores), 0 },
	{ "vkv_tier_written_bytes_total", C, "Bytes written into the tier.", NULL, K_FIELD, TIER(bytes_in), 0 },
	{ "vkv_tier_read_bytes_total", C, "Bytes read back from the tier.", NULL, K_FIELD, TIER(bytes_out), 0 },
	{ "vkv_tier_write_seconds_total", C, "Time spent writing into the tier.", NULL, K_FIELD, TIER(ns_in), 1e-9 },
	{ "vkv_tier_read_seconds_total", C, "Time spent reading from the tier.", NULL, K_FIELD, TIER(ns_out), 1e-9 },
	{ "vkv_tier_errors_total", C, "Failed transfers.", NULL, K_FIELD, TIER(errors), 0 },
};

static bool want(const struct vkvstat_proc *p, int32_t pid)
{
	return p->state == VKVSTAT_SEG_LIVE && (!pid || p->pid == pid);
}

static void value(FILE *f, const struct fam *m, const void *base,
		  const struct vkv_stats_segment *s)
{
	uint64_t v;

	switch (m->kind) {
	case K_FREE_BYTES:
		u64(f, vkvstat_free_pool_bytes(s));
		return;
	case K_FRAG:
		num(f, vkvstat_fragmentation(s));
		return;
	case K_FIELD:
		break;
	}
	memcpy(&v, (const char *)base + m->off, sizeof(v));
	if (m->scale != 0)
		num(f, (double)v * m->scale);
	else
		u64(f, v);
}

static void proc_families(FILE *f, const struct vkvstat_snapshot *s, int32_t pid)
{
	for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++) {
		const struct fam *m = &fams[i];

		if (i == 0 || strcmp(m->name, fams[i - 1].name))
			family(f, m->name, m->type, m->help);
		for (size_t j = 0; j < s->scan.nprocs; j++) {
			const struct vkvstat_proc *p = &s->scan.procs[j];

			if (!want(p, pid))
				continue;
			fprintf(f, "%s{", m->name);
			proc_labels(f, p);
			if (m->label)
				fprintf(f, ",%s", m->label);
			fputc('}', f);
			value(f, m, &p->seg, &p->seg);
		}
	}
	for (size_t i = 0; i < sizeof(tier_fams) / sizeof(tier_fams[0]); i++) {
		const struct fam *m = &tier_fams[i];

		family(f, m->name, m->type, m->help);
		for (size_t j = 0; j < s->scan.nprocs; j++) {
			const struct vkvstat_proc *p = &s->scan.procs[j];

			if (!want(p, pid))
				continue;
			for (int t = 0; t < VKV_TIER_COUNT; t++) {
				fprintf(f, "%s{", m->name);
				proc_labels(f, p);
				fprintf(f, ",tier=\"%s\"}", vkvstat_tier_names[t]);
				value(f, m, &p->seg.tiers[t], &p->seg);
			}
		}
	}
}

/* Step times: the segment's log2 buckets as a Prometheus histogram. */
static void step_histogram(FILE *f, const struct vkvstat_snapshot *s, int32_t pid)
{
	const char *n = "vkv_step_duration_seconds";

	family(f, n, "histogram", "Time of one step call (commit for an iteration).");
	for (size_t j = 0; j < s->scan.nprocs; j++) {
		const struct vkvstat_proc *p = &s->scan.procs[j];
		uint64_t cum = 0;

		if (!want(p, pid))
			continue;
		for (int i = 0; i < VKV_STATS_HIST_BUCKETS; i++) {
			uint64_t b = p->seg.step_hist[i];

			cum = cum + b < cum ? UINT64_MAX : cum + b;
			fprintf(f, "%s_bucket{", n);
			proc_labels(f, p);
			fprintf(f, ",le=\"%.9g\"}", ldexp(1.0, i + 1) * 1e-9);
			u64(f, cum);
		}
		if (p->seg.steps > cum)
			cum = p->seg.steps;
		fprintf(f, "%s_bucket{", n);
		proc_labels(f, p);
		fprintf(f, ",le=\"+Inf\"}");
		u64(f, cum);
		fprintf(f, "%s_sum{", n);
		proc_labels(f, p);
		fputc('}', f);
		num(f, (double)p->seg.step_ns_total * 1e-9);
		fprintf(f, "%s_count{", n);
		proc_labels(f, p);
		fputc('}', f);
		u64(f, cum);
	}
}

static void kmod_families(FILE *f, const struct vkvstat_kmod *k)
{
	family(f, "vkv_kmod_loaded", G, "1 when vkv.ko is loaded.");
	fprintf(f, "vkv_kmod_loaded %d\n", k->loaded);
	family(f, "vkv_kmod_device_present", G, "1 when /dev/vkv exists.");
	fprintf(f, "vkv_kmod_device_present %d\n", k->dev_present);
	for (unsigned i = 0; i < k->n; i++) {
		char name[96];
		bool seen = false;

		snprintf(name, sizeof(name), "vkv_kmod_%s%s",
			 k->c[i].node >= 0 ? "node_" : "", k->c[i].name);
		for (unsigned j = 0; j < i; j++)
			seen |= k->c[j].node >= 0 && k->c[i].node >= 0 &&
				!strcmp(k->c[j].name, k->c[i].name);
		if (seen)
			continue;
		family(f, name, "untyped", "Counter of vkv.ko from sysfs.");
		for (unsigned j = i; j < k->n; j++) {
			if (strcmp(k->c[j].name, k->c[i].name) ||
			    (k->c[j].node >= 0) != (k->c[i].node >= 0))
				continue;
			if (k->c[j].node >= 0)
				fprintf(f, "%s{node=\"%d\"}", name, k->c[j].node);
			else
				fputs(name, f);
			u64(f, k->c[j].value);
		}
	}
}

static void gpu_labels(FILE *f, const struct vkvstat_gpu *g)
{
	fprintf(f, "{gpu=\"%u\",uuid=", g->index);
	label_value(f, g->uuid);
	fputs(",model_name=", f);
	label_value(f, g->name);
	fputc('}', f);
}

static void gpu_families(FILE *f, const struct vkvstat_gpus *g)
{
	static const struct {
		const char *name, *help;
		size_t off;
	} m[] = {
		{ "vkv_gpu_memory_total_bytes", "GPU memory (NVML).", offsetof(struct vkvstat_gpu, total) },
		{ "vkv_gpu_memory_used_bytes", "GPU memory in use, all processes (NVML).", offsetof(struct vkvstat_gpu, used) },
		{ "vkv_gpu_memory_free_bytes", "GPU memory free (NVML).", offsetof(struct vkvstat_gpu, free) },
	};

	if (!g->nvml)
		return;
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		family(f, m[i].name, G, m[i].help);
		for (unsigned j = 0; j < g->n; j++) {
			uint64_t v;

			memcpy(&v, (const char *)&g->g[j] + m[i].off, sizeof(v));
			fputs(m[i].name, f);
			gpu_labels(f, &g->g[j]);
			u64(f, v);
		}
	}
	family(f, "vkv_gpu_process_memory_bytes", G,
	       "GPU memory NVML attributes to a process.");
	for (unsigned j = 0; j < g->nproc; j++)
		fprintf(f, "vkv_gpu_process_memory_bytes{gpu=\"%u\",pid=\"%d\"} %" PRIu64 "\n",
			g->proc[j].gpu, g->proc[j].pid, g->proc[j].bytes);
}

void vkvstat_print_prometheus(FILE *f, const struct vkvstat_snapshot *s,
			      int32_t pid)
{
	family(f, "vkv_processes", G, "Processes publishing vkv stats.");
	fprintf(f, "vkv_processes %zu\n", s->nlive);
	family(f, "vkv_segments", G, "Stats segment files found, by state.");
	for (int st = 0; st < VKVSTAT_SEG_STATE_COUNT; st++)
		fprintf(f, "vkv_segments{state=\"%s\"} %zu\n",
			vkvstat_state_name(st), s->scan.count[st]);
	proc_families(f, s, pid);
	step_histogram(f, s, pid);
	kmod_families(f, &s->kmod);
	gpu_families(f, &s->gpus);
}
