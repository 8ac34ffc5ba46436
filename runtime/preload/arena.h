// SPDX-License-Identifier: MIT
/*
 * arena.h - the LD_PRELOAD shim's arena: a growable heap in one virtual
 * reservation, backed chunk by chunk.
 *
 * An arena owns a range of virtual addresses [base, base + size) reserved
 * once, cut into chunks of one size (the driver's granularity). Physical
 * memory exists only under chunks that some allocation touches, plus a few
 * idle ones kept for reuse. Allocations are blocks of the range:
 *
 *   - Two heaps share the range: the first quarter serves small requests
 *     (<= small_max), the rest large ones, so that short-lived small
 *     blocks do not pin the chunks of big tensors.
 *   - Free blocks sit in size-class bins (8 per power of two); a request
 *     takes the best fit (the smallest block that holds it, the lowest
 *     address among equals), cut from its low end, so used memory packs
 *     toward the start of each heap. Freed blocks coalesce with free
 *     neighbours at once.
 *   - A chunk is mapped when the first non-free block touches it and
 *     becomes idle when the last one leaves. Idle chunks stay mapped up to
 *     idle_max bytes (least recently idle are unmapped first), so that a
 *     program freeing and allocating in a loop does not map each time.
 *   - A stream-ordered free (cuMemFreeAsync) leaves the block pending with
 *     a fence (an event recorded on the stream). A pending block is reused
 *     at once by an allocation on the same stream (stream order makes that
 *     safe) and by anyone else only after its fence completed.
 *
 * This file knows nothing of CUDA: mapping and fences are callbacks, so the
 * same code runs in the shim (driver VMM calls, CUDA events) and in
 * `vkvbench preload` (bookkeeping only, to measure fragmentation).
 *
 * Locking: none here. The shim holds its per-device lock around every call;
 * the benchmark is single-threaded. Memory for the arena's own records
 * comes from mmap, never from malloc, so the shim allocates nothing through
 * libc.
 */
#ifndef VKV_PRELOAD_ARENA_H
#define VKV_PRELOAD_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How chunks get memory and how fences are asked. All called with the
 * caller's lock held. */
struct vkv_arena_ops {
	/* Back n chunks at addr (each chunk bytes) and store one handle per
	 * chunk in handles[]. All or nothing: -ENOMEM (limit or device out of
	 * memory) or another negative errno. */
	int (*map)(void *priv, uint64_t addr, uint64_t n, uint64_t *handles);
	/* Take the memory of n chunks at addr away again. */
	void (*unmap)(void *priv, uint64_t addr, uint64_t n,
		      const uint64_t *handles);
	/* Has the stream work before the fence finished? Never blocks. */
	bool (*fence_done)(void *priv, uint64_t fence);
	/* Block until it has. */
	void (*fence_wait)(void *priv, uint64_t fence);
	/* The arena no longer needs the fence. */
	void (*fence_put)(void *priv, uint64_t fence);
};

/* Counters of one arena, current values and peaks. Bytes are block bytes
 * (rounded to VKV_ARENA_ALIGN) unless said otherwise. */
struct vkv_arena_counters {
	uint64_t reserved;    /* virtual bytes of the range */
	uint64_t mapped;      /* bytes of mapped chunks (idle ones too) */
	uint64_t in_use;      /* blocks handed out */
	uint64_t requested;   /* what their callers asked for */
	uint64_t pending;     /* blocks freed on a stream, fence not done */
	uint64_t idle;        /* mapped chunks that no block touches */
	uint64_t peak_mapped;
	uint64_t peak_in_use;
	uint64_t peak_requested;
	uint64_t chunks;      /* mapped chunks */
	uint64_t allocs;      /* allocations served */
	uint64_t frees;       /* frees, stream-ordered ones included */
	uint64_t maps;        /* chunks mapped since start */
	uint64_t unmaps;      /* chunks unmapped since start */
	uint64_t fence_waits; /* times an allocation had to wait for a fence */
};

#define VKV_ARENA_ALIGN 512ULL /* every block starts and ends on this */
#define VKV_ARENA_BINS 320     /* (48 - 9 + 1) powers of two x 8 */

struct vkv_arena_block;
struct vkv_arena_fence;
struct vkv_arena_slab;

/* One heap: its blocks in address order cover [lo, hi) exactly. */
struct vkv_arena_heap {
	uint64_t lo, hi;
	struct vkv_arena_block *first;                /* at lo */
	struct vkv_arena_block *bins[VKV_ARENA_BINS]; /* free blocks */
	uint64_t binmap[(VKV_ARENA_BINS + 63) / 64];  /* non-empty bins */
};

