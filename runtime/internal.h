// SPDX-License-Identifier: MIT
/*
 * internal.h - libvkv internals, grouped by the file that defines them.
 *
 * Locking, outermost first (never take an outer lock while holding an
 * inner one):
 *   ctx->lock    all region and slot state of the context's regions, the
 *                worker's queue, the list of regions
 *   pool->lock   the free list and the page counters
 *   stats lock   the process's stats segment (stats.c)
 * Backend calls that may be slow (map, unmap, create) are made without
 * ctx->lock held: the slot being changed is marked `busy` instead, and
 * anyone else who needs that slot waits on ctx->cond.
 */
#ifndef VKV_INTERNAL_H
#define VKV_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "vkv.h"
#include "vkv_stats.h"

#define VKV_HIDDEN __attribute__((visibility("hidden")))
#define VKV_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ---------------------------------------------------------------- error.c */

/* Record this thread's last failure: `err` (negative errno) and detail.
 * Returns err, so that `return vkv__set_error(-EINVAL, "...")` reads well. */
int vkv__set_error(int err, const char *fmt, ...) VKV_PRINTF(2, 3);
/* Put context in front of the current detail: "step: slot 3: <detail>". */
int vkv__prefix_error(int err, const char *fmt, ...) VKV_PRINTF(2, 3);
/* Forget the last failure (a call that succeeded after retries). */
void vkv__clear_error(void);
/* "vkv: warning: ..." on stderr, honouring VKV_LOG. */
void vkv__warn(const char *fmt, ...) VKV_PRINTF(1, 2);
/* "vkv: ..." on stderr when VKV_LOG=debug. */
void vkv__debug(const char *fmt, ...) VKV_PRINTF(1, 2);
/* Human-readable size ("2.0 MiB") into buf. */
const char *vkv__fmt_size(char *buf, size_t len, uint64_t bytes);

/* -------------------------------------------------------------- options.c */

enum vkv_opt_type { VKV_OPT_SIZE, VKV_OPT_UINT, VKV_OPT_INT, VKV_OPT_ENUM,
		    VKV_OPT_STRING };

enum vkv_opt_id {
	VKV_OPT_BACKEND,
	VKV_OPT_DEVICE,
	VKV_OPT_PAGE_SIZE,
	VKV_OPT_BUDGET,
	VKV_OPT_POOL_LOW,
	VKV_OPT_POOL_HIGH,
	VKV_OPT_LOOKAHEAD,
	VKV_OPT_UNBACKED,
	VKV_OPT_WORKER,
	VKV_OPT_STATS,
	VKV_OPT_STATS_DIR,
	VKV_OPT_LOG,
	VKV_OPT_FAULT_PAGE_CREATE,
	VKV_OPT_FAULT_MAP,
	VKV_OPT_FAULT_HUGETLB,
	/* tiers (tier.c, tier_dram.c, tier_nvme.c) */
	VKV_OPT_TIER_AUTO,
	VKV_OPT_TIER_IDLE,
	VKV_OPT_DRAM_BUDGET,
	VKV_OPT_DRAM_CHUNK,
	VKV_OPT_NUMA_NODE,
	VKV_OPT_NVME_DIR,
	VKV_OPT_NVME_BUDGET,
	VKV_OPT_NVME_GROW,
	VKV_OPT_NVME_QD,
	VKV_OPT_NVME_IO,
	VKV_OPT_TIER_COPY,
	VKV_OPT_FAULT_DRAM_ALLOC,
	VKV_OPT_FAULT_NVME_WRITE,
	VKV_OPT_FAULT_NVME_READ,
	VKV_OPT_FAULT_NVME_CORRUPT,
	VKV_OPT_FAULT_NVME_ENOSPC,
	VKV_OPT_FAULT_IO_URING,
	/* the LD_PRELOAD shim (runtime/preload/) */
	VKV_OPT_PRELOAD,
	VKV_OPT_PRELOAD_LIMIT,
	VKV_OPT_PRELOAD_IDLE,
	VKV_OPT_PRELOAD_VA,
	VKV_OPT_PRELOAD_LOG,
	VKV_OPT_COUNT
};

