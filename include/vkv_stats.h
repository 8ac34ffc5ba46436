// SPDX-License-Identifier: MIT
/*
 * vkv_stats.h - layout of the per-process statistics segment.
 *
 * Every process using libvkv (and the LD_PRELOAD shim) publishes one small
 * shared-memory file, $VKV_STATS_DIR/vkv-stats.<pid> (default /dev/shm),
 * mode 0600. Tools such as vkvstat map it read-only and read it without
 * stopping the process. The writer holds a shared flock() on the file from
 * before it writes anything until it dies: an exclusive flock() that
 * succeeds on a valid segment says its writer is gone, even when its pid
 * is in another pid namespace.
 *
 * Consistency: a seqlock. The writer makes `seq` odd, stores, makes it even
 * again (with release ordering). A reader copies the whole segment between
 * two loads of `seq` and retries when they differ or are odd. Readers must
 * treat every field as untrusted: check magic, version and size, and bound
 * every count and string before use.
 *
 * Compatibility: fields are only ever appended; `size` tells how many bytes
 * the writer knows. A reader accepts any size >= the size of version 1 and
 * reads the fields it knows. VKV_STATS_VERSION changes only for an
 * incompatible change.
 */
#ifndef VKV_STATS_H
#define VKV_STATS_H

#include <stdint.h>

#define VKV_STATS_MAGIC 0x31545453564b56ULL /* "VKVSTT1" little-endian */
#define VKV_STATS_VERSION 1u
#define VKV_STATS_PREFIX "vkv-stats."
#define VKV_STATS_HIST_BUCKETS 40 /* step time: bucket i counts [2^i, 2^(i+1)) ns */

enum vkv_stats_tier_id {
	VKV_TIER_DEVICE = 0, /* the backend's memory */
	VKV_TIER_DRAM,       /* host DRAM */
	VKV_TIER_NVME,       /* NVMe files */
	VKV_TIER_COUNT
};

/* Counters of one tier. bytes_* are current, the rest count since start. */
struct vkv_stats_tier {
	uint64_t bytes_capacity; /* budget of this tier, 0 = none */
	uint64_t bytes_used;     /* data held in this tier now */
	uint64_t evictions;      /* slots moved into this tier */
	uint64_t restores;       /* slots moved back out of it */
	uint64_t bytes_in;       /* bytes written into this tier */
	uint64_t bytes_out;      /* bytes read back from it */
	uint64_t ns_in;          /* time spent writing into it */
	uint64_t ns_out;         /* time spent reading from it */
	uint64_t errors;         /* failed transfers */
	uint64_t file_bytes;     /* NVMe: size of the tier files */
	uint64_t reserved[6];
};

/* The LD_PRELOAD shim's arena, all devices together. */
struct vkv_stats_preload {
	uint64_t reserved_bytes; /* VA reserved by the arenas */
	uint64_t mapped_bytes;   /* physical memory mapped under them */
	uint64_t in_use_bytes;   /* handed out to the program */
	uint64_t peak_in_use;
	uint64_t peak_mapped;
	uint64_t chunks;         /* mapped chunks */
	uint64_t largest_free;   /* largest free block in the arenas */
	uint64_t allocs;
	uint64_t frees;
	uint64_t ooms;           /* allocations refused by the limit */
	uint64_t limit_bytes;    /* VKV_PRELOAD_LIMIT, 0 = none */
	uint64_t passthrough;    /* calls forwarded untouched */
	uint64_t pending_bytes;  /* freed on a stream, waiting for its work */
	uint64_t idle_bytes;     /* mapped chunks holding no allocation */
	uint64_t fragmentation_ppm; /* mapped bytes neither in use, pending
				       nor idle, per million mapped */
	uint64_t reserved[1];
};

struct vkv_stats_segment {
	uint64_t magic;      /* VKV_STATS_MAGIC */
	uint32_t version;    /* VKV_STATS_VERSION */
	uint32_t size;       /* bytes of this struct the writer knows */
	uint64_t seq;        /* seqlock: odd while a write is in progress */
	int32_t pid;
	uint32_t backend;    /* enum vkv_backend_kind of the first context */
	uint64_t start_ns;   /* CLOCK_REALTIME at creation */
	uint64_t update_ns;  /* CLOCK_REALTIME of the last write */
	char comm[32];       /* process name, NUL-terminated */
	char backend_detail[64];

	/* pool and regions, all contexts of the process together */
	uint64_t page_size;      /* of the first context */
	uint64_t budget;         /* sum of budgets, 0 = uncapped */
	uint64_t reserved_bytes; /* virtual space reserved by regions */
	uint64_t committed_bytes;/* physical pages in existence */
	uint64_t in_use_bytes;   /* pages mapped in allocated slots */
	uint64_t cached_bytes;   /* pages mapped only in freed slots */
	uint64_t peak_committed;
	uint64_t pages_free;     /* on the pools' free lists */
	uint64_t pages_shared;   /* mapped at more than one address */
	uint64_t contexts;
	uint64_t regions;
	uint64_t slots_active;
	uint64_t slots_cached;
	uint64_t pages_created;  /* backend page creations since start */
	uint64_t pages_released;
	uint64_t maps_sync;      /* pages mapped on the critical path */
	uint64_t maps_async;     /* pages mapped by the worker (look-ahead) */
	uint64_t unmaps;
	uint64_t reclaims;       /* cached pages taken back from freed slots */
	uint64_t enomem;         /* commits refused by the budget */

	/* step timings */
	uint64_t steps;
	uint64_t step_ns_total;
	uint64_t step_ns_max;
	uint64_t step_hist[VKV_STATS_HIST_BUCKETS];

	struct vkv_stats_tier tiers[VKV_TIER_COUNT];
	struct vkv_stats_preload preload;
	uint64_t reserved[32];
};

#endif /* VKV_STATS_H */
