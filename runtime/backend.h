// SPDX-License-Identifier: MIT
/*
 * backend.h - the physical-memory contract every backend implements.
 *
 * A backend knows three things: how to reserve virtual address space, how
 * to create and release physical pages of one fixed size (its granularity),
 * and how to map a page at an address inside a reservation and take it away
 * again. Everything above (pool, regions, tiers) is written against this
 * contract only, so the host backend proves the logic that the cuda and
 * kmod backends share.
 *
 * Rules every implementation follows:
 *  - Every call returns 0 or a negative errno and records detail with
 *    vkv__set_error() (which driver call, which result) on failure.
 *    Driver results are translated here and nowhere else: out of memory
 *    -> -ENOMEM, invalid value -> -EINVAL, anything else -> -EIO.
 *  - A failed call leaves no partial state behind: a failed map_pages()
 *    leaves the whole range unbacked, a failed page_create() creates nothing.
 *  - Unbacked parts of a reservation are inaccessible (VKV_UNBACKED_FAULT)
 *    or read as zero (VKV_UNBACKED_ZERO); unmap_pages() returns a range to
 *    that state. Reserving and unreserving never touch other reservations.
 *  - map_pages()/unmap_pages() on one range are safe while other threads,
 *    or device kernels, access *other* ranges (see docs/ARCHITECTURE.md,
 *    "What may change under a running kernel").
 *  - Calls may come from the engine's thread and the worker at once, on
 *    different pages and ranges; backends lock what they share themselves.
 */
#ifndef VKV_BACKEND_H
#define VKV_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vkv.h"

/* A physical page: memfd offset (host), allocation handle (cuda), ... */
typedef uint64_t vkv_phys;

/* A point in the engine's stream of work; see fence_record(). */
typedef uint64_t vkv_fence;

struct vkv_backend;

struct vkv_backend_ops {
	const char *name;

	/* Open on cfg->device with cfg->page_size (0 = default). Sets
	 * b->page_size and b->detail. -ENODEV when not usable here. */
	int (*open)(struct vkv_backend *b, const struct vkv_ctx_config *cfg);
	void (*close)(struct vkv_backend *b);

	/* Reserve `size` bytes (a multiple of page_size), aligned to
	 * page_size, in the unbacked state. */
	int (*reserve)(struct vkv_backend *b, uint64_t size, uint64_t *addr);
	/* Give a reservation back; it must hold no mapped page. */
	int (*unreserve)(struct vkv_backend *b, uint64_t addr, uint64_t size);

	/* Create one physical page (contents undefined). -ENOMEM when the
	 * device or the host is out of memory. */
	int (*page_create)(struct vkv_backend *b, vkv_phys *page);
	/* Release a page that is mapped nowhere. */
	void (*page_release)(struct vkv_backend *b, vkv_phys page);

	/* Map pages[0..n) at addr, addr + page_size, ... with read/write
	 * access. The range must be reserved and unbacked. */
	int (*map_pages)(struct vkv_backend *b, uint64_t addr,
			 const vkv_phys *pages, size_t n);
	/* Return n pages at addr to the unbacked state. Does not release the
	 * physical pages. Callers wait for fences first (see below). */
	int (*unmap_pages)(struct vkv_backend *b, uint64_t addr, size_t n);

	/* Copies between mapped virtual memory and host memory (device to
	 * device for copy_dd); synchronous on return. */
	int (*copy_dd)(struct vkv_backend *b, uint64_t dst, uint64_t src,
		       uint64_t bytes);
	int (*copy_to_host)(struct vkv_backend *b, void *dst, uint64_t src,
			    uint64_t bytes);
	int (*copy_from_host)(struct vkv_backend *b, uint64_t dst,
			      const void *src, uint64_t bytes);
	/* n copies of `bytes` each in one submission: host[i] <- dev[i]
	 * (to_host) or dev[i] <- host[i]. done == NULL: synchronous on
	 * return, with one wait for the whole batch. Else the copies may
	 * still run on return and *done is a fence that completes with them
	 * (fence_wait, then fence_drop; 0 when they are finished already).
	 * On an error, copies already queued have finished before it returns
	 * and *done is not set. `pinned`: every host[i] is registered with
	 * the device (a kernel may touch it). NULL: vkv__backend_copy_batch()
	 * loops over copy_to_host / copy_from_host. */
	int (*copy_batch)(struct vkv_backend *b, bool to_host, bool pinned,
			  void *const *host, const uint64_t *dev, size_t n,
			  uint64_t bytes, vkv_fence *done);