struct vkv_option {
	const char *name;       /* environment variable */
	enum vkv_opt_type type;
	const char *def;        /* default, as text */
	const char *const *choices; /* VKV_OPT_ENUM: NULL-terminated */
	const char *doc;        /* one line */
};

extern const struct vkv_option vkv__options[VKV_OPT_COUNT];

/* Parse an option from the environment (getenv; allocates nothing). A bad
 * value warns once and falls back to the default. */
uint64_t vkv__opt_u64(enum vkv_opt_id id);
int64_t vkv__opt_i64(enum vkv_opt_id id);
/* ENUM: index into choices. */
unsigned vkv__opt_enum(enum vkv_opt_id id);
/* STRING: the value or the default; never NULL. */
const char *vkv__opt_str(enum vkv_opt_id id);
/* Parse "4K", "2M", "1G", "123"; 0 or -EINVAL / -ERANGE. */
int vkv__parse_size(const char *s, uint64_t *out);

/* ------------------------------------------------------------------ fault.c
 * Fault injection: VKV_FAULT_<WHAT>=N makes the Nth call (1-based) fail,
 * N,every makes every call from the Nth on fail. Counters are per process.
 */
enum vkv_fault_site {
	VKV_FAULT_PAGE_CREATE,
	VKV_FAULT_MAP,
	VKV_FAULT_HUGETLB,      /* a host backend hugetlb page (as if none left) */
	VKV_FAULT_DRAM_ALLOC,   /* a DRAM tier chunk allocation */
	VKV_FAULT_NVME_WRITE,   /* an NVMe tier write (one I/O) */
	VKV_FAULT_NVME_READ,    /* an NVMe tier read (one I/O) */
	VKV_FAULT_NVME_CORRUPT, /* flip a byte of an NVMe read (one I/O) */
	VKV_FAULT_NVME_ENOSPC,  /* growing the NVMe tier file */
	VKV_FAULT_IO_URING,     /* creating the io_uring */
	VKV_FAULT_COUNT
};
bool vkv__fault_hit(enum vkv_fault_site site);
void vkv__fault_reset(void);

/* ----------------------------------------------------------------- pool.c */

/*
 * A physical page and how many slots map it. refs is protected by
 * ctx->lock; a page with refs == 0 is on the free list or being released.
 */
struct vkv_page {
	vkv_phys phys;
	uint32_t refs;  /* slots mapping this page (ctx->lock) */
	uint32_t arefs; /* of those, allocated slots (ctx->lock) */
	uint64_t seen;  /* last counting pass that saw it (ctx->lock) */
};

/*
 * The pool. Invariant: pages_total == pages_free + pages_out, and
 * pages_total * page_size <= budget when budget != 0.
 */
struct vkv_pool {
	pthread_mutex_t lock;
	pthread_cond_t created;    /* creations in flight finished */
	struct vkv_backend *backend;
	uint64_t page_size;
	uint64_t budget_pages;     /* 0 = uncapped */
	uint64_t low_pages;        /* worker refills below this */
	uint64_t high_pages;       /* worker trims above this */
	struct vkv_page **free;    /* stack of free pages (lock) */
	uint64_t free_cap;         /* capacity of free (lock) */
	uint64_t pages_free;       /* (lock) */
	uint64_t pages_total;      /* created and not released (lock) */
	uint64_t pages_creating;   /* creations in flight, counted against
				      the budget (lock) */
	uint64_t returns;          /* bumped whenever pages land on the free
				      list or leave the budget: a caller
				      whose get failed can tell that a retry
				      may succeed (lock) */
};

int vkv__pool_init(struct vkv_pool *p, struct vkv_backend *b, uint64_t budget,
		   uint64_t low, uint64_t high);
/* Release every free page; pages still out are a caller bug (warned). */
void vkv__pool_fini(struct vkv_pool *p);
/* Take n pages: from the free list, creating what is missing within the
 * budget. All or nothing. -ENOMEM when the budget or the backend says no. */
