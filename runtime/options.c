// SPDX-License-Identifier: MIT
/*
 * options.c - the one table of VKV_* environment options.
 *
 * Every knob of libvkv is a row here: name, type, default and a one-line
 * doc (README's table mirrors it; tests/test_options.c checks that they
 * agree). Values are parsed with getenv() only, so the LD_PRELOAD path can
 * read options before anything is initialised. A bad value warns once per
 * option and falls back to the default: a typo must not take a server down.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

static const char *const backend_choices[] = { "auto", "host", "cuda", "kmod",
					       NULL };
static const char *const unbacked_choices[] = { "fault", "zero", NULL };
static const char *const bool_choices[] = { "0", "1", NULL };
static const char *const tier_copy_choices[] = { "auto", "async", "kernel", NULL };
static const char *const log_choices[] = { "quiet", "warn", "debug", NULL };

const struct vkv_option vkv__options[VKV_OPT_COUNT] = {
	[VKV_OPT_BACKEND] = { "VKV_BACKEND", VKV_OPT_ENUM, "auto", backend_choices,
			      "backend: auto (cuda when a GPU is usable, else host), host, cuda, kmod" },
	[VKV_OPT_DEVICE] = { "VKV_DEVICE", VKV_OPT_INT, "0", NULL,
			     "CUDA device ordinal (cuda backend)" },
	[VKV_OPT_PAGE_SIZE] = { "VKV_PAGE_SIZE", VKV_OPT_SIZE, "0", NULL,
				"page size; 0 = backend default (host 2M, cuda granularity); host accepts 4K or 2M" },
	[VKV_OPT_BUDGET] = { "VKV_BUDGET", VKV_OPT_SIZE, "0", NULL,
			     "cap on the pool's physical memory per context; 0 = no cap" },
	[VKV_OPT_POOL_LOW] = { "VKV_POOL_LOW", VKV_OPT_SIZE, "8M", NULL,
			       "the worker creates pages while fewer than this many bytes are free" },
	[VKV_OPT_POOL_HIGH] = { "VKV_POOL_HIGH", VKV_OPT_SIZE, "64M", NULL,
				"the worker releases free pages above this many bytes" },
	[VKV_OPT_LOOKAHEAD] = { "VKV_LOOKAHEAD", VKV_OPT_UINT, "0", NULL,
				"tokens committed ahead of each step by the worker; 0 = one page's worth" },
	[VKV_OPT_UNBACKED] = { "VKV_UNBACKED", VKV_OPT_ENUM, "fault", unbacked_choices,
			       "unbacked virtual memory: fault (inaccessible) or zero (reads a shared zero page)" },
	[VKV_OPT_WORKER] = { "VKV_WORKER", VKV_OPT_ENUM, "1", bool_choices,
			     "1 = background worker (pool refill, look-ahead, deferred unmaps); 0 = all inline" },
	[VKV_OPT_STATS] = { "VKV_STATS", VKV_OPT_ENUM, "1", bool_choices,
			    "1 = publish the stats segment read by vkvstat" },
	[VKV_OPT_STATS_DIR] = { "VKV_STATS_DIR", VKV_OPT_STRING, "/dev/shm", NULL,
				"directory of the stats segments" },
	[VKV_OPT_LOG] = { "VKV_LOG", VKV_OPT_ENUM, "warn", log_choices,
			  "messages on stderr: quiet, warn, debug" },
	[VKV_OPT_FAULT_PAGE_CREATE] = { "VKV_FAULT_PAGE_CREATE", VKV_OPT_STRING, "", NULL,
					"fault injection: N fails the Nth page creation, N,every every one from the Nth" },
	[VKV_OPT_FAULT_MAP] = { "VKV_FAULT_MAP", VKV_OPT_STRING, "", NULL,
				"fault injection: N fails the Nth map call, N,every every one from the Nth" },
	[VKV_OPT_FAULT_HUGETLB] = { "VKV_FAULT_HUGETLB", VKV_OPT_STRING, "", NULL,
				    "fault injection: N makes the Nth hugetlb page of the host backend fail as if the reserved huge pages ran out" },
	[VKV_OPT_TIER_AUTO] = { "VKV_TIER_AUTO", VKV_OPT_ENUM, "0", bool_choices,
				"1 = automatic tiering: demote idle slots when the pool is short, restore evicted slots when stepped" },
	[VKV_OPT_TIER_IDLE] = { "VKV_TIER_IDLE", VKV_OPT_UINT, "4", NULL,
				"automatic tiering: a slot not stepped in this many vkv_step calls is idle (may be demoted)" },
	[VKV_OPT_DRAM_BUDGET] = { "VKV_DRAM_BUDGET", VKV_OPT_SIZE, "4G", NULL,
				  "cap on the DRAM tier's pinned host buffers per context" },
	[VKV_OPT_DRAM_CHUNK] = { "VKV_DRAM_CHUNK", VKV_OPT_SIZE, "64M", NULL,
				 "the DRAM tier grows by buffers of this size (at least one page)" },
	[VKV_OPT_NUMA_NODE] = { "VKV_NUMA_NODE", VKV_OPT_INT, "-1", NULL,
				"NUMA node of the DRAM tier; -1 = the GPU's node (cuda) or the local node (host)" },
	[VKV_OPT_NVME_DIR] = { "VKV_NVME_DIR", VKV_OPT_STRING, "/var/tmp", NULL,
			       "directory of the NVMe tier's file (private, unlinked; needs O_DIRECT for full speed)" },
	[VKV_OPT_NVME_BUDGET] = { "VKV_NVME_BUDGET", VKV_OPT_SIZE, "16G", NULL,
				  "cap on the NVMe tier's file size per context" },
	[VKV_OPT_NVME_GROW] = { "VKV_NVME_GROW", VKV_OPT_SIZE, "256M", NULL,
				"the NVMe tier's file is preallocated (fallocate) in steps of this size" },
	[VKV_OPT_NVME_QD] = { "VKV_NVME_QD", VKV_OPT_UINT, "32", NULL,
			      "io_uring queue depth of the NVMe tier (I/Os in flight); staging buffers take 2 x QD x VKV_NVME_IO bytes" },
	[VKV_OPT_NVME_IO] = { "VKV_NVME_IO", VKV_OPT_SIZE, "1M", NULL,
			      "NVMe tier I/O size (4K..page size, a power of two); one checksum per I/O" },
	[VKV_OPT_TIER_COPY] = { "VKV_TIER_COPY", VKV_OPT_ENUM, "auto", tier_copy_choices,
				"cuda: how the DRAM tier moves a batch of pages; async = one cuMemcpyAsync per page, kernel = one launch of the range-copy kernel, auto = async" },
	[VKV_OPT_FAULT_DRAM_ALLOC] = { "VKV_FAULT_DRAM_ALLOC", VKV_OPT_STRING, "", NULL,
				       "fault injection: N fails the Nth DRAM tier buffer allocation (N,every: from the Nth on)" },
	[VKV_OPT_FAULT_NVME_WRITE] = { "VKV_FAULT_NVME_WRITE", VKV_OPT_STRING, "", NULL,
				       "fault injection: N fails the Nth NVMe tier write with EIO (N,every: from the Nth on)" },
	[VKV_OPT_FAULT_NVME_READ] = { "VKV_FAULT_NVME_READ", VKV_OPT_STRING, "", NULL,
				      "fault injection: N fails the Nth NVMe tier read with EIO (N,every: from the Nth on)" },
	[VKV_OPT_FAULT_NVME_CORRUPT] = { "VKV_FAULT_NVME_CORRUPT", VKV_OPT_STRING, "", NULL,
					 "fault injection: N flips a byte in the Nth NVMe tier read (N,every: from the Nth on)" },
	[VKV_OPT_FAULT_NVME_ENOSPC] = { "VKV_FAULT_NVME_ENOSPC", VKV_OPT_STRING, "", NULL,
					"fault injection: N makes the Nth growth of the NVMe tier file fail with ENOSPC" },
	[VKV_OPT_FAULT_IO_URING] = { "VKV_FAULT_IO_URING", VKV_OPT_STRING, "", NULL,
				     "fault injection: N makes the Nth io_uring setup fail (pread/pwrite fallback)" },
	[VKV_OPT_PRELOAD] = { "VKV_PRELOAD", VKV_OPT_ENUM, "1", bool_choices,
			      "LD_PRELOAD shim: 1 = serve device allocations from vkv arenas; 0 = pass every call to the driver" },
	[VKV_OPT_PRELOAD_LIMIT] = { "VKV_PRELOAD_LIMIT", VKV_OPT_SIZE, "0", NULL,
				    "LD_PRELOAD shim: cap on the device memory it maps, all devices together; beyond it allocations fail with CUDA_ERROR_OUT_OF_MEMORY; 0 = none" },
	[VKV_OPT_PRELOAD_IDLE] = { "VKV_PRELOAD_IDLE", VKV_OPT_SIZE, "256M", NULL,
				   "LD_PRELOAD shim: mapped chunks holding no allocation kept per device for reuse; beyond this they are unmapped" },
	[VKV_OPT_PRELOAD_VA] = { "VKV_PRELOAD_VA", VKV_OPT_SIZE, "0", NULL,
				 "LD_PRELOAD shim: virtual address space reserved per device; 0 = twice the device's memory" },
	[VKV_OPT_PRELOAD_LOG] = { "VKV_PRELOAD_LOG", VKV_OPT_STRING, "", NULL,
				  "LD_PRELOAD shim: file its messages are appended to; empty = stderr (never stdout)" },
};

/* One warning per option and process. */
static atomic_uint warned[VKV_OPT_COUNT];

