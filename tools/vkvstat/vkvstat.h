// SPDX-License-Identifier: MIT
/*
 * vkvstat.h - the pieces of the vkvstat tool and what they share.
 *
 * A snapshot (snapshot.c) is everything one look at the machine gives: the
 * stats segments of every process (segment_reader.c), the kernel module's
 * sysfs counters (kmod_sysfs.c) and the GPUs as NVML sees them (nvml.c).
 * Printers turn a snapshot into a table (table.c), JSON (json.c) or the
 * Prometheus text format (prometheus.c); `top` (top.c) redraws tables of
 * successive snapshots; `probe` (probe.c) measures the machine instead.
 * Data goes to stdout, diagnostics to stderr ("vkvstat: ...").
 */
#ifndef VKVSTAT_H
#define VKVSTAT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "segment_reader.h"

#define VKVSTAT_VERSION "0.1.0"
/* Version of the --json document; bumped only for incompatible changes. */
#define VKVSTAT_JSON_SCHEMA 1

/* Exit codes (documented in docs/vkvstat.md). */
#define VKVSTAT_EXIT_OK 0
#define VKVSTAT_EXIT_ERROR 1 /* directory unreadable, probe or output failed */
#define VKVSTAT_EXIT_USAGE 2

/* ---------------------------------------------------------- kmod_sysfs.c */

#define VKVSTAT_KMOD_MAX 64

struct vkvstat_kmod {
	bool dev_present;   /* /dev/vkv exists */
	bool loaded;        /* /sys/module/vkv exists */
	unsigned n;
	struct {
		char name[48];  /* [a-z0-9_] only: "bytes", "param_max_total" */
		int node;       /* NUMA node of nodes/nodeN/<name>, else -1 */
		uint64_t value;
	} c[VKVSTAT_KMOD_MAX];
};

/* Every numeric sysfs attribute of vkv.ko: /sys/class/misc/vkv/<name>,
 * /sys/class/misc/vkv/nodes/nodeN/<name> and the module's parameters
 * (/sys/module/vkv/parameters/<name>, named "param_<name>"). Absent module:
 * loaded false, no counters; never an error. $VKVSTAT_SYSFS_ROOT replaces
 * "/sys" (tests). */
void vkvstat_kmod_read(struct vkvstat_kmod *k);

/* ----------------------------------------------------------------- nvml.c */

#define VKVSTAT_GPU_MAX 16
#define VKVSTAT_GPU_PROC_MAX 256

struct vkvstat_gpu {
	unsigned index;
	char name[96];
	char uuid[96];
	uint64_t total, used, free; /* bytes */
};

struct vkvstat_gpus {
	bool nvml;        /* libnvidia-ml.so.1 loaded and initialised */
	char why[128];    /* why not, when !nvml */
	unsigned n;
	struct vkvstat_gpu g[VKVSTAT_GPU_MAX];
	unsigned nproc;   /* compute processes, all GPUs */
	struct {
		int32_t pid;
		unsigned gpu;
		uint64_t bytes;
	} proc[VKVSTAT_GPU_PROC_MAX];
};

/* Query NVML (dlopen, nothing linked). No NVML is not an error. */
void vkvstat_gpus_read(struct vkvstat_gpus *g);
/* GPU memory NVML attributes to a pid, all GPUs; 0 when unknown. */
uint64_t vkvstat_gpu_bytes_of(const struct vkvstat_gpus *g, int32_t pid);

/* ------------------------------------------------------------- snapshot.c */

struct vkvstat_snapshot {
	const char *dir;
	int err;                 /* negative errno of the directory scan, or 0 */
	uint64_t time_ns;        /* CLOCK_REALTIME when taken */
	struct vkvstat_scan scan;
	size_t nlive;            /* scan.procs entries with state LIVE */
	struct vkvstat_kmod kmod;
	struct vkvstat_gpus gpus;
};

/* Take a snapshot. Returns 0 or the negative errno of the directory scan
 * (also in s->err; s is then a valid, empty snapshot and must be freed). */
int vkvstat_snapshot_take(struct vkvstat_snapshot *s, const char *dir,
			  unsigned scan_flags, bool gpus);
void vkvstat_snapshot_free(struct vkvstat_snapshot *s);
/* "vkvstat: cannot read the stats directory D: reason" on stderr. */
void vkvstat_snapshot_error(const struct vkvstat_snapshot *s);
/* One "vkvstat: ..." line on stderr per problem worth knowing (unreadable
 * or rejected segments, dead ones cleaned). */
void vkvstat_snapshot_warn(const struct vkvstat_snapshot *s);

/* Derived values, shared by every printer. */
uint64_t vkvstat_free_pool_bytes(const struct vkv_stats_segment *s);
/* Committed memory not holding data of an allocated slot, as a fraction of
 * committed: free pool pages plus pages cached in freed slots. */
double vkvstat_fragmentation(const struct vkv_stats_segment *s);
/* bytes per ns = GB/s; 0 when no time was spent. */
double vkvstat_gbps(uint64_t bytes, uint64_t ns);
const char *vkvstat_backend_name(uint32_t backend);
extern const char *const vkvstat_tier_names[VKV_TIER_COUNT];

/* ----------------------------------------------------------------- term.c */

/* "1.50G", "512K", "0": at most 6 characters, binary units. */
const char *vkvstat_size(char *buf, size_t len, uint64_t bytes);
/* Should output to `f` be coloured? mode: 0 auto (tty and no NO_COLOR),
 * 1 always, -1 never. */
bool vkvstat_use_color(FILE *f, int mode);
#define VKVSTAT_BOLD "\033[1m"
#define VKVSTAT_RED "\033[31m"
#define VKVSTAT_YELLOW "\033[33m"
#define VKVSTAT_GREEN "\033[32m"
#define VKVSTAT_DIM "\033[2m"
#define VKVSTAT_RESET "\033[0m"

/* ---------------------------------------------------------------- printers */

struct vkvstat_table_opts {
	bool color;
	int32_t pid;    /* only this process, 0 = all */
	unsigned width; /* columns available (80 when unknown) */
};

void vkvstat_print_table(FILE *f, const struct vkvstat_snapshot *s,
			 const struct vkvstat_table_opts *o);
void vkvstat_print_json(FILE *f, const struct vkvstat_snapshot *s, int32_t pid);
void vkvstat_print_prometheus(FILE *f, const struct vkvstat_snapshot *s,
			      int32_t pid);

/* JSON string with escapes, quotes included. */
void vkvstat_json_str(FILE *f, const char *s);

/* ------------------------------------------------------------------ top.c */

struct vkvstat_top_opts {
	const char *dir;
	double interval;  /* seconds */
	const char *sort; /* key, see vkvstat_top_sort_keys */
	int color;        /* as vkvstat_use_color's mode */
	unsigned frames;  /* stop after this many, 0 = until q */
	unsigned scan_flags;
};

extern const char *const vkvstat_top_sort_keys[];
int vkvstat_top(const struct vkvstat_top_opts *o);

/* ---------------------------------------------------------------- probe.c */

struct vkvstat_probe_opts {
	const char *dir;      /* where the NVMe test file goes */
	uint64_t file_bytes;  /* size of that file */
	bool json;
};

int vkvstat_probe(const struct vkvstat_probe_opts *o);

#endif /* VKVSTAT_H */