int vkv__pool_get(struct vkv_pool *p, struct vkv_page **out, size_t n);
/* Give pages back to the free list (refs must be 0). */
void vkv__pool_put(struct vkv_pool *p, struct vkv_page *const *pages, size_t n);
/* The pool's returns counter: read it before a get, compare after. */
uint64_t vkv__pool_returns(struct vkv_pool *p);
/* Sort pages by physical address where that means something to the
 * backend (host memory: memfd or /dev/vkv offsets): pages then handed out
 * in order to consecutive addresses of a tensor form runs that the backend
 * maps with one call (one VMA), instead of one per page. No-op under cuda,
 * whose pages are handles. */
void vkv__pages_sort_phys(const struct vkv_backend *b, struct vkv_page **pages,
			  size_t n);
/* Worker's share: create up to the low watermark, trim to the high one.
 * Returns true when it did something. */
bool vkv__pool_balance(struct vkv_pool *p);
/* Pages that could still be created under the budget (UINT64_MAX: no cap). */
uint64_t vkv__pool_headroom(struct vkv_pool *p);
/* Release every page on the free list; returns how many. */
uint64_t vkv__pool_drain(struct vkv_pool *p);
bool vkv__pool_needs_balance(struct vkv_pool *p);

/* --------------------------------------------------------------- region.c */

enum vkv_slot_state {
	VKV_SLOT_NEVER = 0, /* never allocated, holds nothing */
	VKV_SLOT_ACTIVE,    /* allocated */
	VKV_SLOT_CACHED,    /* freed, still holding mapped pages */
	VKV_SLOT_EVICTED,   /* allocated, data in a lower tier */
};

/*
 * One slot. Mapped pages always form a prefix: page indices [0, mapped) are
 * mapped in every tensor of the region. pages[i * ntensors + t] is page i
 * of tensor t. All fields are protected by ctx->lock.
 */
struct vkv_slot {
	enum vkv_slot_state state;
	bool busy;            /* a map/unmap is in flight without the lock */
	bool queued;          /* on the region's look-ahead queue */
	bool has_fence;       /* fence must be waited before unmapping */
	uint64_t mapped;      /* pages per tensor mapped */
	uint64_t want;        /* look-ahead target, pages per tensor */
	uint64_t cap;         /* capacity of pages[] in pages per tensor */
	struct vkv_page **pages;
	uint64_t last_len;    /* tokens, from the last step or ensure */
	uint64_t freed_at;    /* ctx->clock when freed (LRU of cached) */
	vkv_fence fence;      /* engine work pending at free time */
	uint32_t tier;        /* tier holding the data while EVICTED */
	void *tier_priv;      /* owned by the tier code while EVICTED */
	uint64_t used_at;     /* ctx->tick of the last step/ensure (LRU of
				 active slots for automatic demotion) */
	uint32_t pins;        /* steps in progress on it: never demoted */
};

struct vkv_region {
	struct vkv_ctx *ctx;
	struct vkv_region_config cfg; /* defaults resolved; read-only */
	uint64_t base;         /* start of the reservation; read-only */
	uint64_t reserved;     /* bytes reserved; read-only */
	uint32_t ntensors;     /* 2*layers or 1; read-only */
	uint64_t tensor_stride;/* bytes between tensors; read-only */
	uint64_t slot_stride;  /* bytes between slots in a tensor; read-only */
	uint64_t slot_pages;   /* pages per slot per tensor; read-only */
	uint64_t token_bytes;  /* one token of one layer's K; read-only */
	uint64_t tensor_token_bytes; /* one token in one VA tensor; read-only */
	uint64_t page_size;    /* read-only */
	uint32_t lookahead;    /* tokens; read-only */
	struct vkv_slot *slots;/* [max_slots] (ctx->lock) */
	uint32_t *queue;       /* look-ahead queue of slot ids (ctx->lock) */
	uint32_t queue_len;    /* (ctx->lock) */
	uint32_t slots_active; /* (ctx->lock) */
	uint32_t slots_cached; /* (ctx->lock) */
	uint64_t pages_mapped; /* page mappings, shared ones once per slot */
	uint32_t worker_in;    /* worker calls inside this region (ctx->lock);
				  destroy waits for zero */
	struct vkv_region *next; /* ctx's list (ctx->lock) */
};