	/* Record the work queued so far on the engine's stream (NULL: no
	 * ordering needed, host). fence_wait() blocks until it has finished;
	 * fence_drop() forgets a fence without waiting. */
	int (*fence_record)(struct vkv_backend *b, vkv_fence *fence);
	int (*fence_wait)(struct vkv_backend *b, vkv_fence fence);
	void (*fence_drop)(struct vkv_backend *b, vkv_fence fence);
	int (*set_stream)(struct vkv_backend *b, void *stream);
};

/*
 * An open backend. Fields are written by open() and read-only afterwards,
 * except `priv`'s contents, which the backend locks itself.
 */
struct vkv_backend {
	const struct vkv_backend_ops *ops;
	enum vkv_backend_kind kind;
	enum vkv_unbacked unbacked;
	int device;
	uint64_t page_size; /* granularity: a power of two */
	char detail[64];    /* what vkv_ctx_info shows */
	void *priv;
};

/* The implementations; ops are NULL where one is not compiled in. */
extern const struct vkv_backend_ops vkv__backend_host_ops;
extern const struct vkv_backend_ops *const vkv__backend_cuda_ops;
extern const struct vkv_backend_ops *const vkv__backend_kmod_ops;

/*
 * The half of the contract that every backend whose memory is host memory
 * shares (host, kmod), in backend_host.c: reservations as anonymous
 * mappings, pages mapped from a file descriptor at their vkv_phys offset
 * (runs of consecutive offsets in one call), unmap by putting the
 * reservation's mapping back, plain copies, no fences.
 */
int vkv__hostmem_reserve(struct vkv_backend *b, uint64_t size, uint64_t *addr);
int vkv__hostmem_unreserve(struct vkv_backend *b, uint64_t addr, uint64_t size);
int vkv__hostmem_map_fd(struct vkv_backend *b, int fd, uint64_t addr,
			const vkv_phys *pages, size_t n);
int vkv__hostmem_unmap(struct vkv_backend *b, uint64_t addr, size_t n);
int vkv__hostmem_copy_dd(struct vkv_backend *b, uint64_t dst, uint64_t src,
			 uint64_t bytes);
int vkv__hostmem_copy_to_host(struct vkv_backend *b, void *dst, uint64_t src,
			      uint64_t bytes);
int vkv__hostmem_copy_from_host(struct vkv_backend *b, uint64_t dst,
				const void *src, uint64_t bytes);
/* The bulk copy those use (streaming stores where the CPU has them, then a
 * store fence); vkvbench measures it raw as a floor. */
void vkv__copy_stream(void *dst, const void *src, uint64_t bytes);
int vkv__hostmem_copy_batch(struct vkv_backend *b, bool to_host, bool pinned,
			    void *const *host, const uint64_t *dev, size_t n,
			    uint64_t bytes, vkv_fence *done);
int vkv__hostmem_fence_record(struct vkv_backend *b, vkv_fence *fence);
int vkv__hostmem_fence_wait(struct vkv_backend *b, vkv_fence fence);
void vkv__hostmem_fence_drop(struct vkv_backend *b, vkv_fence fence);
int vkv__hostmem_set_stream(struct vkv_backend *b, void *stream);

/*
 * Open the backend cfg asks for; VKV_BACKEND_AUTO tries cuda, then host.
 * On success b->ops is set.
 */
int vkv__backend_open(struct vkv_backend *b, const struct vkv_ctx_config *cfg);

/* b->ops->copy_batch, or one copy_to_host / copy_from_host per page. */
int vkv__backend_copy_batch(struct vkv_backend *b, bool to_host, bool pinned,
			    void *const *host, const uint64_t *dev, size_t n,
			    uint64_t bytes, vkv_fence *done);

#endif /* VKV_BACKEND_H */