struct vkv_arena {
	uint64_t base, size;   /* the reserved range */
	uint64_t chunk;        /* bytes per chunk, a power of two */
	unsigned chunk_shift;
	uint64_t small_max;    /* requests up to this go to heaps[0] */
	uint64_t idle_max;     /* idle mapped bytes kept */
	struct vkv_arena_heap heaps[2];
	/* per chunk: non-free blocks touching it, state, idle LRU links
	 * (index + 1, 0 = none), handle from ops->map */
	uint32_t *refs;
	uint8_t *cstate;
	uint32_t *iprev, *inext;
	uint64_t *handles;
	uint64_t nchunks;
	uint32_t idle_head, idle_tail; /* oldest, newest (index + 1) */
	/* used blocks by start address: chained hash */
	struct vkv_arena_block **hash;
	uint64_t hash_cap, hash_n;     /* cap: a power of two */
	/* pending blocks, oldest free first */
	struct vkv_arena_block *pend_head, *pend_tail;
	/* record memory */
	struct vkv_arena_slab *slabs;
	void *node_free;
	const struct vkv_arena_ops *ops;
	void *priv;
	struct vkv_arena_counters c;
};

/*
 * Set up an arena over [base, base + size), which the caller reserved.
 * chunk: a power of two >= VKV_ARENA_ALIGN dividing base and size. Maps
 * nothing yet. 0, -EINVAL or -ENOMEM.
 */
int vkv__arena_init(struct vkv_arena *a, uint64_t base, uint64_t size,
		    uint64_t chunk, uint64_t small_max, uint64_t idle_max,
		    const struct vkv_arena_ops *ops, void *priv);
/* Unmap every chunk and forget every block (live ones too). */
void vkv__arena_fini(struct vkv_arena *a);
/*
 * Forget the arena without unmapping or calling anything: after fork, the
 * child must not touch the parent's device memory. Returns the records'
 * memory to the system.
 */
void vkv__arena_abandon(struct vkv_arena *a);

/* Stream of a synchronous allocation or free (no ordering). */
#define VKV_ARENA_NO_STREAM UINT64_MAX

/*
 * Allocate `size` bytes (> 0). stream: the stream the allocation is
 * ordered on (pending blocks freed on it are reused at once), or
 * VKV_ARENA_NO_STREAM. 0 and *addr; -ENOMEM when mapping failed even after
 * trimming idle chunks and waiting for pending frees; -ENOSPC when the
 * virtual range has no hole large enough.
 */
int vkv__arena_alloc(struct vkv_arena *a, uint64_t size, uint64_t stream,
		     uint64_t *addr);
/* Is addr the start of a block handed out by this arena? */
bool vkv__arena_owns(const struct vkv_arena *a, uint64_t addr);
/* Free the block starting at addr now. -ENOENT when it is none of ours. */
int vkv__arena_free(struct vkv_arena *a, uint64_t addr);
/*
 * Free it once `fence` (recorded on `stream` after the block's last use)
 * completes. The arena owns the fence from here on, also on -ENOENT (it is
 * put at once).
 */
int vkv__arena_free_async(struct vkv_arena *a, uint64_t addr, uint64_t stream,
			  uint64_t fence);
/* The block holding addr (anywhere inside its requested bytes): start and
 * requested size. -ENOENT when none. Slow for interior pointers: a walk. */
int vkv__arena_range(const struct vkv_arena *a, uint64_t addr, uint64_t *base,
		     uint64_t *size);
/* Release pending blocks whose fence completed; with wait, wait for all. */
void vkv__arena_reap(struct vkv_arena *a, bool wait);
/* Unmap idle chunks, least recently idle first, until at most `keep` idle
 * bytes remain. Returns bytes unmapped. */
uint64_t vkv__arena_trim(struct vkv_arena *a, uint64_t keep);
/* Largest free run of mapped memory (what an allocation could get without
 * mapping more). A walk over blocks and chunks: for stats, not hot paths. */
uint64_t vkv__arena_largest_free(const struct vkv_arena *a);

/*
 * Verify every invariant of arena.c (block tiling, bins, coalescing, chunk
 * references and mapping states, idle list, counters). 0, or -EFAULT with
 * the first broken one described in why. O(blocks + chunks): for tests.
 */
int vkv__arena_check(const struct vkv_arena *a, char *why, size_t len);

#endif /* VKV_PRELOAD_ARENA_H */