/* Address of page `idx` of tensor `t` of slot `s`. */
static inline uint64_t vkv__page_addr(const struct vkv_region *r, uint32_t s,
				      uint32_t t, uint64_t idx)
{
	return r->base + t * r->tensor_stride + s * r->slot_stride +
	       idx * r->page_size;
}

/* Pages per tensor that back tokens [0, tokens). */
static inline uint64_t vkv__pages_for(const struct vkv_region *r,
				      uint64_t tokens)
{
	return (tokens * r->tensor_token_bytes + r->page_size - 1) /
	       r->page_size;
}

/* Tokens fully backed by `pages` pages per tensor. */
static inline uint64_t vkv__tokens_in(const struct vkv_region *r,
				      uint64_t pages)
{
	uint64_t t = pages * r->page_size / r->tensor_token_bytes;
	return t < r->cfg.max_context ? t : r->cfg.max_context;
}

/* Map/unmap one slot's pages [from, to) in every tensor, without ctx->lock
 * (the caller marked the slot busy). map: pages come from sl->pages. */
int vkv__slot_map_range(struct vkv_region *r, uint32_t s, uint64_t from,
			uint64_t to);
int vkv__slot_unmap_range(struct vkv_region *r, uint32_t s, uint64_t from,
			  uint64_t to);
/* Drop the references of pages [from, to) of a slot (ctx->lock held);
 * pages that reach zero go back to the pool. */
uint64_t vkv__slot_drop_pages(struct vkv_region *r, uint32_t s, uint64_t from,
			      uint64_t to);
/* Wait until slot s is not busy, then mark it busy (ctx->lock held). */
void vkv__slot_lock(struct vkv_region *r, uint32_t s);
void vkv__slot_unlock(struct vkv_region *r, uint32_t s);
/* The worker's look-ahead: serve queued slots; true when it did work. */
bool vkv__region_lookahead(struct vkv_region *r);

/* ------------------------------------------------------------------ ctx.c */

struct vkv_ctx {
	pthread_mutex_t lock;
	pthread_cond_t cond;       /* a slot stopped being busy; worker idle */
	pthread_cond_t wake;       /* work for the worker */
	struct vkv_ctx_config cfg; /* resolved; read-only */
	struct vkv_backend backend;
	struct vkv_pool pool;
	struct vkv_region *regions; /* (lock) */
	uint32_t nregions;          /* (lock) */
	uint64_t clock;             /* logical time for LRU (lock) */
	/* page accounting (lock) */
	uint64_t pages_mapped;  /* distinct pages with refs > 0 */
	uint64_t pages_in_use;  /* distinct pages with arefs > 0 */
	uint64_t pages_shared;  /* distinct pages with refs > 1 */
	uint64_t reserved_bytes;
	/* worker */
	pthread_t worker;
	bool worker_on;   /* read-only after create */
	bool stop;        /* (lock) */
	bool worker_busy; /* (lock) */
	bool kick;        /* work was queued (lock) */
	uint32_t evicting; /* evictions running; their end broadcasts cond (lock) */
	void *stream;     /* engine stream (lock) */
	uint64_t pass;    /* counting passes over pages (lock) */
	struct vkv_ctx_gauges {
		uint64_t reserved, in_use, cached, shared, regions,
			slots_active, slots_cached, budget;
	} pub;            /* what this context last published (lock) */
	/* Set by the tier code: forget the lower-tier copy of an evicted
	 * slot that is being freed or destroyed (lock held, slot busy). */
	void (*tier_discard)(struct vkv_region *r, uint32_t s);
	/* Tier state (struct vkv_tier, tier.c); NULL until created. */
	struct vkv_tier *tier;
	/* Automatic tiering (NULL when off), lock held: promote an evicted
	 * slot before it is used (wait: synchronously; else start it), and
	 * demote idle slots until `want` pages went back to the pool. */
	int (*tier_promote)(struct vkv_region *r, uint32_t s, bool wait);
	uint64_t (*tier_demote)(struct vkv_ctx *ctx, uint64_t want);
	uint64_t tick;              /* vkv_step calls, for slot LRU (lock) */
};

