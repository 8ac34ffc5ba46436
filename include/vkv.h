// SPDX-License-Identifier: MIT
/*
 * vkv.h - the one public header of libvkv.
 *
 * vkv gives every KV cache a contiguous *virtual* tensor and commits physical
 * memory under it on demand (the vAttention design). Vocabulary, used the
 * same way everywhere in the code and the docs:
 *
 *   context  one backend (host, cuda, kmod) on one device, one page pool and
 *            one background worker. Several regions share a context's pool.
 *   page     one physical allocation of the backend's granularity (4 KiB or
 *            2 MiB on host, the driver's granularity on cuda). Refcounted:
 *            one page may be mapped at several virtual addresses.
 *   pool     the context's physical pages: those in use and a free list kept
 *            between a low and a high watermark, capped by a byte budget.
 *   region   the KV cache of one model: 2*layers virtual tensors (or one
 *            tensor spanning all layers), reserved once at creation; their
 *            base addresses never move while the region lives.
 *   slot     one request's row in every tensor of a region. Tokens [0, n) of a
 *            slot are backed by pages; the rest is unbacked virtual memory.
 *   tier     where a slot's data lives: 0 = the backend's memory, 1 = host
 *            DRAM, 2 = NVMe (see the tiering API).
 *
 * Conventions: every fallible call returns 0 or a negative errno (-EINVAL,
 * -ENOMEM, ...), never sets errno, never exits or aborts on bad input.
 * vkv_strerror() gives the text of a code together with the detail of this
 * thread's last failure (which call, which driver result). All calls are safe
 * from several threads.
 */
#ifndef VKV_H
#define VKV_H

#include <stddef.h>
#include <stdint.h>

#include "vkv_stats.h" /* enum vkv_stats_tier_id: VKV_TIER_DRAM, VKV_TIER_NVME */