static void bad_value(enum vkv_opt_id id, const char *val, const char *why)
{
	if (atomic_fetch_add(&warned[id], 1) == 0)
		vkv__warn("%s=\"%s\" %s; using the default \"%s\"",
			  vkv__options[id].name, val, why, vkv__options[id].def);
}

int vkv__parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mul = 1;

	if (!s || !*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (end == s)
		return -EINVAL;
	if (*end) {
		switch (*end) {
		case 'k': case 'K': mul = 1ULL << 10; break;
		case 'm': case 'M': mul = 1ULL << 20; break;
		case 'g': case 'G': mul = 1ULL << 30; break;
		case 't': case 'T': mul = 1ULL << 40; break;
		default: return -EINVAL;
		}
		end++;
		if (*end == 'i')
			end++;
		if (*end == 'B' || *end == 'b')
			end++;
		if (*end)
			return -EINVAL;
	}
	if (v > UINT64_MAX / mul)
		return -ERANGE;
	*out = v * mul;
	return 0;
}

static const char *raw(enum vkv_opt_id id)
{
	const char *v = getenv(vkv__options[id].name);

	return (v && *v) ? v : NULL;
}

static int parse_uint(const char *s, uint64_t *out)
{
	char *end;

	if (!s || !*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	*out = strtoull(s, &end, 0);
	if (errno == ERANGE)
		return -ERANGE;
	return (*end || end == s) ? -EINVAL : 0;
}

uint64_t vkv__opt_u64(enum vkv_opt_id id)
{
	const struct vkv_option *o = &vkv__options[id];
	const char *v = raw(id);
	uint64_t out = 0;
	int err;

	if (v) {
		err = o->type == VKV_OPT_SIZE ? vkv__parse_size(v, &out)
					      : parse_uint(v, &out);
		if (!err)
			return out;
		bad_value(id, v, err == -ERANGE ? "is out of range" :
				 o->type == VKV_OPT_SIZE ? "is not a size (like 512K, 2M, 1G)" :
				 "is not a non-negative integer");
	}
	if (o->type == VKV_OPT_SIZE)
		vkv__parse_size(o->def, &out);
	else
		parse_uint(o->def, &out);
	return out;
}

int64_t vkv__opt_i64(enum vkv_opt_id id)
{
	const char *v = raw(id);
	char *end;
	long long out;

	if (v) {
		errno = 0;
		out = strtoll(v, &end, 0);
		if (errno == 0 && end != v && !*end && out >= INT32_MIN &&
		    out <= INT32_MAX)
			return out;
		bad_value(id, v, "is not an integer");
	}
	return strtoll(vkv__options[id].def, NULL, 0);
}

static unsigned choice_index(const struct vkv_option *o, const char *v)
{
	unsigned i;

	for (i = 0; o->choices[i]; i++)
		if (!strcasecmp(o->choices[i], v))
			return i;
	return UINT32_MAX;
}

unsigned vkv__opt_enum(enum vkv_opt_id id)
{
	const struct vkv_option *o = &vkv__options[id];
	const char *v = raw(id);
	unsigned i;

	if (v) {
		i = choice_index(o, v);
		if (i != UINT32_MAX)
			return i;
		bad_value(id, v, "is not one of the choices");
	}
	return choice_index(o, o->def);
}

const char *vkv__opt_str(enum vkv_opt_id id)
{
	const char *v = raw(id);

	return v ? v : vkv__options[id].def;
}