/* Take n pages for slot growth or restore: the pool, then reclaimed
 * cached pages, then (automatic tiering) demoted idle slots. Lock held on
 * entry and return, dropped meanwhile; all or nothing; -ENOMEM. */
int vkv__take_pages(struct vkv_ctx *ctx, struct vkv_page **out, uint64_t n);

/* Take pages back until `want` pages went back to the pool or nothing is
 * left: from freed slots, least recently freed first; then, except on the
 * worker, the pages active slots hold beyond their last length. Called
 * with ctx->lock held; drops it while unmapping. Returns pages freed. */
uint64_t vkv__ctx_reclaim(struct vkv_ctx *ctx, uint64_t want);
void vkv__ctx_kick(struct vkv_ctx *ctx);
/* Publish this context's gauges to the stats segment (ctx->lock held). */
void vkv__ctx_publish(struct vkv_ctx *ctx);

/* Page accounting when a page gains or loses a mapping (ctx->lock held). */
void vkv__page_ref(struct vkv_ctx *ctx, struct vkv_page *pg, bool active);
/* Returns true when the page is mapped nowhere any more. */
bool vkv__page_unref(struct vkv_ctx *ctx, struct vkv_page *pg, bool active);
void vkv__page_activate(struct vkv_ctx *ctx, struct vkv_page *pg, bool on);

/* ----------------------------------------------------------------- tier.c */

/* Set up a context's tiers (nothing is allocated before first use) and,
 * with VKV_TIER_AUTO, install the automatic policy's hooks. */
int vkv__tier_ctx_init(struct vkv_ctx *ctx);
/* Stop the tier thread and release every tier buffer and file. */
void vkv__tier_ctx_fini(struct vkv_ctx *ctx);

/* --------------------------------------------------------------- crc32c.c */

/* CRC-32C (Castagnoli) of buf, continuing from crc (start with 0). The
 * SSE4.2 instruction when the CPU has it, else a table. */
uint32_t vkv__crc32c(uint32_t crc, const void *buf, size_t len);
/* The table version, always (tests compare the two). */
uint32_t vkv__crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* ---------------------------------------------------------------- stats.c
 * The process's segment. Writers bracket updates with begin/end (a mutex
 * plus the seqlock); the pointer is valid only in between.
 */
struct vkv_stats_segment *vkv__stats_begin(void);
void vkv__stats_end(void);
/* Create the segment file if publishing is on (idempotent). */
void vkv__stats_open(enum vkv_backend_kind backend, const char *detail,
		     uint64_t page_size);
void vkv__stats_step(uint64_t ns);
uint64_t vkv__now_ns(void);

/* --------------------------------------------------------- stats_remove.c
 * Shared by libvkv's sweep and vkvstat's clean-up (which links the object).
 */

/* Remove the segment file `name` in directory dfd if dead(fd, arg) says
 * so, judging and unlinking it under a private name it is first renamed
 * to, so that a live segment created under `name` meanwhile (a reused pid)
 * is never removed. dead() gets a read-only descriptor of the file renamed
 * aside, which stays open until the file is unlinked or put back; it must
 * decide from that file alone, never from `name`. A file not removed goes
 * back under `name` unless another took the name meanwhile.
 * Returns 0 (removed), -EBUSY (judged alive, put back), or the -errno of
 * the rename aside (-ENOENT: gone already), of opening or of unlinking. */
int vkv__stats_remove_dead(int dfd, const char *name,
			   bool (*dead)(int fd, void *arg), void *arg);

#endif /* VKV_INTERNAL_H */