#ifdef __cplusplus
extern "C" {
#endif

#define VKV_VERSION_MAJOR 0
#define VKV_VERSION_MINOR 1
#define VKV_VERSION_PATCH 0

#if defined(__GNUC__)
#define VKV_API __attribute__((visibility("default")))
#else
#define VKV_API
#endif

typedef struct vkv_ctx vkv_ctx;
typedef struct vkv_region vkv_region;

/* ---------------------------------------------------------------- errors */

/*
 * Text for a (negative or positive) errno code. When this thread's last
 * failing vkv call returned that code, the detail of that failure follows:
 * "Cannot allocate memory: pool budget 64.0 MiB exhausted (16384 pages in
 * use)". The string lives in thread-local storage until the next call.
 */
VKV_API const char *vkv_strerror(int err);

/* Detail of this thread's last failure ("" when none). Thread-local. */
VKV_API const char *vkv_last_error(void);

/* The library's version as "MAJOR.MINOR.PATCH". */
VKV_API const char *vkv_version(void);

/* --------------------------------------------------------------- context */

enum vkv_backend_kind {
	VKV_BACKEND_AUTO = 0, /* cuda when a device is usable, else host */
	VKV_BACKEND_HOST,     /* memfd + mmap on ordinary memory */
	VKV_BACKEND_CUDA,     /* CUDA driver VMM API */
	VKV_BACKEND_KMOD,     /* host semantics, pages from /dev/vkv */
	VKV_BACKEND_COUNT
};

/* What unbacked virtual memory does when read. */
enum vkv_unbacked {
	VKV_UNBACKED_FAULT = 0, /* inaccessible: a stray access faults */
	VKV_UNBACKED_ZERO,      /* reads see zeros (one shared read-only page) */
	VKV_UNBACKED_COUNT
};

/* Context flags. */
#define VKV_CTX_NO_WORKER (1u << 0) /* no background thread: all work inline */
#define VKV_CTX_NO_STATS (1u << 1)  /* do not publish this context's stats */

/*
 * Configuration of a context. Fill it with vkv_ctx_config_init(), which
 * applies the VKV_* environment options, then change what you need.
 * A field left 0 means "the backend's default".
 */
struct vkv_ctx_config {
	uint32_t struct_size;          /* sizeof(struct vkv_ctx_config) */
	enum vkv_backend_kind backend; /* VKV_BACKEND */
	int device;                    /* CUDA ordinal / NUMA node; VKV_DEVICE */
	uint32_t flags;                /* VKV_CTX_* */
	enum vkv_unbacked unbacked;    /* VKV_UNBACKED */
	uint32_t pad0;
	uint64_t page_size;   /* bytes; 0 = backend default; VKV_PAGE_SIZE */
	uint64_t budget;      /* pool cap in bytes; 0 = no cap; VKV_BUDGET */
	uint64_t pool_low;    /* worker refills free list below this; VKV_POOL_LOW */
	uint64_t pool_high;   /* worker trims free list above this; VKV_POOL_HIGH */
	uint64_t reserved[8]; /* zero */
};

VKV_API void vkv_ctx_config_init(struct vkv_ctx_config *cfg);

/*
 * Create a context: open the backend, start the pool's worker (unless
 * VKV_CTX_NO_WORKER) and publish stats (unless VKV_CTX_NO_STATS).
 * Returns 0 and *out, -EINVAL for a bad config, -ENODEV when the backend
 * asked for is not usable here, -ENOMEM.
 */
VKV_API int vkv_ctx_create(const struct vkv_ctx_config *cfg, vkv_ctx **out);

/*
 * Destroy a context. Returns -EBUSY (and destroys nothing) while regions
 * created on it still exist.
 */
VKV_API int vkv_ctx_destroy(vkv_ctx *ctx);

struct vkv_ctx_info {
	enum vkv_backend_kind backend;
	enum vkv_unbacked unbacked;
	int device;
	uint32_t worker; /* 1 when the background worker runs */
	uint64_t page_size;
	uint64_t budget;      /* 0 = no cap */
	uint64_t pool_low;    /* bytes */
	uint64_t pool_high;   /* bytes */
	uint64_t pages_total; /* physical pages in existence */
	uint64_t pages_free;  /* of those, on the free list */
	uint64_t pages_mapped;/* distinct pages mapped in some slot */
	uint64_t reserved_bytes; /* virtual address space reserved */
	char backend_name[16];
	char backend_detail[64]; /* "memfd 4 KiB", "H100 sm_90 2 MiB", ... */
};

VKV_API int vkv_ctx_info(vkv_ctx *ctx, struct vkv_ctx_info *info);

/* Name of a backend kind ("host", "cuda", ...); "?" when out of range. */
VKV_API const char *vkv_backend_name(enum vkv_backend_kind kind);

/*
 * Register the stream the engine's kernels run on (cuda: a CUstream; host:
 * ignored). Before a page that such work may still read is unmapped, vkv
 * waits for the work that was queued on this stream when the slot was
 * freed. 0 (the default) means the legacy default stream.
 */
VKV_API int vkv_ctx_set_stream(vkv_ctx *ctx, void *stream);

/*
 * Wait until the background worker has nothing queued (look-ahead commits,
 * deferred unmaps, pool refill). For tests and orderly shutdown.
 */
VKV_API int vkv_ctx_quiesce(vkv_ctx *ctx);

/*
 * Give back everything that is only cached: pages still mapped in freed
 * slots and free pages on the pool's list. Returns 0; *freed (may be NULL)
 * gets the number of bytes returned to the backend.
 */
VKV_API int vkv_ctx_trim(vkv_ctx *ctx, uint64_t *freed);

/* ---------------------------------------------------------------- region */

enum vkv_layout {
	/* 2*layers tensors, each [slot][token][kv_head][head_dim]. */
	VKV_LAYOUT_PER_LAYER = 0,
	/* one tensor [slot][token][layer][K,V][kv_head][head_dim]: a page holds
	 * every layer of a token range (fewer map calls, coarser growth). */
	VKV_LAYOUT_ALL_LAYERS,
	VKV_LAYOUT_COUNT
};

#define VKV_K 0
#define VKV_V 1

struct vkv_region_config {
	uint32_t struct_size; /* sizeof(struct vkv_region_config) */
	uint32_t layers;      /* >= 1 */
	uint32_t kv_heads;    /* >= 1 */
	uint32_t head_dim;    /* >= 1 */
	uint32_t elem_size;   /* bytes per element: 1, 2, 4 or 8 */
	uint32_t max_slots;   /* >= 1 */
	uint64_t max_context; /* tokens per slot, >= 1 */
	enum vkv_layout layout;
	/* Tokens committed ahead of each step's length by the worker;
	 * 0 = one page's worth; VKV_LOOKAHEAD overrides the default. */
	uint32_t lookahead;
	uint64_t reserved[6]; /* zero */
};

VKV_API void vkv_region_config_init(struct vkv_region_config *cfg);

/*
 * Reserve the region's virtual tensors. Nothing is backed yet. Returns 0
 * and *out; -EINVAL for a zero or inconsistent field, -EOVERFLOW when the
 * sizes overflow 64 bits, -ENOMEM when the address space cannot be
 * reserved.
 */
VKV_API int vkv_region_create(vkv_ctx *ctx, const struct vkv_region_config *cfg,
			      vkv_region **out);

/* Unmap and release everything; every slot is freed. */
VKV_API int vkv_region_destroy(vkv_region *r);

/*
 * One K or V tensor of one layer. Element (slot s, token t, head h, dim d)
 * lives at addr + s*slot_stride + t*token_stride + h*head_stride +
 * d*elem_size. addr is a device pointer under cuda, a host pointer under
 * host and kmod. It never changes while the region lives.
 */
struct vkv_tensor {
	uint64_t addr;
	uint64_t slot_stride;  /* bytes, a multiple of the page size */
	uint64_t token_stride; /* bytes */
	uint64_t head_stride;  /* bytes */
	uint32_t elem_size;
	uint32_t pad0;
};

VKV_API int vkv_region_tensor(vkv_region *r, uint32_t layer, int kv,
			      struct vkv_tensor *out);

struct vkv_region_info {
	struct vkv_region_config config; /* as created, defaults resolved */
	uint64_t page_size;
	uint64_t token_bytes;     /* one token of one layer's K (or V) */
	uint64_t tokens_per_page; /* whole tokens of one tensor in one page */
	uint64_t reserved_bytes;  /* virtual space of the whole region */
	uint64_t committed_bytes; /* mapped bytes, shared pages counted once */
	uint32_t slots_active;    /* allocated */
	uint32_t slots_cached;    /* freed but still holding pages */
};

VKV_API int vkv_region_info(vkv_region *r, struct vkv_region_info *info);

/* ------------------------------------------------------------------ slots */

/*
 * Allocate a slot for a request expected to reach `hint_tokens` tokens
 * (0 = unknown). A freed slot that still holds enough mapped pages is
 * preferred (its pages are reused without a map call); otherwise the
 * freed slot holding the most pages, otherwise a never-used one.
 * Returns 0 and *slot, -ENOSPC when every slot is allocated.
 */
VKV_API int vkv_slot_alloc(vkv_region *r, uint64_t hint_tokens, uint32_t *slot);

/*
 * Allocate a specific slot (engines that manage slot numbers themselves).
 * -EBUSY when it is allocated, -EINVAL when out of range.
 */
VKV_API int vkv_slot_alloc_at(vkv_region *r, uint32_t slot);

/*
 * Free a slot. Its pages stay mapped (deferred reclamation) until a later
 * request reuses them or the pool needs them back; under cuda they are not
 * unmapped before the work queued on the registered stream at this point
 * has finished. -EINVAL for an unknown slot or a slot that is not allocated
 * (double free); the region is unchanged then.
 */
VKV_API int vkv_slot_free(vkv_region *r, uint32_t slot);

/*
 * Back tokens [0, tokens) of a slot in every tensor, synchronously.
 * -EINVAL for an unknown or free slot, -E2BIG beyond max_context, -ENOMEM
 * when the budget is exhausted and nothing can be reclaimed (what was
 * backed before stays backed; nothing leaks), -EIO for a backend failure.
 */
VKV_API int vkv_slot_ensure(vkv_region *r, uint32_t slot, uint64_t tokens);

/*
 * Ask the worker to back tokens [0, tokens) ahead of need (for example for
 * a request that the scheduler will admit next iteration). Never blocks on
 * a map call. Same errors as vkv_slot_ensure for bad arguments.
 *
 * Pages beyond a slot's last length (the last vkv_step/vkv_slot_ensure
 * length, or a shared prefix) hold no data by contract: when a commit finds
 * the budget spent, they may be taken back (look-ahead, prefetch, pages a
 * reused slot brought along) before the commit fails with -ENOMEM.
 */
VKV_API int vkv_slot_prefetch(vkv_region *r, uint32_t slot, uint64_t tokens);

/*
 * The engine's one call per iteration: slots[i] will hold lens[i] tokens
 * after this iteration. Commits synchronously what is missing for that,
 * then queues look-ahead commits (lens[i] + lookahead) for the worker.
 * On failure nothing already backed is lost; the error names the slot.
 */
VKV_API int vkv_step(vkv_region *r, const uint32_t *slots, const uint64_t *lens,
		     size_t n);

/*
 * Prefix sharing: make tokens [0, tokens) of `dst` hold the same data as
 * those of `src`. Full pages are mapped into dst (the same physical page at
 * two addresses, refcounted); the partial last page is copied into a page
 * of dst's own. Both slots must be allocated, src must back `tokens`.
 * Writes below `tokens` in either slot are then visible in both for the
 * shared full pages: engines only append after the prefix. Freeing either
 * slot leaves the other intact.
 */
VKV_API int vkv_slot_share_prefix(vkv_region *r, uint32_t dst, uint32_t src,
				  uint64_t tokens);

struct vkv_slot_info {
	uint32_t allocated;    /* 1 when allocated */
	uint32_t tier;         /* 0 = backend memory (see tiering) */
	uint64_t backed_tokens;/* tokens [0, n) backed in every tensor */
	uint64_t pages;        /* pages mapped in this slot, all tensors */
	uint64_t shared_pages; /* of those, pages mapped elsewhere too */
	uint64_t last_len;     /* length passed by the last step/ensure */
};

VKV_API int vkv_slot_info(vkv_region *r, uint32_t slot, struct vkv_slot_info *info);

/*
 * Copy bytes between host memory and a slot's K or V rows, tokens
 * [first, first + count) of one layer. For tests, tools and engines whose
 * kernels do not touch vkv memory directly. Tokens must be backed. The
 * slot is held for the copy: reclaim and eviction wait for it.
 */
VKV_API int vkv_slot_write(vkv_region *r, uint32_t slot, uint32_t layer, int kv,
			   uint64_t first, uint64_t count, const void *src);
VKV_API int vkv_slot_read(vkv_region *r, uint32_t slot, uint32_t layer, int kv,
			  uint64_t first, uint64_t count, void *dst);

/* ------------------------------------------------------------------ tiers
 *
 * A slot can be evicted to host DRAM (VKV_TIER_DRAM) or NVMe (VKV_TIER_NVME):
 * its data is copied down and its pages go back to the pool. Restoring maps
 * fresh pages at the *same* virtual addresses and copies the data back, so
 * tensor pointers never change. An evicted slot stays allocated but cannot
 * be stepped, ensured or copied (-EAGAIN) until it is restored; freeing it
 * forgets the lower-tier copy. A page shared by several slots of one
 * eviction (prefix sharing) is stored once, and restored shared when those
 * slots are restored together.
 *
 * Both calls take a batch of slots of one region and return at once with an
 * operation handle; the copies run on the context's tier thread. `op` may
 * be NULL: the call then waits and returns the result. With VKV_TIER_AUTO=1
 * the context also demotes idle slots by itself when the pool runs short,
 * and vkv_step/vkv_slot_ensure restore an evicted slot before using it
 * (vkv_slot_prefetch starts that restore early).
 *
 * Guarantees: a failed eviction leaves every slot of the batch as it was
 * (allocated, data in place). A failed restore leaves the slots whose copy
 * is intact evicted (retry later), and never maps data that failed its
 * checksum: a slot whose copy is corrupt or lost comes back allocated and
 * empty (0 tokens backed), ready to be recomputed or freed.
 */
typedef struct vkv_op vkv_op;

/*
 * Evict slots[0..n) of r to `tier` (VKV_TIER_DRAM or VKV_TIER_NVME). Every
 * slot must be allocated and not evicted; the engine must have no work in
 * flight that writes to them (under cuda, vkv waits for the work queued on
 * the registered stream). Returns 0 and *op (or the result when op is
 * NULL); -EINVAL for bad arguments (a slot twice, a slot not allocated),
 * -EAGAIN for an already evicted slot, -EBUSY for a slot that another
 * thread is stepping. Submission waits for slots that an earlier operation
 * or a map in progress holds. The operation's result: 0, -ENOSPC when the tier's budget or disk is
 * full, -ENOMEM, -EIO, -ENOENT when VKV_NVME_DIR does not exist.
 */
VKV_API int vkv_evict(vkv_region *r, const uint32_t *slots, size_t n,
		      unsigned tier, vkv_op **op);

/*
 * Restore evicted slots[0..n) of r to the backend's memory. Returns 0 and
 * *op (or the result when op is NULL); -EINVAL for a slot that is not
 * evicted, or slots in different tiers. The operation's result: 0, -ENOMEM when the pool's budget has no
 * room (the slots stay evicted), -EIO for a failed or short read,
 * -EBADMSG when a checksum did not match (see the guarantees above).
 */
VKV_API int vkv_restore(vkv_region *r, const uint32_t *slots, size_t n,
			vkv_op **op);

/* 0 when the operation finished well, -EINPROGRESS while it runs, or its
 * error (negative errno). Never blocks. */
VKV_API int vkv_op_poll(vkv_op *op);

/* Wait for the operation; returns its result as vkv_op_poll() would, with
 * the failure's detail available through vkv_strerror(). */
VKV_API int vkv_op_wait(vkv_op *op);

/* Release a handle (NULL is fine). An operation still running completes
 * on its own. Free every handle before destroying its context. */
VKV_API int vkv_op_free(vkv_op *op);

#ifdef __cplusplus
}
#endif
#endif /* VKV_H */
