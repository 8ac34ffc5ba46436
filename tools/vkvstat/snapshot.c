// SPDX-License-Identifier: MIT
/*
 * snapshot.c - one look at everything vkvstat reports, and the values
 * derived from it that every printer shows the same way.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "vkvstat.h"

const char *const vkvstat_tier_names[VKV_TIER_COUNT] = { "device", "dram", "nvme" };

int vkvstat_snapshot_take(struct vkvstat_snapshot *s, const char *dir,
			  unsigned scan_flags, bool gpus)
{
	struct timespec ts;
	int err;

	memset(s, 0, sizeof(*s));
	s->dir = dir;
	clock_gettime(CLOCK_REALTIME, &ts);
	s->time_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	err = vkvstat_scan_dir(dir, scan_flags, &s->scan);
	if (err) {
		s->err = err;
		return err;
	}
	s->nlive = s->scan.count[VKVSTAT_SEG_LIVE];
	vkvstat_kmod_read(&s->kmod);
	if (gpus)
		vkvstat_gpus_read(&s->gpus);
	else
		snprintf(s->gpus.why, sizeof(s->gpus.why), "not queried");
	return 0;
}

void vkvstat_snapshot_free(struct vkvstat_snapshot *s)
{
	vkvstat_scan_free(&s->scan);
}

void vkvstat_snapshot_error(const struct vkvstat_snapshot *s)
{
	fprintf(stderr, "vkvstat: cannot read the stats directory %s: %s\n",
		s->dir, strerror(-s->err));
}

/* Segments we may not read are normal on a shared machine: one line for
 * all of them, naming their owners, rather than one per file. */
static void warn_denied(const struct vkvstat_snapshot *s)
{
	size_t n = s->scan.count[VKVSTAT_SEG_DENIED];
	unsigned uids[4], nuids = 0;

	if (!n)
		return;
	for (size_t i = 0; i < s->scan.nprocs && nuids < 4; i++) {
		const struct vkvstat_proc *p = &s->scan.procs[i];
		bool seen = false;

		if (p->state != VKVSTAT_SEG_DENIED)
			continue;
		for (unsigned j = 0; j < nuids; j++)
			seen |= uids[j] == (unsigned)p->uid;
		if (!seen)
			uids[nuids++] = (unsigned)p->uid;
	}
	fprintf(stderr, "vkvstat: %zu segment%s in %s not readable (permission "
		"denied), owned by uid", n, n == 1 ? "" : "s", s->dir);
	for (unsigned j = 0; j < nuids && j < 3; j++)
		fprintf(stderr, "%s %u", j ? "," : "", uids[j]);
	fprintf(stderr, "%s; run as that user or root to see them\n",
		nuids > 3 ? ", ..." : "");
}

void vkvstat_snapshot_warn(const struct vkvstat_snapshot *s)
{
	warn_denied(s);
	if (s->scan.cleaned > 3)
		fprintf(stderr, "vkvstat: removed %zu segments of processes that "
			"have exited from %s\n", s->scan.cleaned, s->dir);
	for (size_t i = 0; i < s->scan.nprocs; i++) {
		const struct vkvstat_proc *p = &s->scan.procs[i];

		switch (p->state) {
		case VKVSTAT_SEG_BAD:
		case VKVSTAT_SEG_BUSY:
			fprintf(stderr, "vkvstat: %s/%s: ignored: %s\n", s->dir,
				p->name, p->why);
			break;
		case VKVSTAT_SEG_DEAD:
			if (p->cleaned && s->scan.cleaned <= 3)
				fprintf(stderr, "vkvstat: removed %s/%s: %s\n",
					s->dir, p->name, p->why);
			break;
		default:
			break;
		}
	}
}

uint64_t vkvstat_free_pool_bytes(const struct vkv_stats_segment *s)
{
	if (s->page_size && s->pages_free > UINT64_MAX / s->page_size)
		return UINT64_MAX;
	return s->pages_free * s->page_size;
}

double vkvstat_fragmentation(const struct vkv_stats_segment *s)
{
	if (!s->committed_bytes || s->in_use_bytes >= s->committed_bytes)
		return 0.0;
	return (double)(s->committed_bytes - s->in_use_bytes) /
	       (double)s->committed_bytes;
}

double vkvstat_gbps(uint64_t bytes, uint64_t ns)
{
	return ns ? (double)bytes / (double)ns : 0.0;
}

const char *vkvstat_backend_name(uint32_t backend)
{
	static const char *const names[] = { "auto", "host", "cuda", "kmod" };

	return backend < sizeof(names) / sizeof(names[0]) ? names[backend] : "?";
}
